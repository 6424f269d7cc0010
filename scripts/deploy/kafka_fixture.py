"""Kafka side of check.sh's runbook scenario 4: makes a schema-registry-like `_schemas` topic,
loses it, and dumps a topic for comparison. Uses confluent-kafka (librdkafka), independent of
the tools under test.

Usage: python kafka_fixture.py BOOTSTRAP create TOPIC | delete TOPIC | dump TOPIC | describe TOPIC
"""

import json
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

TIMEOUT = 30


def admin(bootstrap):
    return AdminClient({"bootstrap.servers": bootstrap})


def wait(futures):
    for future in futures.values():
        future.result(timeout=TIMEOUT)


def create(bootstrap, topic):
    """The schema registry's layout: one compacted partition, keyed JSON records, a tombstone
    for a deleted subject version, and explicit old create timestamps."""
    client = admin(bootstrap)  # kept alive until the futures resolve
    wait(client.create_topics([NewTopic(topic, 1, 1, config={"cleanup.policy": "compact"})]))
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    base_ms = 1_700_000_000_000
    for i in range(1, 41):
        subject = f"orders-{i % 5}-value"
        key = {"keytype": "SCHEMA", "subject": subject, "version": i // 5 + 1, "magic": 1}
        value = {
            "subject": subject,
            "version": i // 5 + 1,
            "id": i,
            "schema": json.dumps({"type": "record", "name": f"Order{i}", "fields": []}),
            "deleted": False,
        }
        producer.produce(topic, key=json.dumps(key).encode(), value=json.dumps(value).encode(),
                         timestamp=base_ms + i * 1000)
    producer.produce(topic, key=b'{"keytype":"NOOP","magic":0}', value=None,
                     timestamp=base_ms + 50_000)
    if producer.flush(TIMEOUT):
        raise SystemExit("kafka_fixture: records not delivered")


def delete(bootstrap, topic):
    client = admin(bootstrap)
    wait(client.delete_topics([topic]))
    deadline = time.time() + TIMEOUT
    while topic in client.list_topics(timeout=10).topics:
        if time.time() > deadline:
            raise SystemExit(f"kafka_fixture: {topic} still exists")
        time.sleep(0.2)


def dump(bootstrap, topic):
    """Every record of every partition, one JSON line each, in partition and offset order."""
    meta = admin(bootstrap).list_topics(topic, timeout=10).topics[topic]
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"fixture-{time.time()}",
                         "enable.auto.commit": False})
    for partition in sorted(meta.partitions):
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        consumer.assign([TopicPartition(topic, partition, low)])
        offset = low
        deadline = time.time() + TIMEOUT
        while offset < high and time.time() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            print(json.dumps({
                "partition": partition,
                "offset": msg.offset(),
                "key": msg.key().decode() if msg.key() is not None else None,
                "value": msg.value().decode() if msg.value() is not None else None,
                "headers": [[k, v.decode() if v else v] for k, v in (msg.headers() or [])],
                "timestamp": list(msg.timestamp()),
            }, sort_keys=True))
            offset = msg.offset() + 1
    consumer.close()


def describe(bootstrap, topic):
    client = admin(bootstrap)
    partitions = len(client.list_topics(topic, timeout=10).topics[topic].partitions)
    configs = client.describe_configs([ConfigResource("topic", topic)])
    values = next(iter(configs.values())).result(timeout=TIMEOUT)
    print(json.dumps({"partitions": partitions,
                      "cleanup.policy": values["cleanup.policy"].value}, sort_keys=True))


def main():
    bootstrap, command, topic = sys.argv[1:4]
    {"create": create, "delete": delete, "dump": dump, "describe": describe}[command](
        bootstrap, topic)


if __name__ == "__main__":
    main()

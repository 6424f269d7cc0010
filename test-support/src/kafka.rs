//! The Kafka-protocol broker the tests talk to.
//!
//! `scripts/services.sh start` starts one (noida-db on 127.0.0.1) and `scripts/test.sh`
//! exports its address in [`BROKER_ENV`]. Each test creates its own topics with
//! `retention.ms=-1`, because the test broker expires old CreateTime records quickly.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;

/// Environment variable holding the test broker's `host:port`.
pub const BROKER_ENV: &str = "PIPELINE_BACKUP_TEST_KAFKA";

/// The test broker's bootstrap address; panics with a hint when no broker was started.
pub fn bootstrap() -> String {
    std::env::var(BROKER_ENV).unwrap_or_else(|_| {
        panic!("{BROKER_ENV} is not set: run the tests with scripts/test.sh, which starts the broker (or scripts/services.sh start and export the address it prints)")
    })
}

/// A client configuration pointing at the test broker.
pub fn client_config() -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap());
    config
}

/// Creates a topic that never expires records; returns its name.
pub async fn create_topic(name: &str, partitions: i32) -> String {
    let admin: AdminClient<DefaultClientContext> = client_config().create().expect("admin client");
    let topic =
        NewTopic::new(name, partitions, TopicReplication::Fixed(1)).set("retention.ms", "-1");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&[topic], &options)
        .await
        .expect("CreateTopics request");
    for result in results {
        result.unwrap_or_else(|(topic, e)| panic!("create topic {topic}: {e}"));
    }
    name.to_string()
}

/// Runs a future to completion on a fresh current-thread runtime (for synchronous tests).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(future)
}

/// The names of the broker's topics.
pub fn topic_names() -> Vec<String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = client_config().create().expect("consumer");
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata");
    metadata
        .topics()
        .iter()
        .map(|t| t.name().to_string())
        .collect()
}

/// Deletes topics; panics when the broker refuses one.
pub fn delete_topics(names: &[String]) {
    let admin: AdminClient<DefaultClientContext> = client_config().create().expect("admin client");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let results = block_on(admin.delete_topics(&names, &options)).expect("DeleteTopics request");
    for result in results {
        result.unwrap_or_else(|(topic, e)| panic!("delete topic {topic}: {e}"));
    }
}

/// A fresh topic (retention.ms=-1) with a unique name starting with `prefix`.
pub fn topic(prefix: &str, partitions: i32) -> String {
    let name = crate::unique_name(prefix);
    block_on(create_topic(&name, partitions))
}

/// Produces records key `k<n>`, value `v<partition>-<n>` to each listed partition, for `n`
/// from `from` to `from + count`, and waits until all are delivered.
pub fn produce_numbered(topic: &str, partitions: &[i32], from: u64, count: u64) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let producer: BaseProducer = client_config().create().expect("producer");
    for n in from..from + count {
        for &p in partitions {
            let value = format!("v{p}-{n}");
            let key = format!("k{n}");
            let record = BaseRecord::to(topic)
                .partition(p)
                .key(key.as_str())
                .payload(value.as_str());
            send(&producer, record);
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
}

/// Queues `record`, polling while the producer's local queue is full; panics on any other
/// error (a record the producer refuses must not be retried for ever).
pub fn send<K, P>(
    producer: &rdkafka::producer::BaseProducer,
    record: rdkafka::producer::BaseRecord<'_, K, P>,
) where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    let mut record = record;
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                producer.poll(Duration::from_millis(20));
            }
            Err((error, _)) => panic!("produce: {error}"),
        }
    }
}

/// Commits offsets `(partition, offset)` of `topic` for a consumer group.
pub fn commit_group(group: &str, topic: &str, offsets: &[(i32, i64)]) {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    for &(p, o) in offsets {
        list.add_partition_offset(topic, p, Offset::Offset(o))
            .expect("partition offset");
    }
    consumer.commit(&list, CommitMode::Sync).expect("commit");
}

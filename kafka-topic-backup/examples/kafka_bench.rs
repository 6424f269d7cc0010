//! Helper of `scripts/bench-kafka.sh`: creates the benchmark topic, and measures the broker's
//! limit with a bare rdkafka consumer that reads a whole topic and discards every record.
//!
//! ```text
//! kafka_bench create TOPIC PARTITIONS [CONFIG=VALUE...]
//! kafka_bench consume TOPIC
//! kafka_bench produce TOPIC RECORDS
//! kafka_bench delete TOPIC...
//! ```
//! The broker comes from `KAFKA_BOOTSTRAP_SERVERS`.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

fn config() -> ClientConfig {
    let mut config = ClientConfig::new();
    let servers = std::env::var("KAFKA_BOOTSTRAP_SERVERS").expect("KAFKA_BOOTSTRAP_SERVERS");
    config.set("bootstrap.servers", servers);
    // The same extra settings the tools read, `key=value` separated by `;` or newlines.
    let extra = std::env::var("KAFKA_CLIENT_CONFIG").unwrap_or_default();
    for item in extra
        .split([';', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let (key, value) = item
            .split_once('=')
            .expect("KAFKA_CLIENT_CONFIG: key=value");
        config.set(key.trim(), value);
    }
    config
}

fn create(topic: &str, partitions: i32, configs: &[String]) {
    let admin: AdminClient<DefaultClientContext> = config().create().expect("admin client");
    let mut new =
        NewTopic::new(topic, partitions, TopicReplication::Fixed(1)).set("retention.ms", "-1");
    for item in configs {
        let (key, value) = item.split_once('=').expect("topic config: key=value");
        new = new.set(key, value);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for result in runtime
        .block_on(admin.create_topics([&new], &AdminOptions::new()))
        .expect("CreateTopics")
    {
        result.expect("topic created");
    }
}

fn delete(topics: &[String]) {
    let admin: AdminClient<DefaultClientContext> = config().create().expect("admin client");
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for result in runtime
        .block_on(admin.delete_topics(&names, &AdminOptions::new()))
        .expect("DeleteTopics")
    {
        if let Err((topic, code)) = result {
            eprintln!("kafka_bench: cannot delete {topic}: {code}");
        }
    }
}

fn consume(topic: &str) {
    let consumer: BaseConsumer = config()
        .set("group.id", "kafka-bench")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let partitions: Vec<i32> = metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.id())
        .collect();
    let mut remaining = 0i64;
    let mut list = TopicPartitionList::new();
    for &p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .expect("watermarks");
        remaining += high - low;
        list.add_partition_offset(topic, p, Offset::Offset(low))
            .unwrap();
    }
    let started = Instant::now();
    consumer.assign(&list).expect("assign");
    let (mut records, mut bytes) = (0u64, 0u64);
    while remaining > 0 {
        match consumer.poll(Duration::from_secs(10)) {
            Some(Ok(message)) => {
                records += 1;
                bytes += (message.payload_len() + message.key_len()) as u64;
                remaining -= 1;
            }
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => panic!("consume: {e}"),
            None => panic!("no record for 10s with {remaining} left"),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!("records {records} bytes {bytes} seconds {seconds:.3}");
}

/// Produces the benchmark's records (the shape scripts/bench-kafka.sh feeds kcat: a key of
/// 50,000 users, a ~190-byte value, two headers), partitioned by key; for brokers kcat cannot
/// reach. Prints how many the broker acknowledged.
fn produce(topic: &str, count: u64) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

    let producer: BaseProducer = config()
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .create()
        .expect("producer");
    let pad = "0".repeat(160);
    for i in 0..count {
        let key = format!("user-{:06}", i % 50_000);
        let value = format!("event-{i:09}-{pad}");
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "trace",
                value: Some("0af7651916cd43dd8448eb211c80319c"),
            })
            .insert(Header {
                key: "source",
                value: Some("bench"),
            });
        let record = BaseRecord::to(topic)
            .key(&key)
            .payload(&value)
            .headers(headers);
        test_support::kafka::send(&producer, record);
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
    println!("produced {count}");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("create") => create(
            &args[2],
            args[3].parse().expect("partition count"),
            &args[4..],
        ),
        Some("consume") => consume(&args[2]),
        Some("produce") => produce(&args[2], args[3].parse().expect("record count")),
        Some("delete") => delete(&args[2..]),
        _ => {
            eprintln!(
                "usage: kafka_bench create TOPIC PARTITIONS [CONFIG=VALUE...] | consume TOPIC | produce TOPIC RECORDS | delete TOPIC..."
            );
            std::process::exit(2);
        }
    }
}

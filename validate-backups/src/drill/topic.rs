//! The drill's Kafka component: a topic of its own with numbered records, backed up with
//! kafka-topic-backup, deleted (the disaster), replayed with kafka-replay and counted.

use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

use crate::broker;

/// Produces `count` records to every partition; returns when all are acknowledged.
pub fn produce(
    config: &ClientConfig,
    topic: &str,
    partitions: i32,
    from: u64,
    count: u64,
) -> anyhow::Result<()> {
    let producer: BaseProducer = broker::client(config)?;
    for n in from..from + count {
        for p in 0..partitions {
            let key = format!("order-{n}");
            let value = format!("{{\"order\":{n},\"partition\":{p}}}");
            let mut record = BaseRecord::to(topic)
                .partition(p)
                .key(key.as_str())
                .payload(value.as_str());
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((e, back)) => {
                        if e.rdkafka_error_code()
                            != Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                        {
                            anyhow::bail!("cannot produce to {topic}: {e}");
                        }
                        record = back;
                        producer.poll(Duration::from_millis(20));
                    }
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(60))
        .with_context(|| format!("records to {topic} were not acknowledged"))?;
    Ok(())
}

/// Waits until a deleted topic is gone from the cluster's metadata.
pub fn wait_gone(config: &ClientConfig, topic: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while broker::topic_records(config, topic)?.is_some() {
        if Instant::now() > deadline {
            anyhow::bail!("topic {topic} still exists 60s after its deletion");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(())
}

/// Waits until a topic holds `expected` records (deliveries may settle briefly).
pub fn wait_records(config: &ClientConfig, topic: &str, expected: u64) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = broker::topic_records(config, topic)?.unwrap_or(0);
        if found == expected || Instant::now() > deadline {
            return Ok(found);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

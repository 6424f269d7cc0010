//! The few Kafka operations validate-backups does itself (everything about records goes
//! through kafka-topic-backup and kafka-replay): metadata, watermarks, topic create/delete.

use std::time::Duration;

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::FromClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

/// Timeout of one broker request.
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// A client configuration from bootstrap servers and extra properties.
pub fn config(servers: &str, properties: &[(String, String)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", servers);
    for (k, v) in properties {
        config.set(k, v);
    }
    config
}

/// Brokers and topic count from a metadata request.
pub fn metadata(config: &ClientConfig) -> anyhow::Result<(usize, usize)> {
    let consumer: BaseConsumer = client(config)?;
    let metadata = consumer
        .fetch_metadata(None, TIMEOUT)
        .context("the Kafka cluster did not answer a metadata request")?;
    Ok((metadata.brokers().len(), metadata.topics().len()))
}

/// Total records between the watermarks of every partition of a topic; None when it does not
/// exist.
pub fn topic_records(config: &ClientConfig, topic: &str) -> anyhow::Result<Option<u64>> {
    let consumer: BaseConsumer = client(config)?;
    let metadata = consumer
        .fetch_metadata(Some(topic), TIMEOUT)
        .with_context(|| format!("cannot read metadata of topic {topic}"))?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    if t.error().is_some() || t.partitions().is_empty() {
        return Ok(None);
    }
    let mut total = 0u64;
    for p in t.partitions() {
        let (low, high) = consumer
            .fetch_watermarks(topic, p.id(), TIMEOUT)
            .with_context(|| format!("cannot read watermarks of {topic}[{}]", p.id()))?;
        total += (high - low).max(0) as u64;
    }
    Ok(Some(total))
}

fn admin(config: &ClientConfig) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    client(config)
}

/// A Kafka client of any kind. The settings are checked first, so a bad one is reported
/// without its value where that may be a secret (see `common::kafka::check_settings`).
pub fn client<T: FromClientConfig>(config: &ClientConfig) -> anyhow::Result<T> {
    common::kafka::check_settings(config)?;
    config.create().context("cannot create a Kafka client")
}

/// Creates a topic (retention unlimited, so a test broker keeps old records).
pub async fn create_topic(
    config: &ClientConfig,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<()> {
    let admin = admin(config)?;
    let new =
        NewTopic::new(topic, partitions, TopicReplication::Fixed(1)).set("retention.ms", "-1");
    let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    for result in admin.create_topics(&[new], &options).await? {
        result.map_err(|(t, e)| anyhow::anyhow!("cannot create topic {t}: {e}"))?;
    }
    Ok(())
}

/// Deletes a topic; a topic that does not exist is fine.
pub async fn delete_topic(config: &ClientConfig, topic: &str) -> anyhow::Result<()> {
    let admin = admin(config)?;
    let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    for result in admin.delete_topics(&[topic], &options).await? {
        match result {
            Ok(_) => {}
            Err((_, rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((t, e)) => anyhow::bail!("cannot delete topic {t}: {e}"),
        }
    }
    Ok(())
}

/// Runs a future on a small runtime of its own.
pub fn block_on<F: std::future::Future>(f: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(runtime.block_on(f))
}

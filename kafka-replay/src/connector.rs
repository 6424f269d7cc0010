//! The CDC connector's stored position (`--connector-offset`): after a cut replay, Kafka
//! Connect's offsets topic gets one record for Debezium's PostgreSQL connector, so it resumes
//! streaming at the cut rather than from an offset on a timeline the restore discarded.
//!
//! Connect keys a source offset by `[connector name, source partition]`, which Debezium's
//! PostgreSQL connector makes `{"server": topic.prefix}`, as compact JSON; the value is
//! `{"lsn": ..., "txId": ..., "ts_usec": ...}`. The record goes to the partition Java's
//! default partitioner picks (murmur2 of the key, librdkafka's `murmur2_random`), where
//! Connect wrote that key before, so the new offset supersedes the old one.

use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use common::lsn::Lsn;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext};
use serde::Serialize;

use crate::lsn_cut::LastEvent;
use crate::target::{Target, REQUEST_TIMEOUT};

/// Kafka Connect's default `offset.storage.topic`.
pub const DEFAULT_OFFSETS_TOPIC: &str = "connect-offsets";

/// Partitions of an offsets topic this replay creates: Connect's default
/// (`offset.storage.partitions`).
const OFFSETS_PARTITIONS: i32 = 25;

/// `CONNECTOR=SERVER`: the connector's name and its `topic.prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorName {
    pub connector: String,
    pub server: String,
}

/// Text that is not `CONNECTOR=SERVER`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid connector '{0}': expected CONNECTOR=SERVER, the connector's name and its topic.prefix"
)]
pub struct ParseConnectorError(String);

impl FromStr for ConnectorName {
    type Err = ParseConnectorError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once('=') {
            Some((connector, server)) if !connector.is_empty() && !server.is_empty() => {
                Ok(ConnectorName {
                    connector: connector.to_string(),
                    server: server.to_string(),
                })
            }
            _ => Err(ParseConnectorError(text.to_string())),
        }
    }
}

/// Debezium's PostgreSQL source offset.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SourceOffset {
    pub lsn: u64,
    #[serde(rename = "txId")]
    pub tx_id: Option<i64>,
    pub ts_usec: i64,
}

/// The summary's `connector_offset`.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectorOffsetReport {
    pub topic: String,
    /// The record's key, as written.
    pub key: String,
    pub value: SourceOffset,
    /// Where it was written; None in a dry run.
    pub partition: Option<i32>,
    pub offset: Option<i64>,
}

/// The offset record's key: `["CONNECTOR",{"server":"SERVER"}]`.
pub fn offset_key(name: &ConnectorName) -> String {
    serde_json::json!([name.connector, {"server": name.server}]).to_string()
}

/// The offset at the cut: the replayed event with the highest LSN gives the transaction and
/// time (now, when none was replayed or it has no time).
pub fn offset_value(until: Lsn, last: Option<&LastEvent>) -> SourceOffset {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    SourceOffset {
        lsn: until.0,
        tx_id: last.and_then(|l| l.tx_id),
        ts_usec: last
            .and_then(|l| l.ts_ms)
            .map_or(now, |ms| ms.saturating_mul(1000)),
    }
}

/// The offset record a dry run would write.
pub fn planned(topic: &str, name: &ConnectorName, value: SourceOffset) -> ConnectorOffsetReport {
    ConnectorOffsetReport {
        topic: topic.to_string(),
        key: offset_key(name),
        value,
        partition: None,
        offset: None,
    }
}

/// The offsets producer's settings: Java's default partitioner, every replica acknowledging.
fn producer_config(config: &ClientConfig) -> ClientConfig {
    let mut config = config.clone();
    config.set("partitioner", "murmur2_random");
    config.set("enable.idempotence", "true");
    config
}

/// Writes the offset record (creating the offsets topic, compacted, when it is missing) and
/// reports where it went.
pub fn write(
    target: &Target,
    config: &ClientConfig,
    topic: &str,
    name: &ConnectorName,
    value: SourceOffset,
    timeout: Duration,
) -> anyhow::Result<ConnectorOffsetReport> {
    if target.topic(topic)?.is_none() {
        let replication = (target.brokers() as i32).clamp(1, 3);
        tracing::info!(
            "creating the offsets topic {topic} with {OFFSETS_PARTITIONS} partitions, cleanup.policy=compact"
        );
        target.create_topic(
            topic,
            OFFSETS_PARTITIONS,
            replication,
            &[("cleanup.policy".to_string(), "compact".to_string())],
        )?;
    }
    let key = offset_key(name);
    let payload = serde_json::to_string(&value)?;
    let producer: BaseProducer<OneDelivery> = producer_config(config)
        .create_with_context(OneDelivery::default())
        .context("invalid Kafka client settings (check -X and KAFKA_CLIENT_CONFIG)")?;
    producer
        .send(BaseRecord::to(topic).key(&key).payload(&payload))
        .map_err(|(e, _)| e)
        .with_context(|| format!("cannot produce the connector offset to {topic}"))?;
    let wait = timeout.max(REQUEST_TIMEOUT);
    let deadline = Instant::now() + wait;
    let (partition, offset) = loop {
        producer.poll(Duration::from_millis(50));
        if let Some(result) = producer.context().take() {
            break result.map_err(|e| {
                anyhow::anyhow!("cannot write the connector offset to {topic}: {e}")
            })?;
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "the connector offset was not delivered to {topic} within {}s (raise --timeout)",
                wait.as_secs()
            );
        }
    };
    tracing::info!("connector offset {key} -> {payload} written to {topic}[{partition}]");
    Ok(ConnectorOffsetReport {
        topic: topic.to_string(),
        key,
        value,
        partition: Some(partition),
        offset: Some(offset),
    })
}

/// The delivery report of the one offset record.
#[derive(Default)]
struct OneDelivery {
    result: Mutex<Option<Result<(i32, i64), KafkaError>>>,
}

impl OneDelivery {
    fn take(&self) -> Option<Result<(i32, i64), KafkaError>> {
        self.result.lock().ok()?.take()
    }
}

impl ClientContext for OneDelivery {}

impl ProducerContext for OneDelivery {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let outcome = match result {
            Ok(message) => Ok((message.partition(), message.offset())),
            Err((error, _)) => Err(error.clone()),
        };
        if let Ok(mut slot) = self.result.lock() {
            *slot = Some(outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_value_are_debeziums() {
        let name: ConnectorName = "inventory-connector=dbserver1".parse().unwrap();
        assert_eq!(
            offset_key(&name),
            r#"["inventory-connector",{"server":"dbserver1"}]"#
        );
        assert!("nameonly".parse::<ConnectorName>().is_err());
        assert!("=server".parse::<ConnectorName>().is_err());
        let last = LastEvent {
            lsn: Lsn(0x16B_3700),
            tx_id: Some(767),
            ts_ms: Some(1_700_000_000_123),
        };
        let value = offset_value(Lsn(0x16B_3748), Some(&last));
        assert_eq!(
            serde_json::to_string(&value).unwrap(),
            r#"{"lsn":23803720,"txId":767,"ts_usec":1700000000123000}"#
        );
        let value = offset_value(Lsn(5), None);
        assert_eq!(value.tx_id, None);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        assert!((now.as_micros() as i64 - value.ts_usec).abs() < 60_000_000);
        assert!(serde_json::to_string(&value)
            .unwrap()
            .contains(r#""txId":null"#));
    }

    #[test]
    fn the_offset_goes_where_javas_partitioner_puts_it() {
        let config = producer_config(ClientConfig::new().set("bootstrap.servers", "x:1"));
        assert_eq!(config.get("partitioner"), Some("murmur2_random"));
        // librdkafka accepts it (the name is checked when a client is made).
        common::kafka::check_settings(&config).unwrap();
    }
}

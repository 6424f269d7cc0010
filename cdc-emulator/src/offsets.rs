//! The connector's source offset in a Kafka Connect offsets topic: the key
//! `["<connector>",{"server":"<prefix>"}]` and Debezium's PostgreSQL value
//! `{"lsn": ..., "txId": ..., "ts_usec": ...}`, both compact JSON as Connect's internal
//! `JsonConverter` writes them. Connect reads every partition and keeps the last value per
//! key; it writes a key to the partition murmur2 of the key picks (the producer here uses
//! librdkafka's `murmur2_random`, the Java default).

use common::lsn::Lsn;
use serde_json::{json, Value};

use super::topics::{ensure_topic, json, read_all};
use super::CdcError;

/// Kafka Connect's default `offset.storage.topic`.
pub const DEFAULT_OFFSETS_TOPIC: &str = "connect-offsets";
/// Kafka Connect's default `offset.storage.partitions`.
pub const DEFAULT_OFFSETS_PARTITIONS: i32 = 25;

/// Where the connector stands: the commit LSN of the last transaction it sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceOffset {
    pub lsn: Lsn,
    pub tx_id: u64,
    /// The commit time of that transaction, microseconds since the epoch.
    pub ts_usec: i64,
}

impl SourceOffset {
    /// `{"lsn": <number>, "txId": <number>, "ts_usec": <number>}`.
    pub fn to_json(&self) -> Value {
        json!({"lsn": self.lsn.0, "txId": self.tx_id, "ts_usec": self.ts_usec})
    }

    /// Reads a stored value; `lsn` must be a number, `txId` and `ts_usec` may be absent.
    pub fn from_json(value: &Value) -> Result<SourceOffset, CdcError> {
        let lsn = value["lsn"].as_u64().ok_or_else(|| CdcError::Offsets {
            message: format!("offset value without a numeric lsn: {value}"),
        })?;
        Ok(SourceOffset {
            lsn: Lsn(lsn),
            tx_id: value["txId"].as_u64().unwrap_or(0),
            ts_usec: value["ts_usec"].as_i64().unwrap_or(0),
        })
    }
}

/// The offsets-topic key of a connector: `["<connector>",{"server":"<prefix>"}]`.
pub fn offset_key(connector: &str, prefix: &str) -> String {
    json!([connector, {"server": prefix}]).to_string()
}

/// One stored offset record.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredOffset {
    pub partition: i32,
    /// The record's offset in its partition.
    pub offset: i64,
    pub value: Value,
}

/// The connector's last stored offset value, as Connect would read it: `None` when the topic
/// or key is absent or the last record for the key is a tombstone. A key found in more than
/// one partition is an error: Connect's result would depend on read order.
pub fn read_offset(
    bootstrap: &str,
    offsets_topic: &str,
    connector: &str,
    prefix: &str,
) -> Result<Option<StoredOffset>, CdcError> {
    let key: Value = json!([connector, {"server": prefix}]);
    let Some(records) = read_all(bootstrap, offsets_topic)? else {
        return Ok(None);
    };
    let mut last: Option<(i32, i64, Option<Value>)> = None;
    for record in &records {
        // Other connectors' keys need not be JSON we understand; only ours must be.
        let Ok(record_key) =
            serde_json::from_slice::<Value>(record.key.as_deref().unwrap_or_default())
        else {
            continue;
        };
        if record_key != key {
            continue;
        }
        if let Some((partition, _, _)) = &last {
            if *partition != record.partition {
                return Err(CdcError::Offsets {
                    message: format!(
                        "key {key} is in partitions {partition} and {} of {offsets_topic}: Connect keeps one partition per key (murmur2)",
                        record.partition
                    ),
                });
            }
        }
        let value = json(record.value.as_deref(), offsets_topic, record, "value")?;
        last = Some((record.partition, record.offset, value));
    }
    Ok(last.and_then(|(partition, offset, value)| {
        value.map(|value| StoredOffset {
            partition,
            offset,
            value,
        })
    }))
}

/// Creates the offsets topic as Connect does (compacted, never expiring) unless it exists.
pub(crate) fn ensure_offsets_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
) -> Result<(), CdcError> {
    ensure_topic(
        bootstrap,
        topic,
        partitions,
        &[("cleanup.policy", "compact"), ("retention.ms", "-1")],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_value_have_connects_exact_shape() {
        assert_eq!(
            offset_key("inventory-connector", "dbserver1"),
            r#"["inventory-connector",{"server":"dbserver1"}]"#
        );
        let offset = SourceOffset {
            lsn: Lsn(0x1_0000_0010),
            tx_id: 725,
            ts_usec: 1_700_000_000_000_001,
        };
        assert_eq!(
            offset.to_json(),
            json!({"lsn": 4_294_967_312_u64, "txId": 725, "ts_usec": 1_700_000_000_000_001_i64})
        );
        assert_eq!(SourceOffset::from_json(&offset.to_json()).unwrap(), offset);
        let err = SourceOffset::from_json(&json!({"lsn": "0/10"})).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"offsets topic: offset value without a numeric lsn: {"lsn":"0/10"}"#
        );
    }
}

//! Reading a CDC topic back as parsed Debezium events, for assertions.

use serde_json::Value;

use super::topics::{json, read_all};
use super::CdcError;

/// One record of a CDC topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub partition: i32,
    pub offset: i64,
    /// The key as written (with the schema wrapper when there is one); `None` for no key.
    pub key: Option<Value>,
    /// The value as written; `None` for a tombstone.
    pub value: Option<Value>,
    /// `op` of the envelope (`c`, `u`, `d`, or `r`/`t` from a real connector).
    pub op: Option<String>,
    /// `source.lsn` of the envelope.
    pub lsn: Option<u64>,
    /// `source.txId` of the envelope.
    pub tx_id: Option<u64>,
    pub headers: Vec<(String, String)>,
}

impl Event {
    /// The envelope (`before`, `after`, `source`, `op`, `ts_ms`), unwrapped from
    /// `{"schema": ..., "payload": ...}` when the converter had schemas enabled.
    pub fn envelope(&self) -> Option<&Value> {
        self.value.as_ref().map(payload)
    }

    /// The key's fields, unwrapped likewise.
    pub fn key_fields(&self) -> Option<&Value> {
        self.key.as_ref().map(payload)
    }

    /// `before`, when not null.
    pub fn before(&self) -> Option<&Value> {
        self.envelope()
            .map(|e| &e["before"])
            .filter(|v| !v.is_null())
    }

    /// `after`, when not null.
    pub fn after(&self) -> Option<&Value> {
        self.envelope()
            .map(|e| &e["after"])
            .filter(|v| !v.is_null())
    }
}

/// `value["payload"]` for a schema-wrapped record, else `value`.
fn payload(value: &Value) -> &Value {
    match value.as_object() {
        Some(object) if object.len() == 2 && object.contains_key("schema") => {
            object.get("payload").unwrap_or(value)
        }
        _ => value,
    }
}

/// Every record of `topic`, partition by partition in offset order, keys and values parsed
/// as JSON. A missing topic or a record that is not JSON is an error.
pub fn read_events(bootstrap: &str, topic: &str) -> Result<Vec<Event>, CdcError> {
    let records = read_all(bootstrap, topic)?.ok_or_else(|| CdcError::Kafka {
        what: format!("read topic {topic}"),
        message: "no such topic".into(),
    })?;
    records
        .iter()
        .map(|record| {
            let key = json(record.key.as_deref(), topic, record, "key")?;
            let value = json(record.value.as_deref(), topic, record, "value")?;
            let envelope = value.as_ref().map(payload);
            let field = |f: fn(&Value) -> &Value| envelope.map(f);
            Ok(Event {
                partition: record.partition,
                offset: record.offset,
                op: field(|e| &e["op"])
                    .and_then(Value::as_str)
                    .map(str::to_string),
                lsn: field(|e| &e["source"]["lsn"]).and_then(Value::as_u64),
                tx_id: field(|e| &e["source"]["txId"]).and_then(Value::as_u64),
                key,
                value,
                headers: record.headers.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payload_unwraps_only_the_converter_wrapper() {
        let plain = json!({"before": null, "after": {"id": 1}, "op": "c"});
        assert_eq!(payload(&plain), &plain);
        let wrapped = json!({"schema": {"type": "struct"}, "payload": plain.clone()});
        assert_eq!(payload(&wrapped), &plain);
        // A row that happens to have a "schema" column is not a wrapper.
        let row = json!({"schema": "s", "payload": 1, "other": 2});
        assert_eq!(payload(&row), &row);
    }
}

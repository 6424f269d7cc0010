//! Debezium's PostgreSQL change events as JSON: the key (the primary key columns) and the
//! value envelope (`before`, `after`, `source`, `op`, `ts_ms`), optionally wrapped as Kafka
//! Connect's `JsonConverter` writes them with `schemas.enable=true`
//! (`{"schema": ..., "payload": ...}`).
//!
//! Column values follow the connector's defaults where JSON can carry them: integers and
//! floats as numbers, booleans as booleans, `numeric` as a string
//! (`decimal.handling.mode=string`), an untouched TOASTed value as
//! `__debezium_unavailable_value`; every other type (timestamps included) as PostgreSQL's
//! text output. The schemas are minimal: field names and Connect types, no semantic names.

use serde_json::{json, Map, Value};

use super::decoding::{Column, Datum, Tuple};

/// Debezium's placeholder for an unchanged TOASTed column.
pub const UNAVAILABLE_VALUE: &str = "__debezium_unavailable_value";

/// The event's `op`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    Create,
    Update,
    Delete,
}

impl Op {
    /// `c`, `u` or `d`.
    pub fn code(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
        }
    }
}

/// Where a change came from: the envelope's `source` block.
#[derive(Debug, Clone)]
pub struct Source<'a> {
    /// The topic prefix (`topic.prefix`), Debezium's `source.name`.
    pub prefix: &'a str,
    pub db: &'a str,
    pub schema: &'a str,
    pub table: &'a str,
    pub tx_id: u64,
    /// The change's own LSN.
    pub lsn: u64,
    /// The previous transaction's commit LSN, for `source.sequence`.
    pub last_commit_lsn: Option<u64>,
    /// The commit time, milliseconds since the epoch.
    pub commit_ms: i64,
}

/// One event to write.
#[derive(Debug, Clone)]
pub struct RowEvent<'a> {
    pub op: Op,
    pub before: Option<&'a Tuple>,
    pub after: Option<&'a Tuple>,
    /// Primary key columns in key order; empty for a table without one (null key).
    pub key_columns: &'a [String],
}

/// The record's key and value as Debezium's JSON converter writes them.
pub fn render(
    event: &RowEvent<'_>,
    source: &Source<'_>,
    now_ms: i64,
    with_schema: bool,
) -> (Option<Value>, Value) {
    let topic = format!("{}.{}.{}", source.prefix, source.schema, source.table);
    let key = key_payload(event);
    let payload = json!({
        "before": event.before.map(row),
        "after": event.after.map(row),
        "source": source_block(source),
        "op": event.op.code(),
        "ts_ms": now_ms,
    });
    if !with_schema {
        return (key, payload);
    }
    let key = key.map(|key| {
        let fields = key_tuple(event)
            .map(|t| fields(t, event.key_columns, true))
            .unwrap_or_default();
        json!({
            "schema": {"type": "struct", "fields": fields, "optional": false, "name": format!("{topic}.Key")},
            "payload": key,
        })
    });
    let columns = event
        .after
        .or(event.before)
        .map(|t| fields(t, event.key_columns, false));
    let row_schema = |field: &str| {
        json!({"type": "struct", "fields": columns.clone().unwrap_or_default(), "optional": true,
               "name": format!("{topic}.Value"), "field": field})
    };
    let schema = json!({
        "type": "struct",
        "fields": [
            row_schema("before"),
            row_schema("after"),
            source_schema(),
            {"type": "string", "optional": false, "field": "op"},
            {"type": "int64", "optional": true, "field": "ts_ms"},
        ],
        "optional": false,
        "name": format!("{topic}.Envelope"),
    });
    (key, json!({"schema": schema, "payload": payload}))
}

/// The tuple the key is read from: the new row, or the old one of a delete.
fn key_tuple<'a>(event: &RowEvent<'a>) -> Option<&'a Tuple> {
    match event.op {
        Op::Delete => event.before,
        Op::Create | Op::Update => event.after,
    }
}

fn key_payload(event: &RowEvent<'_>) -> Option<Value> {
    if event.key_columns.is_empty() {
        return None;
    }
    let tuple = key_tuple(event)?;
    let key: Map<String, Value> = event
        .key_columns
        .iter()
        .map(|name| {
            let value = tuple
                .iter()
                .find(|c| &c.name == name)
                .map_or(Value::Null, value);
            (name.clone(), value)
        })
        .collect();
    Some(Value::Object(key))
}

/// A row as a JSON object, column name to value.
pub fn row(tuple: &Tuple) -> Value {
    Value::Object(tuple.iter().map(|c| (c.name.clone(), value(c))).collect())
}

/// A column's value as the connector's JSON converter writes it.
pub fn value(column: &Column) -> Value {
    match &column.value {
        Datum::Null => Value::Null,
        Datum::Bool(b) => Value::Bool(*b),
        Datum::Text(text) | Datum::Bits(text) => Value::String(text.clone()),
        Datum::UnchangedToast => Value::String(UNAVAILABLE_VALUE.into()),
        Datum::Number(text) => match connect_type(&column.type_name) {
            "int16" | "int32" | "int64" => text
                .parse::<i64>()
                .map_or_else(|_| Value::String(text.clone()), Value::from),
            // NaN and Infinity have no JSON number.
            "float" | "double" => text
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map_or_else(|| Value::String(text.clone()), Value::Number),
            _ => Value::String(text.clone()),
        },
    }
}

/// The Kafka Connect schema type of a PostgreSQL type.
fn connect_type(type_name: &str) -> &'static str {
    match type_name {
        "smallint" => "int16",
        "integer" => "int32",
        "bigint" | "oid" => "int64",
        "real" => "float",
        "double precision" => "double",
        "boolean" => "boolean",
        _ => "string",
    }
}

/// Schema fields of `tuple`'s columns (only the key columns when `key_only`).
fn fields(tuple: &Tuple, key_columns: &[String], key_only: bool) -> Vec<Value> {
    tuple
        .iter()
        .filter(|c| !key_only || key_columns.contains(&c.name))
        .map(|c| {
            json!({"type": connect_type(&c.type_name), "optional": !key_columns.contains(&c.name), "field": c.name})
        })
        .collect()
}

fn source_block(source: &Source<'_>) -> Value {
    let sequence = json!([
        source.last_commit_lsn.map(|l| l.to_string()),
        source.lsn.to_string()
    ]);
    json!({
        "version": "test-support",
        "connector": "postgresql",
        "name": source.prefix,
        "ts_ms": source.commit_ms,
        "snapshot": "false",
        "db": source.db,
        "sequence": sequence.to_string(),
        "schema": source.schema,
        "table": source.table,
        "txId": source.tx_id,
        "lsn": source.lsn,
        "xmin": null,
    })
}

fn source_schema() -> Value {
    let field = |name: &str, kind: &str, optional: bool| json!({"type": kind, "optional": optional, "field": name});
    json!({
        "type": "struct",
        "fields": [
            field("version", "string", false),
            field("connector", "string", false),
            field("name", "string", false),
            field("ts_ms", "int64", false),
            field("snapshot", "string", true),
            field("db", "string", false),
            field("sequence", "string", true),
            field("schema", "string", false),
            field("table", "string", false),
            field("txId", "int64", true),
            field("lsn", "int64", true),
            field("xmin", "int64", true),
        ],
        "optional": false,
        "name": "io.debezium.connector.postgresql.Source",
        "field": "source",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, type_name: &str, value: Datum) -> Column {
        Column {
            name: name.into(),
            type_name: type_name.into(),
            value,
        }
    }

    fn source() -> Source<'static> {
        Source {
            prefix: "shop",
            db: "sales",
            schema: "public",
            table: "orders",
            tx_id: 725,
            lsn: 0x0152_5AF8,
            last_commit_lsn: Some(0x0152_5000),
            commit_ms: 1_700_000_000_123,
        }
    }

    #[test]
    fn insert_envelope_and_key_as_debezium_documents_them() {
        let after = vec![
            col("id", "integer", Datum::Number("7".into())),
            col("note", "text", Datum::Text("a 'b'".into())),
            col("price", "numeric", Datum::Number("1.50".into())),
            col("ratio", "double precision", Datum::Number("NaN".into())),
            col("paid", "boolean", Datum::Bool(false)),
            col("big", "text", Datum::UnchangedToast),
            col("gone", "bigint", Datum::Null),
        ];
        let keys = ["id".to_string()];
        let event = RowEvent {
            op: Op::Create,
            before: None,
            after: Some(&after),
            key_columns: &keys,
        };
        let (key, value) = render(&event, &source(), 42, false);
        assert_eq!(key, Some(json!({"id": 7})));
        assert_eq!(
            value,
            json!({
                "before": null,
                "after": {"id": 7, "note": "a 'b'", "price": "1.50", "ratio": "NaN", "paid": false,
                          "big": UNAVAILABLE_VALUE, "gone": null},
                "source": {"version": "test-support", "connector": "postgresql", "name": "shop",
                           "ts_ms": 1_700_000_000_123_i64, "snapshot": "false", "db": "sales",
                           "sequence": "[\"22171648\",\"22174456\"]", "schema": "public",
                           "table": "orders", "txId": 725, "lsn": 22_174_456, "xmin": null},
                "op": "c",
                "ts_ms": 42,
            })
        );
    }

    #[test]
    fn delete_keys_on_the_old_row_and_keyless_tables_have_no_key() {
        let before = vec![
            col("a", "smallint", Datum::Number("1".into())),
            col("b", "text", Datum::Text("x".into())),
        ];
        let keys = ["b".to_string(), "a".to_string()];
        let event = RowEvent {
            op: Op::Delete,
            before: Some(&before),
            after: None,
            key_columns: &keys,
        };
        let (key, value) = render(&event, &source(), 1, false);
        assert_eq!(key, Some(json!({"a": 1, "b": "x"})));
        assert_eq!(value["before"], json!({"a": 1, "b": "x"}));
        assert_eq!(value["after"], Value::Null);
        assert_eq!(value["op"], "d");
        let event = RowEvent {
            key_columns: &[],
            ..event
        };
        assert_eq!(render(&event, &source(), 1, false).0, None);
    }

    #[test]
    fn schema_wrapper_carries_the_same_payload() {
        let after = vec![
            col("id", "bigint", Datum::Number("9".into())),
            col("v", "real", Datum::Number("0.5".into())),
        ];
        let keys = ["id".to_string()];
        let event = RowEvent {
            op: Op::Update,
            before: None,
            after: Some(&after),
            key_columns: &keys,
        };
        let (plain_key, plain) = render(&event, &source(), 5, false);
        let (key, value) = render(&event, &source(), 5, true);
        let key = key.unwrap();
        assert_eq!(key["payload"], plain_key.unwrap());
        assert_eq!(
            key["schema"],
            json!({"type": "struct", "optional": false, "name": "shop.public.orders.Key",
                   "fields": [{"type": "int64", "optional": false, "field": "id"}]})
        );
        assert_eq!(value["payload"], plain);
        let fields = value["schema"]["fields"].as_array().unwrap();
        let names: Vec<&str> = fields
            .iter()
            .map(|f| f["field"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["before", "after", "source", "op", "ts_ms"]);
        assert_eq!(
            fields[1]["fields"],
            json!([{"type": "int64", "optional": false, "field": "id"},
                   {"type": "float", "optional": true, "field": "v"}])
        );
        assert_eq!(value["schema"]["name"], "shop.public.orders.Envelope");
    }
}

//! The proof of the cut, from what came back rather than from what the tools said:
//! - each CDC topic, its events applied in order (the last `after` per key; a delete or a
//!   tombstone removes the key), gives exactly the rows of its table in the restored database
//!   (the same keys, and the same column values where the event carries them), so every
//!   change up to the cut has its event and no event of a later change is there;
//! - no replayed event is at or after the cut LSN;
//! - a change made now streams through every recreated logical slot: a logical decoding
//!   message (prefix `pipeline-backup-probe`, in a transaction of its own) is emitted and
//!   found by peeking each slot, which consumes nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use common::cdc::{payload, LsnField};
use common::lsn::Lsn;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use tokio_postgres::Client;

use super::plan::Plan;
use super::{Component, CutArgs, Missing};
use crate::broker;

/// The logical decoding message prefix of the streaming probe.
pub const PROBE_PREFIX: &str = "pipeline-backup-probe";

/// What the proof found.
pub struct Proof {
    pub components: Vec<Component>,
    pub missing: Vec<String>,
}

pub fn prove(args: &CutArgs, plan: &Plan, cut: Lsn) -> anyhow::Result<Proof> {
    let runtime = common::postgres::runtime()?;
    let client = runtime.block_on(connect(args))?;
    let field = args.lsn_field.clone().unwrap_or_default();
    let mut proof = Proof {
        components: Vec::new(),
        missing: Vec::new(),
    };
    for topic in &plan.cdc_topics {
        let target = format!("{topic}{}", args.topic_suffix);
        let table = table_of(topic, args.connector.as_deref());
        let events = materialize(args, &target, &field)?;
        let rows = runtime.block_on(table_rows(&client, &table))?;
        match compare(&table, &events, rows, cut) {
            Ok(detail) => proof.components.push(Component::ok(
                format!("proof:{target}"),
                Some(cut.to_string()),
                detail,
            )),
            Err(problem) => {
                proof.components.push(Component::failed(
                    format!("proof:{target}"),
                    problem.to_string(),
                ));
                proof.missing.push(problem.into());
            }
        }
    }
    if !args.no_stream_probe {
        let component = runtime.block_on(stream_probe(&client))?;
        if component.status == "failed" {
            proof.missing.push(component.detail.clone());
        }
        proof.components.push(component);
    }
    Ok(proof)
}

pub(super) async fn connect(args: &CutArgs) -> anyhow::Result<Client> {
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(&args.socket_dir)
        .port(args.port)
        .user(&args.db_user)
        .dbname(&args.database)
        .application_name("validate-backups restore");
    common::postgres::connect_config(&config, "the restored server").await
}

/// `schema.table` of a CDC topic: Debezium names it `<prefix>.<schema>.<table>`.
fn table_of(topic: &str, connector: Option<&str>) -> (String, String) {
    let prefix = connector.and_then(|c| c.split_once('=')).map(|(_, p)| p);
    let rest = prefix
        .and_then(|p| topic.strip_prefix(p))
        .and_then(|r| r.strip_prefix('.'))
        .unwrap_or(topic);
    let mut parts = rest.rsplitn(2, '.');
    let table = parts.next().unwrap_or(rest).to_string();
    let schema = parts
        .next()
        .map(|s| s.rsplit('.').next().unwrap_or(s).to_string())
        .unwrap_or_else(|| "public".into());
    (schema, table)
}

/// A topic's events applied in order.
struct Materialized {
    /// Canonical key JSON -> the row after the last event.
    rows: BTreeMap<String, Value>,
    events: u64,
    max_lsn: Option<Lsn>,
}

fn materialize(args: &CutArgs, topic: &str, field: &LsnField) -> anyhow::Result<Materialized> {
    let properties = common::kafka::kafka_properties(&args.client_config)?;
    let mut config = broker::config(&args.bootstrap_servers, &properties);
    config
        .set("group.id", "validate-backups-restore-proof")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = broker::client(&config)?;
    let metadata = consumer
        .fetch_metadata(Some(topic), broker::TIMEOUT)
        .with_context(|| format!("cannot read metadata of {topic}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut assignment = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for &p in &partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, broker::TIMEOUT)?;
        if high > low {
            assignment.add_partition_offset(topic, p, Offset::Offset(low))?;
            ends.insert(p, high);
        }
    }
    let mut out = Materialized {
        rows: BTreeMap::new(),
        events: 0,
        max_lsn: None,
    };
    if ends.is_empty() {
        return Ok(out);
    }
    consumer.assign(&assignment)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !ends.is_empty() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "reading {topic} back took longer than 2 minutes"
        );
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = message.with_context(|| format!("reading {topic} back"))?;
        apply(&mut out, &message, field);
        if message.offset() + 1 >= ends.get(&message.partition()).copied().unwrap_or(0) {
            ends.remove(&message.partition());
        }
    }
    Ok(out)
}

/// One event: its key's row becomes `after`, or goes (delete, tombstone).
fn apply(
    out: &mut Materialized,
    message: &rdkafka::message::BorrowedMessage<'_>,
    field: &LsnField,
) {
    let Some(key) = message
        .key()
        .and_then(|k| serde_json::from_slice::<Value>(k).ok())
        .map(|k| canonical(payload(&k)))
    else {
        return;
    };
    let lsn = field
        .read(message.payload(), |name| {
            message
                .headers()?
                .iter()
                .filter(|h| h.key == name)
                .last()
                .and_then(|h| h.value)
        })
        .ok()
        .map(|(lsn, _)| lsn);
    out.max_lsn = out.max_lsn.max(lsn);
    let Some(value) = message
        .payload()
        .and_then(|v| serde_json::from_slice::<Value>(v).ok())
    else {
        out.rows.remove(&key);
        return;
    };
    out.events += 1;
    match payload(&value).get("after") {
        Some(after) if !after.is_null() => {
            out.rows.insert(key, after.clone());
        }
        _ => {
            out.rows.remove(&key);
        }
    }
}

/// A JSON value with object keys sorted, as text.
fn canonical(value: &Value) -> String {
    fn sort(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let sorted: BTreeMap<&String, Value> =
                    map.iter().map(|(k, v)| (k, sort(v))).collect();
                serde_json::to_value(sorted).unwrap_or(Value::Null)
            }
            Value::Array(items) => Value::Array(items.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    sort(value).to_string()
}

/// The table's rows by primary-key JSON; `None` when the table is not there.
async fn table_rows(
    client: &Client,
    (schema, table): &(String, String),
) -> anyhow::Result<Option<BTreeMap<String, Value>>> {
    let key_columns: Vec<String> = client
        .query(
            "SELECT a.attname::text FROM pg_index i
               JOIN pg_class c ON c.oid = i.indrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
               JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey)
              WHERE n.nspname = $1 AND c.relname = $2 AND i.indisprimary
              ORDER BY array_position(i.indkey, a.attnum)",
            &[schema, table],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                             WHERE n.nspname = $1 AND c.relname = $2)",
            &[schema, table],
        )
        .await?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let quoted = format!(
        "{}.{}",
        common::postgres::quote_ident(schema),
        common::postgres::quote_ident(table)
    );
    let rows = client
        .query(&format!("SELECT row_to_json(t)::text FROM {quoted} t"), &[])
        .await
        .with_context(|| format!("cannot read {quoted} in the restored database"))?;
    let mut by_key = BTreeMap::new();
    for row in rows {
        let value: Value = serde_json::from_str(&row.get::<_, String>(0))?;
        let key: serde_json::Map<String, Value> = key_columns
            .iter()
            .map(|c| (c.clone(), value.get(c).cloned().unwrap_or(Value::Null)))
            .collect();
        by_key.insert(canonical(&Value::Object(key)), value);
    }
    Ok(Some(by_key))
}

/// Compares a topic's materialized rows with its table's.
fn compare(
    (schema, table): &(String, String),
    events: &Materialized,
    rows: Option<BTreeMap<String, Value>>,
    cut: Lsn,
) -> Result<String, Missing> {
    let name = format!("{schema}.{table}");
    if let Some(max) = events.max_lsn.filter(|&m| m >= cut) {
        return Err(Missing(format!(
            "{name}: an event at LSN {max} is in the topic, at or after the cut {cut}"
        )));
    }
    let Some(rows) = rows else {
        return Err(Missing(format!(
            "{name}: the table is not in the restored database"
        )));
    };
    let missing_events: Vec<&String> = rows
        .keys()
        .filter(|k| !events.rows.contains_key(*k))
        .collect();
    let phantoms: Vec<&String> = events
        .rows
        .keys()
        .filter(|k| !rows.contains_key(*k))
        .collect();
    let differing: Vec<&String> = events
        .rows
        .iter()
        .filter(|(k, after)| rows.get(*k).is_some_and(|row| !agrees(after, row)))
        .map(|(k, _)| k)
        .collect();
    if missing_events.is_empty() && phantoms.is_empty() && differing.is_empty() {
        return Ok(format!(
            "{} event(s) give exactly the {} row(s) of {name} (newest event LSN {})",
            events.events,
            rows.len(),
            events.max_lsn.map_or("none".into(), |l| l.to_string())
        ));
    }
    let first = |keys: &[&String]| {
        keys.first()
            .map_or(String::new(), |k| format!(" (first key {k})"))
    };
    Err(Missing(format!(
        "{name} and its CDC events disagree: {} row(s) without their event{}, {} event row(s) not in the table{}, {} row(s) with other values{}: the events of the window ({}, {cut}] are missing from the topic backup or events after the cut are in it",
        missing_events.len(),
        first(&missing_events),
        phantoms.len(),
        first(&phantoms),
        differing.len(),
        first(&differing),
        events.max_lsn.map_or("the start".into(), |l| l.to_string()),
    )))
}

/// Whether an event's `after` agrees with the row: every column the event carries has the
/// row's value (numbers compared as numbers).
fn agrees(after: &Value, row: &Value) -> bool {
    let (Some(after), Some(row)) = (after.as_object(), row.as_object()) else {
        return false;
    };
    after
        .iter()
        .all(|(column, value)| match (value, row.get(column)) {
            (Value::Number(a), Some(Value::Number(b))) => a.as_f64() == b.as_f64(),
            (a, Some(b)) => a == b,
            (_, None) => true,
        })
}

/// A change made now streams through every logical slot.
async fn stream_probe(client: &Client) -> anyhow::Result<Component> {
    let token = format!(
        "{}-{}",
        std::process::id(),
        common::timefmt::now().unix_timestamp_nanos()
    );
    client
        .query_one(
            "SELECT pg_logical_emit_message(true, $1, $2)::text",
            &[&PROBE_PREFIX, &token],
        )
        .await
        .context("cannot emit the streaming probe (pg_logical_emit_message)")?;
    let slots = client
        .query(
            "SELECT slot_name::text, plugin::text FROM pg_replication_slots
              WHERE slot_type = 'logical' AND database = current_database()",
            &[],
        )
        .await?;
    if slots.is_empty() {
        return Ok(Component::failed(
            "stream-probe",
            "no logical slot in the restored database: changes after the restore would not stream",
        ));
    }
    let mut silent = Vec::new();
    for slot in &slots {
        let (name, plugin): (String, String) = (slot.get(0), slot.get(1));
        // Decoding reads flushed WAL only: a moment may pass before the commit is there.
        let mut found = false;
        for _ in 0..20 {
            found = peek_finds(client, &name, &plugin, &token).await?;
            if found {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        if !found {
            silent.push(format!("{name} ({plugin})"));
        }
    }
    Ok(if silent.is_empty() {
        Component::ok(
            "stream-probe",
            None,
            format!(
                "a change made after the restore streams through {} slot(s)",
                slots.len()
            ),
        )
    } else {
        Component::failed(
            "stream-probe",
            format!(
                "a change made after the restore does not stream through {}",
                silent.join(", ")
            ),
        )
    })
}

/// Peeks a slot (consuming nothing) for the probe message.
async fn peek_finds(
    client: &Client,
    slot: &str,
    plugin: &str,
    token: &str,
) -> anyhow::Result<bool> {
    let found: i64 = if plugin == "pgoutput" {
        let publications: Option<String> = client
            .query_one("SELECT string_agg(pubname, ',') FROM pg_publication", &[])
            .await?
            .get(0);
        let Some(publications) = publications else {
            return Ok(false);
        };
        client
            .query_one(
                "SELECT count(*) FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL,
                   'proto_version', '1', 'publication_names', $2, 'messages', 'true')
                 WHERE position(convert_to($3, 'UTF8') in data) > 0",
                &[&slot, &publications, &token],
            )
            .await
            .with_context(|| format!("cannot peek slot {slot}"))?
            .get(0)
    } else {
        client
            .query_one(
                "SELECT count(*) FROM pg_logical_slot_peek_changes($1, NULL, NULL) WHERE position($2 in data) > 0",
                &[&slot, &token],
            )
            .await
            .with_context(|| format!("cannot peek slot {slot}"))?
            .get(0)
    };
    Ok(found > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_of_debezium_topics() {
        let t = |topic, connector| table_of(topic, connector);
        assert_eq!(
            t("shop.public.orders", Some("inv=shop")),
            ("public".into(), "orders".into())
        );
        assert_eq!(
            t("shop.public.orders", None),
            ("public".into(), "orders".into())
        );
        assert_eq!(
            t("a.b.sales.items", Some("x=a.b")),
            ("sales".into(), "items".into())
        );
    }

    #[test]
    fn events_agree_with_rows_by_the_columns_they_carry() {
        let row = serde_json::json!({"id": 1, "v": "x", "n": 2.0});
        assert!(agrees(
            &serde_json::json!({"id": 1, "v": "x", "n": 2}),
            &row
        ));
        assert!(!agrees(&serde_json::json!({"id": 1, "v": "y"}), &row));
        assert_eq!(
            canonical(&serde_json::json!({"b": 1, "a": 2})),
            r#"{"a":2,"b":1}"#
        );
    }
}

//! A small Debezium-shaped CDC connector emulator, for the tests and the recovery drill
//! (`validate-backups drill`): reads a logical replication slot (`test_decoding`) through
//! psql, writes each row change to `<prefix>.<schema>.<table>` as Debezium's PostgreSQL
//! connector documents its events, and keeps its position the way Kafka Connect does, in an
//! offsets topic.
//!
//! One [`CdcProducer::poll`] is one pass: peek the committed transactions the slot holds,
//! produce their events, wait until Kafka acknowledged them, write the source offset (the
//! commit LSN of the last transaction), then advance the slot to that LSN. A crash between
//! producing and writing the offset re-sends those events on restart (at-least-once, as
//! Debezium); a crash between writing the offset and advancing the slot does not, because
//! [`CdcProducer::resume`] skips every transaction the stored offset covers.
//!
//! Skipping is by transaction, on its commit LSN, not by each change's LSN: transactions
//! are decoded in commit order, so a change of a later-committed transaction can carry an
//! LSN lower than an earlier transaction's commit. An event's `source.lsn` is its change's
//! LSN, so such interleaved transactions also make `source.lsn` not monotonic in a topic.

mod decoding;
mod envelope;
mod events;
mod offsets;
mod slot;
mod topics;

use std::collections::{BTreeMap, HashMap, HashSet};

use common::lsn::Lsn;
use rdkafka::message::{Header, OwnedHeaders};

pub use decoding::DecodeError;
pub use envelope::{Op, UNAVAILABLE_VALUE};
pub use events::{read_events, Event};
pub use offsets::{
    offset_key, read_offset, SourceOffset, StoredOffset, DEFAULT_OFFSETS_PARTITIONS,
    DEFAULT_OFFSETS_TOPIC,
};

use decoding::{Action, Change, Tuple};
use envelope::{render, RowEvent, Source};
pub use slot::Endpoint;

use slot::{SlotDb, Transaction};
use topics::Sender;

/// Why a CDC step failed.
#[derive(Debug, thiserror::Error)]
pub enum CdcError {
    #[error("{what}: {message}")]
    Sql { what: String, message: String },
    #[error("cannot decode slot row at {lsn}: {error}: {line:?}")]
    Decode {
        lsn: Lsn,
        line: String,
        error: DecodeError,
    },
    #[error("slot stream at {lsn}: {message}")]
    Stream { lsn: Lsn, message: String },
    #[error("{what}: {message}")]
    Kafka { what: String, message: String },
    #[error("{what} is not JSON: {message}")]
    Json { what: String, message: String },
    #[error("offsets topic: {message}")]
    Offsets { message: String },
}

/// What the connector reads and where it writes.
#[derive(Debug, Clone)]
pub struct CdcConfig {
    /// The server holding the slot.
    pub endpoint: Endpoint,
    /// The database the slot belongs to (`source.db`).
    pub database: String,
    pub slot: String,
    /// `topic.prefix`: topics are `<prefix>.<schema>.<table>`; `source.name`.
    pub prefix: String,
    /// The connector's name in the offsets key.
    pub connector: String,
    pub offsets_topic: String,
    /// Partitions of the offsets topic when this connector creates it.
    pub offsets_partitions: i32,
    pub bootstrap: String,
    /// Wrap keys and values as `{"schema": ..., "payload": ...}` (JsonConverter with
    /// `schemas.enable=true`).
    pub with_schema: bool,
    /// A tombstone (null value, same key) after each delete, as `tombstones.on.delete=true`.
    pub tombstones: bool,
    /// Slot rows read per pass (whole transactions: a pass may read more).
    pub batch_rows: u64,
}

impl CdcConfig {
    /// Defaults: slot `<prefix>_slot` (made a valid slot name), connector
    /// `<prefix>-connector`, offsets in `connect-offsets` (25 partitions when created here),
    /// no schema wrapper, no tombstones, 10,000 rows per pass.
    pub fn new(endpoint: Endpoint, database: &str, prefix: &str, bootstrap: &str) -> CdcConfig {
        CdcConfig {
            endpoint,
            database: database.to_string(),
            slot: slot_name(prefix),
            prefix: prefix.to_string(),
            connector: format!("{prefix}-connector"),
            offsets_topic: DEFAULT_OFFSETS_TOPIC.to_string(),
            offsets_partitions: DEFAULT_OFFSETS_PARTITIONS,
            bootstrap: bootstrap.to_string(),
            with_schema: false,
            tombstones: false,
            batch_rows: 10_000,
        }
    }

    /// The topic of a table: see [`topic_name`].
    pub fn topic(&self, schema: &str, table: &str) -> String {
        topic_name(&self.prefix, schema, table)
    }

    fn slot_db(&self) -> SlotDb<'_> {
        SlotDb {
            endpoint: &self.endpoint,
            database: &self.database,
            slot: &self.slot,
        }
    }
}

/// `<prefix>.<schema>.<table>`, characters Kafka does not allow in a topic name replaced by
/// `_` (as Debezium does).
pub fn topic_name(prefix: &str, schema: &str, table: &str) -> String {
    format!("{prefix}.{schema}.{table}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `<prefix>_slot`, lower-cased, other characters than `[a-z0-9_]` replaced by `_`, at most
/// 63 bytes.
fn slot_name(prefix: &str) -> String {
    let mut slot: String = prefix
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '_' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '_',
        })
        .collect();
    slot.truncate(58);
    format!("{slot}_slot")
}

/// Where [`CdcProducer::poll_until`] stops, to play a crash at that point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollStop {
    /// Events produced and acknowledged; no offset written, slot not advanced.
    AfterProduce,
    /// Offset written; slot not advanced.
    AfterOffset,
    /// The whole pass, until the slot holds nothing more.
    Complete,
}

/// Events produced per op for one table (tombstones not counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpCounts {
    pub created: u64,
    pub updated: u64,
    pub deleted: u64,
}

impl OpCounts {
    pub fn total(&self) -> u64 {
        self.created + self.updated + self.deleted
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollStats {
    /// Transactions whose events were produced (those without row changes included).
    pub transactions: u64,
    /// Transactions the stored offset already covered, not sent again.
    pub skipped_transactions: u64,
    /// Change events produced, all tables.
    pub events: u64,
    pub tombstones: u64,
    /// TRUNCATEs seen (not sent, as Debezium's default `skipped.operations=t`).
    pub truncates: u64,
    /// Per `<schema>.<table>`.
    pub tables: BTreeMap<String, OpCounts>,
    /// Commit LSN and xid of the last transaction read (sent or skipped): where the slot
    /// stands after a complete pass.
    pub last_commit_lsn: Option<Lsn>,
    pub last_tx_id: Option<u64>,
}

/// The connector.
pub struct CdcProducer {
    config: CdcConfig,
    sender: Sender,
    /// The last offset stored (or read on resume): transactions up to it are not sent.
    offset: Option<SourceOffset>,
    /// The commit LSN before the transaction being sent, for `source.sequence`.
    last_commit: Option<Lsn>,
    keys: HashMap<(String, String), Vec<String>>,
    topics: HashSet<String>,
}

impl std::fmt::Debug for CdcProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CdcProducer")
            .field("config", &self.config)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl CdcProducer {
    /// A connector starting without a stored offset: it sends whatever the slot holds.
    /// Creates the offsets topic if missing.
    pub fn new(config: CdcConfig) -> Result<CdcProducer, CdcError> {
        offsets::ensure_offsets_topic(
            &config.bootstrap,
            &config.offsets_topic,
            config.offsets_partitions,
        )?;
        Ok(CdcProducer {
            sender: Sender::new(&config.bootstrap)?,
            config,
            offset: None,
            last_commit: None,
            keys: HashMap::new(),
            topics: HashSet::new(),
        })
    }

    /// A connector restarting: reads its last offset from the offsets topic, and skips the
    /// transactions committed at or before it.
    pub fn resume(config: CdcConfig) -> Result<CdcProducer, CdcError> {
        let mut producer = CdcProducer::new(config)?;
        let config = &producer.config;
        let stored = read_offset(
            &config.bootstrap,
            &config.offsets_topic,
            &config.connector,
            &config.prefix,
        )?;
        producer.offset = stored
            .map(|s| SourceOffset::from_json(&s.value))
            .transpose()?;
        producer.last_commit = producer.offset.map(|o| o.lsn);
        Ok(producer)
    }

    pub fn config(&self) -> &CdcConfig {
        &self.config
    }

    /// The offset last stored or resumed from.
    pub fn offset(&self) -> Option<SourceOffset> {
        self.offset
    }

    /// Creates the slot with `test_decoding`; returns its consistent point.
    pub fn create_slot(&self) -> Result<Lsn, CdcError> {
        self.config.slot_db().create()
    }

    /// The slot's `confirmed_flush_lsn` (`None` when it does not exist).
    pub fn slot_position(&self) -> Result<Option<Lsn>, CdcError> {
        self.config.slot_db().confirmed_flush()
    }

    /// One complete pass: sends everything the slot holds.
    pub fn poll(&mut self) -> Result<PollStats, CdcError> {
        self.poll_until(PollStop::Complete)
    }

    /// A pass that stops at `stop` (after the first batch for the crash points); drop the
    /// producer afterwards to play the crash.
    pub fn poll_until(&mut self, stop: PollStop) -> Result<PollStats, CdcError> {
        let mut stats = PollStats::default();
        loop {
            let slot = self.config.slot_db();
            let txs = slot.peek(Some(self.config.batch_rows))?;
            let Some(last) = txs.last().map(|tx| (tx.commit_lsn, tx.xid)) else {
                return Ok(stats);
            };
            let mut newest: Option<SourceOffset> = None;
            for tx in &txs {
                if self.offset.is_some_and(|o| tx.commit_lsn <= o.lsn) {
                    stats.skipped_transactions += 1;
                    continue;
                }
                self.send_transaction(tx, &mut stats)?;
                newest = Some(SourceOffset {
                    lsn: tx.commit_lsn,
                    tx_id: tx.xid,
                    ts_usec: tx.commit_us,
                });
            }
            self.sender.flush()?;
            if stop == PollStop::AfterProduce {
                return Ok(stats);
            }
            if let Some(offset) = newest {
                self.store_offset(offset)?;
            }
            if stop == PollStop::AfterOffset {
                return Ok(stats);
            }
            self.config.slot_db().advance(last.0)?;
            (stats.last_commit_lsn, stats.last_tx_id) = (Some(last.0), Some(last.1));
        }
    }

    fn store_offset(&mut self, offset: SourceOffset) -> Result<(), CdcError> {
        let key = offset_key(&self.config.connector, &self.config.prefix);
        let value = offset.to_json().to_string();
        self.sender
            .send(&self.config.offsets_topic, Some(&key), Some(&value), None)?;
        self.sender.flush()?;
        self.offset = Some(offset);
        Ok(())
    }

    fn send_transaction(
        &mut self,
        tx: &Transaction,
        stats: &mut PollStats,
    ) -> Result<(), CdcError> {
        let now_ms = now_ms();
        for (lsn, change) in &tx.changes {
            if change.action == Action::Truncate {
                stats.truncates += 1;
                continue;
            }
            let key_columns = self.primary_key(change)?;
            let topic = self.config.topic(&change.schema, &change.table);
            if self.topics.insert(topic.clone()) {
                topics::ensure_topic(&self.config.bootstrap, &topic, 1, &[("retention.ms", "-1")])?;
            }
            let source = Source {
                prefix: &self.config.prefix,
                db: &self.config.database,
                schema: &change.schema,
                table: &change.table,
                tx_id: tx.xid,
                lsn: lsn.0,
                last_commit_lsn: self.last_commit.map(|l| l.0),
                commit_ms: tx.commit_us.div_euclid(1000),
            };
            let counts = stats
                .tables
                .entry(format!("{}.{}", change.schema, change.table))
                .or_default();
            for (event, headers) in row_events(change, &key_columns) {
                let (key, value) = render(&event, &source, now_ms, self.config.with_schema);
                let key = key.map(|k| k.to_string());
                self.sender
                    .send(&topic, key.as_deref(), Some(&value.to_string()), headers)?;
                stats.events += 1;
                match event.op {
                    Op::Create => counts.created += 1,
                    Op::Update => counts.updated += 1,
                    Op::Delete => counts.deleted += 1,
                }
                if event.op == Op::Delete && self.config.tombstones && key.is_some() {
                    self.sender.send(&topic, key.as_deref(), None, None)?;
                    stats.tombstones += 1;
                }
            }
        }
        self.last_commit = Some(tx.commit_lsn);
        stats.transactions += 1;
        Ok(())
    }

    fn primary_key(&mut self, change: &Change) -> Result<Vec<String>, CdcError> {
        let table = (change.schema.clone(), change.table.clone());
        if let Some(key) = self.keys.get(&table) {
            return Ok(key.clone());
        }
        let key = self
            .config
            .slot_db()
            .primary_key(&change.schema, &change.table)?;
        self.keys.insert(table, key.clone());
        Ok(key)
    }
}

/// The events of one change: an update that changes the primary key becomes a delete of
/// the old key and a create of the new one, with Debezium's `__debezium.newkey` /
/// `__debezium.oldkey` headers.
fn row_events<'a>(
    change: &'a Change,
    key_columns: &'a [String],
) -> Vec<(RowEvent<'a>, Option<OwnedHeaders>)> {
    let event = |op, before, after| RowEvent {
        op,
        before,
        after,
        key_columns,
    };
    match &change.action {
        Action::Insert { new } => vec![(event(Op::Create, None, Some(new)), None)],
        Action::Delete { old } => vec![(event(Op::Delete, old.as_ref(), None), None)],
        Action::Update {
            old: Some(old),
            new,
        } if key_changed(old, new, key_columns) => {
            let header = |name: &str, tuple: &Tuple| {
                let key = key_json(tuple, key_columns).to_string();
                Some(OwnedHeaders::new().insert(Header {
                    key: name,
                    value: Some(&key),
                }))
            };
            vec![
                (
                    event(Op::Delete, Some(old), None),
                    header("__debezium.newkey", new),
                ),
                (
                    event(Op::Create, None, Some(new)),
                    header("__debezium.oldkey", old),
                ),
            ]
        }
        Action::Update { old, new } => vec![(event(Op::Update, old.as_ref(), Some(new)), None)],
        Action::Truncate => Vec::new(),
    }
}

fn key_json(tuple: &Tuple, key_columns: &[String]) -> serde_json::Value {
    serde_json::Value::Object(
        key_columns
            .iter()
            .map(|name| {
                let value = tuple
                    .iter()
                    .find(|c| &c.name == name)
                    .map_or(serde_json::Value::Null, envelope::value);
                (name.clone(), value)
            })
            .collect(),
    )
}

fn key_changed(old: &Tuple, new: &Tuple, key_columns: &[String]) -> bool {
    !key_columns.is_empty() && key_json(old, key_columns) != key_json(new, key_columns)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use decoding::{parse_line, Line};
    use serde_json::json;

    fn change(line: &str) -> Change {
        match parse_line(line).unwrap() {
            Line::Change(change) => change,
            other => panic!("{other:?}"),
        }
    }

    fn ops(events: &[(RowEvent<'_>, Option<OwnedHeaders>)]) -> Vec<Op> {
        events.iter().map(|(e, _)| e.op).collect()
    }

    #[test]
    fn primary_key_change_is_a_delete_and_a_create() {
        let keys = ["id".to_string()];
        let moved = change(
            "table public.t: UPDATE: old-key: id[integer]:1 new-tuple: id[integer]:3 v[text]:'x'",
        );
        let events = row_events(&moved, &keys);
        assert_eq!(ops(&events), [Op::Delete, Op::Create]);
        assert_eq!(envelope::row(events[0].0.before.unwrap()), json!({"id": 1}));
        assert_eq!(
            envelope::row(events[1].0.after.unwrap()),
            json!({"id": 3, "v": "x"})
        );
        use rdkafka::message::Headers;
        let header = events[0].1.as_ref().unwrap().get(0);
        assert_eq!(
            (header.key, header.value),
            ("__debezium.newkey", Some(&b"{\"id\":3}"[..]))
        );
    }

    #[test]
    fn full_identity_update_with_the_same_key_stays_an_update() {
        let keys = ["id".to_string()];
        let full = change("table public.t: UPDATE: old-key: id[integer]:3 v[text]:'x' new-tuple: id[integer]:3 v[text]:'y'");
        let events = row_events(&full, &keys);
        assert_eq!(ops(&events), [Op::Update]);
        assert_eq!(
            envelope::row(events[0].0.before.unwrap()),
            json!({"id": 3, "v": "x"})
        );
        // Without a primary key there is no key to change.
        assert_eq!(ops(&row_events(&full, &[])), [Op::Update]);
        let truncate = change("table public.t: TRUNCATE: (no-flags)");
        assert!(row_events(&truncate, &keys).is_empty());
    }

    #[test]
    fn topic_and_slot_names_are_made_valid() {
        assert_eq!(slot_name("Shop-1.eu"), "shop_1_eu_slot");
        assert_eq!(slot_name(&"x".repeat(80)).len(), 63);
        assert_eq!(
            topic_name("Shop-1.eu", "public", "My Tab"),
            "Shop-1.eu.public.My_Tab"
        );
    }
}

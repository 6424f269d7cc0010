//! The LSN cut (`--until-lsn`): of a CDC topic, only the events of changes PostgreSQL's
//! recovery reached are replayed, those whose LSN is strictly below the cut. Events at or
//! after it describe changes the restored database does not hold (phantoms).
//!
//! The LSN is read from each record: by default Debezium's envelope `source.lsn`, with the
//! JsonConverter schema wrapper (`/payload/source/lsn`) or without (`/source/lsn`); or where
//! `--lsn-field` says (a JSON pointer into the value, or `header:NAME`). It may be a JSON
//! number or text (`0/16B3748` or decimal). A tombstone (null value) carries no LSN: it
//! follows the record before it with the same key (Debezium emits a delete, then its
//! tombstone), looked up among the partition's recent records; without one there, it follows
//! the record just before it in the partition, and the first record of a partition is kept.
//! A record whose LSN cannot be read stops the replay (exit 1) before anything is produced:
//! the replay checks every selected record in a first pass.
//!
//! Transactions cut off by the restore (`--skip-txids`): a transaction that began before the
//! cut and committed after it has events below the cut that the restored database does not
//! hold (recovery rolled it back). Their transaction ids (Debezium's `source.txId`, or where
//! `--txid-field` says) are given, and their events are left out like the phantoms after the
//! cut. `--list-txids` prints the distinct transaction ids of the events below the cut, so
//! the caller can ask the restored server which of them it did not commit.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;

use anyhow::Context;
pub use common::cdc::{parse_lsn, LsnField, TxIdField};
use common::cdc::{source_field, Missing};
use common::exit::CodedError;
use common::lsn::Lsn;
use common::topic_archive::RecordView;
use serde::Serialize;
use serde_json::Value;

/// Recent records remembered per partition for their tombstones: Debezium writes a delete's
/// tombstone right after it, so a short memory is enough, and it stays bounded.
const RECENT_KEYS: usize = 1024;

/// The replayed event with the highest LSN: where the connector's stored offset comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastEvent {
    pub lsn: Lsn,
    /// Its `source.txId`, when the value is Debezium's envelope.
    pub tx_id: Option<i64>,
    /// Its `source.ts_ms`.
    pub ts_ms: Option<i64>,
}

/// The cut's outcome in the summary (`lsn_cut`); LSNs in PostgreSQL's text form.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LsnCutReport {
    pub until_lsn: String,
    /// Selected records below the cut (produced now or already in the target).
    pub replayed: u64,
    /// Selected records at or after the cut, left out.
    pub dropped_after_cut: u64,
    /// Selected records below the cut of transactions the restore cut off (--skip-txids),
    /// left out.
    pub skipped_cut_off_events: u64,
    pub max_replayed_lsn: Option<String>,
    pub min_dropped_lsn: Option<String>,
    /// The highest LSN among the records the other filters select: below `until_lsn`, the
    /// topic backup may be older than the restore point.
    pub backup_newest_lsn: Option<String>,
}

/// What one pass over the archive saw.
#[derive(Debug, Clone, Default)]
struct Counts {
    replayed: u64,
    dropped: u64,
    skipped: u64,
    min_dropped: Option<Lsn>,
    newest: Option<Lsn>,
    last: Option<LastEvent>,
}

/// What the cut decided for one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Kept,
    AfterCut,
    /// Below the cut, of a transaction the restore cut off.
    CutOff,
}

/// A partition's recent decisions, for the tombstones that follow.
#[derive(Debug, Clone, Default)]
struct Recent {
    /// Hashes of recent keys with the decision on that record, newest last.
    keys: VecDeque<(u64, Decision)>,
    /// The decision on the partition's previous record.
    last: Option<Decision>,
}

/// What the cut does with the transaction ids of the events below it.
#[derive(Debug, Clone)]
pub enum TxIds {
    /// `--skip-txids`: leave out the events of these transactions.
    Skip(TxIdField, HashSet<u64>),
    /// `--list-txids`: collect the distinct ids.
    List(TxIdField, BTreeSet<u64>),
}

/// The cut of one replay, with its running counts.
#[derive(Debug, Clone)]
pub struct LsnCut {
    pub until: Lsn,
    pub field: LsnField,
    /// The source topic, for error messages.
    topic: String,
    recent: HashMap<i32, Recent>,
    counts: Counts,
    /// None: transaction ids are not read.
    txids: Option<TxIds>,
}

impl LsnCut {
    pub fn new(until: Lsn, field: LsnField, topic: String) -> LsnCut {
        LsnCut {
            until,
            field,
            topic,
            recent: HashMap::new(),
            counts: Counts::default(),
            txids: None,
        }
    }

    /// Reads the transaction id of every event below the cut, to skip or list it.
    pub fn with_txids(mut self, txids: TxIds) -> LsnCut {
        self.txids = Some(txids);
        self
    }

    /// The distinct transaction ids of the events below the cut, in `--list-txids` mode.
    pub fn listed_txids(&self) -> Option<&BTreeSet<u64>> {
        match &self.txids {
            Some(TxIds::List(_, ids)) => Some(ids),
            _ => None,
        }
    }

    /// Starts a new pass over the archive.
    pub fn restart(&mut self) {
        self.recent.clear();
        self.counts = Counts::default();
        if let Some(TxIds::List(_, ids)) = &mut self.txids {
            ids.clear();
        }
    }

    /// Whether the record is below the cut. An error (exit 1) names the record whose LSN
    /// cannot be read.
    pub fn keeps(&mut self, partition: i32, record: &RecordView<'_>) -> anyhow::Result<bool> {
        let key = key_hash(record.key);
        let recent = self.recent.entry(partition).or_default();
        if record.value.is_none() {
            let decision = recent
                .keys
                .iter()
                .rev()
                .find(|(k, _)| *k == key)
                .map(|(_, decision)| *decision)
                .or(recent.last)
                .unwrap_or(Decision::Kept);
            recent.last = Some(decision);
            self.count(decision, None);
            return Ok(decision == Decision::Kept);
        }
        let (lsn, value) = match read_lsn(&self.field, record) {
            Ok(found) => found,
            Err(missing) => return Err(self.missing(partition, record.offset, missing)),
        };
        let decision = if lsn >= self.until {
            Decision::AfterCut
        } else {
            self.below_cut(partition, record, value.as_ref())?
        };
        let recent = self.recent.entry(partition).or_default();
        if recent.keys.len() == RECENT_KEYS {
            recent.keys.pop_front();
        }
        recent.keys.push_back((key, decision));
        recent.last = Some(decision);
        self.count(decision, Some(lsn));
        self.counts.newest = self.counts.newest.max(Some(lsn));
        let kept = decision == Decision::Kept;
        if kept && self.counts.last.as_ref().is_none_or(|l| lsn >= l.lsn) {
            self.counts.last = Some(last_event(lsn, value, record.value));
        }
        Ok(kept)
    }

    /// An event below the cut: kept, unless its transaction is one the restore cut off; its
    /// transaction id listed in `--list-txids` mode.
    fn below_cut(
        &mut self,
        partition: i32,
        record: &RecordView<'_>,
        value: Option<&Value>,
    ) -> anyhow::Result<Decision> {
        let Some(txids) = &mut self.txids else {
            return Ok(Decision::Kept);
        };
        let (TxIds::Skip(field, _) | TxIds::List(field, _)) = txids;
        let id = match read_txid(field, record, value) {
            Ok(id) => id,
            Err(missing) => {
                let field = field.to_string();
                return Err(self.missing_txid(partition, record.offset, &field, missing));
            }
        };
        Ok(match txids {
            TxIds::Skip(_, skip) if skip.contains(&id) => Decision::CutOff,
            TxIds::Skip(..) => Decision::Kept,
            TxIds::List(_, ids) => {
                ids.insert(id);
                Decision::Kept
            }
        })
    }

    fn count(&mut self, decision: Decision, lsn: Option<Lsn>) {
        match decision {
            Decision::Kept => self.counts.replayed += 1,
            Decision::CutOff => self.counts.skipped += 1,
            Decision::AfterCut => {
                self.counts.dropped += 1;
                if let Some(lsn) = lsn {
                    self.counts.min_dropped =
                        Some(self.counts.min_dropped.map_or(lsn, |m| m.min(lsn)));
                }
            }
        }
    }

    fn missing_txid(
        &self,
        partition: i32,
        offset: i64,
        field: &str,
        missing: Missing,
    ) -> anyhow::Error {
        let error = anyhow::anyhow!(
            "{}[{partition}] offset {offset} is below the cut but has no transaction id at {field}: {missing}; the transactions the restore cut off cannot be told apart without one (--txid-field says where it is); nothing was produced",
            self.topic
        );
        CodedError::new(1, error).into()
    }

    fn missing(&self, partition: i32, offset: i64, missing: Missing) -> anyhow::Error {
        let error = anyhow::anyhow!(
            "{}[{partition}] offset {offset} has no LSN at {}: {missing}; every record of a --until-lsn replay needs one (--lsn-field says where it is); nothing was produced",
            self.topic,
            self.field
        );
        CodedError::new(1, error).into()
    }

    /// The replayed event with the highest LSN.
    pub fn last_event(&self) -> Option<&LastEvent> {
        self.counts.last.as_ref()
    }

    /// The summary's `lsn_cut`.
    pub fn report(&self) -> LsnCutReport {
        let text = |lsn: Option<Lsn>| lsn.map(|l| l.to_string());
        LsnCutReport {
            until_lsn: self.until.to_string(),
            replayed: self.counts.replayed,
            dropped_after_cut: self.counts.dropped,
            skipped_cut_off_events: self.counts.skipped,
            max_replayed_lsn: text(self.counts.last.as_ref().map(|l| l.lsn)),
            min_dropped_lsn: text(self.counts.min_dropped),
            backup_newest_lsn: text(self.counts.newest),
        }
    }
}

fn key_hash(key: Option<&[u8]>) -> u64 {
    // DefaultHasher::new() has fixed keys: the same key hashes alike in every pass.
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

/// The record's LSN, and its value parsed when the LSN came from it.
fn read_lsn(field: &LsnField, record: &RecordView<'_>) -> Result<(Lsn, Option<Value>), Missing> {
    field.read(record.value, |name| {
        record
            .headers()
            .filter(|h| h.key == name.as_bytes())
            .last()
            .and_then(|h| h.value)
    })
}

/// The record's transaction id, from the value already parsed for its LSN when there is one.
fn read_txid(
    field: &TxIdField,
    record: &RecordView<'_>,
    parsed: Option<&Value>,
) -> Result<u64, Missing> {
    field.read(parsed, record.value, |name| {
        record
            .headers()
            .filter(|h| h.key == name.as_bytes())
            .last()
            .and_then(|h| h.value)
    })
}

/// Reads `--skip-txids FILE` (`-` for stdin): decimal transaction ids separated by
/// whitespace or commas, optionally in a JSON array (as `--list-txids` prints them).
pub fn read_skip_list(path: &Path) -> anyhow::Result<HashSet<u64>> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("cannot read --skip-txids from stdin")?
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --skip-txids file {}", path.display()))?
    };
    parse_skip_list(&text).with_context(|| format!("invalid --skip-txids file {}", path.display()))
}

fn parse_skip_list(text: &str) -> anyhow::Result<HashSet<u64>> {
    text.split(|c: char| c.is_whitespace() || matches!(c, ',' | '[' | ']'))
        .filter(|word| !word.is_empty())
        .map(|word| {
            word.parse::<u64>().map_err(|_| {
                anyhow::anyhow!("'{word}' is not a transaction id (a non-negative integer)")
            })
        })
        .collect()
}

/// The transaction and time of a replayed event, from Debezium's envelope when it has one.
fn last_event(lsn: Lsn, parsed: Option<Value>, raw: Option<&[u8]>) -> LastEvent {
    let value = parsed.or_else(|| raw.and_then(|raw| serde_json::from_slice(raw).ok()));
    let source_field = |name: &str| {
        let value = value.as_ref()?;
        source_field(value, name).and_then(Value::as_i64)
    };
    LastEvent {
        lsn,
        tx_id: source_field("txId"),
        ts_ms: source_field("ts_ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::topic_archive::{Codec, RecordsChunk, RecordsChunkBuilder, TimestampType};

    /// A record's key, value and headers.
    type Fields<'a> = (&'a str, Option<String>, Vec<(&'a str, &'a str)>);

    /// Records at offsets 0.. of partition 0.
    fn chunk(records: &[Fields<'_>]) -> RecordsChunk {
        let mut builder = RecordsChunkBuilder::new(0, 1 << 20);
        for (offset, (key, value, headers)) in records.iter().enumerate() {
            builder.push(
                offset as i64,
                TimestampType::CreateTime,
                0,
                Some(key.as_bytes()),
                value.as_deref().map(str::as_bytes),
                headers
                    .iter()
                    .map(|(k, v)| (k.as_bytes(), Some(v.as_bytes()))),
            );
        }
        let encoded = builder.seal(Codec::None, 0).unwrap();
        RecordsChunk::parse(encoded.decode_payload(0, 0).unwrap()).unwrap()
    }

    fn debezium(lsn: u64, tx: i64, wrapped: bool) -> Option<String> {
        let source =
            serde_json::json!({"lsn": lsn, "txId": tx, "ts_ms": 1_700_000_000_000i64 + tx});
        let envelope = serde_json::json!({"op": "u", "after": {"id": 1}, "source": source});
        Some(if wrapped {
            serde_json::json!({"schema": {"type": "struct"}, "payload": envelope}).to_string()
        } else {
            envelope.to_string()
        })
    }

    fn decide(cut: &mut LsnCut, records: &RecordsChunk) -> anyhow::Result<Vec<bool>> {
        records.iter().map(|r| cut.keeps(0, &r)).collect()
    }

    #[test]
    fn lsns_parse_in_both_forms() {
        assert_eq!(parse_lsn("0/16B3748").unwrap(), Lsn(0x16B_3748));
        assert_eq!(parse_lsn("23803720").unwrap(), Lsn(23_803_720));
        assert_eq!(parse_lsn("1/0").unwrap(), Lsn(1 << 32));
        assert!(parse_lsn("16B3748")
            .unwrap_err()
            .to_string()
            .contains("0/16B3748"));
        assert_eq!("header:lsn".parse(), Ok(LsnField::Header("lsn".into())));
        assert_eq!(
            "/after/lsn".parse(),
            Ok(LsnField::Pointer("/after/lsn".into()))
        );
        assert!("after.lsn".parse::<LsnField>().is_err());
        assert!("header:".parse::<LsnField>().is_err());
    }

    #[test]
    fn envelope_lsns_cut_and_tombstones_follow_their_deletes() {
        let records = chunk(&[
            ("a", debezium(100, 1, true), vec![]),
            ("b", debezium(150, 2, false), vec![]),
            ("b", None, vec![]),
            ("c", Some(r#"{"source":{"lsn":"0/C8"}}"#.into()), vec![]),
            ("a", debezium(250, 3, false), vec![]),
            ("x", debezium(120, 4, true), vec![]),
            ("a", None, vec![]),
        ]);
        let mut cut = LsnCut::new(Lsn(200), LsnField::Envelope, "t".into());
        let kept = decide(&mut cut, &records).unwrap();
        // 0/C8 = 200 is at the cut: dropped. The last tombstone follows a's delete at 250,
        // not the record just before it.
        assert_eq!(kept, [true, true, true, false, false, true, false]);
        let report = cut.report();
        assert_eq!((report.replayed, report.dropped_after_cut), (4, 3));
        assert_eq!(report.max_replayed_lsn.as_deref(), Some("0/96"));
        assert_eq!(report.min_dropped_lsn.as_deref(), Some("0/C8"));
        assert_eq!(report.backup_newest_lsn.as_deref(), Some("0/FA"));
        assert_eq!(
            cut.last_event(),
            Some(&LastEvent {
                lsn: Lsn(150),
                tx_id: Some(2),
                ts_ms: Some(1_700_000_000_002)
            })
        );
        // A second pass decides the same.
        cut.restart();
        assert_eq!(decide(&mut cut, &records).unwrap(), kept);
    }

    #[test]
    fn header_and_pointer_fields() {
        let records = chunk(&[
            ("a", Some("not json".into()), vec![("lsn", "0/10")]),
            ("a", Some("{}".into()), vec![("lsn", "40"), ("lsn", "10")]),
            ("b", Some("{}".into()), vec![("lsn", "0/30")]),
        ]);
        let mut cut = LsnCut::new(Lsn(0x20), "header:lsn".parse().unwrap(), "t".into());
        // Of duplicate headers, the last one counts.
        assert_eq!(decide(&mut cut, &records).unwrap(), [true, true, false]);
        assert_eq!(cut.last_event().unwrap().tx_id, None);

        let records = chunk(&[("a", Some(r#"{"after":{"lsn":"0/16B3748"}}"#.into()), vec![])]);
        let mut cut = LsnCut::new(Lsn(0x16B_3749), "/after/lsn".parse().unwrap(), "t".into());
        assert_eq!(decide(&mut cut, &records).unwrap(), [true]);
    }

    #[test]
    fn a_missing_lsn_names_the_record_and_exits_1() {
        let cases = [
            (
                Some(r#"{"payload":{"after":{}}}"#.to_string()),
                "missing or null",
            ),
            (Some("[1,2".to_string()), "not JSON"),
            (
                Some(r#"{"source":{"lsn":-5}}"#.to_string()),
                "holds -5, not an LSN",
            ),
            (
                Some(r#"{"source":{"lsn":"soon"}}"#.to_string()),
                "holds 'soon'",
            ),
        ];
        for (value, why) in cases {
            let records = chunk(&[("a", debezium(1, 1, true), vec![]), ("a", value, vec![])]);
            let mut cut = LsnCut::new(Lsn(200), LsnField::Envelope, "orders".into());
            let error = decide(&mut cut, &records).unwrap_err();
            let text = format!("{error:#}");
            assert!(
                text.starts_with(
                    "orders[0] offset 1 has no LSN at /payload/source/lsn or /source/lsn: "
                ),
                "{text}"
            );
            assert!(text.contains(why), "{text}");
            assert_eq!(common::exit::code_for(&error), Some(1));
        }
        let records = chunk(&[("a", Some("{}".into()), vec![])]);
        let mut cut = LsnCut::new(Lsn(1), "header:lsn".parse().unwrap(), "t".into());
        let error = decide(&mut cut, &records).unwrap_err().to_string();
        assert!(
            error.contains("t[0] offset 0 has no LSN at header 'lsn'"),
            "{error}"
        );
    }

    #[test]
    fn events_of_cut_off_transactions_are_left_out_with_their_tombstones() {
        let delete = |lsn: u64, tx: i64| {
            let source = serde_json::json!({"lsn": lsn, "txId": tx});
            Some(serde_json::json!({"op": "d", "after": null, "source": source}).to_string())
        };
        let records = chunk(&[
            ("a", debezium(100, 1, true), vec![]),
            ("b", debezium(110, 7, false), vec![]),
            ("c", delete(120, 7), vec![]),
            ("c", None, vec![]),
            ("d", debezium(130, 1, false), vec![]),
            ("e", debezium(300, 7, false), vec![]),
        ]);
        let skip = TxIds::Skip(TxIdField::Envelope, HashSet::from([7, 99]));
        let mut cut = LsnCut::new(Lsn(200), LsnField::Envelope, "t".into()).with_txids(skip);
        let kept = decide(&mut cut, &records).unwrap();
        // Transaction 7's events below the cut go, its delete's tombstone with them; its event
        // after the cut is a phantom as before.
        assert_eq!(kept, [true, false, false, false, true, false]);
        let report = cut.report();
        assert_eq!(
            (
                report.replayed,
                report.skipped_cut_off_events,
                report.dropped_after_cut
            ),
            (2, 3, 1)
        );
        assert_eq!(report.min_dropped_lsn.as_deref(), Some("0/12C"));
        assert_eq!(cut.last_event().unwrap().lsn, Lsn(130));

        let list = TxIds::List(TxIdField::Envelope, BTreeSet::new());
        let mut cut = LsnCut::new(Lsn(200), LsnField::Envelope, "t".into()).with_txids(list);
        decide(&mut cut, &records).unwrap();
        assert_eq!(cut.listed_txids(), Some(&BTreeSet::from([1, 7])));
        cut.restart();
        assert_eq!(cut.listed_txids(), Some(&BTreeSet::new()));
    }

    #[test]
    fn an_event_below_the_cut_without_a_txid_names_the_record_and_exits_1() {
        let records = chunk(&[
            ("a", Some(r#"{"source":{"lsn":300}}"#.into()), vec![]),
            ("a", Some(r#"{"source":{"lsn":100}}"#.into()), vec![]),
        ]);
        let skip = TxIds::Skip(TxIdField::Envelope, HashSet::new());
        let mut cut = LsnCut::new(Lsn(200), LsnField::Envelope, "orders".into()).with_txids(skip);
        let error = decide(&mut cut, &records).unwrap_err();
        let text = format!("{error:#}");
        assert!(
            text.starts_with("orders[0] offset 1 is below the cut but has no transaction id at /payload/source/txId or /source/txId: it is missing or null"),
            "{text}"
        );
        assert_eq!(common::exit::code_for(&error), Some(1));
    }

    #[test]
    fn skip_lists_parse_from_lines_commas_or_a_json_array() {
        assert_eq!(
            parse_skip_list("1\n2, 3\n[4,5]\n").unwrap(),
            HashSet::from([1, 2, 3, 4, 5])
        );
        assert!(parse_skip_list("").unwrap().is_empty());
        let error = parse_skip_list("1 x2").unwrap_err().to_string();
        assert_eq!(
            error,
            "'x2' is not a transaction id (a non-negative integer)"
        );
    }
}

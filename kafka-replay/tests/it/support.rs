//! Helpers of the replay tests: topics with known records, reading a topic back field by
//! field, running the two tools, and a topic backed up ready to replay.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, Timestamp};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use tempfile::TempDir;
pub use test_support::kafka::{block_on, commit_group, topic};
use test_support::kafka::{bootstrap, client_config};

/// A record as produced and as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub timestamp: i64,
}

/// A record read back, with where it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub offset: i64,
    pub create_time: bool,
    pub rec: Rec,
}

/// A varied record number `i`: null and empty keys, tombstones, duplicate and null headers,
/// old and new timestamps.
pub fn varied(i: u64) -> Rec {
    let key = match i % 7 {
        0 => None,
        1 => Some(Vec::new()),
        _ => Some(format!("key-{}", i % 500).into_bytes()),
    };
    let value = match i % 11 {
        0 => None,
        1 => Some(Vec::new()),
        _ => Some(format!("value-{i}-{}", "x".repeat((i % 40) as usize)).into_bytes()),
    };
    let mut headers = Vec::new();
    if i.is_multiple_of(3) {
        headers.push(("trace".to_string(), Some(format!("t{i}").into_bytes())));
        headers.push(("dup".to_string(), Some(b"first".to_vec())));
        headers.push(("dup".to_string(), Some(b"second".to_vec())));
    }
    if i.is_multiple_of(5) {
        headers.push(("nullable".to_string(), None));
        headers.push(("empty".to_string(), Some(Vec::new())));
    }
    let timestamp = if i.is_multiple_of(2) {
        // 2001-09-09: an explicit old timestamp.
        1_000_000_000_000 + i as i64
    } else {
        1_790_000_000_000 + i as i64 * 10
    };
    Rec {
        key,
        value,
        headers,
        timestamp,
    }
}

/// Produces records to explicit partitions, in order, and waits for every delivery.
pub fn produce(topic: &str, records: impl IntoIterator<Item = (i32, Rec)>) {
    let producer: BaseProducer = client_config()
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        // Room for the big records of the large-record test (the topic's limit still holds).
        .set("message.max.bytes", "10000000")
        .create()
        .unwrap();
    for (partition, rec) in records {
        let mut headers = OwnedHeaders::new();
        for (k, v) in &rec.headers {
            headers = headers.insert(Header {
                key: k.as_str(),
                value: v.as_deref(),
            });
        }
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic)
            .partition(partition)
            .timestamp(rec.timestamp);
        if !rec.headers.is_empty() {
            record = record.headers(headers);
        }
        if let Some(key) = rec.key.as_deref() {
            record = record.key(key);
        }
        if let Some(value) = rec.value.as_deref() {
            record = record.payload(value);
        }
        test_support::kafka::send(&producer, record);
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
}

/// Low and high watermark of every partition.
pub fn watermarks(topic: &str, partitions: i32) -> Vec<(i64, i64)> {
    watermarks_at(&bootstrap(), topic, partitions)
}

/// [`watermarks`] on the broker at `broker` (a private one).
pub fn watermarks_at(broker: &str, topic: &str, partitions: i32) -> Vec<(i64, i64)> {
    let consumer: BaseConsumer = config_at(broker).create().unwrap();
    (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap()
        })
        .collect()
}

/// Partition count of a topic (0 when missing).
pub fn partition_count(topic: &str) -> usize {
    partition_count_at(&bootstrap(), topic)
}

/// [`partition_count`] on the broker at `broker`.
pub fn partition_count_at(broker: &str, topic: &str) -> usize {
    let consumer: BaseConsumer = config_at(broker).create().unwrap();
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map_or(0, |t| t.partitions().len())
}

/// Every record of every partition, in offset order.
pub fn read_all(topic: &str) -> BTreeMap<i32, Vec<Read>> {
    read_all_at(&bootstrap(), topic)
}

/// [`read_all`] on the broker at `broker`.
pub fn read_all_at(broker: &str, topic: &str) -> BTreeMap<i32, Vec<Read>> {
    let partitions = partition_count_at(broker, topic) as i32;
    let marks = watermarks_at(broker, topic, partitions);
    let consumer: BaseConsumer = config_at(broker)
        .set("group.id", test_support::unique_name("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    let mut out: BTreeMap<i32, Vec<Read>> = BTreeMap::new();
    for (p, (low, high)) in marks.iter().enumerate() {
        out.insert(p as i32, Vec::new());
        if high > low {
            list.add_partition_offset(topic, p as i32, Offset::Offset(*low))
                .unwrap();
        }
    }
    if list.count() == 0 {
        return out;
    }
    consumer.assign(&list).unwrap();
    let done = |out: &BTreeMap<i32, Vec<Read>>| {
        marks.iter().enumerate().all(|(p, (low, high))| {
            high <= low
                || out[&(p as i32)]
                    .last()
                    .is_some_and(|r| r.offset + 1 >= *high)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done(&out) {
        assert!(Instant::now() < deadline, "reading {topic} timed out");
        match consumer.poll(Duration::from_millis(200)) {
            None | Some(Err(KafkaError::PartitionEOF(_))) => continue,
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            Some(Ok(m)) => {
                let (create_time, timestamp) = match m.timestamp() {
                    Timestamp::CreateTime(t) => (true, t),
                    Timestamp::LogAppendTime(t) => (false, t),
                    Timestamp::NotAvailable => (false, -1),
                };
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                            .collect()
                    })
                    .unwrap_or_default();
                out.get_mut(&m.partition()).unwrap().push(Read {
                    offset: m.offset(),
                    create_time,
                    rec: Rec {
                        key: m.key().map(<[u8]>::to_vec),
                        value: m.payload().map(<[u8]>::to_vec),
                        headers,
                        timestamp,
                    },
                });
            }
        }
    }
    out
}

/// A client configuration for the broker at `broker`.
fn config_at(broker: &str) -> rdkafka::ClientConfig {
    let mut config = client_config();
    config.set("bootstrap.servers", broker);
    config
}

/// The records only, per partition, for field-by-field comparison.
pub fn recs(read: &BTreeMap<i32, Vec<Read>>) -> BTreeMap<i32, Vec<Rec>> {
    read.iter()
        .map(|(p, rs)| (*p, rs.iter().map(|r| r.rec.clone()).collect()))
        .collect()
}

/// The committed offsets of a group (None where it has none).
pub fn committed(group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    let consumer: BaseConsumer = client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    let result = {
        let found = consumer
            .committed_offsets(list, Duration::from_secs(10))
            .unwrap();
        let offsets = (0..partitions)
            .map(|p| match found.find_partition(topic, p).unwrap().offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            })
            .collect();
        drop(found);
        offsets
    };
    drop(consumer);
    result
}

pub use test_support::run::Run;

pub fn replay_bin() -> &'static str {
    env!("CARGO_BIN_EXE_kafka-replay")
}

/// kafka-topic-backup from the same target directory (`cargo build -p kafka-topic-backup`).
pub fn backup_bin() -> std::path::PathBuf {
    test_support::tool_bin("kafka-topic-backup")
}

/// A tool's command on the repository `dir` (a path or an s3:// URL), with `--output json`.
pub fn tool(
    program: impl AsRef<std::ffi::OsStr>,
    dir: impl AsRef<std::ffi::OsStr>,
    args: &[&str],
) -> Command {
    let mut command = Command::new(program);
    command
        .env("KAFKA_BOOTSTRAP_SERVERS", bootstrap())
        .env("BACKUP_DIR", dir)
        .env_remove("KAFKA_CLIENT_CONFIG")
        .env_remove("RETENTION_DAYS")
        .args(["--output", "json"])
        .args(args)
        .stdin(Stdio::null());
    command
}

/// Runs kafka-topic-backup on a repository.
pub fn backup(dir: &Path, args: &[&str]) -> Run {
    Run::from(tool(backup_bin(), dir, args).output().unwrap())
}

/// Runs kafka-replay on a repository.
pub fn replay(dir: &Path, args: &[&str]) -> Run {
    Run::from(tool(replay_bin(), dir, args).output().unwrap())
}

/// A replay as a child process reading a pipe, for interruption tests.
pub fn replay_child(dir: &Path, args: &[&str]) -> std::process::Child {
    tool(replay_bin(), dir, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Creates a topic named after `prefix` with `partitions` partitions and produces `records`.
pub fn source_topic(
    prefix: &str,
    partitions: i32,
    records: impl IntoIterator<Item = (i32, Rec)>,
) -> String {
    let source = topic(prefix, partitions);
    produce(&source, records);
    source
}

/// Where most replay tests start: a source topic backed up by kafka-topic-backup into a
/// repository of its own.
pub struct BackedUp {
    pub source: String,
    pub dir: TempDir,
    /// The backup's summary line.
    pub summary: Value,
}

impl BackedUp {
    /// Backs `source` up (`--topic SOURCE`, then `args`) into a new repository; the backup
    /// must succeed.
    pub fn new(source: String, args: &[&str]) -> BackedUp {
        let dir = tempfile::tempdir().unwrap();
        let topic_args: Vec<&str> = ["--topic", source.as_str()]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        let summary = backup(dir.path(), &topic_args).ok().summary();
        BackedUp {
            source,
            dir,
            summary,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The bytes of the set's topic archive, as kafka-topic-backup wrote them.
    pub fn archive(&self) -> Vec<u8> {
        std::fs::read(archive_file(&self.summary)).unwrap()
    }

    /// Replays the source into `target`: `--topic SOURCE --target-topic TARGET`, then `args`.
    pub fn replay_into(&self, target: &str, args: &[&str]) -> Run {
        let all: Vec<&str> = ["--topic", self.source.as_str(), "--target-topic", target]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        replay(self.dir(), &all)
    }
}

/// The archive file of the first topic of a backup's summary.
pub fn archive_file(summary: &Value) -> PathBuf {
    Path::new(summary["dir"].as_str().unwrap()).join(summary["topics"][0]["file"].as_str().unwrap())
}

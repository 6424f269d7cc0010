//! Helpers: topics with records, running the tool, reading a set's archive back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::topic_archive::{ArchiveReader, StreamEnd, TopicMeta};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use test_support::kafka::{bootstrap, client_config};

pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// A fresh topic with a unique name starting with `prefix`.
pub fn topic(prefix: &str, partitions: i32) -> String {
    let name = test_support::unique_name(prefix);
    block_on(test_support::kafka::create_topic(&name, partitions))
}

/// Produces `count` records `v<partition>-<n>` to each listed partition, numbering from `from`.
pub fn produce(topic: &str, partitions: &[i32], from: u64, count: u64) {
    let producer: BaseProducer = client_config().create().unwrap();
    for n in from..from + count {
        for &p in partitions {
            let value = format!("v{p}-{n}");
            let key = format!("k{n}");
            let mut record = BaseRecord::to(topic)
                .partition(p)
                .key(key.as_str())
                .payload(value.as_str());
            while let Err((_, back)) = producer.send(record) {
                record = back;
                producer.poll(Duration::from_millis(20));
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

pub fn commit_group(group: &str, topic: &str, offsets: &[(i32, i64)]) {
    let consumer: BaseConsumer = client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for &(p, o) in offsets {
        list.add_partition_offset(topic, p, Offset::Offset(o))
            .unwrap();
    }
    consumer.commit(&list, CommitMode::Sync).unwrap();
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn summary(&self) -> serde_json::Value {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        let line = self.stdout.lines().last().expect("a summary line");
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(value["type"], "summary");
        value
    }
}

/// Runs kafka-topic-backup with `BACKUP_DIR=dir` and `--output json`.
pub fn backup(dir: &Path, args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_kafka-topic-backup"))
        .env("KAFKA_BOOTSTRAP_SERVERS", bootstrap())
        .env("BACKUP_DIR", dir)
        .env_remove("KAFKA_CLIENT_CONFIG")
        .env_remove("RETENTION_DAYS")
        .args(["--output", "json"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// One archived record: (partition, offset, key, value).
pub type Archived = (i32, i64, Option<Vec<u8>>, Option<Vec<u8>>);

/// An archive read back: META, END and every record.
pub struct Archive {
    pub meta: TopicMeta,
    pub end: StreamEnd,
    pub records: Vec<Archived>,
}

pub fn read_archive(path: &Path) -> Archive {
    let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let mut reader = ArchiveReader::open(file).unwrap();
    let mut records = Vec::new();
    while let Some(chunk) = reader.next_records().unwrap() {
        for r in chunk.iter() {
            records.push((
                chunk.partition(),
                r.offset,
                r.key.map(<[u8]>::to_vec),
                r.value.map(<[u8]>::to_vec),
            ));
        }
    }
    Archive {
        meta: reader.meta().clone(),
        end: reader.end().cloned().unwrap(),
        records,
    }
}

/// The archive file of `topic` in the set a summary describes.
pub fn archive_path(summary: &serde_json::Value, topic: &str) -> PathBuf {
    let dir = PathBuf::from(summary["dir"].as_str().unwrap());
    let entry = summary["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["topic"] == topic)
        .unwrap_or_else(|| panic!("{topic} not in {summary}"));
    dir.join(entry["file"].as_str().unwrap())
}

/// Per partition, the offsets in an archive.
pub fn offsets_by_partition(archive: &Archive) -> BTreeMap<i32, Vec<i64>> {
    let mut out: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for (p, o, _, _) in &archive.records {
        out.entry(*p).or_default().push(*o);
    }
    out
}

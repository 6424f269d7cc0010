//! Helpers: topics with records, running the tool, reading a set's archive back.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::topic_archive::{ArchiveReader, StreamEnd, TopicMeta};
use test_support::kafka::bootstrap;
pub use test_support::kafka::{block_on, commit_group, produce_numbered as produce, topic};

pub use test_support::run::Run;

/// Runs kafka-topic-backup with `BACKUP_DIR=dir` and `--output json`.
pub fn backup(dir: &Path, args: &[&str]) -> Run {
    Run::of(&mut backup_command(dir, args))
}

/// The command [`backup`] runs, for a test that runs it otherwise; `dir` is a path or an
/// s3:// URL.
pub fn backup_command(dir: impl AsRef<OsStr>, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kafka-topic-backup"));
    command
        .env("KAFKA_BOOTSTRAP_SERVERS", bootstrap())
        .env("BACKUP_DIR", dir)
        .env_remove("KAFKA_CLIENT_CONFIG")
        .env_remove("RETENTION_DAYS")
        .args(["--output", "json"])
        .args(args);
    command
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
    read_archive_from(std::io::BufReader::new(std::fs::File::open(path).unwrap()))
}

/// Reads an archive stream back (a file, an S3 object).
pub fn read_archive_from(input: impl std::io::Read) -> Archive {
    let mut reader = ArchiveReader::open(input).unwrap();
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
    PathBuf::from(summary["dir"].as_str().unwrap()).join(archive_file(summary, topic))
}

/// The file name of `topic`'s archive in the set a summary describes.
pub fn archive_file<'a>(summary: &'a serde_json::Value, topic: &str) -> &'a str {
    summary["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["topic"] == topic)
        .unwrap_or_else(|| panic!("{topic} not in {summary}"))["file"]
        .as_str()
        .unwrap()
}

/// Per partition, the offsets in an archive.
pub fn offsets_by_partition(archive: &Archive) -> BTreeMap<i32, Vec<i64>> {
    let mut out: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for (p, o, _, _) in &archive.records {
        out.entry(*p).or_default().push(*o);
    }
    out
}

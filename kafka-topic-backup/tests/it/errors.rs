//! Failures are clear, exit 2, and leave no set that could pass for a backup.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::repo::{Kind, Repository};
use common::storage::Location;
use test_support::process::{signal, wait_for};

use crate::support::*;

#[test]
fn unreachable_broker_is_exit_2_without_a_set() {
    let dir = tempfile::tempdir().unwrap();
    let port = test_support::free_port();
    let run = backup(
        dir.path(),
        &[
            "--bootstrap-servers",
            &format!("127.0.0.1:{port}"),
            "--topic",
            "orders",
        ],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    let line = run.stderr.lines().last().unwrap();
    assert!(
        line.starts_with("kafka-topic-backup: cannot reach Kafka at 127.0.0.1:"),
        "{line}"
    );
    assert!(line.contains("KAFKA_BOOTSTRAP_SERVERS"), "{line}");
    assert!(run.stdout.is_empty());
    if let Ok(repo) = Repository::open(&Location::Local(dir.path().into())) {
        assert!(repo.list(Kind::Kafka).unwrap().is_empty());
    }
}

#[test]
fn missing_topic_and_bad_regex_are_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = test_support::unique_name("missing");
    let run = backup(dir.path(), &["--topic", &missing]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains(&format!("topic '{missing}' does not exist")),
        "{}",
        run.stderr
    );
    // Asking for it did not create it.
    assert!(!test_support::kafka::topic_names().contains(&missing));
    let run = backup(dir.path(), &["--topic-regex", "(unclosed"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("invalid --topic-regex"),
        "{}",
        run.stderr
    );
    let repo = Repository::open(&Location::Local(dir.path().into())).unwrap();
    assert!(repo.complete_sets(Kind::Kafka).unwrap().is_empty());
}

#[test]
fn a_fetch_response_over_the_client_limit_is_named() {
    // The test broker answers a fetch with the whole partition, whatever fetch.max.bytes
    // says; librdkafka refuses a response over receive.message.max.bytes and reports only
    // "BadMessage". The error line must carry librdkafka's reason.
    let dir = tempfile::tempdir().unwrap();
    let topic = topic("limit", 1);
    produce(&topic, &[0], 0, 20_000);
    let run = Run::of(
        backup_command(dir.path(), &["--topic", &topic, "--timeout", "10s"]).env(
            "KAFKA_CLIENT_CONFIG",
            "message.max.bytes=1000;fetch.max.bytes=50000;max.partition.fetch.bytes=50000;receive.message.max.bytes=100000",
        ),
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    let line = run.stderr.lines().last().unwrap();
    assert!(line.contains("receive.message.max.bytes"), "{line}");
    if let Ok(repo) = Repository::open(&Location::Local(dir.path().into())) {
        assert!(repo.list(Kind::Kafka).unwrap().is_empty());
    }
}

#[test]
fn sigterm_mid_export_exits_143_and_leaves_no_set() {
    let source = topic("sig_src", 3);
    produce(&source, &[0, 1, 2], 0, 40_000);
    let dir = tempfile::tempdir().unwrap();
    let child = backup_command(dir.path(), &["--topic", &source, "--chunk-kib", "16"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Frozen as soon as its set directory exists, the export cannot finish before the signal
    // arrives; it gets it on waking, mid-export.
    let sets = dir.path().join("kafka");
    wait_for(
        "the export to start its set",
        Duration::from_secs(60),
        || {
            std::fs::read_dir(&sets)
                .is_ok_and(|mut d| d.any(|e| e.is_ok_and(|e| e.path().is_dir())))
        },
    );
    signal(&child, "STOP");
    assert!(
        !files(dir.path())
            .iter()
            .any(|(p, _)| p.ends_with("manifest.json")),
        "the export finished before it could be interrupted"
    );
    signal(&child, "TERM");
    signal(&child, "CONT");
    let run = Run::from(child.wait_with_output().unwrap());
    run.assert_interrupted("kafka-topic-backup", "TERM");
    assert!(run.stdout.is_empty(), "no summary of an unfinished set");
    assert_eq!(files(dir.path()), vec![], "nothing of the set is left");
    let left: Vec<std::path::PathBuf> = std::fs::read_dir(&sets)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "only the lock is left: {left:?}");

    // The next run exports everything.
    let summary = backup(dir.path(), &["--topic", &source]).ok().summary();
    let archive = read_archive(&archive_path(&summary, &source));
    assert_eq!(archive.records.len(), 120_000);
}

/// Every regular file of the sets under `dir`, with its length (not the repository's lock).
fn files(dir: &Path) -> Vec<(PathBuf, u64)> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && e.file_name() != ".lock")
        .filter_map(|e| Some((e.path().to_path_buf(), e.metadata().ok()?.len())))
        .collect()
}

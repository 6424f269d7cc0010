//! The repository on S3 (the SeaweedFS test service): a set, an incremental chain and
//! retention work as on a local directory; an interrupted export leaves nothing that looks
//! complete and no open multipart upload; a wrong secret key is one line, exit 2.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::repo::{Kind, Repository};
use common::storage::Store;
use test_support::process::signal;
use test_support::s3::S3Env;

use crate::support::*;

/// Runs kafka-topic-backup on the repository `url` with the service's credentials.
fn backup_s3(s3: &S3Env, url: &str, args: &[&str]) -> Run {
    Run::of(s3.apply(&mut backup_command(url, args)))
}

/// The archive of `topic` in the set a summary describes, read back from the bucket.
fn read_s3_archive(store: &Store, summary: &serde_json::Value, topic: &str) -> Archive {
    let key = format!(
        "kafka/{}/{}",
        summary["id"].as_str().unwrap(),
        archive_file(summary, topic)
    );
    read_archive_from(store.open_read(&key).unwrap())
}

#[test]
fn regex_backup_to_s3_is_a_complete_verified_set() {
    let s3 = test_support::s3::env();
    let base = test_support::unique_name("s3rx");
    let a = block_on(test_support::kafka::create_topic(&format!("{base}_a"), 3));
    let b = block_on(test_support::kafka::create_topic(&format!("{base}_b"), 1));
    produce(&a, &[0, 1, 2], 0, 40);
    produce(&b, &[0], 0, 7);
    let group = test_support::unique_name("g");
    commit_group(&group, &a, &[(0, 5), (2, 40)]);

    let url = s3.url("kafka-set");
    let summary = backup_s3(&s3, &url, &["--topic-regex", &format!("{base}_(a|b)")])
        .ok()
        .summary();
    assert_eq!(summary["records"], 127);
    let id = summary["id"].as_str().unwrap();
    assert_eq!(summary["dir"], format!("{url}/kafka/{id}"));

    let store = s3.store(&url);
    let archive = read_s3_archive(&store, &summary, &a);
    assert_eq!(archive.records.len(), 120);
    assert_eq!(archive.end.records, 120);
    let record = archive
        .records
        .iter()
        .find(|r| r.0 == 2 && r.1 == 7)
        .unwrap();
    assert_eq!(record.2.as_deref(), Some(b"k7".as_slice()));
    assert_eq!(record.3.as_deref(), Some(b"v2-7".as_slice()));
    let saved = archive.meta.groups.iter().find(|g| g.group == group);
    assert_eq!(saved.map(|g| g.offsets.len()), Some(2));
    assert_eq!(read_s3_archive(&store, &summary, &b).records.len(), 7);

    // The manifest is there and the objects match it byte for byte; nothing else is left:
    // no lock, no marker of a running set.
    let repo = Repository::with_store(store);
    let (set, manifest) = repo.find(Kind::Kafka, None).unwrap();
    assert_eq!(manifest.id, id);
    assert!(repo.verify_files(&set.prefix, &manifest).is_empty());
    let mut expected = vec![
        format!("kafka/{id}/{a}.kta"),
        format!("kafka/{id}/{b}.kta"),
        format!("kafka/{id}/manifest.json"),
    ];
    expected.sort();
    assert_eq!(s3.keys(&url), expected);
    assert!(s3.open_uploads(&url).is_empty());
}

#[test]
fn incremental_chain_and_retention_on_s3() {
    let s3 = test_support::s3::env();
    let topic = topic("s3inc", 2);
    produce(&topic, &[0, 1], 0, 60);
    let url = s3.url("kafka-chain");
    let no_age = ["--retention-days", "0", "--keep-count", "1"];
    let run = |extra: &[&str]| {
        let args: Vec<&str> = ["--topic", &topic].iter().chain(extra).copied().collect();
        backup_s3(&s3, &url, &args).ok().summary()
    };
    let first = run(&["--incremental"]);
    assert_eq!(first["records"], 120);
    produce(&topic, &[0, 1], 60, 25);
    let second = run(&["--incremental"]);
    assert_eq!(second["records"], 50);
    assert_eq!(second["topics"][0]["incremental_from"], first["id"]);
    assert_eq!(second["topics"][0]["partitions"][1]["start_offset"], 60);

    // Every record in exactly one set of the chain.
    let store = s3.store(&url);
    let mut seen = BTreeMap::new();
    for summary in [&first, &second] {
        for (p, o, _, v) in read_s3_archive(&store, summary, &topic).records {
            assert!(seen.insert((p, o), v).is_none(), "{p}:{o} captured twice");
        }
    }
    assert_eq!(seen.len(), 170);
    assert_eq!(seen[&(1, 84)].as_deref(), Some(b"v1-84".as_slice()));

    // Keeping one set keeps the chain it continues...
    produce(&topic, &[0], 85, 5);
    let third = run(&[&["--incremental"], &no_age[..]].concat());
    assert_eq!(third["records"], 5);
    assert_eq!(third["retention_deleted"], serde_json::json!([]));
    // ...until a full set starts a new one: then the old chain goes, objects and all.
    let fourth = run(&no_age);
    assert_eq!(fourth["records"], 175);
    let deleted: Vec<&str> = fourth["retention_deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    let ids: Vec<&str> = [&first, &second, &third]
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(deleted, ids);
    let fourth_id = fourth["id"].as_str().unwrap();
    assert!(
        s3.keys(&url)
            .iter()
            .all(|k| k.starts_with(&format!("kafka/{fourth_id}/"))),
        "{:?}",
        s3.keys(&url)
    );
}

#[test]
fn sigterm_mid_upload_leaves_no_set_and_no_open_upload() {
    let s3 = test_support::s3::env();
    // 12 MiB that does not compress: the archive goes up as a multipart upload of 5 MiB
    // parts (S3Env sets BACKUP_S3_PART_SIZE).
    let topic = topic("s3sig", 1);
    produce_noise(&topic, 12 * 1024);
    let url = s3.url("kafka-sigterm");
    let args = ["--topic", topic.as_str(), "--parallelism", "1"];
    let mut command = backup_command(&url, &args);
    let mut child = s3
        .apply(&mut command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once its set exists, run in steps of 10 ms until the archive's multipart upload is
    // open: frozen then, the export gets the signal on waking, mid-upload.
    let store = s3.store(&url);
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.list_dir("kafka").unwrap().1.is_empty() {
        assert!(Instant::now() < deadline, "the export started no set");
        std::thread::sleep(Duration::from_millis(5));
    }
    signal(&child, "STOP");
    while s3.open_uploads(&url).is_empty() {
        if child.try_wait().unwrap().is_some() {
            let run = Run::from(child.wait_with_output().unwrap());
            panic!("the export ended before its upload was seen: {run:?}");
        }
        assert!(Instant::now() < deadline, "no multipart upload started");
        signal(&child, "CONT");
        std::thread::sleep(Duration::from_millis(10));
        signal(&child, "STOP");
    }
    signal(&child, "TERM");
    signal(&child, "CONT");
    let run = Run::from(child.wait_with_output().unwrap());
    run.assert_interrupted("kafka-topic-backup", "TERM");
    assert!(run.stdout.is_empty(), "no summary of an unfinished set");
    assert_eq!(s3.open_uploads(&url), Vec::<String>::new());
    // The set's objects and the repository's lock are gone.
    assert_eq!(s3.keys(&url), Vec::<String>::new());

    // The next run is not refused by a lock left behind, and exports everything.
    let summary = backup_s3(&s3, &url, &args).ok().summary();
    assert_eq!(summary["records"], 12 * 1024);
    let archive = read_s3_archive(&store, &summary, &topic);
    assert_eq!(archive.records.len(), 12 * 1024);
    assert!(s3.open_uploads(&url).is_empty());
}

#[test]
fn wrong_secret_key_is_one_line_and_exit_2() {
    let s3 = test_support::s3::env();
    let topic = topic("s3key", 1);
    produce(&topic, &[0], 0, 5);
    let url = s3.url("kafka-badkey");
    let wrong = "Wr0ngSecretKeyForTheTestService0000000000";
    let mut command = backup_command(&url, &["--topic", &topic]);
    let run = Run::of(s3.apply(&mut command).env("AWS_SECRET_ACCESS_KEY", wrong));
    assert_eq!(run.code, 2, "{}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", run.stderr);
    assert!(lines[0].starts_with("kafka-topic-backup: "), "{}", lines[0]);
    assert!(lines[0].contains("AWS_SECRET_ACCESS_KEY"), "{}", lines[0]);
    assert!(!run.stderr.contains(wrong) && !run.stderr.contains(s3.secret_key()));
    assert!(run.stdout.is_empty());
    assert_eq!(s3.keys(&url), Vec::<String>::new());
}

/// Produces `count` records of 1 KiB that does not compress to partition 0.
fn produce_noise(topic: &str, count: usize) {
    let producer: rdkafka::producer::BaseProducer =
        test_support::kafka::client_config().create().unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for n in 0..count {
        let value: Vec<u8> = (0..1024)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let key = format!("k{n}");
        let record = rdkafka::producer::BaseRecord::to(topic)
            .partition(0)
            .key(key.as_str())
            .payload(&value);
        test_support::kafka::send(&producer, record);
        producer.poll(Duration::ZERO);
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(60)).unwrap();
}

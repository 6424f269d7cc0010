//! Encryption at rest (age): an encrypted set keeps only the cut in clear and the Debian `age`
//! CLI reads its archive; incremental chains and retention work across plain and encrypted
//! sets without a key; a plain set into an encrypted repository is refused unless
//! `--allow-unencrypted`; `--stdout` writes an age stream.

use std::path::{Path, PathBuf};
use std::process::Command;

use common::encryption::Identities;
use common::repo::{Kind, Repository};
use common::storage::Location;
use common::topic_archive::{ArchiveReader, KafkaSetDetails};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use test_support::age_keys::AgeKeys;
use test_support::kafka::client_config;

use crate::support::*;

/// The first line of every age file.
const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";

/// Runs kafka-topic-backup on `dir` with extra environment.
fn backup_env(dir: &Path, args: &[&str], env: &[(String, String)]) -> Run {
    Run::of(backup_command(dir, args).envs(env.iter().cloned()))
}

/// A fresh topic (retention.ms=-1) with these configs.
fn topic_with(prefix: &str, partitions: i32, configs: &[(&str, &str)]) -> String {
    let name = test_support::unique_name(prefix);
    let admin: AdminClient<DefaultClientContext> = client_config().create().unwrap();
    let mut new = NewTopic::new(&name, partitions, TopicReplication::Fixed(1));
    for (key, value) in [("retention.ms", "-1")].iter().chain(configs) {
        new = new.set(key, value);
    }
    for result in block_on(admin.create_topics([&new], &AdminOptions::new())).unwrap() {
        result.unwrap();
    }
    name
}

/// `age -d -i IDENTITY FILE`, by the Debian CLI.
fn age_decrypt(keys: &AgeKeys, file: &Path) -> Vec<u8> {
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&keys.identity_file)
        .arg(file)
        .output()
        .expect("run age (Debian package age)");
    assert!(
        out.status.success(),
        "age -d: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn encrypted_set_keeps_only_the_cut_in_clear_and_the_age_cli_reads_it() {
    let keys = AgeKeys::generate();
    let topic = topic_with("enc", 2, &[("max.message.bytes", "1234567")]);
    produce(&topic, &[0, 1], 0, 50);
    let group = test_support::unique_name("encgrp");
    commit_group(&group, &topic, &[(0, 7), (1, 50)]);
    let dir = tempfile::tempdir().unwrap();

    let run = backup_env(dir.path(), &["--topic", &topic], &keys.recipients_env()).ok();
    let summary = run.summary();
    assert_eq!(summary["encrypted"], true, "{summary}");
    assert_eq!(summary["records"], 100);
    let file = archive_file(&summary, &topic).to_string();
    assert_eq!(file, format!("{topic}.kta.age"));
    let path = archive_path(&summary, &topic);
    let stored = std::fs::read(&path).unwrap();
    assert!(stored.starts_with(AGE_MAGIC));
    assert!(
        ArchiveReader::open(&stored[..]).is_err(),
        "no plain archive"
    );

    // In clear: the recipients and the cut; no config value, group name, count or key.
    let set_dir = PathBuf::from(summary["dir"].as_str().unwrap());
    let text = std::fs::read_to_string(set_dir.join("manifest.json")).unwrap();
    for hidden in [
        "1234567",
        group.as_str(),
        "\"records\"",
        keys.secret.as_str(),
    ] {
        assert!(!text.contains(hidden), "{hidden} in manifest.json: {text}");
    }
    let manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        manifest["source"]["encryption"]["recipients"],
        serde_json::json!([keys.recipient])
    );
    assert!(manifest["details"].get("topics").is_none(), "{text}");
    let cut = &manifest["details"]["cut"][0];
    assert_eq!(cut["topic"], topic.as_str());
    assert_eq!(cut["file"], file.as_str());
    assert_eq!(cut["partitions"][1]["start_offset"], 0);
    assert_eq!(cut["partitions"][1]["end_offset"], 50);
    let files: Vec<&str> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files.contains(&file.as_str()) && files.contains(&"private.json.age"));
    for out in [&run.stdout, &run.stderr] {
        assert!(!out.contains(&keys.secret));
    }

    // The Debian age CLI gives back the archive: records, configs, group offsets.
    let archive = read_archive_from(&age_decrypt(&keys, &path)[..]);
    assert_eq!(archive.records.len(), 100);
    assert_eq!(archive.end.records, 100);
    let limit = archive
        .meta
        .configs
        .iter()
        .find(|c| c.name == "max.message.bytes")
        .unwrap();
    assert_eq!(limit.value.as_deref(), Some("1234567"));
    let saved = archive.meta.groups.iter().find(|g| g.group == group);
    let offsets: Vec<(i32, i64)> = saved
        .unwrap()
        .offsets
        .iter()
        .map(|o| (o.partition, o.offset))
        .collect();
    assert_eq!(offsets, vec![(0, 7), (1, 50)]);

    // The private part comes back with the identity only; the stored bytes verify without.
    let repo = Repository::open(&Location::Local(dir.path().into())).unwrap();
    let (set, clear) = repo.find(Kind::Kafka, None).unwrap();
    assert!(repo.verify_files(&set.prefix, &clear).is_empty());
    let err = format!("{:#}", repo.reveal(&set, &clear, None).unwrap_err());
    assert!(
        err.contains("private.json.age") && err.contains("BACKUP_ENCRYPTION_IDENTITY_FILE"),
        "{err}"
    );
    let identities = Identities::from_file(&keys.identity_file).unwrap();
    let whole = repo.reveal(&set, &clear, Some(&identities)).unwrap();
    let details: KafkaSetDetails = serde_json::from_value(whole.details).unwrap();
    let topic_details = details.topic(&topic).unwrap();
    assert_eq!(topic_details.records, 100);
    assert_eq!(topic_details.file, file);
    assert_eq!(topic_details.groups, vec![group.clone()]);
    assert_eq!(topic_details.partitions[0].last_offset, Some(49));
}

#[test]
fn chain_and_retention_span_plain_and_encrypted_sets_and_plain_is_refused() {
    let keys = AgeKeys::generate();
    let topic = topic("encinc", 2);
    produce(&topic, &[0, 1], 0, 30);
    let dir = tempfile::tempdir().unwrap();
    // Retention keeps the newest set only, and what it continues.
    let inc = [
        "--topic",
        topic.as_str(),
        "--incremental",
        "--retention-days",
        "0",
        "--keep-count",
        "1",
    ];

    let first = backup(dir.path(), &inc).ok().summary();
    assert_eq!(first["encrypted"], false);
    assert_eq!(first["records"], 60);

    // An encrypted set continues the plain one.
    produce(&topic, &[0, 1], 100, 10);
    let second = backup_env(dir.path(), &inc, &keys.recipients_env())
        .ok()
        .summary();
    assert_eq!(second["encrypted"], true);
    assert_eq!(second["records"], 20);
    assert_eq!(second["topics"][0]["incremental_from"], first["id"]);
    assert_eq!(second["topics"][0]["partitions"][1]["start_offset"], 30);
    assert_eq!(second["retention_deleted"], serde_json::json!([]));

    // Recipients gone from the environment: refused, nothing written.
    produce(&topic, &[0, 1], 200, 5);
    let refused = backup(dir.path(), &inc);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    let line = refused.error_line("kafka-topic-backup");
    assert!(
        line.contains("refusing to write a plaintext kafka set")
            && line.contains("--allow-unencrypted"),
        "{line}"
    );
    let sets = || {
        std::fs::read_dir(dir.path().join("kafka"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_type().unwrap().is_dir())
            .count()
    };
    assert_eq!(sets(), 2);

    // Allowed: the plain set continues from the encrypted set's cut, read without a key, and
    // retention keeps the whole chain it continues.
    let allowed: Vec<&str> = inc.iter().copied().chain(["--allow-unencrypted"]).collect();
    let third = backup(dir.path(), &allowed).ok().summary();
    assert_eq!(third["encrypted"], false);
    assert_eq!(third["records"], 10);
    assert_eq!(third["topics"][0]["incremental_from"], second["id"]);
    assert_eq!(third["topics"][0]["partitions"][0]["start_offset"], 40);
    assert_eq!(third["retention_deleted"], serde_json::json!([]));
    assert_eq!(sets(), 3);

    // Every record is in exactly one set.
    let mut seen = std::collections::BTreeSet::new();
    let archives = [
        read_archive(&archive_path(&first, &topic)),
        read_archive_from(&age_decrypt(&keys, &archive_path(&second, &topic))[..]),
        read_archive(&archive_path(&third, &topic)),
    ];
    for archive in &archives {
        for (p, o, _, _) in &archive.records {
            assert!(seen.insert((*p, *o)), "{p}:{o} captured twice");
        }
    }
    assert_eq!(seen.len(), 90);

    // A later full set ends the chain: retention (keep 1) may now delete all three.
    let fourth = backup_env(
        dir.path(),
        &[
            "--topic",
            &topic,
            "--retention-days",
            "0",
            "--keep-count",
            "1",
        ],
        &keys.recipients_env(),
    )
    .ok()
    .summary();
    let mut deleted: Vec<&str> = fourth["retention_deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    deleted.sort_unstable();
    let expected: Vec<&str> = [&first, &second, &third]
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(deleted, expected);
}

#[test]
fn stdout_with_recipients_is_an_age_stream() {
    let keys = AgeKeys::generate();
    let topic = topic("encout", 3);
    produce(&topic, &[0, 1, 2], 0, 40);
    let dir = tempfile::tempdir().unwrap();
    let out = backup_command(dir.path(), &["-q", "--stdout", "--topic", &topic])
        .envs(keys.recipients_env())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.starts_with(AGE_MAGIC));
    assert!(!dir.path().join("kafka").exists(), "no repository written");

    let stream = dir.path().join("stream.kta.age");
    std::fs::write(&stream, &out.stdout).unwrap();
    let archive = read_archive_from(&age_decrypt(&keys, &stream)[..]);
    assert_eq!(archive.meta.topic, topic);
    assert_eq!(archive.records.len(), 120);
    assert_eq!(
        offsets_by_partition(&archive)[&2],
        (0..40).collect::<Vec<i64>>()
    );

    // Without recipients, the plain stream as before.
    let plain = backup_command(dir.path(), &["-q", "--stdout", "--topic", &topic])
        .output()
        .unwrap();
    assert!(plain.status.success());
    assert_eq!(read_archive_from(&plain.stdout[..]).records.len(), 120);
}

//! A set holds every record of the cut, the topic configs with defaults marked, the
//! partition layout and the consumer groups' committed offsets.

use std::os::unix::fs::PermissionsExt;

use crate::support::*;

#[test]
fn regex_backup_saves_records_configs_and_group_offsets() {
    let base = test_support::unique_name("rx");
    let a = block_on(test_support::kafka::create_topic(&format!("{base}_a"), 3));
    let b = block_on(test_support::kafka::create_topic(&format!("{base}_b"), 1));
    let other = block_on(test_support::kafka::create_topic(
        &format!("{base}_other"),
        1,
    ));
    produce(&a, &[0, 1, 2], 0, 40);
    produce(&b, &[0], 0, 7);
    produce(&other, &[0], 0, 1);
    let group = test_support::unique_name("g");
    commit_group(&group, &a, &[(0, 5), (2, 40)]);

    let dir = tempfile::tempdir().unwrap();
    let pattern = format!("{base}_(a|b)");
    let summary = backup(dir.path(), &["--topic-regex", &pattern])
        .ok()
        .summary();
    let names: Vec<&str> = summary["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["topic"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec![a.as_str(), b.as_str()]);
    assert_eq!(summary["records"], 127);
    let parts = &summary["topics"][0]["partitions"];
    for p in 0..3 {
        assert_eq!(parts[p]["records"], 40);
        assert_eq!(parts[p]["first_offset"], 0);
        assert_eq!(parts[p]["last_offset"], 39);
    }

    let path = archive_path(&summary, &a);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let archive = read_archive(&path);
    assert_eq!(archive.meta.partitions, 3);
    assert_eq!(archive.meta.replication_factor, 1);
    assert_eq!(archive.records.len(), 120);
    let retention = archive
        .meta
        .configs
        .iter()
        .find(|c| c.name == "retention.ms")
        .unwrap();
    assert_eq!(retention.value.as_deref(), Some("-1"));
    assert!(!retention.is_default, "{retention:?}");
    assert!(archive.meta.overrides().any(|c| c.name == "retention.ms"));
    let saved = archive
        .meta
        .groups
        .iter()
        .find(|g| g.group == group)
        .unwrap();
    let offsets: Vec<(i32, i64)> = saved
        .offsets
        .iter()
        .map(|o| (o.partition, o.offset))
        .collect();
    assert_eq!(offsets, vec![(0, 5), (2, 40)]);
    let record = archive
        .records
        .iter()
        .find(|r| r.0 == 2 && r.1 == 7)
        .unwrap();
    assert_eq!(record.2.as_deref(), Some(b"k7".as_slice()));
    assert_eq!(record.3.as_deref(), Some(b"v2-7".as_slice()));

    // The manifest lists the files with their checksums, and they verify.
    let repo = common::repo::Repository::open(&common::storage::Location::Local(dir.path().into()))
        .unwrap();
    let (set, manifest) = repo.find(common::repo::Kind::Kafka, None).unwrap();
    assert_eq!(manifest.id, summary["id"].as_str().unwrap());
    assert_eq!(manifest.files.len(), 2);
    assert!(repo.verify_files(&set.prefix, &manifest).is_empty());
}

#[test]
fn max_messages_limits_each_partition() {
    let topic = topic("max", 2);
    produce(&topic, &[0, 1], 0, 30);
    let dir = tempfile::tempdir().unwrap();
    let summary = backup(dir.path(), &["--topic", &topic, "--max-messages", "12"])
        .ok()
        .summary();
    assert_eq!(summary["records"], 24);
    let archive = read_archive(&archive_path(&summary, &topic));
    assert_eq!(archive.end.records, 24);
    let offsets = offsets_by_partition(&archive);
    assert_eq!(offsets[&0], (0..12).collect::<Vec<i64>>());
    assert_eq!(offsets[&1], (0..12).collect::<Vec<i64>>());
    // The next incremental continues at offset 12.
    assert_eq!(summary["topics"][0]["partitions"][0]["end_offset"], 12);
}

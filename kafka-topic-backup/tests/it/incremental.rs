//! Incremental runs continue where the previous set stopped: every record is captured once,
//! and records deleted before a run could read them are recorded as a gap.

use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::{Offset, TopicPartitionList};
use test_support::kafka::client_config;

use crate::support::*;

#[test]
fn incremental_runs_capture_each_record_once() {
    let topic = topic("inc", 2);
    produce(&topic, &[0, 1], 0, 60);
    produce(&topic, &[0], 60, 15);
    let dir = tempfile::tempdir().unwrap();
    let first = backup(dir.path(), &["--topic", &topic, "--incremental"])
        .ok()
        .summary();
    assert_eq!(first["records"], 135);

    produce(&topic, &[0, 1], 1000, 25);
    let second = backup(dir.path(), &["--topic", &topic, "--incremental"])
        .ok()
        .summary();
    assert_eq!(second["records"], 50);
    assert_eq!(second["topics"][0]["incremental_from"], first["id"]);
    let parts = &second["topics"][0]["partitions"];
    assert_eq!(
        (
            parts[0]["start_offset"].as_i64(),
            parts[0]["end_offset"].as_i64()
        ),
        (Some(75), Some(100))
    );
    assert_eq!(
        (
            parts[1]["start_offset"].as_i64(),
            parts[1]["end_offset"].as_i64()
        ),
        (Some(60), Some(85))
    );

    // Nothing new: an empty incremental set that still continues the chain.
    let third = backup(dir.path(), &["--topic", &topic, "--incremental"])
        .ok()
        .summary();
    assert_eq!(third["records"], 0);
    assert_eq!(third["topics"][0]["incremental_from"], second["id"]);

    // Every record is in exactly one set.
    let mut seen = std::collections::BTreeMap::new();
    for summary in [&first, &second, &third] {
        for (p, o, _, v) in read_archive(&archive_path(summary, &topic)).records {
            assert!(seen.insert((p, o), v).is_none(), "{p}:{o} captured twice");
        }
    }
    assert_eq!(seen.len(), 185);
    assert_eq!(seen[&(0, 99)].as_deref(), Some(b"v0-1024".as_slice()));
    assert_eq!(seen[&(1, 0)].as_deref(), Some(b"v1-0".as_slice()));
}

#[test]
fn records_deleted_between_runs_are_recorded_as_a_gap() {
    let topic = topic("gap", 1);
    produce(&topic, &[0], 0, 20);
    let dir = tempfile::tempdir().unwrap();
    backup(dir.path(), &["--topic", &topic]).ok().summary();
    produce(&topic, &[0], 20, 20);
    // Delete records before offset 30: 20..30 were never backed up.
    let admin: AdminClient<DefaultClientContext> = client_config().create().unwrap();
    let mut before = TopicPartitionList::new();
    before
        .add_partition_offset(&topic, 0, Offset::Offset(30))
        .unwrap();
    block_on(admin.delete_records(&before, &AdminOptions::new())).expect("DeleteRecords");

    let next = backup(dir.path(), &["--topic", &topic, "--incremental"]);
    let summary = next.assert_code(0).summary();
    let part = &summary["topics"][0]["partitions"][0];
    assert_eq!(part["gap"]["from"], 20);
    assert_eq!(part["gap"]["to"], 30);
    assert_eq!(part["start_offset"], 30);
    assert_eq!(summary["records"], 10);
    assert!(next.stderr.contains("recorded as a gap"), "{}", next.stderr);
    let archive = read_archive(&archive_path(&summary, &topic));
    assert_eq!(
        archive.meta.ranges[0].gap.map(|g| (g.from, g.to)),
        Some((20, 30))
    );
}

#[test]
fn records_deleted_during_the_export_are_recorded_as_lost() {
    use std::io::Read;
    use std::process::{Command, Stdio};
    use std::time::Duration;

    let topic = topic("lost", 2);
    // Partition 0: 4 MB that does not compress, so the stream blocks on a pipe nobody reads.
    let producer: rdkafka::producer::BaseProducer = client_config().create().unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for n in 0..4000 {
        let value: Vec<u8> = (0..1024)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let key = format!("k{n}");
        let record = rdkafka::producer::BaseRecord::to(&topic)
            .partition(0)
            .key(key.as_str())
            .payload(&value);
        test_support::kafka::send(&producer, record);
        producer.poll(Duration::ZERO);
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(60)).unwrap();
    produce(&topic, &[1], 0, 50);

    let mut child = Command::new(env!("CARGO_BIN_EXE_kafka-topic-backup"))
        .env("KAFKA_BOOTSTRAP_SERVERS", test_support::kafka::bootstrap())
        .args([
            "-q",
            "--stdout",
            "--parallelism",
            "1",
            "--chunk-kib",
            "64",
            "--topic",
            &topic,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The cut is taken and partition 0 is being exported, blocked on the pipe; meanwhile
    // retention removes the first 30 records of partition 1.
    std::thread::sleep(Duration::from_secs(2));
    let admin: AdminClient<DefaultClientContext> = client_config().create().unwrap();
    let mut before = TopicPartitionList::new();
    before
        .add_partition_offset(&topic, 1, Offset::Offset(30))
        .unwrap();
    block_on(admin.delete_records(&before, &AdminOptions::new())).expect("DeleteRecords");

    let mut stream = Vec::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stream)
        .unwrap();
    assert!(child.wait().unwrap().success());
    let mut reader = common::topic_archive::ArchiveReader::open(&stream[..]).unwrap();
    assert_eq!(reader.meta().range(1).unwrap().start_offset, 0);
    while reader.next_records().unwrap().is_some() {}
    let end = reader.end().unwrap();
    let p1 = end.partitions.iter().find(|p| p.partition == 1).unwrap();
    assert_eq!(p1.records, 20);
    assert_eq!(p1.first_offset, Some(30));
    assert_eq!(p1.lost.map(|g| (g.from, g.to)), Some((0, 30)));
    let p0 = end.partitions.iter().find(|p| p.partition == 0).unwrap();
    assert_eq!((p0.records, p0.lost), (4000, None));
}

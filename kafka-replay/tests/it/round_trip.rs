//! A full backup and replay gives back every record field by field, in the same partitions,
//! with the topic's configs; a second replay adds nothing.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use test_support::kafka::client_config;

use crate::support::*;

const RECORDS: u64 = 21_000;

#[test]
fn full_fidelity_round_trip_over_three_partitions() {
    let set = BackedUp::new(
        source_topic(
            "rt_src",
            3,
            (0..RECORDS).map(|i| ((i % 3) as i32, varied(i))),
        ),
        &[],
    );

    let backup = &set.summary;
    assert_eq!(backup["records"], RECORDS);
    let partitions = backup["topics"][0]["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 3);
    for p in partitions {
        assert_eq!(p["records"], RECORDS / 3);
        assert_eq!(p["start_offset"], 0);
        assert_eq!(p["end_offset"], RECORDS / 3);
    }

    let target = test_support::unique_name("rt_dst");
    let replayed = set.replay_into(&target, &[]).ok().summary();
    assert_eq!(replayed["verified"], true);
    assert_eq!(replayed["created_topic"], true);
    assert_eq!(replayed["records_produced"], RECORDS);
    assert_eq!(partition_count(&target), 3);

    let original = read_all(&set.source);
    let restored = read_all(&target);
    assert_eq!(original.len(), 3);
    for partition in 0..3 {
        let (a, b) = (&original[&partition], &restored[&partition]);
        assert_eq!(a.len() as u64, RECORDS / 3);
        assert_eq!(a.len(), b.len(), "partition {partition}");
        for (x, y) in a.iter().zip(b) {
            assert_eq!(
                x.rec, y.rec,
                "partition {partition} source offset {}",
                x.offset
            );
            assert!(y.create_time);
        }
    }
    // The variety really is there: null vs empty keys and values, null header values,
    // duplicate header keys, old timestamps.
    let all: Vec<&Rec> = original.values().flatten().map(|r| &r.rec).collect();
    assert!(all.iter().any(|r| r.key.is_none()));
    assert!(all.iter().any(|r| r.key.as_deref() == Some(b"".as_slice())));
    assert!(all.iter().any(|r| r.value.is_none()));
    assert!(all
        .iter()
        .any(|r| r.value.as_deref() == Some(b"".as_slice())));
    assert!(all
        .iter()
        .any(|r| r.headers.iter().any(|(_, v)| v.is_none())));
    assert!(all
        .iter()
        .any(|r| r.headers.iter().filter(|(k, _)| k == "dup").count() == 2));
    assert!(all.iter().any(|r| r.timestamp < 1_100_000_000_000));

    // The saved non-default config (retention.ms=-1) was applied to the new topic.
    assert_eq!(topic_config(&target, "retention.ms").as_deref(), Some("-1"));

    // Re-running the finished replay produces nothing and still verifies.
    let again = set.replay_into(&target, &[]).ok().summary();
    assert_eq!(again["records_produced"], 0);
    assert_eq!(again["records_present"], RECORDS);
    assert_eq!(recs(&read_all(&target)), recs(&restored));
}

#[test]
fn log_append_time_is_archived_and_replayed_as_create_time() {
    let name = topic_with("lat_src", 1, &[("message.timestamp.type", "LogAppendTime")]);
    produce(&name, (0..50u64).map(|i| (0, varied(i))));
    let original = read_all(&name);
    assert!(
        original[&0].iter().all(|r| !r.create_time),
        "the broker stamps append times"
    );

    let set = BackedUp::new(name, &[]);
    let file = archive_file(&set.summary);
    let mut reader =
        common::topic_archive::ArchiveReader::open(std::fs::File::open(file).unwrap()).unwrap();
    let chunk = reader.next_records().unwrap().unwrap();
    let first = chunk.iter().next().unwrap();
    assert_eq!(
        first.timestamp_type,
        common::topic_archive::TimestampType::LogAppendTime
    );
    assert_eq!(first.timestamp, original[&0][0].rec.timestamp);

    let target = test_support::unique_name("lat_dst");
    let run = set.replay_into(&target, &[]).ok();
    assert!(
        run.stderr.contains("created with CreateTime"),
        "{}",
        run.stderr
    );
    let restored = read_all(&target);
    assert!(restored[&0].iter().all(|r| r.create_time));
    assert_eq!(recs(&restored), recs(&original));
}

/// With fewer producers than partitions, a producer serves several partitions; with one, it
/// serves all. Either way every partition comes back whole and in order.
#[test]
fn producers_sharing_partitions_keep_each_partition_in_order() {
    let set = BackedUp::new(
        source_topic(
            "shr_src",
            5,
            (0..5_000u64).map(|i| ((i % 5) as i32, varied(i))),
        ),
        &[],
    );
    let original = read_all(&set.source);
    for producers in ["2", "1"] {
        let target = test_support::unique_name("shr_dst");
        let summary = set
            .replay_into(&target, &["--producers", producers])
            .ok()
            .summary();
        assert_eq!(summary["verified"], true, "--producers {producers}");
        assert_eq!(summary["records_produced"], 5_000);
        let restored = read_all(&target);
        assert_eq!(recs(&restored), recs(&original), "--producers {producers}");
        for partition in 0..5 {
            assert_eq!(restored[&partition].len(), 1_000);
        }
    }
}

#[test]
fn records_over_a_megabyte_round_trip_with_the_topics_size_limit_and_codec() {
    // The replay sends batches in the topic's codec: zstd here.
    let name = topic_with(
        "big_src",
        2,
        &[
            ("max.message.bytes", "5000000"),
            ("compression.type", "zstd"),
        ],
    );
    // Incompressible values of 1.5 and 3 MB (over the clients' default 1 MB limit), between
    // small records.
    let noise = |len: usize, mut state: u64| -> Vec<u8> {
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    };
    let mut records = Vec::new();
    for i in 0..6u64 {
        let mut big = varied(i);
        big.value = Some(noise(if i % 2 == 0 { 1_500_000 } else { 3_000_000 }, i + 1));
        records.push(((i % 2) as i32, varied(100 + i)));
        records.push(((i % 2) as i32, big));
    }
    produce(&name, records);
    let original = read_all(&name);
    assert_eq!(original.values().map(Vec::len).sum::<usize>(), 12);

    let set = BackedUp::new(name, &[]);
    let target = test_support::unique_name("big_dst");
    let run = set.replay_into(&target, &[]).ok().summary();
    assert_eq!(run["verified"], true);
    assert_eq!(recs(&read_all(&target)), recs(&original));

    // The new topic got the source's limit and codec, so it takes records of that size again.
    assert_eq!(
        topic_config(&target, "max.message.bytes").as_deref(),
        Some("5000000")
    );
    assert_eq!(
        topic_config(&target, "compression.type").as_deref(),
        Some("zstd")
    );
}

/// A fresh topic (retention.ms=-1) with these configs; returns its name.
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

/// One config value of a topic, as DescribeConfigs reports it.
pub fn topic_config(topic: &str, key: &str) -> Option<String> {
    let admin: AdminClient<DefaultClientContext> = client_config().create().unwrap();
    let resource = ResourceSpecifier::Topic(topic);
    let configs = block_on(admin.describe_configs([&resource], &AdminOptions::new())).unwrap();
    let configs = configs.into_iter().next().unwrap().unwrap();
    configs.get(key).and_then(|e| e.value.clone())
}

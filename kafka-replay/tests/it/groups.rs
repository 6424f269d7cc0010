//! Consumer-group offsets are saved by the backup and restored on the target, translated to
//! the target's offsets, so a consumer resumes at the same record.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::Message;
use test_support::kafka::client_config;

use crate::support::*;

const T0: i64 = 1_780_000_000_000;

#[test]
fn group_offsets_are_restored_translated() {
    let source = source_topic(
        "grp_src",
        2,
        (0..100i64).flat_map(|o| {
            (0..2).map(move |p| {
                (
                    p,
                    Rec {
                        key: Some(format!("k{o}").into_bytes()),
                        value: Some(format!("p{p}-o{o}").into_bytes()),
                        headers: vec![],
                        timestamp: T0 + o * 1000,
                    },
                )
            })
        }),
    );
    let group = test_support::unique_name("grp");
    commit_group(&group, &source, &[(0, 20), (1, 35)]);
    let set = BackedUp::new(source, &[]);
    let saved = set.summary["topics"][0]["groups"].as_array().unwrap();
    assert!(saved.iter().any(|g| g == group.as_str()), "{}", set.summary);

    // Skip the first 10 records of each partition: target offset = source offset - 10.
    let target = test_support::unique_name("grp_dst");
    let from = (T0 + 10_000).to_string();
    let run = set
        .replay_into(
            &target,
            &[
                "--from-time",
                &from,
                "--restore-group-offsets",
                "--group",
                &group,
            ],
        )
        .ok()
        .summary();
    assert_eq!(run["verified"], true);
    let restored = &run["groups"][0];
    assert_eq!(restored["group"], group.as_str());
    assert_eq!(restored["committed"], true);
    assert_eq!(committed(&group, &target, 2), vec![Some(10), Some(25)]);

    // A consumer of that group on the target starts at the record it would have read next.
    let consumer: BaseConsumer = client_config()
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&target]).unwrap();
    let mut first = std::collections::BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while first.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the group consumer got no records"
        );
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            first
                .entry(m.partition())
                .or_insert_with(|| String::from_utf8_lossy(m.payload().unwrap()).into_owned());
        }
    }
    assert_eq!(first[&0], "p0-o20");
    assert_eq!(first[&1], "p1-o35");
    consumer.unsubscribe();
}

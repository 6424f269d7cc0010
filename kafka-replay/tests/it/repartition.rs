//! `--repartition` sends keyed records where Kafka's default partitioner would, for a target
//! with another partition count, keeping each key's order.

use std::collections::BTreeMap;

use crate::support::*;

#[test]
fn repartition_into_fewer_partitions_keeps_every_record_and_key_order() {
    let source = source_topic(
        "rep_src",
        3,
        (0..600u64).map(|i| {
            let rec = Rec {
                // Each key lives in one source partition, like a keyed producer would put it.
                key: Some(format!("user-{}-{}", i % 3, (i / 3) % 12).into_bytes()),
                value: Some(format!("event-{i}").into_bytes()),
                headers: vec![],
                timestamp: 1_780_000_000_000 + i as i64,
            };
            ((i % 3) as i32, rec)
        }),
    );
    let set = BackedUp::new(source, &[]);
    let target = test_support::unique_name("rep_dst");

    // Without --repartition a 2-partition target cannot take partition 2.
    let refused = set.replay_into(&target, &["--partitions", "2"]);
    assert_eq!(refused.code, 2);
    assert!(
        refused.stderr.contains("--repartition"),
        "{}",
        refused.stderr
    );

    let run = set
        .replay_into(&target, &["--partitions", "2", "--repartition"])
        .ok()
        .summary();
    assert_eq!(run["verified"], true);
    assert_eq!(run["records_produced"], 600);
    assert_eq!(partition_count(&target), 2);
    let restored = read_all(&target);
    let mut partition_of: BTreeMap<Vec<u8>, i32> = BTreeMap::new();
    let mut order: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
    for (p, records) in &restored {
        for r in records {
            let key = r.rec.key.clone().unwrap();
            assert_eq!(
                *partition_of.entry(key.clone()).or_insert(*p),
                *p,
                "a key spans partitions"
            );
            order
                .entry(key)
                .or_default()
                .push(r.rec.value.clone().unwrap());
        }
    }
    assert_eq!(restored.values().map(Vec::len).sum::<usize>(), 600);
    assert!(
        restored.values().all(|r| !r.is_empty()),
        "murmur2 spreads 36 keys over both"
    );
    // Per key, events stay in their original order (they were in one source partition).
    for (key, values) in order {
        let numbers: Vec<u64> = values
            .iter()
            .map(|v| String::from_utf8_lossy(v)[6..].parse().unwrap())
            .collect();
        assert!(
            numbers.windows(2).all(|w| w[0] < w[1]),
            "{key:?}: {numbers:?}"
        );
    }
}

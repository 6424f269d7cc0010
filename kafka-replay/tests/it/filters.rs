//! Time-range and offset-range replays select exactly the records asked for.

use crate::support::*;

const PER_PARTITION: i64 = 200;
const T0: i64 = 1_780_000_000_000;

/// A topic of 3 x 200 records whose timestamps rise by one second per offset, backed up.
fn timed_topic() -> BackedUp {
    let source = source_topic(
        "flt_src",
        3,
        (0..PER_PARTITION).flat_map(|o| {
            (0..3).map(move |p| {
                (
                    p,
                    Rec {
                        key: Some(format!("k{p}-{o}").into_bytes()),
                        value: Some(format!("v{p}-{o}").into_bytes()),
                        headers: vec![],
                        timestamp: T0 + o * 1000,
                    },
                )
            })
        }),
    );
    BackedUp::new(source, &[])
}

fn iso(millis: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(millis as i128 * 1_000_000).unwrap();
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

#[test]
fn time_range_replays_exactly_the_records_in_range() {
    let set = timed_topic();
    let target = test_support::unique_name("flt_time");
    // [T0+50s, T0+120s): offsets 50..120 of every partition. One bound as RFC 3339, one
    // as epoch milliseconds.
    let from = iso(T0 + 50_000);
    let to = (T0 + 120_000).to_string();
    let run = set
        .replay_into(&target, &["--from-time", &from, "--to-time", &to])
        .ok()
        .summary();
    assert_eq!(run["records_produced"], 3 * 70);
    let original = read_all(&set.source);
    let restored = read_all(&target);
    for p in 0..3 {
        let expected: Vec<Rec> = original[&p]
            .iter()
            .filter(|r| r.rec.timestamp >= T0 + 50_000 && r.rec.timestamp < T0 + 120_000)
            .map(|r| r.rec.clone())
            .collect();
        assert_eq!(expected.len(), 70);
        let got: Vec<Rec> = restored[&p].iter().map(|r| r.rec.clone()).collect();
        assert_eq!(got, expected, "partition {p}");
    }
}

#[test]
fn offset_range_replays_exactly_those_offsets() {
    let set = timed_topic();
    let target = test_support::unique_name("flt_off");
    let run = set
        .replay_into(
            &target,
            &["--offset-range", "1:10..25", "--offset-range", "2:190.."],
        )
        .ok()
        .summary();
    assert_eq!(run["records_produced"], 15 + 10);
    let original = read_all(&set.source);
    let restored = read_all(&target);
    assert!(restored[&0].is_empty());
    let expect = |p: i32, from: i64, to: i64| -> Vec<Rec> {
        original[&p]
            .iter()
            .filter(|r| r.offset >= from && r.offset < to)
            .map(|r| r.rec.clone())
            .collect()
    };
    let got = |p: i32| -> Vec<Rec> { restored[&p].iter().map(|r| r.rec.clone()).collect() };
    assert_eq!(got(1), expect(1, 10, 25));
    assert_eq!(got(2), expect(2, 190, PER_PARTITION));

    // A dry run reports the same plan and produces nothing.
    let other = test_support::unique_name("flt_dry");
    let dry = set
        .replay_into(&other, &["--offset-range", "0:0..5", "--dry-run"])
        .ok()
        .summary();
    assert_eq!(dry["records_produced"], 5);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(
        partition_count(&other),
        0,
        "a dry run must not create the topic"
    );
}

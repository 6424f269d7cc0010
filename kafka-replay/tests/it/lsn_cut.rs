//! `--until-lsn`: a CDC topic replayed only up to the LSN a restore reached, tombstones with
//! their deletes, group offsets translated over the cut, and the connector's offset written
//! to Kafka Connect's offsets topic; the transactions a restore cut off listed
//! (`--list-txids`) and left out (`--skip-txids`). The records are Debezium-shaped JSON built
//! by hand.

use serde_json::{json, Value};

use crate::support::*;

const T0: i64 = 1_780_000_000_000;

/// A Debezium change event for row `id` of public.orders; `lsn` as Debezium writes it (a
/// number) or as text. `wrapped`: with the JsonConverter schema wrapper.
fn event(op: &str, id: i64, lsn: Value, tx: i64, wrapped: bool) -> Vec<u8> {
    let row = json!({"id": id, "amount": id * 10});
    let (before, after) = match op {
        "c" => (Value::Null, row),
        "d" => (row, Value::Null),
        _ => (row.clone(), row),
    };
    let envelope = json!({
        "before": before,
        "after": after,
        "source": {
            "version": "2.5.0.Final", "connector": "postgresql", "name": "dbserver1",
            "ts_ms": T0 + tx, "db": "pipeline", "schema": "public", "table": "orders",
            "txId": tx, "lsn": lsn,
        },
        "op": op,
        "ts_ms": T0 + tx + 5,
    });
    let value = if wrapped {
        json!({"schema": {"type": "struct", "name": "dbserver1.public.orders.Envelope"}, "payload": envelope})
    } else {
        envelope
    };
    value.to_string().into_bytes()
}

fn key(id: i64, wrapped: bool) -> Vec<u8> {
    let key = if wrapped {
        json!({"schema": {"type": "struct"}, "payload": {"id": id}})
    } else {
        json!({"id": id})
    };
    key.to_string().into_bytes()
}

/// A record of row `id` (a tombstone when `value` is None), the `n`-th of its partition.
fn rec(n: i64, id: i64, value: Option<Vec<u8>>, wrapped: bool) -> Rec {
    Rec {
        key: Some(key(id, wrapped)),
        value,
        headers: vec![],
        timestamp: T0 + n * 1000,
    }
}

/// Partition 0 with the schema wrapper, partition 1 without; the cut is 0/3000.
fn cdc_records() -> Vec<(i32, Rec)> {
    let w = |n, op, id, lsn: Value, tx| rec(n, id, Some(event(op, id, lsn, tx, true)), true);
    let p0 = vec![
        w(0, "c", 1, json!(0x1000), 500),
        w(1, "c", 2, json!(0x1100), 501),
        w(2, "u", 1, json!(0x1200), 502),
        w(3, "d", 2, json!(0x1300), 503),
        rec(4, 2, None, true),
        w(5, "c", 3, json!(0x2F00), 504),
        w(6, "c", 4, json!(0x3000), 505),
        w(7, "d", 1, json!(0x3100), 506),
        rec(8, 1, None, true),
        // A transaction that began before the cut and is streamed after one that did not.
        w(9, "u", 3, json!("0/2FF0"), 507),
        w(10, "c", 5, json!(0x3200), 508),
    ];
    let u = |n, op, id, lsn: Value, tx| rec(n, id, Some(event(op, id, lsn, tx, false)), false);
    let p1 = vec![
        u(0, "c", 100, json!(0x1050), 600),
        u(1, "d", 100, json!(0x1150), 601),
        rec(2, 100, None, false),
        u(3, "c", 101, json!(0x2000), 602),
        u(4, "c", 102, json!(0x3300), 603),
        u(5, "d", 101, json!(0x3400), 604),
        rec(6, 101, None, false),
    ];
    p0.into_iter()
        .map(|r| (0, r))
        .chain(p1.into_iter().map(|r| (1, r)))
        .collect()
}

/// The records of `topic` at these source offsets, per partition.
fn at_offsets(
    original: &std::collections::BTreeMap<i32, Vec<Read>>,
    offsets: &[&[i64]],
) -> std::collections::BTreeMap<i32, Vec<Rec>> {
    offsets
        .iter()
        .enumerate()
        .map(|(p, offsets)| {
            let p = p as i32;
            let recs = offsets
                .iter()
                .map(|&o| original[&p][o as usize].rec.clone())
                .collect();
            (p, recs)
        })
        .collect()
}

/// The one record of an offsets topic: (partition, key, value).
fn offset_record(topic: &str) -> (i32, String, Value) {
    let all: Vec<(i32, Read)> = read_all(topic)
        .into_iter()
        .flat_map(|(p, reads)| reads.into_iter().map(move |r| (p, r)))
        .collect();
    assert_eq!(all.len(), 1, "{all:?}");
    let (partition, read) = &all[0];
    let key = String::from_utf8(read.rec.key.clone().unwrap()).unwrap();
    let value = serde_json::from_slice(read.rec.value.as_deref().unwrap()).unwrap();
    (*partition, key, value)
}

/// A replay cut at 0/3000 that writes the connector's offset (inventory=dbserver1) to
/// `offsets_topic`, with `extra` flags.
fn cut_with_offset(set: &BackedUp, target: &str, offsets_topic: &str, extra: &[&str]) -> Run {
    let args: Vec<&str> = [
        "--until-lsn",
        "0/3000",
        "--connector-offset",
        "inventory=dbserver1",
        "--offsets-topic",
        offsets_topic,
    ]
    .into_iter()
    .chain(extra.iter().copied())
    .collect();
    set.replay_into(target, &args)
}

#[test]
fn cut_replays_exactly_the_events_below_the_lsn_and_sets_the_offsets() {
    let source = source_topic("lsn_src", 2, cdc_records());
    let past = test_support::unique_name("lsn_past");
    let mid = test_support::unique_name("lsn_mid");
    commit_group(&past, &source, &[(0, 11), (1, 5)]);
    commit_group(&mid, &source, &[(0, 3), (1, 2)]);
    let set = BackedUp::new(source, &[]);

    let target = test_support::unique_name("lsn_dst");
    let offsets_topic = test_support::unique_name("lsn_offsets");
    let run = cut_with_offset(&set, &target, &offsets_topic, &["--restore-group-offsets"])
        .ok()
        .summary();
    assert_eq!(run["verified"], true, "{run}");
    assert_eq!(
        run["lsn_cut"],
        json!({
            "until_lsn": "0/3000", "replayed": 11, "dropped_after_cut": 7, "skipped_cut_off_events": 0,
            "max_replayed_lsn": "0/2FF0", "min_dropped_lsn": "0/3000", "backup_newest_lsn": "0/3400",
        })
    );
    assert_eq!(run["records_produced"], 11);

    // Exactly the events below the cut, in order, each tombstone with its delete.
    let kept: [&[i64]; 2] = [&[0, 1, 2, 3, 4, 5, 9], &[0, 1, 2, 3]];
    assert_eq!(
        recs(&read_all(&target)),
        at_offsets(&read_all(&set.source), &kept)
    );

    // Groups: one committed past the cut lands at the end of what was replayed; one in the
    // middle at the same record.
    assert_eq!(committed(&past, &target, 2), vec![Some(7), Some(4)]);
    assert_eq!(committed(&mid, &target, 2), vec![Some(3), Some(2)]);

    // The connector's offset: Debezium's key and value, in the partition Java's partitioner
    // picks in the offsets topic the replay created (Connect's 25 partitions).
    let key = r#"["inventory",{"server":"dbserver1"}]"#;
    let value = json!({"lsn": 0x3000, "txId": 507, "ts_usec": (T0 + 507) * 1000});
    let written = &run["connector_offset"];
    assert_eq!(written["topic"], offsets_topic.as_str());
    assert_eq!(written["key"], key);
    assert_eq!(written["value"], value);
    assert_eq!(partition_count(&offsets_topic), 25);
    let (partition, found_key, found_value) = offset_record(&offsets_topic);
    assert_eq!((found_key.as_str(), &found_value), (key, &value));
    assert_eq!(
        partition,
        kafka_replay::murmur2_partition(key.as_bytes(), 25)
    );
    assert_eq!(written["partition"], partition);
}

#[test]
fn header_lsns_combine_with_a_time_range_and_an_existing_offsets_topic() {
    // LSNs 0/10, 0/20, ... 0/A0 in a header; the values carry none.
    let source = source_topic(
        "lsn_hdr",
        1,
        (0..10i64).map(|i| {
            (
                0,
                Rec {
                    key: Some(format!("k{i}").into_bytes()),
                    value: Some(format!(r#"{{"n":{i}}}"#).into_bytes()),
                    headers: vec![(
                        "pg_lsn".to_string(),
                        Some(format!("0/{:X}", (i + 1) * 0x10).into_bytes()),
                    )],
                    timestamp: T0 + i * 1000,
                },
            )
        }),
    );
    let set = BackedUp::new(source, &[]);
    let offsets_topic = topic("lsn_offsets1", 1);
    let target = test_support::unique_name("lsn_hdr_dst");
    let from = (T0 + 2000).to_string();
    // 0/80 as a decimal number.
    let args = [
        "--until-lsn",
        "128",
        "--lsn-field",
        "header:pg_lsn",
        "--from-time",
        &from,
        "--connector-offset",
        "c2=srv2",
        "--offsets-topic",
        &offsets_topic,
    ];
    let expected_cut = json!({
        "until_lsn": "0/80", "replayed": 5, "dropped_after_cut": 3, "skipped_cut_off_events": 0,
        "max_replayed_lsn": "0/70", "min_dropped_lsn": "0/80", "backup_newest_lsn": "0/A0",
    });

    // A dry run reports the cut and the offset, and writes nothing.
    let dry: Vec<&str> = args.iter().copied().chain(["--dry-run"]).collect();
    let planned = set.replay_into(&target, &dry).ok().summary();
    assert_eq!(planned["lsn_cut"], expected_cut);
    assert_eq!(planned["connector_offset"]["partition"], Value::Null);
    assert_eq!(partition_count(&target), 0);
    assert_eq!(watermarks(&offsets_topic, 1), vec![(0, 0)]);

    let run = set.replay_into(&target, &args).ok().summary();
    assert_eq!(run["lsn_cut"], expected_cut);
    let original = read_all(&set.source);
    assert_eq!(
        recs(&read_all(&target)),
        at_offsets(&original, &[&[2, 3, 4, 5, 6]])
    );
    // No Debezium envelope: no txId, and the time is now.
    let (partition, key, value) = offset_record(&offsets_topic);
    assert_eq!(
        (partition, key.as_str()),
        (0, r#"["c2",{"server":"srv2"}]"#)
    );
    assert_eq!((&value["lsn"], &value["txId"]), (&json!(128), &Value::Null));
    let now_usec = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let ts = value["ts_usec"].as_i64().unwrap();
    assert!((now_usec - ts).abs() < 600_000_000, "{value}");
    assert_eq!(run["connector_offset"]["value"], value);
}

#[test]
fn a_record_without_an_lsn_stops_the_replay_before_anything_is_produced() {
    let mut records = cdc_records();
    // Partition 1's fourth record: a heartbeat-like value with no source.lsn.
    records[14].1.value = Some(br#"{"payload":{"ts_ms":1}}"#.to_vec());
    let set = BackedUp::new(source_topic("lsn_miss", 2, records), &[]);
    let source = &set.source;
    let target = test_support::unique_name("lsn_miss_dst");
    let offsets_topic = test_support::unique_name("lsn_miss_off");
    let run = cut_with_offset(&set, &target, &offsets_topic, &[]);
    run.assert_code(1);
    let line = run.error_line("kafka-replay");
    assert!(
        line.contains(&format!(
            "{source}[1] offset 3 has no LSN at /payload/source/lsn or /source/lsn: it is missing or null"
        )),
        "{line}"
    );
    assert_eq!(partition_count(&target), 0, "nothing may be produced");
    assert_eq!(partition_count(&offsets_topic), 0);

    // A pipe cannot be checked before producing: --stdin is refused.
    let run = replay(
        set.dir(),
        &["--stdin", "--target-topic", &target, "--until-lsn", "0/1"],
    );
    run.assert_code(2);
    assert!(run.stderr.contains("--stdin"), "{}", run.stderr);
}

#[test]
fn transactions_cut_off_by_the_restore_are_listed_then_left_out() {
    let set = BackedUp::new(source_topic("lsn_txid", 2, cdc_records()), &[]);
    let target = test_support::unique_name("lsn_txid_dst");

    // The distinct transactions below the cut; nothing is created or produced.
    let listed = set
        .replay_into(&target, &["--until-lsn", "0/3000", "--list-txids"])
        .ok()
        .summary();
    assert_eq!(
        listed["txids"],
        json!([500, 501, 502, 503, 504, 507, 600, 601, 602])
    );
    assert_eq!(listed["lsn_cut"]["replayed"], 11);
    assert_eq!(partition_count(&target), 0);

    // Transaction 507 began before the cut and committed after it: the restored database
    // does not hold it, so its event below the cut goes (999 has no event: harmless).
    let dir = tempfile::tempdir().unwrap();
    let skip = dir.path().join("cut-off.txids");
    std::fs::write(&skip, "507\n999\n").unwrap();
    let skip = skip.to_str().unwrap();
    let offsets_topic = test_support::unique_name("lsn_txid_off");
    let run = cut_with_offset(&set, &target, &offsets_topic, &["--skip-txids", skip])
        .ok()
        .summary();
    assert_eq!(run["verified"], true, "{run}");
    assert_eq!(
        run["lsn_cut"],
        json!({
            "until_lsn": "0/3000", "replayed": 10, "dropped_after_cut": 7, "skipped_cut_off_events": 1,
            "max_replayed_lsn": "0/2F00", "min_dropped_lsn": "0/3000", "backup_newest_lsn": "0/3400",
        })
    );
    let kept: [&[i64]; 2] = [&[0, 1, 2, 3, 4, 5], &[0, 1, 2, 3]];
    assert_eq!(
        recs(&read_all(&target)),
        at_offsets(&read_all(&set.source), &kept)
    );
    // The connector resumes at the cut; the last event replayed is transaction 504's.
    let (_, _, value) = offset_record(&offsets_topic);
    assert_eq!(
        (&value["lsn"], &value["txId"]),
        (&json!(0x3000), &json!(504))
    );

    // A skip list that is not one: exit 2 naming the file and the word, nothing produced.
    let bad = dir.path().join("bad.txids");
    std::fs::write(&bad, "507 x7").unwrap();
    let other = test_support::unique_name("lsn_txid_bad");
    let run = set.replay_into(
        &other,
        &[
            "--until-lsn",
            "0/3000",
            "--skip-txids",
            bad.to_str().unwrap(),
        ],
    );
    run.assert_code(2);
    let line = run.error_line("kafka-replay");
    assert!(
        line.contains("invalid --skip-txids file") && line.contains("'x7' is not a transaction id"),
        "{line}"
    );
    assert_eq!(partition_count(&other), 0);
}

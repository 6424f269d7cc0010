//! An interrupted replay re-run finishes without duplicating a record; a target holding
//! records the replay did not write is refused rather than mixed.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn replay_resumes_after_a_partial_run_without_duplicates() {
    let set = BackedUp::new(
        source_topic(
            "res_src",
            3,
            (0..6000u64).map(|i| ((i % 3) as i32, varied(i))),
        ),
        &[],
    );
    let original = read_all(&set.source);

    // What an interrupted run leaves: a prefix of each partition (different lengths).
    let target = topic("res_dst", 3);
    let prefix = [700usize, 0, 1999];
    produce(
        &target,
        (0..3).flat_map(|p| {
            original[&p][..prefix[p as usize]]
                .iter()
                .map(move |r| (p, r.rec.clone()))
                .collect::<Vec<_>>()
        }),
    );
    let run = set.replay_into(&target, &[]).ok().summary();
    assert_eq!(run["records_present"], 700 + 1999);
    assert_eq!(run["records_produced"], 6000 - 700 - 1999);
    assert_eq!(run["verified"], true);
    assert_eq!(recs(&read_all(&target)), recs(&original));
}

#[test]
fn killed_replay_rerun_has_no_duplicates() {
    // SIGKILL: no chance to flush or clean up, the worst case.
    interrupted_replay_rerun_has_no_duplicates("kill", |mut child| {
        child.kill().unwrap();
        child.wait().unwrap();
    });
}

#[test]
fn sigterm_ends_a_replay_with_143_and_the_rerun_has_no_duplicates() {
    interrupted_replay_rerun_has_no_duplicates("term", |child| {
        // (Its stderr is not kept: the exit code tells.)
        test_support::process::signal_and_wait(child, "TERM").assert_code(143);
    });
}

fn interrupted_replay_rerun_has_no_duplicates(name: &str, stop: impl FnOnce(std::process::Child)) {
    let set = BackedUp::new(
        source_topic(
            &format!("{name}_src"),
            3,
            (0..30_000u64).map(|i| ((i % 3) as i32, varied(i))),
        ),
        &["--chunk-kib", "64"],
    );
    let archive = set.archive();
    let target = test_support::unique_name(&format!("{name}_dst"));

    // The replay reads the archive from a pipe that delivers only its first half, so it is
    // certainly still running when it is killed with some records produced.
    let mut child = replay_child(set.dir(), &["--stdin", "--target-topic", &target]);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&archive[..archive.len() / 2]).unwrap();
    stdin.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "the replay produced nothing");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the replay ended early"
        );
        if partition_count(&target) == 3
            && watermarks(&target, 3).iter().map(|(_, h)| h).sum::<i64>() > 0
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stop(child);
    drop(stdin);
    std::thread::sleep(Duration::from_millis(300));
    let partial: i64 = watermarks(&target, 3).iter().map(|(_, h)| h).sum();
    assert!(partial > 0 && partial < 30_000, "{partial}");

    let run = set.replay_into(&target, &[]).ok().summary();
    assert_eq!(run["verified"], true);
    assert_eq!(run["records_present"].as_i64().unwrap(), partial);
    assert_eq!(run["records_produced"].as_i64().unwrap(), 30_000 - partial);
    assert_eq!(recs(&read_all(&target)), recs(&read_all(&set.source)));
}

#[test]
fn foreign_records_in_the_target_are_refused_unless_appending() {
    let set = BackedUp::new(
        source_topic(
            "frn_src",
            2,
            (0..100u64).map(|i| ((i % 2) as i32, varied(i))),
        ),
        &[],
    );
    let target = topic("frn_dst", 2);
    let stranger = Rec {
        key: Some(b"someone else".to_vec()),
        value: Some(b"was here".to_vec()),
        headers: vec![],
        timestamp: 1_700_000_000_000,
    };
    produce(&target, [(1, stranger.clone())]);

    let refused = set.replay_into(&target, &[]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("did not write"),
        "{}",
        refused.stderr
    );
    assert!(refused.stderr.contains("--append"), "{}", refused.stderr);
    // Refused before producing anything, into any partition.
    assert_eq!(watermarks(&target, 2), vec![(0, 0), (0, 1)]);

    let appended = set.replay_into(&target, &["--append"]).ok().summary();
    assert_eq!(appended["records_produced"], 100);
    let after = read_all(&target);
    assert_eq!(after[&1][0].rec, stranger);
    assert_eq!(after[&1].len(), 51);
    let original = read_all(&set.source);
    assert_eq!(recs(&after)[&0], recs(&original)[&0]);
    assert_eq!(recs(&after)[&1][1..], recs(&original)[&1][..]);
}

#[test]
fn a_concurrent_writer_fails_verification_with_exit_1() {
    let set = BackedUp::new(
        source_topic(
            "conc_src",
            2,
            (0..4000u64).map(|i| ((i % 2) as i32, varied(i))),
        ),
        &["--chunk-kib", "32"],
    );
    let archive = set.archive();
    let target = test_support::unique_name("conc_dst");

    let mut child = std::process::Command::new(replay_bin())
        .env("KAFKA_BOOTSTRAP_SERVERS", test_support::kafka::bootstrap())
        .args(["--output", "json", "--stdin", "--target-topic", &target])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&archive[..archive.len() / 2]).unwrap();
    stdin.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Chunks of the two partitions interleave in whatever order the parallel export wrote
    // them: wait for records in either partition, not a particular one.
    while partition_count(&target) < 2 || watermarks(&target, 2).iter().all(|w| w.1 == 0) {
        assert!(Instant::now() < deadline, "the replay produced nothing");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Someone else writes into the target while the replay runs.
    produce(
        &target,
        [(
            0,
            Rec {
                key: None,
                value: Some(b"intruder".to_vec()),
                headers: vec![],
                timestamp: 1_700_000_000_000,
            },
        )],
    );
    stdin.write_all(&archive[archive.len() / 2..]).unwrap();
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["verified"], false);
    assert_eq!(summary["partitions"][0]["ok"], false);
    assert_eq!(summary["partitions"][0]["high_watermark"], 2001);
    assert_eq!(summary["partitions"][0]["expected_high_watermark"], 2000);
    assert_eq!(summary["partitions"][1]["ok"], true);
}

/// The target broker killed (-9) mid-replay (found by the fault campaign): the producer's
/// queue fills and nothing is acknowledged, and the replay used to wait for librdkafka's
/// message timeout (5 min) once per queue's worth of records. It now ends within --timeout of
/// the last acknowledgement with exit 2 and one line; with the broker back, the same replay
/// resumes and leaves every record once, in order. A private broker: the shared one stays up.
#[test]
fn a_broker_killed_mid_replay_ends_it_within_the_timeout_and_the_rerun_resumes() {
    // One partition, more records than its producer's queue holds (30,000).
    let set = BackedUp::new(
        source_topic("dead_src", 1, (0..80_000u64).map(|i| (0, varied(i)))),
        &["--chunk-kib", "64"],
    );
    let archive = set.archive();
    let mut broker = test_support::broker::PrivateBroker::start();
    let private = broker.bootstrap();
    let target = test_support::unique_name("dead_dst");

    let args = ["--bootstrap-servers", &private, "--timeout", "3s"];
    let mut child = tool(replay_bin(), set.dir(), &args)
        .args(["--stdin", "--target-topic", &target])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // A tenth of the archive first: the replay is under way when the broker dies.
    let (head, rest) = archive.split_at(archive.len() / 10);
    stdin.write_all(head).unwrap();
    stdin.flush().unwrap();
    test_support::process::wait_for("the first records", Duration::from_secs(60), || {
        partition_count_at(&private, &target) == 1 && watermarks_at(&private, &target, 1)[0].1 > 0
    });
    broker.kill();
    let killed = Instant::now();
    // The rest, from a thread: a replay stuck on the dead broker stops reading its input.
    let rest = rest.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&rest);
    });
    let deadline = killed + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the replay still waits 60 s after its broker died (--timeout 3s)");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let run = Run::from(child.wait_with_output().unwrap());
    let _ = feeder.join();
    run.assert_code(2);
    let line = run.error_line("kafka-replay");
    assert!(line.contains("broker"), "the cause is named: {line}");

    broker.restart();
    let rerun = tool(replay_bin(), set.dir(), &args)
        .args(["--topic", &set.source, "--target-topic", &target])
        .output()
        .unwrap();
    let rerun = Run::from(rerun).ok().summary();
    assert_eq!(rerun["verified"], true);
    assert_eq!(
        recs(&read_all_at(&private, &target)),
        recs(&read_all(&set.source))
    );
}

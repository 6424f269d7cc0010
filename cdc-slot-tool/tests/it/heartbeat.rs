//! `heartbeat` writes a logical message that the database's slots decode.

use std::time::{Duration, Instant};

use crate::support::{lsn, Lab, DECODING_SLOT};

/// Consumes the decoding slot until `wanted` shows up. A non-transactional message is flushed
/// by the WAL writer (PostgreSQL 15 has no flush option), so it may take a moment.
fn consume_until(lab: &Lab, wanted: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut changes = String::new();
    loop {
        changes.push_str(&lab.consume_decoding(DECODING_SLOT).join("\n"));
        if changes.contains(wanted) {
            return;
        }
        assert!(Instant::now() < deadline, "no '{wanted}' in: {changes}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn heartbeat_reaches_the_slots_of_each_database() {
    let lab = Lab::with_cdc();
    let before = lab.confirmed_flush(DECODING_SLOT);
    let run = lab.tool(&["heartbeat", "--output", "json"]);
    run.assert_code(0);
    let beats = run.records("heartbeat");
    assert_eq!(beats.len(), 1, "one database has slots: {run:?}");
    assert_eq!(beats[0]["database"], lab.db.as_str());
    assert!(lsn(beats[0]["lsn"].as_str().unwrap()) > lsn(&before));
    assert_eq!(run.summary()["databases"], 1);

    consume_until(
        &lab,
        "message: transactional: 0 prefix: cdc-slot-tool.heartbeat",
    );
    // Consuming the heartbeat moves the idle slot forward.
    assert!(lsn(&lab.confirmed_flush(DECODING_SLOT)) > lsn(&before));

    let run = lab.tool(&[
        "heartbeat",
        "--database",
        &lab.db,
        "--prefix",
        "probe",
        "--content",
        "ping",
        "--transactional",
    ]);
    run.assert_code(0);
    consume_until(
        &lab,
        "message: transactional: 1 prefix: probe, sz: 4 content:ping",
    );
}

#[test]
fn heartbeat_into_a_missing_database_fails() {
    let lab = Lab::new();
    let run = lab.tool(&["heartbeat", "--database", "no_such_db"]);
    run.assert_code(2);
    assert!(run.stderr.contains("no_such_db"), "{}", run.stderr);
}

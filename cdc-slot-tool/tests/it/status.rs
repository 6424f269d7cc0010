//! `status`: thresholds and exit codes, WAL status, inactivity, and the metrics file parsed
//! as Prometheus text.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use test_support::os_user::db_tempdir;
use test_support::pg::{PgCluster, PgOptions};

use crate::prometheus::{self, value};
use crate::support::{Lab, DECODING_SLOT, PGOUTPUT_SLOT};

fn metrics(path: &Path) -> Vec<prometheus::Sample> {
    let text = std::fs::read_to_string(path).expect("metrics file written");
    prometheus::parse(&text).unwrap_or_else(|e| panic!("not Prometheus text: {e}\n{text}"))
}

#[test]
fn status_is_healthy_when_consumers_keep_up_and_metrics_parse() {
    let lab = Lab::with_cdc();
    let dir = db_tempdir("metrics-");
    let file = dir.path().join("cdc_slots.prom");
    let run = lab.tool(&[
        "status",
        "--max-lag-bytes",
        "16MB",
        "--metrics-file",
        file.to_str().unwrap(),
        "--output",
        "json",
    ]);
    run.assert_code(0);
    let summary = run.summary();
    assert_eq!(summary["healthy"], true);
    assert_eq!(summary["slots"], 2);
    let slot = run.record("slot", "slot_name", DECODING_SLOT);
    assert_eq!(slot["healthy"], true);
    assert_eq!(slot["active"], false);
    assert_eq!(slot["wal_status"], "reserved");
    let lag = slot["lag_bytes"].as_u64().unwrap();

    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644, "readable by the collector");
    let samples = metrics(&file);
    let labels = [("slot", DECODING_SLOT), ("database", lab.db.as_str())];
    assert_eq!(value(&samples, "cdc_slot_up", &[]), Some(1.0));
    assert_eq!(value(&samples, "cdc_slot_slots", &[]), Some(2.0));
    assert_eq!(value(&samples, "cdc_slot_healthy", &labels), Some(1.0));
    assert_eq!(value(&samples, "cdc_slot_active", &labels), Some(0.0));
    assert_eq!(
        value(&samples, "cdc_slot_lag_bytes", &labels),
        Some(lag as f64)
    );
    assert_eq!(
        value(
            &samples,
            "cdc_slot_wal_status",
            &[("slot", DECODING_SLOT), ("wal_status", "reserved")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "cdc_slot_wal_status",
            &[("slot", DECODING_SLOT), ("wal_status", "lost")]
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &samples,
            "cdc_slot_info",
            &[("slot", PGOUTPUT_SLOT), ("plugin", "pgoutput")]
        ),
        Some(1.0)
    );
    assert!(value(&samples, "cdc_slot_last_run_timestamp_seconds", &[]).unwrap() > 1.7e9);

    // `-` prints the metrics instead of the report.
    let run = lab.tool(&["status", "--metrics-file", "-"]);
    run.assert_code(0);
    let samples = prometheus::parse(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout is not Prometheus text: {e}\n{}", run.stdout));
    assert_eq!(value(&samples, "cdc_slot_healthy", &labels), Some(1.0));
}

#[test]
fn status_exits_1_for_an_inactive_slot_over_the_lag_threshold() {
    let lab = Lab::with_cdc();
    lab.insert_orders(21, 3000);
    let dir = db_tempdir("metrics-");
    let file = dir.path().join("cdc_slots.prom");
    let args = [
        "status",
        "--max-lag-bytes",
        "64kB",
        "--metrics-file",
        file.to_str().unwrap(),
    ];
    let run = lab.tool(&[&args[..], &["--output", "json"]].concat());
    run.assert_code(1);
    let slot = run.record("slot", "slot_name", DECODING_SLOT);
    assert_eq!(slot["healthy"], false);
    assert_eq!(slot["active"], false);
    assert!(slot["lag_bytes"].as_u64().unwrap() > 64 * 1024);
    assert!(
        slot["problems"][0]
            .as_str()
            .unwrap()
            .contains("--max-lag-bytes"),
        "{slot}"
    );
    assert_eq!(run.summary()["healthy"], false);
    let samples = metrics(&file);
    let labels = [("slot", DECODING_SLOT)];
    assert_eq!(value(&samples, "cdc_slot_healthy", &labels), Some(0.0));
    assert!(value(&samples, "cdc_slot_lag_bytes", &labels).unwrap() > 65536.0);

    // Text output names the slot and the reason; the warning goes to stderr.
    let run = lab.tool(&args);
    run.assert_code(1);
    assert!(run.stdout.contains(DECODING_SLOT), "{}", run.stdout);
    assert!(
        run.stdout.contains("exceeds --max-lag-bytes"),
        "{}",
        run.stdout
    );
    assert!(run.stderr.contains("WARN"), "{}", run.stderr);

    // Once both consumers catch up, the same check passes.
    lab.consume_decoding(DECODING_SLOT);
    lab.consume_pgoutput(PGOUTPUT_SLOT);
    lab.tool(&args).assert_code(0);
    assert_eq!(
        value(&metrics(&file), "cdc_slot_healthy", &labels),
        Some(1.0)
    );
}

#[test]
fn max_inactive_counts_from_the_state_file_and_resets_when_the_slot_moves() {
    let lab = Lab::with_cdc();
    let dir = db_tempdir("state-");
    let state = dir.path().join("state.json");
    let args = [
        "status",
        "--max-inactive",
        "2s",
        "--state-file",
        state.to_str().unwrap(),
        "--slot",
        DECODING_SLOT,
        "--output",
        "json",
    ];
    let first = lab.tool(&args);
    first.assert_code(0);
    assert_eq!(
        first.record("slot", "slot_name", DECODING_SLOT)["inactive_seconds"],
        0
    );
    assert!(state.exists());

    std::thread::sleep(Duration::from_millis(3200));
    let second = lab.tool(&args);
    second.assert_code(1);
    let slot = second.record("slot", "slot_name", DECODING_SLOT);
    assert!(slot["inactive_seconds"].as_u64().unwrap() >= 3, "{slot}");
    assert!(
        slot["problems"][0]
            .as_str()
            .unwrap()
            .contains("inactive for"),
        "{slot}"
    );

    // A consumer came by (the position moved): inactivity counts afresh.
    lab.insert_orders(100, 101);
    lab.consume_decoding(DECODING_SLOT);
    let third = lab.tool(&args);
    third.assert_code(0);
    assert_eq!(
        third.record("slot", "slot_name", DECODING_SLOT)["inactive_seconds"],
        0
    );

    // Without a state file PostgreSQL 15 cannot say; the tool warns instead of guessing.
    let blind = lab.tool(&["status", "--max-inactive", "1s"]);
    blind.assert_code(0);
    assert!(blind.stderr.contains("--state-file"), "{}", blind.stderr);
}

#[test]
fn a_slot_whose_wal_was_removed_is_reported_lost() {
    let lab = Lab::on(PgCluster::start_with(
        PgOptions::default()
            .setting("wal_level", "logical")
            .setting("max_slot_wal_keep_size", "'1MB'"),
    ));
    lab.sql("CREATE TABLE filler (x int)");
    lab.sql(&format!(
        "SELECT pg_create_logical_replication_slot('{DECODING_SLOT}', 'test_decoding')"
    ));
    for _ in 0..4 {
        lab.sql("INSERT INTO filler SELECT generate_series(1, 1000); SELECT pg_switch_wal()");
    }
    lab.cluster.psql("CHECKPOINT");
    assert_eq!(
        lab.cluster.psql(&format!(
            "SELECT wal_status FROM pg_replication_slots WHERE slot_name = '{DECODING_SLOT}'"
        )),
        "lost"
    );
    let dir = db_tempdir("metrics-");
    let file = dir.path().join("cdc_slots.prom");
    let run = lab.tool(&[
        "status",
        "--output",
        "json",
        "--metrics-file",
        file.to_str().unwrap(),
    ]);
    run.assert_code(1);
    let slot = run.record("slot", "slot_name", DECODING_SLOT);
    assert!(
        slot["problems"][0].as_str().unwrap().contains("lost"),
        "{slot}"
    );
    let samples = metrics(&file);
    assert_eq!(
        value(
            &samples,
            "cdc_slot_wal_status",
            &[("slot", DECODING_SLOT), ("wal_status", "lost")]
        ),
        Some(1.0)
    );
}

#[test]
fn unreachable_server_exits_2_and_the_metrics_say_down() {
    let dir = db_tempdir("metrics-");
    let file = dir.path().join("cdc_slots.prom");
    let mut cmd = std::process::Command::new(crate::support::tool());
    test_support::os_user::as_db_user(&mut cmd);
    cmd.env("PGHOST", "127.0.0.1")
        .env("PGPORT", test_support::free_port().to_string())
        .env("PGUSER", "postgres")
        .args(["status", "--metrics-file", file.to_str().unwrap()]);
    let run = crate::support::run(&mut cmd);
    run.assert_code(2);
    assert!(run.stderr.contains("cannot connect"), "{}", run.stderr);
    let samples = metrics(&file);
    assert_eq!(value(&samples, "cdc_slot_up", &[]), Some(0.0));
    assert_eq!(value(&samples, "cdc_slot_slots", &[]), None);
}

#[test]
fn bad_thresholds_are_usage_errors() {
    let lab = Lab::new();
    let run = lab.tool(&["status", "--max-lag-bytes", "lots"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("512MB"),
        "hint with an example: {}",
        run.stderr
    );
    let run = lab.tool(&["status", "--max-inactive", "soon"]);
    run.assert_code(2);
}

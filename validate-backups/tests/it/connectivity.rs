//! Connectivity checks against a real server and the test broker.

use std::process::Command;

use crate::support::{archiving_cluster, command, empty_repo, finish, Checks, Run};
use test_support::os_user::db_tempdir;
use test_support::pg::{PgCluster, PgOptions};

fn validate_with_pg(pg: &PgCluster, dir: &std::path::Path, extra: &[&str]) -> Run {
    let mut cmd: Command = command(&["--output", "json"]);
    cmd.arg("--backup-dir").arg(dir).args(extra).envs(pg.env());
    finish(cmd.output().unwrap())
}

#[test]
fn archiving_server_passes_and_failing_archive_command_fails() {
    let holder = db_tempdir("validate-conn-");
    let dir = holder.path().join("backups");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    test_support::os_user::give_to_db_user(&dir);
    let pg = archiving_cluster(&dir);
    pg.switch_wal_and_wait_archived();
    let metrics = holder.path().join("m.prom");
    let run = validate_with_pg(
        &pg,
        &dir,
        &[
            "--only",
            "wal,base",
            "--metrics-file",
            metrics.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.status("pg.reachable"), "pass");
    assert_eq!(
        run.status("pg.archiver"),
        "pass",
        "{}",
        run.message("pg.archiver")
    );
    assert_eq!(
        run.status("wal.continuity"),
        "pass",
        "{}",
        run.message("wal.continuity")
    );
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        text.contains("\npipeline_backup_wal_archive_failures 0\n"),
        "{text}"
    );

    // A second server whose archive_command fails.
    let broken = PgCluster::start_with(
        PgOptions::default()
            .setting("archive_mode", "on")
            .setting("archive_command", "'/bin/false'"),
    );
    broken.psql("CREATE TABLE t AS SELECT 1 AS x; SELECT pg_switch_wal()");
    for _ in 0..200 {
        if broken.psql("SELECT failed_count FROM pg_stat_archiver") != "0" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (_h, empty) = empty_repo();
    let run = validate_with_pg(&broken, &empty, &["--only", "wal"]);
    run.assert_fails("pg.archiver", "archiving is failing");
}

#[test]
fn unreachable_server_fails_reachability() {
    let (_h, dir) = empty_repo();
    let mut cmd = command(&[
        "--output",
        "json",
        "--host",
        "/nonexistent-socket-dir",
        "--port",
        "1",
    ]);
    cmd.arg("--backup-dir").arg(&dir);
    let run = finish(cmd.output().unwrap());
    run.assert_fails("pg.reachable", "host=/nonexistent-socket-dir");
    assert_eq!(run.status("slots.healthy"), "fail");
}

#[test]
fn kafka_reachability_follows_the_broker() {
    let (_h, dir) = empty_repo();
    let mut cmd = command(&["--output", "json", "--only", "kafka"]);
    cmd.arg("--backup-dir")
        .arg(&dir)
        .env("KAFKA_BOOTSTRAP_SERVERS", test_support::kafka::bootstrap());
    let run = finish(cmd.output().unwrap());
    assert_eq!(
        run.status("kafka.reachable"),
        "pass",
        "{}",
        run.message("kafka.reachable")
    );
    let mut cmd = command(&[
        "--output",
        "json",
        "--only",
        "kafka",
        "-b",
        "127.0.0.1:1",
        "-X",
        "socket.connection.setup.timeout.ms=2000",
    ]);
    cmd.arg("--backup-dir").arg(&dir);
    let run = finish(cmd.output().unwrap());
    run.assert_fails("kafka.reachable", "did not answer");
}

#[test]
fn lagging_slot_fails_slot_health() {
    let pg = PgCluster::start_with(PgOptions::default().setting("wal_level", "logical"));
    pg.psql("SELECT pg_create_logical_replication_slot('lagging', 'pgoutput')");
    pg.psql("CREATE TABLE filler AS SELECT g, md5(g::text) FROM generate_series(1, 20000) g");
    let (_h, dir) = empty_repo();
    let run = validate_with_pg(&pg, &dir, &["--only", "slots"]);
    assert_eq!(
        run.status("slots.healthy"),
        "pass",
        "{}",
        run.message("slots.healthy")
    );
    let run = validate_with_pg(&pg, &dir, &["--only", "slots", "--max-slot-lag", "1kB"]);
    run.assert_fails("slots.healthy", "exceeds --max-lag-bytes");
    pg.psql("SELECT pg_drop_replication_slot('lagging')");
}

//! What a run tells the webhook and Slack: failures of several tools, successes only when
//! asked for, a backup's set, usage errors, a terminated run, and tools run by
//! validate-backups leaving the report to it.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use test_support::run::Run;

use super::{
    assert_failure, assert_no_secret, clean, closed_port, error_of, run, silent, wal_push,
    Receivers, BOUND, PG_PASSWORD,
};
use crate::support::BIN;

#[test]
fn failed_runs_of_several_tools_reach_the_webhook_and_slack() {
    let dir = tempfile::tempdir().unwrap();
    let empty_repo = dir.path().join("repo");
    std::fs::create_dir(&empty_repo).unwrap();

    // The Kafka export waits out its metadata timeout: start it first, collect it last.
    let kafka = Receivers::new();
    let kafka_child = kafka
        .apply(&mut clean(test_support::tool_bin("kafka-topic-backup")))
        .args(["--topic", "orders", "--backup-dir"])
        .arg(&empty_repo)
        .args(["-b", &format!("127.0.0.1:{}", closed_port())])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let wal = Receivers::new();
    let missing = dir.path().join("000000010000000000000001");
    let out = run(wal.apply(&mut wal_push(&missing, &empty_repo)));
    out.assert_code(2);
    let (body, slack) = wal.one_each();
    assert_failure(&body, "wal-archive push", 2);
    assert_eq!(body["error"], error_of(&out, "wal-archive"));
    let text = slack["text"].as_str().unwrap();
    assert!(text.contains("wal-archive push failed on"), "{text}");
    assert!(text.contains("exit code 2"), "{text}");
    assert!(
        slack["blocks"].as_array().is_some_and(|b| b.len() == 3),
        "{slack}"
    );
    assert_no_secret(&[&out.stderr, &body.to_string(), &slack.to_string()]);

    let pg = Receivers::new();
    let out = run(pg
        .apply(&mut clean(test_support::tool_bin("pg-base-backup")))
        .args(["--host", "127.0.0.1", "--port", &closed_port().to_string()])
        .arg("--backup-dir")
        .arg(&empty_repo)
        .env("PGPASSWORD", PG_PASSWORD));
    out.assert_code(2);
    let (body, slack) = pg.one_each();
    assert_failure(&body, "pg-base-backup", 2);
    let error = error_of(&out, "pg-base-backup");
    assert!(error.contains("cannot connect to PostgreSQL"), "{error}");
    assert_eq!(body["error"], error);
    assert!(slack.to_string().contains("cannot connect to PostgreSQL"));
    assert_no_secret(&[&out.stderr, &body.to_string(), &slack.to_string()]);

    // A check run that finds problems is a failure, and names the failed checks.
    let checks = Receivers::new();
    let out = run(checks
        .apply(&mut clean(BIN))
        .arg("--backup-dir")
        .arg(&empty_repo)
        .args(["--require", "base"]));
    out.assert_code(1);
    let (body, slack) = checks.one_each();
    assert_failure(&body, "validate-backups", 1);
    assert_eq!(body["error"], Value::Null);
    let failed: Vec<&str> = body["failed_checks"]
        .as_array()
        .unwrap_or_else(|| panic!("no failed_checks: {body}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(!failed.is_empty(), "{body}");
    assert!(body["fail"].as_u64().unwrap() >= 1, "{body}");
    let detail = slack["blocks"][2]["text"]["text"].as_str().unwrap();
    assert!(detail.contains(failed[0]), "{detail}");

    let out = Run::from(kafka_child.wait_with_output().unwrap());
    out.assert_code(2);
    let (body, _) = kafka.one_each();
    assert_failure(&body, "kafka-topic-backup", 2);
    assert_eq!(body["error"], error_of(&out, "kafka-topic-backup"));
    assert_no_secret(&[&out.stderr, &body.to_string()]);
}

#[test]
fn successes_are_reported_only_when_always_is_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    // Private, as repo.permissions wants a repository.
    std::fs::set_permissions(repo, std::fs::Permissions::from_mode(0o700)).unwrap();

    let quiet = Receivers::new();
    run(quiet.apply(&mut clean(BIN)).arg("--backup-dir").arg(repo)).assert_code(0);
    run(quiet
        .apply(&mut clean(test_support::tool_bin("wal-archive")))
        .arg("list")
        .arg("--backup-dir")
        .arg(repo))
    .assert_code(0);
    assert!(quiet.webhook.requests().is_empty() && quiet.slack.requests().is_empty());

    let always = Receivers::new();
    let out = run(always
        .apply(&mut clean(BIN))
        .arg("--backup-dir")
        .arg(repo)
        .env("BACKUP_NOTIFY_ON", "always"));
    out.assert_code(0);
    let (body, slack) = always.one_each();
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["exit_code"], 0);
    assert_eq!(body["error"], Value::Null);
    assert_eq!(body["passed"], true, "{body}");
    assert_eq!(body["failed_checks"], serde_json::json!([]), "{body}");
    let text = slack["text"].as_str().unwrap();
    assert!(text.contains("validate-backups succeeded on"), "{text}");
}

#[test]
fn a_successful_backup_reports_its_set() {
    let pg = test_support::pg::PgCluster::start();
    let repo = test_support::os_user::db_tempdir("notify-repo-");
    let receivers = Receivers::new();
    let mut cmd = pg.command(test_support::tool_bin("pg-base-backup"));
    for var in [
        "BACKUP_NOTIFY_PARENT",
        "http_proxy",
        "HTTP_PROXY",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    receivers
        .apply(&mut cmd)
        .env("BACKUP_NOTIFY_ON", "always")
        .arg("--backup-dir")
        .arg(repo.path())
        .args(["--output", "json"]);
    let out = run(&mut cmd);
    out.assert_code(0);
    let summary = out.summary();
    let (body, slack) = receivers.one_each();
    assert_eq!(body["tool"], "pg-base-backup");
    assert_eq!(body["status"], "success");
    assert_eq!(body["set_id"], summary["id"], "{body}");
    assert_eq!(body["bytes"], summary["bytes"], "{body}");
    assert_eq!(body["start_lsn"], summary["start_lsn"], "{body}");
    let id = summary["id"].as_str().unwrap();
    assert!(slack.to_string().contains(id), "{slack}");
}

#[test]
fn tools_run_by_validate_backups_leave_the_report_to_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let receivers = Receivers::new();
    // slots.healthy runs `cdc-slot-tool status`, which fails here too (and would report a
    // failure of its own, rate-limited but the first one sent) were it not kept quiet.
    let out = run(receivers
        .apply(&mut clean(BIN))
        .arg("--backup-dir")
        .arg(dir.path())
        .args(["--host", "127.0.0.1", "--port", &closed_port().to_string()]));
    out.assert_code(1);
    let (body, _) = receivers.one_each();
    assert_eq!(body["tool"], "validate-backups");
    let failed = body["failed_checks"].to_string();
    assert!(
        failed.contains("pg.reachable") && failed.contains("slots.healthy"),
        "{body}"
    );

    let missing = dir.path().join("000000010000000000000007");
    run(receivers
        .apply(&mut wal_push(&missing, dir.path()))
        .env("BACKUP_NOTIFY_PARENT", "validate-backups"))
    .assert_code(2);
    assert_eq!(receivers.webhook.requests().len(), 1);
}

#[test]
fn usage_errors_are_reported_and_help_is_not() {
    let receivers = Receivers::new();
    let wal_archive = test_support::tool_bin("wal-archive");
    run(receivers.apply(&mut clean(&wal_archive)).arg("--help")).assert_code(0);
    assert!(receivers.webhook.requests().is_empty());

    // A mistyped archive_command fails before the tool knows its subcommand.
    let out = run(receivers
        .apply(&mut clean(&wal_archive))
        .args(["psuh", "pg_wal/000000010000000000000001"]));
    out.assert_code(2);
    let (body, _) = receivers.one_each();
    assert_failure(&body, "wal-archive", 2);
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("psuh"), "{error}");
}

#[test]
fn a_terminated_run_still_reports() {
    // A "server" that accepts and never answers keeps pg-base-backup waiting.
    let hung_server = silent();
    let port = hung_server.port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let receivers = Receivers::new();
    let child = receivers
        .apply(&mut clean(test_support::tool_bin("pg-base-backup")))
        .args(["--host", "127.0.0.1", "--port", &port])
        .arg("--backup-dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let started = Instant::now();
    let out = test_support::process::signal_and_wait(child, "TERM");
    assert!(started.elapsed() < BOUND);
    out.assert_interrupted("pg-base-backup", "TERM");
    let (body, _) = receivers.one_each();
    assert_failure(&body, "pg-base-backup", 143);
    assert_eq!(body["error"], "interrupted by SIGTERM");
}

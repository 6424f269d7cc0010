//! Delivery that must not get in the way: receivers down or hung change nothing and take
//! bounded time; `wal-archive push` failures are rate-limited.

use std::process::Command;
use std::time::Instant;

use super::{
    assert_no_secret, clean, closed_port, run, silent, wal_push, Receivers, BOUND, SMTP_PASSWORD,
    TOKEN,
};

#[test]
fn receivers_down_or_hung_change_nothing_and_take_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("000000010000000000000003");
    let baseline = run(&mut wal_push(&missing, dir.path()));
    baseline.assert_code(2);

    let (hung_slack, hung_smtp) = (silent(), silent());
    let state = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = run(wal_push(&missing, dir.path())
        .env(
            "BACKUP_NOTIFICATION_WEBHOOK",
            format!("http://127.0.0.1:{}/hook/{TOKEN}", closed_port()),
        )
        .env(
            "SLACK_WEBHOOK_URL",
            hung_slack.url(&format!("services/{TOKEN}")),
        )
        .env("BACKUP_EMAIL_RECIPIENT", "ops@example.com")
        .env("SMTP_HOST", "127.0.0.1")
        .env("SMTP_PORT", hung_smtp.port().to_string())
        .env("SMTP_PASSWORD", SMTP_PASSWORD)
        .env("SMTP_USERNAME", "backup")
        .env("XDG_STATE_HOME", state.path()));
    let took = started.elapsed();
    assert!(took < BOUND, "took {took:?}");
    assert_eq!(out.code, baseline.code);
    assert_eq!(out.stdout, baseline.stdout);
    assert_eq!(
        out.error_line("wal-archive"),
        baseline.error_line("wal-archive")
    );
    let warnings: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("notification not sent"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", out.stderr);
    for channel in [
        "webhook (127.0.0.1:",
        "slack (127.0.0.1:",
        "email (127.0.0.1:",
    ] {
        assert!(warnings[0].contains(channel), "{}", warnings[0]);
    }
    assert_no_secret(&[&out.stderr]);

    // A run with data on stdout: the same bytes, whatever the receivers do.
    let list = |cmd: &mut Command| {
        run(cmd
            .arg("list")
            .arg("--backup-dir")
            .arg(dir.path())
            .args(["--output", "json"]))
    };
    let wal_archive = test_support::tool_bin("wal-archive");
    let baseline = list(&mut clean(&wal_archive));
    let started = Instant::now();
    let out = list(clean(&wal_archive).env("BACKUP_NOTIFY_ON", "always").env(
        "SLACK_WEBHOOK_URL",
        hung_slack.url(&format!("services/{TOKEN}")),
    ));
    assert!(started.elapsed() < BOUND);
    assert_eq!((out.code, &out.stdout), (baseline.code, &baseline.stdout));
}

#[test]
fn wal_archive_push_failures_are_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("000000010000000000000004");
    let receivers = Receivers::new();
    for _ in 0..2 {
        run(receivers.apply(&mut wal_push(&missing, dir.path()))).assert_code(2);
    }
    assert_eq!(
        receivers.webhook.requests().len(),
        1,
        "one message per window"
    );
    assert_eq!(receivers.slack.requests().len(), 1);
    assert!(receivers.webhook.requests()[0]
        .json()
        .get("suppressed_failures")
        .is_none());

    // Past the window, the next message says how many were held back.
    run(receivers
        .apply(&mut wal_push(&missing, dir.path()))
        .env("BACKUP_NOTIFY_INTERVAL", "0s"))
    .assert_code(2);
    let hooks = receivers.webhook.requests();
    assert_eq!(hooks.len(), 2);
    assert_eq!(hooks[1].json()["suppressed_failures"], 1);
}

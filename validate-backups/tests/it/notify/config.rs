//! Setting notifications up: `--notify-test` on every channel, and the config file (which
//! must be private).

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use test_support::notify::{Answer, SmtpReceiver};

use super::{
    assert_no_secret, clean, error_of, mail_env, readable, run, wal_push, Receivers, TOKEN,
};
use crate::support::BIN;

#[test]
fn notify_test_proves_every_channel() {
    let none = run(clean(BIN).arg("--notify-test"));
    none.assert_code(2);
    assert!(
        error_of(&none, "validate-backups").contains("no notification channel configured"),
        "{}",
        none.stderr
    );

    let smtp = SmtpReceiver::start();
    let receivers = Receivers::new();
    let out = run(mail_env(receivers.apply(&mut clean(BIN)), &smtp).arg("--notify-test"));
    out.assert_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(
        lines.iter().all(|l| l.starts_with("sent ")),
        "{}",
        out.stdout
    );
    let (body, slack) = receivers.one_each();
    assert_eq!(body["status"], "test");
    assert_eq!(body["tool"], "validate-backups --notify-test");
    assert!(slack["text"]
        .as_str()
        .unwrap()
        .contains("test notification"));
    let mails = smtp.wait_for(1, Duration::from_secs(5));
    assert!(readable(&mails[0]).contains("Subject: [pipeline-backup] TEST: "));
    assert_no_secret(&[&out.stdout, &out.stderr]);

    // Slack refuses: exit 2, naming the channel (by host only) and its answer.
    let refusing = Receivers::answering(Answer::Status(200), Answer::Status(500));
    let out = run(refusing
        .apply(&mut clean(BIN))
        .args(["--notify-test", "--output", "json"]));
    out.assert_code(2);
    let error = error_of(&out, "validate-backups");
    assert!(
        error.contains(&format!(
            "slack (127.0.0.1:{}): HTTP 500",
            refusing.slack.port()
        )),
        "{error}"
    );
    assert!(!error.contains("webhook"), "{error}");
    let summary = out.summary();
    assert_eq!(summary["sent"], 1);
    assert_no_secret(&[&out.stdout, &out.stderr]);

    let bad = run(receivers
        .apply(&mut clean(BIN))
        .env("BACKUP_NOTIFY_ON", "sometimes")
        .arg("--notify-test"));
    bad.assert_code(2);
    assert!(bad.stderr.contains("BACKUP_NOTIFY_ON"), "{}", bad.stderr);
}

#[test]
fn a_config_file_configures_notifications_and_must_be_private() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("000000010000000000000006");
    let receivers = Receivers::new();
    let file = dir.path().join("env");
    std::fs::write(
        &file,
        format!(
            "# notifications\nexport BACKUP_NOTIFICATION_WEBHOOK='{}'\nBACKUP_NOTIFY_INTERVAL=0s\n",
            receivers.webhook.url(&format!("hook/{TOKEN}"))
        ),
    )
    .unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config_arg = format!("--config={}", file.display());

    let out = run(wal_push(&missing, dir.path())
        .arg(&config_arg)
        .env("XDG_STATE_HOME", receivers.state.path()));
    out.assert_code(2);
    assert_eq!(receivers.webhook.requests().len(), 1);

    // Named by the environment instead; and a variable of the environment wins over the
    // file's (an interval of 1h holds the next message back).
    let named_by_env = |interval: Option<&str>| {
        let mut cmd = wal_push(&missing, dir.path());
        cmd.env("PIPELINE_BACKUP_CONFIG", &file)
            .env("XDG_STATE_HOME", receivers.state.path());
        if let Some(interval) = interval {
            cmd.env("BACKUP_NOTIFY_INTERVAL", interval);
        }
        run(&mut cmd).assert_code(2);
    };
    named_by_env(None);
    assert_eq!(receivers.webhook.requests().len(), 2);
    named_by_env(Some("1h"));
    assert_eq!(
        receivers.webhook.requests().len(),
        2,
        "held back: the environment's 1h"
    );

    // Readable by others, a file with a webhook URL is refused before anything runs.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(wal_push(&missing, dir.path()).arg(&config_arg));
    out.assert_code(2);
    let line = out.error_line("wal-archive");
    assert!(
        line.contains(&file.display().to_string())
            && line.contains("BACKUP_NOTIFICATION_WEBHOOK")
            && line.contains("644"),
        "{line}"
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert_no_secret(&[&out.stderr]);
    assert_eq!(receivers.webhook.requests().len(), 2);

    let out = run(wal_push(&missing, dir.path()).arg("--config=/nonexistent/pipeline-backup.env"));
    out.assert_code(2);
    assert!(out
        .error_line("wal-archive")
        .contains("/nonexistent/pipeline-backup.env"));
}

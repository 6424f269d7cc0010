//! Notifications from real runs of the tools, received by real servers on 127.0.0.1: an HTTP
//! server standing in for the webhook and Slack, aiosmtpd for mail. Failed and successful
//! runs, the rate limit of `wal-archive push`, receivers that are down or hang, SIGTERM,
//! `--notify-test`, the config file, and no secret anywhere.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;
use test_support::notify::{Answer, HttpReceiver, Mail, SmtpReceiver};
use test_support::run::Run;

use crate::support::BIN;

/// Stands for the secret part of a webhook URL.
const TOKEN: &str = "T0KEN-c0ffee-5ecret-path";
const SMTP_PASSWORD: &str = "smtp-pa55word-xyz";
const PG_PASSWORD: &str = "pg-pa55word-xyz";
/// Longest a failed run may take with every receiver down or hung: the 5 s notification
/// limit, plus the run itself and a slow machine.
const BOUND: Duration = Duration::from_secs(9);

/// A command for `program` with nothing of the caller's environment that could change it.
fn clean(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for var in [
        "BACKUP_NOTIFICATION_WEBHOOK",
        "SLACK_WEBHOOK_URL",
        "BACKUP_EMAIL_RECIPIENT",
        "SMTP_HOST",
        "SMTP_PORT",
        "SMTP_USERNAME",
        "SMTP_PASSWORD",
        "SMTP_FROM",
        "SMTP_TLS",
        "BACKUP_NOTIFY_ON",
        "BACKUP_NOTIFY_INTERVAL",
        "BACKUP_NOTIFY_PARENT",
        "PIPELINE_BACKUP_CONFIG",
        "XDG_STATE_HOME",
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "RUST_LOG",
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGDATABASE",
        "PGPASSWORD",
        "BACKUP_DIR",
        "KAFKA_BOOTSTRAP_SERVERS",
        "KAFKA_CLIENT_CONFIG",
    ] {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// A webhook and a Slack receiver, and a private state directory for the rate limit.
struct Receivers {
    webhook: HttpReceiver,
    slack: HttpReceiver,
    state: TempDir,
}

impl Receivers {
    fn new() -> Receivers {
        Receivers::answering(Answer::Status(200), Answer::Status(200))
    }

    fn answering(webhook: Answer, slack: Answer) -> Receivers {
        Receivers {
            webhook: HttpReceiver::start(webhook),
            slack: HttpReceiver::start(slack),
            state: tempfile::tempdir().unwrap(),
        }
    }

    /// Points `cmd` at both receivers, with the token in their paths.
    fn apply<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        cmd.env(
            "BACKUP_NOTIFICATION_WEBHOOK",
            self.webhook.url(&format!("hook/{TOKEN}")),
        )
        .env(
            "SLACK_WEBHOOK_URL",
            self.slack.url(&format!("services/{TOKEN}")),
        )
        .env("XDG_STATE_HOME", self.state.path())
    }

    /// The one webhook body and the one Slack message of a run.
    fn one_each(&self) -> (Value, Value) {
        let hooks = self.webhook.requests();
        let slacks = self.slack.requests();
        assert_eq!(hooks.len(), 1, "webhook requests: {hooks:?}");
        assert_eq!(slacks.len(), 1, "slack requests: {slacks:?}");
        assert_eq!(hooks[0].method, "POST");
        assert_eq!(hooks[0].path, format!("/hook/{TOKEN}"));
        assert_eq!(hooks[0].header("content-type"), Some("application/json"));
        (hooks[0].json(), slacks[0].json())
    }
}

fn run(cmd: &mut Command) -> Run {
    Run::from(
        cmd.output()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}")),
    )
}

/// Asserts that no secret appears in any of `texts`.
fn assert_no_secret(texts: &[&str]) {
    for text in texts {
        for secret in [TOKEN, SMTP_PASSWORD, PG_PASSWORD] {
            assert!(!text.contains(secret), "secret {secret} leaked in:\n{text}");
        }
    }
}

/// The error line of `tool` on stderr, without the `<tool>: ` prefix.
fn error_of(run: &Run, tool: &str) -> String {
    run.error_line(tool)
        .strip_prefix(&format!("{tool}: "))
        .unwrap()
        .to_string()
}

fn assert_failure(body: &Value, tool: &str, code: i32) {
    assert_eq!(body["type"], "notification", "{body}");
    assert_eq!(body["tool"], tool, "{body}");
    assert_eq!(body["status"], "failure", "{body}");
    assert_eq!(body["exit_code"], code, "{body}");
    assert!(
        body["host"].as_str().is_some_and(|h| !h.is_empty()),
        "{body}"
    );
    assert!(body["duration_s"].as_f64().is_some(), "{body}");
    assert!(body["time"].as_str().is_some(), "{body}");
}

fn wal_push(missing: &Path, backup_dir: &Path) -> Command {
    let mut cmd = clean(test_support::tool_bin("wal-archive"));
    cmd.arg("push")
        .arg(missing)
        .arg("--backup-dir")
        .arg(backup_dir);
    cmd
}

/// A listener that accepts connections and never answers (a hung server).
fn silent() -> HttpReceiver {
    HttpReceiver::start(Answer::Silent)
}

fn closed_port() -> u16 {
    test_support::free_port()
}

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

/// Unfolded headers and a decoded (quoted-printable) body.
fn readable(mail: &Mail) -> String {
    let unfolded = mail.data.replace("\r\n", "\n").replace("\n ", " ");
    let soft = unfolded.replace("=\n", "");
    let mut out = String::new();
    let mut rest = soft.as_str();
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        let hex = rest.get(at + 1..at + 3).unwrap_or("");
        match u8::from_str_radix(hex, 16) {
            Ok(byte) if hex.len() == 2 => {
                out.push(byte as char);
                rest = &rest[at + 3..];
            }
            _ => {
                out.push('=');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn mail_env<'c>(cmd: &'c mut Command, smtp: &SmtpReceiver) -> &'c mut Command {
    cmd.env("BACKUP_EMAIL_RECIPIENT", "ops@example.com")
        .env("SMTP_HOST", "127.0.0.1")
        .env("SMTP_PORT", smtp.port.to_string())
        .env("SMTP_FROM", "Backups <backups@example.com>")
}

#[test]
fn mail_reaches_a_real_smtp_server() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("000000010000000000000002");
    let state = tempfile::tempdir().unwrap();

    let smtp = SmtpReceiver::start();
    let out = run(mail_env(&mut wal_push(&missing, dir.path()), &smtp)
        .env("XDG_STATE_HOME", state.path().join("a")));
    out.assert_code(2);
    let mails = smtp.wait_for(1, Duration::from_secs(5));
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, ["ops@example.com"]);
    assert_eq!(mails[0].from, "backups@example.com");
    let text = readable(&mails[0]);
    assert!(
        text.contains("Subject: [pipeline-backup] FAILED: wal-archive push on "),
        "{text}"
    );
    let error = error_of(&out, "wal-archive");
    assert!(text.contains(&format!("Error: {error}")), "{error}\n{text}");

    // AUTH where the operator allowed plain text: the password works and shows nowhere.
    let smtp = SmtpReceiver::with_login("backup", SMTP_PASSWORD);
    let out = run(mail_env(&mut wal_push(&missing, dir.path()), &smtp)
        .env("SMTP_USERNAME", "backup")
        .env("SMTP_PASSWORD", SMTP_PASSWORD)
        .env("SMTP_TLS", "off")
        .env("XDG_STATE_HOME", state.path().join("b")));
    out.assert_code(2);
    let mails = smtp.wait_for(1, Duration::from_secs(5));
    assert_eq!(mails.len(), 1, "stderr: {}", out.stderr);
    assert_eq!(mails[0].login.as_deref(), Some("backup"));
    assert_no_secret(&[&mails[0].data, &out.stderr, &out.stdout]);

    // The same server offers no STARTTLS: by default the password is not sent in clear.
    let out = run(mail_env(&mut wal_push(&missing, dir.path()), &smtp)
        .env("SMTP_USERNAME", "backup")
        .env("SMTP_PASSWORD", SMTP_PASSWORD)
        .env("XDG_STATE_HOME", state.path().join("c")));
    out.assert_code(2);
    assert_eq!(smtp.mails().len(), 1, "no second mail");
    let warning: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("notification not sent"))
        .collect();
    assert_eq!(warning.len(), 1, "{}", out.stderr);
    assert!(
        warning[0].contains(&format!("email (127.0.0.1:{})", smtp.port))
            && warning[0].contains("not sending SMTP_PASSWORD unencrypted"),
        "{}",
        warning[0]
    );
    assert_no_secret(&[&out.stderr]);
}

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

//! Notifications from real runs of the tools, received by real servers on 127.0.0.1: an HTTP
//! server standing in for the webhook and Slack, aiosmtpd for mail. Split by what a test
//! looks at; the receivers, commands and assertions they share live here.

mod config;
mod delivery;
mod smtp;
mod webhook;

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;
use test_support::notify::{Answer, HttpReceiver, Mail, SmtpReceiver};
use test_support::run::Run;

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
    for var in common::notify::VARIABLES.into_iter().chain([
        "PIPELINE_BACKUP_CONFIG",
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
    ]) {
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

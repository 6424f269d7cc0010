//! Notifications: every tool tells a webhook, Slack or a mailbox how a run ended.
//!
//! Configured by the environment only (after the config file): `BACKUP_NOTIFICATION_WEBHOOK`
//! (a JSON POST: the summary record plus tool, host, status, exit code, duration, error line),
//! `SLACK_WEBHOOK_URL` (an incoming-webhook message), `BACKUP_EMAIL_RECIPIENT` with `SMTP_*`
//! (a plain-text mail). `BACKUP_NOTIFY_ON=failure` (the default) reports runs that exit with
//! anything but 0; `always` reports successes too.
//!
//! [`crate::entry`] arms this before the run, reports from [`crate::entry::finish`], and the
//! SIGINT/SIGTERM watcher reports an interruption before it exits. A notification never
//! changes the run's outcome: every channel is sent to at once, the whole takes at most
//! [`FINISH_LIMIT`] ([`SIGNAL_LIMIT`] after a signal, within Kubernetes' grace period), and a
//! failure to notify is one warning line on stderr. Nothing is written to stdout.
//!
//! A tool picks its [`Policy`] per run: `wal-archive push` and `cdc-slot-tool status` and
//! `heartbeat` (run every minute or few) report failures only, at most one per
//! `BACKUP_NOTIFY_INTERVAL` ([`limit`]); `wal-archive fetch` never (a missing file is its
//! normal answer to PostgreSQL); validate-backups keeps the tools it runs on throwaway data
//! quiet ([`crate::env::BACKUP_NOTIFY_PARENT`]) and reports their outcome itself.

mod config;
mod http;
pub mod limit;
mod mail;
mod message;

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

pub use config::{Channel, MailSettings, NotifyOn, SettingError, Settings, SmtpTls};
pub use message::{host_name, Outcome, Report};

use crate::env;

/// Every variable that configures notifications (channels, when, rate limit, quiet
/// children): what a caller clears to start a tool with none configured.
pub const VARIABLES: [&str; 13] = [
    env::BACKUP_NOTIFICATION_WEBHOOK,
    env::SLACK_WEBHOOK_URL,
    env::BACKUP_EMAIL_RECIPIENT,
    env::SMTP_HOST,
    env::SMTP_PORT,
    env::SMTP_USERNAME,
    env::SMTP_PASSWORD,
    env::SMTP_FROM,
    env::SMTP_TLS,
    env::BACKUP_NOTIFY_ON,
    env::BACKUP_NOTIFY_INTERVAL,
    env::BACKUP_NOTIFY_PARENT,
    env::XDG_STATE_HOME,
];

/// Longest time a finished run spends notifying.
pub const FINISH_LIMIT: Duration = Duration::from_secs(5);
/// Longest time an interrupted run spends notifying (SIGTERM gives 30 s by default).
pub const SIGNAL_LIMIT: Duration = Duration::from_secs(3);

/// Which runs of a tool report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum When {
    /// As `BACKUP_NOTIFY_ON` says.
    #[default]
    Configured,
    /// Failures only, at most one per `BACKUP_NOTIFY_INTERVAL` per host ([`limit`]).
    FailuresRateLimited,
    /// Never.
    Never,
}

/// How one run of a tool notifies; a tool's `ToolArgs::notify_policy` picks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy {
    pub when: When,
    /// The tools this run starts (and PostgreSQL servers it starts, with their
    /// archive_command) send nothing: this run reports for them.
    pub quiet_children: bool,
}

impl Policy {
    pub const CONFIGURED: Policy = Policy {
        when: When::Configured,
        quiet_children: false,
    };
    pub const FAILURES_RATE_LIMITED: Policy = Policy {
        when: When::FailuresRateLimited,
        quiet_children: false,
    };
    pub const NEVER: Policy = Policy {
        when: When::Never,
        quiet_children: false,
    };

    /// The same, with the tools this run starts kept quiet.
    pub const fn with_quiet_children(self) -> Policy {
        Policy {
            quiet_children: true,
            ..self
        }
    }
}

/// A run that will report when it ends.
struct Armed {
    tool: String,
    when: When,
    started: Instant,
    settings: Settings,
}

static ARMED: Mutex<Option<Armed>> = Mutex::new(None);
/// True while a report is being sent: the signal watcher waits for it rather than cut it off.
static SENDING: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());

/// Prepares the report of this run of `tool` (e.g. `wal-archive push`). Reads the settings;
/// unusable ones are one warning. Call before any thread starts: with `quiet_children` it
/// sets [`env::BACKUP_NOTIFY_PARENT`] for the processes this run starts.
pub fn arm(tool: &str, policy: Policy, started: Instant) {
    if let Some(parent) = std::env::var_os(env::BACKUP_NOTIFY_PARENT).filter(|p| !p.is_empty()) {
        tracing::debug!(
            "notifications left to {} ({})",
            parent.to_string_lossy(),
            env::BACKUP_NOTIFY_PARENT
        );
        return;
    }
    if policy.quiet_children {
        std::env::set_var(env::BACKUP_NOTIFY_PARENT, tool);
    }
    if policy.when == When::Never {
        return;
    }
    let (settings, errors) = Settings::from_env();
    if !errors.is_empty() {
        let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
        tracing::warn!("notification settings ignored: {}", list.join("; "));
    }
    if settings.channels.is_empty() {
        return;
    }
    *lock(&ARMED) = Some(Armed {
        tool: tool.to_string(),
        when: policy.when,
        started,
        settings,
    });
}

/// Reports the end of the armed run (from [`crate::entry::finish`]): its exit code, its
/// error line, and the summary it printed. Returns within [`FINISH_LIMIT`].
pub fn finished(exit_code: u8, error: Option<&str>) {
    report(exit_code, error, FINISH_LIMIT);
}

/// Reports an interruption (from the signal watcher), within [`SIGNAL_LIMIT`]. When the
/// report of the run's end is already on its way, waits for that instead.
pub fn interrupted(exit_code: u8, error: &str) {
    if !report(exit_code, Some(error), SIGNAL_LIMIT) {
        let (sending, done) = &SENDING;
        let guard = lock(sending);
        let _ = done.wait_timeout_while(guard, SIGNAL_LIMIT, |busy| *busy);
    }
}

/// Sends the report if one is armed and due; false when nothing was armed (any more).
fn report(exit_code: u8, error: Option<&str>, limit: Duration) -> bool {
    let armed = {
        let mut slot = lock(&ARMED);
        let Some(armed) = slot.take() else {
            return false;
        };
        // Marked while the slot is still held: the watcher never sees neither.
        *lock(&SENDING.0) = true;
        armed
    };
    let outcome = Outcome::from_exit_code(exit_code);
    let suppressed = match due(&armed, outcome) {
        Some(suppressed) => suppressed,
        None => {
            finish_sending();
            return true;
        }
    };
    let mut report = Report::new(
        &armed.tool,
        outcome,
        exit_code,
        armed.started.elapsed(),
        error,
        crate::output::last_summary(),
    );
    report.suppressed = suppressed;
    let failed: Vec<String> = deliver(&armed.settings.channels, report, limit)
        .into_iter()
        .filter_map(|d| d.result.err().map(|e| format!("{}: {e}", d.channel)))
        .collect();
    if !failed.is_empty() {
        tracing::warn!("notification not sent: {}", failed.join("; "));
    }
    finish_sending();
    true
}

fn finish_sending() {
    let (sending, done) = &SENDING;
    *lock(sending) = false;
    done.notify_all();
}

/// Whether this outcome is reported, and how many held-back failures to mention.
fn due(armed: &Armed, outcome: Outcome) -> Option<u64> {
    let failed = outcome == Outcome::Failure;
    match armed.when {
        When::Never => None,
        When::Configured => (failed || armed.settings.on == NotifyOn::Always).then_some(0),
        When::FailuresRateLimited if !failed => None,
        When::FailuresRateLimited => {
            let claimed = limit::state_dir().and_then(|dir| {
                limit::claim(
                    &dir,
                    &armed.tool,
                    armed.settings.interval,
                    SystemTime::now(),
                )
            });
            match claimed {
                Ok(limit::Decision::Send { suppressed }) => Some(suppressed),
                Ok(limit::Decision::Hold) => {
                    tracing::debug!(
                        "notification held back: one was sent less than {} ago",
                        humantime::format_duration(armed.settings.interval)
                    );
                    None
                }
                // Without the state a flood is possible, but a failure must not go unheard.
                Err(e) => {
                    tracing::debug!("notification rate limit unavailable: {e}");
                    Some(0)
                }
            }
        }
    }
}

/// Why one channel's message did not go out, in one line. It may hold a secret (a server's
/// answer quoting it): [`deliver`] redacts it into [`Delivery::result`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SendError(pub String);

impl From<String> for SendError {
    fn from(text: String) -> SendError {
        SendError(text)
    }
}

impl From<&str> for SendError {
    fn from(text: &str) -> SendError {
        SendError(text.to_string())
    }
}

/// What became of one channel's message.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The channel, described without secrets (`slack (hooks.slack.com)`).
    pub channel: String,
    /// `Err` holds one line, secrets removed.
    pub result: Result<(), String>,
}

/// Sends `report` to every channel at once and waits at most `limit` for all of them; a
/// channel that has not answered by then is reported as such and left behind.
pub fn deliver(channels: &[Channel], report: Report, limit: Duration) -> Vec<Delivery> {
    let deadline = Instant::now() + limit;
    let report = Arc::new(report);
    let (tx, rx) = std::sync::mpsc::channel();
    for (index, channel) in channels.iter().enumerate() {
        let (to_main, channel, report) = (tx.clone(), channel.clone(), Arc::clone(&report));
        let spawned = std::thread::Builder::new()
            .name("notify".into())
            .spawn(move || {
                let _ = to_main.send((index, send(&channel, &report, limit)));
            });
        if let Err(e) = spawned {
            let _ = tx.send((index, Err(SendError(format!("cannot start a thread: {e}")))));
        }
    }
    drop(tx);
    let mut results: Vec<Option<Result<(), SendError>>> = vec![None; channels.len()];
    while results.iter().any(Option::is_none) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((index, result)) => results[index] = Some(result),
            Err(_) => break,
        }
    }
    let secrets = message::secrets_of(std::env::vars());
    channels
        .iter()
        .zip(results)
        .map(|(channel, result)| Delivery {
            channel: channel.describe(),
            result: match result {
                Some(Ok(())) => Ok(()),
                Some(Err(SendError(e))) => Err(message::redact(&e, &secrets)),
                None => Err(format!("no answer within {}s", limit.as_secs())),
            },
        })
        .collect()
}

fn send(channel: &Channel, report: &Report, limit: Duration) -> Result<(), SendError> {
    match channel {
        Channel::Webhook(url) => http::post_json(url, &report.webhook_json(), limit),
        Channel::Slack(url) => http::post_json(url, &report.slack_json(), limit),
        Channel::Email(mail) => mail::send(mail, report, limit),
    }
}

/// Why `--notify-test` could not send.
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    #[error(
        "no notification channel configured: set {}, {} or {} with {}",
        env::BACKUP_NOTIFICATION_WEBHOOK,
        env::SLACK_WEBHOOK_URL,
        env::BACKUP_EMAIL_RECIPIENT,
        env::SMTP_HOST
    )]
    NoChannel,
    #[error("unusable notification settings: {}", list(.0))]
    Settings(Vec<SettingError>),
}

fn list(errors: &[SettingError]) -> String {
    let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
    list.join("; ")
}

/// Sends one test message from `tool` to every configured channel (`--notify-test`).
pub fn send_test(tool: &str) -> Result<Vec<Delivery>, TestError> {
    let (settings, errors) = Settings::from_env();
    if !errors.is_empty() {
        return Err(TestError::Settings(errors));
    }
    if settings.channels.is_empty() {
        return Err(TestError::NoChannel);
    }
    let report = Report::new(tool, Outcome::Test, 0, Duration::ZERO, None, None);
    Ok(deliver(&settings.channels, report, FINISH_LIMIT))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn armed(when: When, on: NotifyOn) -> Armed {
        Armed {
            tool: "t".into(),
            when,
            started: Instant::now(),
            settings: Settings {
                on,
                ..Settings::default()
            },
        }
    }

    #[test]
    fn which_outcomes_are_reported() {
        let failure = Outcome::Failure;
        let success = Outcome::Success;
        assert_eq!(
            due(&armed(When::Configured, NotifyOn::Failure), failure),
            Some(0)
        );
        assert_eq!(
            due(&armed(When::Configured, NotifyOn::Failure), success),
            None
        );
        assert_eq!(
            due(&armed(When::Configured, NotifyOn::Always), success),
            Some(0)
        );
        assert_eq!(due(&armed(When::Never, NotifyOn::Always), failure), None);
        assert_eq!(
            due(&armed(When::FailuresRateLimited, NotifyOn::Always), success),
            None
        );
    }

    #[test]
    fn an_unanswered_channel_is_given_up_on_time() {
        // A listener that accepts and never answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://{}/hook/abcdefghijkl",
            listener.local_addr().unwrap()
        );
        let channels = vec![Channel::Webhook(url.parse().unwrap())];
        let report = Report::new("t", Outcome::Failure, 2, Duration::ZERO, Some("x"), None);
        let started = Instant::now();
        let results = deliver(&channels, report, Duration::from_millis(700));
        assert!(started.elapsed() < Duration::from_secs(3));
        let error = results[0].result.clone().unwrap_err();
        assert!(!error.contains("abcdefghijkl"), "{error}");
        assert!(results[0].channel.starts_with("webhook (127.0.0.1:"));
    }
}

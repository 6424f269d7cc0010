//! The notification settings, read from the environment: which channels, when, how often.
//!
//! Nothing here is printed whole: a channel describes itself by kind and host only, because
//! webhook URLs carry their token in the path and SMTP settings carry a password.

use std::fmt;
use std::time::Duration;

use lettre::message::Mailbox;
use reqwest::Url;

use crate::env;

/// Default shortest time between two rate-limited notifications (`BACKUP_NOTIFY_INTERVAL`).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// Which outcomes are reported (`BACKUP_NOTIFY_ON`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NotifyOn {
    /// Failures only: any exit code but 0.
    #[default]
    Failure,
    /// Successes too.
    Always,
}

/// How mail travels to `SMTP_HOST` (`SMTP_TLS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SmtpTls {
    /// STARTTLS when the server offers it; credentials are then sent only if it did.
    #[default]
    Opportunistic,
    /// STARTTLS, or nothing is sent.
    Required,
    /// TLS from the first byte (SMTPS, port 465).
    Wrapper,
    /// Plain text, credentials included.
    Off,
}

impl SmtpTls {
    fn default_port(self) -> u16 {
        match self {
            SmtpTls::Wrapper => 465,
            SmtpTls::Required => 587,
            SmtpTls::Opportunistic | SmtpTls::Off => 25,
        }
    }
}

/// A mail server and what to send through it.
#[derive(Clone)]
pub struct MailSettings {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// User name and password for SMTP AUTH.
    pub credentials: Option<(String, String)>,
    pub from: Mailbox,
    pub to: Vec<Mailbox>,
}

/// One place notifications go to.
#[derive(Clone)]
pub enum Channel {
    /// `BACKUP_NOTIFICATION_WEBHOOK`: a JSON POST.
    Webhook(Url),
    /// `SLACK_WEBHOOK_URL`: a Slack incoming-webhook message.
    Slack(Url),
    /// `BACKUP_EMAIL_RECIPIENT` through `SMTP_HOST`: a plain-text mail.
    Email(Box<MailSettings>),
}

impl Channel {
    /// What logs and `--notify-test` show: the kind and the host, never a path or password.
    pub fn describe(&self) -> String {
        match self {
            Channel::Webhook(url) => format!("webhook ({})", host_of(url)),
            Channel::Slack(url) => format!("slack ({})", host_of(url)),
            Channel::Email(mail) => format!("email ({}:{})", mail.host, mail.port),
        }
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// A URL's host (and port when not the default), for logs.
pub fn host_of(url: &Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// Everything the environment says about notifications.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub on: NotifyOn,
    pub interval: Duration,
    pub channels: Vec<Channel>,
}

/// A notification variable that could not be used; its channel is left out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {problem}")]
pub struct SettingError {
    pub var: &'static str,
    pub problem: String,
}

fn problem(var: &'static str, problem: impl Into<String>) -> SettingError {
    SettingError {
        var,
        problem: problem.into(),
    }
}

impl Settings {
    /// Reads the environment. Unusable variables are returned beside the settings, which
    /// keep every channel that is usable.
    pub fn from_env() -> (Settings, Vec<SettingError>) {
        Settings::from_lookup(&|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    }

    /// [`Settings::from_env`] over any lookup of variables (unset or blank: `None`).
    pub fn from_lookup(var: &dyn Fn(&str) -> Option<String>) -> (Settings, Vec<SettingError>) {
        let mut errors = Vec::new();
        let mut settings = Settings {
            interval: DEFAULT_INTERVAL,
            ..Settings::default()
        };
        match var(env::BACKUP_NOTIFY_ON).as_deref().map(str::trim) {
            None | Some("failure") => {}
            Some("always") => settings.on = NotifyOn::Always,
            Some(other) => errors.push(problem(
                env::BACKUP_NOTIFY_ON,
                format!("expected failure or always, got '{other}'"),
            )),
        }
        if let Some(text) = var(env::BACKUP_NOTIFY_INTERVAL) {
            match humantime::parse_duration(text.trim()) {
                Ok(interval) => settings.interval = interval,
                Err(e) => errors.push(problem(
                    env::BACKUP_NOTIFY_INTERVAL,
                    format!("expected a duration such as 10m, got '{text}': {e}"),
                )),
            }
        }
        if let Some(text) = var(env::BACKUP_NOTIFICATION_WEBHOOK) {
            match web_url(&text) {
                Ok(url) => settings.channels.push(Channel::Webhook(url)),
                Err(e) => errors.push(problem(env::BACKUP_NOTIFICATION_WEBHOOK, e)),
            }
        }
        if let Some(text) = var(env::SLACK_WEBHOOK_URL) {
            match web_url(&text) {
                Ok(url) => settings.channels.push(Channel::Slack(url)),
                Err(e) => errors.push(problem(env::SLACK_WEBHOOK_URL, e)),
            }
        }
        if let Some(to) = var(env::BACKUP_EMAIL_RECIPIENT) {
            match mail_settings(&to, var) {
                Ok(mail) => settings.channels.push(Channel::Email(Box::new(mail))),
                Err(e) => errors.push(e),
            }
        }
        (settings, errors)
    }
}

/// An http(s) URL. The text itself never goes into the error: it holds the token.
fn web_url(text: &str) -> Result<Url, &'static str> {
    match Url::parse(text.trim()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => Ok(url),
        Ok(_) => Err("not an http(s) URL with a host"),
        Err(_) => Err("not a valid URL"),
    }
}

fn mail_settings(
    to: &str,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<MailSettings, SettingError> {
    let host = var(env::SMTP_HOST).ok_or_else(|| {
        problem(
            env::BACKUP_EMAIL_RECIPIENT,
            "set, but SMTP_HOST is not: no server to send the mail through",
        )
    })?;
    let tls = match var(env::SMTP_TLS).as_deref().map(str::trim) {
        None | Some("opportunistic") => SmtpTls::Opportunistic,
        Some("required") => SmtpTls::Required,
        Some("wrapper") => SmtpTls::Wrapper,
        Some("off") => SmtpTls::Off,
        Some(other) => {
            return Err(problem(
                env::SMTP_TLS,
                format!("expected required, opportunistic, wrapper or off, got '{other}'"),
            ))
        }
    };
    let port = match var(env::SMTP_PORT) {
        None => tls.default_port(),
        Some(text) => text
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| problem(env::SMTP_PORT, format!("not a port number: '{text}'")))?,
    };
    let credentials = match (var(env::SMTP_USERNAME), var(env::SMTP_PASSWORD)) {
        (Some(user), Some(password)) => Some((user, password)),
        (None, None) => None,
        (Some(_), None) => return Err(problem(env::SMTP_USERNAME, "set without SMTP_PASSWORD")),
        (None, Some(_)) => return Err(problem(env::SMTP_PASSWORD, "set without SMTP_USERNAME")),
    };
    let from = match var(env::SMTP_FROM) {
        Some(text) => text.trim().parse::<Mailbox>().map_err(|e| {
            problem(
                env::SMTP_FROM,
                format!("not a mail address: '{text}' ({e})"),
            )
        })?,
        None => format!("pipeline-backup@{}", super::message::host_name())
            .parse::<Mailbox>()
            .map_err(|e| {
                problem(
                    env::SMTP_FROM,
                    format!("not set, and the host name makes no address ({e})"),
                )
            })?,
    };
    let mut recipients = Vec::new();
    for address in to.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        recipients.push(address.parse::<Mailbox>().map_err(|e| {
            problem(
                env::BACKUP_EMAIL_RECIPIENT,
                format!("not a mail address: '{address}' ({e})"),
            )
        })?);
    }
    if recipients.is_empty() {
        return Err(problem(env::BACKUP_EMAIL_RECIPIENT, "no address given"));
    }
    Ok(MailSettings {
        host: host.trim().to_string(),
        port,
        tls,
        credentials,
        from,
        to: recipients,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> (Settings, Vec<SettingError>) {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(&move |name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn nothing_configured_means_no_channel() {
        let (s, errors) = settings(&[]);
        assert!(s.channels.is_empty() && errors.is_empty());
        assert_eq!(s.on, NotifyOn::Failure);
        assert_eq!(s.interval, DEFAULT_INTERVAL);
    }

    #[test]
    fn every_channel_and_its_description_without_secrets() {
        let (s, errors) = settings(&[
            (
                "BACKUP_NOTIFICATION_WEBHOOK",
                "https://hooks.example.com/x/SECRETTOKEN",
            ),
            (
                "SLACK_WEBHOOK_URL",
                "http://127.0.0.1:8080/services/T/B/SECRET",
            ),
            ("BACKUP_EMAIL_RECIPIENT", "ops@example.com, dba@example.com"),
            ("SMTP_HOST", "smtp.example.com"),
            ("SMTP_TLS", "required"),
            ("SMTP_USERNAME", "backup"),
            ("SMTP_PASSWORD", "hunter2"),
            ("SMTP_FROM", "Backups <backups@example.com>"),
            ("BACKUP_NOTIFY_ON", "always"),
            ("BACKUP_NOTIFY_INTERVAL", "30m"),
        ]);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(s.on, NotifyOn::Always);
        assert_eq!(s.interval, Duration::from_secs(1800));
        let described: Vec<String> = s.channels.iter().map(Channel::describe).collect();
        assert_eq!(
            described,
            [
                "webhook (hooks.example.com)",
                "slack (127.0.0.1:8080)",
                "email (smtp.example.com:587)"
            ]
        );
        let debug = format!("{s:?}");
        assert!(
            !debug.contains("SECRET") && !debug.contains("hunter2"),
            "{debug}"
        );
        let Channel::Email(mail) = &s.channels[2] else {
            panic!()
        };
        assert_eq!(mail.to.len(), 2);
        assert_eq!(mail.tls, SmtpTls::Required);
    }

    #[test]
    fn unusable_variables_are_named_and_their_channel_dropped() {
        let (s, errors) = settings(&[
            ("BACKUP_NOTIFICATION_WEBHOOK", "ftp://host/SECRETTOKEN"),
            ("SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/ok"),
            ("BACKUP_EMAIL_RECIPIENT", "ops@example.com"),
            ("BACKUP_NOTIFY_ON", "sometimes"),
        ]);
        assert_eq!(s.channels.len(), 1);
        let vars: Vec<&str> = errors.iter().map(|e| e.var).collect();
        assert_eq!(
            vars,
            [
                "BACKUP_NOTIFY_ON",
                "BACKUP_NOTIFICATION_WEBHOOK",
                "BACKUP_EMAIL_RECIPIENT"
            ]
        );
        assert!(errors
            .iter()
            .all(|e| !e.to_string().contains("SECRETTOKEN")));

        let (_, errors) = settings(&[
            ("BACKUP_EMAIL_RECIPIENT", "ops@example.com"),
            ("SMTP_HOST", "smtp"),
            ("SMTP_PASSWORD", "hunter2"),
        ]);
        assert_eq!(errors[0].var, "SMTP_PASSWORD");
        assert!(!errors[0].to_string().contains("hunter2"));
    }

    #[test]
    fn smtp_ports_follow_the_tls_mode() {
        for (tls, port) in [
            ("opportunistic", 25),
            ("off", 25),
            ("required", 587),
            ("wrapper", 465),
        ] {
            let (s, errors) = settings(&[
                ("BACKUP_EMAIL_RECIPIENT", "ops@example.com"),
                ("SMTP_HOST", "smtp"),
                ("SMTP_TLS", tls),
            ]);
            assert!(errors.is_empty());
            assert_eq!(s.channels[0].describe(), format!("email (smtp:{port})"));
        }
    }
}

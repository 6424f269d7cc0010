//! What a notification says, in each channel's shape: the webhook's JSON, Slack's text and
//! blocks, a mail's subject and body. All built from one [`Report`].
//!
//! Secrets are taken out before anything is built: every value of a secret variable of the
//! environment (passwords, tokens, webhook URLs and their paths, secret Kafka properties) is
//! replaced wherever it appears, in the error line and in the summary alike.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::config_file::is_secret_key;
use crate::kafka::is_secret_property;

/// How a run ended, as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit code 0.
    Success,
    /// Any other exit code: an error, a failed check, an interruption.
    Failure,
    /// `validate-backups --notify-test`.
    Test,
}

impl Outcome {
    pub fn from_exit_code(code: u8) -> Outcome {
        if code == 0 {
            Outcome::Success
        } else {
            Outcome::Failure
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Test => "test",
        }
    }
}

/// One run's notification.
#[derive(Debug, Clone)]
pub struct Report {
    /// The tool and subcommand, e.g. `wal-archive push`.
    pub tool: String,
    pub host: String,
    pub outcome: Outcome,
    pub exit_code: u8,
    pub duration: Duration,
    /// The one error line (without the tool's name), if the run failed with an error.
    pub error: Option<String>,
    /// The run's summary record (`--output json`'s last line), if it printed one.
    pub summary: Option<Map<String, Value>>,
    /// RFC 3339 time the run ended.
    pub time: String,
    /// Failures not reported since the last message (the rate limit of `wal-archive push`).
    pub suppressed: u64,
}

const REDACTED: &str = "[redacted]";

impl Report {
    /// A report with secrets taken out of the error line and the summary.
    pub fn new(
        tool: &str,
        outcome: Outcome,
        exit_code: u8,
        duration: Duration,
        error: Option<&str>,
        summary: Option<Value>,
    ) -> Report {
        let secrets = secrets_of(std::env::vars());
        let summary = summary.map(|mut value| {
            redact_value(&mut value, &secrets);
            match value {
                Value::Object(mut map) => {
                    map.remove("type");
                    map.remove("format_version");
                    map
                }
                other => Map::from_iter([("summary".to_string(), other)]),
            }
        });
        Report {
            tool: tool.to_string(),
            host: host_name(),
            outcome,
            exit_code,
            duration,
            error: error.map(|e| redact(first_line(e), &secrets)),
            summary,
            time: crate::timefmt::rfc3339_string(crate::timefmt::now()),
            suppressed: 0,
        }
    }

    /// The set the run wrote or read, from the summary's `id`.
    pub fn set_id(&self) -> Option<&str> {
        self.summary.as_ref()?.get("id")?.as_str()
    }

    /// One line for people: `pg-base-backup failed on db-1 (exit code 2)`.
    pub fn headline(&self) -> String {
        match self.outcome {
            Outcome::Test => format!("test notification from {} on {}", self.tool, self.host),
            Outcome::Success => format!("{} succeeded on {}", self.tool, self.host),
            Outcome::Failure => format!(
                "{} failed on {} (exit code {})",
                self.tool, self.host, self.exit_code
            ),
        }
    }

    /// The webhook's body: the summary's fields, then the run's (which win a clash).
    pub fn webhook_json(&self) -> Value {
        let mut body = self.summary.clone().unwrap_or_default();
        let mut put = |key: &str, value: Value| {
            body.insert(key.to_string(), value);
        };
        put("type", "notification".into());
        put("format_version", crate::output::JSON_FORMAT_VERSION.into());
        put("tool", self.tool.clone().into());
        put("host", self.host.clone().into());
        put("status", self.outcome.as_str().into());
        put("exit_code", self.exit_code.into());
        put("duration_s", round_secs(self.duration).into());
        put("error", self.error.clone().into());
        put("time", self.time.clone().into());
        if let Some(id) = self.set_id() {
            put("set_id", id.to_string().into());
        }
        if self.suppressed > 0 {
            put("suppressed_failures", self.suppressed.into());
        }
        Value::Object(body)
    }

    /// A Slack incoming-webhook message: `text` (the fallback) and `blocks`.
    pub fn slack_json(&self) -> Value {
        let icon = match self.outcome {
            Outcome::Success => ":white_check_mark:",
            Outcome::Failure => ":x:",
            Outcome::Test => ":bell:",
        };
        let mut fields = vec![
            ("Tool", self.tool.clone()),
            ("Status", self.outcome.as_str().to_string()),
            ("Host", self.host.clone()),
            ("Exit code", self.exit_code.to_string()),
            ("Duration", format!("{:.1}s", self.duration.as_secs_f64())),
        ];
        if let Some(id) = self.set_id() {
            fields.push(("Set", id.to_string()));
        }
        let fields: Vec<Value> = fields
            .into_iter()
            .map(|(name, value)| {
                serde_json::json!({
                    "type": "mrkdwn",
                    "text": format!("*{name}*\n{}", slack_escape(&truncate(&value, 200))),
                })
            })
            .collect();
        let mut detail = match &self.error {
            Some(error) => format!("```{}```", slack_escape(&truncate(error, 2500))),
            None => self
                .figures()
                .iter()
                .map(|(k, v)| format!("*{}*: {}", slack_escape(k), slack_escape(v)))
                .collect::<Vec<_>>()
                .join("\n"),
        };
        if self.suppressed > 0 {
            detail.push_str(&format!("\n_{}_", self.suppressed_note()));
        }
        let mut blocks = vec![
            serde_json::json!({
                "type": "section",
                "text": {"type": "mrkdwn", "text": format!("{icon} *{}*", slack_escape(&self.headline()))},
            }),
            serde_json::json!({"type": "section", "fields": fields}),
        ];
        if !detail.trim().is_empty() {
            blocks.push(serde_json::json!({
                "type": "section",
                "text": {"type": "mrkdwn", "text": truncate(&detail, 2900)},
            }));
        }
        let text = match &self.error {
            Some(error) => format!("{}: {}", self.headline(), truncate(error, 500)),
            None => self.headline(),
        };
        serde_json::json!({ "text": slack_escape(&text), "blocks": blocks })
    }

    /// The mail's subject line.
    pub fn subject(&self) -> String {
        let word = match self.outcome {
            Outcome::Success => "OK",
            Outcome::Failure => "FAILED",
            Outcome::Test => "TEST",
        };
        format!("[pipeline-backup] {word}: {} on {}", self.tool, self.host)
    }

    /// The mail's plain-text body: the headline, the error line, then every figure.
    pub fn mail_body(&self) -> String {
        let mut body = format!("{}.\n\n", self.headline());
        if let Some(error) = &self.error {
            body.push_str(&format!("Error: {error}\n\n"));
        }
        if self.suppressed > 0 {
            body.push_str(&format!("{}\n\n", self.suppressed_note()));
        }
        let mut lines = vec![
            ("tool".to_string(), self.tool.clone()),
            ("host".to_string(), self.host.clone()),
            ("status".to_string(), self.outcome.as_str().to_string()),
            ("exit code".to_string(), self.exit_code.to_string()),
            (
                "duration".to_string(),
                format!("{:.1}s", self.duration.as_secs_f64()),
            ),
            ("time".to_string(), self.time.clone()),
        ];
        if let Some(id) = self.set_id() {
            lines.push(("set".to_string(), id.to_string()));
        }
        lines.extend(self.figures());
        let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (key, value) in lines {
            body.push_str(&format!("{key:width$}  {value}\n"));
        }
        body
    }

    fn suppressed_note(&self) -> String {
        format!(
            "{} more failure(s) since the last notification were not sent (rate limit)",
            self.suppressed
        )
    }

    /// The summary's short fields as text: numbers, flags, short strings, lists of names
    /// (such as `failed_checks`); long or nested values only by their size.
    pub fn figures(&self) -> Vec<(String, String)> {
        let Some(summary) = &self.summary else {
            return Vec::new();
        };
        summary
            .iter()
            // Shown beside the figures already: the set, and the run's own duration.
            .filter(|(key, _)| !matches!(key.as_str(), "id" | "duration_s"))
            .filter_map(|(key, value)| {
                let text = match value {
                    Value::Null => return None,
                    Value::Bool(b) => b.to_string(),
                    Value::Number(n) if n.is_f64() => {
                        format!("{:.3}", n.as_f64().unwrap_or_default())
                    }
                    Value::Number(n) => n.to_string(),
                    Value::String(s) => truncate(s, 200),
                    Value::Array(items) if items.iter().all(Value::is_string) => {
                        if items.is_empty() {
                            "none".to_string()
                        } else {
                            let names: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
                            truncate(&names.join(", "), 500)
                        }
                    }
                    Value::Array(items) => format!("{} item(s)", items.len()),
                    Value::Object(_) => return None,
                };
                Some((key.clone(), text))
            })
            .take(20)
            .collect()
    }
}

/// The first line of a message (an error chain is one line already; this is a guard).
fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("").trim()
}

fn round_secs(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1000.0).round() / 1000.0
}

/// At most `max` characters, with an ellipsis when cut.
pub fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// Slack's mrkdwn needs `&`, `<` and `>` escaped.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// This machine's name (the pod's name in Kubernetes).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "unknown-host".to_string())
}

/// Every secret text in the environment: values of secret variables, the path, query and
/// user info of URL values, and secret properties of `KAFKA_CLIENT_CONFIG`. Longest first,
/// so a value is replaced before any secret inside it.
pub fn secrets_of(vars: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
    let mut secrets = Vec::new();
    for (key, value) in vars {
        if key == crate::env::KAFKA_CLIENT_CONFIG {
            for item in value.split(['\n', ';']) {
                if let Some((k, v)) = item.split_once('=') {
                    if is_secret_property(k.trim()) {
                        secrets.push(v.trim().to_string());
                    }
                }
            }
            continue;
        }
        if !is_secret_key(&key) {
            continue;
        }
        if let Ok(url) = reqwest::Url::parse(value.trim()) {
            if url.has_host() {
                // A URL's token is its path or query; short ones ("/hook") are plain words.
                let parts = [
                    Some(url.path().trim_matches('/')),
                    url.query(),
                    url.password(),
                ];
                secrets.extend(
                    parts
                        .into_iter()
                        .flatten()
                        .filter(|p| p.len() >= 8)
                        .map(str::to_string),
                );
            }
        }
        secrets.push(value.trim().to_string());
    }
    // Too short to be a credential, and replacing them would garble every message.
    secrets.retain(|s| s.chars().count() >= 4);
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.dedup();
    secrets
}

/// `text` with every secret replaced.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut text = text.to_string();
    for secret in secrets {
        if text.contains(secret.as_str()) {
            text = text.replace(secret.as_str(), REDACTED);
        }
    }
    text
}

fn redact_value(value: &mut Value, secrets: &[String]) {
    match value {
        Value::String(s) => *s = redact(s, secrets),
        Value::Array(items) => items.iter_mut().for_each(|v| redact_value(v, secrets)),
        Value::Object(map) => map.values_mut().for_each(|v| redact_value(v, secrets)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(outcome: Outcome, error: Option<&str>, summary: Option<Value>) -> Report {
        Report {
            host: "db-1".into(),
            time: "2026-11-21T02:00:00Z".into(),
            ..Report::new(
                "pg-base-backup",
                outcome,
                if outcome == Outcome::Failure { 2 } else { 0 },
                Duration::from_millis(1234),
                error,
                summary,
            )
        }
    }

    #[test]
    fn webhook_body_is_the_summary_plus_the_run() {
        let summary = serde_json::json!({
            "type": "summary", "format_version": 1, "id": "20261121T020000Z",
            "bytes": 42, "duration_s": 1.0,
        });
        let body = report(Outcome::Success, None, Some(summary)).webhook_json();
        assert_eq!(body["type"], "notification");
        assert_eq!(body["tool"], "pg-base-backup");
        assert_eq!(body["host"], "db-1");
        assert_eq!(body["status"], "success");
        assert_eq!(body["exit_code"], 0);
        assert_eq!(body["duration_s"], 1.234);
        assert_eq!(body["error"], Value::Null);
        assert_eq!(body["bytes"], 42);
        assert_eq!(body["id"], "20261121T020000Z");
        assert_eq!(body["set_id"], "20261121T020000Z");

        let failed = report(Outcome::Failure, Some("cannot connect\nmore"), None).webhook_json();
        assert_eq!(failed["status"], "failure");
        assert_eq!(failed["exit_code"], 2);
        assert_eq!(failed["error"], "cannot connect");
        assert!(failed.get("set_id").is_none());
    }

    #[test]
    fn slack_and_mail_carry_the_error_or_the_figures() {
        let failed = report(Outcome::Failure, Some("disk <full> & more"), None);
        let slack = failed.slack_json();
        let text = slack["text"].as_str().unwrap();
        assert!(text.contains("pg-base-backup failed on db-1"), "{text}");
        assert!(text.contains("disk &lt;full&gt; &amp; more"), "{text}");
        assert_eq!(slack["blocks"].as_array().unwrap().len(), 3);
        assert_eq!(
            failed.subject(),
            "[pipeline-backup] FAILED: pg-base-backup on db-1"
        );
        assert!(failed.mail_body().contains("Error: disk <full> & more\n"));

        let summary = serde_json::json!({
            "id": "S1", "passed": false, "failed_checks": ["base.checksums", "wal.continuity"],
            "topics": [{"name": "orders"}], "nested": {"a": 1}, "ratio": 0.123456,
            "duration_s": 0.5,
        });
        let checks = report(Outcome::Failure, None, Some(summary));
        let figures = checks.figures();
        assert!(figures.contains(&(
            "failed_checks".into(),
            "base.checksums, wal.continuity".into()
        )));
        assert!(figures.contains(&("topics".into(), "1 item(s)".into())));
        assert!(figures.contains(&("ratio".into(), "0.123".into())));
        assert!(!figures
            .iter()
            .any(|(k, _)| k == "nested" || k == "id" || k == "duration_s"));
        let detail = checks.slack_json()["blocks"][2]["text"]["text"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(detail.contains("base.checksums"), "{detail}");
        let body = checks.mail_body();
        assert!(
            body.lines()
                .any(|l| l.starts_with("set ") && l.ends_with(" S1")),
            "{body}"
        );
    }

    #[test]
    fn secrets_are_found_and_replaced() {
        let secrets = secrets_of([
            ("PGPASSWORD".to_string(), "pg-secret-pw".to_string()),
            (
                "SLACK_WEBHOOK_URL".to_string(),
                "https://hooks.slack.com/services/T0/B0/tokentoken".to_string(),
            ),
            (
                "KAFKA_CLIENT_CONFIG".to_string(),
                "sasl.password=kafkapw;security.protocol=SASL_SSL".to_string(),
            ),
            ("PGHOST".to_string(), "db.internal".to_string()),
            ("SMTP_PASSWORD".to_string(), "abc".to_string()),
        ]);
        let text =
            "pg-secret-pw at db.internal, https://hooks.slack.com/services/T0/B0/tokentoken, \
                    services/T0/B0/tokentoken, kafkapw, SASL_SSL";
        let clean = redact(text, &secrets);
        assert_eq!(
            clean,
            "[redacted] at db.internal, [redacted], [redacted], [redacted], SASL_SSL"
        );
    }

    #[test]
    fn truncates_on_characters() {
        assert_eq!(truncate("ééééé", 3), "ééé…");
        assert_eq!(truncate("abc", 3), "abc");
    }
}

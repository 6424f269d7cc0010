//! Sending a JSON body to a webhook (ours or Slack's) with reqwest, within a time limit.
//!
//! reqwest's errors carry the URL, and a webhook URL carries its token: errors are stripped
//! of it before they are shown.

use std::time::Duration;

use reqwest::Url;
use serde_json::Value;

use super::SendError;

/// Longest wait for the TCP (and TLS) connection, within the overall limit.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// POSTs `body` to `url`; any 2xx answer is acceptance. The error is one line without the URL.
pub fn post_json(url: &Url, body: &Value, timeout: Duration) -> Result<(), SendError> {
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT.min(timeout))
        .timeout(timeout)
        // A redirect would resend the body somewhere the operator did not name.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("pipeline-backup/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(describe)?;
    let response = client
        .post(url.clone())
        .json(body)
        .send()
        .map_err(describe)?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    // Slack explains a refusal in the body ("invalid_token", "no_service"): keep a little.
    let text = response.text().unwrap_or_default();
    let reason = super::message::truncate(text.trim().lines().next().unwrap_or(""), 120);
    Err(SendError(if reason.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {reason}")
    }))
}

/// The error and its causes on one line, without the URL.
fn describe(error: reqwest::Error) -> SendError {
    let timed_out = error.is_timeout();
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    if timed_out && !text.contains("timed out") {
        text.push_str(" (timed out)");
    }
    SendError(text)
}

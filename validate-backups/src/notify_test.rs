//! `--notify-test`: one test message to every configured notification channel, so a new
//! webhook, Slack app or mail server is proven before the first failure needs it.

use serde::Serialize;

use common::output::{self, OutputFormat};
use common::Status;

use crate::Format;

#[derive(Debug, Serialize)]
struct Sent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    channel: &'a str,
    sent: bool,
    error: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct Summary {
    channels: usize,
    sent: usize,
    failed: Vec<String>,
}

/// Sends the test and prints one line per channel. Exit 0 only when every channel accepted
/// it; otherwise the error names each channel that did not.
pub fn run(format: Format) -> anyhow::Result<Status> {
    let deliveries = common::notify::send_test("validate-backups --notify-test")?;
    for d in &deliveries {
        let error = d.result.as_ref().err().map(String::as_str);
        match format {
            Format::Json => output::json_line(&Sent {
                kind: "notification",
                channel: &d.channel,
                sent: error.is_none(),
                error,
            })?,
            _ => output::text_line(&match error {
                None => format!("sent    {}", d.channel),
                Some(e) => format!("FAILED  {}: {e}", d.channel),
            })?,
        }
    }
    let failed: Vec<String> = deliveries
        .iter()
        .filter_map(|d| {
            d.result
                .as_ref()
                .err()
                .map(|e| format!("{}: {e}", d.channel))
        })
        .collect();
    let summary = Summary {
        channels: deliveries.len(),
        sent: deliveries.len() - failed.len(),
        failed: failed.clone(),
    };
    if format == Format::Json {
        output::summary(OutputFormat::Json, &summary, String::new)?;
    }
    if !failed.is_empty() {
        anyhow::bail!("notification test failed: {}", failed.join("; "));
    }
    Ok(Status::Ok)
}

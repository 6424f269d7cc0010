//! Data on stdout: plain text for people or JSON lines for programs (`--output json`).
//!
//! Every JSON line carries `"type"`; the last line of a run is its summary and carries
//! `"format_version"`.

use std::io::Write;

use serde::Serialize;

/// Version of the JSON output records; bumped on incompatible changes.
pub const JSON_FORMAT_VERSION: u32 = 1;

/// How a tool prints its results on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The tool's own stdout, locked: a broken pipe on it ends the run as a normal end
/// ([`crate::exit::StdoutClosed`]). Every write of the tool's output goes through it.
pub fn stdout() -> Stdout {
    Stdout(std::io::stdout().lock())
}

/// See [`stdout`].
pub struct Stdout(std::io::StdoutLock<'static>);

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).map_err(crate::exit::StdoutClosed::mark)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush().map_err(crate::exit::StdoutClosed::mark)
    }
}

/// Writes one JSON record as a line on stdout.
pub fn json_line<T: Serialize>(record: &T) -> std::io::Result<()> {
    let mut out = stdout();
    serde_json::to_writer(&mut out, record)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Writes one line of text on stdout.
pub fn text_line(line: &str) -> std::io::Result<()> {
    let mut out = stdout();
    out.write_all(line.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Prints the run's summary: JSON with `type: "summary"` and the format version added, or text.
/// Either way the record is kept for the run's notification ([`last_summary`]).
pub fn summary<T: Serialize>(
    format: OutputFormat,
    record: &T,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => {
            let mut value = serde_json::to_value(record)?;
            if let Some(map) = value.as_object_mut() {
                map.insert("type".into(), "summary".into());
                map.insert("format_version".into(), JSON_FORMAT_VERSION.into());
            }
            *last() = Some(value.clone());
            json_line(&value)?;
        }
        OutputFormat::Text => {
            keep_summary(record);
            text_line(&text())?;
        }
    }
    Ok(())
}

/// The summary record of this run, for its notification, from a tool that prints its summary
/// in a format of its own (a JUnit report) rather than through [`summary`].
pub fn keep_summary<T: Serialize>(record: &T) {
    if let Ok(value) = serde_json::to_value(record) {
        *last() = Some(value);
    }
}

/// The last summary record printed (or kept) by this run.
pub fn last_summary() -> Option<serde_json::Value> {
    last().clone()
}

fn last() -> std::sync::MutexGuard<'static, Option<serde_json::Value>> {
    static LAST: std::sync::Mutex<Option<serde_json::Value>> = std::sync::Mutex::new(None);
    LAST.lock().unwrap_or_else(|e| e.into_inner())
}

//! Timeline history files (`00000003.history`): which timelines led to a timeline, and the
//! WAL position at which each was left.
//!
//! PostgreSQL writes one line per ancestor, oldest first, when a server leaves a timeline
//! (promotion, or the end of a point-in-time recovery):
//!
//! ```text
//! <parent tli> <tab> <switch LSN> <tab> <reason>
//! ```
//!
//! Records from the switch LSN on belong to the next timeline. As in PostgreSQL's own reader,
//! leading whitespace is skipped, blank lines and `#` comments are ignored, and every other
//! line must start with a timeline ID and an LSN; the reason is free text and may be empty.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::lsn::Lsn;

/// Largest history file read. PostgreSQL writes one short line per timeline switch, so a
/// bigger file is damage; the cap bounds what a decompression bomb can make a reader hold.
pub const MAX_HISTORY_BYTES: u64 = 16 << 20;

/// One ancestor timeline: it was left at `switchpoint` (records from there on belong to
/// the next timeline).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub timeline: u32,
    pub switchpoint: Lsn,
    #[serde(default)]
    pub reason: String,
}

/// The name PostgreSQL gives the history file of `timeline`: `00000002.history`.
pub fn file_name(timeline: u32) -> String {
    format!("{timeline:08X}.history")
}

/// A history file that could not be parsed; the message names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{shown} is not a timeline history file ({problem})")]
pub struct HistoryError {
    /// The file as the user knows it (path or object store key).
    pub shown: String,
    pub problem: Problem,
}

/// What is wrong with a history file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The bytes are not UTF-8.
    NotText(std::str::Utf8Error),
    /// This line (counted from 1) is neither blank, a comment, nor an entry.
    BadLine(usize),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NotText(e) => write!(f, "not text: {e}"),
            Problem::BadLine(n) => write!(f, "line {n} is not '<timeline> <LSN> <reason>'"),
        }
    }
}

/// The entries of a history file, oldest first. `shown` names the file in errors.
pub fn parse(bytes: &[u8], shown: &str) -> Result<Vec<HistoryEntry>, HistoryError> {
    let error = |problem| HistoryError {
        shown: shown.to_string(),
        problem,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| error(Problem::NotText(e)))?;
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        entries.push(entry(line).ok_or_else(|| error(Problem::BadLine(n + 1)))?);
    }
    Ok(entries)
}

/// The switch point that leads to the file's own timeline: the LSN of its last entry;
/// `None` when it lists none.
pub fn switch_point(bytes: &[u8], shown: &str) -> Result<Option<Lsn>, HistoryError> {
    Ok(parse(bytes, shown)?.last().map(|e| e.switchpoint))
}

/// One trimmed, non-comment line: `<timeline> <LSN> [<reason>]`.
fn entry(line: &str) -> Option<HistoryEntry> {
    let (timeline, rest) = first_field(line);
    let (switchpoint, reason) = first_field(rest);
    Some(HistoryEntry {
        timeline: timeline.parse().ok()?,
        switchpoint: switchpoint.parse().ok()?,
        reason: reason.trim().to_string(),
    })
}

/// The first whitespace-separated field of `text` and what follows it.
fn first_field(text: &str) -> (&str, &str) {
    let text = text.trim_start();
    text.split_once(char::is_whitespace).unwrap_or((text, ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOWN: &str = "wal/00000004.history.zst";

    fn lsn(text: &str) -> Lsn {
        text.parse().unwrap()
    }

    fn entry(timeline: u32, switchpoint: &str, reason: &str) -> HistoryEntry {
        HistoryEntry {
            timeline,
            switchpoint: lsn(switchpoint),
            reason: reason.to_string(),
        }
    }

    #[test]
    fn parses_a_history_file_as_postgres_writes_it() {
        // 00000004.history after three point-in-time restores (PostgreSQL 15).
        let text = "1\t0/3000158\tno recovery target specified\n\
                    \n\
                    2\t0/5000A28\tat restore point \"before-migration\"\n\
                    3\t1/5000000\tbefore 2026-11-21 12:00:00.123456+00\n";
        assert_eq!(
            parse(text.as_bytes(), SHOWN).unwrap(),
            [
                entry(1, "0/3000158", "no recovery target specified"),
                entry(2, "0/5000A28", "at restore point \"before-migration\""),
                entry(3, "1/5000000", "before 2026-11-21 12:00:00.123456+00"),
            ]
        );
        assert_eq!(
            switch_point(text.as_bytes(), SHOWN),
            Ok(Some(lsn("1/5000000")))
        );
    }

    #[test]
    fn comments_blank_lines_spacing_and_missing_reasons() {
        let text = "# written by hand\n   \n  # indented comment\n\
                    1  0/3000158\n\t2\tFFFFFFFF/FF000000\t  spaced reason  \r\n";
        assert_eq!(
            parse(text.as_bytes(), SHOWN).unwrap(),
            [
                entry(1, "0/3000158", ""),
                entry(2, "FFFFFFFF/FF000000", "spaced reason"),
            ]
        );
        assert_eq!(parse(b"", SHOWN), Ok(Vec::new()));
        assert_eq!(switch_point(b"# nothing\n\n", SHOWN), Ok(None));
    }

    #[test]
    fn malformed_lines_name_the_file_and_the_line() {
        for (text, line) in [
            (&b"1\tnot-an-lsn\treason\n"[..], 1),
            (b"x\t0/1\treason\n", 1),
            (b"1\n", 1),
            (b"1\t0/3000158\tok\n\n-1\t0/5000000\tnegative\n", 3),
            (
                b"1\t0/3000158\tok\n2\t0/5000000 trailing\n4294967296\t0/6000000\n",
                3,
            ),
            (b"1\t0/30001580\n1\t0/\n", 2),
        ] {
            let err = parse(text, SHOWN).unwrap_err();
            assert_eq!(err.problem, Problem::BadLine(line), "{text:?}");
            assert_eq!(
                err.to_string(),
                format!(
                    "{SHOWN} is not a timeline history file \
                     (line {line} is not '<timeline> <LSN> <reason>')"
                )
            );
        }
        // An earlier bad line spoils the file even when the last one is good.
        assert!(switch_point(b"1\tnope\n2\t0/5000000\tok\n", SHOWN).is_err());
    }

    #[test]
    fn bytes_that_are_not_text_are_refused() {
        let err = parse(b"1\t0/3000158\t\xff\xfe\n", SHOWN).unwrap_err();
        assert!(matches!(err.problem, Problem::NotText(_)), "{err:?}");
        assert!(
            err.to_string().starts_with(&format!(
                "{SHOWN} is not a timeline history file (not text: "
            )),
            "{err}"
        );
    }

    #[test]
    fn entries_round_trip_through_json() {
        let saved = entry(2, "0/5000A28", "at restore point \"x\"");
        let json = serde_json::to_string(&saved).unwrap();
        assert_eq!(
            json,
            r#"{"timeline":2,"switchpoint":"0/5000A28","reason":"at restore point \"x\""}"#
        );
        let old: HistoryEntry =
            serde_json::from_str(r#"{"timeline":2,"switchpoint":"0/5000A28"}"#).unwrap();
        assert_eq!(old, entry(2, "0/5000A28", ""));
        assert_eq!(file_name(0x1A), "0000001A.history");
    }
}

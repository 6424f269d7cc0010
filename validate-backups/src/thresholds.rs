//! Parsing the thresholds of the command line: per-kind maps (`base=26h,kafka=8d`), sizes
//! (`1GiB`) and client properties, with the defaults that make a fresh repository pass.

use std::collections::BTreeMap;
use std::time::Duration;

use common::Kind;

/// `KIND=VALUE` pairs in the order given; `all` applies to every kind.
#[derive(Debug, Clone, PartialEq)]
pub struct KindMap<T>(pub Vec<(Option<Kind>, T)>);

/// A byte count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

/// Default maximum age of the newest set: daily kinds get a two-hour grace, Kafka is weekly.
pub const DEFAULT_MAX_AGE: [(Kind, u64); 5] = [
    (Kind::Base, 26 * 3600),
    (Kind::Wal, 26 * 3600),
    (Kind::Logical, 26 * 3600),
    (Kind::Kafka, 8 * 86400),
    (Kind::Slots, 26 * 3600),
];

/// A threshold on the command line that does not parse; the message shows a form that does.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseThresholdError {
    #[error("unknown kind '{0}': expected base, wal, logical, kafka, slots or all")]
    UnknownKind(String),
    #[error("expected KIND=VALUE, got '{item}' (e.g. {example})")]
    NotAPair { item: String, example: &'static str },
    #[error("empty list (e.g. {example})")]
    Empty { example: &'static str },
    /// The cause is shown in the message and not chained as a source, so an error chain
    /// (`{:#}`) says it once.
    #[error("invalid duration '{value}': {error} (e.g. 26h, 8d, 90m)")]
    Duration {
        value: String,
        error: humantime::DurationError,
    },
    #[error("invalid count '{0}': expected a whole number")]
    Count(String),
}

fn parse_kind(name: &str) -> Result<Option<Kind>, ParseThresholdError> {
    let name = name.trim();
    if name == "all" || name == "*" {
        return Ok(None);
    }
    Kind::ALL
        .iter()
        .copied()
        .find(|k| k.name() == name)
        .map(Some)
        .ok_or_else(|| ParseThresholdError::UnknownKind(name.to_string()))
}

fn parse_map<T>(
    text: &str,
    value: impl Fn(&str) -> Result<T, ParseThresholdError>,
    example: &'static str,
) -> Result<KindMap<T>, ParseThresholdError> {
    let mut items = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (kind, v) = item
            .split_once('=')
            .ok_or_else(|| ParseThresholdError::NotAPair {
                item: item.to_string(),
                example,
            })?;
        items.push((parse_kind(kind)?, value(v.trim())?));
    }
    if items.is_empty() {
        return Err(ParseThresholdError::Empty { example });
    }
    Ok(KindMap(items))
}

/// `base=26h,kafka=8d`.
pub fn parse_durations(text: &str) -> Result<KindMap<Duration>, ParseThresholdError> {
    parse_map(
        text,
        |v| {
            humantime::parse_duration(v).map_err(|error| ParseThresholdError::Duration {
                value: v.to_string(),
                error,
            })
        },
        "base=26h,kafka=8d",
    )
}

/// `base=7,logical=14` or `all=2`.
pub fn parse_counts(text: &str) -> Result<KindMap<usize>, ParseThresholdError> {
    parse_map(
        text,
        |v| {
            v.parse()
                .map_err(|_| ParseThresholdError::Count(v.to_string()))
        },
        "base=7,all=1",
    )
}

impl<T: Copy> KindMap<T> {
    /// The value for a kind: the last matching entry wins.
    pub fn get(&self, kind: Kind) -> Option<T> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k.is_none_or(|k| k == kind))
            .map(|(_, v)| *v)
    }
}

/// Maximum ages per kind name: the defaults, overridden by `--max-age`.
pub fn max_ages(given: Option<&KindMap<Duration>>) -> BTreeMap<&'static str, Duration> {
    DEFAULT_MAX_AGE
        .iter()
        .map(|&(kind, secs)| {
            let value = given
                .and_then(|m| m.get(kind))
                .unwrap_or(Duration::from_secs(secs));
            (kind.name(), value)
        })
        .collect()
}

/// Minimum set counts per kind name: 1, overridden by `--min-sets`.
pub fn min_sets(given: Option<&KindMap<usize>>) -> BTreeMap<&'static str, usize> {
    Kind::ALL
        .iter()
        .map(|&kind| (kind.name(), given.and_then(|m| m.get(kind)).unwrap_or(1)))
        .collect()
}

/// `1GiB`, `500MB`, `10G`, `4096`: suffixes are powers of 1024 whatever their spelling (kB,
/// KiB, K...), as in cdc-slot-tool.
pub fn parse_size(text: &str) -> Result<Size, common::size::ParseSizeError> {
    common::size::parse_bytes(text).map(Size)
}

/// Human form of a duration in whole units (`26h`, `3d 2h`).
pub fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_parse_and_override_defaults() {
        let m = parse_durations("base=2h, kafka=1d").unwrap();
        let ages = max_ages(Some(&m));
        assert_eq!(ages["base"], Duration::from_secs(7200));
        assert_eq!(ages["kafka"], Duration::from_secs(86400));
        assert_eq!(ages["logical"], Duration::from_secs(26 * 3600));
        let all = parse_counts("all=3,base=7").unwrap();
        let counts = min_sets(Some(&all));
        assert_eq!(counts["base"], 7);
        assert_eq!(counts["slots"], 3);
        assert!(parse_durations("bogus=1h")
            .unwrap_err()
            .to_string()
            .contains("unknown kind"));
        assert!(parse_durations("base").is_err());
        assert!(parse_durations("base=soon").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1GiB").unwrap(), Size(1 << 30));
        assert_eq!(parse_size("500MB").unwrap(), Size(500 << 20));
        assert_eq!(parse_size("4096").unwrap(), Size(4096));
        assert!(parse_size("12 parsecs").is_err());
    }
}

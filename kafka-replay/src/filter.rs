//! Which archived records a replay selects: a time range on the record timestamps and
//! per-partition offset ranges on the source offsets.

use std::collections::BTreeMap;
use std::str::FromStr;

use common::topic_archive::RecordView;

/// Source offsets `from..to` of one partition (from inclusive, to exclusive, both optional).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetRange {
    pub partition: i32,
    pub from: Option<i64>,
    pub to: Option<i64>,
}

/// Text that is not an offset range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid offset range '{0}': expected PARTITION:FROM..TO, e.g. 0:100..200 (TO exclusive; either end may be left out)")]
pub struct ParseOffsetRangeError(String);

impl FromStr for OffsetRange {
    type Err = ParseOffsetRangeError;

    /// `P:FROM..TO`, `P:FROM..`, `P:..TO` or `P` (the whole partition).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let hint = || ParseOffsetRangeError(text.to_string());
        let (partition, range) = match text.split_once(':') {
            Some((p, r)) => (p, Some(r)),
            None => (text, None),
        };
        let partition: i32 = partition.trim().parse().map_err(|_| hint())?;
        let (from, to) = match range {
            None => (None, None),
            Some(range) => {
                let (from, to) = range.split_once("..").ok_or_else(hint)?;
                let bound = |s: &str| -> Result<Option<i64>, ParseOffsetRangeError> {
                    let s = s.trim();
                    if s.is_empty() {
                        Ok(None)
                    } else {
                        s.parse::<i64>().map(Some).map_err(|_| hint())
                    }
                };
                (bound(from)?, bound(to)?)
            }
        };
        if partition < 0 || matches!((from, to), (Some(f), Some(t)) if f > t) {
            return Err(hint());
        }
        Ok(OffsetRange {
            partition,
            from,
            to,
        })
    }
}

/// Text that is none of the forms of a time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid time '{0}': expected RFC 3339 (2026-11-21T02:00:00Z), a duration ago (2h, 3days) or epoch milliseconds")]
pub struct ParseTimeError(String);

/// Parses a time for `--from-time`/`--to-time`: RFC 3339 (or PostgreSQL style), a humantime
/// timestamp (`2026-11-21 02:00:00` is UTC), a duration meaning that long ago (`2h`,
/// `3days`), or milliseconds since the epoch. Returns epoch milliseconds.
pub fn parse_time(text: &str) -> Result<i64, ParseTimeError> {
    let text = text.trim();
    if let Ok(t) = common::timefmt::parse_timestamp(text) {
        return Ok((t.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return Ok(system_millis(t));
    }
    if let Ok(ago) = humantime::parse_duration(text) {
        let now = std::time::SystemTime::now();
        return Ok(system_millis(now - ago));
    }
    if let Ok(millis) = text.parse::<i64>() {
        return Ok(millis);
    }
    Err(ParseTimeError(text.to_string()))
}

fn system_millis(t: std::time::SystemTime) -> i64 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// The selection of a replay.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Epoch milliseconds, inclusive.
    pub from_time: Option<i64>,
    /// Epoch milliseconds, exclusive.
    pub to_time: Option<i64>,
    /// When not empty, only these partitions, each within its range.
    pub offsets: BTreeMap<i32, Vec<OffsetRange>>,
}

impl Filter {
    pub fn new(
        from_time: Option<i64>,
        to_time: Option<i64>,
        ranges: &[OffsetRange],
        partitions: &[i32],
    ) -> Filter {
        let mut offsets: BTreeMap<i32, Vec<OffsetRange>> = BTreeMap::new();
        for range in ranges {
            offsets.entry(range.partition).or_default().push(*range);
        }
        for &partition in partitions {
            offsets.entry(partition).or_default().push(OffsetRange {
                partition,
                from: None,
                to: None,
            });
        }
        Filter {
            from_time,
            to_time,
            offsets,
        }
    }

    /// Whether any record of `partition` can be selected.
    pub fn wants_partition(&self, partition: i32) -> bool {
        self.offsets.is_empty() || self.offsets.contains_key(&partition)
    }

    /// Whether the record is selected.
    pub fn selects(&self, partition: i32, record: &RecordView<'_>) -> bool {
        if !self.offsets.is_empty() {
            let Some(ranges) = self.offsets.get(&partition) else {
                return false;
            };
            let inside = ranges.iter().any(|r| {
                r.from.is_none_or(|f| record.offset >= f) && r.to.is_none_or(|t| record.offset < t)
            });
            if !inside {
                return false;
            }
        }
        if self.from_time.is_some() || self.to_time.is_some() {
            if record.timestamp < 0 {
                return false;
            }
            if self.from_time.is_some_and(|f| record.timestamp < f)
                || self.to_time.is_some_and(|t| record.timestamp >= t)
            {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_ranges_parse() {
        let r: OffsetRange = "2:100..200".parse().unwrap();
        assert_eq!((r.partition, r.from, r.to), (2, Some(100), Some(200)));
        let r: OffsetRange = "0:..5".parse().unwrap();
        assert_eq!((r.from, r.to), (None, Some(5)));
        let r: OffsetRange = "1".parse().unwrap();
        assert_eq!((r.from, r.to), (None, None));
        assert!("x:1..2".parse::<OffsetRange>().is_err());
        assert!("1:5..2".parse::<OffsetRange>().is_err());
        assert!("1:5-9"
            .parse::<OffsetRange>()
            .unwrap_err()
            .to_string()
            .contains("PARTITION:FROM..TO"));
    }

    #[test]
    fn times_parse() {
        assert_eq!(
            parse_time("2026-11-21T00:00:00Z").unwrap(),
            1_795_219_200_000
        );
        assert_eq!(
            parse_time("2026-11-21 00:00:00").unwrap(),
            1_795_219_200_000
        );
        assert_eq!(parse_time("1600000000000").unwrap(), 1_600_000_000_000);
        let ago = parse_time("1h").unwrap();
        let now = system_millis(std::time::SystemTime::now());
        assert!((now - ago - 3_600_000).abs() < 5_000);
        assert!(parse_time("soon").is_err());
    }
}

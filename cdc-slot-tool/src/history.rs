//! Timeline history: which timelines led to the server's current one and where each ended.
//!
//! After a point-in-time restore the server continues on a new timeline that branched off
//! at the recovery end point; `pg_wal/<TLI>.history` lists every ancestor timeline with its
//! switch point. That is what tells a consumer's saved position apart from a position on a
//! history that no longer exists.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use common::lsn::Lsn;

/// One ancestor timeline: it was left at `switchpoint` (records from there on belong to
/// the next timeline).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub timeline: u32,
    pub switchpoint: Lsn,
    #[serde(default)]
    pub reason: String,
}

/// A server's timeline path: its ancestors in order, then the current timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelinePath {
    pub ancestors: Vec<HistoryEntry>,
    pub current: u32,
}

impl TimelinePath {
    /// The timeline that wrote position `lsn` on this path.
    pub fn timeline_at(&self, lsn: Lsn) -> u32 {
        self.ancestors
            .iter()
            .find(|e| lsn < e.switchpoint)
            .map_or(self.current, |e| e.timeline)
    }

    /// Where `timeline` ended on this path, if it is an ancestor.
    pub fn end_of(&self, timeline: u32) -> Option<Lsn> {
        self.ancestors
            .iter()
            .find(|e| e.timeline == timeline)
            .map(|e| e.switchpoint)
    }

    /// The first position at which two paths disagree about the timeline (the fork), or
    /// None when they never do.
    pub fn fork_with(&self, other: &TimelinePath) -> Option<Lsn> {
        let mut points: Vec<Lsn> = std::iter::once(Lsn(0))
            .chain(self.ancestors.iter().map(|e| e.switchpoint))
            .chain(other.ancestors.iter().map(|e| e.switchpoint))
            .collect();
        points.sort();
        points
            .into_iter()
            .find(|&p| self.timeline_at(p) != other.timeline_at(p))
    }
}

/// Parses a `.history` file: `parentTLI <tab> switchpoint <tab> reason` per line, `#`
/// comments and blank lines ignored.
pub fn parse(text: &str) -> anyhow::Result<Vec<HistoryEntry>> {
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.splitn(3, char::is_whitespace);
        let bad = || format!("timeline history line {}: '{line}'", n + 1);
        let timeline = fields
            .next()
            .and_then(|t| t.parse().ok())
            .with_context(bad)?;
        let switchpoint = fields
            .next()
            .and_then(|l| l.parse().ok())
            .with_context(bad)?;
        entries.push(HistoryEntry {
            timeline,
            switchpoint,
            reason: fields.next().unwrap_or("").trim().to_string(),
        });
    }
    Ok(entries)
}

/// Reads the ancestors of `timeline` from the server's `pg_wal`. Timeline 1 has none.
/// Needs superuser or `pg_read_server_files`.
pub async fn read(client: &Client, timeline: u32) -> anyhow::Result<Vec<HistoryEntry>> {
    if timeline <= 1 {
        return Ok(Vec::new());
    }
    let file = format!("pg_wal/{timeline:08X}.history");
    let row = client
        .query_one("SELECT pg_read_file($1)", &[&file])
        .await
        .with_context(|| {
            format!("cannot read {file} from the server (needs superuser or pg_read_server_files)")
        })?;
    let text: String = row.get(0);
    parse(&text).with_context(|| format!("in {file}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lsn(text: &str) -> Lsn {
        text.parse().unwrap()
    }

    #[test]
    fn parses_postgres_history_files() {
        let text = "1\t0/3000000\tno recovery target specified\n\n\
                    2\t0/5000A28\tbefore 2026-11-21 12:00:00+00\n";
        let entries = parse(text).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].timeline, 2);
        assert_eq!(entries[1].switchpoint, lsn("0/5000A28"));
        assert_eq!(entries[1].reason, "before 2026-11-21 12:00:00+00");
        assert!(parse("x\t0/1\n").is_err());
        assert!(parse("1\tnope\n").is_err());
    }

    #[test]
    fn timeline_at_and_forks() {
        let restored = TimelinePath {
            ancestors: parse("1\t0/3000000\tx\n").unwrap(),
            current: 2,
        };
        assert_eq!(restored.timeline_at(lsn("0/2FFFFFF")), 1);
        assert_eq!(restored.timeline_at(lsn("0/3000000")), 2);
        assert_eq!(restored.end_of(1), Some(lsn("0/3000000")));
        assert_eq!(restored.end_of(2), None);

        let original = TimelinePath {
            ancestors: Vec::new(),
            current: 1,
        };
        assert_eq!(original.fork_with(&restored), Some(lsn("0/3000000")));
        assert_eq!(original.fork_with(&original), None);

        // Two restores from the same ancestry, each on its own new timeline.
        let sibling = TimelinePath {
            ancestors: parse("1\t0/4000000\tx\n").unwrap(),
            current: 3,
        };
        assert_eq!(sibling.fork_with(&restored), Some(lsn("0/3000000")));
    }
}

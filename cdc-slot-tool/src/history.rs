//! Timeline history: which timelines led to the server's current one and where each ended.
//!
//! After a point-in-time restore the server continues on a new timeline that branched off
//! at the recovery end point; `pg_wal/<TLI>.history` lists every ancestor timeline with its
//! switch point. That is what tells a consumer's saved position apart from a position on a
//! history that no longer exists.

use anyhow::Context;
use tokio_postgres::Client;

use common::lsn::Lsn;
use common::wal::history::{self, HistoryEntry};

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

/// Reads the ancestors of `timeline` from the server's `pg_wal`. Timeline 1 has none.
/// Needs superuser or `pg_read_server_files`.
pub async fn read(client: &Client, timeline: u32) -> anyhow::Result<Vec<HistoryEntry>> {
    if timeline <= 1 {
        return Ok(Vec::new());
    }
    let file = format!("pg_wal/{}", history::file_name(timeline));
    let row = client
        .query_one("SELECT pg_read_file($1)", &[&file])
        .await
        .with_context(|| {
            format!("cannot read {file} from the server (needs superuser or pg_read_server_files)")
        })?;
    let text: String = row.get(0);
    Ok(history::parse(text.as_bytes(), &file)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lsn(text: &str) -> Lsn {
        text.parse().unwrap()
    }

    fn parse(text: &str) -> Result<Vec<HistoryEntry>, history::HistoryError> {
        history::parse(text.as_bytes(), "00000002.history")
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

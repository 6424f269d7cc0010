//! How a diff or incr finds the changed pages of a relation file: from the WAL between its
//! reference's start and its own (`common::wal::blocks`), reading only those pages, or by
//! reading the whole file for its page LSNs (a scan). Each archived segment's block summary
//! (stored by `wal-archive push`) is read; a segment without one is decoded, streamed from
//! the data directory's `pg_wal` while it still holds it, else from the repository's archive
//! (decrypted with `BACKUP_ENCRYPTION_IDENTITY_FILE` when it is encrypted).

use std::io::{self, Read, Seek};
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use common::lsn::Lsn;
use common::physical::datadir::PathClass;
use common::physical::filelist::mtime_ns;
use common::repo::Repository;
use common::wal::blocks::{self, ChangedBlocks, SegmentReader};
use common::wal::{segment_name, WalArchive};
use serde::Serialize;

use super::Found;
use crate::reference::Reference;

/// `--changed-pages`: how a diff or incr finds the changed pages of a relation file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PagePicking {
    /// From the WAL unless reading it costs more than half of reading the changed relation
    /// files (a segment summarized by `wal-archive push` costs little, one to decode its
    /// size), else by a scan; a scan too when the WAL cannot be read (said in a warning).
    Auto,
    /// From the WAL; the backup fails when it cannot be read.
    Wal,
    /// Read every changed relation file whole for its page LSNs.
    Scan,
}

/// How the changed pages were found, in the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PickedBy {
    Wal,
    Scan,
}

/// The changed blocks from the WAL when `picking` calls for them, `None` for a scan.
pub fn pick(
    picking: PagePicking,
    pgdata: &Path,
    repo: &Repository,
    reference: &Reference,
    found: &[Found],
    range: (u32, Lsn),
    segment_size: u64,
) -> anyhow::Result<Option<ChangedBlocks>> {
    let (timeline, start) = range;
    let budget = match picking {
        PagePicking::Scan => return Ok(None),
        PagePicking::Wal => None,
        PagePicking::Auto => Some(changed_relation_bytes(found, reference) / 2),
    };
    let began = Instant::now();
    let wal = Wal {
        pgdata,
        archive: WalArchive::new(repo),
        timeline,
        segment_size,
    };
    match wal.changes(reference.start_lsn, start, budget) {
        Err(e) if e.is::<OverBudget>() => {
            tracing::info!("finding the changed pages by reading the changed relation files: {e}");
            Ok(None)
        }
        Ok((changed, summarized)) => {
            tracing::info!(
                "changed pages found in {} MiB of WAL ({} records; {summarized} segments of {} from their summaries) in {:.0?}",
                changed.bytes >> 20,
                changed.records,
                segments_between(reference.start_lsn, start, segment_size),
                began.elapsed()
            );
            Ok(Some(changed))
        }
        Err(e) if picking == PagePicking::Auto => {
            tracing::warn!(
                "cannot find the changed pages in the WAL ({e:#}): reading the changed relation files whole instead"
            );
            Ok(None)
        }
        Err(e) => Err(e.context(format!(
            "cannot find the changed pages in the WAL from {} to {start} (--changed-pages wal; auto would read the changed files whole)",
            reference.start_lsn
        ))),
    }
}

/// Bytes of the relation files that changed since the reference (a scan reads them whole).
fn changed_relation_bytes(found: &[Found], reference: &Reference) -> u64 {
    found
        .iter()
        .filter(|f| f.class == PathClass::RelationMain)
        .filter_map(|f| {
            let old = reference.files.get(&f.rel)?;
            let meta = std::fs::metadata(&f.abs).ok()?;
            (meta.len() != old.size || mtime_ns(&meta) != old.mtime_ns).then_some(meta.len())
        })
        .sum()
}

fn segments_between(from: Lsn, to: Lsn, segment_size: u64) -> u64 {
    to.0 / segment_size - from.0 / segment_size + 1
}

/// What reading a segment's summary counts for against the budget of [`Wal::changes`].
const SUMMARY_COST: u64 = 256 << 10;

/// Reading the WAL would cost more than reading the changed files.
#[derive(Debug, thiserror::Error)]
#[error("the WAL since the reference would cost more to read than half of the changed relation files ({} MiB)", .0 >> 20)]
struct OverBudget(u64);

/// Where the WAL of the backup's timeline is read from.
struct Wal<'a> {
    pgdata: &'a Path,
    archive: WalArchive,
    timeline: u32,
    segment_size: u64,
}

impl Wal<'_> {
    /// What the records from `from` up to `to` changed, and how many segments' summaries
    /// (made by `wal-archive push`) gave it; a segment without one (not archived yet, or
    /// archived by another tool) is decoded, the segment being written up to `to`. With a
    /// `budget` (bytes), an [`OverBudget`] error as soon as the summaries read and the
    /// segments to decode cost more.
    fn changes(
        &self,
        from: Lsn,
        to: Lsn,
        budget: Option<u64>,
    ) -> anyhow::Result<(ChangedBlocks, u64)> {
        let (first, last) = (from.0 / self.segment_size, to.0 / self.segment_size);
        let mut changed = ChangedBlocks::default();
        let mut summarized = 0;
        let mut spent = 0u64;
        let mut spend = |cost: u64| -> anyhow::Result<()> {
            spent += cost;
            match budget {
                Some(budget) if spent > budget => Err(OverBudget(budget * 2).into()),
                _ => Ok(()),
            }
        };
        for segno in first..=last {
            let name = segment_name(self.timeline, segno, self.segment_size);
            let stored = if segno < last {
                self.archive.summary(&name).unwrap_or_else(|e| {
                    tracing::warn!("{e:#}: decoding {name} instead");
                    None
                })
            } else {
                None
            };
            let summary = match stored {
                Some(summary) => {
                    spend(SUMMARY_COST)?;
                    summarized += 1;
                    summary
                }
                None => {
                    let until = (segno == last).then_some(to);
                    let bytes = until.map_or(self.segment_size, |u| u.0 % self.segment_size);
                    spend(bytes)?;
                    blocks::summarize_stream(self.open(segno)?, segno, self.segment_size, until)
                        .with_context(|| format!("cannot decode WAL segment {name}"))?
                }
            };
            if let Some(tail) = summary.tail {
                // The segment's last record, cut inside its headers: read across the two.
                let open = |segno| self.open(segno);
                let record =
                    blocks::changed_blocks(open, tail, Lsn(tail.0 + 1), self.segment_size)?;
                changed.merge(record);
            }
            changed.merge(summary.changed);
        }
        changed.bytes = to.0.saturating_sub(from.0);
        Ok((changed.finish(), summarized))
    }

    /// Streams segment `segno`: the data directory's copy when it is that segment, else the
    /// archive's.
    fn open(&self, segno: u64) -> anyhow::Result<SegmentReader<'static>> {
        let name = segment_name(self.timeline, segno, self.segment_size);
        let local = self.pgdata.join("pg_wal").join(&name);
        match self.open_local(&local, segno) {
            Ok(Some(stream)) => {
                tracing::debug!("WAL segment {name} read from {}", local.display());
                return Ok(stream);
            }
            Ok(None) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", local.display())),
        }
        let (plain, shown) = self.archive.open_plain(&name)?.with_context(|| {
            format!(
                "WAL segment {name} is neither in {} nor in the archive {}",
                local.display(),
                self.archive.describe()
            )
        })?;
        tracing::debug!("WAL segment {name} read from {shown}");
        Ok(plain)
    }

    /// The data directory's copy of segment `segno`, unless it holds another segment now
    /// (recycled: renamed for reuse once archived).
    fn open_local(&self, path: &Path, segno: u64) -> io::Result<Option<SegmentReader<'static>>> {
        let mut file = std::fs::File::open(path)?;
        let mut head = [0u8; 16];
        file.read_exact(&mut head)?;
        let address = u64::from_le_bytes(head[8..16].try_into().expect("8 bytes"));
        if address != segno * self.segment_size {
            return Ok(None);
        }
        file.seek(io::SeekFrom::Start(0))?;
        Ok(Some(Box::new(io::BufReader::with_capacity(1 << 18, file))))
    }
}

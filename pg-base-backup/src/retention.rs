//! After a good backup: retention of base sets (a kept diff or incr keeps its whole chain),
//! then expiry of archived WAL that no retained base backup needs.

use common::physical::{chain, PhysicalDetails};
use common::repo::{Kind, Repository};
use common::wal::{segno_of, WalArchive};

use crate::Args;

/// Default age limit of base backups: a week, as the shell scripts these tools replace kept.
pub const DEFAULT_RETENTION_DAYS: u32 = 7;

/// Returns the deleted set ids and the number of expired WAL files.
pub fn apply(args: &Args, repo: &Repository) -> anyhow::Result<(Vec<String>, usize)> {
    if args.retention.no_retention {
        return Ok((Vec::new(), 0));
    }
    let dry_run = args.retention.dry_run_retention;
    let policy = args.retention.policy(DEFAULT_RETENTION_DAYS);
    let decisions = policy.apply_keeping(repo, Kind::Base, dry_run, chain::dependencies)?;
    let deleted: Vec<String> = decisions
        .into_iter()
        .filter(|d| !d.keep)
        .map(|d| d.id)
        .collect();
    // WAL before the oldest remaining base backup's start can restore nothing. A remaining
    // diff or incr keeps its chain, whose full is older than it, so the oldest remaining set
    // is a full (or a set whose chain was already broken, which WAL cannot mend).
    let remaining = repo.complete_sets(Kind::Base)?;
    let oldest = remaining
        .iter()
        .find(|s| !(dry_run && deleted.contains(&s.id)));
    let Some((oldest, manifest)) = oldest.and_then(|s| s.manifest().map(|m| (s, m))) else {
        return Ok((deleted, 0));
    };
    let details = PhysicalDetails::from_manifest(manifest)?;
    let keep_from = segno_of(details.start_lsn, details.wal_segment_size);
    let expired =
        WalArchive::new(repo).expire_before(keep_from, details.wal_segment_size, dry_run)?;
    if !expired.is_empty() {
        tracing::info!(
            "{} {} archived WAL files older than base backup {}",
            if dry_run { "would expire" } else { "expired" },
            expired.len(),
            oldest.id
        );
    }
    Ok((deleted, expired.len()))
}

//! Before restoring: the archive must hold every segment recovery will ask for, or recovery
//! would take the first missing segment for the end of the archive and stop early, silently,
//! at a wrong point.

use common::physical::{PhysicalDetails, WalMethod};
use common::repo::Repository;
use common::wal::{segno_of, WalArchive};

use crate::target::Target;

pub fn check_continuity(
    repo: &Repository,
    details: &PhysicalDetails,
    target: &Target,
) -> anyhow::Result<()> {
    let archive = WalArchive::new(repo);
    let size = details.wal_segment_size;
    let tli = details.timeline;
    // WAL up to the stop LSN is inside the tarball with --wal-method fetch.
    let from = match details.wal_method {
        WalMethod::Archive => segno_of(details.start_lsn, size),
        WalMethod::Fetch => segno_of(details.stop_lsn, size) + 1,
    };
    let present = archive.segnos(tli, size)?;
    let newest = present.last().copied();
    let to = match (target, newest) {
        (Target::Immediate, _) => segno_of(details.stop_lsn, size),
        (Target::Lsn(lsn), _) => segno_of(*lsn, size),
        (_, Some(newest)) => newest,
        (_, None) => {
            check_nothing_needed(details, from, size)?;
            // With no archive at all, restore_command would fail on recovery's first
            // request (the archive is missing, so wal-archive fetch stops recovery).
            if !archive.exists()? {
                anyhow::bail!(
                    "the WAL archive {} does not exist, so recovery cannot go past the end of base backup {}: pass --target immediate to restore just the backup, or point --backup-dir at the repository that holds the archive",
                    archive.describe(),
                    details.stop_lsn
                );
            }
            return Ok(());
        }
    };
    if to < from {
        return Ok(());
    }
    let missing = archive.missing(tli, from, to, size)?;
    if let Some(first) = missing.first() {
        anyhow::bail!(
            "the WAL archive {} lacks {} segment(s) recovery needs, first {first}; restoring would stop there. Restore from a later base backup, or pass --accept-wal-gaps",
            archive.describe(),
            missing.len()
        );
    }
    Ok(())
}

fn check_nothing_needed(details: &PhysicalDetails, from: u64, size: u64) -> anyhow::Result<()> {
    if details.wal_method == WalMethod::Archive && from <= segno_of(details.stop_lsn, size) {
        anyhow::bail!(
            "the WAL archive has no segment of timeline {} although base backup needs {}..; is BACKUP_DIR the right repository?",
            details.timeline,
            details.start_lsn
        );
    }
    Ok(())
}

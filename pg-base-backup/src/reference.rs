//! The reference of a diff or incr backup: the set whose start LSN the new set's pages are
//! compared with (incr: the newest backup of any type; diff: the newest full), its file list,
//! and the chain a restore applies before the new set. Only sets read from the data
//! directory (`--pgdata`) have a file list; without a usable reference the backup is full.

use common::lsn::Lsn;
use common::physical::filelist::{self, FileList};
use common::physical::{BackupType, CaptureMethod, PhysicalDetails};
use common::repo::{Kind, Repository};

/// What a diff or incr is taken against.
pub struct Reference {
    pub id: String,
    pub start_lsn: Lsn,
    /// What a restore applies before the new set: the reference's chain, then the reference.
    pub chain: Vec<String>,
    pub files: FileList,
}

/// The reference for `wanted` on the server `system_identifier`, timeline `timeline`, or
/// `None` (with the reason logged) when the backup must be full.
pub fn choose(
    repo: &Repository,
    wanted: BackupType,
    system_identifier: &str,
    timeline: u32,
) -> anyhow::Result<Option<Reference>> {
    if wanted == BackupType::Full {
        return Ok(None);
    }
    let mut candidates = Vec::new();
    for set in repo.complete_sets(Kind::Base)?.into_iter().rev() {
        let Some(manifest) = set.manifest().cloned() else {
            continue;
        };
        let Ok(details) = PhysicalDetails::from_manifest(&manifest) else {
            continue;
        };
        if details.method != CaptureMethod::DataDir
            || details.system_identifier != system_identifier
            || (wanted == BackupType::Diff && details.backup_type != BackupType::Full)
        {
            continue;
        }
        candidates.push((set, manifest, details));
        break;
    }
    let Some((set, manifest, details)) = candidates.pop() else {
        tracing::warn!(
            "no {} backup taken with --pgdata of this system to build a {} on: taking a full backup",
            if wanted == BackupType::Diff { "full" } else { "base" },
            wanted.name()
        );
        return Ok(None);
    };
    if details.timeline != timeline {
        tracing::warn!(
            "the newest base backup {} is on timeline {}, the server on {timeline} (restored or promoted since): taking a full backup",
            set.id,
            details.timeline
        );
        return Ok(None);
    }
    let files = filelist::load(repo, &set, &manifest)?;
    let mut chain = details.chain.clone();
    chain.push(set.id.clone());
    tracing::info!(
        "{} backup against base backup {} (pages newer than LSN {})",
        wanted.name(),
        set.id,
        details.start_lsn
    );
    Ok(Some(Reference {
        id: set.id,
        start_lsn: details.start_lsn,
        chain,
        files,
    }))
}

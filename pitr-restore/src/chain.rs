//! The sets a restore unpacks: the chosen base backup alone, or for a diff or incr set its
//! whole chain (the full first, the chosen set last), each link's tarball checked as it is
//! unpacked, and the file list (`files.json`) of the chosen set when it has one.

use anyhow::Context;
use common::encryption::Identities;
use common::physical::filelist::{self, FileList};
use common::physical::{chain, PhysicalDetails, BASE_TAR};
use common::repo::{Kind, Repository, SetInfo};
use common::FileEntry;

use crate::extract::{self, Members};

/// One set a restore unpacks.
#[derive(Debug, Clone)]
pub struct Link {
    pub set: SetInfo,
    pub details: PhysicalDetails,
    pub tar: FileEntry,
}

/// The sets a restore unpacks, in order: never empty, the chosen set last.
#[derive(Debug, Clone)]
pub struct Chain {
    links: Vec<Link>,
}

impl Chain {
    /// The chain of `set` (just `set` for a full backup): every link present and complete,
    /// else an error naming the link (nothing has been written yet).
    pub fn resolve(
        repo: &Repository,
        set: SetInfo,
        details: PhysicalDetails,
    ) -> anyhow::Result<Chain> {
        let links = if details.chain.is_empty() {
            vec![chain::Link { set, details }]
        } else {
            // Every set, the incomplete too: a link without its manifest is named as such.
            chain::resolve(&repo.list(Kind::Base)?, &set)?
        };
        let links = links
            .into_iter()
            .map(|link| {
                let tar = tarball(&link.set)?;
                Ok(Link {
                    set: link.set,
                    details: link.details,
                    tar,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Chain { links })
    }

    /// The chosen set.
    pub fn last(&self) -> &Link {
        self.links.last().expect("a chain has its chosen set")
    }

    pub fn links(&self) -> &[Link] {
        &self.links
    }

    /// Ids of the sets unpacked, in order.
    pub fn ids(&self) -> Vec<String> {
        self.links.iter().map(|l| l.set.id.clone()).collect()
    }

    /// Stored bytes of every link's tarball: what the restore reads.
    pub fn stored_bytes(&self) -> u64 {
        self.links.iter().map(|l| l.tar.size).sum()
    }

    /// Before anything is written: every encrypted link opens with `identities`.
    pub fn check_keys(
        &self,
        repo: &Repository,
        identities: Option<&Identities>,
    ) -> anyhow::Result<()> {
        for link in &self.links {
            extract::check_key(repo, &link.set, &link.tar, identities)?;
        }
        Ok(())
    }

    /// The chosen set's file list (stored in clear): `None` for a set without one (taken by
    /// pg_basebackup), which a chain's set cannot be.
    pub fn file_list(&self, repo: &Repository) -> anyhow::Result<Option<FileList>> {
        let last = self.last();
        let manifest = complete(&last.set)?;
        if manifest.stored(filelist::FILE_LIST).is_none() && self.links.len() == 1 {
            return Ok(None);
        }
        filelist::load(repo, &last.set, manifest).map(Some)
    }

    /// Each link's file list and the hashes of what it stored, for a delta restore.
    pub fn states(
        &self,
        repo: &Repository,
        identities: Option<&Identities>,
    ) -> anyhow::Result<Vec<crate::delta::LinkState>> {
        self.links
            .iter()
            .map(|link| {
                let manifest = complete(&link.set)?;
                Ok(crate::delta::LinkState {
                    list: filelist::load(repo, &link.set, manifest)?,
                    hashes: filelist::load_hashes(repo, &link.set, manifest, identities)?,
                    start_ns: link.details.start_time.unix_timestamp_nanos(),
                })
            })
            .collect()
    }

    /// Unpacks the links in order into `pgdata` (later whole files replace earlier ones,
    /// incremental members patch them, the chosen set's backup_label wins): of link `i`, the
    /// members `members(i)` picks; a link it gives `None` for is not read at all.
    pub fn extract<'m>(
        &self,
        repo: &Repository,
        identities: Option<&Identities>,
        pgdata: &std::path::Path,
        members: impl Fn(usize) -> Option<Members<'m>>,
        progress: &indicatif::ProgressBar,
    ) -> anyhow::Result<()> {
        for (index, link) in self.links.iter().enumerate() {
            let Some(members) = members(index) else {
                tracing::info!(
                    "nothing to take from {} backup {}: not read",
                    link.details.backup_type.name(),
                    link.set.id
                );
                progress.inc(link.tar.size);
                continue;
            };
            if self.links.len() > 1 {
                tracing::info!(
                    "unpacking {} backup {}",
                    link.details.backup_type.name(),
                    link.set.id
                );
            }
            extract::extract(
                repo, &link.set, &link.tar, identities, pgdata, members, progress,
            )
            .with_context(|| format!("base backup {}", link.set.id))?;
        }
        Ok(())
    }
}

/// The manifest of a set of the chain, which are complete sets.
fn complete(set: &SetInfo) -> anyhow::Result<&common::Manifest> {
    set.manifest()
        .with_context(|| format!("base set {} has no valid manifest", set.id))
}

/// The base tarball of a set.
fn tarball(set: &SetInfo) -> anyhow::Result<FileEntry> {
    complete(set)?
        .files
        .iter()
        .find(|f| f.path.starts_with(BASE_TAR))
        .cloned()
        .with_context(|| format!("base backup {} has no {BASE_TAR} file", set.id))
}

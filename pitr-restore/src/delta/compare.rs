//! What a delta restore does to each file: the local directory compared with the chain's
//! file lists, by size and content hash, or by size and a modification time that can be
//! trusted.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::Context;
use common::physical::filehash::{self, LocalHash};
use common::physical::filelist::{FileHashes, FileList, ListedFile, Stored};
use serde::Serialize;

use crate::conform::{self, Unlisted};
use crate::extract::{Members, ALWAYS_WRITTEN, PG_CONTROL};

use super::{PENDING, PG_CONTROL_NEW};

/// One link of the chain as a delta restore compares with it: its file list, the hashes of
/// the files it stored and when it started.
pub struct LinkState {
    pub list: FileList,
    pub hashes: FileHashes,
    /// The backup's start, in nanoseconds since the epoch.
    pub start_ns: i128,
}

/// How a delta restore tells a local file equal to the backup's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// By size and content hash: every candidate file is read.
    Checksum,
    /// By size and modification time where the time can be trusted, else by checksum.
    Timestamp,
}

/// How much older than a backup's start a listed modification time must be for a local file
/// with that time to be trusted: a file written again after the backup read it gets a later
/// time, however coarse the file system's clock (well under a second).
const SETTLED_NS: i128 = 1_000_000_000;

/// What a delta restore does to each file.
#[derive(Debug, Default)]
pub struct Plan {
    /// Per link of the chain, the listed files whose members are taken from it: a local file
    /// that equals a file's state at some link needs only the links after it (an incremental
    /// chain restored into its own full's restore reads the incr's pages, not the full).
    pub(super) take: Vec<HashSet<String>>,
    /// Files and directories the backup does not have.
    pub(super) unlisted: Unlisted,
    /// Local backup_label and tablespace_map: replaced by the set's own (or gone).
    pub(super) labels: Vec<PathBuf>,
    /// Listed paths that are directories or special files here: removed before rewriting.
    pub(super) in_the_way: Vec<PathBuf>,
    pub(super) report: Report,
}

/// What a delta restore did, in the summary.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Report {
    pub kept_files: u64,
    pub rewritten_files: u64,
    pub removed_files: u64,
    /// Bytes of the files rewritten (their size in the backup).
    pub rewritten_bytes: u64,
    /// Local files read to compare their content (all candidates but those
    /// `--delta-by-timestamp` trusted by size and time).
    pub hashed_files: u64,
    pub hashed_bytes: u64,
    /// The sets of the chain whose tarballs were read (the chosen one always is).
    pub sets_read: Vec<String>,
}

impl Plan {
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// Names the links read, of `ids` (the chain's set ids), in the report.
    pub fn name_sets_read(&mut self, ids: &[String]) {
        self.report.sets_read = (0..ids.len())
            .filter(|&link| self.members(link).is_some())
            .map(|link| ids[link].clone())
            .collect();
    }

    /// The members of link `link`'s tarball to write; `None`: nothing is taken from it (the
    /// chosen set, the last link, always gives its backup_label and missing directories).
    pub fn members(&self, link: usize) -> Option<Members<'_>> {
        let take = self.take.get(link)?;
        (!take.is_empty() || link + 1 == self.take.len()).then_some(Members::Only {
            rewrite: take,
            pg_control_as: PG_CONTROL_NEW,
        })
    }
}

/// Where a listed file's content comes from: the first link whose member of it is applied
/// (`links.len()`: nothing, the local file is the chosen set's).
fn first_needed(
    path: &str,
    local: Option<&LocalHash>,
    links: &[LinkView<'_>],
) -> anyhow::Result<usize> {
    let n = links.len();
    // The state of `path` at link k: its size there, and the hash of the newest link up to k
    // that stored it.
    if let Some(local) = local {
        let mut stored_hash: Option<&String> = None;
        let mut states = Vec::with_capacity(n);
        for link in links {
            let entry = link.files.get(path);
            if let Some(entry) = entry {
                if entry.stored != Stored::Unchanged {
                    stored_hash = link.hashes.get(path);
                }
            } else {
                stored_hash = None;
            }
            states.push(entry.map(|e| (e.size, stored_hash)));
        }
        for k in (0..n).rev() {
            match states[k] {
                Some((s, Some(h))) if s == local.size && local.matches(h) => return Ok(k + 1),
                Some(_) => {}
                None => break,
            }
        }
    }
    links
        .iter()
        .rposition(|link| {
            link.files
                .get(path)
                .is_some_and(|e| e.stored == Stored::Whole)
        })
        .with_context(|| {
            format!("no base backup of the chain holds {path} whole: the chain is damaged")
        })
}

/// With [`Compare::Timestamp`], as [`first_needed`] for a local file that still has the size
/// and modification time some link listed, that time settled before the link started (so
/// its content is the one the link read); `None`: the time cannot tell, hash the file.
fn first_by_timestamp(
    path: &str,
    local: &conform::LocalFile,
    links: &[LinkView<'_>],
) -> Option<usize> {
    for (k, link) in links.iter().enumerate().rev() {
        let entry = link.files.get(path)?;
        if entry.size == local.size
            && entry.mtime_ns == local.mtime_ns
            && entry.mtime_ns < link.start_ns - SETTLED_NS
        {
            return Some(k + 1);
        }
    }
    None
}

/// A link's list by path.
struct LinkView<'a> {
    files: HashMap<&'a str, &'a ListedFile>,
    hashes: &'a FileHashes,
    start_ns: i128,
}

impl<'a> LinkView<'a> {
    fn of(link: &'a LinkState) -> Self {
        LinkView {
            files: link
                .list
                .files
                .iter()
                .map(|f| (f.path.as_str(), f))
                .collect(),
            hashes: &link.hashes,
            start_ns: link.start_ns,
        }
    }
}

/// Compares `pgdata` with the backup's file list: a local file whose size is the listed one
/// and whose content hash is in `hashes` (or, by [`Compare::Timestamp`], whose time is a
/// listed one that can be trusted) is kept. Only reads.
pub fn compare(
    pgdata: &Path,
    links: &[LinkState],
    how: Compare,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<Plan> {
    let list = &links.last().context("a chain has its chosen set")?.list;
    let local = conform::walk(pgdata, &[PENDING])?;
    let here: HashMap<&str, &conform::LocalFile> = local
        .files
        .iter()
        .filter_map(|f| Some((f.key()?, f)))
        .collect();
    let dirs: HashSet<&Path> = local.dirs.iter().map(PathBuf::as_path).collect();
    let views: Vec<LinkView<'_>> = links.iter().map(LinkView::of).collect();
    let mut plan = Plan::default();
    let mut candidates = Vec::new();
    let mut by_time = HashMap::new();
    for file in &list.files {
        match here.get(file.path.as_str()) {
            Some(found) if found.odd => plan.in_the_way.push(found.relative.clone()),
            Some(found) if file.path != PG_CONTROL => {
                let trusted = (how == Compare::Timestamp)
                    .then(|| first_by_timestamp(&file.path, found, &views))
                    .flatten();
                match trusted {
                    Some(first) => _ = by_time.insert(file.path.as_str(), first),
                    None => candidates.push(file),
                }
            }
            None if dirs.contains(Path::new(&file.path)) => {
                plan.in_the_way.push(PathBuf::from(&file.path));
            }
            _ => {}
        }
    }
    plan.report.hashed_files = candidates.len() as u64;
    plan.report.hashed_bytes = candidates.iter().map(|f| f.size).sum();
    progress.set_length(plan.report.hashed_bytes);
    let hashed = local_hashes(pgdata, &candidates, progress)?;
    plan.take = vec![HashSet::new(); links.len()];
    for file in &list.files {
        let first = match by_time.get(file.path.as_str()) {
            Some(&first) => first,
            None => first_needed(&file.path, hashed.get(file.path.as_str()), &views)?,
        };
        if first == links.len() {
            plan.report.kept_files += 1;
            continue;
        }
        plan.report.rewritten_files += 1;
        plan.report.rewritten_bytes += file.size;
        for (view, take) in views.iter().zip(plan.take.iter_mut()).skip(first) {
            if view
                .files
                .get(file.path.as_str())
                .is_some_and(|e| e.stored != Stored::Unchanged)
            {
                take.insert(file.path.clone());
            }
        }
    }
    plan.unlisted = conform::unlisted(&local, list);
    plan.report.removed_files = plan.unlisted.files.len() as u64;
    plan.labels = ALWAYS_WRITTEN
        .iter()
        .filter(|name| here.contains_key(*name))
        .map(PathBuf::from)
        .collect();
    Ok(plan)
}

/// Size and hash of the local copy of each of `files`, hashed on a few threads.
fn local_hashes<'a>(
    pgdata: &Path,
    files: &[&'a ListedFile],
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<HashMap<&'a str, LocalHash>> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4));
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|worker| {
                scope.spawn(move || -> anyhow::Result<Vec<(&'a str, LocalHash)>> {
                    let mut hashed = Vec::new();
                    for file in files.iter().skip(worker).step_by(workers) {
                        common::interrupt::checkpoint();
                        let path = pgdata.join(&file.path);
                        let found = local_state(&path, &file.path)
                            .with_context(|| format!("cannot read {}", path.display()))?;
                        hashed.push((file.path.as_str(), found));
                        progress.inc(file.size);
                    }
                    Ok(hashed)
                })
            })
            .collect();
        let mut hashed = HashMap::new();
        for handle in handles {
            hashed.extend(handle.join().expect("hashing thread panicked")?);
        }
        Ok(hashed)
    })
}

/// Size and content hash of a local file as the backup would have it: postgresql.auto.conf
/// without the recovery settings an earlier restore appended (they are written anew), so
/// that it does not take its whole chain's tarballs to restore 100 bytes.
fn local_state(path: &Path, listed: &str) -> std::io::Result<LocalHash> {
    if listed != crate::recovery::AUTO_CONF {
        return filehash::hash_file(path);
    }
    let text = std::fs::read(path)?;
    Ok(LocalHash::of(crate::recovery::without_recovery_block(
        &text,
    )))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::super::{begin, system_identifier};
    use super::*;

    /// Writes a file; returns its list entry and hash.
    fn listed(root: &Path, path: &str, bytes: &[u8]) -> (ListedFile, (String, String)) {
        let full = root.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(&full, bytes).unwrap();
        let local = filehash::hash_file(&full).unwrap();
        let file = ListedFile {
            path: path.into(),
            size: local.size,
            mtime_ns: 0,
            stored: Stored::Whole,
        };
        (file, (path.to_string(), local.pieces))
    }

    #[test]
    fn a_file_at_an_earlier_links_state_needs_only_the_links_after_it() {
        let entry = |stored| ListedFile {
            path: "base/5/16384".into(),
            size: 16384,
            mtime_ns: 0,
            stored,
        };
        let link = |stored, hash: Option<&str>| {
            let list = FileList {
                dirs: Vec::new(),
                files: vec![entry(stored)],
            };
            let hashes: FileHashes = hash
                .map(|h| [("base/5/16384".to_string(), h.to_string())].into())
                .unwrap_or_default();
            LinkState {
                list,
                hashes,
                start_ns: 0,
            }
        };
        // full (A), incr unchanged, incr with changed pages (B).
        let links = [
            link(Stored::Whole, Some("A")),
            link(Stored::Unchanged, None),
            link(Stored::Pages, Some("B")),
        ];
        let views: Vec<LinkView<'_>> = links.iter().map(LinkView::of).collect();
        // Hashes in the older form (no pieces prefix) compare with the whole content's.
        let first = |local: Option<(u64, &str)>| {
            let local = local.map(|(size, whole)| LocalHash {
                size,
                pieces: String::new(),
                whole: whole.to_string(),
            });
            first_needed("base/5/16384", local.as_ref(), &views).unwrap()
        };
        assert_eq!(
            first(Some((16384, "B"))),
            3,
            "already the chosen set's: kept"
        );
        assert_eq!(
            first(Some((16384, "A"))),
            2,
            "the full's state: only the pages of the last incr"
        );
        assert_eq!(first(Some((16384, "C"))), 0, "unknown: from the full");
        assert_eq!(first(Some((8192, "A"))), 0, "another size");
        assert_eq!(first(None), 0, "missing");
    }

    #[test]
    fn by_timestamp_a_settled_listed_time_is_trusted_and_anything_else_is_hashed() {
        const S: i128 = 1_000_000_000;
        let root = tempfile::tempdir().unwrap();
        let start_ns = 1_800_000_000 * S;
        let mut files = Vec::new();
        // (path, listed mtime, local mtime): settled and equal; equal but written within the
        // second before the start; another time.
        for (path, listed_ns, local_ns) in [
            ("base/1/settled", start_ns - 5 * S + 7, start_ns - 5 * S + 7),
            ("base/1/fresh", start_ns - S / 2, start_ns - S / 2),
            ("base/1/touched", start_ns - 5 * S, start_ns + 60 * S),
        ] {
            let (mut file, _) = listed(root.path(), path, &[9; 8192]);
            file.mtime_ns = listed_ns;
            let to = std::time::UNIX_EPOCH
                + std::time::Duration::from_nanos(u64::try_from(local_ns).unwrap());
            std::fs::File::open(root.path().join(path))
                .unwrap()
                .set_modified(to)
                .unwrap();
            files.push(file);
        }
        // Hashes that match nothing: a file kept must have been kept by its time alone.
        let hashes: FileHashes = files
            .iter()
            .map(|f| (f.path.clone(), "not its hash".to_string()))
            .collect();
        let links = [LinkState {
            list: FileList {
                dirs: vec!["base".into(), "base/1".into()],
                files,
            },
            hashes,
            start_ns,
        }];
        let plan = compare(
            root.path(),
            &links,
            Compare::Timestamp,
            &indicatif::ProgressBar::hidden(),
        )
        .unwrap();
        assert_eq!(plan.report.kept_files, 1);
        assert_eq!(plan.report.hashed_files, 2);
        assert_eq!(plan.report.hashed_bytes, 2 * 8192);
        let mut rewrite: Vec<&str> = plan.take[0].iter().map(String::as_str).collect();
        rewrite.sort();
        assert_eq!(rewrite, ["base/1/fresh", "base/1/touched"]);
        // By checksum the same directory is all hashed (and, the hashes matching nothing,
        // all rewritten).
        let plan = compare(
            root.path(),
            &links,
            Compare::Checksum,
            &indicatif::ProgressBar::hidden(),
        )
        .unwrap();
        assert_eq!((plan.report.kept_files, plan.report.hashed_files), (0, 3));
    }

    #[test]
    fn plan_keeps_equal_files_and_rewrites_changed_missing_and_in_the_way_ones() {
        let src = tempfile::tempdir().unwrap();
        let (files, hashes): (Vec<_>, FileHashes) = [
            listed(src.path(), "PG_VERSION", b"15\n"),
            listed(src.path(), "base/1/1259", &[1; 8192]),
            listed(src.path(), "base/1/1249", &[2; 8192]),
            listed(src.path(), "base/1/2608", &[3; 100]),
            listed(src.path(), "base/1/2619", b"x"),
            listed(src.path(), "global/pg_control", &[4; 8192]),
        ]
        .into_iter()
        .unzip();
        let list = FileList {
            dirs: ["base", "base/1", "global"].map(String::from).to_vec(),
            files,
        };
        let here = tempfile::tempdir().unwrap();
        let root = here.path();
        listed(root, "PG_VERSION", b"15\n");
        listed(root, "base/1/1259", &[1; 8192]);
        // Same size, one byte changed.
        let mut changed = vec![2; 8192];
        changed[100] = 0;
        listed(root, "base/1/1249", &changed);
        // base/1/2608 missing; base/1/2619 a directory here.
        std::fs::create_dir_all(root.join("base/1/2619")).unwrap();
        listed(root, "global/pg_control", &[4; 8192]);
        listed(root, "base/1/stray", b"not in the backup");
        listed(root, "backup_label", b"an old label");
        listed(root, "postmaster.opts", b"opts");

        let links = [LinkState {
            list,
            hashes,
            start_ns: 0,
        }];
        let plan = compare(
            root,
            &links,
            Compare::Checksum,
            &indicatif::ProgressBar::hidden(),
        )
        .unwrap();
        let mut rewrite: Vec<&str> = plan.take[0].iter().map(String::as_str).collect();
        rewrite.sort();
        // pg_control is always rewritten (it is put in place last).
        assert_eq!(
            rewrite,
            [
                "base/1/1249",
                "base/1/2608",
                "base/1/2619",
                "global/pg_control"
            ]
        );
        assert_eq!(plan.report.kept_files, 2);
        assert_eq!(plan.report.rewritten_files, 4);
        assert_eq!(plan.report.rewritten_bytes, 8192 + 100 + 1 + 8192);
        assert_eq!(plan.report.removed_files, 2, "{:?}", plan.unlisted);
        assert_eq!(plan.in_the_way, [PathBuf::from("base/1/2619")]);

        let pending = begin(root, 42, &plan).unwrap();
        assert!(!root.join("global/pg_control").exists());
        assert!(!root.join("base/1/stray").exists());
        assert!(!root.join("backup_label").exists());
        assert!(!root.join("base/1/2619").exists());
        assert!(root.join("base/1/1259").exists());
        assert_eq!(system_identifier(root).unwrap(), 42);
        drop(pending);
    }
}

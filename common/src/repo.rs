//! The backup repository under `BACKUP_DIR`: one folder per backup kind, one folder per set.
//!
//! ```text
//! BACKUP_DIR/
//!   base/20261121T020000Z/{base.tar.gz, backup_manifest, manifest.json}
//!   logical/20261121T030000Z/...
//!   kafka/...  slots/...
//!   wal/...                      (continuous archive, laid out by wal-archive)
//!   base/.lock                   (held while a run of that kind writes)
//! ```
//!
//! Set ids are the UTC start time, so they sort chronologically. A set is complete when its
//! `manifest.json` exists; that file is written last.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use time::OffsetDateTime;

use crate::durable::{self, AtomicFile};
use crate::interrupt;
use crate::manifest::{FileEntry, Manifest, SetStatus, MANIFEST_FILE, MANIFEST_VERSION};
use crate::stream::{Compression, Encoder, HashingWriter};
use crate::timefmt;

/// The kinds of backup, each in its own folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Kind {
    /// Physical base backups (pg-base-backup).
    Base,
    /// Continuous WAL archive (wal-archive).
    Wal,
    /// Logical dumps (pg-logical-backup).
    Logical,
    /// Kafka topic exports (kafka-topic-backup).
    Kafka,
    /// Replication-slot metadata (cdc-slot-tool).
    Slots,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Base,
        Kind::Wal,
        Kind::Logical,
        Kind::Kafka,
        Kind::Slots,
    ];

    /// The folder name, also the `kind` in manifests.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Base => "base",
            Kind::Wal => "wal",
            Kind::Logical => "logical",
            Kind::Kafka => "kafka",
            Kind::Slots => "slots",
        }
    }

    /// The kinds that hold backup sets (the WAL archive is a stream of segments instead).
    pub fn has_sets(self) -> bool {
        self != Kind::Wal
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// File name of the per-kind lock.
pub const LOCK_FILE: &str = ".lock";

/// A backup repository rooted at a directory.
#[derive(Debug, Clone)]
pub struct Repository {
    root: PathBuf,
}

/// What listing finds about one set directory.
#[derive(Debug, Clone)]
pub struct SetInfo {
    pub id: String,
    pub dir: PathBuf,
    /// Start time from the id.
    pub started: Option<OffsetDateTime>,
    /// The manifest, when present and valid: the set is complete.
    pub manifest: Option<Manifest>,
    /// Why the manifest could not be read, when it exists but is broken.
    pub manifest_error: Option<String>,
}

impl SetInfo {
    pub fn is_complete(&self) -> bool {
        self.manifest.is_some()
    }
}

impl Repository {
    /// Opens the repository, creating its root (mode 0700) if missing.
    pub fn create(root: &Path) -> anyhow::Result<Repository> {
        durable::create_dir_all(root).with_context(|| {
            format!(
                "cannot create backup directory {} (set --backup-dir or BACKUP_DIR to a writable place)",
                root.display()
            )
        })?;
        Ok(Repository {
            root: root.to_path_buf(),
        })
    }

    /// Opens an existing repository for reading.
    pub fn open(root: &Path) -> anyhow::Result<Repository> {
        if !root.is_dir() {
            anyhow::bail!(
                "backup directory {} does not exist (set --backup-dir or BACKUP_DIR)",
                root.display()
            );
        }
        Ok(Repository {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn kind_dir(&self, kind: Kind) -> PathBuf {
        self.root.join(kind.name())
    }

    /// Takes the lock of a kind, failing at once if another run holds it. Released on drop
    /// (and by the kernel if the process dies, so a crash never leaves a stale lock).
    pub fn lock(&self, kind: Kind) -> anyhow::Result<RepoLock> {
        let dir = self.kind_dir(kind);
        durable::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(durable::FILE_MODE)
            .open(&path)
            .with_context(|| format!("cannot open lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                anyhow::bail!(
                    "another {kind} run holds the repository lock {} ({}); wait for it to finish",
                    path.display(),
                    holder.trim()
                );
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
        file.set_len(0)?;
        writeln!(file, "pid {}", std::process::id())?;
        Ok(RepoLock { _file: file, path })
    }

    /// True when a run of this kind holds the lock right now.
    pub fn is_locked(&self, kind: Kind) -> bool {
        let path = self.kind_dir(kind).join(LOCK_FILE);
        let Ok(file) = File::open(&path) else {
            return false;
        };
        matches!(
            file.try_lock_shared(),
            Err(std::fs::TryLockError::WouldBlock)
        )
    }

    /// Starts a new set of `kind`, in a fresh directory named by the start time.
    pub fn create_set(&self, kind: Kind) -> anyhow::Result<SetWriter> {
        let started_at = timefmt::now();
        let dir = self.kind_dir(kind);
        durable::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let base = timefmt::id_string(started_at);
        for n in 0..1000 {
            let id = if n == 0 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            let set_dir = dir.join(&id);
            match std::fs::DirBuilder::new()
                .mode(durable::DIR_MODE)
                .create(&set_dir)
            {
                Ok(()) => {
                    durable::fsync_dir(&dir)?;
                    return Ok(SetWriter {
                        kind,
                        id,
                        undo: remove_incomplete_set(set_dir.clone()),
                        dir: set_dir,
                        started_at,
                        files: Vec::new(),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot create {}", set_dir.display()))
                }
            }
        }
        anyhow::bail!(
            "too many sets started in the same second in {}",
            dir.display()
        )
    }

    /// Every set directory of a kind, oldest first, complete or not.
    pub fn list(&self, kind: Kind) -> anyhow::Result<Vec<SetInfo>> {
        let dir = self.kind_dir(kind);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
        };
        let mut sets = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
            let id = entry.file_name().to_string_lossy().into_owned();
            if id.starts_with('.') || !entry.file_type()?.is_dir() {
                continue;
            }
            let set_dir = entry.path();
            let (manifest, manifest_error) = if set_dir.join(MANIFEST_FILE).exists() {
                match Manifest::load(&set_dir) {
                    Ok(m) => (Some(m), None),
                    Err(e) => (None, Some(format!("{e:#}"))),
                }
            } else {
                (None, None)
            };
            sets.push(SetInfo {
                started: timefmt::parse_id_time(&id),
                id,
                dir: set_dir,
                manifest,
                manifest_error,
            });
        }
        sets.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(sets)
    }

    /// Complete sets of a kind, oldest first.
    pub fn complete_sets(&self, kind: Kind) -> anyhow::Result<Vec<SetInfo>> {
        Ok(self
            .list(kind)?
            .into_iter()
            .filter(SetInfo::is_complete)
            .collect())
    }

    /// The complete set with this id, or the newest complete set when `id` is None.
    pub fn find(&self, kind: Kind, id: Option<&str>) -> anyhow::Result<(SetInfo, Manifest)> {
        let sets = self.list(kind)?;
        let found = match id {
            Some(id) => {
                let set = sets.into_iter().find(|s| s.id == id).with_context(|| {
                    format!(
                        "no {kind} backup set '{id}' in {} (list them with --output json or ls)",
                        self.kind_dir(kind).display()
                    )
                })?;
                if !set.is_complete() {
                    anyhow::bail!(
                        "{kind} backup set '{id}' is incomplete (no valid manifest{}); choose another",
                        set.manifest_error
                            .as_deref()
                            .map(|e| format!(": {e}"))
                            .unwrap_or_default()
                    );
                }
                set
            }
            None => sets
                .into_iter()
                .rev()
                .find(SetInfo::is_complete)
                .with_context(|| {
                    format!(
                        "no complete {kind} backup set in {}; take one first",
                        self.kind_dir(kind).display()
                    )
                })?,
        };
        let manifest = found.manifest.clone().expect("complete set has a manifest");
        Ok((found, manifest))
    }

    /// Deletes a set: the manifest first, so a half-deleted set reads as incomplete.
    pub fn delete_set(&self, set: &SetInfo) -> io::Result<()> {
        match std::fs::remove_file(set.dir.join(MANIFEST_FILE)) {
            Ok(()) => durable::fsync_dir(&set.dir)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::remove_dir_all(&set.dir)?;
        if let Some(parent) = set.dir.parent() {
            durable::fsync_dir(parent)?;
        }
        Ok(())
    }
}

/// Held while a run writes a kind; dropping it releases the lock.
#[derive(Debug)]
pub struct RepoLock {
    _file: File,
    path: PathBuf,
}

impl RepoLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A set being written. Nothing marks it complete until [`SetWriter::commit`]; a set dropped
/// before that (the run failed) or interrupted (SIGINT, SIGTERM) is removed, so nothing is
/// left that could be mistaken for a backup. A run killed outright (SIGKILL, power loss)
/// leaves a directory without a manifest: incomplete, never chosen, and removed by retention
/// after its grace period.
#[derive(Debug)]
pub struct SetWriter {
    kind: Kind,
    id: String,
    /// Removes the set until its manifest is written.
    undo: interrupt::Undo,
    dir: PathBuf,
    started_at: OffsetDateTime,
    files: Vec<FileEntry>,
}

/// What the tool tells the manifest about the set.
#[derive(Debug, Clone)]
pub struct SetMeta {
    pub tool: &'static str,
    pub tool_version: &'static str,
    pub source: serde_json::Value,
    pub details: serde_json::Value,
}

impl SetWriter {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn started_at(&self) -> OffsetDateTime {
        self.started_at
    }

    pub fn files(&self) -> &[FileEntry] {
        &self.files
    }

    /// Opens a new file of the set that compresses and checksums what is written to it.
    /// `path` is relative to the set; call [`SetFile::finish`] and then [`SetWriter::add`].
    pub fn create_file(
        &self,
        path: &str,
        compression: Compression,
        level: Option<i32>,
        threads: u32,
    ) -> io::Result<SetFile> {
        let target = self.dir.join(path);
        if let Some(parent) = target.parent() {
            durable::create_dir_all(parent)?;
        }
        let file = AtomicFile::create(&target)?;
        let hashing = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
        Ok(SetFile {
            path: path.to_string(),
            compression,
            encoder: compression.encoder(hashing, level, threads)?,
            raw_size: 0,
        })
    }

    /// Records a finished file in the set.
    pub fn add(&mut self, entry: FileEntry) {
        self.files.push(entry);
    }

    /// Records a file that something else (pg_dump, pg_basebackup) wrote into the set
    /// directory: hashes it and makes it private.
    pub fn add_existing(&mut self, path: &str, compression: Compression) -> io::Result<FileEntry> {
        use std::os::unix::fs::PermissionsExt;
        let full = self.dir.join(path);
        std::fs::set_permissions(&full, std::fs::Permissions::from_mode(durable::FILE_MODE))?;
        File::open(&full)?.sync_all()?;
        let sum = crate::stream::checksum_file(&full)?;
        let entry = FileEntry {
            path: path.to_string(),
            size: sum.size,
            sha256: sum.sha256,
            compression,
            raw_size: None,
        };
        self.files.push(entry.clone());
        Ok(entry)
    }

    /// Re-reads every file to check its checksum, then writes the manifest: from here on the
    /// set is complete.
    pub fn commit(mut self, meta: SetMeta) -> anyhow::Result<Manifest> {
        let manifest = Manifest {
            format_version: MANIFEST_VERSION,
            kind: self.kind.name().to_string(),
            id: self.id.clone(),
            tool: meta.tool.to_string(),
            tool_version: meta.tool_version.to_string(),
            started_at: self.started_at,
            finished_at: timefmt::now(),
            status: SetStatus::Complete,
            source: meta.source,
            files: self.files,
            details: meta.details,
        };
        let problems = manifest.verify_files(&self.dir);
        if !problems.is_empty() {
            anyhow::bail!(
                "set {} failed verification after writing and was removed: {}",
                self.id,
                problems.join("; ")
            );
        }
        // Written while no interruption can remove the set: it ends whole or not at all.
        let dir = &self.dir;
        self.undo
            .done_if_ok(|| manifest.store(dir))
            .with_context(|| format!("cannot write the manifest of {}", dir.display()))?;
        Ok(manifest)
    }
}

/// Removes a set that did not get its manifest (see [`SetWriter`]).
fn remove_incomplete_set(dir: PathBuf) -> interrupt::Undo {
    interrupt::Undo::new(move || {
        tracing::warn!("removing the incomplete set {}", dir.display());
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!("cannot remove {}: {e}", dir.display());
        }
    })
}

/// A compressing, checksumming file of a set, written under a temporary name.
pub struct SetFile {
    path: String,
    compression: Compression,
    encoder: Encoder<HashingWriter<BufWriter<AtomicFile>>>,
    raw_size: u64,
}

impl SetFile {
    /// Bytes written so far, before compression.
    pub fn raw_size(&self) -> u64 {
        self.raw_size
    }

    /// Finishes compression, syncs, moves the file into place and returns its entry.
    pub fn finish(self) -> io::Result<FileEntry> {
        let hashing = self.encoder.finish()?;
        let (buffered, sum) = hashing.finish();
        let file = buffered.into_inner().map_err(|e| e.into_error())?;
        file.commit()?;
        Ok(FileEntry {
            path: self.path,
            size: sum.size,
            sha256: sum.sha256,
            compression: self.compression,
            raw_size: Some(self.raw_size),
        })
    }
}

impl Write for SetFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.encoder.write(buf)?;
        self.raw_size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.encoder.flush()
    }
}

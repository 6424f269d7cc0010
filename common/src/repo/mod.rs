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

use std::io::{self, Read};
use std::path::PathBuf;

use anyhow::Context;
use time::OffsetDateTime;

use crate::encryption::{self, Identities};
use crate::manifest::{FileEntry, Manifest, MANIFEST_FILE};
use crate::storage::{self, Location, Store, StoreLock};
use crate::timefmt;

/// The kinds of backup, each in its own folder. Serialized as its folder name, as manifests
/// hold it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
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

/// A backup repository: a local directory or an S3 bucket prefix (see [`crate::storage`]).
#[derive(Debug, Clone)]
pub struct Repository {
    store: Store,
    /// Who this process is in lock objects: host, pid and a per-process token.
    holder: String,
}

/// What listing finds about one set.
#[derive(Debug, Clone)]
pub struct SetInfo {
    pub id: String,
    /// The set's key prefix: `<kind>/<id>`.
    pub prefix: String,
    /// Start time from the id.
    pub started: Option<OffsetDateTime>,
    /// The manifest, when present and valid: the set is complete.
    pub manifest: Option<Manifest>,
    /// Why the manifest could not be read, when it exists but is broken.
    pub manifest_error: Option<String>,
}

/// Where a set stands, from its manifest.
#[derive(Debug, Clone, Copy)]
pub enum SetState<'a> {
    /// The manifest is present and valid: the set is complete.
    Complete(&'a Manifest),
    /// No manifest: still running, or a failed run.
    Incomplete,
    /// A manifest exists but cannot be read; why.
    Broken(&'a str),
}

impl SetInfo {
    /// Complete, incomplete or broken, with the manifest or why it is unreadable.
    pub fn state(&self) -> SetState<'_> {
        match (&self.manifest, &self.manifest_error) {
            (Some(manifest), _) => SetState::Complete(manifest),
            (None, Some(error)) => SetState::Broken(error),
            (None, None) => SetState::Incomplete,
        }
    }

    /// The manifest of a complete set.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
    }

    pub fn is_complete(&self) -> bool {
        self.manifest.is_some()
    }

    /// Whether the set has a manifest file, valid or not (it is not merely unfinished).
    pub fn has_manifest_file(&self) -> bool {
        !matches!(self.state(), SetState::Incomplete)
    }

    /// The key of a file of the set.
    pub fn key(&self, path: &str) -> String {
        storage::join(&self.prefix, path)
    }
}

/// The suffix `n` of a set id `<base>-<n>` (0 for `<base>` itself) started in the same
/// second as `base`.
fn same_second_suffix(id: &str, base: &str) -> Option<u32> {
    let rest = id.strip_prefix(base)?;
    if rest.is_empty() {
        return Some(0);
    }
    rest.strip_prefix('-')?.parse().ok()
}

/// Chronological order of set ids: the start time, then the same-second suffix as a number
/// (so `...Z-10` comes after `...Z-9`).
fn id_order(id: &str) -> (&str, u32) {
    match id.rsplit_once('-') {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            (base, n.parse().unwrap_or(u32::MAX))
        }
        _ => (id, 0),
    }
}

fn holder_token() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("host {host} pid {} token {nanos:08x}", std::process::id())
}

impl Repository {
    /// Opens the repository for writing: a local root is created (mode 0700) if missing; an
    /// S3 bucket must exist and accept the credentials.
    pub fn create(location: &Location) -> anyhow::Result<Repository> {
        let store = Store::open(location)?;
        store.create_root().with_context(|| {
            format!(
                "cannot create backup directory {location} (set --backup-dir or BACKUP_DIR to a writable place)"
            )
        })?;
        store.probe()?;
        Ok(Repository::with_store(store))
    }

    /// Opens an existing repository for reading.
    pub fn open(location: &Location) -> anyhow::Result<Repository> {
        let store = Store::open(location)?;
        if !store.root_exists() {
            anyhow::bail!(
                "backup directory {location} does not exist (set --backup-dir or BACKUP_DIR)"
            );
        }
        store.probe()?;
        Ok(Repository::with_store(store))
    }

    /// A repository over an already opened store.
    pub fn with_store(store: Store) -> Repository {
        Repository {
            store,
            holder: holder_token(),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn location(&self) -> &Location {
        self.store.location()
    }

    /// The local root directory, for a local repository.
    pub fn local_root(&self) -> Option<PathBuf> {
        self.store.local_path("")
    }

    /// How a key of the repository is shown in messages.
    pub fn describe(&self, key: &str) -> String {
        self.store.describe(key)
    }

    /// The key prefix of a kind (its folder).
    pub fn kind_prefix(&self, kind: Kind) -> &'static str {
        kind.name()
    }

    /// Whether the kind's folder holds anything (the WAL archive exists).
    pub fn kind_exists(&self, kind: Kind) -> io::Result<bool> {
        let (files, dirs) = self.store.list_dir(kind.name())?;
        Ok(!files.is_empty() || !dirs.is_empty())
    }

    /// Takes the lock of a kind, failing at once if another run holds it. Released on drop
    /// (local: also by the kernel if the process dies; S3: a crashed run's lock expires, see
    /// [`StoreLock`]).
    pub fn lock(&self, kind: Kind) -> anyhow::Result<RepoLock> {
        let key = storage::join(kind.name(), LOCK_FILE);
        self.store.lock(&key, &self.holder, kind.name())
    }

    /// True when a run of this kind holds the lock right now.
    pub fn is_locked(&self, kind: Kind) -> bool {
        self.store.is_locked(&storage::join(kind.name(), LOCK_FILE))
    }

    /// Fails unless this process still holds the lock of `kind` (S3: a lock that could not
    /// be renewed may have been broken by another run).
    fn check_lock(&self, kind: Kind) -> anyhow::Result<()> {
        if self.store.is_local() {
            return Ok(());
        }
        let key = storage::join(kind.name(), LOCK_FILE);
        match self.store.read(&key) {
            Ok(body) if String::from_utf8_lossy(&body).contains(&self.holder) => Ok(()),
            Ok(_) => anyhow::bail!(
                "another run took over the repository lock {}; this run's set is not marked complete",
                self.describe(&key)
            ),
            // Sets written without taking the lock (tests, tools that need none).
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot read the lock {}", self.describe(&key))),
        }
    }

    /// Starts a new set of `kind`, named by the start time.
    pub fn create_set(&self, kind: Kind) -> anyhow::Result<SetWriter> {
        let started_at = timefmt::now();
        let base = timefmt::id_string(started_at);
        let existing = self.set_ids(kind)?;
        // After every set of the same second, even one whose lower id was freed by removing
        // an incomplete set: the new set must sort as the newest (retention keeps the newest).
        let first = existing
            .iter()
            .filter_map(|id| same_second_suffix(id, &base))
            .max()
            .map_or(0, |n| n + 1);
        for n in first..first + 1000 {
            let id = if n == 0 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            if existing.contains(&id) {
                continue;
            }
            let prefix = storage::join(kind.name(), &id);
            // The folder and the cleanup that removes it come together: a signal in between
            // would leave an empty set folder behind.
            let claimed = crate::interrupt::uninterrupted(|| -> anyhow::Result<_> {
                Ok(self
                    .claim_set(&prefix)?
                    .then(|| SetWriter::new(kind, id, self.clone(), prefix, started_at)))
            })?;
            if let Some(set) = claimed {
                return Ok(set);
            }
        }
        anyhow::bail!(
            "too many sets started in the same second in {}",
            self.describe(kind.name())
        )
    }

    /// Makes the set's folder exist (local: a new directory; S3: a marker object created
    /// conditionally), false when another run took the id first.
    fn claim_set(&self, prefix: &str) -> anyhow::Result<bool> {
        if let Some(dir) = self.store.local_path(prefix) {
            use std::os::unix::fs::DirBuilderExt;
            let parent = dir.parent().expect("a set has a kind folder");
            crate::durable::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
            return match std::fs::DirBuilder::new()
                .mode(crate::durable::DIR_MODE)
                .create(&dir)
            {
                Ok(()) => {
                    crate::durable::fsync_dir(parent)?;
                    Ok(true)
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e).with_context(|| format!("cannot create {}", dir.display())),
            };
        }
        let marker = storage::join(prefix, STARTED_MARKER);
        self.store
            .put_new(&marker, self.holder.as_bytes())
            .with_context(|| format!("cannot start the set {}", self.describe(prefix)))
    }

    /// Every set of a kind, oldest first, complete or not.
    pub fn list(&self, kind: Kind) -> anyhow::Result<Vec<SetInfo>> {
        let mut sets = Vec::new();
        for id in self.set_ids(kind)? {
            if id.starts_with('.') {
                continue;
            }
            let prefix = storage::join(kind.name(), &id);
            let (manifest, manifest_error) = match Manifest::load(&self.store, &prefix) {
                Ok(Some(m)) => (Some(m), None),
                Ok(None) => (None, None),
                Err(e) => (None, Some(format!("{e:#}"))),
            };
            sets.push(SetInfo {
                started: timefmt::parse_id_time(&id),
                id,
                prefix,
                manifest,
                manifest_error,
            });
        }
        sets.sort_by(|a, b| id_order(&a.id).cmp(&id_order(&b.id)));
        Ok(sets)
    }

    /// The ids of a kind's sets: its folders on disk (an empty one is a set that a killed run
    /// had just begun); on object storage the prefixes that hold an object (some stores list
    /// emptied "folders" too).
    fn set_ids(&self, kind: Kind) -> anyhow::Result<Vec<String>> {
        let shown = || format!("cannot list {}", self.describe(kind.name()));
        if self.store.is_local() {
            let mut ids = self.store.list_dir(kind.name()).with_context(shown)?.1;
            ids.sort_by(|a, b| id_order(a).cmp(&id_order(b)));
            return Ok(ids);
        }
        let mut ids: Vec<String> = self
            .store
            .list(kind.name())
            .with_context(shown)?
            .into_iter()
            .filter_map(|o| {
                let rest = o.key.strip_prefix(kind.name())?.strip_prefix('/')?;
                let (id, _) = rest.split_once('/')?;
                Some(id.to_string())
            })
            .collect();
        ids.dedup();
        ids.sort_by(|a, b| id_order(a).cmp(&id_order(b)));
        Ok(ids)
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
        if let Some(id) = id {
            storage::check_component(id)?;
        }
        let sets = self.list(kind)?;
        let (found, manifest) = match id {
            Some(id) => {
                let set = sets.into_iter().find(|s| s.id == id).with_context(|| {
                    format!(
                        "no {kind} backup set '{id}' in {} (list them with --output json or ls)",
                        self.describe(kind.name())
                    )
                })?;
                let manifest = match set.state() {
                    SetState::Complete(manifest) => manifest.clone(),
                    SetState::Incomplete => anyhow::bail!(
                        "{kind} backup set '{id}' is incomplete (no valid manifest); choose another"
                    ),
                    SetState::Broken(error) => anyhow::bail!(
                        "{kind} backup set '{id}' is incomplete (no valid manifest: {error}); choose another"
                    ),
                };
                (set, manifest)
            }
            None => sets
                .into_iter()
                .rev()
                .find_map(|set| {
                    let manifest = set.manifest()?.clone();
                    Some((set, manifest))
                })
                .with_context(|| {
                    format!(
                        "no complete {kind} backup set in {}; take one first",
                        self.describe(kind.name())
                    )
                })?,
        };
        Ok((found, manifest))
    }

    /// Streams a file of a set.
    pub fn open_file(&self, set: &SetInfo, path: &str) -> io::Result<Box<dyn Read + Send>> {
        self.store.open_read(&set.key(path))
    }

    /// Streams a file of a set as it was before encryption (still compressed): decrypted
    /// with `identities` when the entry is encrypted (an error naming the file when there
    /// are none or they do not fit; reading fails on damage or truncation).
    pub fn open_entry(
        &self,
        set: &SetInfo,
        entry: &FileEntry,
        identities: Option<&Identities>,
    ) -> io::Result<Box<dyn Read + Send>> {
        let key = set.key(&entry.path);
        let stored = self.store.open_read(&key)?;
        encryption::reader(
            stored,
            entry.is_encrypted(),
            identities,
            &self.describe(&key),
        )
    }

    /// Streams a file of a set as it was written: decrypted (see [`Repository::open_entry`])
    /// and decompressed.
    pub fn open_plain(
        &self,
        set: &SetInfo,
        entry: &FileEntry,
        identities: Option<&Identities>,
    ) -> io::Result<Box<dyn Read>> {
        let stored = self.open_entry(set, entry, identities)?;
        entry.compression.decoder(stored)
    }

    /// The whole manifest of a set: for an encrypted set whose tool kept some keys private
    /// (see [`SetWriter::keep_private`]), those keys decrypted from its private part with
    /// `identities` (an error naming the file and what to set when there are none or they do
    /// not fit); a plain set's manifest as it is.
    pub fn reveal(
        &self,
        set: &SetInfo,
        manifest: &Manifest,
        identities: Option<&Identities>,
    ) -> anyhow::Result<Manifest> {
        let stored = format!("{}{}", private::PRIVATE_FILE, encryption::AGE_SUFFIX);
        let Some(entry) = manifest.file(&stored) else {
            return Ok(manifest.clone());
        };
        let shown = self.describe(&set.key(&entry.path));
        let mut text = Vec::new();
        self.open_entry(set, entry, identities)?
            .take(private::MAX_PRIVATE_BYTES)
            .read_to_end(&mut text)
            .with_context(|| format!("cannot read {shown}"))?;
        let part: private::PrivatePart = serde_json::from_slice(&text)
            .with_context(|| format!("{shown} is not a valid private manifest part"))?;
        let mut whole = manifest.clone();
        part.merge_into(&mut whole);
        Ok(whole)
    }

    /// The recipients a new set of `kind` is encrypted to, from the environment (see
    /// [`encryption::Recipients::from_env`]). With none set, an encrypted repository must not
    /// get a plain set by accident (recipients that vanished from a CronJob's environment):
    /// refused when the newest complete set of `kind` is encrypted (for base backups, also
    /// when the WAL archive is), unless `allow_unencrypted`.
    pub fn recipients_for(
        &self,
        kind: Kind,
        allow_unencrypted: bool,
    ) -> anyhow::Result<Option<encryption::Recipients>> {
        let recipients = encryption::Recipients::from_env()?;
        if recipients.is_some() || allow_unencrypted {
            return Ok(recipients);
        }
        let newest_encrypted = self
            .complete_sets(kind)?
            .last()
            .and_then(|set| set.manifest())
            .is_some_and(|m| m.encryption().is_some());
        let wal_encrypted =
            kind == Kind::Base && crate::wal::WalArchive::new(self).is_marked_encrypted()?;
        if newest_encrypted || wal_encrypted {
            anyhow::bail!(
                "{} holds encrypted {} but no recipients are set: refusing to write a plaintext {kind} set. Set {} (or {}, {}), or pass --allow-unencrypted",
                self.location(),
                if newest_encrypted { format!("{kind} sets") } else { "WAL".to_string() },
                encryption::RECIPIENTS_ENV,
                encryption::RECIPIENTS_FILE_ENV,
                encryption::PASSPHRASE_FILE_ENV
            );
        }
        Ok(None)
    }

    /// Re-reads every file listed in `manifest` under `prefix` and compares size and SHA-256.
    pub fn verify_files(&self, prefix: &str, manifest: &Manifest) -> Vec<String> {
        manifest.verify_files(&self.store, prefix)
    }

    /// Deletes a set: the manifest first, so a half-deleted set reads as incomplete.
    pub fn delete_set(&self, set: &SetInfo) -> io::Result<()> {
        self.store.delete(&set.key(MANIFEST_FILE))?;
        self.store.delete_prefix(&set.prefix)?;
        Ok(())
    }
}

/// Marker object of a set being written on object storage (where folders do not exist).
pub const STARTED_MARKER: &str = ".started";

/// Held while a run writes a kind; dropping it releases the lock.
pub type RepoLock = StoreLock;

mod private;
mod writer;

pub use private::PRIVATE_FILE;
pub use writer::{SetFile, SetMeta, SetWriter};

#[cfg(test)]
mod id_tests {
    use super::{id_order, same_second_suffix};

    #[test]
    fn same_second_ids_sort_by_their_number_and_new_ones_come_last() {
        let mut ids = vec![
            "20261203T071426Z-10",
            "20261203T071426Z-2",
            "20261203T071427Z",
            "20261203T071426Z",
            "20261203T071425Z-1",
        ];
        ids.sort_by(|a, b| id_order(a).cmp(&id_order(b)));
        assert_eq!(
            ids,
            [
                "20261203T071425Z-1",
                "20261203T071426Z",
                "20261203T071426Z-2",
                "20261203T071426Z-10",
                "20261203T071427Z"
            ]
        );
        let base = "20261203T071426Z";
        let next = ids
            .iter()
            .filter_map(|id| same_second_suffix(id, base))
            .max()
            .map_or(0, |n| n + 1);
        assert_eq!(next, 11);
        assert_eq!(same_second_suffix("20261203T071426Z", base), Some(0));
        assert_eq!(same_second_suffix("20261203T071427Z", base), None);
    }
}

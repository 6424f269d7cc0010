//! The logical-backup part of a set's manifest (`details`): per database its snapshot, its
//! dump files and every table with its exact row count in that snapshot.
//!
//! In an encrypted set the `databases` list (names, tables, row counts) is kept in the set's
//! encrypted private part, and the files have numbered names (`db1/tables/t3.dump.age`), so
//! `manifest.json` tells nothing about the content; [`ChosenSet::find`] reads it back with
//! the identities, which also proves the key before anything is restored.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use common::encryption::{self, Identities};
use common::repo::SetInfo;
use common::storage::{self, Location, Store};
use common::stream::HashingReader;
use common::timefmt::rfc3339;
use common::{FileEntry, Kind, Manifest, Repository};

use crate::source::{DumpSource, Scratch};

/// Version of this `details` layout: 2 made the schema dump and the per-table dumps
/// optional (a set of version 1 always has them; version 2 restores tables from the
/// whole-database dump) and added each table's index and sequence names.
pub const DETAILS_VERSION: u32 = 2;

/// Format of a database's whole-database dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DumpFormat {
    /// One file, `pg_dump -Fc`.
    Custom,
    /// A directory, `pg_dump -Fd -j N`.
    Directory,
}

/// `details` of a logical set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogicalDetails {
    pub details_version: u32,
    pub server_version: String,
    pub server_version_num: i32,
    /// pg_dump's compression level (`-Z`); None is pg_dump's default.
    pub compress_level: Option<u32>,
    /// `pg_dumpall --globals-only` output (roles, tablespaces), plain SQL.
    pub globals: Option<String>,
    /// True when the globals were dumped without role passwords.
    #[serde(default)]
    pub globals_without_passwords: bool,
    pub databases: Vec<DatabaseEntry>,
}

/// One database of a set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatabaseEntry {
    pub name: String,
    /// Folder of its files inside the set.
    pub dir: String,
    pub encoding: String,
    /// The exported snapshot id every dump of this database used.
    pub snapshot: String,
    /// WAL position at the snapshot.
    pub snapshot_lsn: String,
    #[serde(with = "rfc3339")]
    pub snapshot_time: OffsetDateTime,
    pub format: DumpFormat,
    /// Whole-database dump: a file (custom) or a folder (directory format).
    pub full_dump: String,
    /// Wall time of the whole-database pg_dump (for trending and the benchmark).
    #[serde(default)]
    pub full_dump_secs: Option<f64>,
    /// Schema-only dump (custom format), in sets with per-table dumps (all of version 1).
    /// Without it the schema is read from the whole-database dump, whose table of contents
    /// holds every definition (pg_restore reads only that part of it for `--schema-only`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_dump: Option<String>,
    pub tables: Vec<TableEntry>,
}

/// One table of a database, as seen by the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    pub schema: String,
    pub name: String,
    /// Exact rows in the snapshot: counted in the whole-database dump as it streamed, else
    /// `count(*) FROM ONLY` in the snapshot (directory format, a table without data entry).
    pub rows: u64,
    /// `pg_total_relation_size` when backed up.
    pub size_bytes: u64,
    pub indexes: u32,
    pub constraints: u32,
    /// Its own dump (custom format), when it was selected for one.
    pub file: Option<String>,
    /// Names of its indexes (in its schema), which pg_dump's table of contents tags with
    /// the index name only: what a table restore from the whole-database dump selects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub index_names: Vec<String>,
    /// Sequences it owns (serial and identity columns), as (schema, name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sequences: Vec<(String, String)>,
}

impl TableEntry {
    pub fn display_name(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

/// A complete logical set chosen for restore or verification, with its repository.
#[derive(Debug)]
pub struct ChosenSet {
    pub repo: Repository,
    pub set: SetInfo,
    /// The whole manifest, private part included.
    pub manifest: Manifest,
    pub details: LogicalDetails,
    /// The keys from the environment, for an encrypted set's files.
    pub identities: Option<Arc<Identities>>,
}

impl ChosenSet {
    /// Set `id` of the repository at `location`, or its newest complete logical set. An
    /// encrypted set's private part is decrypted here: a missing or wrong key is an error
    /// naming the file before anything else happens.
    pub fn find(location: &Location, id: Option<&str>) -> anyhow::Result<ChosenSet> {
        let repo = Repository::open(location)?;
        let (set, stored) = repo.find(Kind::Logical, id)?;
        let identities = Identities::from_env()?.map(Arc::new);
        let manifest = repo.reveal(&set, &stored, identities.as_deref())?;
        let details = LogicalDetails::from_manifest(&manifest)?;
        Ok(ChosenSet {
            repo,
            set,
            manifest,
            details,
            identities,
        })
    }

    /// Whether the set's files are encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.manifest.encryption().is_some()
    }

    /// A file of the set as pg_restore or psql reads it: by path in a local repository,
    /// streamed from object storage; an encrypted file streamed and decrypted.
    pub fn source(&self, path: &str) -> DumpSource {
        DumpSource::of_stored(
            self.repo.store(),
            &self.set.key(path),
            self.identities.as_ref(),
        )
    }

    /// The manifest entries of a file, or of every file of a folder (a directory-format dump).
    fn entries(&self, path: &str) -> Vec<FileEntry> {
        let folder = format!("{path}/");
        self.manifest
            .files
            .iter()
            .filter(|f| f.path == path || f.path.starts_with(&folder))
            .cloned()
            .collect()
    }

    /// Refuses to restore from damaged files: re-reads everything under `paths` (files or
    /// folders of the set) and compares sizes and checksums with the manifest.
    pub async fn check(&self, paths: &[String]) -> anyhow::Result<()> {
        let mut subset = self.manifest.clone();
        subset.files = paths.iter().flat_map(|p| self.entries(p)).collect();
        if subset.files.is_empty() {
            anyhow::bail!(
                "set {} lists none of the files to restore ({})",
                self.manifest.id,
                paths.join(", ")
            );
        }
        let (store, prefix) = (self.repo.store().clone(), self.set.prefix.clone());
        // On its own thread: reading may take long, and an interruption must not wait for it.
        let problems = tokio::task::spawn_blocking(move || subset.check_files(&store, &prefix))
            .await
            .context("the checksum task failed")?;
        self.refuse_damage(&problems)
    }

    fn refuse_damage(&self, problems: &[String]) -> anyhow::Result<()> {
        if problems.is_empty() {
            return Ok(());
        }
        anyhow::bail!(
            "set {} is damaged, nothing restored: {} (run `pg-logical-backup verify --backup-id {}`)",
            self.manifest.id,
            problems.join("; "),
            self.manifest.id
        )
    }

    /// A file or folder of the set as a real path, unchecked: in place in a local repository
    /// when it is not encrypted.
    pub fn in_place(&self, path: &str) -> Option<DumpSource> {
        let local = self.repo.store().local_path(&self.set.key(path))?;
        (!self.is_encrypted()).then_some(DumpSource::Path(local))
    }

    /// A file or folder of the set as a real path, checked against the manifest: in place in
    /// a local repository; downloaded from object storage, or decrypted, into a temporary
    /// directory (for a directory-format dump, and for parallel pg_restore, which needs a
    /// seekable file).
    pub async fn checked_copy(&self, path: &str) -> anyhow::Result<DumpSource> {
        if let Some(in_place) = self.in_place(path) {
            self.check(&[path.to_string()]).await?;
            return Ok(in_place);
        }
        let entries = self.entries(path);
        if entries.is_empty() {
            anyhow::bail!("set {} lists no file {path}", self.manifest.id);
        }
        let scratch = Scratch::new("restore")?;
        let (store, prefix) = (self.repo.store().clone(), self.set.prefix.clone());
        let root = scratch.path().to_path_buf();
        let shown = self.repo.describe(&self.set.key(path));
        tracing::info!("copying {shown} into {}", root.display());
        let identities = self.identities.clone();
        let problems = tokio::task::spawn_blocking(move || {
            download(&store, &prefix, &entries, identities.as_deref(), &root)
        })
        .await
        .context("the download task failed")??;
        self.refuse_damage(&problems)?;
        Ok(DumpSource::Staged {
            path: scratch.path().join(plain_name(path)),
            shown,
            scratch: Arc::new(scratch),
        })
    }
}

/// A stored name without its `.age` suffix: what pg_restore expects in a directory dump.
fn plain_name(path: &str) -> &str {
    path.strip_suffix(encryption::AGE_SUFFIX).unwrap_or(path)
}

/// Copies the `entries` of the set at `prefix` under `root` (an age file decrypted with
/// `identities`, under its name without `.age`), hashing the stored bytes as it goes.
/// Returns the entries whose size or checksum differs from the manifest's.
fn download(
    store: &Store,
    prefix: &str,
    entries: &[FileEntry],
    identities: Option<&Identities>,
    root: &Path,
) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    for entry in entries {
        let key = storage::join(prefix, &entry.path);
        let target = root.join(plain_name(&entry.path));
        if let Some(parent) = target.parent() {
            common::durable::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let object = match store.open_read(&key) {
            Ok(object) => object,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                problems.push(format!("{}: missing", entry.path));
                continue;
            }
            Err(e) => return Err(e).context("cannot download the dump"),
        };
        let mut reader = HashingReader::new(object);
        let mut file = std::fs::File::create(&target)
            .with_context(|| format!("cannot write {}", target.display()))?;
        let shown = store.describe(&key);
        let copied = encryption::reader(&mut reader, entry.is_encrypted(), identities, &shown)
            .and_then(|mut plain| std::io::copy(&mut plain, &mut file));
        let sum = reader
            .finish()
            .with_context(|| format!("cannot read {shown}"))?;
        // Damage shows as a checksum mismatch, reported with the others; any other failure
        // (a wrong key, a network error) is the error.
        let intact = sum.size == entry.size && sum.sha256 == entry.sha256;
        if let (true, Err(e)) = (intact, copied) {
            return Err(e).with_context(|| format!("cannot copy {shown} to {}", target.display()));
        }
        if sum.size != entry.size {
            problems.push(format!(
                "{}: size {} differs from the manifest's {}",
                entry.path, sum.size, entry.size
            ));
        } else if sum.sha256 != entry.sha256 {
            problems.push(format!(
                "{}: SHA-256 mismatch (file changed or corrupted)",
                entry.path
            ));
        }
    }
    Ok(problems)
}

impl LogicalDetails {
    /// Reads the details of a manifest, with a clear error for sets of another tool.
    pub fn from_manifest(manifest: &Manifest) -> anyhow::Result<LogicalDetails> {
        if manifest.kind != Kind::Logical {
            anyhow::bail!(
                "set {} is a {} set, not a logical one",
                manifest.id,
                manifest.kind
            );
        }
        let details: LogicalDetails =
            serde_json::from_value(manifest.details.clone()).map_err(|e| {
                anyhow::anyhow!("set {} has unreadable logical details: {e}", manifest.id)
            })?;
        if details.details_version > DETAILS_VERSION {
            anyhow::bail!(
                "set {} was written by a newer pg-logical-backup (details version {}); upgrade the tool",
                manifest.id,
                details.details_version
            );
        }
        Ok(details)
    }

    /// The database to restore: the named one, or the only one of the set.
    pub fn database(&self, name: Option<&str>, id: &str) -> anyhow::Result<&DatabaseEntry> {
        let names = || {
            self.databases
                .iter()
                .map(|d| d.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match name {
            Some(name) => self
                .databases
                .iter()
                .find(|d| d.name == name)
                .ok_or_else(|| {
                    anyhow::anyhow!("set {id} has no database '{name}' (it has: {})", names())
                }),
            None if self.databases.len() == 1 => Ok(&self.databases[0]),
            None => anyhow::bail!(
                "set {id} holds several databases ({}); choose one with --source-db",
                names()
            ),
        }
    }
}

/// A file or folder name for a database or table: letters, digits, `_`, `-` and `.` kept,
/// anything else replaced, and a number added when two names would collide.
pub fn file_name(name: &str, taken: &mut std::collections::HashSet<String>) -> String {
    let mut base: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if base.is_empty() || base.starts_with('.') {
        base.insert(0, '_');
    }
    let mut candidate = base.clone();
    let mut n = 1;
    while !taken.insert(candidate.to_ascii_lowercase()) {
        n += 1;
        candidate = format!("{base}-{n}");
    }
    candidate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_safe_and_unique() {
        let mut taken = Default::default();
        assert_eq!(file_name("public.orders", &mut taken), "public.orders");
        assert_eq!(file_name("public.Orders", &mut taken), "public.Orders-2");
        assert_eq!(file_name("a/b c", &mut taken), "a_b_c");
        assert_eq!(file_name("..", &mut taken), "_..");
    }
}

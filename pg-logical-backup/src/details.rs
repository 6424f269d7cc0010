//! The logical-backup part of a set's manifest (`details`): per database its snapshot, its
//! dump files and every table with its exact row count in that snapshot.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use common::timefmt::rfc3339;
use common::Manifest;

/// Version of this `details` layout.
pub const DETAILS_VERSION: u32 = 1;

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
    /// Schema-only dump (custom format).
    pub schema_dump: String,
    pub tables: Vec<TableEntry>,
}

/// One table of a database, as seen by the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    pub schema: String,
    pub name: String,
    /// Exact `count(*) FROM ONLY` in the snapshot.
    pub rows: u64,
    /// `pg_total_relation_size` when backed up.
    pub size_bytes: u64,
    pub indexes: u32,
    pub constraints: u32,
    /// Its own dump (custom format), when it was selected for one.
    pub file: Option<String>,
}

impl TableEntry {
    pub fn display_name(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

/// A complete logical set chosen for restore or verification.
#[derive(Debug)]
pub struct ChosenSet {
    pub dir: std::path::PathBuf,
    pub manifest: Manifest,
    pub details: LogicalDetails,
}

impl ChosenSet {
    /// Set `id` of the repository at `backup_dir`, or its newest complete logical set.
    pub fn find(backup_dir: &std::path::Path, id: Option<&str>) -> anyhow::Result<ChosenSet> {
        let repo = common::repo::Repository::open(backup_dir)?;
        let (set, manifest) = repo.find(common::Kind::Logical, id)?;
        let details = LogicalDetails::from_manifest(&manifest)?;
        Ok(ChosenSet {
            dir: set.dir,
            manifest,
            details,
        })
    }
}

impl LogicalDetails {
    /// Reads the details of a manifest, with a clear error for sets of another tool.
    pub fn from_manifest(manifest: &Manifest) -> anyhow::Result<LogicalDetails> {
        if manifest.kind != common::Kind::Logical.name() {
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

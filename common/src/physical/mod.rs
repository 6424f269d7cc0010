//! The `details` of a physical base-backup manifest, read by every tool that deals with base
//! backups and WAL (pg-base-backup writes it; pitr-restore, wal-archive and validate-backups
//! read it), and the formats of base backups read from the data directory itself
//! (`pg-base-backup --pgdata`): which files they hold, their file list, incremental members and
//! the chains full -> diff -> incr that a restore applies in order.

pub mod chain;
pub mod datadir;
pub mod filehash;
pub mod filelist;
pub mod incremental;
pub mod page;

use std::io::Read;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::lsn::Lsn;
use crate::stream::Compression;
use crate::timefmt::rfc3339;

/// File name of the base tarball in a set, before the compression suffix.
pub const BASE_TAR: &str = "base.tar";
/// PostgreSQL's own backup manifest, kept beside the tarball (also inside it).
pub const PG_BACKUP_MANIFEST: &str = "backup_manifest";

/// The WAL segment sizes PostgreSQL accepts (`initdb --wal-segsize`, powers of two).
pub const MIN_WAL_SEGMENT_SIZE: u64 = 1 << 20;
pub const MAX_WAL_SEGMENT_SIZE: u64 = 1 << 30;

/// Where the WAL needed to make the backup consistent is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum WalMethod {
    /// Inside the tarball (pg_wal/), fetched at the end of the backup.
    Fetch,
    /// In the repository's WAL archive, verified present before the set is complete.
    Archive,
}

/// What a base backup holds: every file (full), or what changed since the last full (diff) or
/// since the last backup of any type (incr).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackupType {
    #[default]
    Full,
    Diff,
    Incr,
}

impl BackupType {
    pub fn name(self) -> &'static str {
        match self {
            BackupType::Full => "full",
            BackupType::Diff => "diff",
            BackupType::Incr => "incr",
        }
    }
}

/// How the files were read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureMethod {
    /// `pg_basebackup` over the replication protocol: the tarball and PostgreSQL's
    /// `backup_manifest`.
    #[default]
    PgBasebackup,
    /// From the data directory between `pg_backup_start` and `pg_backup_stop`: the tarball
    /// and a file list (`files.json`); diff and incr sets hold changed files and pages only.
    DataDir,
}

/// Metadata of a physical base backup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhysicalDetails {
    pub start_lsn: Lsn,
    pub stop_lsn: Lsn,
    pub timeline: u32,
    #[serde(with = "rfc3339")]
    pub start_time: OffsetDateTime,
    #[serde(with = "rfc3339")]
    pub stop_time: OffsetDateTime,
    /// pg_control's system identifier, as text (it does not fit JSON numbers safely).
    pub system_identifier: String,
    /// `server_version_num`, e.g. 150018.
    pub server_version_num: u32,
    pub server_version: String,
    pub wal_segment_size: u64,
    pub wal_method: WalMethod,
    pub compression: Compression,
    /// Bytes of the uncompressed tarball.
    pub raw_bytes: u64,
    /// Bytes stored.
    pub stored_bytes: u64,
    pub duration_s: f64,
    /// Number of files in the tarball.
    pub file_count: u64,
    /// Full, diff or incr (sets written before incremental backups existed are full).
    #[serde(default)]
    pub backup_type: BackupType,
    #[serde(default)]
    pub method: CaptureMethod,
    /// The set whose start LSN this one's pages are newer than (diff and incr).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The reference's start LSN: pages with a newer LSN are in this set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_lsn: Option<Lsn>,
    /// Every set a restore of this one applies first, the full first, the reference last
    /// (empty for a full).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<String>,
    /// Pages whose data checksum failed twice while read (data checksums on, `--pgdata`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checksum_failures: Vec<ChecksumFailure>,
}

/// Pages of one file whose data checksum failed when the backup read them (twice).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChecksumFailure {
    pub path: String,
    /// Block numbers within the file.
    pub blocks: Vec<u32>,
}

impl PhysicalDetails {
    /// The details of a base set's manifest, refused when the numbers the tools compute
    /// with are impossible (a segment size PostgreSQL cannot have would divide by zero or
    /// overflow in segment arithmetic; a start after the stop makes no range).
    pub fn from_manifest(manifest: &crate::Manifest) -> anyhow::Result<PhysicalDetails> {
        let unreadable = |e: &dyn std::fmt::Display| {
            anyhow::anyhow!(
                "base backup {} has unreadable details in its manifest: {e}",
                manifest.id
            )
        };
        let details: PhysicalDetails = serde_json::from_value(manifest.details.clone())
            .with_context(|| {
                format!(
                    "base backup {} has unreadable details in its manifest",
                    manifest.id
                )
            })?;
        let size = details.wal_segment_size;
        if !(size.is_power_of_two()
            && (MIN_WAL_SEGMENT_SIZE..=MAX_WAL_SEGMENT_SIZE).contains(&size))
        {
            return Err(unreadable(&format!(
                "WAL segment size {size} is not a power of two from 1 MiB to 1 GiB"
            )));
        }
        if details.start_lsn > details.stop_lsn {
            return Err(unreadable(&format!(
                "start LSN {} is after stop LSN {}",
                details.start_lsn, details.stop_lsn
            )));
        }
        Ok(details)
    }
}

/// What the tools check of PostgreSQL's `backup_manifest` (`pg_verifybackup` checks the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgBackupManifest {
    /// `PostgreSQL-Backup-Manifest-Version`.
    pub version: u64,
    /// Entries in `Files`.
    pub files: usize,
}

impl PgBackupManifest {
    /// Reads a `backup_manifest` and checks it is one: JSON with a version and a non-empty
    /// `Files` list. Every value is skipped rather than kept, so memory stays small whatever
    /// the input's size; `shown` names the file in errors.
    pub fn read<R: Read>(input: R, shown: &str) -> anyhow::Result<PgBackupManifest> {
        #[derive(Deserialize)]
        struct Shape {
            #[serde(rename = "PostgreSQL-Backup-Manifest-Version")]
            version: u64,
            #[serde(rename = "Files")]
            files: Vec<serde::de::IgnoredAny>,
        }
        let shape: Shape = serde_json::from_reader(std::io::BufReader::new(input))
            .with_context(|| format!("{shown} is not a PostgreSQL backup manifest"))?;
        if shape.files.is_empty() {
            anyhow::bail!("{shown} is not a PostgreSQL backup manifest: it lists no file");
        }
        Ok(PgBackupManifest {
            version: shape.version,
            files: shape.files.len(),
        })
    }
}

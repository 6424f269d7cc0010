//! The `details` of a physical base-backup manifest, read by every tool that deals with base
//! backups and WAL (pg-base-backup writes it; pitr-restore, wal-archive and validate-backups
//! read it).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::lsn::Lsn;
use crate::stream::Compression;
use crate::timefmt::rfc3339;

/// File name of the base tarball in a set, before the compression suffix.
pub const BASE_TAR: &str = "base.tar";
/// PostgreSQL's own backup manifest, kept beside the tarball (also inside it).
pub const PG_BACKUP_MANIFEST: &str = "backup_manifest";

/// Where the WAL needed to make the backup consistent is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum WalMethod {
    /// Inside the tarball (pg_wal/), fetched at the end of the backup.
    Fetch,
    /// In the repository's WAL archive, verified present before the set is complete.
    Archive,
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
}

impl PhysicalDetails {
    pub fn from_manifest(manifest: &crate::Manifest) -> anyhow::Result<PhysicalDetails> {
        serde_json::from_value(manifest.details.clone()).map_err(|e| {
            anyhow::anyhow!(
                "base backup {} has unreadable details in its manifest: {e}",
                manifest.id
            )
        })
    }
}

//! The backup-set manifest: what a set holds and proof that it is complete.
//!
//! `manifest.json` is written last and atomically. A set directory without it is incomplete
//! (crashed or still running) and is never offered for restore.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::encryption::SetEncryption;
use crate::repo::Kind;
use crate::storage::{self, Store};
use crate::stream::{self, Compression};
use crate::timefmt::rfc3339;

/// File name of the manifest inside a set directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Version of the manifest format; readers refuse newer major versions.
pub const MANIFEST_VERSION: u32 = 1;

/// Whether the set finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SetStatus {
    /// Every file written, verified and listed.
    Complete,
}

/// One file of a set, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the set directory, `/`-separated.
    pub path: String,
    /// Size of the stored (possibly compressed) file in bytes.
    pub size: u64,
    /// SHA-256 of the stored bytes, lower-case hex: `sha256sum` of the file gives the same.
    pub sha256: String,
    /// Compression of the stored bytes.
    #[serde(default)]
    pub compression: Compression,
    /// Bytes before compression, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_size: Option<u64>,
    /// XXH3-128 of the stored bytes, lower-case hex: what a restore checks the file with
    /// before it uses it (SHA-256 is for `verify`, and sets before this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xxh3: Option<String>,
}

/// The manifest of one backup set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    /// Backup kind (`base`, `logical`, `kafka`, `slots`).
    pub kind: Kind,
    /// Set id, also the directory name.
    pub id: String,
    /// Tool that wrote the set and its version.
    pub tool: String,
    pub tool_version: String,
    #[serde(with = "rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "rfc3339")]
    pub finished_at: OffsetDateTime,
    pub status: SetStatus,
    /// What was backed up: server, system identifier, database, topics... Never secrets.
    pub source: serde_json::Value,
    pub files: Vec<FileEntry>,
    /// Kind-specific metadata (LSNs, snapshot, offsets...).
    #[serde(default)]
    pub details: serde_json::Value,
}

impl FileEntry {
    /// Whether the stored file is an age file (its name ends in `.age`).
    pub fn is_encrypted(&self) -> bool {
        crate::encryption::is_encrypted_name(&self.path)
    }

    /// What is wrong with the stored file, read whole: missing, unreadable, or another size
    /// or hash than listed.
    fn problem(&self, store: &Store, prefix: &str, hash: Hash) -> Option<String> {
        let key = storage::join(prefix, &self.path);
        let read = store.open_read(&key);
        let sum = match (hash, &self.xxh3) {
            (Hash::Fastest, Some(xxh3)) => read
                .and_then(stream::quick_checksum)
                .map(|(size, sum)| (size, (&sum != xxh3).then_some("XXH3-128"))),
            _ => read
                .and_then(|r| stream::HashingReader::new(r).finish())
                .map(|sum| (sum.size, (sum.sha256 != self.sha256).then_some("SHA-256"))),
        };
        match sum {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Some(format!("{}: missing", self.path))
            }
            Err(e) => Some(format!("{}: unreadable: {e}", self.path)),
            Ok((size, _)) if size != self.size => Some(format!(
                "{}: size {size} differs from the manifest's {}",
                self.path, self.size
            )),
            Ok((_, Some(hash))) => Some(format!(
                "{}: {hash} mismatch (file changed or corrupted)",
                self.path
            )),
            Ok((_, None)) => None,
        }
    }
}

/// Which hash a check of stored files compares.
#[derive(Clone, Copy)]
enum Hash {
    Sha256,
    /// XXH3-128 where listed, else SHA-256.
    Fastest,
}

/// Key under the manifest's `source` where a set's encryption is recorded in clear.
// A typed top-level field is the better home; it waits until every tool that builds a
// `Manifest` literal can take the new field.
pub const ENCRYPTION_KEY: &str = "encryption";

/// Records a set's encryption in its manifest's `source` object.
pub(crate) fn record_encryption(source: &mut serde_json::Value, encryption: &SetEncryption) {
    if !source.is_object() {
        *source = serde_json::json!({});
    }
    source[ENCRYPTION_KEY] = serde_json::to_value(encryption).expect("plain data");
}

impl Manifest {
    /// How the set's files are encrypted (`None`: plaintext, or a set from before encryption).
    pub fn encryption(&self) -> Option<SetEncryption> {
        self.source
            .get(ENCRYPTION_KEY)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
    }

    /// Total stored bytes (saturating: a damaged size must not overflow).
    pub fn total_size(&self) -> u64 {
        self.files
            .iter()
            .fold(0, |sum, f| sum.saturating_add(f.size))
    }

    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.path == path)
    }

    /// The entry of the file written as `path`, stored as is or, encrypted, as `path.age`.
    pub fn stored(&self, path: &str) -> Option<&FileEntry> {
        self.file(path).or_else(|| {
            self.files.iter().find(|f| {
                f.path
                    .strip_suffix(crate::encryption::AGE_SUFFIX)
                    .is_some_and(|p| p == path)
            })
        })
    }

    /// Reads and parses `manifest.json` of the set at `prefix`; `None` when there is none
    /// (the set is incomplete).
    pub fn load(store: &Store, prefix: &str) -> anyhow::Result<Option<Manifest>> {
        let key = storage::join(prefix, MANIFEST_FILE);
        let text = match store.read(&key) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            read => read.with_context(|| format!("cannot read {}", store.describe(&key)))?,
        };
        Manifest::parse(&text, &store.describe(&key)).map(Some)
    }

    /// Parses a manifest's text; `shown` names it in errors.
    pub fn parse(text: &[u8], shown: &str) -> anyhow::Result<Manifest> {
        let manifest: Manifest = serde_json::from_slice(text)
            .with_context(|| format!("{shown} is not a valid manifest"))?;
        if manifest.format_version > MANIFEST_VERSION {
            anyhow::bail!(
                "{shown} has format version {}, this tool reads up to {MANIFEST_VERSION}; upgrade the tools",
                manifest.format_version
            );
        }
        Ok(manifest)
    }

    /// Writes `manifest.json` atomically and durably, the last step of a backup.
    pub fn save(&self, store: &Store, prefix: &str) -> std::io::Result<()> {
        let mut text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        text.push(b'\n');
        store.put(&storage::join(prefix, MANIFEST_FILE), &text)
    }

    /// Re-reads every listed file and compares size and SHA-256. Returns the problems found,
    /// one line each; empty means the set is intact.
    pub fn verify_files(&self, store: &Store, prefix: &str) -> Vec<String> {
        self.files
            .iter()
            .filter_map(|entry| entry.problem(store, prefix, Hash::Sha256))
            .collect()
    }

    /// As [`Manifest::verify_files`], with the fast XXH3-128 where the manifest lists it:
    /// the check before a restore uses a file.
    pub fn check_files(&self, store: &Store, prefix: &str) -> Vec<String> {
        self.files
            .iter()
            .filter_map(|entry| entry.problem(store, prefix, Hash::Fastest))
            .collect()
    }

    /// Checks every listed file is stored with its size (one listing, no reading).
    pub fn verify_sizes(&self, store: &Store, prefix: &str) -> Vec<String> {
        let stored: std::collections::HashMap<String, u64> = match store.list(prefix) {
            Ok(list) => list.into_iter().map(|o| (o.key, o.size)).collect(),
            Err(e) => return vec![format!("cannot list {}: {e}", store.describe(prefix))],
        };
        let mut problems = Vec::new();
        for entry in &self.files {
            match stored.get(&storage::join(prefix, &entry.path)) {
                None => problems.push(format!("{}: missing", entry.path)),
                Some(&size) if size != entry.size => problems.push(format!(
                    "{}: size {size} differs from the manifest's {}",
                    entry.path, entry.size
                )),
                Some(_) => {}
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest as the tools have written it since format version 1.
    const BASE_MANIFEST: &str = r#"{
  "format_version": 1,
  "kind": "base",
  "id": "20261121T020000Z",
  "tool": "pg-base-backup",
  "tool_version": "0.1.0",
  "started_at": "2026-11-21T02:00:00Z",
  "finished_at": "2026-11-21T02:01:00Z",
  "status": "complete",
  "source": {},
  "files": []
}"#;

    #[test]
    fn kind_is_read_and_written_as_its_folder_name() {
        let manifest = Manifest::parse(BASE_MANIFEST.as_bytes(), "manifest.json").unwrap();
        assert_eq!(manifest.kind, Kind::Base);
        let written = serde_json::to_value(&manifest).unwrap();
        assert_eq!(written["kind"], "base");
        for kind in Kind::ALL {
            let json = serde_json::to_value(kind).unwrap();
            assert_eq!(json, kind.name());
            assert_eq!(serde_json::from_value::<Kind>(json).unwrap(), kind);
        }
    }

    #[test]
    fn unknown_kind_is_not_a_valid_manifest() {
        let text = BASE_MANIFEST.replace(r#""kind": "base""#, r#""kind": "tape""#);
        let err = Manifest::parse(text.as_bytes(), "manifest.json").unwrap_err();
        assert!(format!("{err:#}").contains("manifest.json is not a valid manifest"));
    }
}

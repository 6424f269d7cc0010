//! The list of a data directory's files that a base backup read from disk (`--pgdata`) keeps
//! beside its tarball (`files.json`): every file present at the backup with its size and
//! modification time, and where its content is: whole in this set's tarball, as changed
//! pages (an incremental member), or unchanged since the reference set. The list is stored in
//! clear even in an encrypted set (paths, sizes and times, no content), so that the next
//! incremental backup, which holds no key, can compare with it.
//!
//! The content hashes of the files a set stored are in `hashes.json`, encrypted with the
//! set. A restore of a chain ends with exactly the newest list's files; a delta restore
//! compares each local file with its state at every link (the hash of the newest link up to
//! it that stored the file) and applies only the links after the state it matches.

use std::io::{self, Read};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The list's name in a set.
pub const FILE_LIST: &str = "files.json";
/// The name of the hashes of the files a set stored.
pub const HASHES: &str = "hashes.json";

/// Where a listed file's content is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stored {
    /// Whole, in this set's tarball.
    Whole,
    /// Its changed pages, in this set's tarball (an incremental member).
    Pages,
    /// Not in this set: as in the reference chain.
    Unchanged,
}

/// One file of the data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedFile {
    /// Relative to the data directory, `/`-separated.
    pub path: String,
    pub size: u64,
    /// Modification time in nanoseconds since the epoch, as read before the file was.
    pub mtime_ns: i128,
    pub stored: Stored,
}

/// The whole list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileList {
    /// Directories, parents before children.
    pub dirs: Vec<String>,
    /// Files, in the order they are in the tarball.
    pub files: Vec<ListedFile>,
}

impl FileList {
    /// Parses a stored list; `shown` names it in errors.
    pub fn read<R: Read>(input: R, shown: &str) -> anyhow::Result<FileList> {
        serde_json::from_reader(io::BufReader::new(input))
            .with_context(|| format!("{shown} is not a data directory file list"))
    }

    /// A file by path (the list is small enough for a scan; callers that look up many build
    /// a map).
    pub fn get(&self, path: &str) -> Option<&ListedFile> {
        self.files.iter().find(|f| f.path == path)
    }

    /// Total bytes of the data directory's files.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// The content hash ([`super::filehash`]) of each file a set stored, by path: what a delta
/// restore compares local files with.
pub type FileHashes = std::collections::BTreeMap<String, String>;

/// The file list of a base set read from the data directory (clear in every set).
pub fn load(
    repo: &crate::repo::Repository,
    set: &crate::repo::SetInfo,
    manifest: &crate::Manifest,
) -> anyhow::Result<FileList> {
    let (input, shown) = open(repo, set, manifest, FILE_LIST, None)?;
    FileList::read(input, &shown)
}

/// The hashes of the files a set stored, decrypted with `identities` when encrypted.
pub fn load_hashes(
    repo: &crate::repo::Repository,
    set: &crate::repo::SetInfo,
    manifest: &crate::Manifest,
    identities: Option<&crate::encryption::Identities>,
) -> anyhow::Result<FileHashes> {
    let (input, shown) = open(repo, set, manifest, HASHES, identities)?;
    serde_json::from_reader(io::BufReader::new(input))
        .with_context(|| format!("{shown} is not a list of file hashes"))
}

/// Opens a small file of a base set by its name before encryption.
fn open(
    repo: &crate::repo::Repository,
    set: &crate::repo::SetInfo,
    manifest: &crate::Manifest,
    name: &str,
    identities: Option<&crate::encryption::Identities>,
) -> anyhow::Result<(Box<dyn Read>, String)> {
    let entry = manifest.stored(name).with_context(|| {
        format!(
            "base backup {} has no {name} (was it taken with --pgdata?)",
            set.id
        )
    })?;
    let shown = repo.describe(&set.key(&entry.path));
    let input = repo
        .open_plain(set, entry, identities)
        .with_context(|| format!("cannot read {shown}"))?;
    Ok((input, shown))
}

/// Modification time in nanoseconds since the epoch.
pub fn mtime_ns(meta: &std::fs::Metadata) -> i128 {
    use std::os::unix::fs::MetadataExt;
    i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_round_trips_through_json() {
        let list = FileList {
            dirs: vec!["base".into(), "base/5".into()],
            files: vec![ListedFile {
                path: "base/5/16384".into(),
                size: 8192,
                mtime_ns: 1_700_000_000_123_456_789,
                stored: Stored::Pages,
            }],
        };
        let text = serde_json::to_vec(&list).unwrap();
        assert_eq!(FileList::read(&text[..], "files.json").unwrap(), list);
        let err = FileList::read(&b"{"[..], "base/x/files.json").unwrap_err();
        assert!(err.to_string().contains("base/x/files.json"), "{err}");
    }
}

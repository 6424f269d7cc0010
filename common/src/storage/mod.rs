//! The one storage layer under the backup repository: a local directory or an S3 bucket prefix.
//!
//! Every tool reads and writes the repository through a [`Store`]; none touches the
//! filesystem of the repository or talks to S3 on its own. Keys are `/`-separated paths
//! relative to the repository root (`base/20261121T020000Z/base.tar.zst`), the same layout
//! on disk and under the bucket prefix.
//!
//! The API is blocking, like the tools' streaming code: S3 requests run on a small runtime of
//! their own, so the API may be called from plain threads and from inside the tools' async
//! code alike.
//!
//! What each backend guarantees:
//!
//! - a written object appears whole under its key or not at all (local: temporary name,
//!   fsync, rename; S3: single PUT or multipart upload completed last);
//! - [`Store::put_new`] and [`ObjectWriter::commit_new`] never replace an existing object
//!   (local: hard link; S3: conditional `If-None-Match: *` PUT);
//! - a writer dropped or interrupted before its commit leaves nothing under its key (S3: the
//!   multipart upload is aborted; a killed process leaves a marker under `.open-uploads/` that
//!   [`Store::abort_stale_uploads`] reads to abort it later).

mod local;
mod location;
mod s3;

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use time::OffsetDateTime;

pub use location::Location;
pub use s3::S3Settings;

/// The folder, beside an object being uploaded in parts, that records its open multipart
/// upload (so that one a killed run left can be found and aborted).
pub const UPLOADS_DIR: &str = ".open-uploads";

/// One stored object, as a listing finds it.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    /// Key relative to the repository root.
    pub key: String,
    pub size: u64,
    pub modified: Option<OffsetDateTime>,
}

/// A backup repository's storage: a local directory or an S3 bucket prefix.
#[derive(Clone)]
pub struct Store {
    backend: Arc<Backend>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("location", &self.location().to_string())
            .finish()
    }
}

enum Backend {
    Local(local::LocalStore),
    S3(s3::S3Store),
}

impl Store {
    /// Connects to the repository at `location` (nothing is created yet). For S3, the
    /// credentials and endpoint come from the AWS environment variables (see [`S3Settings`]).
    pub fn open(location: &Location) -> anyhow::Result<Store> {
        Store::open_with(location, &[])
    }

    /// Like [`Store::open`], with `AWS_*` settings that win over the environment's (tests,
    /// tools that hold settings of their own).
    pub fn open_with(location: &Location, overrides: &[(String, String)]) -> anyhow::Result<Store> {
        let backend = match location {
            Location::Local(root) => Backend::Local(local::LocalStore::new(root.clone())),
            Location::S3 { bucket, prefix } => Backend::S3(s3::S3Store::connect(
                bucket,
                prefix,
                &S3Settings::from_env_with(overrides)?,
                overrides,
            )?),
        };
        Ok(Store {
            backend: Arc::new(backend),
        })
    }

    pub fn location(&self) -> &Location {
        match &*self.backend {
            Backend::Local(l) => l.location(),
            Backend::S3(s) => s.location(),
        }
    }

    /// True for a local directory.
    pub fn is_local(&self) -> bool {
        matches!(&*self.backend, Backend::Local(_))
    }

    /// The file behind a key, for a local repository (children such as `pg_restore` may read
    /// it directly); `None` on object storage.
    pub fn local_path(&self, key: &str) -> Option<PathBuf> {
        match &*self.backend {
            Backend::Local(l) => Some(l.path(key)),
            Backend::S3(_) => None,
        }
    }

    /// How a key is shown in messages: a path, or `s3://bucket/prefix/key`.
    pub fn describe(&self, key: &str) -> String {
        self.location().join_display(key)
    }

    /// Checks the repository can be reached and listed (S3: the bucket exists and the
    /// credentials are accepted), so a bad setting fails before any work starts.
    pub fn probe(&self) -> anyhow::Result<()> {
        match &*self.backend {
            Backend::Local(_) => Ok(()),
            Backend::S3(s) => s.probe(),
        }
    }

    /// Whether the root exists (a local directory; always true for S3, where prefixes are
    /// implicit once the bucket answers).
    pub fn root_exists(&self) -> bool {
        match &*self.backend {
            Backend::Local(l) => l.root().is_dir(),
            Backend::S3(_) => true,
        }
    }

    /// Prepares the root for writing (local: creates the directory, mode 0700).
    pub fn create_root(&self) -> io::Result<()> {
        match &*self.backend {
            Backend::Local(l) => crate::durable::create_dir_all(l.root()),
            Backend::S3(_) => Ok(()),
        }
    }

    /// A new object written as a stream; it appears under `key` only at the commit.
    pub fn create(&self, key: &str) -> io::Result<ObjectWriter> {
        let inner = match &*self.backend {
            Backend::Local(l) => WriterInner::Local(l.create(key)?),
            Backend::S3(s) => WriterInner::S3(Box::new(s.create(key))),
        };
        Ok(ObjectWriter { inner, written: 0 })
    }

    /// Writes a whole object, replacing any object under the key.
    pub fn put(&self, key: &str, bytes: &[u8]) -> io::Result<()> {
        let mut writer = self.create(key)?;
        writer.write_all(bytes)?;
        writer.commit()
    }

    /// Writes a whole object only if none exists under the key; false when one does (and it
    /// is left untouched).
    pub fn put_new(&self, key: &str, bytes: &[u8]) -> io::Result<bool> {
        let mut writer = self.create(key)?;
        writer.write_all(bytes)?;
        match writer.commit_new() {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Streams an object; `NotFound` when there is none.
    pub fn open_read(&self, key: &str) -> io::Result<Box<dyn Read + Send>> {
        match &*self.backend {
            Backend::Local(l) => l.open_read(key),
            Backend::S3(s) => s.open_read(key),
        }
    }

    /// Reads a whole (small) object; `NotFound` when there is none.
    pub fn read(&self, key: &str) -> io::Result<Vec<u8>> {
        match &*self.backend {
            Backend::Local(l) => std::fs::read(l.path(key)),
            Backend::S3(s) => s.read(key),
        }
    }

    /// The size of an object, or `None` when there is none.
    pub fn size(&self, key: &str) -> io::Result<Option<u64>> {
        match &*self.backend {
            Backend::Local(l) => l.size(key),
            Backend::S3(s) => s.size(key),
        }
    }

    pub fn exists(&self, key: &str) -> io::Result<bool> {
        Ok(self.size(key)?.is_some())
    }

    /// Every object under `prefix` (a "directory" key, without trailing `/`), at any depth,
    /// sorted by key. Temporary files of unfinished local writes are left out.
    pub fn list(&self, prefix: &str) -> io::Result<Vec<ObjectInfo>> {
        let mut found = match &*self.backend {
            Backend::Local(l) => l.list(prefix)?,
            Backend::S3(s) => s.list(prefix)?,
        };
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    /// The objects directly under `prefix` (not in deeper "directories") and the names of
    /// its child "directories", both sorted.
    pub fn list_dir(&self, prefix: &str) -> io::Result<(Vec<ObjectInfo>, Vec<String>)> {
        let (mut files, mut dirs) = match &*self.backend {
            Backend::Local(l) => l.list_dir(prefix)?,
            Backend::S3(s) => s.list_dir(prefix)?,
        };
        files.sort_by(|a, b| a.key.cmp(&b.key));
        dirs.sort();
        Ok((files, dirs))
    }

    /// Deletes an object; no error when there is none.
    pub fn delete(&self, key: &str) -> io::Result<()> {
        match &*self.backend {
            Backend::Local(l) => l.delete(key),
            Backend::S3(s) => s.delete(key),
        }
    }

    /// Deletes everything under `prefix` (S3: also aborts the multipart uploads recorded
    /// there). Returns how many objects went.
    pub fn delete_prefix(&self, prefix: &str) -> io::Result<usize> {
        match &*self.backend {
            Backend::Local(l) => l.delete_prefix(prefix),
            Backend::S3(s) => s.delete_prefix(prefix),
        }
    }

    /// Aborts the multipart uploads that killed runs left under `prefix` (recorded by their
    /// `.open-uploads/` markers). Returns how many were aborted.
    pub fn abort_stale_uploads(&self, prefix: &str) -> io::Result<usize> {
        match &*self.backend {
            Backend::Local(_) => Ok(0),
            Backend::S3(s) => s.abort_uploads_under(prefix),
        }
    }

    /// Takes the lock `key` for `holder` (a short description: tool, host, pid), failing at
    /// once if a live run holds it. See [`StoreLock`].
    /// `what` names the kind of run in messages ("base").
    pub fn lock(&self, key: &str, holder: &str, what: &str) -> anyhow::Result<StoreLock> {
        match &*self.backend {
            Backend::Local(l) => Ok(StoreLock::Local(l.lock(key, holder, what)?)),
            Backend::S3(s) => Ok(StoreLock::S3(s.lock(key, holder, what)?)),
        }
    }

    /// True when a live run holds the lock `key` right now.
    pub fn is_locked(&self, key: &str) -> bool {
        match &*self.backend {
            Backend::Local(l) => l.is_locked(key),
            Backend::S3(s) => s.is_locked(key),
        }
    }
}

/// Held while a run writes; dropping it releases the lock.
///
/// - Local: `flock` on the lock file; the kernel releases it when the process dies.
/// - S3: a lock object created conditionally (`If-None-Match: *`) holding the owner and an
///   expiry. A thread renews the expiry (a conditional update on the object's ETag) every
///   third of its lifetime (`BACKUP_S3_LOCK_TTL`, default 2 minutes). A crashed run's lock is
///   broken by the next run once it has expired, again by a conditional update, so of two
///   runs breaking it only one wins. A run whose renewal finds the lock taken over stops
///   before it commits anything ([`StoreLock::check`]).
#[derive(Debug)]
pub enum StoreLock {
    Local(local::LocalLock),
    S3(s3::S3Lock),
}

impl StoreLock {
    /// Fails if the lock was lost (S3: another run broke it after it could not be renewed):
    /// checked before a run marks its work complete.
    pub fn check(&self) -> anyhow::Result<()> {
        match self {
            StoreLock::Local(_) => Ok(()),
            StoreLock::S3(lock) => lock.check(),
        }
    }

    /// The lock's key, for messages.
    pub fn describe(&self) -> String {
        match self {
            StoreLock::Local(lock) => lock.path().display().to_string(),
            StoreLock::S3(lock) => lock.describe(),
        }
    }
}

/// A new object being written. Nothing exists under its key until [`ObjectWriter::commit`];
/// dropped before that, it leaves nothing behind.
pub struct ObjectWriter {
    inner: WriterInner,
    written: u64,
}

enum WriterInner {
    Local(crate::durable::AtomicFile),
    S3(Box<s3::S3Writer>),
}

impl ObjectWriter {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Makes the object visible under its key, replacing any older one.
    pub fn commit(self) -> io::Result<()> {
        match self.inner {
            WriterInner::Local(file) => file.commit(),
            WriterInner::S3(writer) => writer.commit(false),
        }
    }

    /// Makes the object visible only if no object exists under its key yet; returns
    /// `AlreadyExists` otherwise, leaving the existing object untouched.
    pub fn commit_new(self) -> io::Result<()> {
        match self.inner {
            WriterInner::Local(file) => file.commit_noclobber(),
            WriterInner::S3(writer) => writer.commit(true),
        }
    }
}

impl Write for ObjectWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match &mut self.inner {
            WriterInner::Local(file) => file.write(buf)?,
            WriterInner::S3(writer) => writer.write(buf)?,
        };
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            WriterInner::Local(file) => file.flush(),
            WriterInner::S3(_) => Ok(()),
        }
    }
}

/// Joins a key prefix and a name with `/` (an empty prefix is the root).
pub fn join(prefix: &str, name: &str) -> String {
    match (prefix.trim_end_matches('/'), name.trim_start_matches('/')) {
        ("", name) => name.to_string(),
        (prefix, "") => prefix.to_string(),
        (prefix, name) => format!("{prefix}/{name}"),
    }
}

/// The last component of a key.
pub fn file_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// Checks that a name taken from input (a set id, a topic's file name) is one key component:
/// no `/`, no `..`, nothing hidden, so it cannot reach outside its folder.
pub fn check_component(name: &str) -> anyhow::Result<&str> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.starts_with('.')
        || name.contains(['/', '\\', '\0'])
    {
        anyhow::bail!("'{name}' is not a valid name in the repository");
    }
    Ok(name)
}

/// Whether a key names a hidden object (a lock, a marker, a temporary file): any component
/// starting with a dot.
pub fn is_hidden(key: &str) -> bool {
    key.split('/').any(|c| c.starts_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_join_and_split() {
        assert_eq!(join("", "base"), "base");
        assert_eq!(join("base/", "x"), "base/x");
        assert_eq!(join("base", ""), "base");
        assert_eq!(file_name("base/1/base.tar"), "base.tar");
        assert!(is_hidden("base/.lock"));
        assert!(!is_hidden("base/1/manifest.json"));
        assert!(check_component("../x").is_err());
        assert!(check_component("a/b").is_err());
        assert!(check_component(".hidden").is_err());
        assert!(check_component("20261121T020000Z").is_ok());
    }

    #[test]
    fn local_store_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Location::Local(dir.path().to_path_buf())).unwrap();
        store.put("base/1/a", b"hello").unwrap();
        assert_eq!(store.read("base/1/a").unwrap(), b"hello");
        assert!(!store.put_new("base/1/a", b"other").unwrap());
        assert_eq!(store.read("base/1/a").unwrap(), b"hello");
        assert!(store.put_new("base/1/b", b"x").unwrap());
        let (files, dirs) = store.list_dir("base").unwrap();
        assert!(files.is_empty());
        assert_eq!(dirs, vec!["1".to_string()]);
        let all: Vec<String> = store
            .list("base")
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(all, vec!["base/1/a", "base/1/b"]);
        assert_eq!(store.size("base/1/a").unwrap(), Some(5));
        assert_eq!(store.size("base/1/zz").unwrap(), None);
        let mut w = store.create("base/2/c").unwrap();
        w.write_all(b"partial").unwrap();
        drop(w);
        assert_eq!(store.size("base/2/c").unwrap(), None);
        assert_eq!(store.delete_prefix("base/1").unwrap(), 2);
        assert!(store.list("base/1").unwrap().is_empty());
        assert!(matches!(
            store.open_read("nope").map(|_| ()).unwrap_err().kind(),
            io::ErrorKind::NotFound
        ));
    }
}

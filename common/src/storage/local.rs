//! The local-directory backend: durable files (temporary name, fsync, rename) and `flock`.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{Location, ObjectInfo};
use crate::durable::{self, AtomicFile};

pub(super) struct LocalStore {
    location: Location,
    root: PathBuf,
}

impl LocalStore {
    pub fn new(root: PathBuf) -> LocalStore {
        LocalStore {
            location: Location::Local(root.clone()),
            root,
        }
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, key: &str) -> PathBuf {
        if key.is_empty() {
            self.root.clone()
        } else {
            self.root.join(key)
        }
    }

    pub fn create(&self, key: &str) -> io::Result<AtomicFile> {
        // Interrupted, a writer thread stops here rather than recreate a set directory the
        // interrupt's cleanup is removing.
        crate::interrupt::checkpoint();
        let path = self.path(key);
        if let Some(parent) = path.parent() {
            durable::create_dir_all(parent)?;
        }
        AtomicFile::create(&path)
    }

    pub fn open_read(&self, key: &str) -> io::Result<Box<dyn Read + Send>> {
        let file = File::open(self.path(key))?;
        if file.metadata()?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is a directory", self.path(key).display()),
            ));
        }
        Ok(Box::new(io::BufReader::with_capacity(1 << 20, file)))
    }

    pub fn size(&self, key: &str) -> io::Result<Option<u64>> {
        match std::fs::metadata(self.path(key)) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn info(&self, key: String, meta: &std::fs::Metadata) -> ObjectInfo {
        ObjectInfo {
            key,
            size: meta.len(),
            modified: meta.modified().ok().map(time::OffsetDateTime::from),
        }
    }

    pub fn list(&self, prefix: &str) -> io::Result<Vec<ObjectInfo>> {
        let dir = self.path(prefix);
        if !dir.is_dir() {
            return Ok(Vec::new());
        }
        let mut found = Vec::new();
        for entry in walkdir::WalkDir::new(&dir).min_depth(1) {
            let entry = entry.map_err(io::Error::other)?;
            if !entry.file_type().is_file() || is_temporary(&entry.file_name().to_string_lossy()) {
                continue;
            }
            let rel = entry
                .path()
                .strip_prefix(&self.root)
                .map_err(io::Error::other)?;
            let key = rel.to_string_lossy().replace('\\', "/");
            found.push(self.info(key, &entry.metadata().map_err(io::Error::other)?));
        }
        Ok(found)
    }

    pub fn list_dir(&self, prefix: &str) -> io::Result<(Vec<ObjectInfo>, Vec<String>)> {
        let dir = self.path(prefix);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
            Err(e) => return Err(e),
        };
        let (mut files, mut dirs) = (Vec::new(), Vec::new());
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                // Gone since the directory was read: a temporary file renamed into place (a
                // WAL segment the archiver just finished: seen by the next listing) or one
                // deleted.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if meta.is_dir() {
                dirs.push(name);
            } else if meta.is_file() && !is_temporary(&name) {
                files.push(self.info(super::join(prefix, &name), &meta));
            }
        }
        Ok((files, dirs))
    }

    pub fn delete(&self, key: &str) -> io::Result<()> {
        let path = self.path(key);
        match std::fs::remove_file(&path) {
            Ok(()) => durable::fsync_dir(path.parent().unwrap_or(&self.root)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub fn delete_prefix(&self, prefix: &str) -> io::Result<usize> {
        let dir = self.path(prefix);
        if !dir.exists() {
            return Ok(0);
        }
        let count = walkdir::WalkDir::new(&dir)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .count();
        // A writer that was past its last interruption checkpoint may still add a file while
        // the directory goes: try again a few times rather than leave an empty set behind.
        let mut attempt = 0;
        loop {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) if !dir.exists() => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) if attempt >= 5 => return Err(e),
                _ => {}
            }
            attempt += 1;
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        if let Some(parent) = dir.parent() {
            durable::fsync_dir(parent)?;
        }
        Ok(count)
    }

    pub fn lock(&self, key: &str, holder: &str, what: &str) -> anyhow::Result<LocalLock> {
        let path = self.path(key);
        if let Some(dir) = path.parent() {
            durable::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
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
                let held_by = std::fs::read_to_string(&path).unwrap_or_default();
                anyhow::bail!(
                    "another {what} run holds the repository lock {} ({}); wait for it to finish",
                    path.display(),
                    held_by.trim()
                );
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
        file.set_len(0)?;
        writeln!(file, "{holder}")?;
        Ok(LocalLock { _file: file, path })
    }

    pub fn is_locked(&self, key: &str) -> bool {
        let Ok(file) = File::open(self.path(key)) else {
            return false;
        };
        matches!(
            file.try_lock_shared(),
            Err(std::fs::TryLockError::WouldBlock)
        )
    }
}

/// A temporary file of an unfinished write (see [`AtomicFile`]).
fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp.")
}

/// A `flock` held on the lock file until dropped.
#[derive(Debug)]
pub struct LocalLock {
    _file: File,
    path: PathBuf,
}

impl LocalLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_skips_files_renamed_or_deleted_while_it_runs() {
        let root = tempfile::tempdir().unwrap();
        let store = LocalStore::new(root.path().to_path_buf());
        let dir = root.path().join("wal");
        std::fs::create_dir(&dir).unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            // An archiver: temporary files renamed into place, older ones deleted.
            scope.spawn(|| {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let tmp = dir.join(format!(".{n}.tmp.x"));
                    std::fs::write(&tmp, b"x").unwrap();
                    std::fs::rename(&tmp, dir.join(format!("{n:024}"))).unwrap();
                    if n >= 8 {
                        std::fs::remove_file(dir.join(format!("{:024}", n - 8))).unwrap();
                    }
                    n += 1;
                }
            });
            let failed = (0..3000).find_map(|_| store.list_dir("wal").err());
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            assert!(failed.is_none(), "{failed:?}");
        });
    }
}

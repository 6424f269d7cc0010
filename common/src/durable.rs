//! Durable writes: a temporary name in the same directory, fsync, rename, fsync the directory.
//!
//! Until [`AtomicFile::commit`] the final name does not exist, so a crash leaves at most a
//! dot-named temporary file behind, never a half-written file under the real name.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Mode of every file the tools write: backups hold data and are readable by the owner only.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory the tools create.
pub const DIR_MODE: u32 = 0o700;

/// Flushes a directory's entries (a rename or a new file in it) to disk.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates a directory (and parents) with [`DIR_MODE`].
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

use std::os::unix::fs::DirBuilderExt;

/// A file written under a temporary name and moved into place when complete.
#[derive(Debug)]
pub struct AtomicFile {
    file: File,
    /// Removes the temporary file if the process is interrupted before the commit.
    _cleanup: crate::interrupt::Cleanup,
    temp: PathBuf,
    target: PathBuf,
}

impl AtomicFile {
    /// Opens a fresh temporary file next to `target` with mode 0600.
    pub fn create(target: &Path) -> io::Result<AtomicFile> {
        AtomicFile::create_with_mode(target, FILE_MODE)
    }

    /// Like [`AtomicFile::create`] with another mode, for files that hold no backup data and
    /// that other users must read (Prometheus textfile metrics: 0644).
    pub fn create_with_mode(target: &Path, mode: u32) -> io::Result<AtomicFile> {
        let dir = parent(target);
        let name = target
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
        let temp = dir.join(format!(
            ".{}.tmp.{}.{}",
            name.to_string_lossy(),
            std::process::id(),
            unique()
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        Ok(AtomicFile {
            file,
            _cleanup: crate::interrupt::remove_file_on_interrupt(temp.clone()),
            temp,
            target: target.to_path_buf(),
        })
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Syncs and renames over the target (replacing it if it exists).
    pub fn commit(self) -> io::Result<()> {
        self.file.sync_all()?;
        std::fs::rename(&self.temp, &self.target)?;
        fsync_dir(parent(&self.target))
    }

    /// Syncs and moves into place only if the target does not exist yet; returns
    /// `AlreadyExists` otherwise and leaves the existing file untouched.
    pub fn commit_noclobber(self) -> io::Result<()> {
        self.file.sync_all()?;
        // A hard link fails atomically when the name is taken, unlike rename.
        let linked = std::fs::hard_link(&self.temp, &self.target);
        let _ = std::fs::remove_file(&self.temp);
        linked?;
        fsync_dir(parent(&self.target))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        // After a commit the temporary name is gone and this is a no-op.
        let _ = std::fs::remove_file(&self.temp);
    }
}

/// Writes `bytes` to `target` atomically and durably, mode 0600.
pub fn write_atomic(target: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with_mode(target, bytes, FILE_MODE)
}

/// Writes `bytes` to `target` atomically and durably with the given mode.
pub fn write_atomic_with_mode(target: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut file = AtomicFile::create_with_mode(target, mode)?;
    file.write_all(bytes)?;
    file.commit()
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn atomic_write_is_private_and_complete() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("x");
        write_atomic(&target, b"hello").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"hello");
        let mode = std::fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn noclobber_keeps_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("seg");
        write_atomic(&target, b"first").unwrap();
        let mut second = AtomicFile::create(&target).unwrap();
        second.write_all(b"second").unwrap();
        let err = second.commit_noclobber().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&target).unwrap(), b"first");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn dropped_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = AtomicFile::create(&dir.path().join("y")).unwrap();
        f.write_all(b"partial").unwrap();
        drop(f);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}

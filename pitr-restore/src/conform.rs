//! A data directory made to match a backup's file list (`files.json`): what the directory
//! holds (walked), the files and directories the backup does not have (removed), and a check
//! that every listed file is there with its listed size.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::Context;
use common::physical::datadir::{self, PathClass};
use common::physical::filelist::{self, FileList};

use crate::extract::ALWAYS_WRITTEN;

/// A file found in the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFile {
    /// Relative to the data directory.
    pub relative: PathBuf,
    pub size: u64,
    /// Modification time in nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Not a regular file (nor a link to one): a socket, a fifo, a link to nothing.
    pub odd: bool,
}

impl LocalFile {
    /// The path as file lists write it (`None` when it is not UTF-8: never listed).
    pub fn key(&self) -> Option<&str> {
        self.relative.to_str()
    }
}

/// What a data directory holds.
#[derive(Debug, Default)]
pub struct Local {
    pub files: Vec<LocalFile>,
    /// Directories, parents before children, relative.
    pub dirs: Vec<PathBuf>,
}

/// Walks `pgdata`. Symbolic links to directories (pg_wal, tablespaces) are followed, so
/// what they hold is seen; `ignore` names top-level entries left out.
pub fn walk(pgdata: &Path, ignore: &[&str]) -> anyhow::Result<Local> {
    let mut local = Local::default();
    let mut pending = vec![PathBuf::new()];
    while let Some(dir) = pending.pop() {
        let full = pgdata.join(&dir);
        let entries =
            std::fs::read_dir(&full).with_context(|| format!("cannot read {}", full.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot read {}", full.display()))?;
            let relative = dir.join(entry.file_name());
            if dir.as_os_str().is_empty()
                && ignore
                    .iter()
                    .any(|i| entry.file_name() == std::ffi::OsStr::new(i))
            {
                continue;
            }
            // Follows links: a link to a directory is walked, to a file is a file.
            match std::fs::metadata(entry.path()) {
                Ok(meta) if meta.is_dir() => {
                    local.dirs.push(relative.clone());
                    pending.push(relative);
                }
                Ok(meta) => local.files.push(LocalFile {
                    relative,
                    size: meta.len(),
                    mtime_ns: filelist::mtime_ns(&meta),
                    odd: !meta.is_file(),
                }),
                Err(_) => local.files.push(LocalFile {
                    relative,
                    size: 0,
                    mtime_ns: 0,
                    odd: true,
                }),
            }
        }
    }
    local.dirs.sort_by_key(|d| d.components().count());
    Ok(local)
}

/// What a data directory has beyond a file list.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Unlisted {
    pub files: Vec<PathBuf>,
    /// Directories a backup keeps (not pg_wal's contents and the like), deepest first.
    pub dirs: Vec<PathBuf>,
}

/// The files of `local` that `list` does not have (except `backup_label` and
/// `tablespace_map`, which come with a set and are not listed), and the directories it does
/// not have that a backup would keep and that hold no listed file.
pub fn unlisted(local: &Local, list: &FileList) -> Unlisted {
    let listed: HashSet<&str> = list.files.iter().map(|f| f.path.as_str()).collect();
    let mut needed_dirs: HashSet<&str> = list.dirs.iter().map(String::as_str).collect();
    for file in &list.files {
        let mut path = file.path.as_str();
        while let Some((parent, _)) = path.rsplit_once('/') {
            needed_dirs.insert(parent);
            path = parent;
        }
    }
    let files = local
        .files
        .iter()
        .filter(|f| match f.key() {
            Some(key) => !listed.contains(key) && !ALWAYS_WRITTEN.contains(&key),
            None => true,
        })
        .map(|f| f.relative.clone())
        .collect();
    let mut dirs: Vec<PathBuf> = local
        .dirs
        .iter()
        .filter(|d| match d.to_str() {
            Some(key) => {
                !needed_dirs.contains(key)
                    && datadir::classify(key, true, |_| false) == PathClass::Other
            }
            None => true,
        })
        .cloned()
        .collect();
    dirs.reverse();
    Unlisted { files, dirs }
}

/// Removes what `unlisted` names from `pgdata` (files first, then the directories with what
/// is left in them); returns the number of files removed.
pub fn remove(pgdata: &Path, unlisted: &Unlisted) -> anyhow::Result<u64> {
    for file in &unlisted.files {
        let path = pgdata.join(file);
        std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    }
    for dir in &unlisted.dirs {
        let path = pgdata.join(dir);
        // A parent removed first took it along.
        if std::fs::symlink_metadata(&path).is_err() {
            continue;
        }
        let removed = if std::fs::symlink_metadata(&path)?.is_symlink() {
            std::fs::remove_file(&path)
        } else {
            std::fs::remove_dir_all(&path)
        };
        removed.with_context(|| format!("cannot remove {}", path.display()))?;
    }
    Ok(unlisted.files.len() as u64)
}

/// Every listed file is in `pgdata` (at `located(path)`) with its listed size; `set` names
/// the backup in the error. Each then gets its listed modification time: the directory now
/// holds the set's state, so a later `--delta --delta-by-timestamp` may trust a file whose
/// time is still the listed one.
pub fn verify(
    pgdata: &Path,
    list: &FileList,
    set: &str,
    located: impl Fn(&str) -> String,
) -> anyhow::Result<()> {
    for file in &list.files {
        let path = pgdata.join(located(&file.path));
        let size = match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => meta.len(),
            _ => anyhow::bail!(
                "{} is missing after the restore although the file list of base backup {set} has it: the backup (or its chain) is damaged",
                file.path
            ),
        };
        if size != file.size {
            anyhow::bail!(
                "{} is {size} bytes after the restore, the file list of base backup {set} says {}: the backup (or its chain) is damaged",
                file.path,
                file.size
            );
        }
        stamp(&path, file.mtime_ns)?;
    }
    Ok(())
}

/// Sets a file's modification time to `mtime_ns` (nanoseconds since the epoch; none at or
/// before the epoch, which no real list holds, is set).
fn stamp(path: &Path, mtime_ns: i128) -> anyhow::Result<()> {
    let Some(ns) = u64::try_from(mtime_ns).ok().filter(|&ns| ns > 0) else {
        return Ok(());
    };
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns);
    // The restore wrote the file, so it owns it: a read-only descriptor may set its times.
    std::fs::File::open(path)
        .and_then(|f| f.set_modified(time))
        .with_context(|| format!("cannot set the modification time of {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::physical::filelist::{ListedFile, Stored};

    fn listed(path: &str, size: u64) -> ListedFile {
        ListedFile {
            path: path.into(),
            size,
            mtime_ns: 0,
            stored: Stored::Whole,
        }
    }

    fn write(root: &Path, path: &str, bytes: &[u8]) {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn unlisted_files_and_directories_go_and_listed_ones_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (path, bytes) in [
            ("PG_VERSION", &b"15\n"[..]),
            ("base/1/1259", b"rel"),
            ("base/1/16384", b"dropped since the full"),
            ("base/5/1259", b"a dropped database"),
            ("backup_label", b"label"),
            ("pg_wal/000000010000000000000001", b"old wal"),
            ("pg_wal/archive_status/x.done", b""),
            ("postmaster.opts", b"opts"),
        ] {
            write(root, path, bytes);
        }
        std::fs::create_dir_all(root.join("pg_notify")).unwrap();
        let list = FileList {
            dirs: ["base", "base/1", "global", "pg_wal", "pg_notify"]
                .map(String::from)
                .to_vec(),
            files: vec![listed("PG_VERSION", 3), listed("base/1/1259", 3)],
        };
        let local = walk(root, &[]).unwrap();
        assert!(
            local
                .dirs
                .iter()
                .position(|d| d == Path::new("base"))
                .unwrap()
                < local
                    .dirs
                    .iter()
                    .position(|d| d == Path::new("base/5"))
                    .unwrap()
        );
        let mut gone = unlisted(&local, &list);
        gone.files.sort();
        assert_eq!(
            gone.files,
            [
                "base/1/16384",
                "base/5/1259",
                "pg_wal/000000010000000000000001",
                "pg_wal/archive_status/x.done",
                "postmaster.opts"
            ]
            .map(PathBuf::from)
        );
        // pg_wal/archive_status is not a backed-up directory: left (PostgreSQL wants it).
        assert_eq!(gone.dirs, [PathBuf::from("base/5")]);
        assert_eq!(remove(root, &gone).unwrap(), 5);
        assert!(!root.join("base/5").exists());
        assert!(root.join("pg_wal/archive_status").is_dir());
        assert!(root.join("backup_label").exists(), "comes with the set");
        verify(root, &list, "S", str::to_string).unwrap();

        let mut grown = list.clone();
        grown.files[1].size = 8192;
        let err = verify(root, &grown, "S", str::to_string).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("base/1/1259 is 3 bytes after the restore"),
            "{err}"
        );
        grown.files.push(listed("global/pg_control", 8192));
        grown.files[1].size = 3;
        let err = verify(root, &grown, "S", str::to_string).unwrap_err();
        assert!(
            err.to_string().contains("global/pg_control is missing"),
            "{err}"
        );
        write(root, "global/pg_control.elsewhere", &[0; 8192]);
        verify(root, &grown, "S", |p| {
            if p == "global/pg_control" {
                "global/pg_control.elsewhere".into()
            } else {
                p.into()
            }
        })
        .unwrap();
    }

    #[test]
    fn a_directory_holding_listed_files_is_kept_even_when_the_list_omits_it() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "base/1/1259", b"rel");
        let list = FileList {
            dirs: vec![],
            files: vec![listed("base/1/1259", 3)],
        };
        let gone = unlisted(&walk(dir.path(), &[]).unwrap(), &list);
        assert_eq!(gone, Unlisted::default());
    }
}

//! Unpacks a base-backup tarball into the data directory, checking the stored file's SHA-256
//! and size as it streams. A mismatch is an error; the caller's `safety::emptied_unless_done` then
//! removes what was extracted. An encrypted tarball (`.age`) is decrypted in the same pass
//! (stored bytes -> checksum -> decrypt -> decompress -> tar): a damaged or truncated one fails
//! on the chunk that does not authenticate.
//!
//! A set of a chain (diff, incr) also holds incremental members (`<dir>/INCREMENTAL.<file>`):
//! their pages are written into the file the earlier sets restored. A delta restore writes
//! only the members of the files it rewrites ([`Members::Only`]).

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::Context;
use common::encryption::{self, Identities};
use common::manifest::FileEntry;
use common::physical::incremental;
use common::repo::{Repository, SetInfo};
use common::stream::HashingReader;

struct Counting<'a, R> {
    inner: R,
    progress: &'a indicatif::ProgressBar,
}

impl<R: io::Read> io::Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Interrupted, extraction stops here while the data directory is emptied (or the
        // member being written ends early: see `unpack_members`).
        common::interrupt::checkpoint_read()?;
        let n = self.inner.read(buf)?;
        self.progress.inc(n as u64);
        Ok(n)
    }
}

/// Before anything is written: an encrypted tarball's header must open with the identities
/// at hand (missing or wrong key is one clear error naming the file).
pub fn check_key(
    repo: &Repository,
    set: &SetInfo,
    entry: &FileEntry,
    identities: Option<&Identities>,
) -> anyhow::Result<()> {
    if !entry.is_encrypted() {
        return Ok(());
    }
    let shown = repo.describe(&set.key(&entry.path));
    let identities = identities.ok_or_else(|| encryption::missing_identity(&shown))?;
    let stored = repo
        .open_file(set, &entry.path)
        .with_context(|| format!("cannot read {shown}"))?;
    identities.decrypt(stored, &shown)?;
    Ok(())
}

/// Which members of a tarball are written into the data directory.
#[derive(Debug, Clone, Copy)]
pub enum Members<'a> {
    /// Every member: a restore into an empty directory.
    All,
    /// A delta restore into a data directory that already holds the rest: only the files of
    /// `rewrite` (whole, or patched by incremental members), `backup_label` and
    /// `tablespace_map`, and directories that are missing. `global/pg_control` is written
    /// as `pg_control_as` (moved into place once everything else is).
    Only {
        rewrite: &'a HashSet<String>,
        pg_control_as: &'a str,
    },
}

/// What happens to one member.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Skip,
    /// Unpacked at its own path.
    Unpack,
    /// Unpacked at another path (relative to the data directory).
    UnpackAs(String),
    /// Its changed pages are written into this file (relative to the data directory).
    Patch(String),
}

impl Members<'_> {
    /// What a failed restore leaves, said with the error.
    fn after_failure(&self, pgdata: &Path) -> String {
        match self {
            Members::All => format!(
                "the partly restored files are removed from {}",
                pgdata.display()
            ),
            Members::Only { .. } => format!(
                "{} is left without {PG_CONTROL}, so it cannot be started half-restored: run pitr-restore --delta again to finish",
                pgdata.display()
            ),
        }
    }

    /// `relative`: the member's path, `/`-separated, without `./`.
    fn action(&self, relative: &str, is_dir: bool, exists: impl Fn() -> bool) -> Action {
        let patched = incremental::patched_path(relative);
        match self {
            Members::All => match patched {
                Some(file) => Action::Patch(file),
                None => Action::Unpack,
            },
            Members::Only {
                rewrite,
                pg_control_as,
            } => match patched {
                Some(file) if rewrite.contains(&file) => Action::Patch(file),
                Some(_) => Action::Skip,
                None if is_dir => {
                    if exists() {
                        Action::Skip
                    } else {
                        Action::Unpack
                    }
                }
                None if relative == PG_CONTROL => Action::UnpackAs(pg_control_as.to_string()),
                None if rewrite.contains(relative) || ALWAYS_WRITTEN.contains(&relative) => {
                    Action::Unpack
                }
                None => Action::Skip,
            },
        }
    }
}

/// The file a delta restore writes last (under another name until then).
pub const PG_CONTROL: &str = "global/pg_control";
/// Files of a set's tarball that are not in its file list and always come from the set.
pub const ALWAYS_WRITTEN: &[&str] = &["backup_label", "tablespace_map"];

pub fn extract(
    repo: &Repository,
    set: &SetInfo,
    entry: &FileEntry,
    identities: Option<&Identities>,
    pgdata: &Path,
    members: Members<'_>,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    let key = set.key(&entry.path);
    let shown = repo.describe(&key);
    let stored = repo
        .open_file(set, &entry.path)
        .with_context(|| format!("cannot read {}", repo.describe(&key)))?;
    let mut hashing = HashingReader::new(Counting {
        inner: stored,
        progress,
    });
    let unpacked = (|| -> anyhow::Result<()> {
        let plain = encryption::reader(&mut hashing, entry.is_encrypted(), identities, &shown)?;
        let decoder = entry.compression.decoder(plain)?;
        let mut archive = tar::Archive::new(decoder);
        archive.set_preserve_permissions(true);
        archive.set_overwrite(true);
        archive.set_unpack_xattrs(false);
        unpack_members(&mut archive, &entry.path, pgdata, members)?;
        // tar stops at its end blocks: read on to the end, so that every age chunk, the
        // last one's end mark included, is authenticated.
        io::copy(&mut archive.into_inner(), &mut io::sink())?;
        Ok(())
    })();
    let sum = hashing.finish();
    let problem = match (&unpacked, &sum) {
        (Err(e), _) => Some(format!("cannot unpack {}: {e:#}", entry.path)),
        (_, Err(e)) => Some(format!("cannot read {}: {e}", entry.path)),
        (_, Ok(sum)) if sum.size != entry.size || sum.sha256 != entry.sha256 => Some(format!(
            "{} does not match its manifest checksum: the backup is damaged",
            entry.path
        )),
        _ => None,
    };
    if let Some(problem) = problem {
        anyhow::bail!("{problem}; {}", members.after_failure(pgdata));
    }
    // PostgreSQL refuses a data directory others can read.
    set_mode(pgdata, 0o700)?;
    Ok(())
}

/// Writes the members of `archive` (the tarball `tar_name`) that `members` selects.
fn unpack_members<R: io::Read>(
    archive: &mut tar::Archive<R>,
    tar_name: &str,
    pgdata: &Path,
    members: Members<'_>,
) -> anyhow::Result<()> {
    for member in archive.entries()? {
        let mut member = member?;
        let path = member.path()?.into_owned();
        if !stays_inside(&path) {
            anyhow::bail!(
                "{} holds the member {}, which leaves the data directory: refusing a hostile or damaged backup",
                tar_name,
                path.display()
            );
        }
        let relative = relative_path(&path);
        let is_dir = member.header().entry_type().is_dir();
        let action = members.action(&relative, is_dir, || pgdata.join(&relative).exists());
        // The decoder may hold the rest of the tarball already, so its reads alone do not
        // stop the writes: each member is written while the cleanup that empties the data
        // directory waits (it ends early on a signal), and the run stops after it.
        common::interrupt::checkpoint();
        let written = common::interrupt::uninterrupted(|| {
            write_member(pgdata, &relative, action, &mut member)
        });
        common::interrupt::checkpoint();
        written?;
    }
    Ok(())
}

fn write_member<R: io::Read>(
    pgdata: &Path,
    relative: &str,
    action: Action,
    member: &mut tar::Entry<'_, R>,
) -> anyhow::Result<()> {
    match action {
        Action::Skip => {}
        // unpack_in also refuses links whose targets, or whose parents, lead outside.
        Action::Unpack => {
            member.unpack_in(pgdata)?;
        }
        Action::UnpackAs(other) => {
            let dst = pgdata.join(other);
            if let Some(parent) = dst.parent() {
                std::fs::create_dir_all(parent)?;
            }
            member.unpack(&dst)?;
        }
        Action::Patch(file) => patch(pgdata, relative, &file, member)?,
    }
    Ok(())
}

/// Writes the changed pages of an incremental member into `file`, which the earlier sets of
/// the chain restored (opened without following a final symbolic link, under a parent that
/// resolves inside the data directory).
fn patch(pgdata: &Path, member: &str, file: &str, input: &mut impl io::Read) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = inside(pgdata, file).with_context(|| {
        format!("the incremental member {member} patches {file}, which is not a file of the data directory")
    })?;
    let target = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => anyhow::anyhow!(
                "the incremental member {member} patches {file}, which no earlier backup of the chain restored: the chain is damaged"
            ),
            _ => anyhow::Error::new(e).context(format!("cannot open {}", path.display())),
        })?;
    let pages = incremental::ChangedPages::read_header(input)
        .with_context(|| format!("cannot read the incremental member {member}"))?;
    pages
        .apply(input, &target)
        .with_context(|| format!("cannot patch {file} with the incremental member {member}"))?;
    Ok(())
}

/// `pgdata/relative`, when `relative` has only plain components and its parent directory
/// resolves inside `pgdata` (no symbolic link leads out).
fn inside(pgdata: &Path, relative: &str) -> Option<PathBuf> {
    let relative = Path::new(relative);
    if relative.as_os_str().is_empty()
        || !relative
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
    {
        return None;
    }
    let path = pgdata.join(relative);
    let parent = path.parent()?.canonicalize().ok()?;
    parent
        .starts_with(pgdata.canonicalize().ok()?)
        .then_some(path)
}

/// A member's path as the file lists write them: `/`-separated, without `.` components.
fn relative_path(path: &Path) -> String {
    path.components()
        .filter_map(|c| match c {
            std::path::Component::Normal(part) => Some(part.to_string_lossy()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether a tar member's path stays under the directory it is unpacked in: relative, with
/// no `..` (tar's own unpacking would skip such members silently; a base backup never holds
/// them, so one that does is refused whole).
fn stays_inside(path: &Path) -> bool {
    use std::path::Component;
    path.components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::physical::incremental::{ChangedPages, PAGE_SIZE};

    fn page(fill: u8) -> Vec<u8> {
        vec![fill; PAGE_SIZE]
    }

    /// A tarball of directories (names ending in `/`) and files.
    fn tarball(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, bytes) in members {
            let mut header = tar::Header::new_gnu();
            if path.ends_with('/') {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o700);
                header.set_size(0);
            } else {
                header.set_mode(0o600);
                header.set_size(bytes.len() as u64);
            }
            builder.append_data(&mut header, path, &bytes[..]).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn changed(file_size: u64, blocks: &[(u32, u8)]) -> Vec<u8> {
        let pages = ChangedPages {
            file_size,
            blocks: blocks.iter().map(|(b, _)| *b).collect(),
        };
        let mut bytes = Vec::new();
        pages.write_header(&mut bytes).unwrap();
        for (_, fill) in blocks {
            bytes.extend(page(*fill));
        }
        bytes
    }

    fn unpack(tar: &[u8], pgdata: &Path, members: Members<'_>) -> anyhow::Result<()> {
        let mut archive = tar::Archive::new(tar);
        archive.set_preserve_permissions(true);
        archive.set_overwrite(true);
        unpack_members(&mut archive, "base.tar", pgdata, members)
    }

    #[test]
    fn a_chain_unpacks_whole_files_then_patches_them_with_changed_pages() {
        let dir = tempfile::tempdir().unwrap();
        let pgdata = dir.path();
        let full = tarball(&[
            ("base/", vec![]),
            ("base/1/", vec![]),
            ("base/1/16384", [page(1), page(2), page(3)].concat()),
            ("backup_label", b"full".to_vec()),
        ]);
        unpack(&full, pgdata, Members::All).unwrap();
        // Page 1 changed, a fourth page added.
        let incr = tarball(&[
            ("base/1/", vec![]),
            (
                "./base/1/INCREMENTAL.16384",
                changed(4 * PAGE_SIZE as u64, &[(1, 9), (3, 8)]),
            ),
            ("backup_label", b"incr".to_vec()),
        ]);
        unpack(&incr, pgdata, Members::All).unwrap();
        assert_eq!(
            std::fs::read(pgdata.join("base/1/16384")).unwrap(),
            [page(1), page(9), page(3), page(8)].concat()
        );
        assert_eq!(std::fs::read(pgdata.join("backup_label")).unwrap(), b"incr");

        // Pages of a file no earlier set restored: the chain is damaged.
        let orphan = tarball(&[("base/1/INCREMENTAL.16999", changed(PAGE_SIZE as u64, &[]))]);
        let err = unpack(&orphan, pgdata, Members::All)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("base/1/16999") && err.contains("chain is damaged"),
            "{err}"
        );
    }

    #[test]
    fn a_delta_writes_only_what_it_rewrites_and_pg_control_under_its_waiting_name() {
        let dir = tempfile::tempdir().unwrap();
        let pgdata = dir.path();
        std::fs::create_dir_all(pgdata.join("base/1")).unwrap();
        std::fs::create_dir_all(pgdata.join("global")).unwrap();
        std::fs::write(pgdata.join("base/1/1259"), b"kept here").unwrap();
        std::fs::write(pgdata.join("base/1/16384"), [page(1), page(7)].concat()).unwrap();
        let tar = tarball(&[
            ("base/", vec![]),
            ("base/1/", vec![]),
            ("base/5/", vec![]),
            ("base/1/1259", b"from the backup".to_vec()),
            ("base/1/16384", [page(1), page(2)].concat()),
            (
                "base/1/INCREMENTAL.1259",
                changed(PAGE_SIZE as u64, &[(0, 5)]),
            ),
            ("global/pg_control", page(4)),
            ("backup_label", b"label".to_vec()),
        ]);
        let rewrite: HashSet<String> = ["base/1/16384", "global/pg_control"]
            .map(String::from)
            .into();
        let members = Members::Only {
            rewrite: &rewrite,
            pg_control_as: "global/pg_control.new",
        };
        unpack(&tar, pgdata, members).unwrap();
        assert_eq!(
            std::fs::read(pgdata.join("base/1/1259")).unwrap(),
            b"kept here"
        );
        assert_eq!(
            std::fs::read(pgdata.join("base/1/16384")).unwrap(),
            [page(1), page(2)].concat()
        );
        assert!(
            pgdata.join("base/5").is_dir(),
            "a missing directory is made"
        );
        assert!(!pgdata.join("global/pg_control").exists());
        assert_eq!(
            std::fs::read(pgdata.join("global/pg_control.new")).unwrap(),
            page(4)
        );
        assert_eq!(
            std::fs::read(pgdata.join("backup_label")).unwrap(),
            b"label"
        );
    }

    #[test]
    fn changed_pages_never_follow_a_link_out_of_the_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("victim"), page(1)).unwrap();
        let pgdata = dir.path().join("pgdata");
        std::fs::create_dir_all(pgdata.join("base")).unwrap();
        std::os::unix::fs::symlink(outside.path(), pgdata.join("base/evil")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("victim"), pgdata.join("base/link"))
            .unwrap();
        for member in ["base/evil/INCREMENTAL.victim", "base/INCREMENTAL.link"] {
            let tar = tarball(&[(member, changed(PAGE_SIZE as u64, &[(0, 6)]))]);
            assert!(unpack(&tar, &pgdata, Members::All).is_err(), "{member}");
        }
        assert_eq!(
            std::fs::read(outside.path().join("victim")).unwrap(),
            page(1)
        );
    }

    #[test]
    fn members_leaving_the_data_directory_are_caught() {
        for ok in ["base/1/1259", "./global/pg_control", "pg_wal/"] {
            assert!(stays_inside(Path::new(ok)), "{ok}");
        }
        for bad in ["../escape", "base/../../escape", "/etc/passwd", "/"] {
            assert!(!stays_inside(Path::new(bad)), "{bad}");
        }
    }
}

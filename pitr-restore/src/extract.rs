//! Unpacks a base-backup tarball into the data directory, checking the stored file's SHA-256
//! and size as it streams. A mismatch is an error; the caller's `safety::emptied_unless_done` then
//! removes what was extracted. An encrypted tarball (`.age`) is decrypted in the same pass
//! (stored bytes -> checksum -> decrypt -> decompress -> tar): a damaged or truncated one fails
//! on the chunk that does not authenticate.

use std::io;
use std::path::Path;

use anyhow::Context;
use common::encryption::{self, Identities};
use common::manifest::FileEntry;
use common::repo::{Repository, SetInfo};
use common::stream::HashingReader;

struct Counting<'a, R> {
    inner: R,
    progress: &'a indicatif::ProgressBar,
}

impl<R: io::Read> io::Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Interrupted, extraction stops here while the data directory is emptied.
        common::interrupt::checkpoint();
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

pub fn extract(
    repo: &Repository,
    set: &SetInfo,
    entry: &FileEntry,
    identities: Option<&Identities>,
    pgdata: &Path,
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
        for member in archive.entries()? {
            let mut member = member?;
            let path = member.path()?.into_owned();
            if !stays_inside(&path) {
                anyhow::bail!(
                    "{} holds the member {}, which leaves the data directory: refusing a hostile or damaged backup",
                    entry.path,
                    path.display()
                );
            }
            // unpack_in also refuses links whose targets, or whose parents, lead outside.
            member.unpack_in(pgdata)?;
        }
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
        anyhow::bail!(
            "{problem}; the partly restored files are removed from {}",
            pgdata.display()
        );
    }
    // PostgreSQL refuses a data directory others can read.
    set_mode(pgdata, 0o700)?;
    Ok(())
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
    use super::stays_inside;
    use std::path::Path;

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

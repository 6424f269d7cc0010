//! `fetch`: give PostgreSQL one archived WAL file during recovery.
//!
//! Exit 1 means "not in the archive", which recovery reads as the end of the archive. Any
//! other failure (damaged copy, unreadable repository) exits 126, above 125, which makes
//! PostgreSQL stop recovery instead of ending it early at a wrong point. An encrypted copy
//! (`.age`) is decrypted with `BACKUP_ENCRYPTION_IDENTITY_FILE`; a missing or wrong key, a
//! damaged or truncated copy are 126 too, and nothing is written to `%p`.

use std::io::{self, Read, Write};
use std::path::Path;

use anyhow::Context;
use common::durable::AtomicFile;
use common::storage::Location;
use common::wal::{WalArchive, WalFile, DEFAULT_SEGMENT_SIZE};
use common::{CodedError, Repository, Status};

use crate::header::SegmentHeader;

/// Exit code for an archive that exists but cannot be trusted.
pub const BROKEN: u8 = 126;

/// A name restore_command may be given: one file name of the archive, never a path (so a
/// name cannot lead outside the WAL folder).
fn is_wal_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

fn broken(error: anyhow::Error) -> anyhow::Error {
    CodedError::new(BROKEN, error).into()
}

pub fn fetch(
    name: &str,
    dest: &Path,
    backup_dir: &Location,
    no_archive_is_empty: bool,
) -> anyhow::Result<Status> {
    if !is_wal_name(name) {
        return Err(CodedError::new(2, anyhow::anyhow!(
            "'{name}' is not a WAL file name (PostgreSQL asks for names such as 000000010000000000000003 or 00000002.history)"
        ))
        .into());
    }
    let repo = Repository::open(backup_dir).map_err(broken)?;
    let archive = WalArchive::new(&repo);
    let Some((plain, shown)) = archive.open_plain(name).map_err(broken)? else {
        if !no_archive_is_empty && !archive.exists().map_err(|e| broken(e.into()))? {
            return Err(broken(anyhow::anyhow!(
                "WAL archive {} does not exist (check --backup-dir / BACKUP_DIR)",
                archive.describe()
            )));
        }
        return Err(CodedError::new(1, anyhow::anyhow!("{name} is not in the archive")).into());
    };
    copy_out(name, plain, &shown, dest)
        .map_err(broken)
        .map(|()| Status::Ok)
}

fn copy_out(name: &str, mut reader: Box<dyn Read>, shown: &str, dest: &Path) -> anyhow::Result<()> {
    let mut out =
        AtomicFile::create(dest).with_context(|| format!("cannot write {}", dest.display()))?;
    let mut first = [0u8; 40];
    let head = read_up_to(&mut reader, &mut first)
        .with_context(|| format!("archived copy {shown} is damaged"))?;
    if let Some(segno) = WalFile::parse(name).and_then(|w| match w {
        WalFile::Segment { .. } | WalFile::Partial { .. } => w.segno(DEFAULT_SEGMENT_SIZE),
        _ => None,
    }) {
        check_header(name, &first[..head], segno)?;
    }
    out.write_all(&first[..head])?;
    io::copy(&mut reader, &mut out).with_context(|| format!("archived copy {shown} is damaged"))?;
    out.commit()
        .with_context(|| format!("cannot write {}", dest.display()))?;
    tracing::debug!("restored {name}");
    Ok(())
}

/// The segment number in the name assumes 16 MiB segments; the header carries the real size,
/// so the number is recomputed from it before comparing.
fn check_header(name: &str, bytes: &[u8], segno_16m: u64) -> anyhow::Result<()> {
    let header = SegmentHeader::parse(bytes)
        .with_context(|| format!("{name}: the archived copy does not start with a WAL header"))?;
    let segno = match WalFile::parse(name) {
        Some(w) => w
            .segno(u64::from(header.segment_size.max(1)))
            .unwrap_or(segno_16m),
        None => segno_16m,
    };
    if let Some(problem) = header.mismatch(segno) {
        anyhow::bail!("{name}: {problem}");
    }
    Ok(())
}

fn read_up_to(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::is_wal_name;

    #[test]
    fn only_file_names_of_the_archive_are_fetched() {
        for ok in [
            "000000010000000000000003",
            "00000002.history",
            "000000010000000000000003.00000028.backup",
            "000000010000000000000003.partial",
        ] {
            assert!(is_wal_name(ok), "{ok}");
        }
        for bad in [
            "",
            "../../base/x/manifest.json",
            "a/b",
            ".encrypted",
            "..",
            "x y",
        ] {
            assert!(!is_wal_name(bad), "{bad}");
        }
    }
}

//! `push`: archive one WAL file, compressed, atomically and durably, never overwriting a
//! different archived copy.

use std::fs::File;
use std::io::{self, BufReader};
use std::path::Path;

use anyhow::Context;
use common::durable::{self, AtomicFile};
use common::stream::{Compression, HashingReader};
use common::wal::{WalArchive, WalFile};
use common::Status;

pub fn push(
    source: &Path,
    backup_dir: &Path,
    compression: Compression,
    level: Option<i32>,
) -> anyhow::Result<Status> {
    let name = source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .with_context(|| format!("'{}' has no file name", source.display()))?;
    WalFile::parse(&name).with_context(|| {
        format!("'{name}' is not a WAL file name; use archive_command = 'wal-archive push %p ...'")
    })?;
    let archive = WalArchive::at(backup_dir);
    durable::create_dir_all(archive.dir()).with_context(|| {
        format!(
            "cannot create WAL archive {} (check BACKUP_DIR and its permissions)",
            archive.dir().display()
        )
    })?;

    let new_sum = {
        let file =
            File::open(source).with_context(|| format!("cannot read {}", source.display()))?;
        if let Some((existing, existing_compression)) = archive.find(&name) {
            return compare_existing(&name, file, &existing, existing_compression);
        }
        let target = archive.path_for(&name, compression);
        let mut out = AtomicFile::create(&target)
            .with_context(|| format!("cannot write into {}", archive.dir().display()))?;
        let mut reader = HashingReader::new(BufReader::with_capacity(1 << 20, file));
        let mut encoder = compression.encoder(&mut out, level, 1)?;
        io::copy(&mut reader, &mut encoder).with_context(|| format!("archiving {name}"))?;
        encoder.finish()?;
        let sum = reader.finish()?;
        match out.commit_noclobber() {
            Ok(()) => {
                tracing::debug!("archived {name} ({} bytes)", sum.size);
                return Ok(Status::Ok);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => sum,
            Err(e) => return Err(e).with_context(|| format!("cannot store {}", target.display())),
        }
    };
    // Another push of the same file won the race: compare with what it stored.
    let (existing, existing_compression) = archive
        .find(&name)
        .with_context(|| format!("{name} vanished from the archive"))?;
    let theirs = archived_checksum(&existing, existing_compression)?;
    if theirs.sha256 == new_sum.sha256 {
        Ok(Status::Ok)
    } else {
        different(&name, &existing)
    }
}

fn archived_checksum(
    path: &Path,
    compression: Compression,
) -> anyhow::Result<common::stream::Checksum> {
    let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    HashingReader::new(compression.decoder(BufReader::new(file))?)
        .finish()
        .with_context(|| format!("archived copy {} is damaged", path.display()))
}

fn compare_existing(
    name: &str,
    file: File,
    existing: &Path,
    compression: Compression,
) -> anyhow::Result<Status> {
    let ours = HashingReader::new(BufReader::new(file)).finish()?;
    let theirs = archived_checksum(existing, compression)?;
    if ours == theirs {
        tracing::info!("{name} is already archived with identical content");
        Ok(Status::Ok)
    } else {
        different(name, existing)
    }
}

fn different(name: &str, existing: &Path) -> anyhow::Result<Status> {
    anyhow::bail!(
        "{name} is already archived with different content at {}; refusing to overwrite it. Is another cluster archiving into the same BACKUP_DIR?",
        existing.display()
    )
}

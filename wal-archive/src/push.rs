//! `push`: archive one WAL file, compressed, atomically and durably, never overwriting a
//! different archived copy.
//!
//! On a local repository the copy is written under a temporary name and hard-linked into
//! place; on S3 it is a conditional PUT (`If-None-Match: *`). Either way, of two concurrent
//! pushes of one segment exactly one stores it; the other compares contents: identical is
//! success (PostgreSQL retries after a crash), different is an error that leaves the archived
//! copy untouched.

use std::fs::File;
use std::io::{self, BufReader};
use std::path::Path;

use anyhow::Context;
use common::storage::Location;
use common::stream::{Checksum, Compression, HashingReader};
use common::wal::{WalArchive, WalFile};
use common::{Repository, Status};

pub fn push(
    source: &Path,
    backup_dir: &Location,
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
    let repo = Repository::create(backup_dir).with_context(|| {
        format!(
            "cannot open the WAL archive in {backup_dir} (check BACKUP_DIR and its permissions)"
        )
    })?;
    let archive = WalArchive::new(&repo);

    let file = File::open(source).with_context(|| format!("cannot read {}", source.display()))?;
    if let Some((existing, existing_compression)) = archive.find(&name)? {
        return compare_existing(&archive, &name, file, &existing, existing_compression);
    }
    let mut out = archive
        .create(&name, compression)
        .with_context(|| format!("cannot write into {}", archive.describe()))?;
    let mut reader = HashingReader::new(BufReader::with_capacity(1 << 20, file));
    let mut encoder = compression.encoder(&mut out, level, 1)?;
    io::copy(&mut reader, &mut encoder).with_context(|| format!("archiving {name}"))?;
    encoder.finish()?;
    let new_sum = reader.finish()?;
    let target = archive.key_for(&name, compression);
    match out.commit_new() {
        Ok(()) => {
            tracing::debug!("archived {name} ({} bytes)", new_sum.size);
            Ok(Status::Ok)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // Another push of the same file won the race: compare with what it stored.
            let theirs = archived_checksum(&archive, &target, compression)?;
            if theirs.sha256 == new_sum.sha256 {
                Ok(Status::Ok)
            } else {
                different(&archive, &name, &target)
            }
        }
        Err(e) => {
            Err(e).with_context(|| format!("cannot store {}", archive.store().describe(&target)))
        }
    }
}

fn archived_checksum(
    archive: &WalArchive,
    key: &str,
    compression: Compression,
) -> anyhow::Result<Checksum> {
    let shown = archive.store().describe(key);
    let stored = archive
        .store()
        .open_read(key)
        .with_context(|| format!("cannot read {shown}"))?;
    HashingReader::new(compression.decoder(stored)?)
        .finish()
        .with_context(|| format!("archived copy {shown} is damaged"))
}

fn compare_existing(
    archive: &WalArchive,
    name: &str,
    file: File,
    existing: &str,
    compression: Compression,
) -> anyhow::Result<Status> {
    let ours = HashingReader::new(BufReader::new(file)).finish()?;
    let theirs = archived_checksum(archive, existing, compression)?;
    if ours == theirs {
        tracing::info!("{name} is already archived with identical content");
        Ok(Status::Ok)
    } else {
        different(archive, name, existing)
    }
}

fn different(archive: &WalArchive, name: &str, existing: &str) -> anyhow::Result<Status> {
    anyhow::bail!(
        "{name} is already archived with different content at {}; refusing to overwrite it. Is another cluster archiving into the same BACKUP_DIR?",
        archive.store().describe(existing)
    )
}

//! `push`: archive one WAL file, compressed, atomically and durably, never overwriting a
//! different archived copy.
//!
//! On a local repository the copy is written under a temporary name and hard-linked into
//! place; on S3 it is a conditional PUT (`If-None-Match: *`). Either way, of two concurrent
//! pushes of one segment exactly one stores it; the other compares contents: identical is
//! success (PostgreSQL retries after a crash), different is an error that leaves the archived
//! copy untouched.
//!
//! With recipients set (`BACKUP_ENCRYPTION_RECIPIENTS`...), the copy is compressed, then
//! encrypted (`<name>.zst.age`). Without them, a push into an archive that holds encrypted
//! files is refused unless `--allow-unencrypted`: recipients that vanished from the server's
//! environment must not silently turn the archive to plaintext.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek};
use std::path::Path;

use anyhow::Context;
use common::encryption::{self, Identities, Recipients, Sealed};
use common::storage::Location;
use common::stream::{Checksum, Compression, HashingReader};
use common::wal::{blocks, WalArchive, WalFile};
use common::{Repository, Status};

use crate::header::SegmentHeader;

pub fn push(
    source: &Path,
    backup_dir: &Location,
    compression: Compression,
    level: Option<i32>,
    allow_unencrypted: bool,
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
    let recipients = Recipients::from_env()?;
    match &recipients {
        Some(r) => archive
            .mark_encrypted(&r.describe().recipients)
            .with_context(|| format!("cannot write into {}", archive.describe()))?,
        None if !allow_unencrypted && archive.is_marked_encrypted()? => anyhow::bail!(
            "the WAL archive {} holds encrypted files but no recipients are set: refusing to archive {name} in plaintext. Set {} (or {}) for archive_command, e.g. in its --config file, or pass --allow-unencrypted",
            archive.describe(),
            encryption::RECIPIENTS_ENV,
            encryption::RECIPIENTS_FILE_ENV
        ),
        None => {}
    }

    let file = File::open(source).with_context(|| format!("cannot read {}", source.display()))?;
    if let Some((existing, existing_compression)) = archive.find(&name)? {
        let status = compare_existing(&archive, &name, file, &existing, existing_compression)?;
        // A push that stopped between the segment and its summary leaves the summary to
        // PostgreSQL's retry.
        summarize(&archive, &name, source);
        return Ok(status);
    }
    let target = archive.key_of(&name, compression, recipients.is_some());
    let mut out = archive
        .store()
        .create(&target)
        .with_context(|| format!("cannot write into {}", archive.describe()))?;
    // No checksum on the way: it is needed only when another push wins the race below, and
    // hashing every segment would cost a third of a push's CPU.
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let size = {
        let sealed = Sealed::new(&mut out, recipients.as_ref())?;
        let mut encoder = compression.encoder(sealed, level, 1)?;
        let shown = || {
            format!(
                "archiving {name} into {}",
                archive.store().describe(&target)
            )
        };
        let size = io::copy(&mut reader, &mut encoder).with_context(shown)?;
        encoder.finish()?.finish().with_context(shown)?;
        size
    };
    match out.commit_new() {
        Ok(()) => {
            tracing::debug!("archived {name} ({size} bytes)");
            summarize(&archive, &name, source);
            Ok(Status::Ok)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // Another push of the same file won the race: compare with what it stored.
            let file =
                File::open(source).with_context(|| format!("cannot read {}", source.display()))?;
            compare_existing(&archive, &name, file, &target, compression)
        }
        Err(e) => {
            Err(e).with_context(|| format!("cannot store {}", archive.store().describe(&target)))
        }
    }
}

/// The checksum of an archived copy's content; `None` when it is encrypted and no identity
/// is set to read it (the backup side usually holds only public keys).
fn archived_checksum(
    archive: &WalArchive,
    key: &str,
    compression: Compression,
) -> anyhow::Result<Option<Checksum>> {
    let shown = archive.store().describe(key);
    let encrypted = encryption::is_encrypted_name(key);
    let identities = if encrypted {
        Identities::from_env()?
    } else {
        None
    };
    if encrypted && identities.is_none() {
        tracing::warn!(
            "{shown} is already archived, encrypted; without {} its content cannot be compared, so it is kept as it is",
            encryption::IDENTITY_FILE_ENV
        );
        return Ok(None);
    }
    let stored = archive
        .store()
        .open_read(key)
        .with_context(|| format!("cannot read {shown}"))?;
    let plain = encryption::reader(stored, encrypted, identities.as_ref(), &shown)?;
    HashingReader::new(compression.decoder(plain)?)
        .finish()
        .map(Some)
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
    match archived_checksum(archive, existing, compression)? {
        None => Ok(Status::Ok),
        Some(theirs) if theirs == ours => {
            tracing::info!("{name} is already archived with identical content");
            Ok(Status::Ok)
        }
        Some(_) => different(archive, name, existing),
    }
}

fn different(archive: &WalArchive, name: &str, existing: &str) -> anyhow::Result<Status> {
    anyhow::bail!(
        "{name} is already archived with different content at {}; refusing to overwrite it. Is another cluster archiving into the same BACKUP_DIR?",
        archive.store().describe(existing)
    )
}

/// Stores the block summary of a full segment beside it (which relation blocks its records
/// change: `common::wal::blocks`), so that an incremental base backup need not decode the
/// WAL itself. A summary that cannot be made is only said: the backup then decodes.
fn summarize(archive: &WalArchive, name: &str, source: &Path) {
    let Some(WalFile::Segment { .. }) = WalFile::parse(name) else {
        return;
    };
    let made = (|| -> anyhow::Result<()> {
        // Streamed: a 16 MiB buffer costs more in page faults than the decoding.
        let mut file = File::open(source)?;
        let mut head = [0u8; 40];
        file.read_exact(&mut head)?;
        let header = SegmentHeader::parse(&head).context("no WAL header")?;
        let segment_size = u64::from(header.segment_size);
        let segno = WalFile::parse(name)
            .and_then(|w| w.segno(segment_size))
            .context("not a segment")?;
        file.seek(io::SeekFrom::Start(0))?;
        let stream = Box::new(BufReader::with_capacity(1 << 18, file));
        let summary = blocks::summarize_stream(stream, segno, segment_size, None)?;
        archive.put_summary(name, &summary)?;
        Ok(())
    })();
    if let Err(e) = made {
        tracing::debug!(
            "no block summary of {name} stored (incremental backups decode it instead): {e:#}"
        );
    }
}

//! WAL file names, segment arithmetic and the WAL archive layout under `BACKUP_DIR/wal`.
//!
//! The archive is flat: `wal/<name><ext>`, where `<name>` is PostgreSQL's file name (segment,
//! `.partial`, `.history`, `.backup`) and `<ext>` the compression suffix, followed by `.age`
//! when the file is encrypted (`000000010000000000000003.zst.age`). Every stored file's
//! integrity is covered by its compression format's own checksum (zstd content checksum,
//! gzip CRC-32, lz4 content checksum), and an encrypted one's by age's authenticated chunks,
//! checked on every fetch and verify. Once anything was archived encrypted, the marker
//! `wal/.encrypted` says so, so that a push without recipients can refuse cheaply.

pub mod blocks;
pub mod history;

use std::io::{self, Read};

use anyhow::Context;

use crate::lsn::Lsn;
use crate::repo::{Kind, Repository};
use crate::storage::{self, ObjectWriter, Store};
use crate::stream::Compression;

/// The default WAL segment size (initdb's `--wal-segsize` default).
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 * 1024 * 1024;

/// What a WAL archive file name denotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum WalFile {
    /// A full segment of a timeline: `000000010000000000000003`.
    Segment { timeline: u32, log: u32, seg: u32 },
    /// The last, partial segment of a timeline that was left at a promotion.
    Partial { timeline: u32, log: u32, seg: u32 },
    /// A timeline history file: `00000002.history`.
    History { timeline: u32 },
    /// A backup history file: `000000010000000000000003.00000028.backup`.
    Backup { timeline: u32, log: u32, seg: u32 },
}

fn hex8(s: &str) -> Option<u32> {
    (s.len() == 8
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)))
    .then(|| u32::from_str_radix(s, 16).ok())
    .flatten()
}

fn parse_segment(name: &str) -> Option<(u32, u32, u32)> {
    if name.len() != 24 {
        return None;
    }
    Some((hex8(&name[..8])?, hex8(&name[8..16])?, hex8(&name[16..])?))
}

impl WalFile {
    /// Parses a PostgreSQL WAL file name (without compression suffix).
    pub fn parse(name: &str) -> Option<WalFile> {
        if let Some(tli) = name.strip_suffix(".history") {
            return Some(WalFile::History {
                timeline: hex8(tli)?,
            });
        }
        if let Some(rest) = name.strip_suffix(".partial") {
            let (timeline, log, seg) = parse_segment(rest)?;
            return Some(WalFile::Partial { timeline, log, seg });
        }
        if let Some(rest) = name.strip_suffix(".backup") {
            let (segment, offset) = rest.split_once('.')?;
            hex8(offset)?;
            let (timeline, log, seg) = parse_segment(segment)?;
            return Some(WalFile::Backup { timeline, log, seg });
        }
        let (timeline, log, seg) = parse_segment(name)?;
        Some(WalFile::Segment { timeline, log, seg })
    }

    pub fn timeline(&self) -> u32 {
        match *self {
            WalFile::Segment { timeline, .. }
            | WalFile::Partial { timeline, .. }
            | WalFile::History { timeline }
            | WalFile::Backup { timeline, .. } => timeline,
        }
    }

    /// The segment number, for files that belong to a segment.
    pub fn segno(&self, segment_size: u64) -> Option<u64> {
        match *self {
            WalFile::Segment { log, seg, .. }
            | WalFile::Partial { log, seg, .. }
            | WalFile::Backup { log, seg, .. } => {
                Some(u64::from(log) * segments_per_log(segment_size) + u64::from(seg))
            }
            WalFile::History { .. } => None,
        }
    }
}

fn segments_per_log(segment_size: u64) -> u64 {
    0x1_0000_0000 / segment_size
}

/// The segment number holding `lsn`.
pub fn segno_of(lsn: Lsn, segment_size: u64) -> u64 {
    lsn.0 / segment_size
}

/// The file name of a segment.
pub fn segment_name(timeline: u32, segno: u64, segment_size: u64) -> String {
    let per = segments_per_log(segment_size);
    format!("{:08X}{:08X}{:08X}", timeline, segno / per, segno % per)
}

/// One file in the archive.
#[derive(Debug, Clone)]
pub struct ArchivedFile {
    /// PostgreSQL's name, without our suffix.
    pub name: String,
    pub kind: WalFile,
    /// Key in the repository.
    pub key: String,
    pub compression: Compression,
    /// Stored (compressed) size.
    pub size: u64,
}

impl ArchivedFile {
    /// Whether the stored file is an age file.
    pub fn is_encrypted(&self) -> bool {
        crate::encryption::is_encrypted_name(&self.key)
    }
}

/// An archived file opened for reading: its stored stream, key and compression.
pub type OpenedWal = (Box<dyn Read + Send>, String, Compression);

/// The continuous WAL archive of a repository.
#[derive(Debug, Clone)]
pub struct WalArchive {
    store: Store,
}

/// Suffixes tried, in order, when looking a file up: plain and encrypted of each format, the
/// default (zstd) first.
const SUFFIXES: [(Compression, bool); 8] = [
    (Compression::Zstd, false),
    (Compression::Zstd, true),
    (Compression::Gzip, false),
    (Compression::Gzip, true),
    (Compression::Lz4, false),
    (Compression::Lz4, true),
    (Compression::None, false),
    (Compression::None, true),
];

/// What follows a segment's name in the name of its block summary (`blocks::SegmentSummary`,
/// zstd-compressed JSON): `000000010000000000000003.blocks.zst`. Not a WAL file: listings of
/// the archive skip it.
pub const SUMMARY_SUFFIX: &str = ".blocks";

/// Marker object: something in the archive is encrypted.
pub const ENCRYPTED_MARKER: &str = ".encrypted";

impl WalArchive {
    pub fn new(repo: &Repository) -> WalArchive {
        WalArchive {
            store: repo.store().clone(),
        }
    }

    pub fn on(store: &Store) -> WalArchive {
        WalArchive {
            store: store.clone(),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Where the archive is, for messages.
    pub fn describe(&self) -> String {
        self.store.describe(Kind::Wal.name())
    }

    /// Whether anything was ever archived here.
    pub fn exists(&self) -> io::Result<bool> {
        let (files, _) = self.store.list_dir(Kind::Wal.name())?;
        Ok(!files.is_empty())
    }

    /// The key of a new file of this name.
    pub fn key_for(&self, name: &str, compression: Compression) -> String {
        storage::join(
            Kind::Wal.name(),
            &format!("{name}{}", compression.extension()),
        )
    }

    /// The key of a new file of this name, encrypted or not.
    pub fn key_of(&self, name: &str, compression: Compression, encrypted: bool) -> String {
        let key = self.key_for(name, compression);
        if encrypted {
            key + crate::encryption::AGE_SUFFIX
        } else {
            key
        }
    }

    /// A new archive file, visible once committed.
    pub fn create(&self, name: &str, compression: Compression) -> io::Result<ObjectWriter> {
        self.store.create(&self.key_for(name, compression))
    }

    /// Whether the archive was ever written encrypted (its marker exists).
    pub fn is_marked_encrypted(&self) -> io::Result<bool> {
        self.store
            .exists(&storage::join(Kind::Wal.name(), ENCRYPTED_MARKER))
    }

    /// Marks the archive as holding encrypted files (idempotent; `recipients` are the public
    /// keys, kept for people looking).
    pub fn mark_encrypted(&self, recipients: &[String]) -> io::Result<()> {
        let key = storage::join(Kind::Wal.name(), ENCRYPTED_MARKER);
        if self.store.exists(&key)? {
            return Ok(());
        }
        let mut text = recipients.join("\n");
        text.push('\n');
        self.store.put_new(&key, text.as_bytes()).map(|_| ())
    }

    /// The stored file for a PostgreSQL WAL file name, whatever its compression: its key and
    /// compression, or `None` when it is not archived.
    pub fn find(&self, name: &str) -> io::Result<Option<(String, Compression)>> {
        for (c, encrypted) in SUFFIXES {
            let key = self.key_of(name, c, encrypted);
            if self.store.exists(&key)? {
                return Ok(Some((key, c)));
            }
        }
        Ok(None)
    }

    /// Opens an archived file by name: its stored (compressed, maybe encrypted: see the
    /// key's suffix) stream, the key and the compression; `None` when it is not archived.
    /// One request per suffix tried, the default (zstd) first.
    pub fn open(&self, name: &str) -> io::Result<Option<OpenedWal>> {
        for (c, encrypted) in SUFFIXES {
            let key = self.key_of(name, c, encrypted);
            match self.store.open_read(&key) {
                Ok(reader) => return Ok(Some((reader, key, c))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// An archived file by name, decrypted (with `BACKUP_ENCRYPTION_IDENTITY_FILE` when it is
    /// encrypted) and decompressed, and where it is stored (for messages); `None` when it is
    /// not archived.
    pub fn open_plain(&self, name: &str) -> anyhow::Result<Option<(Box<dyn Read>, String)>> {
        let opened = self
            .open(name)
            .with_context(|| format!("cannot read the WAL archive {}", self.describe()))?;
        let Some((stored, key, compression)) = opened else {
            return Ok(None);
        };
        let shown = self.store.describe(&key);
        let encrypted = crate::encryption::is_encrypted_name(&key);
        let identities = if encrypted {
            crate::encryption::Identities::from_env()?
        } else {
            None
        };
        let plain = crate::encryption::reader(stored, encrypted, identities.as_ref(), &shown)?;
        Ok(Some((compression.decoder(plain)?, shown)))
    }

    /// Stores the block summary of segment `name` (in clear, like a base set's file list:
    /// relation and block numbers, no content), unless one is there already.
    pub fn put_summary(&self, name: &str, summary: &blocks::SegmentSummary) -> io::Result<()> {
        let packed = zstd::encode_all(summary.to_json().as_slice(), 3)?;
        self.store
            .put_new(&self.summary_key(name), &packed)
            .map(|_| ())
    }

    /// The block summary of segment `name`, when one was stored.
    pub fn summary(&self, name: &str) -> anyhow::Result<Option<blocks::SegmentSummary>> {
        let key = self.summary_key(name);
        let packed = match self.store.open_read(&key) {
            Ok(mut reader) => {
                let mut packed = Vec::new();
                reader.read_to_end(&mut packed)?;
                packed
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let shown = self.store.describe(&key);
        let json = zstd::decode_all(packed.as_slice())
            .map_err(anyhow::Error::from)
            .and_then(|json| blocks::SegmentSummary::from_json(&json))
            .with_context(|| format!("{shown} is damaged"))?;
        Ok(Some(json))
    }

    fn summary_key(&self, name: &str) -> String {
        self.key_for(&format!("{name}{SUMMARY_SUFFIX}"), Compression::Zstd)
    }

    /// Every archived file, sorted by name (so by timeline, then position).
    pub fn list(&self) -> io::Result<Vec<ArchivedFile>> {
        let (objects, _) = self.store.list_dir(Kind::Wal.name())?;
        let mut files = Vec::new();
        for object in objects {
            let file_name = storage::file_name(&object.key).to_string();
            if file_name.starts_with('.') {
                continue;
            }
            let compression = Compression::from_file_name(&file_name);
            let plain = file_name
                .strip_suffix(crate::encryption::AGE_SUFFIX)
                .unwrap_or(&file_name);
            let name = plain
                .strip_suffix(compression.extension())
                .unwrap_or(plain)
                .to_string();
            let Some(kind) = WalFile::parse(&name) else {
                continue;
            };
            files.push(ArchivedFile {
                name,
                kind,
                key: object.key,
                compression,
                size: object.size,
            });
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(files)
    }

    /// Segment numbers archived on `timeline` (full or partial), sorted.
    pub fn segnos(&self, timeline: u32, segment_size: u64) -> io::Result<Vec<u64>> {
        let mut segnos: Vec<u64> = self
            .list()?
            .into_iter()
            .filter(|f| {
                matches!(f.kind, WalFile::Segment { .. } | WalFile::Partial { .. })
                    && f.kind.timeline() == timeline
            })
            .filter_map(|f| f.kind.segno(segment_size))
            .collect();
        segnos.sort_unstable();
        segnos.dedup();
        Ok(segnos)
    }

    /// Names of the segments of `timeline` from `from` to `to` (inclusive) that are missing.
    pub fn missing(
        &self,
        timeline: u32,
        from: u64,
        to: u64,
        segment_size: u64,
    ) -> io::Result<Vec<String>> {
        let present = self.segnos(timeline, segment_size)?;
        Ok((from..=to)
            .filter(|segno| present.binary_search(segno).is_err())
            .map(|segno| segment_name(timeline, segno, segment_size))
            .collect())
    }

    /// Deletes segments (full, partial, backup history) of every timeline below `keep_from`;
    /// history files are always kept. Returns the names deleted (or that would be).
    pub fn expire_before(
        &self,
        keep_from: u64,
        segment_size: u64,
        dry_run: bool,
    ) -> io::Result<Vec<String>> {
        let mut gone = Vec::new();
        for file in self.list()? {
            let Some(segno) = file.kind.segno(segment_size) else {
                continue;
            };
            if segno < keep_from {
                if !dry_run {
                    self.store.delete(&file.key)?;
                }
                gone.push(file.name);
            }
        }
        // The block summaries of the segments gone (not counted: they are not WAL).
        if !dry_run {
            let (objects, _) = self.store.list_dir(Kind::Wal.name())?;
            for object in objects {
                let file_name = storage::file_name(&object.key);
                let summarized = file_name
                    .strip_suffix(Compression::Zstd.extension())
                    .and_then(|n| n.strip_suffix(SUMMARY_SUFFIX))
                    .and_then(WalFile::parse)
                    .and_then(|w| w.segno(segment_size));
                if summarized.is_some_and(|segno| segno < keep_from) {
                    self.store.delete(&object.key)?;
                }
            }
        }
        Ok(gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_round_trip() {
        let seg = WalFile::parse("00000002000000010000003F").unwrap();
        assert_eq!(
            seg,
            WalFile::Segment {
                timeline: 2,
                log: 1,
                seg: 0x3F
            }
        );
        let segno = seg.segno(DEFAULT_SEGMENT_SIZE).unwrap();
        assert_eq!(segno, 256 + 0x3F);
        assert_eq!(
            segment_name(2, segno, DEFAULT_SEGMENT_SIZE),
            "00000002000000010000003F"
        );
        assert_eq!(
            WalFile::parse("00000002.history"),
            Some(WalFile::History { timeline: 2 })
        );
        assert!(matches!(
            WalFile::parse("000000010000000000000003.partial"),
            Some(WalFile::Partial { seg: 3, .. })
        ));
        assert!(matches!(
            WalFile::parse("000000010000000000000003.00000028.backup"),
            Some(WalFile::Backup { seg: 3, .. })
        ));
        for bad in [
            "0000000100000000000003",
            "00000001000000000000000g",
            "x.history",
        ] {
            assert_eq!(WalFile::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn segment_of_lsn() {
        let lsn: Lsn = "1/3F000028".parse().unwrap();
        assert_eq!(
            segment_name(1, segno_of(lsn, DEFAULT_SEGMENT_SIZE), DEFAULT_SEGMENT_SIZE),
            "00000001000000010000003F"
        );
    }
}

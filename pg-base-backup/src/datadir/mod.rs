//! A base backup read from the data directory itself (`--pgdata`), between `pg_backup_start`
//! and `pg_backup_stop` on the tool's own session: PostgreSQL's rules for what a base backup
//! holds (see `common::physical::datadir`), `global/pg_control` last, the `backup_label` from
//! `pg_backup_stop`. A full set stores every file whole; a diff or incr set stores the
//! files changed since its reference (size or modification time differ) and, of relation
//! files, only the pages whose LSN is newer than the reference's start (pages changed while
//! they are read are rewritten by WAL replay from their full-page images). The WAL always
//! goes to the archive.

mod pages;
mod read;
mod wal;

pub use wal::{PagePicking, PickedBy};

use std::collections::HashSet;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;

use anyhow::Context;
use common::lsn::Lsn;
use common::manifest::FileEntry;
use common::physical::datadir::{classify, relation_file, PathClass};
use common::physical::filelist::{FileHashes, FileList, Stored};
use common::physical::page;
use common::physical::ChecksumFailure;
use common::physical::BASE_TAR;
use common::repo::{SetFile, SetWriter};
use time::OffsetDateTime;

use crate::capture::WalRange;
use crate::server::Connected;
use read::Piece;

/// What reading the data directory produced.
pub struct Captured {
    pub tar_entry: FileEntry,
    pub list: FileList,
    pub hashes: FileHashes,
    pub range: WalRange,
    pub finished_at: OffsetDateTime,
    pub counts: Counts,
    pub checksum_failures: Vec<ChecksumFailure>,
    /// The reference, for a diff or incr that found one.
    pub reference: Option<ReferenceUsed>,
}

/// The reference a diff or incr was taken against.
pub struct ReferenceUsed {
    pub id: String,
    pub start_lsn: Lsn,
    pub chain: Vec<String>,
}

/// How the files were stored.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Counts {
    pub whole_files: u64,
    pub page_files: u64,
    pub unchanged_files: u64,
    /// Pages stored in incremental members.
    pub changed_pages: u64,
    /// Bytes of the data directory's files.
    pub data_bytes: u64,
    /// Pages whose data checksum failed (twice).
    pub checksum_failures: u64,
    /// How a diff or incr found the changed pages (`wal`: only those pages were read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed_pages_from: Option<PickedBy>,
}

/// One path of the data directory to back up.
struct Found {
    rel: String,
    abs: PathBuf,
    is_dir: bool,
    class: PathClass,
    /// For a relation file: the relation block number of its first page (segment `.N`
    /// starts at N × 131072), which page checksums include.
    first_block: Option<u32>,
}

/// Options of the capture.
pub struct Options<'a> {
    pub pgdata: &'a Path,
    pub label: &'a str,
    pub fast_checkpoint: bool,
    /// Compression threads.
    pub threads: u32,
    /// Threads reading files.
    pub read_jobs: usize,
    pub wanted: common::physical::BackupType,
    pub picking: PagePicking,
}

pub fn capture(
    args: &crate::Args,
    options: &Options<'_>,
    set: &SetWriter,
    server: &Connected,
    repo: &common::repo::Repository,
) -> anyhow::Result<Captured> {
    check_pgdata(options.pgdata)?;
    let (start_lsn, timeline) = server.backup_start(options.label, options.fast_checkpoint)?;
    tracing::info!("backup started at LSN {start_lsn} on timeline {timeline}");
    let reference = crate::reference::choose(
        repo,
        options.wanted,
        &server.info.system_identifier,
        timeline,
    )?;
    let found = walk(options.pgdata)?;
    let from_wal = match &reference {
        Some(reference) => wal::pick(
            options.picking,
            options.pgdata,
            repo,
            reference,
            &found,
            (timeline, start_lsn),
            server.info.wal_segment_size,
        )?,
        None => None,
    };
    let name = format!("{BASE_TAR}{}", args.compress.extension());
    let file = set.create_file(&name, args.compress, args.compress_level, options.threads)?;
    let progress = common::progress::bytes(&args.global, Some(file_bytes(&found)), "base backup");
    let mut writer = TarWriter::new(file, &progress);
    let verify = server
        .info
        .data_checksums
        .then_some(read::Verify { before: start_lsn });
    std::thread::scope(|scope| {
        let receivers = read::spawn(
            scope,
            &found,
            reference.as_ref().map(|reference| read::Against {
                reference,
                wal: from_wal.as_ref(),
            }),
            verify,
            options.read_jobs,
        );
        // Dropping the receivers on an error stops the readers at their next send.
        writer.write_all(&found, receivers)
    })?;
    let stop_lsn = stop(server, &mut writer)?;
    progress.finish_and_clear();
    let (tar_entry, mut writer) = writer.finish()?;
    writer.counts.changed_pages_from = reference.as_ref().map(|_| match from_wal {
        Some(_) => PickedBy::Wal,
        None => PickedBy::Scan,
    });
    Ok(Captured {
        tar_entry,
        list: writer.list,
        hashes: writer.hashes,
        range: WalRange {
            timeline,
            start: start_lsn,
            stop: stop_lsn,
        },
        finished_at: common::timefmt::now(),
        counts: writer.counts,
        checksum_failures: writer.checksum_failures,
        reference: reference.map(|r| ReferenceUsed {
            id: r.id,
            start_lsn: r.start_lsn,
            chain: r.chain,
        }),
    })
}

/// The bytes of the regular files found, for the progress bar.
fn file_bytes(found: &[Found]) -> u64 {
    found
        .iter()
        .filter(|f| !f.is_dir)
        .filter_map(|f| std::fs::metadata(&f.abs).ok())
        .map(|m| m.len())
        .sum()
}

/// Ends the backup on the server and adds the backup_label it returns; the stop LSN.
fn stop(server: &Connected, writer: &mut TarWriter<'_>) -> anyhow::Result<Lsn> {
    let stopped = server.backup_stop()?;
    writer.append_bytes("backup_label", stopped.label.as_bytes())?;
    if !stopped.tablespace_map.trim().is_empty() {
        tracing::warn!(
            "the cluster has tablespaces: their files are stored under pg_tblspc/ and restored as directories inside the data directory"
        );
    }
    Ok(stopped.lsn)
}

/// A data directory has PG_VERSION and global/pg_control.
fn check_pgdata(pgdata: &Path) -> anyhow::Result<()> {
    for needed in ["PG_VERSION", "global/pg_control"] {
        if !pgdata.join(needed).is_file() {
            anyhow::bail!(
                "--pgdata {} is not a PostgreSQL data directory (no {needed})",
                pgdata.display()
            );
        }
    }
    Ok(())
}

/// Every path to back up, parents before children, `global/pg_control` last.
fn walk(pgdata: &Path) -> anyhow::Result<Vec<Found>> {
    let mut all = Vec::new();
    let walker = walkdir::WalkDir::new(pgdata)
        .follow_links(true)
        .min_depth(1)
        .sort_by_file_name();
    for entry in walker {
        let entry = match entry {
            Ok(entry) => entry,
            // Dropped while we walk: PostgreSQL removed it, WAL replay agrees.
            Err(e) if e.io_error().map(io::Error::kind) == Some(io::ErrorKind::NotFound) => {
                continue
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "cannot read the data directory {}",
                    pgdata.display()
                )))
            }
        };
        let rel = entry
            .path()
            .strip_prefix(pgdata)
            .expect("walked under pgdata")
            .to_string_lossy()
            .into_owned();
        all.push((rel, entry.into_path()));
    }
    let names: HashSet<&str> = all.iter().map(|(rel, _)| rel.as_str()).collect();
    let mut found: Vec<Found> = all
        .iter()
        .map(|(rel, abs)| {
            let is_dir = abs.is_dir();
            let dir = rel.rsplit_once('/').map_or("", |(dir, _)| dir);
            let class = classify(rel, is_dir, |node| {
                names.contains(format!("{dir}/{node}_init").as_str())
            });
            Found {
                rel: rel.clone(),
                abs: abs.clone(),
                is_dir,
                class,
                first_block: first_block(rel).filter(|_| !is_dir),
            }
        })
        .filter(|f| f.class != PathClass::Skip)
        .collect();
    // pg_control last, as pg_basebackup sends it.
    if let Some(at) = found.iter().position(|f| f.rel == "global/pg_control") {
        let control = found.remove(at);
        found.push(control);
    }
    Ok(found)
}

/// The relation block number of a relation file's first page.
fn first_block(rel: &str) -> Option<u32> {
    relation_file(rel)?;
    let name = rel.rsplit('/').next()?;
    let segment = match name.split_once('.') {
        Some((_, segment)) => segment.parse::<u32>().ok()?,
        None => 0,
    };
    segment.checked_mul(page::BLOCKS_PER_SEGMENT)
}

/// Writes the tarball in the walk's order from the readers' streams, and keeps the list.
struct TarWriter<'a> {
    builder: tar::Builder<SetFile>,
    list: FileList,
    hashes: FileHashes,
    counts: Counts,
    checksum_failures: Vec<ChecksumFailure>,
    progress: &'a indicatif::ProgressBar,
}

/// What the tar writer gathered, once the tarball is finished.
struct Gathered {
    list: FileList,
    hashes: FileHashes,
    counts: Counts,
    checksum_failures: Vec<ChecksumFailure>,
}

impl<'a> TarWriter<'a> {
    fn new(file: SetFile, progress: &'a indicatif::ProgressBar) -> Self {
        TarWriter {
            builder: tar::Builder::new(file),
            list: FileList::default(),
            hashes: FileHashes::new(),
            counts: Counts::default(),
            checksum_failures: Vec::new(),
            progress,
        }
    }

    /// Finishes the tarball: its entry in the manifest, and what was gathered.
    fn finish(self) -> anyhow::Result<(FileEntry, Gathered)> {
        let tar_entry = self
            .builder
            .into_inner()
            .context("finishing the tarball")?
            .finish()
            .context("writing the tarball")?;
        let gathered = Gathered {
            list: self.list,
            hashes: self.hashes,
            counts: self.counts,
            checksum_failures: self.checksum_failures,
        };
        Ok((tar_entry, gathered))
    }

    fn write_all(
        &mut self,
        found: &[Found],
        mut receivers: Vec<Option<Receiver<Piece>>>,
    ) -> anyhow::Result<()> {
        for (item, rx) in found.iter().zip(receivers.iter_mut()) {
            common::interrupt::checkpoint();
            match rx.take() {
                None => self.append_dir(&item.rel)?,
                Some(rx) => self
                    .append_file(rx)
                    .with_context(|| format!("cannot back up {}", item.abs.display()))?,
            }
        }
        Ok(())
    }

    fn append_dir(&mut self, rel: &str) -> io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o700);
        header.set_size(0);
        header.set_mtime(now_secs());
        self.builder
            .append_data(&mut header, format!("{rel}/"), io::empty())?;
        self.list.dirs.push(rel.to_string());
        Ok(())
    }

    /// One file from its reader: nothing (unchanged), its changed pages, or whole.
    fn append_file(&mut self, rx: Receiver<Piece>) -> io::Result<()> {
        let member = match receive(&rx)? {
            Piece::Start(member) => member,
            Piece::Gone => return Ok(()),
            Piece::Failed(e) => return Err(e),
            Piece::Data(_) | Piece::End { .. } => return Err(out_of_order()),
        };
        let mut body = ChannelReader {
            rx: &rx,
            chunk: Vec::new(),
            at: 0,
            end: None,
        };
        if member.listed.stored != Stored::Unchanged {
            let mut header = file_header(member.size);
            header.set_mtime(member.mtime_secs);
            self.builder
                .append_data(&mut header, &member.name, &mut body)?;
        }
        let (hash, bad_blocks) = body.finish()?;
        if !bad_blocks.is_empty() {
            tracing::error!(
                "checksum verification failed in file {}, blocks {:?}",
                member.listed.path,
                bad_blocks
            );
            self.counts.checksum_failures += bad_blocks.len() as u64;
            self.checksum_failures.push(ChecksumFailure {
                path: member.listed.path.clone(),
                blocks: bad_blocks,
            });
        }
        match member.listed.stored {
            Stored::Unchanged => self.counts.unchanged_files += 1,
            Stored::Pages => self.counts.page_files += 1,
            Stored::Whole => self.counts.whole_files += 1,
        }
        self.counts.changed_pages += member.pages;
        self.counts.data_bytes += member.listed.size;
        self.progress.inc(member.listed.size);
        if let Some(hash) = hash {
            self.hashes.insert(member.listed.path.clone(), hash);
        }
        self.list.files.push(member.listed);
        Ok(())
    }

    /// A file given whole (the backup_label).
    fn append_bytes(&mut self, rel: &str, bytes: &[u8]) -> io::Result<()> {
        let mut header = file_header(bytes.len() as u64);
        header.set_mtime(now_secs());
        self.builder.append_data(&mut header, rel, bytes)
    }
}

fn receive(rx: &Receiver<Piece>) -> io::Result<Piece> {
    rx.recv()
        .map_err(|_| io::Error::other("a reader thread stopped without a word (it panicked)"))
}

fn out_of_order() -> io::Error {
    io::Error::other("a reader sent its pieces out of order")
}

/// A member's bytes as its reader sends them; `finish` takes the end and its hash.
struct ChannelReader<'a> {
    rx: &'a Receiver<Piece>,
    chunk: Vec<u8>,
    at: usize,
    /// The end, once it has come.
    end: Option<(Option<String>, Vec<u32>)>,
}

impl ChannelReader<'_> {
    fn finish(mut self) -> io::Result<(Option<String>, Vec<u32>)> {
        if self.at < self.chunk.len() {
            return Err(io::Error::other(
                "a reader sent more than its member's size",
            ));
        }
        if let Some(end) = self.end.take() {
            return Ok(end);
        }
        match receive(self.rx)? {
            Piece::End { hash, bad_blocks } => Ok((hash, bad_blocks)),
            Piece::Failed(e) => Err(e),
            _ => Err(out_of_order()),
        }
    }
}

impl Read for ChannelReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            if self.end.is_some() {
                return Ok(0);
            }
            match receive(self.rx)? {
                Piece::Data(chunk) => (self.chunk, self.at) = (chunk, 0),
                Piece::End { hash, bad_blocks } => self.end = Some((hash, bad_blocks)),
                Piece::Failed(e) => return Err(e),
                Piece::Start(_) | Piece::Gone => return Err(out_of_order()),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fn file_header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o600);
    header.set_size(size);
    header
}

fn now_secs() -> u64 {
    OffsetDateTime::now_utc().unix_timestamp().max(0) as u64
}

//! A base backup read from the data directory itself (`--pgdata`), between `pg_backup_start`
//! and `pg_backup_stop` on the tool's own session: PostgreSQL's rules for what a base backup
//! holds (see `common::physical::datadir`), `global/pg_control` last, the `backup_label` from
//! `pg_backup_stop`. A full set stores every file whole; a diff or incr set stores the
//! files changed since its reference (size or modification time differ) and, of relation
//! files, only the pages whose LSN is newer than the reference's start (pages changed while
//! they are read are rewritten by WAL replay from their full-page images). The WAL always
//! goes to the archive.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use common::lsn::Lsn;
use common::manifest::FileEntry;
use common::physical::datadir::{classify, PathClass};
use common::physical::filelist::{mtime_ns, ContentHash, FileHashes, FileList, ListedFile, Stored};
use common::physical::incremental::{self, ChangedPages, PAGE_SIZE};
use common::physical::BASE_TAR;
use common::repo::{SetFile, SetWriter};
use time::OffsetDateTime;

use crate::capture::WalRange;
use crate::reference::Reference;
use crate::server::Connected;

/// What reading the data directory produced.
pub struct Captured {
    pub tar_entry: FileEntry,
    pub list: FileList,
    pub hashes: FileHashes,
    pub range: WalRange,
    pub finished_at: OffsetDateTime,
    pub counts: Counts,
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
}

/// One path of the data directory to back up.
struct Found {
    rel: String,
    abs: PathBuf,
    is_dir: bool,
    class: PathClass,
}

/// Options of the capture.
pub struct Options<'a> {
    pub pgdata: &'a Path,
    pub label: &'a str,
    pub fast_checkpoint: bool,
    pub threads: u32,
    pub wanted: common::physical::BackupType,
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
    let name = format!("{BASE_TAR}{}", args.compress.extension());
    let file = set.create_file(&name, args.compress, args.compress_level, options.threads)?;
    let expected = found
        .iter()
        .filter(|f| !f.is_dir)
        .filter_map(|f| std::fs::metadata(&f.abs).ok())
        .map(|m| m.len())
        .sum();
    let progress = common::progress::bytes(&args.global, Some(expected), "base backup");
    let mut writer = TarWriter {
        builder: tar::Builder::new(file),
        reference: reference.as_ref(),
        list: FileList::default(),
        hashes: FileHashes::new(),
        counts: Counts::default(),
        progress: &progress,
    };
    writer.write_all(&found)?;
    let stopped = server.backup_stop()?;
    writer.append_bytes("backup_label", stopped.label.as_bytes())?;
    if !stopped.tablespace_map.trim().is_empty() {
        tracing::warn!(
            "the cluster has tablespaces: their files are stored under pg_tblspc/ and restored as directories inside the data directory"
        );
    }
    progress.finish_and_clear();
    let TarWriter {
        builder,
        list,
        hashes,
        counts,
        ..
    } = writer;
    let tar_entry = builder
        .into_inner()
        .context("finishing the tarball")?
        .finish()
        .context("writing the tarball")?;
    Ok(Captured {
        tar_entry,
        list,
        hashes,
        range: WalRange {
            timeline,
            start: start_lsn,
            stop: stopped.lsn,
        },
        finished_at: common::timefmt::now(),
        counts,
        reference: reference.map(|r| ReferenceUsed {
            id: r.id,
            start_lsn: r.start_lsn,
            chain: r.chain,
        }),
    })
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

/// Writes the tarball and keeps the list.
struct TarWriter<'a> {
    builder: tar::Builder<SetFile>,
    reference: Option<&'a Reference>,
    list: FileList,
    hashes: FileHashes,
    counts: Counts,
    progress: &'a indicatif::ProgressBar,
}

impl TarWriter<'_> {
    fn write_all(&mut self, found: &[Found]) -> anyhow::Result<()> {
        for item in found {
            common::interrupt::checkpoint();
            if item.is_dir {
                self.append_dir(&item.rel)?;
                continue;
            }
            let meta = match std::fs::metadata(&item.abs) {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot read {}", item.abs.display()))
                }
            };
            self.append_file(item, &meta)
                .with_context(|| format!("cannot back up {}", item.abs.display()))?;
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

    /// Stores one file: unchanged since the reference, its changed pages, or whole.
    fn append_file(&mut self, item: &Found, meta: &std::fs::Metadata) -> io::Result<()> {
        let size = meta.len();
        let mtime = mtime_ns(meta);
        let before = self
            .reference
            .and_then(|r| r.files.get(&item.rel).map(|f| (r, f)));
        let stored = match before {
            Some((_, old)) if old.size == size && old.mtime_ns == mtime => {
                self.progress.inc(size);
                self.counts.unchanged_files += 1;
                Stored::Unchanged
            }
            Some((reference, old))
                if item.class == PathClass::RelationMain
                    && size.is_multiple_of(PAGE_SIZE as u64) =>
            {
                match self.append_pages(item, size, old.size, reference.start_lsn)? {
                    Some(()) => Stored::Pages,
                    None => return Ok(()),
                }
            }
            _ => match self.append_whole(item, size, meta)? {
                Some(()) => Stored::Whole,
                None => return Ok(()),
            },
        };
        self.counts.data_bytes += size;
        self.list.files.push(ListedFile {
            path: item.rel.clone(),
            size,
            mtime_ns: mtime,
            stored,
        });
        Ok(())
    }

    /// The whole file, `size` bytes as stat saw them (a file that shrank while read is padded
    /// with zeros, one that grew is cut: WAL replay makes either right). `None`: it vanished.
    fn append_whole(
        &mut self,
        item: &Found,
        size: u64,
        meta: &std::fs::Metadata,
    ) -> io::Result<Option<()>> {
        let Some(file) = open_unless_gone(&item.abs)? else {
            return Ok(None);
        };
        let mut header = file_header(size);
        header.set_mtime(mtime_secs(meta));
        let mut body = Body {
            file,
            remaining: size,
            hash: ContentHash::default(),
            progress: self.progress,
        };
        self.builder
            .append_data(&mut header, &item.rel, &mut body)?;
        self.hashes.insert(item.rel.clone(), body.hash.hex());
        self.counts.whole_files += 1;
        Ok(Some(()))
    }

    /// The pages of a relation file newer than the reference's start, pages past its old
    /// size and all-zero pages, as an incremental member. `None`: it vanished.
    fn append_pages(
        &mut self,
        item: &Found,
        size: u64,
        old_size: u64,
        since: Lsn,
    ) -> io::Result<Option<()>> {
        let Some(mut file) = open_unless_gone(&item.abs)? else {
            return Ok(None);
        };
        let old_blocks = old_size / PAGE_SIZE as u64;
        let mut changed = ChangedPages {
            file_size: size,
            blocks: Vec::new(),
        };
        let mut hash = ContentHash::default();
        let mut chunk = vec![0; 128 * PAGE_SIZE];
        let mut block: u64 = 0;
        let mut remaining = size;
        while remaining > 0 {
            let want = remaining.min(chunk.len() as u64) as usize;
            let got = read_full(&mut file, &mut chunk[..want])?;
            // Shrunk while read: the rest are zero pages (replay truncates or rewrites them).
            chunk[got..want].fill(0);
            for page in chunk[..want].chunks(PAGE_SIZE) {
                let lsn = incremental::page_lsn(page);
                if lsn > since || lsn == Lsn(0) || block >= old_blocks {
                    changed.blocks.push(block as u32);
                }
                block += 1;
            }
            hash.update(&chunk[..want]);
            self.progress.inc(want as u64);
            remaining -= want as u64;
        }
        let mut header = file_header(changed.member_size());
        header.set_mtime(now_secs());
        let mut head = Vec::new();
        changed.write_header(&mut head)?;
        let member = PagesReader {
            head: io::Cursor::new(head),
            file: &file,
            blocks: &changed.blocks,
            next: 0,
            page: vec![0; PAGE_SIZE],
            at: PAGE_SIZE,
        };
        self.builder
            .append_data(&mut header, incremental::member_name(&item.rel), member)?;
        self.hashes.insert(item.rel.clone(), hash.hex());
        self.counts.page_files += 1;
        self.counts.changed_pages += changed.blocks.len() as u64;
        Ok(Some(()))
    }

    /// A file given whole (the backup_label).
    fn append_bytes(&mut self, rel: &str, bytes: &[u8]) -> io::Result<()> {
        let mut header = file_header(bytes.len() as u64);
        header.set_mtime(now_secs());
        self.builder.append_data(&mut header, rel, bytes)
    }
}

fn file_header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o600);
    header.set_size(size);
    header
}

fn open_unless_gone(path: &Path) -> io::Result<Option<File>> {
    match File::open(path) {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

fn now_secs() -> u64 {
    OffsetDateTime::now_utc().unix_timestamp().max(0) as u64
}

fn mtime_secs(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.mtime().max(0) as u64
}

/// Exactly `remaining` bytes of a file, zero-padded past its end, hashed as read.
struct Body<'a> {
    file: File,
    remaining: u64,
    hash: ContentHash,
    progress: &'a indicatif::ProgressBar,
}

impl Read for Body<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.remaining as usize);
        let mut n = self.file.read(&mut buf[..want])?;
        if n == 0 {
            buf[..want].fill(0);
            n = want;
        }
        self.remaining -= n as u64;
        self.hash.update(&buf[..n]);
        self.progress.inc(n as u64);
        Ok(n)
    }
}

/// An incremental member: its header, then each listed page read again from the file.
struct PagesReader<'a> {
    head: io::Cursor<Vec<u8>>,
    file: &'a File,
    blocks: &'a [u32],
    next: usize,
    page: Vec<u8>,
    /// Read position in `page` (PAGE_SIZE: load the next).
    at: usize,
}

impl Read for PagesReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.head.read(buf)?;
        if n > 0 {
            return Ok(n);
        }
        if self.at == PAGE_SIZE {
            let Some(&block) = self.blocks.get(self.next) else {
                return Ok(0);
            };
            self.next += 1;
            self.page.fill(0);
            let mut got = 0;
            let offset = u64::from(block) * PAGE_SIZE as u64;
            while got < PAGE_SIZE {
                match self
                    .file
                    .read_at(&mut self.page[got..], offset + got as u64)?
                {
                    0 => break,
                    n => got += n,
                }
            }
            self.at = 0;
        }
        let n = buf.len().min(PAGE_SIZE - self.at);
        buf[..n].copy_from_slice(&self.page[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

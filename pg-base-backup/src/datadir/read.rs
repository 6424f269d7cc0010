//! Reading the files of a data-directory backup on `--jobs` threads: each file is decided
//! (unchanged since the reference, changed pages, or whole), read, hashed and handed to the
//! tar writer as a stream of chunks over a small bounded channel of its own, so the tarball
//! keeps the walk's order while up to `jobs` files are read ahead. The pieces of a large file
//! an incremental backup scans for changed pages are scanned on `jobs` threads. Memory stays
//! at most `jobs` × ([`CHANNEL_CHUNKS`] + `jobs`) × [`CHUNK`] bytes, plus each incremental
//! file's page list.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use common::lsn::Lsn;
use common::physical::datadir::{relation_node, PathClass};
use common::physical::filehash::ContentHash;
use common::physical::filelist::{mtime_ns, ListedFile, Stored};
use common::physical::incremental::{self, PAGE_SIZE};
use common::physical::page;
use common::wal::blocks::{ChangedBlocks, FileChanges};

use super::pages::{read_blocks, Pages, Picked};
use super::Found;
use crate::reference::Reference;

/// Bytes per chunk sent to the writer.
pub const CHUNK: usize = 1 << 20;
/// Chunks buffered per file in flight.
pub const CHANNEL_CHUNKS: usize = 4;

/// What the writer receives for one file, in order: `Start`, `Data`..., `End`; or `Gone`
/// (removed while the backup ran: PostgreSQL dropped it, WAL replay agrees) or `Failed`.
pub enum Piece {
    Start(Member),
    Data(Vec<u8>),
    End {
        hash: Option<String>,
        /// Blocks whose data checksum failed twice.
        bad_blocks: Vec<u32>,
    },
    Gone,
    Failed(io::Error),
}

/// Checks data checksums, as pg_basebackup does, of pages older than the backup's start (a
/// newer page may be mid-write; WAL replay rewrites it anyway). A failing page is read once
/// more before it counts.
#[derive(Clone, Copy)]
pub struct Verify {
    pub before: Lsn,
}

impl Verify {
    /// The blocks of `pages` (read at byte `offset` of a file whose block 0 is relation block
    /// `first_block`) that fail twice.
    pub(super) fn bad_blocks(
        &self,
        file: &File,
        pages: &[u8],
        offset: u64,
        first_block: u32,
    ) -> io::Result<Vec<u32>> {
        let mut bad = Vec::new();
        for (i, page) in pages.chunks_exact(PAGE_SIZE).enumerate() {
            let block = (offset / PAGE_SIZE as u64) as u32 + i as u32;
            if incremental::page_lsn(page) >= self.before
                || page::verifies(page, first_block + block)
            {
                continue;
            }
            let mut again = vec![0; PAGE_SIZE];
            read_full_at(file, &mut again, u64::from(block) * PAGE_SIZE as u64)?;
            if incremental::page_lsn(&again) < self.before
                && !page::verifies(&again, first_block + block)
            {
                bad.push(block);
            }
        }
        Ok(bad)
    }
}

/// What a diff or incr compares each file with: its reference's list, and the blocks the
/// WAL since the reference changed, when they were found from it.
#[derive(Clone, Copy)]
pub struct Against<'a> {
    pub reference: &'a Reference,
    pub wal: Option<&'a ChangedBlocks>,
}

/// The tar member of a file and its entry in the list.
pub struct Member {
    /// The member's name: the file's path, or its incremental member name.
    pub name: String,
    /// Bytes of the member (0 when unchanged: no member at all).
    pub size: u64,
    pub mtime_secs: u64,
    pub listed: ListedFile,
    /// Pages in an incremental member.
    pub pages: u64,
}

/// Starts the readers for `found` (directories are skipped: the writer handles them);
/// returns one receiver per entry of `found`, `None` for directories.
pub fn spawn<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    found: &'scope [Found],
    against: Option<Against<'scope>>,
    verify: Option<Verify>,
    jobs: usize,
) -> Vec<Option<Receiver<Piece>>> {
    let mut senders: Vec<Vec<(usize, SyncSender<Piece>)>> = (0..jobs).map(|_| Vec::new()).collect();
    let mut receivers = Vec::with_capacity(found.len());
    let mut next_worker = 0;
    for (index, item) in found.iter().enumerate() {
        if item.is_dir {
            receivers.push(None);
            continue;
        }
        let (tx, rx) = sync_channel(CHANNEL_CHUNKS);
        senders[next_worker].push((index, tx));
        next_worker = (next_worker + 1) % jobs;
        receivers.push(Some(rx));
    }
    for work in senders {
        scope.spawn(move || {
            for (index, tx) in work {
                common::interrupt::checkpoint();
                let item = &found[index];
                let verify = verify.filter(|_| item.first_block.is_some());
                if let Err(e) = read_one(item, against, verify, jobs, &tx) {
                    // The writer has stopped listening (it failed): nothing more to do.
                    if tx.send(Piece::Failed(e)).is_err() {
                        return;
                    }
                }
            }
        });
    }
    receivers
}

/// How one file goes into the set.
enum Storing {
    /// As in the reference: listed, no member.
    Unchanged,
    /// Its changed pages, found from the WAL (`wal`: the blocks it names, and every block
    /// from a truncation on) or by a scan.
    Pages {
        old_size: u64,
        since: Lsn,
        wal: Option<(Vec<u32>, Option<u32>)>,
    },
    Whole,
}

impl Storing {
    /// For `item` of `size` bytes modified at `mtime` (ns), compared with `against`.
    fn decide(item: &Found, against: Option<Against<'_>>, size: u64, mtime: i128) -> Storing {
        let Some(against) = against else {
            return Storing::Whole;
        };
        let Some(old) = against.reference.files.get(&item.rel) else {
            return Storing::Whole;
        };
        if old.size == size && old.mtime_ns == mtime {
            return Storing::Unchanged;
        }
        if item.class != PathClass::RelationMain || !size.is_multiple_of(PAGE_SIZE as u64) {
            return Storing::Whole;
        }
        let from_wal = against
            .wal
            .zip(relation_node(&item.rel))
            .map(|(wal, (node, segment))| {
                let first_block = segment * page::BLOCKS_PER_SEGMENT;
                wal.in_file(node, first_block, page::BLOCKS_PER_SEGMENT)
            });
        let wal = match from_wal {
            Some(FileChanges::Whole) => return Storing::Whole,
            Some(FileChanges::Blocks { blocks, from }) => Some((blocks, from)),
            None => None,
        };
        Storing::Pages {
            old_size: old.size,
            since: against.reference.start_lsn,
            wal,
        }
    }
}

/// Decides and reads one file; a send error means the writer is gone.
fn read_one(
    item: &Found,
    against: Option<Against<'_>>,
    verify: Option<Verify>,
    jobs: usize,
    tx: &SyncSender<Piece>,
) -> io::Result<()> {
    let gone = |tx: &SyncSender<Piece>| {
        let _ = tx.send(Piece::Gone);
        Ok(())
    };
    let meta = match std::fs::metadata(&item.abs) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return gone(tx),
        Err(e) => return Err(e),
    };
    let (size, mtime) = (meta.len(), mtime_ns(&meta));
    let listed = |stored| ListedFile {
        path: item.rel.clone(),
        size,
        mtime_ns: mtime,
        stored,
    };
    let storing = Storing::decide(item, against, size, mtime);
    if let Storing::Unchanged = storing {
        return send_unchanged(tx, item, listed(Stored::Unchanged));
    }
    let Some(file) = open_unless_gone(&item.abs)? else {
        return gone(tx);
    };
    match storing {
        Storing::Pages {
            old_size,
            since,
            wal,
        } => {
            let pages = Pages {
                old_size,
                since,
                verify,
                first_block: item.first_block,
                threads: jobs,
            };
            let picked = match wal {
                Some((blocks, from)) => pages.pick_from_wal(&file, size, &blocks, from)?,
                None => pages.scan(&file, size)?,
            };
            send_pages(tx, &file, item, picked, listed(Stored::Pages))
        }
        _ => {
            use std::os::unix::fs::MetadataExt;
            send(
                tx,
                Piece::Start(Member {
                    name: item.rel.clone(),
                    size,
                    mtime_secs: meta.mtime().max(0) as u64,
                    listed: listed(Stored::Whole),
                    pages: 0,
                }),
            )?;
            send_whole(tx, file, size, verify.zip(item.first_block))
        }
    }
}

/// A file as in the reference: listed, no member.
fn send_unchanged(tx: &SyncSender<Piece>, item: &Found, listed: ListedFile) -> io::Result<()> {
    send(
        tx,
        Piece::Start(Member {
            name: item.rel.clone(),
            size: 0,
            mtime_secs: 0,
            listed,
            pages: 0,
        }),
    )?;
    send(
        tx,
        Piece::End {
            hash: None,
            bad_blocks: Vec::new(),
        },
    )
}

fn send(tx: &SyncSender<Piece>, piece: Piece) -> io::Result<()> {
    tx.send(piece)
        .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the tar writer stopped"))
}

/// `size` bytes as stat saw them: a file that shrank while read is padded with zeros, one
/// that grew is cut (WAL replay makes either right).
fn send_whole(
    tx: &SyncSender<Piece>,
    mut file: File,
    size: u64,
    verify: Option<(Verify, u32)>,
) -> io::Result<()> {
    let mut hash = ContentHash::default();
    let mut bad_blocks = Vec::new();
    let mut offset = 0;
    while offset < size {
        let want = (size - offset).min(CHUNK as u64) as usize;
        let mut chunk = vec![0; want];
        read_full(&mut file, &mut chunk)?;
        hash.update(&chunk);
        if let Some((verify, first_block)) = verify {
            bad_blocks.extend(verify.bad_blocks(&file, &chunk, offset, first_block)?);
        }
        offset += want as u64;
        send(tx, Piece::Data(chunk))?;
    }
    send(
        tx,
        Piece::End {
            hash: Some(hash.finish()),
            bad_blocks,
        },
    )
}

/// The pages of a relation file that [`Pages`] picked, as an incremental member (read again:
/// the picking kept only their numbers).
fn send_pages(
    tx: &SyncSender<Piece>,
    file: &File,
    item: &Found,
    picked: Picked,
    listed: ListedFile,
) -> io::Result<()> {
    let Picked {
        changed,
        hash,
        bad_blocks,
    } = picked;
    let mut head = Vec::with_capacity(CHUNK);
    changed.write_header(&mut head)?;
    send(
        tx,
        Piece::Start(Member {
            name: incremental::member_name(&item.rel),
            size: changed.member_size(),
            mtime_secs: listed_secs(&listed),
            listed,
            pages: changed.blocks.len() as u64,
        }),
    )?;
    let mut out = head;
    let blocks = changed.blocks.iter().map(|&b| u64::from(b));
    read_blocks(file, blocks, |_, page| {
        out.extend_from_slice(page);
        if out.len() >= CHUNK {
            send(
                tx,
                Piece::Data(std::mem::replace(&mut out, Vec::with_capacity(CHUNK))),
            )?;
        }
        Ok(())
    })?;
    if !out.is_empty() {
        send(tx, Piece::Data(out))?;
    }
    send(tx, Piece::End { hash, bad_blocks })
}

fn listed_secs(listed: &ListedFile) -> u64 {
    (listed.mtime_ns / 1_000_000_000).max(0) as u64
}

fn open_unless_gone(path: &Path) -> io::Result<Option<File>> {
    match File::open(path) {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Fills `buf` from the file's current position; past its end, zeros.
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    buf[got..].fill(0);
    Ok(())
}

/// Fills `buf` from `offset`; past the file's end, zeros.
pub(super) fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64)? {
            0 => break,
            n => got += n,
        }
    }
    buf[got..].fill(0);
    Ok(())
}

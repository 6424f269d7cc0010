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
use common::physical::filehash::{self, ContentHash, PieceDigest, PieceHasher, PIECE};
use common::physical::filelist::{mtime_ns, ListedFile, Stored};
use common::physical::incremental::{self, ChangedPages, PAGE_SIZE};
use common::physical::page;
use common::wal::blocks::{ChangedBlocks, FileChanges};

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
    fn bad_blocks(
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
    reference: Option<&'scope Reference>,
    wal: Option<&'scope ChangedBlocks>,
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
                if let Err(e) = read_one(item, reference, wal, verify, jobs, &tx) {
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

/// Decides and reads one file; a send error means the writer is gone.
fn read_one(
    item: &Found,
    reference: Option<&Reference>,
    wal: Option<&ChangedBlocks>,
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
    let size = meta.len();
    let mtime = mtime_ns(&meta);
    let listed = |stored| ListedFile {
        path: item.rel.clone(),
        size,
        mtime_ns: mtime,
        stored,
    };
    let before = reference.and_then(|r| r.files.get(&item.rel).map(|f| (r.start_lsn, f)));
    // From the WAL: the file's changed blocks, or that it changed whole.
    let from_wal = wal
        .zip(relation_node(&item.rel))
        .map(|(wal, (node, segment))| {
            wal.in_file(
                node,
                segment * page::BLOCKS_PER_SEGMENT,
                page::BLOCKS_PER_SEGMENT,
            )
        });
    match before {
        Some((_, old)) if old.size == size && old.mtime_ns == mtime => {
            send(
                tx,
                Piece::Start(Member {
                    name: item.rel.clone(),
                    size: 0,
                    mtime_secs: 0,
                    listed: listed(Stored::Unchanged),
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
        Some((since, old))
            if item.class == PathClass::RelationMain
                && size.is_multiple_of(PAGE_SIZE as u64)
                && from_wal != Some(FileChanges::Whole) =>
        {
            let Some(file) = open_unless_gone(&item.abs)? else {
                return gone(tx);
            };
            let pages = Pages {
                old_size: old.size,
                since,
                verify,
                first_block: item.first_block,
                threads: jobs,
            };
            let picked = match from_wal {
                Some(FileChanges::Blocks { blocks, from }) => {
                    pages.pick_from_wal(&file, size, &blocks, from)?
                }
                _ => pages.scan(&file, size)?,
            };
            send_pages(tx, &file, item, picked, listed(Stored::Pages))
        }
        _ => {
            let Some(file) = open_unless_gone(&item.abs)? else {
                return gone(tx);
            };
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

/// What picks the pages of an incremental member.
struct Pages {
    /// The file's size in the reference: pages past it are new.
    old_size: u64,
    /// The reference's start: newer pages changed.
    since: Lsn,
    verify: Option<Verify>,
    /// The relation block of the file's block 0, for the data checksums.
    first_block: Option<u32>,
    /// Threads a large file's pieces are scanned on.
    threads: usize,
}

/// The pages of a relation file an incremental member stores, and the file's hash when the
/// whole file was read.
struct Picked {
    changed: ChangedPages,
    hash: Option<String>,
    bad_blocks: Vec<u32>,
}

/// What one piece of a relation file gives its incremental member.
struct PieceScan {
    digest: PieceDigest,
    /// Its changed blocks (numbered in the file).
    changed: Vec<u32>,
    bad_blocks: Vec<u32>,
}

impl Pages {
    /// Whether the page `block`, read as `page`, goes into the member: newer than the
    /// reference, past its old size, or all-zero (new, never written).
    fn changed(&self, block: u64, page: &[u8]) -> bool {
        let lsn = incremental::page_lsn(page);
        lsn > self.since || lsn == Lsn(0) || block >= self.old_size / PAGE_SIZE as u64
    }

    /// Reads the whole file, its pieces on up to `threads` threads: the changed pages and
    /// the file's hash.
    fn scan(&self, file: &File, size: u64) -> io::Result<Picked> {
        let scans = self.scan_pieces(file, size)?;
        let hash = filehash::from_digests(scans.iter().map(|scan| &scan.digest));
        let mut picked = Picked {
            changed: ChangedPages {
                file_size: size,
                blocks: Vec::new(),
            },
            hash: Some(hash),
            bad_blocks: Vec::new(),
        };
        for scan in scans {
            picked.changed.blocks.extend(scan.changed);
            picked.bad_blocks.extend(scan.bad_blocks);
        }
        Ok(picked)
    }

    /// Reads only the blocks the WAL changed (`blocks`, sorted), every block from `from` on
    /// and the blocks past the old size, keeping those [`Pages::changed`] keeps as a scan
    /// would. The file is not read whole, so it gets no hash (a delta restore compares it
    /// with an earlier link's).
    fn pick_from_wal(
        &self,
        file: &File,
        size: u64,
        blocks: &[u32],
        from: Option<u32>,
    ) -> io::Result<Picked> {
        let count = size / PAGE_SIZE as u64;
        let tail = (self.old_size / PAGE_SIZE as u64).min(from.map_or(u64::MAX, u64::from));
        let listed = blocks
            .iter()
            .map(|&b| u64::from(b))
            .take_while(|&b| b < tail.min(count));
        let mut picked = Picked {
            changed: ChangedPages {
                file_size: size,
                blocks: Vec::new(),
            },
            hash: None,
            bad_blocks: Vec::new(),
        };
        read_blocks(file, listed.chain(tail..count), |block, page| {
            if self.changed(block, page) {
                picked.changed.blocks.push(block as u32);
            }
            if let (Some(verify), Some(first_block)) = (self.verify, self.first_block) {
                let offset = block * PAGE_SIZE as u64;
                let bad = verify.bad_blocks(file, page, offset, first_block)?;
                picked.bad_blocks.extend(bad);
            }
            Ok(())
        })?;
        Ok(picked)
    }

    /// Scans every piece of the file (`size` bytes), on up to `threads` threads.
    fn scan_pieces(&self, file: &File, size: u64) -> io::Result<Vec<PieceScan>> {
        let count = size.div_ceil(PIECE as u64) as usize;
        let threads = self.threads.clamp(1, count.max(1));
        if threads == 1 {
            let mut buf = vec![0; CHUNK];
            return (0..count)
                .map(|i| self.scan_piece(file, size, i, &mut buf))
                .collect();
        }
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|first| {
                    scope.spawn(move || {
                        let mut buf = vec![0; CHUNK];
                        (first..count)
                            .step_by(threads)
                            .map(|i| Ok((i, self.scan_piece(file, size, i, &mut buf)?)))
                            .collect::<io::Result<Vec<_>>>()
                    })
                })
                .collect();
            let mut scans = Vec::with_capacity(count);
            for handle in handles {
                scans.extend(handle.join().expect("a scanning thread panicked")?);
            }
            scans.sort_by_key(|(i, _)| *i);
            Ok(scans.into_iter().map(|(_, scan)| scan).collect())
        })
    }

    /// Piece `index` of the file: its digest, and its pages newer than `since`, past the old
    /// size, or all-zero (new, never written).
    fn scan_piece(
        &self,
        file: &File,
        size: u64,
        index: usize,
        chunk: &mut [u8],
    ) -> io::Result<PieceScan> {
        let start = index as u64 * PIECE as u64;
        let end = size.min(start + PIECE as u64);
        let mut scan = PieceScan {
            digest: PieceDigest::default(),
            changed: Vec::new(),
            bad_blocks: Vec::new(),
        };
        let mut hash = PieceHasher::default();
        let mut offset = start;
        while offset < end {
            let want = (end - offset).min(chunk.len() as u64) as usize;
            read_full_at(file, &mut chunk[..want], offset)?;
            let blocks = (offset / PAGE_SIZE as u64..).zip(chunk[..want].chunks(PAGE_SIZE));
            for (block, page) in blocks {
                if self.changed(block, page) {
                    scan.changed.push(block as u32);
                }
            }
            hash.update(&chunk[..want]);
            if let (Some(verify), Some(first_block)) = (self.verify, self.first_block) {
                let bad = verify.bad_blocks(file, &chunk[..want], offset, first_block)?;
                scan.bad_blocks.extend(bad);
            }
            offset += want as u64;
        }
        scan.digest = hash.finish();
        Ok(scan)
    }
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

/// Pages per read of consecutive blocks.
const RUN: usize = 32;

/// Reads `blocks` (ascending) of `file`, consecutive ones [`RUN`] pages at a time, and hands
/// each page to `each` in order (past the file's end, zeros).
fn read_blocks(
    file: &File,
    blocks: impl Iterator<Item = u64>,
    mut each: impl FnMut(u64, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let mut buf = vec![0; RUN * PAGE_SIZE];
    let (mut first, mut len) = (0u64, 0usize);
    let mut flush = |first: u64, len: usize| -> io::Result<()> {
        let bytes = &mut buf[..len * PAGE_SIZE];
        read_full_at(file, bytes, first * PAGE_SIZE as u64)?;
        for (i, page) in bytes.chunks_exact(PAGE_SIZE).enumerate() {
            each(first + i as u64, page)?;
        }
        Ok(())
    };
    for block in blocks {
        if len > 0 && (len == RUN || first + len as u64 != block) {
            flush(first, len)?;
            len = 0;
        }
        if len == 0 {
            first = block;
        }
        len += 1;
    }
    if len > 0 {
        flush(first, len)?;
    }
    Ok(())
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
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A relation file of `blocks` pages, each with the LSN `lsn(block)` in its header.
    fn relation(blocks: u64, lsn: impl Fn(u64) -> u64) -> tempfile::NamedTempFile {
        let mut bytes = Vec::with_capacity((blocks as usize) * PAGE_SIZE);
        for block in 0..blocks {
            let mut page = vec![(block % 199) as u8; PAGE_SIZE];
            let lsn = lsn(block);
            page[..4].copy_from_slice(&((lsn >> 32) as u32).to_le_bytes());
            page[4..8].copy_from_slice(&(lsn as u32).to_le_bytes());
            bytes.extend_from_slice(&page);
        }
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &bytes).unwrap();
        file
    }

    #[test]
    fn pieces_scanned_in_parallel_give_the_changed_pages_and_hash_of_one_pass() {
        // Three pieces and a bit; new pages past the old size, newer LSNs in every piece.
        let blocks = (3 * PIECE / PAGE_SIZE + 10) as u64;
        let changed_at = |block: u64| block % 1500 == 7;
        let file = relation(blocks, |b| {
            if changed_at(b) {
                0x2_0000_0000
            } else {
                0x1_0000_0000
            }
        });
        let size = blocks * PAGE_SIZE as u64;
        let scan = |threads| {
            let pages = Pages {
                old_size: size - 4 * PAGE_SIZE as u64,
                since: Lsn(0x1_8000_0000),
                verify: None,
                first_block: Some(0),
                threads,
            };
            let scans = pages
                .scan_pieces(&File::open(file.path()).unwrap(), size)
                .unwrap();
            let hash = filehash::from_digests(scans.iter().map(|s| &s.digest));
            let changed: Vec<u32> = scans.into_iter().flat_map(|s| s.changed).collect();
            (changed, hash)
        };
        let (changed, hash) = scan(1);
        let expected: Vec<u32> = (0..blocks)
            .filter(|&b| changed_at(b) || b >= blocks - 4)
            .map(|b| b as u32)
            .collect();
        assert_eq!(changed, expected);
        assert_eq!(scan(3), (changed, hash.clone()));
        let mut whole = ContentHash::default();
        whole.update(&std::fs::read(file.path()).unwrap());
        assert_eq!(hash, whole.finish());
    }

    #[test]
    fn pages_picked_from_the_wal_are_the_scans_pages_among_those_the_wal_names() {
        let blocks = 3000u64;
        let file = relation(blocks, |b| {
            if b % 100 == 3 {
                0x2_0000_0000
            } else if b % 50 == 0 {
                0
            } else {
                0x1_0000_0000
            }
        });
        let size = blocks * PAGE_SIZE as u64;
        let pages = Pages {
            old_size: size - 10 * PAGE_SIZE as u64,
            since: Lsn(0x1_8000_0000),
            verify: None,
            first_block: Some(0),
            threads: 2,
        };
        let file = File::open(file.path()).unwrap();
        let scan = pages.scan(&file, size).unwrap();
        assert!(scan.hash.is_some());
        // The WAL names every changed page, and some unchanged ones (kept out by their LSN).
        let named: Vec<u32> = (0..blocks as u32)
            .filter(|b| b % 100 == 3 || b % 7 == 0)
            .collect();
        let wal = pages.pick_from_wal(&file, size, &named, None).unwrap();
        let expected: Vec<u32> = scan
            .changed
            .blocks
            .iter()
            .copied()
            .filter(|b| named.contains(b) || u64::from(*b) >= blocks - 10)
            .collect();
        assert_eq!(wal.changed.blocks, expected);
        assert_eq!(wal.changed.file_size, size);
        assert!(wal.hash.is_none(), "not read whole: no hash");
        // Truncated at block 2000 since: every block from there on is read.
        let from = pages
            .pick_from_wal(&file, size, &named, Some(2000))
            .unwrap();
        let tail: Vec<u32> = scan
            .changed
            .blocks
            .iter()
            .copied()
            .filter(|&b| b >= 2000)
            .collect();
        assert!(from.changed.blocks.ends_with(&tail));
        assert!(from
            .changed
            .blocks
            .iter()
            .any(|&b| b >= 2000 && b % 50 == 0 && b % 100 != 3));
    }
}

//! Which pages of a changed relation file an incremental member stores: those newer than the
//! reference (or past its old size, or never written), found by reading the whole file in
//! pieces on several threads (a scan, which also hashes it) or by reading only the pages the
//! WAL names.

use std::fs::File;
use std::io;

use common::lsn::Lsn;
use common::physical::filehash::{self, PieceDigest, PieceHasher, PIECE};
use common::physical::incremental::{self, ChangedPages, PAGE_SIZE};

use super::read::{read_full_at, Verify, CHUNK};

/// What picks the pages of an incremental member.
pub(super) struct Pages {
    /// The file's size in the reference: pages past it are new.
    pub(super) old_size: u64,
    /// The reference's start: newer pages changed.
    pub(super) since: Lsn,
    pub(super) verify: Option<Verify>,
    /// The relation block of the file's block 0, for the data checksums.
    pub(super) first_block: Option<u32>,
    /// Threads a large file's pieces are scanned on.
    pub(super) threads: usize,
}

/// The pages of a relation file an incremental member stores, and the file's hash when the
/// whole file was read.
pub(super) struct Picked {
    pub(super) changed: ChangedPages,
    pub(super) hash: Option<String>,
    pub(super) bad_blocks: Vec<u32>,
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
    pub(super) fn scan(&self, file: &File, size: u64) -> io::Result<Picked> {
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
    pub(super) fn pick_from_wal(
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

/// Pages per read of consecutive blocks.
const RUN: usize = 32;

/// Reads `blocks` (ascending) of `file`, consecutive ones [`RUN`] pages at a time, and hands
/// each page to `each` in order (past the file's end, zeros).
pub(super) fn read_blocks(
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

#[cfg(test)]
mod tests {
    use super::*;
    use common::physical::filehash::ContentHash;

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

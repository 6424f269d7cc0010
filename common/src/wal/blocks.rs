//! The relation blocks WAL records changed between two positions: what PostgreSQL 17's WAL
//! summaries record, read here from the WAL itself, so that an incremental backup reads only
//! those pages of a changed relation file instead of the whole file.
//!
//! Records are decoded (PostgreSQL 15 and 16's format: page headers, records spanning pages
//! and segments, CRC-32C checked) and their block references gathered by relation: over a
//! range of WAL ([`changed_blocks`]), or per segment ([`summarize_segment`]: what
//! `wal-archive push` stores beside each segment it archives, so that a backup reads a few
//! KiB per segment instead of decoding it). Three kinds of record change relation files beyond their block
//! references, as in PostgreSQL's summarizer:
//! - `XLOG_SMGR_CREATE` (a relation file created): every block of it changed;
//! - `XLOG_SMGR_TRUNCATE` of the main fork: every block from the new end on changed;
//! - `XLOG_DBASE_*` (a database created by copying files, or dropped): every file of it
//!   changed, since the copied pages keep their LSNs.
//!
//! Anything unexpected (a record that does not decode, a CRC mismatch, a page header that
//! does not belong where it is read) is an error: the caller then reads the files whole.

use std::collections::{HashMap, HashSet};
use std::io::Read;

use anyhow::{bail, ensure, Context};
use serde::{Deserialize, Serialize};

use crate::lsn::Lsn;

/// WAL page size (`XLOG_BLCKSZ`).
pub const WAL_PAGE: u64 = 8192;

/// `XLOG_PAGE_MAGIC` of the releases whose record format this reads (15, 16).
const PAGE_MAGICS: [u16; 2] = [0xD110, 0xD113];
const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
const XLP_LONG_HEADER: u16 = 0x0002;
const SHORT_PAGE_HEADER: u64 = 24;
const LONG_PAGE_HEADER: u64 = 40;
const RECORD_HEADER: usize = 24;

const XLR_MAX_BLOCK_ID: u8 = 32;
const XLR_BLOCK_ID_DATA_SHORT: u8 = 255;
const XLR_BLOCK_ID_DATA_LONG: u8 = 254;
const XLR_BLOCK_ID_ORIGIN: u8 = 253;
const XLR_BLOCK_ID_TOPLEVEL_XID: u8 = 252;
const BKPBLOCK_FORK_MASK: u8 = 0x0F;
const BKPBLOCK_HAS_IMAGE: u8 = 0x10;
const BKPBLOCK_SAME_REL: u8 = 0x80;
const BKPIMAGE_HAS_HOLE: u8 = 0x01;
/// PGLZ, LZ4, ZSTD.
const BKPIMAGE_COMPRESSED: u8 = 0x04 | 0x08 | 0x10;

const RM_XLOG_ID: u8 = 0;
const RM_SMGR_ID: u8 = 2;
const RM_DBASE_ID: u8 = 4;
const XLOG_SWITCH: u8 = 0x40;
const XLOG_SMGR_CREATE: u8 = 0x10;
const XLOG_SMGR_TRUNCATE: u8 = 0x20;
const SMGR_TRUNCATE_HEAP: u32 = 0x0001;
const XLOG_DBASE_CREATE_FILE_COPY: u8 = 0x00;
const XLOG_DBASE_CREATE_WAL_LOG: u8 = 0x10;
const XLOG_DBASE_DROP: u8 = 0x20;

/// A relation's storage: tablespace, database (0 for shared relations) and relfilenode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RelFileNode {
    pub spc: u32,
    pub db: u32,
    pub rel: u32,
}

/// The main fork's changes to one relation.
#[derive(Debug, Default, Clone)]
struct RelationChanges {
    /// Blocks referenced by records (relation block numbers, unsorted until `finish`).
    blocks: Vec<u32>,
    /// Every block from this one on changed (created or truncated).
    from: Option<u32>,
}

/// A quick hasher for relation maps (one insert per block reference: SipHash would be a
/// good part of decoding): the multiply-rotate step of rustc's FxHash.
#[derive(Default)]
struct NodeHasher(u64);

impl std::hash::Hasher for NodeHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u32(u32::from(b));
        }
    }

    fn write_u32(&mut self, v: u32) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(v)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type NodeMap<V> = HashMap<RelFileNode, V, std::hash::BuildHasherDefault<NodeHasher>>;

/// The main-fork blocks changed in a range of WAL, by relation.
#[derive(Debug, Default)]
pub struct ChangedBlocks {
    relations: NodeMap<RelationChanges>,
    /// Databases (tablespace, database) whose files all changed.
    databases: HashSet<(u32, u32)>,
    /// Records decoded.
    pub records: u64,
    /// WAL bytes decoded.
    pub bytes: u64,
}

/// What changed in one segment file of a relation's main fork.
#[derive(Debug, PartialEq, Eq)]
pub enum FileChanges {
    /// Every block may have changed: read the file whole.
    Whole,
    /// These blocks (numbered in the file, sorted) and every block from `from` on.
    Blocks { blocks: Vec<u32>, from: Option<u32> },
}

impl ChangedBlocks {
    /// The changes to the segment of relation `node` whose block 0 is relation block
    /// `first_block` and which holds `blocks_per_file` blocks at most.
    pub fn in_file(
        &self,
        node: RelFileNode,
        first_block: u32,
        blocks_per_file: u32,
    ) -> FileChanges {
        if self.databases.contains(&(node.spc, node.db)) {
            return FileChanges::Whole;
        }
        let Some(changes) = self.relations.get(&node) else {
            return FileChanges::Blocks {
                blocks: Vec::new(),
                from: None,
            };
        };
        let end = first_block.saturating_add(blocks_per_file);
        let blocks = changes
            .blocks
            .iter()
            .filter(|&&b| b >= first_block && b < end)
            .map(|&b| b - first_block)
            .collect();
        let from = changes.from.map(|from| from.saturating_sub(first_block));
        FileChanges::Blocks { blocks, from }
    }

    fn block(&mut self, node: RelFileNode, block: u32) {
        self.relations.entry(node).or_default().blocks.push(block);
    }

    fn from(&mut self, node: RelFileNode, block: u32) {
        let from = &mut self.relations.entry(node).or_default().from;
        *from = Some(from.map_or(block, |f| f.min(block)));
    }

    /// Adds what `other` changed.
    pub fn merge(&mut self, other: ChangedBlocks) {
        for (node, changes) in other.relations {
            self.relations
                .entry(node)
                .or_default()
                .blocks
                .extend(changes.blocks);
            if let Some(from) = changes.from {
                self.from(node, from);
            }
        }
        self.databases.extend(other.databases);
        self.records += other.records;
        self.bytes += other.bytes;
    }

    /// Sorts each relation's blocks (after [`ChangedBlocks::merge`]).
    pub fn finish(mut self) -> Self {
        for changes in self.relations.values_mut() {
            changes.blocks.sort_unstable();
            changes.blocks.dedup();
        }
        self
    }
}

/// A segment a [`Reader`] needs is not there (a summary reads one segment only).
#[derive(Debug, thiserror::Error)]
#[error("WAL segment {0:X} is not available")]
pub struct Unavailable(pub u64);

/// Decodes the WAL from the record at `from` up to the record that starts at `to` (both
/// record starts, as a backup's start LSN is) on one timeline; `open(segno)` streams a
/// segment from its start.
pub fn changed_blocks<'a>(
    open: impl FnMut(u64) -> anyhow::Result<SegmentReader<'a>>,
    from: Lsn,
    to: Lsn,
    segment_size: u64,
) -> anyhow::Result<ChangedBlocks> {
    check_segment_size(segment_size)?;
    let mut reader = Reader {
        segments: Streamed::new(open),
        segment_size,
        pos: from.0,
    };
    let mut changed = ChangedBlocks::default();
    let mut record = Vec::new();
    loop {
        if reader.pos.is_multiple_of(WAL_PAGE) {
            reader.enter_page(false)?;
        }
        if reader.pos >= to.0 {
            break;
        }
        let at = Lsn(reader.pos);
        record.clear();
        reader
            .read_record(&mut record)
            .with_context(|| format!("cannot read the WAL record at {at}"))?;
        let decoded = decode(&record, record.len(), &mut changed)
            .with_context(|| format!("cannot decode the WAL record at {at}"))?;
        changed.records += 1;
        reader.pos = match decoded {
            Decoded::Switch => reader.pos.next_multiple_of(segment_size),
            Decoded::Other => reader.pos.next_multiple_of(8),
        };
    }
    changed.bytes = to.0.saturating_sub(from.0);
    Ok(changed.finish())
}

/// What the records that start in one segment changed: [`summarize_segment`].
#[derive(Debug, Default)]
pub struct SegmentSummary {
    pub changed: ChangedBlocks,
    /// The segment's last record continues in the next one and its block references could
    /// not all be read here: decode it with both segments ([`changed_blocks`] from it).
    pub tail: Option<Lsn>,
}

/// Summarizes the records that start in segment `segno` (`bytes`, whole), up to the one
/// that starts at `until` when given (the segment being written). The record the segment
/// starts with the rest of belongs to the previous segment's summary; of the last one,
/// which may continue in the next segment, the block references are read when they lie in
/// this segment (they come first), else its start is the summary's `tail`.
pub fn summarize_segment(
    bytes: &[u8],
    segno: u64,
    segment_size: u64,
    until: Option<Lsn>,
) -> anyhow::Result<SegmentSummary> {
    check_segment_size(segment_size)?;
    ensure!(
        bytes.len() as u64 == segment_size,
        "WAL segment {segno:X} has {} bytes, not {segment_size}",
        bytes.len()
    );
    summarize(One { segno, bytes }, segno, segment_size, until)
}

/// [`summarize_segment`] of a segment read as a stream (only as far as `until`).
pub fn summarize_stream(
    stream: SegmentReader<'_>,
    segno: u64,
    segment_size: u64,
    until: Option<Lsn>,
) -> anyhow::Result<SegmentSummary> {
    check_segment_size(segment_size)?;
    let mut stream = Some(stream);
    let open = |wanted: u64| -> anyhow::Result<SegmentReader<'_>> {
        match stream.take() {
            Some(stream) if wanted == segno => Ok(stream),
            _ => Err(Unavailable(wanted).into()),
        }
    };
    summarize(Streamed::new(open), segno, segment_size, until)
}

fn summarize(
    segments: impl Segments,
    segno: u64,
    segment_size: u64,
    until: Option<Lsn>,
) -> anyhow::Result<SegmentSummary> {
    let start = segno * segment_size;
    let end = until.map_or(start + segment_size, |u| u.0.min(start + segment_size));
    let mut reader = Reader {
        segments,
        segment_size,
        pos: start,
    };
    let mut summary = SegmentSummary::default();
    let unavailable = |e: &anyhow::Error| e.downcast_ref::<Unavailable>().is_some();
    match reader.skip_continuation() {
        Ok(()) => {}
        // The record from the previous segment runs through this one.
        Err(e) if unavailable(&e) => return Ok(summary),
        Err(e) => return Err(e),
    }
    let mut record = Vec::new();
    loop {
        if reader.pos.is_multiple_of(WAL_PAGE) {
            match reader.enter_page(false) {
                Ok(()) => {}
                Err(e) if unavailable(&e) => break,
                Err(e) => return Err(e),
            }
        }
        if reader.pos >= end {
            break;
        }
        let at = Lsn(reader.pos);
        record.clear();
        let changed = &mut summary.changed;
        match reader.read_record(&mut record) {
            Ok(()) => {
                let decoded = decode(&record, record.len(), changed)
                    .with_context(|| format!("cannot decode the WAL record at {at}"))?;
                changed.records += 1;
                if decoded == Decoded::Switch {
                    break;
                }
                reader.pos = reader.pos.next_multiple_of(8);
            }
            Err(e) if unavailable(&e) => {
                // The last record, cut at the segment's end.
                let read = u32_at(&record, 0).and_then(|total| {
                    ensure!(total as usize >= RECORD_HEADER, "no record here");
                    decode(&record, total as usize, changed)
                });
                if read.is_err() {
                    summary.tail = Some(at);
                }
                changed.records += 1;
                break;
            }
            Err(e) => return Err(e.context(format!("cannot read the WAL record at {at}"))),
        }
    }
    summary.changed.bytes = end - start;
    summary.changed = std::mem::take(&mut summary.changed).finish();
    Ok(summary)
}

/// The version of a stored summary's format.
const SUMMARY_FORMAT: u32 = 1;

/// A summary as stored beside its segment (JSON).
#[derive(Serialize, Deserialize)]
struct StoredSummary {
    format: u32,
    records: u64,
    bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tail: Option<Lsn>,
    relations: Vec<StoredRelation>,
    #[serde(default)]
    databases: Vec<(u32, u32)>,
}

#[derive(Serialize, Deserialize)]
struct StoredRelation {
    #[serde(flatten)]
    node: RelFileNode,
    blocks: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<u32>,
}

impl SegmentSummary {
    /// The summary as stored.
    pub fn to_json(&self) -> Vec<u8> {
        let mut relations: Vec<StoredRelation> = self
            .changed
            .relations
            .iter()
            .map(|(node, changes)| StoredRelation {
                node: *node,
                blocks: changes.blocks.clone(),
                from: changes.from,
            })
            .collect();
        relations.sort_by_key(|r| (r.node.spc, r.node.db, r.node.rel));
        let mut databases: Vec<(u32, u32)> = self.changed.databases.iter().copied().collect();
        databases.sort_unstable();
        let stored = StoredSummary {
            format: SUMMARY_FORMAT,
            records: self.changed.records,
            bytes: self.changed.bytes,
            tail: self.tail,
            relations,
            databases,
        };
        serde_json::to_vec(&stored).expect("a summary serializes")
    }

    /// A stored summary; an error for another format.
    pub fn from_json(bytes: &[u8]) -> anyhow::Result<SegmentSummary> {
        let stored: StoredSummary = serde_json::from_slice(bytes).context("not a WAL summary")?;
        ensure!(
            stored.format == SUMMARY_FORMAT,
            "a WAL summary of format {}, not {SUMMARY_FORMAT}",
            stored.format
        );
        let mut changed = ChangedBlocks {
            records: stored.records,
            bytes: stored.bytes,
            databases: stored.databases.into_iter().collect(),
            ..ChangedBlocks::default()
        };
        for relation in stored.relations {
            changed.relations.insert(
                relation.node,
                RelationChanges {
                    blocks: relation.blocks,
                    from: relation.from,
                },
            );
        }
        Ok(SegmentSummary {
            changed: changed.finish(),
            tail: stored.tail,
        })
    }
}

fn check_segment_size(segment_size: u64) -> anyhow::Result<()> {
    ensure!(
        segment_size >= WAL_PAGE && segment_size.is_power_of_two(),
        "implausible WAL segment size {segment_size}"
    );
    Ok(())
}

/// Where a [`Reader`] gets WAL pages, in order.
trait Segments {
    /// Page `page` of segment `segno` (`Unavailable` when it cannot have it).
    fn page(&mut self, segno: u64, page: u64) -> anyhow::Result<&[u8]>;
}

/// A WAL segment's bytes as a stream (a file, a decompressing reader).
pub type SegmentReader<'a> = Box<dyn Read + 'a>;

/// Segments streamed page by page, as `open(segno)` gives them: the decoding reads in LSN
/// order, so no segment is ever held whole (a 16 MiB buffer costs more in page faults
/// than its decoding).
struct Streamed<'a, F> {
    open: F,
    segno: Option<u64>,
    reader: Option<SegmentReader<'a>>,
    /// The page in `buf`, and the next one the stream gives.
    have: Option<u64>,
    next: u64,
    buf: Vec<u8>,
}

impl<'a, F: FnMut(u64) -> anyhow::Result<SegmentReader<'a>>> Streamed<'a, F> {
    fn new(open: F) -> Self {
        Streamed {
            open,
            segno: None,
            reader: None,
            have: None,
            next: 0,
            buf: vec![0; WAL_PAGE as usize],
        }
    }
}

impl<'a, F: FnMut(u64) -> anyhow::Result<SegmentReader<'a>>> Segments for Streamed<'a, F> {
    fn page(&mut self, segno: u64, page: u64) -> anyhow::Result<&[u8]> {
        if self.segno != Some(segno) {
            self.segno = None;
            self.reader = Some((self.open)(segno)?);
            self.segno = Some(segno);
            (self.have, self.next) = (None, 0);
        }
        if self.have != Some(page) {
            ensure!(
                page >= self.next,
                "WAL read out of order in segment {segno:X}"
            );
            let reader = self.reader.as_mut().expect("opened with the segment");
            while self.next <= page {
                self.have = None;
                reader.read_exact(&mut self.buf).map_err(|e| {
                    anyhow::Error::new(e).context(format!("WAL segment {segno:X} ends early"))
                })?;
                self.next += 1;
            }
            self.have = Some(page);
        }
        Ok(&self.buf)
    }
}

/// One segment in memory, and no other.
struct One<'a> {
    segno: u64,
    bytes: &'a [u8],
}

impl Segments for One<'_> {
    fn page(&mut self, segno: u64, page: u64) -> anyhow::Result<&[u8]> {
        if segno != self.segno {
            return Err(Unavailable(segno).into());
        }
        let at = (page * WAL_PAGE) as usize;
        self.bytes
            .get(at..at + WAL_PAGE as usize)
            .with_context(|| format!("WAL segment {segno:X} ends early"))
    }
}

/// Reads WAL bytes in LSN order, a page at a time, stepping over page headers.
struct Reader<S> {
    segments: S,
    segment_size: u64,
    /// The next byte's LSN.
    pos: u64,
}

impl<S: Segments> Reader<S> {
    /// The bytes from `pos` to its page's end.
    fn here(&mut self) -> anyhow::Result<&[u8]> {
        let segno = self.pos / self.segment_size;
        let page = (self.pos % self.segment_size) / WAL_PAGE;
        let at = (self.pos % WAL_PAGE) as usize;
        Ok(&self.segments.page(segno, page)?[at..])
    }

    /// At a segment's start: steps over the page header and the rest of the record the
    /// previous segment ends with, to the first record that starts here.
    fn skip_continuation(&mut self) -> anyhow::Result<()> {
        let page = self.here()?;
        let info = u16::from_le_bytes([page[2], page[3]]);
        let mut remaining = u64::from(u32::from_le_bytes(page[16..20].try_into().expect("4")));
        let continuing = info & XLP_FIRST_IS_CONTRECORD != 0;
        self.enter_page(continuing)?;
        if !continuing {
            return Ok(());
        }
        while remaining > 0 {
            if self.pos.is_multiple_of(WAL_PAGE) {
                self.enter_page(true)?;
            }
            let take = remaining.min(WAL_PAGE - self.pos % WAL_PAGE);
            self.pos += take;
            remaining -= take;
        }
        self.pos = self.pos.next_multiple_of(8);
        Ok(())
    }

    /// Steps over the page header at `pos` (a page start), checking that it is the header
    /// of this page and, inside a record, that the page continues one.
    fn enter_page(&mut self, continuing: bool) -> anyhow::Result<()> {
        let pos = self.pos;
        let segment_start = pos.is_multiple_of(self.segment_size);
        let page = self.here()?;
        let magic = u16::from_le_bytes([page[0], page[1]]);
        let info = u16::from_le_bytes([page[2], page[3]]);
        let address = u64::from_le_bytes(page[8..16].try_into().expect("8 bytes"));
        ensure!(
            PAGE_MAGICS.contains(&magic),
            "the WAL page at {} has magic {magic:#06X}: not a PostgreSQL 15 or 16 WAL page",
            Lsn(pos)
        );
        ensure!(
            address == pos,
            "the WAL page at {} says it is at {} (a recycled or foreign segment)",
            Lsn(pos),
            Lsn(address)
        );
        ensure!(
            (info & XLP_LONG_HEADER != 0) == segment_start,
            "the WAL page at {} has the wrong header kind",
            Lsn(pos)
        );
        ensure!(
            (info & XLP_FIRST_IS_CONTRECORD != 0) == continuing,
            "the WAL page at {} {} a record, the one before it {}",
            Lsn(pos),
            if continuing {
                "does not continue"
            } else {
                "continues"
            },
            if continuing { "does" } else { "ends before it" },
        );
        self.pos += if segment_start {
            LONG_PAGE_HEADER
        } else {
            SHORT_PAGE_HEADER
        };
        Ok(())
    }

    /// Appends `n` bytes to `out`; pages entered on the way continue the record in `out`.
    fn read(&mut self, mut n: usize, out: &mut Vec<u8>) -> anyhow::Result<()> {
        while n > 0 {
            if self.pos.is_multiple_of(WAL_PAGE) {
                let continuing = !out.is_empty();
                self.enter_page(continuing)?;
            }
            let in_page = (WAL_PAGE - self.pos % WAL_PAGE) as usize;
            let take = n.min(in_page);
            let bytes = &self.here()?[..take];
            out.extend_from_slice(bytes);
            self.pos += take as u64;
            n -= take;
        }
        Ok(())
    }

    /// The record at `pos`, whole, its CRC checked.
    fn read_record(&mut self, out: &mut Vec<u8>) -> anyhow::Result<()> {
        self.read(RECORD_HEADER, out)?;
        let total = u32_at(out, 0)? as usize;
        ensure!(
            total >= RECORD_HEADER,
            "no record here (length {total}): the WAL ends early"
        );
        ensure!(total < 1 << 30, "implausible record length {total}");
        self.read(total - RECORD_HEADER, out)?;
        let stored = u32_at(out, 20)?;
        let crc = crc32c::crc32c_append(crc32c::crc32c(&out[RECORD_HEADER..]), &out[..20]);
        ensure!(crc == stored, "CRC mismatch: the record is damaged");
        Ok(())
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Decoded {
    Switch,
    Other,
}

/// Gathers a record's block references and file-level changes; `record` may be the first
/// part only of the record's `total` bytes (cut at a segment's end): then its block
/// references are read if that part holds them, and a record whose main data matters is an
/// error.
fn decode(record: &[u8], total: usize, changed: &mut ChangedBlocks) -> anyhow::Result<Decoded> {
    let info = byte_at(record, 16)?;
    let rmid = byte_at(record, 17)?;
    let whole = record.len() == total;
    let mut at = RECORD_HEADER;
    let mut data_total = 0usize;
    let mut main_len = 0usize;
    let mut last: Option<RelFileNode> = None;
    while total.saturating_sub(at) > data_total {
        let id = byte_at(record, at)?;
        at += 1;
        match id {
            XLR_BLOCK_ID_DATA_SHORT => {
                main_len = usize::from(byte_at(record, at)?);
                at += 1;
                data_total += main_len;
                break;
            }
            XLR_BLOCK_ID_DATA_LONG => {
                main_len = u32_at(record, at)? as usize;
                at += 4;
                data_total += main_len;
                break;
            }
            XLR_BLOCK_ID_ORIGIN => at += 2,
            XLR_BLOCK_ID_TOPLEVEL_XID => at += 4,
            id if id <= XLR_MAX_BLOCK_ID => {
                let fork_flags = byte_at(record, at)?;
                data_total += usize::from(u16_at(record, at + 1)?);
                at += 3;
                if fork_flags & BKPBLOCK_HAS_IMAGE != 0 {
                    data_total += usize::from(u16_at(record, at)?);
                    let image_info = byte_at(record, at + 4)?;
                    at += 5;
                    if image_info & BKPIMAGE_HAS_HOLE != 0 && image_info & BKPIMAGE_COMPRESSED != 0
                    {
                        at += 2;
                    }
                }
                let node = if fork_flags & BKPBLOCK_SAME_REL == 0 {
                    let node = node_at(record, at)?;
                    at += 12;
                    last = Some(node);
                    node
                } else {
                    last.context("a block reference says 'same relation' before any relation")?
                };
                let block = u32_at(record, at)?;
                at += 4;
                if fork_flags & BKPBLOCK_FORK_MASK == 0 {
                    changed.block(node, block);
                }
            }
            other => bail!("invalid block id {other}"),
        }
    }
    ensure!(
        total.checked_sub(at) == Some(data_total),
        "the record's headers and data do not add up to its length"
    );
    if !whole {
        ensure!(
            ![RM_XLOG_ID, RM_SMGR_ID, RM_DBASE_ID].contains(&rmid),
            "the record's main data is in the next segment"
        );
        return Ok(Decoded::Other);
    }
    let main = &record[record.len() - main_len..];
    match (rmid, info & 0xF0) {
        (RM_XLOG_ID, XLOG_SWITCH) => return Ok(Decoded::Switch),
        (RM_SMGR_ID, XLOG_SMGR_CREATE) => {
            let node = node_at(main, 0)?;
            if u32_at(main, 12)? == 0 {
                changed.from(node, 0);
            }
        }
        (RM_SMGR_ID, XLOG_SMGR_TRUNCATE) => {
            let block = u32_at(main, 0)?;
            let node = node_at(main, 4)?;
            if u32_at(main, 16)? & SMGR_TRUNCATE_HEAP != 0 {
                changed.from(node, block);
            }
        }
        (RM_DBASE_ID, XLOG_DBASE_CREATE_FILE_COPY | XLOG_DBASE_CREATE_WAL_LOG) => {
            let db = u32_at(main, 0)?;
            changed.databases.insert((u32_at(main, 4)?, db));
        }
        (RM_DBASE_ID, XLOG_DBASE_DROP) => {
            let db = u32_at(main, 0)?;
            let count = u32_at(main, 4)? as usize;
            for i in 0..count {
                changed.databases.insert((u32_at(main, 8 + 4 * i)?, db));
            }
        }
        _ => {}
    }
    Ok(Decoded::Other)
}

fn byte_at(bytes: &[u8], at: usize) -> anyhow::Result<u8> {
    bytes
        .get(at)
        .copied()
        .context("the record ends inside a header")
}

fn u16_at(bytes: &[u8], at: usize) -> anyhow::Result<u16> {
    let b = bytes
        .get(at..at + 2)
        .context("the record ends inside a header")?;
    Ok(u16::from_le_bytes([b[0], b[1]]))
}

fn u32_at(bytes: &[u8], at: usize) -> anyhow::Result<u32> {
    let b = bytes
        .get(at..at + 4)
        .context("the record ends inside a header")?;
    Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
}

fn node_at(bytes: &[u8], at: usize) -> anyhow::Result<RelFileNode> {
    Ok(RelFileNode {
        spc: u32_at(bytes, at)?,
        db: u32_at(bytes, at + 4)?,
        rel: u32_at(bytes, at + 8)?,
    })
}

#[cfg(test)]
mod tests;

//! The relation blocks WAL records changed between two positions: what PostgreSQL 17's WAL
//! summaries record, read here from the WAL itself, so that an incremental backup reads only
//! those pages of a changed relation file instead of the whole file.
//!
//! Records are decoded (PostgreSQL 15 and 16's format: page headers, records spanning pages
//! and segments, CRC-32C checked) and their block references gathered by relation: over a
//! range of WAL ([`changed_blocks`]), or per segment ([`summarize_stream`]: what
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

use anyhow::{ensure, Context};
use serde::{Deserialize, Serialize};

mod reader;
mod record;

use reader::{Reader, Segments, Streamed};
pub use reader::{SegmentReader, Unavailable, WAL_PAGE};
use record::{decode, u32_at, Decoded, RECORD_HEADER};

use crate::lsn::Lsn;

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

/// What the records that start in one segment changed: [`summarize_stream`].
#[derive(Debug, Default)]
pub struct SegmentSummary {
    pub changed: ChangedBlocks,
    /// The segment's last record continues in the next one and its block references could
    /// not all be read here: decode it with both segments ([`changed_blocks`] from it).
    pub tail: Option<Lsn>,
}

/// Summarizes the records that start in segment `segno`, read as a stream from its start,
/// up to the one that starts at `until` when given (the segment being written: it is read
/// only that far). The record the segment starts with the rest of belongs to the previous
/// segment's summary; of the last one, which may continue in the next segment, the block
/// references are read when they lie in this segment (they come first), else its start is
/// the summary's `tail`.
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

#[cfg(test)]
mod tests;

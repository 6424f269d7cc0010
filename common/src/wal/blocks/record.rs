//! One WAL record's block references and file-level changes (PostgreSQL 15 and 16's
//! `DecodeXLogRecord` layout).

use anyhow::{bail, ensure, Context};

use super::{ChangedBlocks, RelFileNode};

/// `SizeOfXLogRecord`.
pub(super) const RECORD_HEADER: usize = 24;

pub(super) const XLR_MAX_BLOCK_ID: u8 = 32;
pub(super) const XLR_BLOCK_ID_DATA_SHORT: u8 = 255;
pub(super) const XLR_BLOCK_ID_DATA_LONG: u8 = 254;
pub(super) const XLR_BLOCK_ID_ORIGIN: u8 = 253;
pub(super) const XLR_BLOCK_ID_TOPLEVEL_XID: u8 = 252;
pub(super) const BKPBLOCK_FORK_MASK: u8 = 0x0F;
pub(super) const BKPBLOCK_HAS_IMAGE: u8 = 0x10;
pub(super) const BKPBLOCK_SAME_REL: u8 = 0x80;
pub(super) const BKPIMAGE_HAS_HOLE: u8 = 0x01;
/// PGLZ, LZ4, ZSTD.
pub(super) const BKPIMAGE_COMPRESSED: u8 = 0x04 | 0x08 | 0x10;

pub(super) const RM_XLOG_ID: u8 = 0;
pub(super) const RM_SMGR_ID: u8 = 2;
pub(super) const RM_DBASE_ID: u8 = 4;
pub(super) const XLOG_SWITCH: u8 = 0x40;
pub(super) const XLOG_SMGR_CREATE: u8 = 0x10;
pub(super) const XLOG_SMGR_TRUNCATE: u8 = 0x20;
pub(super) const SMGR_TRUNCATE_HEAP: u32 = 0x0001;
pub(super) const XLOG_DBASE_CREATE_FILE_COPY: u8 = 0x00;
pub(super) const XLOG_DBASE_CREATE_WAL_LOG: u8 = 0x10;
pub(super) const XLOG_DBASE_DROP: u8 = 0x20;

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Decoded {
    Switch,
    Other,
}

/// Gathers a record's block references and file-level changes; `record` may be the first
/// part only of the record's `total` bytes (cut at a segment's end): then its block
/// references are read if that part holds them, and a record whose main data matters is an
/// error.
pub(super) fn decode(
    record: &[u8],
    total: usize,
    changed: &mut ChangedBlocks,
) -> anyhow::Result<Decoded> {
    let info = byte_at(record, 16)?;
    let rmid = byte_at(record, 17)?;
    let main_len = block_references(record, total, changed)?;
    if record.len() != total {
        ensure!(
            ![RM_XLOG_ID, RM_SMGR_ID, RM_DBASE_ID].contains(&rmid),
            "the record's main data is in the next segment"
        );
        return Ok(Decoded::Other);
    }
    file_changes(rmid, info, &record[record.len() - main_len..], changed)
}

/// Adds the main-fork block references of a record (of `total` bytes, `record` its first
/// part or all of it) to `changed`; the length of its main data.
fn block_references(
    record: &[u8],
    total: usize,
    changed: &mut ChangedBlocks,
) -> anyhow::Result<usize> {
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
    Ok(main_len)
}

/// What a whole record's main data says beyond its block references: a segment switch, a
/// relation file created or truncated, a database copied or dropped.
fn file_changes(
    rmid: u8,
    info: u8,
    main: &[u8],
    changed: &mut ChangedBlocks,
) -> anyhow::Result<Decoded> {
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

pub(super) fn u32_at(bytes: &[u8], at: usize) -> anyhow::Result<u32> {
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

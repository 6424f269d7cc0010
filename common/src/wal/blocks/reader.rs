//! WAL pages in LSN order: page headers checked and stepped over, records read whole across
//! pages and segments, their CRC-32C checked.

use std::io::Read;

use anyhow::ensure;

use super::record::RECORD_HEADER;
use crate::lsn::Lsn;

/// WAL page size (`XLOG_BLCKSZ`).
pub const WAL_PAGE: u64 = 8192;

/// `XLOG_PAGE_MAGIC` of the releases whose record format this reads (15, 16).
pub(super) const PAGE_MAGICS: [u16; 2] = [0xD110, 0xD113];
pub(super) const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
pub(super) const XLP_LONG_HEADER: u16 = 0x0002;
pub(super) const SHORT_PAGE_HEADER: u64 = 24;
pub(super) const LONG_PAGE_HEADER: u64 = 40;

/// A segment a [`Reader`] needs is not there (a summary reads one segment only).
#[derive(Debug, thiserror::Error)]
#[error("WAL segment {0:X} is not available")]
pub struct Unavailable(pub u64);

/// Where a [`Reader`] gets WAL pages, in order.
pub(super) trait Segments {
    /// Page `page` of segment `segno` (`Unavailable` when it cannot have it).
    fn page(&mut self, segno: u64, page: u64) -> anyhow::Result<&[u8]>;
}

/// A WAL segment's bytes as a stream (a file, a decompressing reader).
pub type SegmentReader<'a> = Box<dyn Read + 'a>;

/// Segments streamed page by page, as `open(segno)` gives them: the decoding reads in LSN
/// order, so no segment is ever held whole (a 16 MiB buffer costs more in page faults
/// than its decoding).
pub(super) struct Streamed<'a, F> {
    open: F,
    segno: Option<u64>,
    reader: Option<SegmentReader<'a>>,
    /// The page in `buf`, and the next one the stream gives.
    have: Option<u64>,
    next: u64,
    buf: Vec<u8>,
}

impl<'a, F: FnMut(u64) -> anyhow::Result<SegmentReader<'a>>> Streamed<'a, F> {
    pub(super) fn new(open: F) -> Self {
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

/// Reads WAL bytes in LSN order, a page at a time, stepping over page headers.
pub(super) struct Reader<S> {
    pub(super) segments: S,
    pub(super) segment_size: u64,
    /// The next byte's LSN.
    pub(super) pos: u64,
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
    pub(super) fn skip_continuation(&mut self) -> anyhow::Result<()> {
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
    pub(super) fn enter_page(&mut self, continuing: bool) -> anyhow::Result<()> {
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
    pub(super) fn read_record(&mut self, out: &mut Vec<u8>) -> anyhow::Result<()> {
        self.read(RECORD_HEADER, out)?;
        let total = super::record::u32_at(out, 0)? as usize;
        ensure!(
            total >= RECORD_HEADER,
            "no record here (length {total}): the WAL ends early"
        );
        ensure!(total < 1 << 30, "implausible record length {total}");
        self.read(total - RECORD_HEADER, out)?;
        let stored = super::record::u32_at(out, 20)?;
        let crc = crc32c::crc32c_append(crc32c::crc32c(&out[RECORD_HEADER..]), &out[..20]);
        ensure!(crc == stored, "CRC mismatch: the record is damaged");
        Ok(())
    }
}

//! The rows of each table in a custom-format archive, counted as pg_dump writes it.
//!
//! The whole-database dump streams through this process on its way into the set, so its
//! rows are counted there: an inflate of the table data beside the hashing, instead of a
//! second scan of every table on the server (`count(*)`, on the cores pg_dump compresses on).
//! They are the rows the dump holds, so they are the snapshot's by construction.
//!
//! Read here: pg_dump's custom format as PostgreSQL 12 to 16 write it (archive versions 1.14
//! and 1.15), its data plain or gzip-compressed. Anything else is an error; a table whose data
//! is not COPY rows is left out. Either way the caller counts what is missing with `count(*)`.

use std::collections::HashMap;
use std::io::{self, BufReader, Read};

use anyhow::Context;
use flate2::{Decompress, FlushDecompress, Status};

const MAGIC: &[u8] = b"PGDMP";
/// `archCustom` in pg_dump's header.
const CUSTOM_FORMAT: u8 = 1;
/// Block types after the table of contents.
const BLOCK_DATA: u8 = 1;
const BLOCK_BLOBS: u8 = 3;
/// What pg_dump writes after a table's COPY rows: `\.` and two empty lines.
const COPY_END: &[u8] = b"\\.\n\n\n";
/// Lines of [`COPY_END`].
const COPY_END_LINES: u64 = 3;
/// Longest string believed in a table of contents (a function body can be long); data is
/// read in pieces, whatever its chunks' length.
const MAX_STRING: usize = 1 << 30;

/// Rows by (schema, table) as named in the archive.
pub type TableRows = HashMap<(String, String), u64>;

/// Reads a custom-format archive to its end and counts the COPY rows of each table.
pub fn count(input: impl Read) -> anyhow::Result<TableRows> {
    let mut archive = Archive::open(BufReader::with_capacity(256 << 10, input))?;
    let tables = archive.table_data_entries()?;
    let mut rows = TableRows::new();
    let (mut text, mut piece) = (BlockText::default(), vec![0u8; 64 << 10]);
    while let Some(kind) = archive.byte_or_end()? {
        let dump_id = archive.int()?;
        match kind {
            BLOCK_DATA => {
                let lines = archive.data(&mut text, &mut piece)?;
                if let (Some(table), Some(lines)) = (tables.get(&dump_id), lines) {
                    rows.insert(table.clone(), lines);
                }
            }
            BLOCK_BLOBS => {
                while archive.int()? != 0 {
                    archive.skip_data()?;
                }
            }
            other => anyhow::bail!("unknown block type {other} in the archive's data"),
        }
    }
    Ok(rows)
}

/// An archive being read: its header's sizes and compression.
struct Archive<R> {
    input: R,
    int_size: usize,
    offset_size: usize,
    compressed: bool,
}

impl<R: Read> Archive<R> {
    /// Reads the header, up to the table of contents.
    fn open(input: R) -> anyhow::Result<Archive<R>> {
        let mut archive = Archive {
            input,
            int_size: 4,
            offset_size: 8,
            compressed: false,
        };
        let mut head = [0u8; 11];
        archive
            .input
            .read_exact(&mut head)
            .context("no archive header")?;
        let [m0, m1, m2, m3, m4, major, minor, _revision, int_size, offset_size, format] = head;
        anyhow::ensure!([m0, m1, m2, m3, m4] == MAGIC, "not a pg_dump archive");
        anyhow::ensure!(
            major == 1 && (14..=15).contains(&minor),
            "archive version 1.{minor} is not one this counter reads"
        );
        anyhow::ensure!(format == CUSTOM_FORMAT, "not a custom-format archive");
        anyhow::ensure!(
            (1..=8).contains(&int_size) && (1..=8).contains(&offset_size),
            "implausible integer sizes {int_size}/{offset_size}"
        );
        archive.int_size = usize::from(int_size);
        archive.offset_size = usize::from(offset_size);
        archive.compressed = if minor >= 15 {
            match archive.byte()? {
                0 => false,
                1 => true,
                other => anyhow::bail!("compression method {other} is not gzip"),
            }
        } else {
            // A zlib level: 0 none, -1 (the default) or 1 to 9 gzip.
            archive.int()? != 0
        };
        for _ in 0..7 {
            archive.int()?; // the dump's time
        }
        for _ in 0..3 {
            archive.string()?; // database, server and pg_dump versions
        }
        Ok(archive)
    }

    /// Reads the table of contents: the dump ids of the TABLE DATA entries.
    fn table_data_entries(&mut self) -> anyhow::Result<HashMap<i64, (String, String)>> {
        let count = self.int()?;
        let mut tables = HashMap::new();
        for _ in 0..count {
            let dump_id = self.int()?;
            self.int()?; // has a data dumper
            self.string()?; // table oid
            self.string()?; // oid
            let tag = self.string()?;
            let desc = self.string()?;
            self.int()?; // section
            for _ in 0..3 {
                self.string()?; // definition, drop and copy statements
            }
            let namespace = self.string()?;
            for _ in 0..4 {
                self.string()?; // tablespace, access method, owner, "with oids"
            }
            while self.string()?.is_some() {} // dependencies, up to an empty one
            self.byte()?; // data offset: its flag and bytes
            self.skip(self.offset_size)?;
            if desc.as_deref() == Some("TABLE DATA") {
                let (Some(namespace), Some(tag)) = (namespace, tag) else {
                    anyhow::bail!("TABLE DATA entry {dump_id} without a name");
                };
                tables.insert(dump_id, (namespace, tag));
            }
        }
        Ok(tables)
    }

    /// Reads a data block's chunks; the lines of COPY rows it holds (`None`: not COPY rows).
    /// A chunk (a whole row, when not compressed) is read in pieces of `piece`'s length.
    fn data(&mut self, text: &mut BlockText, piece: &mut [u8]) -> anyhow::Result<Option<u64>> {
        text.start(self.compressed);
        while let Some(mut left) = self.chunk_len()? {
            while left > 0 {
                let n = left.min(piece.len());
                self.input
                    .read_exact(&mut piece[..n])
                    .context("the archive ends inside a chunk")?;
                text.feed(&piece[..n])?;
                left -= n;
            }
        }
        text.finish()
    }

    /// Skips a data block's chunks.
    fn skip_data(&mut self) -> anyhow::Result<()> {
        while let Some(len) = self.chunk_len()? {
            self.skip(len)?;
        }
        Ok(())
    }

    /// The length of a data block's next chunk; `None` at the block's end.
    fn chunk_len(&mut self) -> anyhow::Result<Option<usize>> {
        let len = self.int()?;
        anyhow::ensure!(len >= 0, "negative chunk length {len}");
        let len = usize::try_from(len).context("chunk too long")?;
        Ok((len > 0).then_some(len))
    }

    /// pg_dump's integer: a sign byte, then `int_size` bytes, least significant first.
    fn int(&mut self) -> anyhow::Result<i64> {
        let negative = self.byte()? != 0;
        let mut bytes = [0u8; 8];
        self.input
            .read_exact(&mut bytes[..self.int_size])
            .context("the archive ends inside an integer")?;
        let value = i64::try_from(u64::from_le_bytes(bytes)).context("integer out of range")?;
        Ok(if negative { -value } else { value })
    }

    /// pg_dump's string: its length (-1: none), then its bytes.
    fn string(&mut self) -> anyhow::Result<Option<String>> {
        let len = self.int()?;
        if len < 0 {
            return Ok(None);
        }
        let len = usize::try_from(len).context("string too long")?;
        anyhow::ensure!(len <= MAX_STRING, "string of {len} bytes");
        let mut bytes = vec![0u8; len];
        self.input
            .read_exact(&mut bytes)
            .context("the archive ends inside a string")?;
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }

    fn byte(&mut self) -> anyhow::Result<u8> {
        self.byte_or_end()?.context("the archive ends early")
    }

    /// The next byte, `None` at the end of the archive.
    fn byte_or_end(&mut self) -> anyhow::Result<Option<u8>> {
        let mut byte = [0u8; 1];
        match self.input.read_exact(&mut byte) {
            Ok(()) => Ok(Some(byte[0])),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e).context("cannot read the archive"),
        }
    }

    fn skip(&mut self, n: usize) -> anyhow::Result<()> {
        let skipped = io::copy(&mut (&mut self.input).take(n as u64), &mut io::sink())?;
        anyhow::ensure!(skipped == n as u64, "the archive ends early");
        Ok(())
    }
}

/// The text of a data block, inflated when compressed, as its lines.
#[derive(Default)]
struct BlockText {
    lines: Lines,
    /// For a compressed block: one zlib stream over all its chunks.
    inflater: Option<Decompress>,
    inflated: Vec<u8>,
}

impl BlockText {
    fn start(&mut self, compressed: bool) {
        self.lines = Lines::default();
        self.inflater = compressed.then(|| Decompress::new(true));
        self.inflated.resize(256 << 10, 0);
    }

    /// The block's next stored bytes.
    fn feed(&mut self, mut stored: &[u8]) -> anyhow::Result<()> {
        let Some(inflater) = self.inflater.as_mut() else {
            self.lines.add(stored);
            return Ok(());
        };
        while !stored.is_empty() {
            let (before_in, before_out) = (inflater.total_in(), inflater.total_out());
            let status = inflater
                .decompress(stored, &mut self.inflated, FlushDecompress::None)
                .context("the archive's data does not inflate")?;
            let used = (inflater.total_in() - before_in) as usize;
            let made = (inflater.total_out() - before_out) as usize;
            self.lines.add(&self.inflated[..made]);
            stored = &stored[used..];
            if status == Status::StreamEnd {
                anyhow::ensure!(
                    stored.is_empty(),
                    "data after the end of a compressed block"
                );
            } else if used == 0 && made == 0 {
                anyhow::bail!("the archive's data does not inflate (no progress)");
            }
        }
        Ok(())
    }

    /// The block's rows, once all of it was fed.
    fn finish(&mut self) -> anyhow::Result<Option<u64>> {
        if let Some(inflater) = self.inflater.as_mut() {
            // What zlib still holds once the input is all in.
            loop {
                let before_out = inflater.total_out();
                let status = inflater
                    .decompress(&[], &mut self.inflated, FlushDecompress::Finish)
                    .context("the archive's data does not inflate")?;
                let made = (inflater.total_out() - before_out) as usize;
                self.lines.add(&self.inflated[..made]);
                if status == Status::StreamEnd {
                    break;
                }
                anyhow::ensure!(made > 0, "a compressed block ends early");
            }
        }
        Ok(self.lines.rows())
    }
}

/// Newlines of a block's text, and its last bytes.
#[derive(Default)]
struct Lines {
    count: u64,
    tail: Vec<u8>,
}

impl Lines {
    fn add(&mut self, text: &[u8]) {
        self.count += memchr::memchr_iter(b'\n', text).count() as u64;
        self.tail
            .extend_from_slice(&text[text.len().saturating_sub(COPY_END.len())..]);
        let keep = self.tail.len().saturating_sub(COPY_END.len());
        self.tail.drain(..keep);
    }

    /// The rows, when the text is COPY rows (ends as pg_dump ends them).
    fn rows(&self) -> Option<u64> {
        (self.tail == COPY_END).then(|| self.count - COPY_END_LINES)
    }
}

/// Counts the rows of an archive written into its pipe, on a blocking thread.
pub struct Counter {
    task: tokio::task::JoinHandle<anyhow::Result<TableRows>>,
}

impl Counter {
    /// The counter and the pipe to write the archive into; dropping the pipe ends it.
    pub fn start() -> io::Result<(Counter, io::PipeWriter)> {
        let (reader, writer) = io::pipe()?;
        let task = tokio::task::spawn_blocking(move || count(reader));
        Ok((Counter { task }, writer))
    }

    /// The rows, once the pipe is closed; `None` (and why, in the log) when the archive
    /// could not be read, to be counted with `count(*)` instead.
    pub async fn finish(self, what: &str) -> Option<TableRows> {
        let failed = match self.task.await {
            Ok(Ok(rows)) => return Some(rows),
            Ok(Err(e)) => format!("{e:#}"),
            Err(e) => e.to_string(),
        };
        tracing::debug!("the rows of {what} are not counted as it streams ({failed})");
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An archive header of version 1.14 with `compression`, `entries` TOC entries after it.
    fn header(compression: i32) -> Vec<u8> {
        let mut bytes = b"PGDMP".to_vec();
        bytes.extend([1, 14, 0, 4, 8, CUSTOM_FORMAT]);
        int(&mut bytes, compression.into());
        for _ in 0..7 {
            int(&mut bytes, 1);
        }
        for s in ["db", "15.0", "15.0"] {
            string(&mut bytes, Some(s));
        }
        bytes
    }

    fn int(bytes: &mut Vec<u8>, value: i64) {
        bytes.push(u8::from(value < 0));
        bytes.extend_from_slice(&(value.unsigned_abs() as u32).to_le_bytes());
    }

    fn string(bytes: &mut Vec<u8>, s: Option<&str>) {
        match s {
            None => int(bytes, -1),
            Some(s) => {
                int(bytes, s.len() as i64);
                bytes.extend_from_slice(s.as_bytes());
            }
        }
    }

    /// A TOC entry as pg_dump 15 writes it.
    fn entry(bytes: &mut Vec<u8>, dump_id: i64, desc: &str, schema: &str, tag: &str) {
        int(bytes, dump_id);
        int(bytes, 1);
        for s in [Some("1259"), Some("16384"), Some(tag), Some(desc)] {
            string(bytes, s);
        }
        int(bytes, 2);
        for s in [Some(""), Some(""), Some("COPY ...;"), Some(schema)] {
            string(bytes, s);
        }
        for s in [
            Some(""),
            Some("heap"),
            Some("app"),
            Some("false"),
            Some("3"),
            None,
        ] {
            string(bytes, s);
        }
        bytes.push(2);
        bytes.extend_from_slice(&[0; 8]);
    }

    /// A data block of `text` in chunks of `chunk` bytes, compressed or not.
    fn block(bytes: &mut Vec<u8>, dump_id: i64, text: &[u8], compressed: bool, chunk: usize) {
        bytes.push(BLOCK_DATA);
        int(bytes, dump_id);
        let stored = if compressed {
            use std::io::Write;
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
            z.write_all(text).unwrap();
            z.finish().unwrap()
        } else {
            text.to_vec()
        };
        for piece in stored.chunks(chunk) {
            int(bytes, piece.len() as i64);
            bytes.extend_from_slice(piece);
        }
        int(bytes, 0);
    }

    fn archive(compressed: bool, chunk: usize) -> Vec<u8> {
        let mut bytes = header(if compressed { -1 } else { 0 });
        int(&mut bytes, 4);
        entry(&mut bytes, 7, "TABLE", "public", "orders");
        entry(&mut bytes, 8, "TABLE DATA", "public", "orders");
        entry(&mut bytes, 9, "TABLE DATA", "my schema", "empty \"one\"");
        entry(&mut bytes, 10, "BLOBS", "", "BLOBS");
        let rows: Vec<u8> = (0..1000)
            .flat_map(|i| format!("{i}\tline one\\nline two\\\\\n").into_bytes())
            .chain(COPY_END.iter().copied())
            .collect();
        block(&mut bytes, 8, &rows, compressed, chunk);
        block(&mut bytes, 9, COPY_END, compressed, chunk);
        // A blob block: one large object, then the end.
        bytes.push(BLOCK_BLOBS);
        int(&mut bytes, 10);
        int(&mut bytes, 16400);
        int(&mut bytes, 3);
        bytes.extend_from_slice(b"abc");
        int(&mut bytes, 0);
        int(&mut bytes, 0);
        bytes
    }

    #[test]
    fn rows_are_counted_plain_and_compressed_in_any_chunking() {
        for compressed in [false, true] {
            for chunk in [1, 7, 4096, 1 << 20] {
                let rows = count(&archive(compressed, chunk)[..]).unwrap();
                assert_eq!(rows.len(), 2, "{compressed} {chunk}");
                assert_eq!(rows[&("public".into(), "orders".into())], 1000);
                assert_eq!(rows[&("my schema".into(), "empty \"one\"".into())], 0);
            }
        }
    }

    #[test]
    fn a_row_longer_than_a_piece_is_read_through() {
        let mut row = vec![b'x'; 300 << 10];
        row.push(b'\n');
        row.extend_from_slice(COPY_END);
        for compressed in [false, true] {
            let mut bytes = header(i32::from(compressed) * 6);
            int(&mut bytes, 1);
            entry(&mut bytes, 8, "TABLE DATA", "public", "t");
            block(&mut bytes, 8, &row, compressed, 1 << 20);
            let rows = count(&bytes[..]).unwrap();
            assert_eq!(rows[&("public".into(), "t".into())], 1, "{compressed}");
        }
    }

    #[test]
    fn data_that_is_not_copy_rows_is_left_out() {
        let mut bytes = header(0);
        int(&mut bytes, 1);
        entry(&mut bytes, 8, "TABLE DATA", "public", "t");
        block(&mut bytes, 8, b"INSERT INTO t VALUES (1);\n", false, 64);
        assert!(count(&bytes[..]).unwrap().is_empty());
    }

    #[test]
    fn a_damaged_or_foreign_archive_is_an_error() {
        let whole = archive(true, 4096);
        for cut in [3, 20, 200, whole.len() - 9, whole.len() - 1] {
            assert!(count(&whole[..cut]).is_err(), "cut at {cut}");
        }
        let mut other_version = whole.clone();
        other_version[6] = 16;
        let e = count(&other_version[..]).unwrap_err();
        assert!(format!("{e:#}").contains("version 1.16"), "{e:#}");
        assert!(count(&b"-- plain SQL\n"[..]).is_err());
        let mut flipped = whole;
        let at = flipped.len() - 40;
        flipped[at] ^= 0xff;
        assert!(count(&flipped[..]).is_err());
    }
}

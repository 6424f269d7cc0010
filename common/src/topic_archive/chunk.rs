//! Chunk framing: the file header, chunk headers with checksums and sequence numbers, and the
//! streaming writer and reader of a whole archive.

use std::io::{self, Read, Write};

use super::meta::{StreamEnd, TopicMeta};
use super::record::RecordsChunk;
use super::{ArchiveError, FORMAT_VERSION, MAGIC, MAX_CHUNK_BYTES};

const CHUNK_MAGIC: &[u8; 4] = b"CHNK";
const FILE_HEADER_LEN: usize = 16;
const CHUNK_HEADER_LEN: usize = 32;

/// What a chunk holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkKind {
    /// JSON [`TopicMeta`]; always the first chunk.
    Meta,
    /// Records of one partition.
    Records,
    /// JSON [`StreamEnd`]; always the last chunk.
    End,
}

impl ChunkKind {
    fn code(self) -> u8 {
        match self {
            ChunkKind::Meta => 1,
            ChunkKind::Records => 2,
            ChunkKind::End => 3,
        }
    }

    fn from_code(code: u8) -> Option<ChunkKind> {
        match code {
            1 => Some(ChunkKind::Meta),
            2 => Some(ChunkKind::Records),
            3 => Some(ChunkKind::End),
            _ => None,
        }
    }
}

/// How a chunk's payload is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Codec {
    /// Stored as is.
    None,
    /// One Zstandard frame.
    #[default]
    Zstd,
}

impl Codec {
    fn code(self) -> u8 {
        match self {
            Codec::None => 0,
            Codec::Zstd => 1,
        }
    }

    fn from_code(code: u8) -> Option<Codec> {
        match code {
            0 => Some(Codec::None),
            1 => Some(Codec::Zstd),
            _ => None,
        }
    }
}

/// A compressed, checksummed chunk payload, ready to be framed by an [`ArchiveWriter`]. Built
/// where the records are read, so compression runs in parallel across partitions.
#[derive(Debug, Clone)]
pub struct EncodedChunk {
    kind: ChunkKind,
    codec: Codec,
    raw_len: u32,
    crc: u32,
    payload: Vec<u8>,
}

impl EncodedChunk {
    /// Compresses `raw` with `codec` at `level` and checksums the stored bytes.
    pub fn encode(kind: ChunkKind, codec: Codec, level: i32, raw: &[u8]) -> io::Result<Self> {
        if raw.len() > MAX_CHUNK_BYTES as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a chunk of {} bytes exceeds the format limit of {MAX_CHUNK_BYTES}",
                    raw.len()
                ),
            ));
        }
        let payload = match codec {
            Codec::None => raw.to_vec(),
            Codec::Zstd => zstd::bulk::compress(raw, level)?,
        };
        Ok(EncodedChunk {
            kind,
            codec,
            raw_len: raw.len() as u32,
            crc: crc32c::crc32c(&payload),
            payload,
        })
    }

    pub fn kind(&self) -> ChunkKind {
        self.kind
    }

    /// Bytes before compression.
    pub fn raw_len(&self) -> u32 {
        self.raw_len
    }

    /// Bytes as stored (without the chunk header).
    pub fn stored_len(&self) -> usize {
        self.payload.len()
    }

    /// Checks and decompresses the payload; `chunk` and `position` name it in errors.
    pub fn decode_payload(&self, chunk: u64, position: u64) -> Result<Vec<u8>, ArchiveError> {
        let corrupt = |detail: String| ArchiveError::Corrupt {
            chunk,
            position,
            detail,
        };
        let computed = crc32c::crc32c(&self.payload);
        if computed != self.crc {
            return Err(corrupt(format!(
                "payload checksum mismatch (stored crc32c {:08x}, computed {computed:08x})",
                self.crc
            )));
        }
        let raw = match self.codec {
            Codec::None => self.payload.clone(),
            Codec::Zstd => self
                .unzstd()
                .map_err(|e| corrupt(format!("cannot decompress: {e}")))?,
        };
        if raw.len() != self.raw_len as usize {
            return Err(corrupt(format!(
                "payload decompresses to {} bytes, header says {}",
                raw.len(),
                self.raw_len
            )));
        }
        Ok(raw)
    }
}

impl EncodedChunk {
    /// Decompresses a zstd payload, reserving `raw_len` bytes up front only when the frame
    /// states that size too: a damaged header cannot make it reserve what is not there.
    fn unzstd(&self) -> io::Result<Vec<u8>> {
        match zstd::zstd_safe::get_frame_content_size(&self.payload) {
            Ok(Some(n)) if n == u64::from(self.raw_len) => {
                zstd::bulk::decompress(&self.payload, self.raw_len as usize)
            }
            Ok(Some(n)) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the zstd frame holds {n} bytes"),
            )),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a zstd frame",
            )),
            // A frame that does not state its size: the output grows as it is produced.
            Ok(None) => {
                let mut raw = Vec::new();
                zstd::stream::read::Decoder::new(&self.payload[..])?
                    .take(u64::from(self.raw_len) + 1)
                    .read_to_end(&mut raw)?;
                Ok(raw)
            }
        }
    }
}

fn json_chunk<T: serde::Serialize>(kind: ChunkKind, value: &T) -> io::Result<EncodedChunk> {
    let raw = serde_json::to_vec(value).map_err(io::Error::other)?;
    EncodedChunk::encode(kind, Codec::Zstd, 3, &raw)
}

/// Writes an archive stream: header and META on creation, RECORDS chunks as they come, END on
/// [`ArchiveWriter::finish`]. Chunks of different partitions may interleave in any order, but
/// the chunks of one partition must come in offset order.
#[derive(Debug)]
pub struct ArchiveWriter<W: Write> {
    inner: W,
    next_sequence: u64,
    position: u64,
}

impl<W: Write> ArchiveWriter<W> {
    /// Starts a stream with its file header and META chunk.
    pub fn new(mut inner: W, meta: &TopicMeta) -> io::Result<Self> {
        let mut header = [0u8; FILE_HEADER_LEN];
        header[..8].copy_from_slice(MAGIC);
        header[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        header[10..12].copy_from_slice(&0u16.to_le_bytes());
        let crc = crc32c::crc32c(&header[..12]);
        header[12..16].copy_from_slice(&crc.to_le_bytes());
        inner.write_all(&header)?;
        let mut writer = ArchiveWriter {
            inner,
            next_sequence: 0,
            position: FILE_HEADER_LEN as u64,
        };
        writer.frame(&json_chunk(ChunkKind::Meta, meta)?)?;
        Ok(writer)
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Chunks written so far, META included.
    pub fn chunks(&self) -> u64 {
        self.next_sequence
    }

    /// Appends a RECORDS chunk.
    pub fn write_chunk(&mut self, chunk: &EncodedChunk) -> io::Result<()> {
        if chunk.kind != ChunkKind::Records {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "only RECORDS chunks can be appended; META and END are written by the writer",
            ));
        }
        self.frame(chunk)
    }

    fn frame(&mut self, chunk: &EncodedChunk) -> io::Result<()> {
        let mut header = [0u8; CHUNK_HEADER_LEN];
        header[..4].copy_from_slice(CHUNK_MAGIC);
        header[4] = chunk.kind.code();
        header[5] = chunk.codec.code();
        header[8..16].copy_from_slice(&self.next_sequence.to_le_bytes());
        header[16..20].copy_from_slice(&(chunk.payload.len() as u32).to_le_bytes());
        header[20..24].copy_from_slice(&chunk.raw_len.to_le_bytes());
        header[24..28].copy_from_slice(&chunk.crc.to_le_bytes());
        let crc = crc32c::crc32c(&header[..28]);
        header[28..32].copy_from_slice(&crc.to_le_bytes());
        self.inner.write_all(&header)?;
        self.inner.write_all(&chunk.payload)?;
        self.next_sequence += 1;
        self.position += (CHUNK_HEADER_LEN + chunk.payload.len()) as u64;
        Ok(())
    }

    /// Writes the END chunk and flushes; returns the inner writer. A stream is complete only
    /// after this.
    pub fn finish(mut self, end: &StreamEnd) -> io::Result<W> {
        self.frame(&json_chunk(ChunkKind::End, end)?)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

/// A chunk read back from a stream.
#[derive(Debug)]
pub enum Chunk {
    Records(RecordsChunk),
    End(StreamEnd),
}

/// Reads an archive stream chunk by chunk, checking every checksum, the sequence numbers and
/// the END summary; nothing is trusted before it is verified.
#[derive(Debug)]
pub struct ArchiveReader<R: Read> {
    inner: R,
    meta: TopicMeta,
    next_sequence: u64,
    position: u64,
    records_seen: u64,
    records_per_partition: std::collections::BTreeMap<i32, u64>,
    end: Option<StreamEnd>,
}

/// Reads up to `buf.len()` bytes; returns how many were read (less only at end of input).
fn read_full<R: Read>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

impl<R: Read> ArchiveReader<R> {
    /// Checks the file header and reads the META chunk.
    pub fn open(mut inner: R) -> Result<Self, ArchiveError> {
        let mut header = [0u8; FILE_HEADER_LEN];
        let got = read_full(&mut inner, &mut header)?;
        if got == 0 {
            return Err(ArchiveError::Empty);
        }
        if got < 8 || &header[..8] != MAGIC {
            return Err(ArchiveError::BadMagic);
        }
        if got < FILE_HEADER_LEN {
            return Err(ArchiveError::MissingEnd { last_chunk: -1 });
        }
        let crc = u32::from_le_bytes(header[12..16].try_into().expect("4 bytes"));
        if crc32c::crc32c(&header[..12]) != crc {
            return Err(ArchiveError::HeaderCorrupt);
        }
        let version = u16::from_le_bytes([header[8], header[9]]);
        if version > FORMAT_VERSION {
            return Err(ArchiveError::UnsupportedVersion { found: version });
        }
        let mut reader = ArchiveReader {
            inner,
            meta: TopicMeta::default(),
            next_sequence: 0,
            position: FILE_HEADER_LEN as u64,
            records_seen: 0,
            records_per_partition: Default::default(),
            end: None,
        };
        let (sequence, position, chunk) = reader
            .read_frame()?
            .ok_or(ArchiveError::MissingEnd { last_chunk: -1 })?;
        if chunk.kind != ChunkKind::Meta {
            return Err(ArchiveError::Corrupt {
                chunk: sequence,
                position,
                detail: "the first chunk is not the META chunk".into(),
            });
        }
        let raw = chunk.decode_payload(sequence, position)?;
        reader.meta = serde_json::from_slice(&raw).map_err(|e| ArchiveError::Corrupt {
            chunk: sequence,
            position,
            detail: format!("META is not valid: {e}"),
        })?;
        Ok(reader)
    }

    /// The topic description from the META chunk.
    pub fn meta(&self) -> &TopicMeta {
        &self.meta
    }

    /// The END summary, once the whole stream was read.
    pub fn end(&self) -> Option<&StreamEnd> {
        self.end.as_ref()
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Reads one frame; None at a clean end of input between chunks.
    fn read_frame(&mut self) -> Result<Option<(u64, u64, EncodedChunk)>, ArchiveError> {
        let sequence = self.next_sequence;
        let position = self.position;
        let truncated = |detail: String| ArchiveError::Truncated {
            chunk: sequence,
            position,
            detail,
        };
        let corrupt = |detail: String| ArchiveError::Corrupt {
            chunk: sequence,
            position,
            detail,
        };
        let mut header = [0u8; CHUNK_HEADER_LEN];
        let got = read_full(&mut self.inner, &mut header)?;
        if got == 0 {
            return Ok(None);
        }
        if got < CHUNK_HEADER_LEN {
            return Err(truncated(format!(
                "only {got} of {CHUNK_HEADER_LEN} header bytes present"
            )));
        }
        let field = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4"));
        if &header[..4] != CHUNK_MAGIC {
            return Err(corrupt("bad chunk magic".into()));
        }
        if crc32c::crc32c(&header[..28]) != field(28) {
            return Err(corrupt("header checksum mismatch".into()));
        }
        let found_sequence = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
        if found_sequence != sequence {
            return Err(corrupt(format!(
                "sequence number {found_sequence} where {sequence} was expected (a chunk is missing or repeated)"
            )));
        }
        let kind = ChunkKind::from_code(header[4])
            .ok_or_else(|| corrupt(format!("unknown chunk kind {}", header[4])))?;
        let codec = Codec::from_code(header[5])
            .ok_or_else(|| corrupt(format!("unknown codec {}", header[5])))?;
        let stored_len = field(16);
        let raw_len = field(20);
        if stored_len > MAX_CHUNK_BYTES || raw_len > MAX_CHUNK_BYTES {
            return Err(corrupt(format!(
                "implausible length (stored {stored_len}, raw {raw_len} bytes)"
            )));
        }
        // Grown as the bytes arrive: a length claiming more than the input holds costs no
        // more memory than the input.
        let mut payload = Vec::with_capacity((stored_len as usize).min(64 << 10));
        let got = (&mut self.inner)
            .take(u64::from(stored_len))
            .read_to_end(&mut payload)?;
        if got < stored_len as usize {
            return Err(truncated(format!(
                "only {got} of {stored_len} payload bytes present"
            )));
        }
        self.next_sequence += 1;
        self.position += (CHUNK_HEADER_LEN + payload.len()) as u64;
        Ok(Some((
            sequence,
            position,
            EncodedChunk {
                kind,
                codec,
                raw_len,
                crc: field(24),
                payload,
            },
        )))
    }

    /// The next RECORDS chunk, or None once the END chunk was read and checked.
    pub fn next_records(&mut self) -> Result<Option<RecordsChunk>, ArchiveError> {
        match self.next_chunk()? {
            Some(Chunk::Records(records)) => Ok(Some(records)),
            Some(Chunk::End(_)) | None => Ok(None),
        }
    }

    /// The next chunk after META; None after END.
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>, ArchiveError> {
        if self.end.is_some() {
            return Ok(None);
        }
        let Some((sequence, position, chunk)) = self.read_frame()? else {
            return Err(ArchiveError::MissingEnd {
                last_chunk: self.next_sequence as i64 - 1,
            });
        };
        let corrupt = |detail: String| ArchiveError::Corrupt {
            chunk: sequence,
            position,
            detail,
        };
        let raw = chunk.decode_payload(sequence, position)?;
        match chunk.kind {
            ChunkKind::Meta => Err(corrupt("a second META chunk".into())),
            ChunkKind::Records => {
                let records = RecordsChunk::parse(raw).map_err(|e| corrupt(e.to_string()))?;
                self.records_seen += u64::from(records.len());
                *self
                    .records_per_partition
                    .entry(records.partition())
                    .or_default() += u64::from(records.len());
                Ok(Some(Chunk::Records(records)))
            }
            ChunkKind::End => {
                let end: StreamEnd = serde_json::from_slice(&raw)
                    .map_err(|e| corrupt(format!("END is not valid: {e}")))?;
                self.check_end(&end).map_err(|e| corrupt(e.to_string()))?;
                let mut probe = [0u8; 1];
                if read_full(&mut self.inner, &mut probe)? != 0 {
                    return Err(corrupt("data after the END chunk".into()));
                }
                self.end = Some(end.clone());
                Ok(Some(Chunk::End(end)))
            }
        }
    }

    fn check_end(&self, end: &StreamEnd) -> Result<(), EndMismatch> {
        // META and END themselves are not RECORDS chunks.
        let records_chunks = self.next_sequence.saturating_sub(2);
        if end.chunks != records_chunks {
            return Err(EndMismatch::Chunks {
                listed: end.chunks,
                held: records_chunks,
            });
        }
        if end.records != self.records_seen {
            return Err(EndMismatch::Records {
                listed: end.records,
                held: self.records_seen,
            });
        }
        for partition in &end.partitions {
            let seen = self
                .records_per_partition
                .get(&partition.partition)
                .copied()
                .unwrap_or(0);
            if seen != partition.records {
                return Err(EndMismatch::PartitionRecords {
                    partition: partition.partition,
                    listed: partition.records,
                    held: seen,
                });
            }
        }
        Ok(())
    }
}

/// An END chunk whose totals disagree with the stream it closes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum EndMismatch {
    #[error("END lists {listed} record chunks, the stream holds {held}")]
    Chunks { listed: u64, held: u64 },
    #[error("END lists {listed} records, the stream holds {held}")]
    Records { listed: u64, held: u64 },
    #[error("END lists {listed} records for partition {partition}, the stream holds {held}")]
    PartitionRecords {
        partition: i32,
        listed: u64,
        held: u64,
    },
}

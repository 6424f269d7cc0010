//! Records inside a RECORDS chunk: a compact binary layout that keeps null apart from empty
//! for keys, values and header values, header order and duplicates, and the timestamp type.
//!
//! ```text
//! payload = partition i32 | count u32 | record{count}
//! record  = offset i64 | timestamp_type u8 | timestamp i64 | key nbytes | value nbytes
//!           | header_count u32 | (header_key bytes | header_value nbytes){header_count}
//! nbytes  = length i32 (-1 = null) | bytes        bytes = length u32 | bytes
//! ```
//!
//! All integers are little-endian. Decoding borrows from the chunk's buffer: no copy per record.

use std::io;

use super::chunk::{ChunkKind, Codec, EncodedChunk};

/// How the broker set a record's timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestampType {
    /// The record has no timestamp (old message format).
    NotAvailable,
    /// Set by the producer.
    CreateTime,
    /// Set by the broker when it appended the record.
    LogAppendTime,
}

impl TimestampType {
    fn code(self) -> u8 {
        match self {
            TimestampType::NotAvailable => 0,
            TimestampType::CreateTime => 1,
            TimestampType::LogAppendTime => 2,
        }
    }

    fn from_code(code: u8) -> Option<TimestampType> {
        match code {
            0 => Some(TimestampType::NotAvailable),
            1 => Some(TimestampType::CreateTime),
            2 => Some(TimestampType::LogAppendTime),
            _ => None,
        }
    }
}

/// Collects records of one partition into the raw payload of a RECORDS chunk.
#[derive(Debug)]
pub struct RecordsChunkBuilder {
    partition: i32,
    buf: Vec<u8>,
    count: u32,
    target_bytes: usize,
}

const PAYLOAD_HEAD: usize = 8;

impl RecordsChunkBuilder {
    /// A builder for `partition` whose chunks close at about `target_bytes` of payload.
    pub fn new(partition: i32, target_bytes: usize) -> RecordsChunkBuilder {
        let mut builder = RecordsChunkBuilder {
            partition,
            buf: Vec::with_capacity(target_bytes.min(super::DEFAULT_CHUNK_BYTES) + 4096),
            count: 0,
            target_bytes: target_bytes.max(1),
        };
        builder.reset();
        builder
    }

    fn reset(&mut self) {
        self.buf.clear();
        self.buf.extend_from_slice(&self.partition.to_le_bytes());
        self.buf.extend_from_slice(&0u32.to_le_bytes());
        self.count = 0;
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// Records collected since the last seal.
    pub fn len(&self) -> u32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// True when the payload reached the target size and should be sealed.
    pub fn is_full(&self) -> bool {
        self.buf.len() >= self.target_bytes
    }

    /// Appends one record. Headers keep the order (and duplicates) of the iterator.
    pub fn push<'h>(
        &mut self,
        offset: i64,
        timestamp_type: TimestampType,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl IntoIterator<Item = (&'h [u8], Option<&'h [u8]>)>,
    ) {
        let buf = &mut self.buf;
        buf.extend_from_slice(&offset.to_le_bytes());
        buf.push(timestamp_type.code());
        buf.extend_from_slice(&timestamp.to_le_bytes());
        put_nullable(buf, key);
        put_nullable(buf, value);
        let count_at = buf.len();
        buf.extend_from_slice(&0u32.to_le_bytes());
        let mut header_count = 0u32;
        for (name, value) in headers {
            buf.extend_from_slice(&(name.len() as u32).to_le_bytes());
            buf.extend_from_slice(name);
            put_nullable(buf, value);
            header_count += 1;
        }
        buf[count_at..count_at + 4].copy_from_slice(&header_count.to_le_bytes());
        self.count += 1;
    }

    /// Appends a copy of a decoded record.
    pub fn push_view(&mut self, record: &RecordView<'_>) {
        self.push(
            record.offset,
            record.timestamp_type,
            record.timestamp,
            record.key,
            record.value,
            record.headers().map(|h| (h.key, h.value)),
        );
    }

    /// Compresses and checksums the collected records into a chunk and starts a new one.
    pub fn seal(&mut self, codec: Codec, level: i32) -> io::Result<EncodedChunk> {
        let count = self.count;
        self.buf[4..8].copy_from_slice(&count.to_le_bytes());
        let chunk = EncodedChunk::encode(ChunkKind::Records, codec, level, &self.buf)?;
        self.reset();
        Ok(chunk)
    }
}

fn put_nullable(buf: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => buf.extend_from_slice(&(-1i32).to_le_bytes()),
        Some(b) => {
            buf.extend_from_slice(&(b.len() as i32).to_le_bytes());
            buf.extend_from_slice(b);
        }
    }
}

/// The decoded payload of a RECORDS chunk, validated when parsed.
#[derive(Debug, Clone)]
pub struct RecordsChunk {
    partition: i32,
    count: u32,
    data: Vec<u8>,
}

/// One record, borrowed from its chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub offset: i64,
    pub timestamp_type: TimestampType,
    /// Milliseconds since the Unix epoch (-1 when not available).
    pub timestamp: i64,
    /// None is a null key, distinct from an empty one.
    pub key: Option<&'a [u8]>,
    /// None is a null value (a tombstone).
    pub value: Option<&'a [u8]>,
    header_count: u32,
    headers_raw: &'a [u8],
}

/// One record header, borrowed from its chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderView<'a> {
    pub key: &'a [u8],
    /// None is a null header value, distinct from an empty one.
    pub value: Option<&'a [u8]>,
}

impl<'a> RecordView<'a> {
    pub fn header_count(&self) -> u32 {
        self.header_count
    }

    /// The headers in their original order, duplicates included.
    pub fn headers(&self) -> impl Iterator<Item = HeaderView<'a>> + 'a {
        let mut cursor = Cursor {
            data: self.headers_raw,
            pos: 0,
        };
        (0..self.header_count).map_while(move |_| {
            let key = cursor.bytes().ok()?;
            let value = cursor.nullable().ok()?;
            Some(HeaderView { key, value })
        })
    }
}

/// Why a RECORDS payload does not decode; the archive reader reports it as a corrupt chunk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record data ends early (need {need} bytes at payload byte {at}, have {have})")]
    EndsEarly { need: usize, at: usize, have: usize },
    #[error("invalid length {0}")]
    InvalidLength(i32),
    #[error("unknown timestamp type {0}")]
    UnknownTimestampType(u8),
    /// The cause is shown in the message and not chained as a source, so an error chain
    /// (`{:#}`) says it once.
    #[error("record {index}: {error}")]
    InRecord { index: u32, error: Box<RecordError> },
    #[error("record {index}: offset {offset} does not follow {previous}")]
    OffsetOrder {
        index: u32,
        offset: i64,
        previous: i64,
    },
    #[error("{stray} stray bytes after {count} records")]
    StrayBytes { stray: usize, count: u32 },
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        match end {
            Some(end) => {
                let slice = &self.data[self.pos..end];
                self.pos = end;
                Ok(slice)
            }
            None => Err(RecordError::EndsEarly {
                need: n,
                at: self.pos,
                have: self.data.len() - self.pos,
            }),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn i64(&mut self) -> Result<i64, RecordError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, RecordError> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, RecordError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn bytes(&mut self) -> Result<&'a [u8], RecordError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn nullable(&mut self) -> Result<Option<&'a [u8]>, RecordError> {
        match self.i32()? {
            -1 => Ok(None),
            len if len >= 0 => self.take(len as usize).map(Some),
            len => Err(RecordError::InvalidLength(len)),
        }
    }

    fn record(&mut self) -> Result<RecordView<'a>, RecordError> {
        let offset = self.i64()?;
        let code = self.array::<1>()?[0];
        let timestamp_type =
            TimestampType::from_code(code).ok_or(RecordError::UnknownTimestampType(code))?;
        let timestamp = self.i64()?;
        let key = self.nullable()?;
        let value = self.nullable()?;
        let header_count = self.u32()?;
        let start = self.pos;
        for _ in 0..header_count {
            self.bytes()?;
            self.nullable()?;
        }
        Ok(RecordView {
            offset,
            timestamp_type,
            timestamp,
            key,
            value,
            header_count,
            headers_raw: &self.data[start..self.pos],
        })
    }
}

impl RecordsChunk {
    /// Parses and validates a raw RECORDS payload; the error says what is wrong.
    pub fn parse(data: Vec<u8>) -> Result<RecordsChunk, RecordError> {
        let mut cursor = Cursor {
            data: &data,
            pos: 0,
        };
        let partition = cursor.i32()?;
        let count = cursor.u32()?;
        let mut previous: Option<i64> = None;
        for index in 0..count {
            let record = cursor.record().map_err(|error| RecordError::InRecord {
                index,
                error: Box::new(error),
            })?;
            if let Some(previous) = previous.filter(|&p| record.offset <= p) {
                return Err(RecordError::OffsetOrder {
                    index,
                    offset: record.offset,
                    previous,
                });
            }
            previous = Some(record.offset);
        }
        if cursor.pos != data.len() {
            return Err(RecordError::StrayBytes {
                stray: data.len() - cursor.pos,
                count,
            });
        }
        Ok(RecordsChunk {
            partition,
            count,
            data,
        })
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }

    pub fn len(&self) -> u32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The records in offset order.
    pub fn iter(&self) -> impl Iterator<Item = RecordView<'_>> + '_ {
        let mut cursor = Cursor {
            data: &self.data,
            pos: PAYLOAD_HEAD,
        };
        // `parse` validated every record, so decoding cannot fail here.
        (0..self.count).map_while(move |_| cursor.record().ok())
    }

    /// The offset of the first and last record.
    pub fn offset_range(&self) -> Option<(i64, i64)> {
        let first = self.iter().next()?.offset;
        let last = self.iter().last()?.offset;
        Some((first, last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keep_nulls_empties_headers_and_timestamp_types() {
        let mut builder = RecordsChunkBuilder::new(2, 1 << 20);
        builder.push(
            5,
            TimestampType::CreateTime,
            1_000,
            None,
            Some(b""),
            [
                (b"h".as_slice(), None),
                (b"h".as_slice(), Some(b"".as_slice())),
                (b"a".as_slice(), Some(b"x".as_slice())),
            ],
        );
        builder.push(9, TimestampType::LogAppendTime, -5, Some(b""), None, []);
        let chunk = builder.seal(Codec::None, 0).unwrap();
        assert!(builder.is_empty());
        let parsed = RecordsChunk::parse(chunk.decode_payload(0, 0).unwrap()).unwrap();
        assert_eq!(parsed.partition(), 2);
        let records: Vec<_> = parsed.iter().collect();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].key, None);
        assert_eq!(records[0].value, Some(b"".as_slice()));
        let headers: Vec<_> = records[0].headers().collect();
        assert_eq!(headers.len(), 3);
        assert_eq!((headers[0].key, headers[0].value), (b"h".as_slice(), None));
        assert_eq!(headers[1].value, Some(b"".as_slice()));
        assert_eq!(headers[2].value, Some(b"x".as_slice()));
        assert_eq!(records[1].timestamp_type, TimestampType::LogAppendTime);
        assert_eq!(records[1].timestamp, -5);
        assert_eq!(records[1].key, Some(b"".as_slice()));
        assert_eq!(records[1].value, None);
        assert_eq!(parsed.offset_range(), Some((5, 9)));
    }

    #[test]
    fn damaged_payload_is_refused() {
        let mut builder = RecordsChunkBuilder::new(0, 1 << 20);
        builder.push(1, TimestampType::CreateTime, 1, Some(b"k"), Some(b"v"), []);
        let chunk = builder.seal(Codec::None, 0).unwrap();
        let mut raw = chunk.decode_payload(0, 0).unwrap();
        raw.truncate(raw.len() - 1);
        assert!(RecordsChunk::parse(raw)
            .unwrap_err()
            .to_string()
            .contains("record 0"));
    }
}

//! The Kafka topic archive: a versioned stream of compressed, checksummed chunks holding one
//! topic's records with every field Kafka keeps, readable without a broker.
//!
//! Written by `kafka-topic-backup`, read by `kafka-replay` and `validate-backups`. The byte
//! layout is specified in `kafka-topic-backup/FORMAT.md`; in short:
//!
//! ```text
//! stream  = file-header chunk*          (META first, RECORDS..., END last)
//! header  = "PBKTOPIC" | version u16 | flags u16 | crc32c u32
//! chunk   = "CHNK" | kind u8 | codec u8 | 0 u16 | sequence u64 | stored_len u32 | raw_len u32
//!           | payload crc32c u32 | header crc32c u32 | payload
//! ```
//!
//! A stream without its END chunk is truncated and refused; so is any chunk whose checksum,
//! sequence number or length is wrong, with an error naming the chunk.

mod chunk;
mod meta;
mod record;

pub use chunk::{ArchiveReader, ArchiveWriter, Chunk, ChunkKind, Codec, EncodedChunk};
pub use meta::{
    ConfigEntry, GroupOffsets, GroupPartitionOffset, KafkaSetDetails, OffsetGap, PartitionCut,
    PartitionEnd, PartitionRange, SetPartition, SetTopic, StreamEnd, TopicCut, TopicMeta,
    ARCHIVE_EXTENSION, PRIVATE_DETAILS,
};
pub use record::{
    HeaderView, RecordError, RecordView, RecordsChunk, RecordsChunkBuilder, TimestampType,
};

#[cfg(test)]
mod tests;

/// The first bytes of every archive stream.
pub const MAGIC: &[u8; 8] = b"PBKTOPIC";
/// The format version this code writes; readers refuse newer versions.
pub const FORMAT_VERSION: u16 = 1;
/// Chunks larger than this (raw or stored) are refused as corrupt, which bounds the memory a
/// damaged or hostile archive can make a reader allocate.
pub const MAX_CHUNK_BYTES: u32 = 256 << 20;
/// The record payload size at which writers close a chunk (the last record may overshoot).
pub const DEFAULT_CHUNK_BYTES: usize = 1 << 20;

/// Why an archive cannot be read. Every variant about a chunk names it by sequence number and
/// byte position so an operator can tell which part of which file is damaged.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("not a topic archive (bad magic at byte 0); is this the right file?")]
    BadMagic,
    #[error("no archive: the input is empty (in a pipeline: did the command before it fail?)")]
    Empty,
    #[error("archive header is corrupted (checksum mismatch)")]
    HeaderCorrupt,
    #[error(
        "archive format version {found} is newer than this tool reads ({FORMAT_VERSION}); upgrade the tools"
    )]
    UnsupportedVersion { found: u16 },
    #[error("archive chunk {chunk} (at byte {position}) is truncated: {detail}")]
    Truncated {
        chunk: u64,
        position: u64,
        detail: String,
    },
    #[error("archive chunk {chunk} (at byte {position}) is corrupted: {detail}")]
    Corrupt {
        chunk: u64,
        position: u64,
        detail: String,
    },
    #[error(
        "archive is truncated: it ends after chunk {last_chunk} without its END chunk (an interrupted backup or a cut copy)"
    )]
    MissingEnd { last_chunk: i64 },
    /// The cause is shown in the message and not chained as a source, so an error chain
    /// (`{:#}`) says it once.
    #[error("reading the archive failed: {0}")]
    Io(std::io::Error),
}

impl From<std::io::Error> for ArchiveError {
    fn from(error: std::io::Error) -> ArchiveError {
        ArchiveError::Io(error)
    }
}

impl ArchiveError {
    /// The sequence number of the damaged chunk, when the error is about one.
    pub fn chunk(&self) -> Option<u64> {
        match self {
            ArchiveError::Truncated { chunk, .. } | ArchiveError::Corrupt { chunk, .. } => {
                Some(*chunk)
            }
            _ => None,
        }
    }
}

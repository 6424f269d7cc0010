//! Byte sizes (parsed and shown by `common::size`) and WAL distances.

use common::lsn::Lsn;

pub use common::size::{human_bytes as human, parse_bytes as parse_size};

/// Bytes of WAL from `from` to `to`, zero when `to` is not after `from`.
pub fn wal_bytes(from: Lsn, to: Lsn) -> u64 {
    to.0.saturating_sub(from.0)
}

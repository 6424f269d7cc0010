//! Damaged copies of valid stored bytes, for the property tests of every reader: random byte
//! flips, inserted and deleted ranges, overwritten length fields, truncation and splicing (two
//! valid inputs cut and joined), and a runner that fails a case that panics or does not
//! finish in time.
//!
//! The number of cases comes from `PROPTEST_CASES` (default [`DEFAULT_CASES`]), so the same
//! tests are the quick tier in `cargo test` and the full run (`PROPTEST_CASES=100000`).

use std::sync::mpsc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::Config;

/// Cases per reader when `PROPTEST_CASES` is not set: seconds per reader in a debug build.
pub const DEFAULT_CASES: u32 = 512;

/// How long one reader may take on one small input before the case counts as a hang.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The proptest configuration of the damaged-input tier: `PROPTEST_CASES` cases (default
/// [`DEFAULT_CASES`]), failures shrunk and printed but not saved next to the sources (the
/// regressions worth keeping are written as plain tests).
pub fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2048,
        ..Config::default()
    }
}

/// A position picked relative to a length: `Pos(0)` is the start, `Pos(u64::MAX)` the last.
#[derive(Debug, Clone, Copy)]
pub struct Pos(pub u64);

impl Pos {
    /// An index in `0..len` (`len` must not be 0).
    pub fn index(self, len: usize) -> usize {
        ((u128::from(self.0) * len as u128) >> 64) as usize
    }

    /// One of `items`.
    pub fn get<T>(self, items: &[T]) -> &T {
        &items[self.index(items.len())]
    }
}

fn pos() -> impl Strategy<Value = Pos> {
    any::<u64>().prop_map(Pos)
}

/// One edit of a byte string; positions are picked relative to its length at that point.
#[derive(Debug, Clone)]
pub enum Edit {
    /// XOR one byte with a non-zero mask.
    Flip(Pos, u8),
    /// Insert bytes.
    Insert(Pos, Vec<u8>),
    /// Delete up to `n` bytes.
    Delete(Pos, usize),
    /// Overwrite 1, 2, 4 or 8 bytes with an extreme value (0, all ones, a sign bit), where
    /// length and count fields sit.
    Extreme(Pos, usize, u8),
    /// Keep only a prefix.
    Truncate(Pos),
    /// Keep a prefix and append the tail of another valid input.
    Splice(Pos, Pos, Pos),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (pos(), 1..=255u8).prop_map(|(i, m)| Edit::Flip(i, m)),
        1 => (pos(), prop::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(i, b)| Edit::Insert(i, b)),
        1 => (pos(), 1..512usize).prop_map(|(i, n)| Edit::Delete(i, n)),
        2 => (pos(), prop::sample::select(vec![1usize, 2, 4, 8]), 0..4u8)
            .prop_map(|(i, w, v)| Edit::Extreme(i, w, v)),
        1 => pos().prop_map(Edit::Truncate),
        1 => (pos(), pos(), pos())
            .prop_map(|(cut, other, from)| Edit::Splice(cut, other, from)),
    ]
}

/// Applies `edits` to `seed`; `seeds` are the valid inputs a splice takes tails from.
pub fn apply(seed: &[u8], edits: &[Edit], seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    // An index into 0..=len, so that an edit can also land at the very end.
    let at = |i: &Pos, len: usize| i.index(len + 1);
    for edit in edits {
        match edit {
            Edit::Flip(i, mask) if !bytes.is_empty() => {
                let p = i.index(bytes.len());
                bytes[p] ^= mask;
            }
            Edit::Flip(..) => {}
            Edit::Insert(i, new) => {
                let p = at(i, bytes.len());
                bytes.splice(p..p, new.iter().copied());
            }
            Edit::Delete(i, n) => {
                let p = at(i, bytes.len());
                let end = (p + n).min(bytes.len());
                bytes.drain(p..end);
            }
            Edit::Extreme(i, width, value) => {
                let p = at(i, bytes.len());
                let end = (p + width).min(bytes.len());
                let v = match value {
                    0 => [0u8; 8],
                    1 => [0xFF; 8],
                    // The sign bit of the field: 2^(8w-1), which is 2^31 for a u32 length.
                    2 => (1u64 << (8 * width - 1)).to_le_bytes(),
                    // 2^31 in a wider field: "2 GiB" as a u64 length.
                    _ => (1u64 << 31).to_le_bytes(),
                };
                bytes[p..end].copy_from_slice(&v[..end - p]);
            }
            Edit::Truncate(i) => {
                let p = at(i, bytes.len());
                bytes.truncate(p);
            }
            Edit::Splice(cut, other, from) => {
                let p = at(cut, bytes.len());
                let other: &Vec<u8> = other.get(seeds);
                let q = from.index(other.len() + 1);
                bytes.truncate(p);
                bytes.extend_from_slice(&other[q..]);
            }
        }
    }
    bytes
}

/// A damaged copy of one of `seeds` (1 to 6 edits; now and then none, so the valid inputs
/// are read too).
pub fn damaged(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    assert!(!seeds.is_empty(), "damage needs at least one valid input");
    (pos(), prop::collection::vec(edit(), 0..=6))
        .prop_map(move |(seed, edits)| apply(seed.get::<Vec<u8>>(&seeds), &edits, &seeds))
}

/// Runs `read` on `input` in its own thread: the case fails when the reader panics or has
/// not finished after [`DEADLINE`] (a reader loop that stopped advancing on a finite input).
/// Allocation accounting per thread (a counting allocator measuring inside `read`) sees
/// only the reader's own allocations this way.
pub fn bounded<T: Send + 'static>(
    input: &[u8],
    read: impl FnOnce(Vec<u8>) -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let owned = input.to_vec();
    std::thread::Builder::new()
        .name("damaged-input".into())
        .spawn(move || {
            let _ = tx.send(read(owned));
        })
        .expect("spawn the reader thread");
    match rx.recv_timeout(DEADLINE) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            panic!(
                "the reader panicked on {} bytes: {}",
                input.len(),
                hex_head(input)
            )
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!(
            "the reader did not finish within {DEADLINE:?} on {} bytes (a hang): {}",
            input.len(),
            hex_head(input)
        ),
    }
}

/// The first bytes of an input in hex, to paste into a regression test.
pub fn hex_head(input: &[u8]) -> String {
    let shown: String = input.iter().take(256).map(|b| format!("{b:02x}")).collect();
    if input.len() > 256 {
        format!("{shown}...")
    } else {
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_do_what_they_say() {
        let seeds = vec![b"abcdef".to_vec(), b"XYZ".to_vec()];
        let first = Pos(0);
        assert_eq!(apply(b"abc", &[Edit::Truncate(first)], &seeds), b"");
        assert_eq!(
            apply(b"abc", &[Edit::Flip(first, 0x20)], &seeds),
            b"Abc".to_vec()
        );
        assert_eq!(
            apply(b"abc", &[Edit::Delete(first, 2)], &seeds),
            b"c".to_vec()
        );
        assert_eq!(
            apply(b"abc", &[Edit::Insert(first, b"zz".to_vec())], &seeds),
            b"zzabc".to_vec()
        );
        assert_eq!(
            apply(b"abc", &[Edit::Extreme(first, 2, 1)], &seeds),
            b"\xff\xffc".to_vec()
        );
        // Cut at 0, take the second seed's tail from 0.
        let other = Pos(u64::MAX);
        assert_eq!(
            apply(b"abc", &[Edit::Splice(first, other, first)], &seeds),
            b"XYZ".to_vec()
        );
    }

    #[test]
    #[should_panic(expected = "the reader panicked")]
    fn a_panicking_reader_fails_the_case() {
        bounded(b"x", |_| panic!("boom"));
    }
}

//! The content hash a base set lists for each file it stored (`hashes.json`), and the hash of
//! a local file that a delta restore compares with it.
//!
//! A listed hash is `p16m:` and the XXH3-128 (hex) of the XXH3-128 digests of the file's
//! 16 MiB pieces, in order: the pieces of a large file can be hashed on several threads, so
//! an incremental backup scans a 1 GiB relation segment in parallel. Sets from before the
//! pieces list the XXH3-128 of the whole content (32 hex digits); [`LocalHash`] matches both.

use std::io::{self, Read};
use std::path::Path;

use twox_hash::XxHash3_128;

/// Bytes per piece (the last piece of a file may be shorter; an empty file has none).
pub const PIECE: usize = 16 << 20;

/// What starts a hash over pieces.
const PIECES_PREFIX: &str = "p16m:";

/// The digest of one piece.
pub type PieceDigest = [u8; 16];

/// The digest of one piece, computed as its bytes stream by.
#[derive(Default)]
pub struct PieceHasher(XxHash3_128);

impl PieceHasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
    }

    pub fn finish(self) -> PieceDigest {
        self.0.finish_128().to_le_bytes()
    }
}

/// The listed hash of a file from the digests of its pieces, in order.
pub fn from_digests<'a>(digests: impl IntoIterator<Item = &'a PieceDigest>) -> String {
    let mut over = XxHash3_128::new();
    for digest in digests {
        over.write(digest);
    }
    format!("{PIECES_PREFIX}{:032x}", over.finish_128())
}

/// A file's listed hash, computed as its bytes stream by (in any split).
#[derive(Default)]
pub struct ContentHash {
    digests: Vec<PieceDigest>,
    piece: PieceHasher,
    in_piece: usize,
}

impl ContentHash {
    pub fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let take = bytes.len().min(PIECE - self.in_piece);
            self.piece.update(&bytes[..take]);
            self.in_piece += take;
            bytes = &bytes[take..];
            if self.in_piece == PIECE {
                self.end_piece();
            }
        }
    }

    fn end_piece(&mut self) {
        let piece = std::mem::take(&mut self.piece);
        self.digests.push(piece.finish());
        self.in_piece = 0;
    }

    /// The hash as listed.
    pub fn finish(mut self) -> String {
        if self.in_piece > 0 {
            self.end_piece();
        }
        from_digests(&self.digests)
    }
}

/// A local file's size and hashes, to compare with what a set listed in either form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalHash {
    pub size: u64,
    /// Over pieces, as sets list it now.
    pub pieces: String,
    /// XXH3-128 of the whole content (32 hex digits), as older sets list it.
    pub whole: String,
}

impl LocalHash {
    /// Hashes `bytes` both ways.
    pub fn of(bytes: &[u8]) -> LocalHash {
        let mut hasher = LocalHasher::default();
        hasher.update(bytes);
        hasher.finish()
    }

    /// The file had the content a set listed as `listed`.
    pub fn matches(&self, listed: &str) -> bool {
        if listed.starts_with(PIECES_PREFIX) {
            listed == self.pieces
        } else {
            listed == self.whole
        }
    }
}

#[derive(Default)]
struct LocalHasher {
    size: u64,
    pieces: ContentHash,
    whole: XxHash3_128,
}

impl LocalHasher {
    fn update(&mut self, bytes: &[u8]) {
        self.size += bytes.len() as u64;
        self.pieces.update(bytes);
        self.whole.write(bytes);
    }

    fn finish(self) -> LocalHash {
        LocalHash {
            size: self.size,
            pieces: self.pieces.finish(),
            whole: format!("{:032x}", self.whole.finish_128()),
        }
    }
}

/// Size and hashes of a local file.
pub fn hash_file(path: &Path) -> io::Result<LocalHash> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = LocalHasher::default();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finish());
        }
        hasher.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn any_split_of_the_stream_gives_the_hash_of_its_pieces() {
        let content = bytes(2 * PIECE + 3_000_000);
        let mut streamed = ContentHash::default();
        for chunk in content.chunks(1_000_003) {
            streamed.update(chunk);
        }
        let digests: Vec<PieceDigest> = content
            .chunks(PIECE)
            .map(|piece| {
                let mut hasher = PieceHasher::default();
                hasher.update(piece);
                hasher.finish()
            })
            .collect();
        assert_eq!(digests.len(), 3);
        let listed = streamed.finish();
        assert_eq!(listed, from_digests(&digests));
        assert!(
            listed.starts_with("p16m:") && listed.len() == 5 + 32,
            "{listed}"
        );
    }

    #[test]
    fn a_local_file_matches_its_listed_hash_in_either_form_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let content = bytes(PIECE + 8192);
        std::fs::write(&path, &content).unwrap();
        let local = hash_file(&path).unwrap();
        assert_eq!(local, LocalHash::of(&content));
        assert_eq!(local.size, content.len() as u64);
        let mut listed = ContentHash::default();
        listed.update(&content);
        assert!(local.matches(&listed.finish()));
        let whole = format!("{:032x}", XxHash3_128::oneshot(&content));
        assert!(local.matches(&whole));

        let mut changed = content.clone();
        changed[PIECE + 1] ^= 1;
        let other = LocalHash::of(&changed);
        assert!(!other.matches(&local.pieces) && !other.matches(&local.whole));
        assert_ne!(LocalHash::of(b"").pieces, LocalHash::of(b"x").pieces);
    }
}

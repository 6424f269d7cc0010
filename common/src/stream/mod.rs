//! Streaming compression and checksumming.
//!
//! Encoders produce the standard formats (`gzip -t`, `zstd -t`, `lz4 -t` and `tar -xzf`
//! accept them); readers transparently decompress. [`HashingWriter`] and [`HashingReader`]
//! compute the SHA-256 and size of exactly the bytes that pass through them.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod parallel_gzip;
pub use parallel_gzip::ParallelGzEncoder;

/// A compression format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Stored as is.
    None,
    /// gzip (RFC 1952); what `tar -xzf` unpacks.
    #[default]
    Gzip,
    /// Zstandard frames.
    Zstd,
    /// LZ4 frames.
    Lz4,
}

impl Compression {
    /// File name suffix, with the dot (`""` for none).
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => ".gz",
            Compression::Zstd => ".zst",
            Compression::Lz4 => ".lz4",
        }
    }

    /// The format a file name ends in (before an encrypted file's `.age`).
    pub fn from_file_name(name: &str) -> Compression {
        let name = name
            .strip_suffix(crate::encryption::AGE_SUFFIX)
            .unwrap_or(name);
        if name.ends_with(".gz") {
            Compression::Gzip
        } else if name.ends_with(".zst") {
            Compression::Zstd
        } else if name.ends_with(".lz4") {
            Compression::Lz4
        } else {
            Compression::None
        }
    }

    /// The default level of the format.
    pub fn default_level(self) -> i32 {
        match self {
            Compression::Gzip => 6,
            Compression::Zstd => 3,
            Compression::None | Compression::Lz4 => 0,
        }
    }

    /// Wraps `inner` in an encoder. `level` None means the default; `threads` > 1 compresses
    /// on several cores (zstd natively, gzip as independent members).
    pub fn encoder<W: Write>(
        self,
        inner: W,
        level: Option<i32>,
        threads: u32,
    ) -> io::Result<Encoder<W>> {
        let level = level.unwrap_or(self.default_level());
        Ok(match self {
            Compression::None => Encoder::None(inner),
            Compression::Gzip if threads > 1 => Encoder::ParallelGzip(ParallelGzEncoder::new(
                inner,
                level.clamp(0, 9) as u32,
                threads,
            )),
            Compression::Gzip => {
                let level = flate2::Compression::new(level.clamp(0, 9) as u32);
                Encoder::Gzip(flate2::write::GzEncoder::new(inner, level))
            }
            Compression::Zstd => {
                let mut enc = zstd::stream::write::Encoder::new(inner, level)?;
                enc.include_checksum(true)?;
                if threads > 1 {
                    enc.multithread(threads)?;
                }
                Encoder::Zstd(enc)
            }
            Compression::Lz4 => Encoder::Lz4(lz4_flex::frame::FrameEncoder::new(inner)),
        })
    }

    /// Wraps `inner` in a decoder. Gzip accepts several concatenated members, as `gzip -d`.
    pub fn decoder<'a, R: Read + 'a>(self, inner: R) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Compression::None => Box::new(inner),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(inner)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(inner)?),
            Compression::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(inner)),
        })
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Lz4 => "lz4",
        })
    }
}

/// A compressing writer; [`Encoder::finish`] writes the trailer and returns the inner writer.
pub enum Encoder<W: Write> {
    None(W),
    Gzip(flate2::write::GzEncoder<W>),
    ParallelGzip(ParallelGzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Lz4(lz4_flex::frame::FrameEncoder<W>),
}

impl<W: Write> Encoder<W> {
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(mut w) => {
                w.flush()?;
                Ok(w)
            }
            Encoder::Gzip(e) => e.finish(),
            Encoder::ParallelGzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
            Encoder::Lz4(e) => e.finish().map_err(io::Error::other),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::ParallelGzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
            Encoder::Lz4(e) => e.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::ParallelGzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
            Encoder::Lz4(e) => e.flush(),
        }
    }
}

/// SHA-256, XXH3-128 and byte count of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
    /// Lower-case hex: the fast check of a file before it is restored (see
    /// [`crate::FileEntry::xxh3`]).
    pub xxh3: String,
}

/// The hashes of a [`Checksum`], as bytes stream by.
#[derive(Default)]
struct Hashers {
    sha256: Sha256,
    xxh3: twox_hash::XxHash3_128,
    size: u64,
}

impl Hashers {
    fn update(&mut self, bytes: &[u8]) {
        self.sha256.update(bytes);
        self.xxh3.write(bytes);
        self.size += bytes.len() as u64;
    }

    fn finish(self) -> Checksum {
        Checksum {
            size: self.size,
            sha256: hex::encode(self.sha256.finalize()),
            xxh3: xxh3_hex(&self.xxh3),
        }
    }
}

fn xxh3_hex(hasher: &twox_hash::XxHash3_128) -> String {
    format!("{:032x}", hasher.finish_128())
}

/// Hashes every byte written through it.
pub struct HashingWriter<W> {
    inner: W,
    hashers: Hashers,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hashers: Hashers::default(),
        }
    }

    pub fn bytes_written(&self) -> u64 {
        self.hashers.size
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    pub fn finish(self) -> (W, Checksum) {
        (self.inner, self.hashers.finish())
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hashers.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes every byte read through it.
pub struct HashingReader<R> {
    inner: R,
    hashers: Hashers,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hashers: Hashers::default(),
        }
    }

    /// Reads what is left (so the sum covers the whole stream) and returns the checksum.
    pub fn finish(mut self) -> io::Result<Checksum> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(self.hashers.finish())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hashers.update(&buf[..n]);
        Ok(n)
    }
}

/// The size and XXH3-128 (hex) of a stream read to its end: the fast check, about ten times
/// quicker than SHA-256.
pub fn quick_checksum(mut reader: impl Read) -> io::Result<(u64, String)> {
    let mut hasher = twox_hash::XxHash3_128::new();
    let mut buf = vec![0; 1 << 20];
    let mut size = 0;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.write(&buf[..n]);
                size += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok((size, xxh3_hex(&hasher)))
}

/// SHA-256 and size of a file on disk.
pub fn checksum_file(path: &std::path::Path) -> io::Result<Checksum> {
    let file = std::fs::File::open(path)?;
    HashingReader::new(io::BufReader::with_capacity(1 << 20, file)).finish()
}

/// SHA-256 of a byte slice, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(c: Compression, threads: u32) {
        let data: Vec<u8> = (0..900_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let mut enc = c.encoder(Vec::new(), None, threads).unwrap();
        enc.write_all(&data).unwrap();
        let packed = enc.finish().unwrap();
        let mut out = Vec::new();
        c.decoder(&packed[..])
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data, "{c}");
    }

    #[test]
    fn every_format_round_trips() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Zstd,
            Compression::Lz4,
        ] {
            round_trip(c, 1);
            round_trip(c, 2);
        }
    }

    #[test]
    fn gzip_reader_reads_concatenated_members() {
        let mut both = Vec::new();
        for part in [b"abc".as_slice(), b"def"] {
            let mut enc = Compression::Gzip.encoder(Vec::new(), None, 1).unwrap();
            enc.write_all(part).unwrap();
            both.extend(enc.finish().unwrap());
        }
        let mut out = String::new();
        Compression::Gzip
            .decoder(&both[..])
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "abcdef");
    }

    #[test]
    fn hashing_matches_known_digest() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"abc").unwrap();
        let (_, sum) = w.finish();
        assert_eq!(sum.size, 3);
        assert_eq!(
            sum.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(sha256_hex(b"abc"), sum.sha256);
    }
}

//! The pages of one relation file changed since a reference backup, as an incremental base
//! backup stores them: a tar member named `<dir>/INCREMENTAL.<file>` (PostgreSQL 17's naming;
//! no PostgreSQL 15 file starts so) holding
//!
//! ```text
//! magic "PGBKINC1" | file size: u64 LE | block count n: u32 LE | n block numbers: u32 LE, ascending | n pages of 8 KiB
//! ```
//!
//! Restoring writes each page at its offset into the file restored from the earlier sets of
//! the chain, then sets the file's length (a relation truncated since is cut back).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;

use crate::lsn::Lsn;

/// PostgreSQL's page size (`BLCKSZ`, the default every distribution builds with).
pub const PAGE_SIZE: usize = 8192;
/// Relation pages per 1 GiB segment file: the most an incremental member can list.
pub const MAX_BLOCKS: u32 = (1 << 30) / PAGE_SIZE as u32;
/// The file-name prefix of an incremental member.
pub const PREFIX: &str = "INCREMENTAL.";
const MAGIC: &[u8; 8] = b"PGBKINC1";

/// The LSN in a page's header (`pd_lsn`: two 32-bit halves, in the machine's byte order,
/// little-endian on every platform PostgreSQL is packaged for here).
pub fn page_lsn(page: &[u8]) -> Lsn {
    let half = |at: usize| u64::from(u32::from_le_bytes(page[at..at + 4].try_into().unwrap()));
    Lsn((half(0) << 32) | half(4))
}

/// The tar member name that carries `path`'s changed pages.
pub fn member_name(path: &str) -> String {
    match path.rsplit_once('/') {
        Some((dir, name)) => format!("{dir}/{PREFIX}{name}"),
        None => format!("{PREFIX}{path}"),
    }
}

/// The relation file an incremental member patches, when `member` names one.
pub fn patched_path(member: &str) -> Option<String> {
    let (dir, name) = match member.rsplit_once('/') {
        Some((dir, name)) => (Some(dir), name),
        None => (None, member),
    };
    let name = name.strip_prefix(PREFIX)?;
    Some(match dir {
        Some(dir) => format!("{dir}/{name}"),
        None => name.to_string(),
    })
}

/// The header of an incremental member: the file's size and which of its pages follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedPages {
    pub file_size: u64,
    pub blocks: Vec<u32>,
}

impl ChangedPages {
    /// Bytes of the member: header, block list and pages.
    pub fn member_size(&self) -> u64 {
        (8 + 8 + 4 + 4 * self.blocks.len() + PAGE_SIZE * self.blocks.len()) as u64
    }

    /// Writes the header and block list; the pages follow, in the same order.
    pub fn write_header<W: Write>(&self, out: &mut W) -> io::Result<()> {
        out.write_all(MAGIC)?;
        out.write_all(&self.file_size.to_le_bytes())?;
        out.write_all(&(self.blocks.len() as u32).to_le_bytes())?;
        for block in &self.blocks {
            out.write_all(&block.to_le_bytes())?;
        }
        Ok(())
    }

    /// Reads and checks a header: the magic, a block count and numbers that fit a segment
    /// file, ascending, and a file size that holds them.
    pub fn read_header<R: Read>(input: &mut R) -> io::Result<ChangedPages> {
        let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        let mut magic = [0; 8];
        input.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(bad("not an incremental relation file (bad magic)".into()));
        }
        let mut word = [0; 8];
        input.read_exact(&mut word)?;
        let file_size = u64::from_le_bytes(word);
        let mut count = [0; 4];
        input.read_exact(&mut count)?;
        let count = u32::from_le_bytes(count);
        if count > MAX_BLOCKS || file_size > u64::from(MAX_BLOCKS) * PAGE_SIZE as u64 {
            return Err(bad(format!(
                "incremental relation file lists {count} blocks of a {file_size}-byte file: more than a segment holds"
            )));
        }
        let mut blocks = Vec::with_capacity(count as usize);
        let mut last: Option<u32> = None;
        for _ in 0..count {
            let mut number = [0; 4];
            input.read_exact(&mut number)?;
            let number = u32::from_le_bytes(number);
            let end = (u64::from(number) + 1) * PAGE_SIZE as u64;
            if last.is_some_and(|l| number <= l) || end > file_size {
                return Err(bad(format!(
                    "incremental relation file lists block {number} out of order or past its size {file_size}"
                )));
            }
            last = Some(number);
            blocks.push(number);
        }
        Ok(ChangedPages { file_size, blocks })
    }

    /// Reads the pages that follow the header from `input` and writes each at its place in
    /// `file`, then sets the file's length.
    pub fn apply<R: Read>(&self, input: &mut R, file: &File) -> io::Result<()> {
        let mut page = vec![0; PAGE_SIZE];
        for &block in &self.blocks {
            input.read_exact(&mut page)?;
            file.write_all_at(&page, u64::from(block) * PAGE_SIZE as u64)?;
        }
        file.set_len(self.file_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(fill: u8) -> Vec<u8> {
        vec![fill; PAGE_SIZE]
    }

    #[test]
    fn member_names_round_trip() {
        assert_eq!(member_name("base/5/16384.1"), "base/5/INCREMENTAL.16384.1");
        assert_eq!(
            patched_path("base/5/INCREMENTAL.16384.1").as_deref(),
            Some("base/5/16384.1")
        );
        assert_eq!(patched_path("base/5/16384"), None);
    }

    #[test]
    fn page_lsn_reads_both_halves() {
        let mut p = page(0);
        p[..4].copy_from_slice(&1u32.to_le_bytes());
        p[4..8].copy_from_slice(&0x2000_0028u32.to_le_bytes());
        assert_eq!(page_lsn(&p), Lsn(0x1_2000_0028));
    }

    #[test]
    fn applying_changed_pages_patches_extends_and_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("16384");
        std::fs::write(&path, [page(1), page(2), page(3)].concat()).unwrap();
        // Page 1 changed, page 3 added: the file grows to four pages.
        let changed = ChangedPages {
            file_size: 4 * PAGE_SIZE as u64,
            blocks: vec![1, 3],
        };
        let mut member = Vec::new();
        changed.write_header(&mut member).unwrap();
        member.extend(page(9));
        member.extend(page(8));
        assert_eq!(member.len() as u64, changed.member_size());
        let mut input = &member[..];
        let header = ChangedPages::read_header(&mut input).unwrap();
        assert_eq!(header, changed);
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        header.apply(&mut input, &file).unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            [page(1), page(9), page(3), page(8)].concat()
        );
        // Truncated to one page, nothing changed in it.
        let cut = ChangedPages {
            file_size: PAGE_SIZE as u64,
            blocks: vec![],
        };
        cut.apply(&mut &[][..], &file).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), page(1));
    }

    #[test]
    fn damaged_headers_are_refused() {
        let header = |size: u64, blocks: &[u32]| {
            let mut bytes = MAGIC.to_vec();
            bytes.extend(size.to_le_bytes());
            bytes.extend((blocks.len() as u32).to_le_bytes());
            for b in blocks {
                bytes.extend(b.to_le_bytes());
            }
            ChangedPages::read_header(&mut &bytes[..])
        };
        assert!(header(3 * PAGE_SIZE as u64, &[0, 2]).is_ok());
        assert!(header(3 * PAGE_SIZE as u64, &[2, 1]).is_err(), "order");
        assert!(header(2 * PAGE_SIZE as u64, &[2]).is_err(), "past the end");
        assert!(header(1 << 40, &[]).is_err(), "larger than a segment");
        assert!(ChangedPages::read_header(&mut &b"PGBKINC2xxxxxxxxxxxx"[..]).is_err());
        assert!(
            ChangedPages::read_header(&mut &MAGIC[..]).is_err(),
            "truncated"
        );
    }
}

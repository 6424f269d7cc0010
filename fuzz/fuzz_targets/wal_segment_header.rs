//! A WAL segment's long page header against its file name, as wal-archive fetch checks it.
#![no_main]

use common::wal::WalFile;
use libfuzzer_sys::fuzz_target;
use wal_archive::SegmentHeader;

fuzz_target!(|data: &[u8]| {
    if data.len() < 12 {
        return;
    }
    let word = |i: usize| u32::from_le_bytes(data[i..i + 4].try_into().unwrap());
    let name = format!("{:08X}{:08X}{:08X}", word(0).max(1), word(4), word(8));
    let Some(header) = SegmentHeader::parse(&data[12..]) else {
        return;
    };
    if let Some(segno) =
        WalFile::parse(&name).and_then(|w| w.segno(u64::from(header.segment_size.max(1))))
    {
        let _ = header.mismatch(segno);
    }
});

//! The damaged-input tier for wal-archive's readers: WAL segment headers (checked on every
//! fetch and verify against the file's name) and timeline history files, fed damaged copies
//! of valid ones: no panic, no hang, errors naming the file.
//!
//! `PROPTEST_CASES=100000 cargo test -p wal-archive --test it damaged_input` is the full run.

use common::wal::history;
use common::wal::WalFile;
use proptest::prelude::*;
use test_support::damage::{self, bounded};
use wal_archive::SegmentHeader;

const HISTORY_SHOWN: &str = "/backups/wal/00000003.history.zst";

/// The first bytes of a real segment: `XLogLongPageHeaderData` as PostgreSQL 15 writes it
/// (magic 0xD110, long-header flag, timeline, page address, system identifier, 16 MiB
/// segments of 8 KiB pages), then the start of the first record.
fn segment_start(timeline: u32, segno: u64, segment_size: u32) -> Vec<u8> {
    let mut page = Vec::with_capacity(64);
    page.extend_from_slice(&0xD110u16.to_le_bytes());
    page.extend_from_slice(&0x0002u16.to_le_bytes());
    page.extend_from_slice(&timeline.to_le_bytes());
    page.extend_from_slice(&(segno * u64::from(segment_size)).to_le_bytes());
    page.extend_from_slice(&0u32.to_le_bytes()); // xlp_rem_len
    page.extend_from_slice(&[0; 4]); // padding
    page.extend_from_slice(&7_312_345_678_901_234_567u64.to_le_bytes());
    page.extend_from_slice(&segment_size.to_le_bytes());
    page.extend_from_slice(&8192u32.to_le_bytes());
    page.extend_from_slice(&[0x72, 0, 0, 0, 0, 0, 0, 0, 0x28, 0, 0, 3, 0, 0, 0, 0]);
    page.extend_from_slice(&[0x10, 0, 0, 0, 0, 0, 0, 0, 0x2a, 0, 0, 0, 0x7f, 0x06, 0, 0]);
    page
}

fn header_seeds() -> Vec<Vec<u8>> {
    vec![
        segment_start(1, 3, 16 << 20),
        segment_start(2, 0x1_3F, 16 << 20),
        segment_start(1, 5, 64 << 20),
        segment_start(7, 0xFFFF_FFFF, 1 << 30),
    ]
}

/// What fetch checks: the header parses, and matches the name's segment at the header's size.
fn check_segment(name: &str, bytes: &[u8]) -> Result<(), String> {
    let header = SegmentHeader::parse(bytes)
        .ok_or_else(|| format!("{name}: does not start with a WAL header"))?;
    let segno = WalFile::parse(name)
        .and_then(|w| w.segno(u64::from(header.segment_size.max(1))))
        .ok_or_else(|| format!("{name}: not a segment name"))?;
    match header.mismatch(segno) {
        Some(problem) => Err(format!("{name}: {problem}")),
        None => Ok(()),
    }
}

proptest! {
    #![proptest_config(damage::config())]

    #[test]
    fn segment_header(
        input in damage::damaged(header_seeds()),
        (tli, log, seg) in (1..=u32::MAX, any::<u32>(), any::<u32>()),
    ) {
        // Named as fetch and verify name it: by the segment's file name.
        let name = format!("{tli:08X}{log:08X}{seg:08X}");
        let shown = name.clone();
        if let Err(e) = bounded(&input, move |b| check_segment(&name, &b)) {
            prop_assert!(e.contains(&shown), "error does not name the file: {e}");
        }
    }
}

#[test]
fn segment_header_of_a_huge_segment_near_the_end_of_the_lsn_space() {
    // Found by `segment_header`: a header claiming 2 GiB segments for a name near the end
    // of the LSN space overflowed `segno * size` (a panic in debug builds, a wrong answer
    // in release).
    let name = "00000001FFFFFFFFFFFFFFFF";
    let bytes = segment_start(1, 0, 1 << 31);
    let err = bounded(&bytes, move |b| check_segment(name, &b)).unwrap_err();
    assert!(
        err.contains(name) && err.contains("header says position"),
        "{err}"
    );
}

fn history_seeds() -> Vec<Vec<u8>> {
    vec![
        b"1\t0/3000158\tno recovery target specified\n".to_vec(),
        b"1\t0/3000158\tno recovery target specified\n\n2\t0/5000A28\tat restore point \"before-migration\"\n".to_vec(),
        b"1\t0/3000158\tbefore 2026-01-01 00:00:00+00\n2\t1/5000000\tafter transaction 750\n3\tFFFFFFFF/FF000000\tno recovery target specified\n".to_vec(),
    ]
}

proptest! {
    #![proptest_config(damage::config())]

    #[test]
    fn history_file(input in damage::damaged(history_seeds())) {
        let result = bounded(&input, |b| history::switch_point(&b, HISTORY_SHOWN));
        if let Err(e) = &result {
            prop_assert!(e.to_string().contains(HISTORY_SHOWN), "error does not name the file: {e}");
        }
    }
}

#[test]
fn history_file_after_a_long_preamble() {
    let long = "# comment\n".repeat(100_000) + "1\t0/3000158\treason\n";
    let got = bounded(long.as_bytes(), |b| {
        history::switch_point(&b, HISTORY_SHOWN)
    });
    assert_eq!(got, Ok(Some("0/3000158".parse().unwrap())));
}

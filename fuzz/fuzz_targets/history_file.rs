//! A timeline history file as wal-archive verify reads it.
#![no_main]

use libfuzzer_sys::fuzz_target;

const SHOWN: &str = "fuzz/00000002.history";

fuzz_target!(|data: &[u8]| {
    if let Err(e) = wal_archive::history::switch_point(data, SHOWN) {
        assert!(e.contains(SHOWN));
    }
});

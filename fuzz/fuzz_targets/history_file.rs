//! A timeline history file as wal-archive verify, pitr-restore and cdc-slot-tool read it.
#![no_main]

use libfuzzer_sys::fuzz_target;

const SHOWN: &str = "fuzz/00000002.history";

fuzz_target!(|data: &[u8]| {
    if let Err(e) = common::wal::history::switch_point(data, SHOWN) {
        assert!(e.to_string().contains(SHOWN));
    }
});

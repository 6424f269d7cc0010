//! An age header checked without a key (validate-backups, wal-archive verify).
#![no_main]

use libfuzzer_sys::fuzz_target;

const SHOWN: &str = "fuzz/file.age";

fuzz_target!(|data: &[u8]| {
    if let Err(e) = common::encryption::check_header(data, SHOWN) {
        assert!(e.to_string().contains(SHOWN));
    }
});

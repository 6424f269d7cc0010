//! manifest.json: parse, then use what the tools compute from it.
#![no_main]

use common::physical::PhysicalDetails;
use common::Manifest;
use libfuzzer_sys::fuzz_target;

const SHOWN: &str = "fuzz/manifest.json";

fuzz_target!(|data: &[u8]| {
    match Manifest::parse(data, SHOWN) {
        Err(e) => assert!(format!("{e:#}").contains(SHOWN)),
        Ok(m) => {
            let _ = (m.total_size(), m.encryption(), m.stored("backup_manifest"));
            if let Ok(d) = PhysicalDetails::from_manifest(&m) {
                let segno = common::wal::segno_of(d.start_lsn, d.wal_segment_size);
                let _ = common::wal::segment_name(d.timeline, segno, d.wal_segment_size);
            }
        }
    }
});

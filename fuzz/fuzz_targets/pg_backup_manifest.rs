//! PostgreSQL's backup_manifest as validate-backups reads it.
#![no_main]

use common::physical::PgBackupManifest;
use libfuzzer_sys::fuzz_target;

const SHOWN: &str = "fuzz/backup_manifest";

fuzz_target!(|data: &[u8]| {
    if let Err(e) = PgBackupManifest::read(data, SHOWN) {
        assert!(format!("{e:#}").contains(SHOWN));
    }
});

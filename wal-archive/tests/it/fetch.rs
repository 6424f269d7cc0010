//! fetch: the bytes come back exactly; "not archived" is exit 1, a damaged copy exit 126.

use crate::{wal_archive, Archived};

#[test]
fn fetch_returns_the_segment_and_distinguishes_missing_from_damaged() {
    let a = Archived::start();
    let segment = &a.segments()[1];
    let out_dir = tempfile::tempdir().unwrap();
    let dest = out_dir.path().join("RECOVERYXLOG");
    let out = wal_archive(
        &["fetch", &segment.name, dest.to_str().unwrap()],
        a.backups.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored = std::fs::read(&dest).unwrap();
    assert_eq!(restored.len(), 16 * 1024 * 1024);
    // The header inside names the same segment.
    let header = wal_archive::SegmentHeader::parse(&restored).unwrap();
    let segno = segment.kind.segno(16 * 1024 * 1024).unwrap();
    assert_eq!(header.page_address, segno * 16 * 1024 * 1024);
    assert_eq!(
        header.system_identifier.to_string(),
        a.pg.psql("SELECT system_identifier FROM pg_control_system()")
    );

    let missing = wal_archive(
        &["fetch", "0000000100000000000000FF", dest.to_str().unwrap()],
        a.backups.path(),
    );
    assert_eq!(missing.status.code(), Some(1));

    // Damage the archived copy: recovery must stop, not end.
    let mut bytes = std::fs::read(a.backups.path().join(&segment.key)).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x10;
    std::fs::write(a.backups.path().join(&segment.key), &bytes).unwrap();
    let damaged_dest = out_dir.path().join("other");
    let out = wal_archive(
        &["fetch", &segment.name, damaged_dest.to_str().unwrap()],
        a.backups.path(),
    );
    assert_eq!(
        out.status.code(),
        Some(126),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!damaged_dest.exists(), "no half-written file at %p");

    let nowhere = tempfile::tempdir().unwrap();
    let out = wal_archive(
        &["fetch", &segment.name, dest.to_str().unwrap()],
        &nowhere.path().join("absent"),
    );
    assert_eq!(out.status.code(), Some(126));
}

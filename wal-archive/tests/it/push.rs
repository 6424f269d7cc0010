//! push: identical re-push is fine, different content is refused and the archive untouched,
//! concurrent pushes of different segments both land.

use common::stream::Compression;
use common::wal::WalArchive;
use std::io::Read;

use crate::{wal_archive, Archived};

fn archived_bytes(dir: &std::path::Path, name: &str) -> Vec<u8> {
    let (key, compression) = WalArchive::new(&crate::local_repo(dir))
        .find(name)
        .unwrap()
        .expect("archived");
    let path = dir.join(key);
    let mut out = Vec::new();
    compression
        .decoder(std::fs::File::open(path).unwrap())
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn repush_identical_ok_different_refused_archive_unchanged() {
    let a = Archived::start();
    let segment = &a.segments()[0];
    let original = archived_bytes(a.backups.path(), &segment.name);
    assert_eq!(original.len(), 16 * 1024 * 1024);
    let stored_before = std::fs::read(a.backups.path().join(&segment.key)).unwrap();

    let work = tempfile::tempdir().unwrap();
    let copy = work.path().join(&segment.name);
    std::fs::write(&copy, &original).unwrap();
    let out = wal_archive(&["push", copy.to_str().unwrap()], a.backups.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut changed = original.clone();
    changed[8192 + 100] ^= 0xFF;
    std::fs::write(&copy, &changed).unwrap();
    let out = wal_archive(&["push", copy.to_str().unwrap()], a.backups.path());
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("already archived with different content"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(a.backups.path().join(&segment.key)).unwrap(),
        stored_before
    );
    assert_eq!(archived_bytes(a.backups.path(), &segment.name), original);
}

#[test]
fn concurrent_pushes_of_different_segments_both_land() {
    let repo = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let names = ["000000010000000000000010", "000000010000000000000011"];
    let mut children = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let path = work.path().join(name);
        let data: Vec<u8> = (0..4_000_000u32)
            .map(|x| (x as u8).wrapping_mul(i as u8 + 3))
            .collect();
        std::fs::write(&path, &data).unwrap();
        children.push((
            std::process::Command::new(env!("CARGO_BIN_EXE_wal-archive"))
                .args([
                    "push",
                    path.to_str().unwrap(),
                    "--compress",
                    "gzip",
                    "--backup-dir",
                ])
                .arg(repo.path())
                .spawn()
                .unwrap(),
            data,
            *name,
        ));
    }
    for (mut child, data, name) in children {
        assert!(child.wait().unwrap().success());
        assert_eq!(archived_bytes(repo.path(), name), data);
        let (key, compression) = WalArchive::new(&crate::local_repo(repo.path()))
            .find(name)
            .unwrap()
            .unwrap();
        let path = repo.path().join(key);
        assert_eq!(compression, Compression::Gzip);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o077, 0);
    }
    // No temporary files are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(repo.path().join("wal"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn not_a_wal_file_name_is_refused() {
    let repo = tempfile::tempdir().unwrap();
    let file = repo.path().join("postgresql.conf");
    std::fs::write(&file, b"x").unwrap();
    let out = wal_archive(&["push", file.to_str().unwrap()], repo.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a WAL file name"));
}

/// Every full segment pushed gets its block summary beside it: read back, it names the
/// blocks of a table the segment's records wrote; listings of the archive do not show it, and
/// expiring the segment removes it.
#[test]
fn a_pushed_segment_gets_a_block_summary_that_expires_with_it() {
    let a = Archived::start();
    let table = a.pg.psql("SELECT pg_relation_filenode('t1')");
    let archive = WalArchive::new(&crate::local_repo(a.backups.path()));
    let segments = a.segments();
    let mut with_t1 = 0;
    for segment in &segments {
        assert!(
            a.backups
                .path()
                .join(format!("wal/{}.blocks.zst", segment.name))
                .is_file(),
            "{} has a summary",
            segment.name
        );
        let summary = archive.summary(&segment.name).unwrap().expect("a summary");
        assert!(summary.changed.records > 0);
        let node = common::wal::blocks::RelFileNode {
            spc: 1663,
            db: a
                .pg
                .psql("SELECT oid FROM pg_database WHERE datname = current_database()")
                .parse()
                .unwrap(),
            rel: table.parse().unwrap(),
        };
        if let common::wal::blocks::FileChanges::Blocks { blocks, from } =
            summary.changed.in_file(node, 0, 131072)
        {
            if !blocks.is_empty() || from.is_some() {
                with_t1 += 1;
            }
        }
    }
    assert!(with_t1 >= 1, "a summary names t1's blocks");
    assert!(archive
        .list()
        .unwrap()
        .iter()
        .all(|f| !f.name.contains("blocks")));

    let last = segments.last().unwrap();
    let segno = last.kind.segno(common::wal::DEFAULT_SEGMENT_SIZE).unwrap();
    let gone = archive
        .expire_before(segno, common::wal::DEFAULT_SEGMENT_SIZE, false)
        .unwrap();
    assert!(gone.iter().all(|name| !name.contains("blocks")), "{gone:?}");
    for segment in &segments {
        let summary = a
            .backups
            .path()
            .join(format!("wal/{}.blocks.zst", segment.name));
        assert_eq!(
            summary.is_file(),
            segment.name == last.name,
            "{}",
            segment.name
        );
    }
}

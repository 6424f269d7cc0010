//! Damage and bad input make the restore fail loudly, never recover to a wrong point, and
//! never overwrite data without --force.

use common::repo::{Kind, Repository};
use common::storage::Location;

use crate::{Restore, Source};

#[test]
fn flipped_byte_in_the_backup_fails_and_leaves_no_data_directory_contents() {
    let src = Source::start();
    src.pg
        .psql("CREATE TABLE t AS SELECT generate_series(1, 5000) AS n");
    src.base_backup(&[]);
    src.pg.switch_wal_and_wait_archived();
    let repo = Repository::open(&Location::Local(src.backups.path().into())).unwrap();
    let (set, _) = repo.find(Kind::Base, None).unwrap();
    let tar = src.backups.path().join(set.key("base.tar.gz"));
    let mut bytes = std::fs::read(&tar).unwrap();
    let at = bytes.len() * 2 / 3;
    bytes[at] ^= 0x40;
    std::fs::write(&tar, &bytes).unwrap();

    let restore = Restore::in_tempdir();
    let (out, _) = restore.run(src.backups.path(), &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.trim_end().lines().last().unwrap();
    assert!(last.starts_with("pitr-restore: "), "{stderr}");
    assert!(
        stderr.contains("damaged") || stderr.contains("cannot unpack"),
        "{stderr}"
    );
    let left: Vec<_> = std::fs::read_dir(&restore.pgdata).unwrap().collect();
    assert!(left.is_empty(), "partly restored files left: {left:?}");
}

#[test]
fn missing_wal_segment_is_refused_and_never_silently_skipped() {
    let src = Source::start();
    src.pg.psql("CREATE TABLE t(n int)");
    src.base_backup(&["--wal-method", "archive"]);
    for n in 1..=3 {
        src.pg.psql(&format!("INSERT INTO t VALUES ({n})"));
        src.pg.switch_wal_and_wait_archived();
    }
    let target = src.now();
    src.pg.psql("INSERT INTO t VALUES (4)");
    src.pg.switch_wal_and_wait_archived();
    // Remove a segment in the middle: the one holding row 2.
    let repo = Repository::open(&Location::Local(src.backups.path().into())).unwrap();
    let archive = common::wal::WalArchive::new(&repo);
    let segments: Vec<_> = archive
        .list()
        .unwrap()
        .into_iter()
        .filter(|f| matches!(f.kind, common::wal::WalFile::Segment { .. }))
        .collect();
    assert!(segments.len() >= 4, "{segments:?}");
    let victim = &segments[segments.len() - 3];
    std::fs::remove_file(src.backups.path().join(&victim.key)).unwrap();

    let restore = Restore::in_tempdir();
    let (out, _) = restore.run(src.backups.path(), &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&victim.name),
        "names the missing segment: {stderr}"
    );
    assert!(!restore.pgdata.exists(), "nothing restored");

    // Forced past the check, recovery cannot reach the target and the server says so.
    let restore = Restore::in_tempdir();
    let (out, server) = restore.run(
        src.backups.path(),
        &["--accept-wal-gaps", "--target-time", &target],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(server.is_none());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("recovery"), "{stderr}");
}

#[test]
fn non_empty_data_directory_needs_force() {
    let src = Source::start();
    src.pg.psql("CREATE TABLE t AS SELECT 7 AS n");
    src.base_backup(&[]);
    let restore = Restore::in_tempdir();
    std::fs::create_dir_all(&restore.pgdata).unwrap();
    test_support::os_user::give_to_db_user(&restore.pgdata);
    let precious = restore.pgdata.join("precious.txt");
    std::fs::write(&precious, b"keep me").unwrap();

    let out = restore.run_only(src.backups.path(), &[], false);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert_eq!(std::fs::read(&precious).unwrap(), b"keep me");

    let (_, server) = restore.ok(src.backups.path(), &["--force", "--target", "immediate"]);
    assert_eq!(server.psql("SELECT n FROM t"), "7");
    assert!(!precious.exists());
}

#[test]
fn sigint_mid_extraction_empties_the_data_directory_and_a_rerun_needs_no_force() {
    let src = Source::start();
    src.pg.psql(
        "CREATE TABLE big AS SELECT g, repeat(md5(g::text), 8) AS v FROM generate_series(1, 400000) g",
    );
    src.base_backup(&[]);
    src.pg.switch_wal_and_wait_archived();
    let restore = Restore::in_tempdir();
    let mut cmd = std::process::Command::new(test_support::tool_bin("pitr-restore"));
    cmd.arg("--backup-dir")
        .arg(src.backups.path())
        .arg("--pgdata")
        .arg(&restore.pgdata)
        .args(["--yes", "--target", "immediate"])
        .stderr(std::process::Stdio::piped());
    let child = test_support::os_user::as_db_user(&mut cmd).spawn().unwrap();
    // Extraction has begun once the data directory has entries.
    test_support::process::wait_for("the extraction", std::time::Duration::from_secs(60), || {
        std::fs::read_dir(&restore.pgdata).is_ok_and(|mut d| d.next().is_some())
    });
    test_support::process::signal_and_wait(child, "INT").assert_interrupted("pitr-restore", "INT");
    let left: Vec<_> = std::fs::read_dir(&restore.pgdata).unwrap().collect();
    assert!(left.is_empty(), "partly restored files left: {left:?}");

    let (_, server) = restore.ok(src.backups.path(), &["--target", "immediate"]);
    assert_eq!(server.psql("SELECT count(*) FROM big"), "400000");
}

/// A backup with its WAL inside the tarball, and no WAL archive at all: restoring "to the
/// latest point" is refused before anything is written, with what to do; `--target
/// immediate` restores it.
#[test]
fn no_wal_archive_is_caught_before_writing_and_immediate_works() {
    let pg = test_support::pg::PgCluster::start();
    pg.psql("CREATE TABLE t AS SELECT generate_series(1, 100) AS n");
    let backups = test_support::os_user::db_tempdir("pitr-noarchive-");
    let mut cmd = pg.command(test_support::tool_bin("pg-base-backup"));
    cmd.arg("--backup-dir")
        .arg(backups.path())
        .args(["--no-retention", "-q"]);
    assert!(cmd.status().unwrap().success());

    let restore = Restore::in_tempdir();
    let out = restore.run_only(backups.path(), &[], false);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("does not exist") && stderr.contains("--target immediate"),
        "{stderr}"
    );
    let written = std::fs::read_dir(&restore.pgdata).map_or(0, |d| d.count());
    assert_eq!(written, 0, "nothing written into the data directory");

    let (_, server) = restore.ok(backups.path(), &["--target", "immediate"]);
    assert_eq!(server.psql("SELECT count(*) FROM t"), "100");
}

#[test]
fn an_unreadable_target_time_names_the_accepted_forms() {
    let backups = tempfile::tempdir().unwrap();
    let pgdata = backups.path().join("pgdata");
    let run = |time: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_pitr-restore"))
            .arg("--backup-dir")
            .arg(backups.path())
            .arg("--pgdata")
            .arg(&pgdata)
            .args(["--target-time", time])
            .output()
            .unwrap()
    };
    let out = run("yesterday");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid timestamp 'yesterday': expected RFC 3339 (2026-11-21T02:00:00Z) or PostgreSQL's form (2026-11-21 02:00:00.5+00)"),
        "{stderr}"
    );
    assert!(!stderr.contains("yesterdayZ"), "{stderr}");
    // A time without a zone is understood but ambiguous: the fix is named.
    let out = run("2026-11-21 02:00:00");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("has no time zone; add one, e.g. '2026-11-21 02:00:00Z'"),
        "{stderr}"
    );
    assert!(!pgdata.exists(), "nothing is written on bad input");
}

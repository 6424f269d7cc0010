//! `--pgdata` backups: full, diff and incr sets read from the data directory, their chains and
//! how little a diff or incr stores after a small change.

use common::physical::filelist::{self, Stored};
use common::physical::{BackupType, CaptureMethod, PhysicalDetails};
use common::repo::{Kind, Repository};
use common::storage::Location;
use common::wal::{segment_name, segno_of, DEFAULT_SEGMENT_SIZE};
use test_support::os_user::db_tempdir;
use test_support::pg::{archiving_options, PgCluster};

use crate::{base_backup, summary};

fn typed(pg: &PgCluster, backups: &std::path::Path, kind: &str) -> serde_json::Value {
    let pgdata = pg.data_dir.display().to_string();
    summary(&base_backup(
        pg,
        backups,
        &["--type", kind, "--pgdata", &pgdata, "--compress", "zstd"],
    ))
}

fn details(repo: &Repository, id: &str) -> PhysicalDetails {
    let (_, manifest) = repo.find(Kind::Base, Some(id)).unwrap();
    PhysicalDetails::from_manifest(&manifest).unwrap()
}

#[test]
fn incr_and_diff_store_only_what_changed_and_record_their_chain() {
    let backups = db_tempdir("bb-incr-");
    let pg = PgCluster::start_with(archiving_options(backups.path()));
    pg.psql(
        "CREATE TABLE t (id int PRIMARY KEY, v text) WITH (fillfactor = 100);
         INSERT INTO t SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 200000) g;
         CHECKPOINT",
    );
    pg.switch_wal_and_wait_archived();
    let full = typed(&pg, backups.path(), "full");
    assert_eq!(full["backup_type"], "full");
    assert_eq!(full["files"]["page_files"], 0);

    // 1 % of the rows (and about 2 % of t's pages) change: an incr stores those pages, not t.
    pg.psql("UPDATE t SET v = 'changed' WHERE id <= 2000; CHECKPOINT");
    let incr = typed(&pg, backups.path(), "incr");
    assert_eq!(incr["backup_type"], "incr");
    assert_eq!(incr["reference"], full["id"]);
    let (full_bytes, incr_bytes) = (
        full["bytes"].as_u64().unwrap(),
        incr["bytes"].as_u64().unwrap(),
    );
    assert!(
        incr_bytes * 4 < full_bytes,
        "incr stored {incr_bytes} bytes against the full's {full_bytes}: {incr}"
    );
    assert!(incr["files"]["page_files"].as_u64().unwrap() >= 1, "{incr}");
    assert!(
        incr["files"]["unchanged_files"].as_u64().unwrap() > 100,
        "{incr}"
    );

    pg.psql("UPDATE t SET v = 'again' WHERE id % 100 = 1; CREATE TABLE u AS SELECT 1 AS x");
    let second = typed(&pg, backups.path(), "incr");
    let diff = typed(&pg, backups.path(), "diff");

    let repo = Repository::open(&Location::Local(backups.path().into())).unwrap();
    let id = |v: &serde_json::Value| v["id"].as_str().unwrap().to_string();
    let second_details = details(&repo, &id(&second));
    assert_eq!(second_details.backup_type, BackupType::Incr);
    assert_eq!(second_details.method, CaptureMethod::DataDir);
    assert_eq!(second_details.chain, vec![id(&full), id(&incr)]);
    let diff_details = details(&repo, &id(&diff));
    assert_eq!(diff_details.backup_type, BackupType::Diff);
    assert_eq!(
        diff_details.chain,
        vec![id(&full)],
        "a diff builds on the full"
    );
    assert_eq!(
        diff_details.reference_lsn,
        Some(details(&repo, &id(&full)).start_lsn)
    );

    // The list of every set names every file; the new table is whole in the incr.
    let (set, manifest) = repo.find(Kind::Base, Some(&id(&second))).unwrap();
    let list = filelist::load(&repo, &set, &manifest).unwrap();
    let relfile = pg.psql("SELECT pg_relation_filepath('u')");
    assert_eq!(list.get(&relfile).map(|f| f.stored), Some(Stored::Whole));
    let t_file = pg.psql("SELECT pg_relation_filepath('t')");
    assert_eq!(list.get(&t_file).map(|f| f.stored), Some(Stored::Pages));
    assert!(list.get("global/pg_control").is_some());
    assert!(
        list.get("postmaster.pid").is_none(),
        "skipped as pg_basebackup skips it"
    );
}

#[test]
fn an_incr_without_a_full_to_build_on_is_taken_as_a_full() {
    let backups = db_tempdir("bb-incr-");
    let pg = PgCluster::start_with(archiving_options(backups.path()));
    pg.switch_wal_and_wait_archived();
    // A pg_basebackup set has no file list: nothing to compare with.
    summary(&base_backup(
        &pg,
        backups.path(),
        &["--wal-method", "archive"],
    ));
    let out = base_backup(
        &pg,
        backups.path(),
        &[
            "--type",
            "incr",
            "--pgdata",
            &pg.data_dir.display().to_string(),
        ],
    );
    let json = summary(&out);
    assert_eq!(json["backup_type"], "full");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("taking a full backup"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_type_and_pgdata_combinations_are_refused_before_any_work() {
    let backups = db_tempdir("bb-incr-");
    let pg = PgCluster::start();
    let out = base_backup(&pg, backups.path(), &["--type", "incr"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--type incr needs --pgdata"), "{stderr}");

    // No archiving: the WAL of a --pgdata backup would be nowhere.
    let out = base_backup(
        &pg,
        backups.path(),
        &["--pgdata", &pg.data_dir.display().to_string()],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("keep their WAL in the archive"), "{stderr}");

    let archiving = PgCluster::start_with(archiving_options(backups.path()));
    archiving.switch_wal_and_wait_archived();
    let not_data = db_tempdir("not-pgdata-");
    let out = base_backup(
        &archiving,
        backups.path(),
        &["--pgdata", &not_data.path().display().to_string()],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not a PostgreSQL data directory (no PG_VERSION)"),
        "{stderr}"
    );
    let repo = Repository::open(&Location::Local(backups.path().into())).unwrap();
    assert!(repo.complete_sets(Kind::Base).unwrap().is_empty());
}

#[test]
fn data_checksums_are_verified_and_a_damaged_page_fails_the_run_but_keeps_the_backup() {
    let backups = db_tempdir("bb-sums-");
    let pg = PgCluster::start_with(test_support::pg::PgOptions {
        data_checksums: true,
        ..archiving_options(backups.path())
    });
    pg.psql(
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 50000) g;
         CHECKPOINT",
    );
    pg.switch_wal_and_wait_archived();
    let pgdata = pg.data_dir.display().to_string();
    // Every page PostgreSQL wrote verifies: our checksum is PostgreSQL's.
    let clean = summary(&base_backup(&pg, backups.path(), &["--pgdata", &pgdata]));
    assert_eq!(clean["files"]["checksum_failures"], 0, "{clean}");

    // A bit flips on disk in block 2 of t (the server's buffer stays clean).
    let relfile = pg
        .data_dir
        .join(pg.psql("SELECT pg_relation_filepath('t')"));
    let mut bytes = std::fs::read(&relfile).unwrap();
    bytes[2 * 8192 + 5000] ^= 0x10;
    std::fs::write(&relfile, &bytes).unwrap();
    let out = base_backup(&pg, backups.path(), &["--pgdata", &pgdata]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("checksum verification failed in file"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(json["files"]["checksum_failures"], 1, "{json}");
    let repo = Repository::open(&Location::Local(backups.path().into())).unwrap();
    let damaged = details(&repo, json["id"].as_str().unwrap());
    assert_eq!(damaged.checksum_failures.len(), 1);
    assert_eq!(damaged.checksum_failures[0].blocks, vec![2]);
}

/// The pages a diff stores are the same whether they are found by reading the changed files
/// whole (scan), from the block summaries `wal-archive push` stored beside each segment, or
/// by decoding the WAL when the summaries are gone; and `--changed-pages wal` fails with a
/// clear error where `auto` falls back to a scan when the WAL cannot be read.
#[test]
fn pages_found_by_scan_by_wal_summaries_and_by_decoding_the_wal_agree() {
    let backups = db_tempdir("bb-incr-");
    let pg = PgCluster::start_with(archiving_options(backups.path()));
    pg.psql(
        "CREATE TABLE t (id int PRIMARY KEY, v text) WITH (fillfactor = 100, autovacuum_enabled = off);
         INSERT INTO t SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 100000) g;
         CREATE TABLE gone WITH (autovacuum_enabled = off) AS SELECT g FROM generate_series(1, 50000) g;
         CHECKPOINT",
    );
    pg.switch_wal_and_wait_archived();
    typed(&pg, backups.path(), "full");
    // Updates spread over the table, a table truncated at its end by VACUUM, a new table.
    pg.psql("UPDATE t SET v = 'changed' WHERE id % 97 = 0; DELETE FROM gone WHERE g > 20000");
    pg.psql("VACUUM gone");
    pg.psql("CREATE TABLE fresh AS SELECT g FROM generate_series(1, 1000) g; CHECKPOINT");
    pg.switch_wal_and_wait_archived();
    let wal_dir = backups.path().join("wal");
    let summaries = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&wal_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(".blocks.zst"))
            .collect()
    };
    assert!(!summaries().is_empty(), "wal-archive push stores summaries");

    let pgdata = pg.data_dir.display().to_string();
    let run_diff = |picking: &str| {
        base_backup(
            &pg,
            backups.path(),
            &[
                "--type",
                "diff",
                "--pgdata",
                &pgdata,
                "--changed-pages",
                picking,
            ],
        )
    };
    let diff = |picking: &str| summary(&run_diff(picking));
    let scan = diff("scan");
    let from_summaries = diff("wal");
    for path in summaries() {
        std::fs::remove_file(path).unwrap();
    }
    let decoded = diff("wal");
    assert_eq!(scan["files"]["changed_pages_from"], "scan");
    for json in [&from_summaries, &decoded] {
        assert_eq!(json["files"]["changed_pages_from"], "wal", "{json}");
        for field in ["changed_pages", "page_files", "whole_files"] {
            assert_eq!(
                json["files"][field], scan["files"][field],
                "{field}: {json} vs {scan}"
            );
        }
    }
    assert!(
        scan["files"]["changed_pages"].as_u64().unwrap() > 10,
        "{scan}"
    );

    // The WAL since the full made unreadable: removed from the archive, and pg_wal's copies
    // recycled by checkpoints after enough WAL.
    pg.psql("CREATE TABLE filler AS SELECT g, md5(g::text) FROM generate_series(1, 300000) g; CHECKPOINT");
    pg.switch_wal_and_wait_archived();
    pg.psql("CHECKPOINT");
    let full_start = {
        let repo = Repository::open(&Location::Local(backups.path().into())).unwrap();
        let sets = repo.complete_sets(Kind::Base).unwrap();
        let first = sets.first().unwrap().manifest().cloned().unwrap();
        PhysicalDetails::from_manifest(&first).unwrap().start_lsn
    };
    let first_name = segment_name(
        1,
        segno_of(full_start, DEFAULT_SEGMENT_SIZE),
        DEFAULT_SEGMENT_SIZE,
    );
    let removed: Vec<_> = std::fs::read_dir(&wal_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&first_name)
        })
        .collect();
    assert!(!removed.is_empty(), "{first_name} archived");
    for path in &removed {
        std::fs::remove_file(path).unwrap();
    }
    let _ = std::fs::remove_file(pg.data_dir.join("pg_wal").join(&first_name));
    let out = run_diff("wal");
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot find the changed pages in the WAL") && stderr.contains(&first_name),
        "{stderr}"
    );
    let auto = diff("auto");
    assert_eq!(auto["files"]["changed_pages_from"], "scan", "{auto}");
}

//! A base backup is complete, standard and restorable by PostgreSQL's own tools.

use std::process::Command;

use common::physical::PhysicalDetails;
use common::repo::{Kind, Repository};
use test_support::os_user::{as_db_user, db_tempdir};
use test_support::pg::{archiving_options, pg_bin, run_checked, PgCluster};

use crate::{base_backup, summary};

#[test]
fn gzip_backup_extracts_with_tar_and_passes_pg_verifybackup() {
    let pg = PgCluster::start();
    pg.psql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g");
    let backups = db_tempdir("bb-");
    let out = base_backup(&pg, backups.path(), &[]);
    let json = summary(&out);
    for key in [
        "id",
        "start_lsn",
        "stop_lsn",
        "timeline",
        "bytes",
        "duration_s",
    ] {
        assert!(!json[key].is_null(), "summary lacks {key}: {json}");
    }
    assert_eq!(json["wal_method"], "fetch");
    assert_eq!(json["timeline"], 1);

    let repo = Repository::open(&common::storage::Location::Local(backups.path().into())).unwrap();
    let (set, manifest) = repo.find(Kind::Base, None).unwrap();
    assert_eq!(set.id, json["id"].as_str().unwrap());
    assert!(repo.verify_files(&set.prefix, &manifest).is_empty());
    let details = PhysicalDetails::from_manifest(&manifest).unwrap();
    assert_eq!(
        details.start_lsn.to_string(),
        json["start_lsn"].as_str().unwrap()
    );
    assert!(details.stop_lsn >= details.start_lsn);
    assert_eq!(
        details.system_identifier,
        pg.psql("SELECT system_identifier FROM pg_control_system()")
    );
    assert!(details.file_count > 100);

    // Plain tar unpacks it and pg_verifybackup accepts the copy, WAL included.
    let extracted = db_tempdir("extract-");
    let mut tar = Command::new("tar");
    tar.arg("-xzf")
        .arg(backups.path().join(&set.prefix).join("base.tar.gz"))
        .arg("-C")
        .arg(extracted.path());
    run_checked(as_db_user(&mut tar), "tar -xzf");
    let mut verify = Command::new(pg_bin("pg_verifybackup"));
    verify.arg(extracted.path());
    run_checked(as_db_user(&mut verify), "pg_verifybackup");
    // The set also keeps PostgreSQL's manifest beside the tarball.
    assert!(backups
        .path()
        .join(&set.prefix)
        .join("backup_manifest")
        .is_file());
}

#[test]
fn zstd_backup_with_archived_wal_waits_for_the_archive() {
    let backups = db_tempdir("bb-");
    let pg = PgCluster::start_with(archiving_options(backups.path()));
    pg.psql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS id");
    pg.psql("SELECT pg_switch_wal()");
    let out = base_backup(
        &pg,
        backups.path(),
        &["--compress", "zstd", "--wal-method", "archive"],
    );
    let json = summary(&out);
    assert_eq!(json["wal_method"], "archive");
    assert_eq!(json["compression"], "zstd");
    let repo = Repository::open(&common::storage::Location::Local(backups.path().into())).unwrap();
    let (set, manifest) = repo.find(Kind::Base, None).unwrap();
    assert!(backups
        .path()
        .join(&set.prefix)
        .join("base.tar.zst")
        .is_file());
    let details = PhysicalDetails::from_manifest(&manifest).unwrap();
    let archive = common::wal::WalArchive::new(&repo);
    let size = details.wal_segment_size;
    for segno in common::wal::segno_of(details.start_lsn, size)
        ..=common::wal::segno_of(details.stop_lsn, size)
    {
        let name = common::wal::segment_name(details.timeline, segno, size);
        assert!(
            archive.find(&name).unwrap().is_some(),
            "{name} not archived"
        );
    }
    // With the default (auto), an archiving server and an archive present choose archive.
    let json = summary(&base_backup(&pg, backups.path(), &["--no-retention"]));
    assert_eq!(json["wal_method"], "archive");
}

#[test]
fn retention_keeps_count_and_expires_wal_before_the_oldest_kept_backup() {
    let backups = db_tempdir("bb-");
    let pg = PgCluster::start_with(archiving_options(backups.path()));
    let mut ids = Vec::new();
    for _ in 0..3 {
        pg.psql(
            "CREATE TABLE IF NOT EXISTS t(x int); INSERT INTO t VALUES (1); SELECT pg_switch_wal()",
        );
        let json = summary(&base_backup(
            &pg,
            backups.path(),
            &[
                "--compress",
                "lz4",
                "--retention-days",
                "0",
                "--keep-count",
                "2",
            ],
        ));
        ids.push(json["id"].as_str().unwrap().to_string());
        // Distinct set ids need distinct seconds.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let repo = Repository::open(&common::storage::Location::Local(backups.path().into())).unwrap();
    let left: Vec<String> = repo
        .list(Kind::Base)
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(left, ids[1..].to_vec());
    let (_, oldest) = repo.find(Kind::Base, Some(&ids[1])).unwrap();
    let details = PhysicalDetails::from_manifest(&oldest).unwrap();
    let keep_from = common::wal::segno_of(details.start_lsn, details.wal_segment_size);
    let files = common::wal::WalArchive::new(&repo).list().unwrap();
    assert!(!files.is_empty());
    for file in files {
        if let Some(segno) = file.kind.segno(details.wal_segment_size) {
            assert!(segno >= keep_from, "{} should have expired", file.name);
        }
    }
}

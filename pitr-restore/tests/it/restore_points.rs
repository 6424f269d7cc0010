//! `--target-name` and `--target-xid` without `--backup-id`: the restore point (or the
//! transaction's commit) is found in the WAL archive, and the newest base backup that ended
//! before it is restored, not a newer one that recovery could never take back to it.

use std::process::Output;

use test_support::age_keys::AgeKeys;
use test_support::os_user::db_tempdir;
use test_support::pg::{archiving_to, PgCluster};
use test_support::tool_bin;

use crate::{last_json, Restore, Source};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn values(server: &test_support::pg::DataDirServer) -> String {
    server.psql("SELECT string_agg(n::text, ',' ORDER BY n) FROM t")
}

#[test]
fn restore_point_and_xid_pick_the_backup_that_ended_before_them() {
    let src = Source::start();
    src.pg
        .psql("CREATE TABLE t(n int); INSERT INTO t VALUES (1)");
    let first = src.base_backup(&[]);
    let xid = src
        .pg
        .psql("WITH i AS (INSERT INTO t VALUES (2) RETURNING 1) SELECT txid_current() FROM i");
    src.pg.psql("SELECT pg_create_restore_point('A')");
    src.pg.psql("INSERT INTO t VALUES (3)");
    let second = src.base_backup(&[]);
    src.pg.psql("INSERT INTO t VALUES (4)");
    src.pg.psql("SELECT pg_create_restore_point('B')");
    src.pg.psql("INSERT INTO t VALUES (5)");
    src.pg.switch_wal_and_wait_archived();
    assert_ne!(first["id"], second["id"]);
    let backups = src.backups.path();

    // The newest backup started after A: only the first can reach it.
    for args in [["--target-name", "A"], ["--target-xid", xid.as_str()]] {
        let restore = Restore::in_tempdir();
        let (out, server) = restore.run(backups, &args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let json = last_json(&out);
        assert_eq!(json["id"], first["id"], "{args:?}: {}", stderr(&out));
        assert_eq!(values(&server.unwrap()), "1,2", "{args:?}");
        assert!(
            stderr(&out).contains("found ") && stderr(&out).contains(" at LSN "),
            "{}",
            stderr(&out)
        );
    }

    // B came after both: the newest backup is taken.
    let restore = Restore::in_tempdir();
    let (json, server) = restore.ok(backups, &["--target-name", "B"]);
    assert_eq!(json["id"], second["id"]);
    assert_eq!(values(&server), "1,2,3,4");
    drop(server);

    // The newer backup named with --backup-id cannot reach A: refused before anything is
    // written.
    let restore = Restore::in_tempdir();
    let out = restore.run_only(
        backups,
        &[
            "--target-name",
            "A",
            "--backup-id",
            second["id"].as_str().unwrap(),
        ],
        true,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("after the target restore point 'A' (LSN "),
        "{}",
        stderr(&out)
    );
    assert!(!restore.pgdata.exists());
}

#[test]
fn an_unknown_restore_point_or_xid_is_a_clear_error() {
    let src = Source::start();
    src.pg
        .psql("CREATE TABLE t(n int); INSERT INTO t VALUES (1)");
    let backup = src.base_backup(&[]);
    src.pg.psql("SELECT pg_create_restore_point('known')");
    src.pg.switch_wal_and_wait_archived();
    let start_lsn = backup["start_lsn"].as_str().unwrap().to_string();

    let restore = Restore::in_tempdir();
    let out = restore.run_only(src.backups.path(), &["--target-name", "nope"], true);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.starts_with("pitr-restore: "))
        .unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(
        line.contains("restore point 'nope' is not in the WAL archive")
            && line.contains(&src.backups.path().display().to_string())
            && line.contains("back to LSN "),
        "{line}"
    );
    assert!(
        line.contains(&format!("back to LSN {start_lsn}")),
        "searched back to the backup's start {start_lsn}: {line}"
    );
    assert!(!restore.pgdata.exists(), "nothing restored");

    // A prefix of a real name is not that name; an xid that never ended is not found.
    for args in [["--target-name", "know"], ["--target-xid", "4000000"]] {
        let out = restore.run_only(src.backups.path(), &args, false);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("WAL archive"), "{}", stderr(&out));
        assert!(!restore.pgdata.exists());
    }
}

#[test]
fn restore_point_is_found_in_encrypted_wal() {
    let keys = AgeKeys::generate();
    let backups = db_tempdir("pitr-rp-age-repo-");
    let cfg_dir = db_tempdir("pitr-rp-age-cfg-");
    let config = keys.config_file(cfg_dir.path(), &[]);
    let config_s = config.display().to_string();
    let pg = PgCluster::start_with(archiving_to(
        &backups.path().display().to_string(),
        Some(&config),
    ));
    let backup = |pg: &PgCluster| {
        let mut cmd = pg.command(tool_bin("pg-base-backup"));
        cmd.arg("--backup-dir").arg(backups.path()).args([
            "--output",
            "json",
            "--no-retention",
            "--config",
            &config_s,
        ]);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        last_json(&out)
    };
    pg.psql("CREATE TABLE t(n int); INSERT INTO t VALUES (1)");
    let first = backup(&pg);
    pg.psql("INSERT INTO t VALUES (2)");
    pg.psql("SELECT pg_create_restore_point('A')");
    pg.psql("INSERT INTO t VALUES (3)");
    let second = backup(&pg);
    pg.switch_wal_and_wait_archived();
    assert_eq!(second["encrypted"], true);
    let wal: Vec<String> = std::fs::read_dir(backups.path().join("wal"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    // Every WAL file is encrypted; the segments' block summaries (relation and block
    // numbers, no content) are in clear, like a base set's file list.
    assert!(
        wal.iter()
            .all(|n| n.ends_with(".age") || n.ends_with(".blocks.zst")),
        "{wal:?}"
    );
    assert!(wal.iter().any(|n| n.ends_with(".age")), "{wal:?}");

    let restore = Restore::in_tempdir();
    let (out, server) = restore.run(
        backups.path(),
        &["--config", &config_s, "--target-name", "A"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(last_json(&out)["id"], first["id"]);
    assert_eq!(values(&server.unwrap()), "1,2");
    assert!(!stderr(&out).contains(&keys.secret));

    // Without the key the archive cannot be searched: an error naming the file.
    let restore = Restore::in_tempdir();
    let out = restore.run_only(backups.path(), &["--target-name", "A"], false);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains(".age"), "{}", stderr(&out));
    assert!(!restore.pgdata.exists());
}

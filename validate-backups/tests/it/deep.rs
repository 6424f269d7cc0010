//! `--deep`: test restores of every kind into throwaway places, and their failures.

use crate::support::{command, edit_manifest, finish, good_repo, only_set, Checks};
use test_support::pg::{PgCluster, PgOptions};

#[test]
fn deep_mode_test_restores_every_kind_and_cleans_up() {
    let (h, dir) = good_repo();
    // A server for the logical test restore (archiving, so pg.archiver passes); the broker
    // for the topic replay.
    let pg = PgCluster::start_with(
        PgOptions::default()
            .setting("archive_mode", "on")
            .setting("archive_command", "'/bin/true'"),
    );
    let scratch = h.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let mut cmd = command(&["--output", "json", "--deep"]);
    cmd.arg("--backup-dir")
        .arg(&dir)
        .arg("--scratch-dir")
        .arg(&scratch)
        .envs(pg.env())
        .env("KAFKA_BOOTSTRAP_SERVERS", test_support::kafka::bootstrap());
    let run = finish(cmd.output().unwrap());
    for check in [
        "base.verifybackup",
        "base.test-restore",
        "logical.test-restore",
        "kafka.test-replay",
    ] {
        assert_eq!(
            run.status(check),
            "pass",
            "{check}: {}\n{}",
            run.message(check),
            run.stderr
        );
    }
    assert!(
        run.message("base.test-restore").contains("restored system"),
        "{}",
        run.message("base.test-restore")
    );
    assert_eq!(run.code, 0, "{:?}", run.failed());
    assert_eq!(
        std::fs::read_dir(&scratch).unwrap().count(),
        0,
        "scratch not cleaned up"
    );
    let dbs = pg.psql("SELECT count(*) FROM pg_database WHERE datname NOT IN ('postgres', 'template0', 'template1')");
    assert_eq!(dbs, "0", "the logical test restore left a database behind");
}

#[test]
fn deep_mode_fails_when_a_test_restore_does_not_match() {
    let (_h, dir) = good_repo();
    let pg = PgCluster::start_with(
        PgOptions::default()
            .setting("archive_mode", "on")
            .setting("archive_command", "'/bin/true'"),
    );
    // The manifest promises one row more than the dump holds.
    let set = only_set(&dir, "logical");
    edit_manifest(&set, |m| {
        let table = &mut m["details"]["databases"][0]["tables"][0];
        table["rows"] = (table["rows"].as_u64().unwrap() + 1).into();
    });
    // The WAL archive is gone: no point-in-time restore is possible.
    for e in std::fs::read_dir(dir.join("wal")).unwrap().flatten() {
        std::fs::remove_file(e.path()).unwrap();
    }
    let mut cmd = command(&["--output", "json", "--deep", "--only", "base,logical"]);
    cmd.arg("--backup-dir").arg(&dir).envs(pg.env());
    let run = finish(cmd.output().unwrap());
    run.assert_fails("logical.test-restore", "row_counts");
    run.assert_fails("base.test-restore", "pitr-restore failed");
    // pg_verifybackup checks the extracted files, not the archive: it still passes.
    assert_eq!(
        run.status("base.verifybackup"),
        "pass",
        "{}",
        run.message("base.verifybackup")
    );
}

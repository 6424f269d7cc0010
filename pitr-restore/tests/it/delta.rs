//! `--delta`: a data directory that diverged from the backup (a page overwritten, a file
//! added, one removed) ends identical to a fresh restore, rewriting few files; a running
//! server, another system's directory and a backup without a file list are refused with
//! nothing changed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use test_support::os_user::db_tempdir;
use test_support::pg::PgCluster;

use crate::chains::{backup, backup_picking, dumpall, id, pgbench_init, touch_one_percent};
use crate::{Restore, Source};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every file under `dir` with its size and modification time.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, std::time::SystemTime)> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                pending.push(entry.path());
            }
            files.insert(entry.path(), (meta.len(), meta.modified().unwrap()));
        }
    }
    files
}

/// The data file of a table, relative to the data directory.
fn relation_file(server: &test_support::pg::Endpoint, table: &str) -> String {
    server.psql(&format!("SELECT pg_relation_filepath('{table}')"))
}

#[test]
fn delta_restore_of_a_diverged_directory_equals_a_fresh_restore_and_refuses_what_it_must() {
    let src = Source::start();
    pgbench_init(&src, "1");
    src.pg.psql(
        "CREATE TABLE still AS SELECT g, md5(g::text) AS v FROM generate_series(1, 20000) g; CREATE TABLE other AS SELECT g FROM generate_series(1, 5000) g",
    );
    let still_file = relation_file(&src.pg, "still");
    let other_file = relation_file(&src.pg, "other");
    let full = id(&backup(&src, "full"));
    touch_one_percent(&src, 1);
    let incr = id(&backup(&src, "incr"));
    touch_one_percent(&src, 2);
    src.pg.switch_wal_and_wait_archived();

    // Directory A: the full restored, started, stopped.
    let a = Restore::in_tempdir();
    let (json, server) = a.ok(
        src.backups.path(),
        &["--backup-id", &full, "--target", "immediate"],
    );
    assert_eq!(json["chain"], serde_json::json!([&full]));
    drop(server);
    // It diverges: a page of a table nobody changes since is overwritten in its tuple
    // data, a file appears, a relation file vanishes.
    let still_path = a.pgdata.join(&still_file);
    let mut bytes = std::fs::read(&still_path).unwrap();
    bytes[8000..8100].fill(b'Z');
    std::fs::write(&still_path, &bytes).unwrap();
    let stray = a.pgdata.join("base/stray-file");
    std::fs::write(&stray, b"not from any backup").unwrap();
    std::fs::remove_file(a.pgdata.join(&other_file)).unwrap();

    // A fresh restore of the newest chain, for comparison.
    let fresh = Restore::in_tempdir();
    let (json, fresh_server) = fresh.ok(src.backups.path(), &[]);
    assert_eq!(json["chain"], serde_json::json!([&full, &incr]));
    assert!(json.get("delta").is_none(), "{json}");
    let expected = dumpall(&fresh_server);
    drop(fresh_server);

    // The delta restore of the same chain into A.
    let (json, server) = a.ok(src.backups.path(), &["--delta"]);
    assert_eq!(json["id"], incr.as_str());
    assert_eq!(json["chain"], serde_json::json!([&full, &incr]));
    let delta = &json["delta"];
    let (kept, rewritten, removed) = (
        delta["kept_files"].as_u64().unwrap(),
        delta["rewritten_files"].as_u64().unwrap(),
        delta["removed_files"].as_u64().unwrap(),
    );
    assert!(
        rewritten >= 3 && rewritten * 10 < kept,
        "few files rewritten: {json}"
    );
    assert!(removed >= 1, "{json}");
    assert_eq!(json["restored_bytes"], delta["rewritten_bytes"]);
    assert!(!stray.exists());
    assert!(a.pgdata.join(&other_file).exists());
    assert!(!a.pgdata.join("pitr-restore-delta.pending").exists());
    assert!(
        dumpall(&server) == expected,
        "pg_dumpall after the delta restore differs from a fresh restore's"
    );
    assert_eq!(
        server.psql("SELECT count(*) FROM still WHERE v LIKE '%Z%'"),
        "0"
    );

    // A running server: refused before anything is touched (the server writes on its own,
    // so no snapshot here: the stray file put back stays, pg_control stays).
    std::fs::write(&stray, b"back again").unwrap();
    let out = a.run_only(src.backups.path(), &["--delta"], false);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("is running"), "{}", stderr(&out));
    assert!(stray.exists());
    assert!(a.pgdata.join("global/pg_control").exists());
    assert!(!a.pgdata.join("pitr-restore-delta.pending").exists());
    assert_eq!(server.psql("SELECT count(*) FROM other"), "5000");
    drop(server);

    // Again, stopped: all files kept but the few recovery and the server changed.
    let (json, server) = a.ok(src.backups.path(), &["--delta"]);
    assert!(
        json["delta"]["rewritten_files"].as_u64().unwrap() * 5 < kept,
        "{json}"
    );
    assert!(!stray.exists());
    assert!(dumpall(&server) == expected);
    drop(server);

    // Another system's data directory: refused, unchanged.
    let mut other = PgCluster::start();
    other.stop();
    let before = snapshot(&other.data_dir);
    let elsewhere = Restore {
        dir: db_tempdir("pitr-delta-other-"),
        pgdata: other.data_dir.clone(),
        port: test_support::free_port(),
    };
    let out = elsewhere.run_only(src.backups.path(), &["--delta"], false);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let line = stderr(&out).trim_end().lines().last().unwrap().to_string();
    assert!(line.contains("another database system"), "{line}");
    assert_eq!(snapshot(&other.data_dir), before);

    // A backup without a file list (pg_basebackup): refused, A unchanged.
    let plain = id(&src.base_backup(&[]));
    src.pg.switch_wal_and_wait_archived();
    let before = snapshot(&a.pgdata);
    let out = a.run_only(
        src.backups.path(),
        &["--delta", "--backup-id", &plain],
        false,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("delta restore needs a backup taken with --pgdata"),
        "{}",
        stderr(&out)
    );
    assert_eq!(snapshot(&a.pgdata), before);

    // An empty directory is no data directory: refused.
    let empty = Restore::in_tempdir();
    std::fs::create_dir_all(&empty.pgdata).unwrap();
    let out = empty.run_only(
        src.backups.path(),
        &["--delta", "--backup-id", &incr],
        false,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is not a data directory"),
        "{}",
        stderr(&out)
    );
}

/// Sets a file's modification time back to what it was.
fn set_mtime(path: &Path, to: std::time::SystemTime) {
    std::fs::File::open(path).unwrap().set_modified(to).unwrap();
}

#[test]
fn delta_by_timestamp_reads_only_files_whose_time_changed_and_plain_delta_reads_all() {
    let src = Source::start();
    pgbench_init(&src, "1");
    src.pg.psql(
        "CREATE TABLE still WITH (autovacuum_enabled = off) AS SELECT g, md5(g::text) AS v FROM generate_series(1, 100000) g",
    );
    src.pg.psql("VACUUM (FREEZE) still");
    let still_file = relation_file(&src.pg, "still");
    let full = id(&backup(&src, "full"));
    let a = Restore::in_tempdir();
    let (_, server) = a.ok(
        src.backups.path(),
        &["--backup-id", &full, "--target", "immediate"],
    );
    drop(server);
    // Every restored file has the time its backup listed.
    let listed_mtime = std::fs::metadata(a.pgdata.join(&still_file))
        .unwrap()
        .modified()
        .unwrap();
    let since_epoch = listed_mtime.duration_since(std::time::UNIX_EPOCH).unwrap();
    assert_ne!(since_epoch.subsec_nanos(), 0, "nanoseconds kept");
    touch_one_percent(&src, 1);
    // Pages found by a scan: each file the incr stores has its hash (see the next test for
    // pages found from the WAL).
    let incr = id(&backup_picking(&src, "incr", "scan"));
    src.pg.switch_wal_and_wait_archived();
    let fresh = Restore::in_tempdir();
    let (_, fresh_server) = fresh.ok(src.backups.path(), &[]);
    let expected = dumpall(&fresh_server);
    drop(fresh_server);

    let (json, server) = a.ok(src.backups.path(), &["--delta", "--delta-by-timestamp"]);
    assert_eq!(json["id"], incr.as_str());
    let delta = &json["delta"];
    let (kept, hashed, hashed_bytes, rewritten_bytes) = (
        delta["kept_files"].as_u64().unwrap(),
        delta["hashed_files"].as_u64().unwrap(),
        delta["hashed_bytes"].as_u64().unwrap(),
        delta["rewritten_bytes"].as_u64().unwrap(),
    );
    assert!(
        hashed * 20 < kept,
        "most files trusted by their time: {json}"
    );
    // What is read is about what changed: the unchanged table (6 MB) is not.
    assert!(
        hashed_bytes <= rewritten_bytes + (1 << 20),
        "only files whose time changed are read: {json}"
    );
    assert!(
        dumpall(&server) == expected,
        "pg_dumpall differs from a fresh restore's"
    );
    drop(server);

    // Restored again, not started (the server's reads set hint bits, which rewrites the
    // table's file): every file has its listed time. A page changed behind PostgreSQL's back
    // with its time set back: by timestamp it is trusted (as documented); plain --delta
    // reads every file and restores it.
    let out = a.run_only(src.backups.path(), &["--delta"], false);
    assert!(out.status.success(), "{}", stderr(&out));
    let still_path = a.pgdata.join(&still_file);
    let before = std::fs::metadata(&still_path).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&still_path).unwrap();
    bytes[8000..8100].fill(b'Z');
    std::fs::write(&still_path, &bytes).unwrap();
    set_mtime(&still_path, before);
    let tampered = |path: &Path| std::fs::read(path).unwrap()[8000..8100] == [b'Z'; 100];
    let out = a.run_only(
        src.backups.path(),
        &["--delta", "--delta-by-timestamp"],
        false,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        tampered(&still_path),
        "the tampered page with its time set back was kept"
    );
    // Nothing differs by time: only the chosen set is read (for its backup_label), not the
    // full, although the last restore changed postgresql.auto.conf (recovery settings are
    // written anew, not restored).
    let json = crate::last_json(&out);
    assert_eq!(
        json["delta"]["sets_read"],
        serde_json::json!([&incr]),
        "{json}"
    );
    assert!(
        json["delta"]["hashed_files"].as_u64().unwrap() * 20
            < json["delta"]["kept_files"].as_u64().unwrap(),
        "only files written within a second of a backup's start are read: {json}"
    );
    let (json, server) = a.ok(src.backups.path(), &["--delta"]);
    assert!(!tampered(&still_path), "plain --delta restored it");
    assert_eq!(
        json["delta"]["hashed_files"].as_u64().unwrap(),
        json["delta"]["kept_files"].as_u64().unwrap()
            + json["delta"]["rewritten_files"].as_u64().unwrap()
            - 1,
        "plain --delta hashes every file but pg_control: {json}"
    );
    assert!(dumpall(&server) == expected);

    // --delta-by-timestamp alone is a usage error.
    let out = a.run_only(src.backups.path(), &["--delta-by-timestamp"], false);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// An incr whose pages were found from the WAL stores no hash of its page files (they were
/// not read whole): a delta restore into the full's restore applies only the incr's pages;
/// into a directory already at the incr's state it cannot tell that state by hash and
/// rewrites those files from the full and the incr. Both end as a fresh restore.
#[test]
fn a_delta_restore_over_pages_found_from_the_wal_compares_with_the_full() {
    let src = Source::start();
    pgbench_init(&src, "1");
    let full = id(&backup(&src, "full"));
    touch_one_percent(&src, 1);
    let incr = backup_picking(&src, "incr", "wal");
    assert!(incr["files"]["page_files"].as_u64().unwrap() >= 1, "{incr}");
    let incr = id(&incr);
    src.pg.switch_wal_and_wait_archived();
    let fresh = Restore::in_tempdir();
    let (_, fresh_server) = fresh.ok(src.backups.path(), &[]);
    let expected = dumpall(&fresh_server);
    drop(fresh_server);

    let a = Restore::in_tempdir();
    let out = a.run_only(
        src.backups.path(),
        &["--backup-id", &full, "--target", "immediate"],
        false,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = a.run_only(src.backups.path(), &["--delta"], false);
    assert!(out.status.success(), "{}", stderr(&out));
    let json = crate::last_json(&out);
    assert_eq!(
        json["delta"]["sets_read"],
        serde_json::json!([&incr]),
        "at the full's state: the incr's pages only: {json}"
    );
    let out = a.run_only(src.backups.path(), &["--delta"], false);
    assert!(out.status.success(), "{}", stderr(&out));
    let json = crate::last_json(&out);
    assert_eq!(
        json["delta"]["sets_read"],
        serde_json::json!([&full, &incr]),
        "at the incr's state, unhashed: from the full again: {json}"
    );
    let (_, server) = a.ok(src.backups.path(), &["--delta"]);
    assert!(
        dumpall(&server) == expected,
        "pg_dumpall after the delta restores differs from a fresh restore's"
    );
}

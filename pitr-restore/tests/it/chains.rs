//! Chains of base backups read from the data directory (full -> incr -> diff -> incr): a
//! restore to a point inside each interval unpacks the right chain and gives exactly the
//! source's data there; a chain with a missing or incomplete link is refused with the link
//! named and nothing written.

use std::process::Command;

use test_support::pg::{pg_bin, run_checked, Endpoint};

use crate::{Restore, Source};

/// pg_dumpall of a server, comparable across clusters.
pub fn dumpall(server: &Endpoint) -> String {
    let mut cmd: Command = server.command(pg_bin("pg_dumpall"));
    cmd.args(["--no-comments", "--restrict-key=fixedkeyfortests"]);
    String::from_utf8(run_checked(&mut cmd, "pg_dumpall").stdout).unwrap()
}

/// A base backup of the source read from its data directory (the WAL archive must exist
/// first: a segment is archived), a diff or incr finding its pages as `--changed-pages`
/// `picking` says.
pub fn backup_picking(src: &Source, kind: &str, picking: &str) -> serde_json::Value {
    src.pg.switch_wal_and_wait_archived();
    let pgdata = src.pg.data_dir.display().to_string();
    let summary = src.base_backup(&[
        "--type",
        kind,
        "--pgdata",
        &pgdata,
        "--changed-pages",
        picking,
    ]);
    assert_eq!(summary["backup_type"], kind, "{summary}");
    if kind != "full" && picking != "auto" {
        assert_eq!(summary["files"]["changed_pages_from"], picking, "{summary}");
    }
    summary
}

/// [`backup_picking`] with the default picking.
pub fn backup(src: &Source, kind: &str) -> serde_json::Value {
    backup_picking(src, kind, "auto")
}

pub fn id(summary: &serde_json::Value) -> String {
    summary["id"].as_str().unwrap().to_string()
}

pub fn pgbench_init(src: &Source, scale: &str) {
    let mut init = src.pg.command(pg_bin("pgbench"));
    init.args(["-i", "-s", scale, "-q", "postgres"]);
    run_checked(&mut init, "pgbench -i");
}

/// Changes 1 % of the accounts (every hundredth row).
pub fn touch_one_percent(src: &Source, by: u32) {
    src.pg.psql(&format!(
        "UPDATE pgbench_accounts SET abalance = abalance + {by} WHERE aid % 100 = 0"
    ));
}

/// amcheck on every B-tree index (each heap tuple found in its index) and heap of the
/// restored server: pages restored wrong show here even where pg_dumpall reads past them.
fn check_pages(server: &Endpoint) {
    server.psql("CREATE EXTENSION IF NOT EXISTS amcheck");
    let corrupt = server.psql(
        "SELECT count(*) FROM pg_class c, verify_heapam(c.oid) WHERE c.relkind IN ('r', 'm', 't') AND c.relpersistence = 'p'",
    );
    assert_eq!(corrupt, "0", "verify_heapam found corruption");
    server.psql(
        "SELECT bt_index_check(c.oid, true) FROM pg_class c JOIN pg_am a ON a.oid = c.relam WHERE c.relkind = 'i' AND a.amname = 'btree' AND c.relpersistence = 'p'",
    );
}

#[test]
fn restores_inside_each_interval_of_a_full_incr_diff_incr_chain_equal_the_source() {
    restores_inside_each_interval_equal_the_source("scan");
}

/// The same chain with every diff and incr finding its pages from the WAL: only the pages
/// the WAL names are read, and every restore still equals the source.
#[test]
fn a_chain_whose_pages_were_found_from_the_wal_restores_the_source_at_every_point() {
    restores_inside_each_interval_equal_the_source("wal");
}

/// full -> incr -> diff -> incr, with updates, a dropped and a new table, a database copied
/// from a template, a relation truncated by VACUUM then extended again, restored to a
/// point inside each interval.
fn restores_inside_each_interval_equal_the_source(picking: &str) {
    let src = Source::start();
    pgbench_init(&src, "1");
    src.pg
        .psql("CREATE TABLE still AS SELECT g, md5(g::text) AS v FROM generate_series(1, 20000) g");
    let full = backup(&src, "full");
    let backup = |src: &Source, kind: &str| backup_picking(src, kind, picking);

    touch_one_percent(&src, 1);
    src.pg.psql("SELECT pg_create_restore_point('chain_p1')");
    let at_p1 = dumpall(&src.pg);
    let incr1 = backup(&src, "incr");
    assert!(
        incr1["bytes"].as_u64().unwrap() < full["bytes"].as_u64().unwrap() / 2,
        "an incr of 1 % of the rows is small: {incr1} vs {full}"
    );

    touch_one_percent(&src, 2);
    src.pg.psql(
        "DROP TABLE pgbench_history; CREATE TABLE fresh AS SELECT g, repeat('x', 50) AS pad FROM generate_series(1, 5000) g",
    );
    // A database made by copying its template's files (their pages keep the template's
    // LSNs), and a table emptied at its end, truncated by VACUUM, then filled again.
    src.pg.psql("CREATE DATABASE copied STRATEGY FILE_COPY");
    src.pg.psql("DELETE FROM still WHERE g > 15000");
    src.pg.psql("VACUUM still");
    src.pg
        .psql("INSERT INTO still SELECT g, 'again' FROM generate_series(15001, 17000) g");
    src.pg.psql("SELECT pg_create_restore_point('chain_p2')");
    let at_p2 = dumpall(&src.pg);
    let diff = backup(&src, "diff");

    // Rows deleted at the end and vacuumed: the relation file shrinks.
    touch_one_percent(&src, 3);
    src.pg
        .psql("DELETE FROM pgbench_accounts WHERE aid > 90000");
    src.pg.psql("VACUUM pgbench_accounts");
    src.pg.psql("SELECT pg_create_restore_point('chain_p3')");
    let at_p3 = dumpall(&src.pg);
    let incr2 = backup(&src, "incr");

    touch_one_percent(&src, 4);
    src.pg
        .psql("INSERT INTO fresh SELECT g, 'late' FROM generate_series(1, 100) g");
    let latest = dumpall(&src.pg);
    src.pg.switch_wal_and_wait_archived();

    let (full, incr1, diff, incr2) = (id(&full), id(&incr1), id(&diff), id(&incr2));
    for (args, chain, kind, expected) in [
        (
            vec!["--target-name", "chain_p1"],
            vec![&full],
            "full",
            &at_p1,
        ),
        (
            vec!["--target-name", "chain_p2"],
            vec![&full, &incr1],
            "incr",
            &at_p2,
        ),
        (
            vec!["--target-name", "chain_p3"],
            vec![&full, &diff],
            "diff",
            &at_p3,
        ),
        (vec![], vec![&full, &diff, &incr2], "incr", &latest),
    ] {
        let restore = Restore::in_tempdir();
        let (json, server) = restore.ok(src.backups.path(), &args);
        assert_eq!(
            json["id"],
            chain.last().unwrap().as_str(),
            "{args:?}: {json}"
        );
        assert_eq!(json["chain"], serde_json::json!(chain), "{args:?}: {json}");
        assert_eq!(json["backup_type"], kind, "{args:?}");
        assert!(
            dumpall(&server) == *expected,
            "{args:?}: pg_dumpall of the restore differs from the source's at the target"
        );
        check_pages(&server);
    }

    // The newest chain without any WAL after it: the pages alone must be right.
    let restore = Restore::in_tempdir();
    let (json, server) = restore.ok(
        src.backups.path(),
        &["--backup-id", &incr2, "--target", "immediate"],
    );
    assert_eq!(json["chain"], serde_json::json!([&full, &diff, &incr2]));
    assert_eq!(
        server.psql("SELECT count(*), sum(abalance) FROM pgbench_accounts"),
        "90000|5400",
        "every hundredth of 90000 accounts changed by 1 + 2 + 3"
    );
    check_pages(&server);
}

#[test]
fn a_chain_with_a_missing_or_incomplete_link_is_refused_with_the_link_named() {
    let src = Source::start();
    src.pg
        .psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g");
    backup(&src, "full");
    src.pg
        .psql("INSERT INTO t SELECT generate_series(1001, 2000)");
    let middle = id(&backup(&src, "incr"));
    src.pg
        .psql("INSERT INTO t SELECT generate_series(2001, 3000)");
    let last = id(&backup(&src, "incr"));
    src.pg.switch_wal_and_wait_archived();
    let set_dir = src.backups.path().join("base").join(&middle);
    assert!(set_dir.is_dir(), "{}", set_dir.display());

    // Incomplete (its manifest gone), then missing (its directory gone).
    let manifest = set_dir.join("manifest.json");
    std::fs::remove_file(&manifest).unwrap();
    for problem in ["incomplete", "missing"] {
        let restore = Restore::in_tempdir();
        let out = restore.run_only(src.backups.path(), &[], false);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        let line = stderr.trim_end().lines().last().unwrap();
        assert!(
            line.contains(&middle) && line.contains(&last) && line.contains(problem),
            "{line}"
        );
        assert!(!restore.pgdata.exists(), "nothing written");
        std::fs::remove_dir_all(&set_dir).ok();
    }
}

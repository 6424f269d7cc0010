//! Every kind of recovery target brings back exactly the data of that point.

use crate::{Restore, Source};

/// 100 rows in the backup, 50 more after it, then a noted point, then the table is dropped.
struct Scenario {
    src: Source,
    before_drop_time: String,
    before_drop_lsn: String,
}

fn scenario() -> Scenario {
    let src = Source::start();
    src.pg
        .psql("CREATE TABLE t(id int primary key, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 100) g");
    src.base_backup(&[]);
    src.pg
        .psql("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(101, 150) g");
    src.pg
        .psql("CREATE TABLE survivor(x int); INSERT INTO survivor VALUES (1)");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let before_drop_time = src.now();
    let before_drop_lsn = src.pg.psql("SELECT pg_current_wal_lsn()");
    src.pg.psql("SELECT pg_create_restore_point('before_drop')");
    std::thread::sleep(std::time::Duration::from_millis(300));
    src.pg.psql("DROP TABLE t; INSERT INTO survivor VALUES (2)");
    src.pg.switch_wal_and_wait_archived();
    Scenario {
        src,
        before_drop_time,
        before_drop_lsn,
    }
}

#[test]
fn restore_to_time_lsn_and_restore_point_stops_before_the_drop() {
    let s = scenario();
    let backups = s.src.backups.path();
    for args in [
        vec!["--target-time", s.before_drop_time.as_str()],
        vec!["--target-lsn", s.before_drop_lsn.as_str()],
        vec!["--target-name", "before_drop"],
    ] {
        let restore = Restore::in_tempdir();
        let (json, server) = restore.ok(backups, &args);
        assert_eq!(
            server.psql("SELECT count(*), sum(id) FROM t"),
            "150|11325",
            "{args:?}"
        );
        assert_eq!(
            server.psql("SELECT count(*) FROM survivor"),
            "1",
            "{args:?}"
        );
        // A new timeline, promoted, writable, and the RTO measured.
        assert_eq!(json["timeline"], 2, "{json}");
        assert_eq!(server.psql("SELECT pg_is_in_recovery()"), "f");
        server.psql("INSERT INTO t VALUES (1000, 'after restore')");
        assert!(json["rto_s"].as_f64().unwrap() > 0.0);
        // Archiving is off in the restored copy.
        assert_eq!(server.psql("SHOW archive_mode"), "off");
    }
}

#[test]
fn immediate_stops_at_the_backup_and_latest_replays_everything() {
    let s = scenario();
    let backups = s.src.backups.path();

    let restore = Restore::in_tempdir();
    let (json, server) = restore.ok(backups, &["--target", "immediate"]);
    assert_eq!(json["target"], "immediate");
    assert_eq!(server.psql("SELECT count(*) FROM t"), "100");
    assert!(server.try_psql("SELECT 1 FROM survivor").is_err());
    drop(server);

    let restore = Restore::in_tempdir();
    let (json, server) = restore.ok(backups, &[]);
    assert_eq!(json["target"], "latest");
    assert!(
        server.try_psql("SELECT 1 FROM t").is_err(),
        "the drop is replayed"
    );
    assert_eq!(
        server.psql("SELECT string_agg(x::text, ',' ORDER BY x) FROM survivor"),
        "1,2"
    );
}

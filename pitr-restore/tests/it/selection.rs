//! With several base backups, the restore picks the newest one that can reach the target.

use crate::{last_json, Restore, Source};

#[test]
fn picks_the_newest_backup_that_ended_before_the_target() {
    let src = Source::start();
    src.pg
        .psql("CREATE TABLE t(n int); INSERT INTO t VALUES (1)");
    let first = src.base_backup(&[]);
    src.pg.psql("INSERT INTO t VALUES (2)");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let between = src.now();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = src.base_backup(&[]);
    src.pg.psql("INSERT INTO t VALUES (3)");
    src.pg.switch_wal_and_wait_archived();
    assert_ne!(first["id"], second["id"]);

    let restore = Restore::in_tempdir();
    let (json, server) = restore.ok(src.backups.path(), &["--target-time", &between]);
    assert_eq!(
        json["id"], first["id"],
        "only the first backup ended before the target"
    );
    assert_eq!(
        server.psql("SELECT string_agg(n::text, ',' ORDER BY n) FROM t"),
        "1,2"
    );
    drop(server);

    let restore = Restore::in_tempdir();
    let (json, server) = restore.ok(src.backups.path(), &[]);
    assert_eq!(json["id"], second["id"]);
    assert_eq!(
        server.psql("SELECT string_agg(n::text, ',' ORDER BY n) FROM t"),
        "1,2,3"
    );
    drop(server);

    // A target before every backup is a clear error, and nothing is written.
    let restore = Restore::in_tempdir();
    let out = restore.run_only(
        src.backups.path(),
        &["--target-time", "2000-01-01T00:00:00Z"],
        false,
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("earlier than every base backup"),
        "{stderr}"
    );
    assert!(!restore.pgdata.exists());

    // Without --start the directory is left configured for recovery.
    let restore = Restore::in_tempdir();
    let out = restore.run_only(
        src.backups.path(),
        &["--backup-id", first["id"].as_str().unwrap()],
        false,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(last_json(&out)["started"], false);
    assert!(restore.pgdata.join("recovery.signal").exists());
    let auto = std::fs::read_to_string(restore.pgdata.join("postgresql.auto.conf")).unwrap();
    assert!(auto.contains("restore_command = '") && auto.contains(" fetch %f %p --backup-dir "));
}

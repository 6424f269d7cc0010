//! A backup taken while pgbench writes restores to exactly the source's state at the target.

use std::process::Command;

use test_support::pg::{pg_bin, run_checked};

use crate::{Restore, Source};

fn dumpall(cmd: &mut Command) -> String {
    cmd.args(["--no-comments", "--restrict-key=fixedkeyfortests"]);
    String::from_utf8(run_checked(cmd, "pg_dumpall").stdout).unwrap()
}

#[test]
fn restore_under_pgbench_load_equals_the_source_at_the_target() {
    let src = Source::start();
    let mut init = src.pg.command(pg_bin("pgbench"));
    init.args(["-i", "-s", "2", "-q", "postgres"]);
    run_checked(&mut init, "pgbench -i");
    let mut bench = src.pg.command(pg_bin("pgbench"));
    bench.args(["-c", "2", "-T", "8", "-n", "postgres"]);
    let mut load = bench
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let backup = src.base_backup(&[]);
    assert!(load.wait().unwrap().success(), "pgbench failed");
    // The load has stopped: the source's state now is the target.
    let target_lsn = src.pg.psql("SELECT pg_current_wal_lsn()");
    let mut dump = src.pg.command(pg_bin("pg_dumpall"));
    let expected = dumpall(&mut dump);
    src.pg.switch_wal_and_wait_archived();
    assert!(
        src.pg
            .psql("SELECT count(*) FROM pgbench_history")
            .parse::<u64>()
            .unwrap()
            > 0
    );

    let restore = Restore::in_tempdir();
    let (json, server) = restore.ok(src.backups.path(), &["--target-lsn", &target_lsn]);
    assert_eq!(json["id"], backup["id"]);
    let mut dump = server.command(pg_bin("pg_dumpall"));
    let restored = dumpall(&mut dump);
    assert!(
        restored == expected,
        "pg_dumpall of the restore differs from the source"
    );
}

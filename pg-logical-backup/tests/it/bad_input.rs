//! Bad input: a clear one-line error, exit 2, and nothing written that looks like a set.

use std::process::Command;
use std::time::Duration;

use test_support::os_user::{as_db_user, db_tempdir};
use test_support::pg::{PgCluster, PgOptions};

use crate::support::{create_shop, Env, Run};

#[test]
fn unknown_table_pattern() {
    let env = Env::new();
    create_shop(&env);
    let run = env.run(&["--table", "public.nosuch*"]);
    run.assert_code(2);
    let error = run.error_line("pg-logical-backup");
    assert!(
        error.contains("'public.nosuch*' matches no table"),
        "{error}"
    );
    assert!(env.set_dirs().is_empty(), "no set written");

    // The same for a restore, before anything is touched.
    env.backup(&[]);
    let run = env.restore_here(&["--table", "nosuch", "--yes"]);
    run.assert_code(2);
    assert!(run
        .error_line("pg-logical-backup")
        .contains("'nosuch' matches no table"));

    let run = env.run(&["--table", "a.b.c"]);
    run.assert_code(2);
    assert!(run
        .error_line("pg-logical-backup")
        .contains("invalid table pattern"));
}

#[test]
fn unreachable_server() {
    let backup_dir = db_tempdir("pglb-repo-");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pg-logical-backup"));
    as_db_user(&mut cmd);
    cmd.env("PGHOST", "127.0.0.1")
        .env("PGPORT", test_support::free_port().to_string())
        .env("PGUSER", "postgres")
        .env("PGDATABASE", "postgres")
        .env("BACKUP_DIR", backup_dir.path());
    let run = Run::from(cmd.output().unwrap());
    run.assert_code(2);
    let error = run.error_line("pg-logical-backup");
    assert!(error.contains("cannot connect to PostgreSQL"), "{error}");
    assert!(
        !backup_dir.path().join("logical").exists(),
        "nothing written"
    );
}

#[test]
fn wrong_password_and_then_the_right_one() {
    let secret = "C0rrect-Horse";
    let pg = PgCluster::start_with(PgOptions {
        password: Some(secret.to_string()),
        ..PgOptions::default()
    });
    let backup_dir = db_tempdir("pglb-repo-");
    let tool = |password: &str| {
        let mut cmd = pg.command(env!("CARGO_BIN_EXE_pg-logical-backup"));
        cmd.env("PGHOST", "127.0.0.1")
            .env("PGPASSWORD", password)
            .env("BACKUP_DIR", backup_dir.path())
            .args(["--output", "json"]);
        Run::from(cmd.output().unwrap())
    };
    let wrong = "Wr0ng-Battery";
    let run = tool(wrong);
    run.assert_code(2);
    let error = run.error_line("pg-logical-backup");
    assert!(error.contains("password authentication failed"), "{error}");
    assert!(!run.stderr.contains(wrong) && !run.stdout.contains(wrong));
    assert!(!backup_dir.path().join("logical").exists());

    // The right password reaches pg_dump and pg_dumpall through the environment only.
    let run = tool(secret);
    run.assert_code(0);
    let summary = run.summary();
    let manifest = std::fs::read_to_string(
        backup_dir
            .path()
            .join("logical")
            .join(summary["id"].as_str().unwrap())
            .join("manifest.json"),
    )
    .unwrap();
    assert!(!manifest.contains(secret));
    assert!(!run.stderr.contains(secret));
}

#[test]
fn non_existent_backup_id() {
    let env = Env::new();
    create_shop(&env);
    env.backup(&[]);
    for args in [
        vec![
            "restore",
            "--backup-id",
            "20000101T000000Z",
            "--target-db",
            "x",
            "--yes",
        ],
        vec!["verify", "--backup-id", "20000101T000000Z"],
    ] {
        let run = env.run(&args);
        run.assert_code(2);
        let error = run.error_line("pg-logical-backup");
        assert!(
            error.contains("no logical backup set '20000101T000000Z'"),
            "{error}"
        );
    }
    assert!(!env.database_exists("x"));
}

#[test]
fn unreadable_tables_and_failing_dumps_leave_no_set_behind() {
    let env = Env::new();
    create_shop(&env);
    env.sql(
        "CREATE ROLE reader LOGIN; GRANT SELECT ON customers, orders, notes TO reader;
         CREATE TABLE secret (x int); INSERT INTO secret VALUES (1);",
    );
    let as_reader = |args: &[&str]| {
        Run::from(
            env.tool()
                .env("PGUSER", "reader")
                .args(args)
                .output()
                .unwrap(),
        )
    };
    // Found before anything is written.
    let run = as_reader(&[]);
    run.assert_code(2);
    let error = run.error_line("pg-logical-backup");
    assert!(
        error.contains("may not read 1 table(s)") && error.contains("public.secret"),
        "{error}"
    );
    assert!(env.set_dirs().is_empty());

    // Found by pg_dump half-way (a sequence it may not read): the set is removed again.
    env.sql("GRANT SELECT ON secret TO reader;");
    let run = as_reader(&[]);
    run.assert_code(2);
    let error = run.error_line("pg-logical-backup");
    assert!(
        error.contains("permission denied for sequence orders_id_seq"),
        "{error}"
    );
    assert!(env.set_dirs().is_empty(), "the incomplete set was removed");

    // With every grant a non-superuser backup works; roles are dumped without password
    // hashes, which only superusers may read.
    env.sql("GRANT SELECT ON SEQUENCE orders_id_seq TO reader;");
    let run = as_reader(&["--output", "json"]);
    run.assert_code(0);
    let id = run.summary()["id"].as_str().unwrap().to_string();
    let manifest = env.manifest(&id);
    assert_eq!(manifest["details"]["globals_without_passwords"], true);
    assert_eq!(manifest["source"]["user"], "reader");
}

#[test]
fn sigterm_mid_backup_removes_the_set_stops_pg_dump_and_exits_143() {
    let env = Env::new();
    env.sql("CREATE TABLE big AS SELECT g, repeat(md5(g::text), 8) AS v FROM generate_series(1, 400000) g");
    let child = env
        .tool()
        .args(["--compress-level", "9"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The dump is under way once the set directory has files.
    test_support::process::wait_for("the dump", Duration::from_secs(60), || {
        env.set_dirs()
            .iter()
            .any(|d| std::fs::read_dir(d).is_ok_and(|mut e| e.next().is_some()))
    });
    let run = test_support::process::signal_and_wait(child, "TERM");
    run.assert_interrupted("pg-logical-backup", "TERM");
    // The only error line: the interruption, not an error that followed it.
    run.error_line("pg-logical-backup");
    assert!(env.set_dirs().is_empty(), "the incomplete set was removed");
    // pg_dump was stopped with us: no session of ours is left on the server.
    let ours = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg-logical-backup'";
    test_support::process::wait_for("pg_dump to end", Duration::from_secs(20), || {
        env.pg.psql(ours) == "0"
    });
}

/// The server restarted (immediate) under pg_dump (found by the fault campaign): the one error
/// line carries pg_dump's own error ("server closed the connection unexpectedly", or the
/// backend's "terminating connection due to immediate shutdown command"), not the
/// end of libpq's hint and the query; nothing looks like a set and the next run works.
#[test]
fn a_server_restarted_mid_dump_is_named_and_the_next_run_works() {
    let env = Env::new();
    env.sql("CREATE TABLE big AS SELECT g, repeat(md5(g::text), 8) AS v FROM generate_series(1, 400000) g");
    let child = env
        .tool()
        .args(["--compress-level", "9"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let copying = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY public.big%'";
    test_support::process::wait_for("pg_dump to copy", Duration::from_secs(60), || {
        env.pg.psql(copying) == "1"
    });
    let mut restart = Command::new(test_support::pg::pg_bin("pg_ctl"));
    restart
        .arg("-D")
        .arg(&env.pg.data_dir)
        .arg("-l")
        .arg(env.pg.log_file())
        .args(["-m", "immediate", "-w", "restart"]);
    test_support::pg::run_checked(as_db_user(&mut restart), "pg_ctl restart");
    let run = Run::from(child.wait_with_output().unwrap());
    run.assert_code(2);
    let line = run.error_line("pg-logical-backup");
    // The backend may tell pg_dump why before it goes (immediate shutdown), or just vanish.
    let named = line.contains("server closed the connection")
        || line.contains("terminating connection due to immediate shutdown");
    assert!(
        named && !line.contains("): This probably means"),
        "pg_dump's error is named: {line}"
    );
    assert!(env.set_dirs().is_empty(), "the incomplete set was removed");
    env.backup(&[]);
}

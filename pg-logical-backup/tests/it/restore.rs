//! Restoring: one table into the live database, a whole database into a new one, schema
//! only, and the guards around replacing existing tables.

use test_support::pg::pg_bin;

use crate::support::{create_shop, Env};

#[test]
fn dropped_table_comes_back_and_others_stay_untouched() {
    let env = Env::new();
    create_shop(&env);
    let id = env.backup(&[])["id"].as_str().unwrap().to_string();

    env.sql("DROP TABLE orders; INSERT INTO customers VALUES (51, 'after the backup');");
    let run = env.run(&[
        "restore",
        "--backup-id",
        &id,
        "--target-db",
        &env.db,
        "--table",
        "orders",
        "--yes",
        "--output",
        "json",
    ]);
    run.assert_code(0);
    let records = run.json();
    let orders = records.iter().find(|r| r["type"] == "table").unwrap();
    assert_eq!(orders["table"], "orders");
    assert_eq!(orders["rows"], 300);
    assert_eq!(orders["expected"], 300);
    assert_eq!(orders["matches"], true);
    let summary = run.summary();
    assert_eq!(summary["created"], false);
    assert_eq!(summary["tables"], 1);
    assert!(summary["safety_dump"].is_null());

    assert_eq!(env.count(&env.db, "orders"), 300);
    assert_eq!(env.count(&env.db, "customers"), 51, "customers untouched");
    assert_eq!(env.count(&env.db, "notes"), 3);
    // Its index, foreign key and sequence came back with it.
    assert_eq!(
        env.sql("SELECT count(*) FROM pg_indexes WHERE indexname = 'orders_customer_idx'"),
        "1"
    );
    assert_eq!(
        env.sql("SELECT count(*) FROM pg_constraint WHERE conrelid = 'orders'::regclass AND contype = 'f'"),
        "1"
    );
    assert_eq!(
        env.sql("INSERT INTO orders (customer_id, amount) VALUES (1, 1) RETURNING id")
            .lines()
            .next()
            .unwrap(),
        "301"
    );
    // ANALYZE ran.
    assert_eq!(
        env.sql(
            "SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relname = 'orders'"
        ),
        "t"
    );
}

#[test]
fn whole_database_into_a_new_database_from_a_parallel_dump() {
    let env = Env::new();
    create_shop(&env);
    let id = env.backup(&["--jobs", "2"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let target = test_support::unique_name("copy");
    let run = env.run(&[
        "restore",
        "--target-db",
        &target,
        "--jobs",
        "2",
        "--output",
        "json",
    ]);
    run.assert_code(0);
    let summary = run.summary();
    assert_eq!(summary["id"], id.as_str(), "the newest set by default");
    assert_eq!(summary["created"], true);
    assert_eq!(summary["tables"], 3);
    assert_eq!(summary["rows"], 353);
    assert_eq!(summary["mismatched"], serde_json::json!([]));
    for table in ["customers", "orders", "notes"] {
        assert_eq!(
            env.count(&target, table),
            env.count(&env.db, table),
            "{table}"
        );
    }
    let original =
        env.sql("SELECT string_agg(coalesce(body, '<null>'), '|' ORDER BY id) FROM notes");
    let copied = env.pg.psql_db(
        &target,
        "SELECT string_agg(coalesce(body, '<null>'), '|' ORDER BY id) FROM notes",
    );
    assert_eq!(copied, original);
}

#[test]
fn schema_only_restore_creates_empty_tables() {
    let env = Env::new();
    create_shop(&env);
    env.backup(&[]);
    let target = test_support::unique_name("schema");
    let run = env.run(&[
        "restore",
        "--target-db",
        &target,
        "--schema-only",
        "--output",
        "json",
    ]);
    run.assert_code(0);
    let summary = run.summary();
    assert_eq!(summary["schema_only"], true);
    assert_eq!(summary["tables"], 3);
    for table in ["customers", "orders", "notes"] {
        assert_eq!(env.count(&target, table), 0, "{table}");
    }
    assert_eq!(
        env.pg.psql_db(
            &target,
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f'"
        ),
        "1"
    );

    // Schema only for one table, into a database that lacks it.
    let one = env.pg.create_database(&test_support::unique_name("one"));
    env.run(&[
        "restore",
        "--target-db",
        &one,
        "--schema-only",
        "--table",
        "notes",
        "--yes",
    ])
    .assert_code(0);
    assert_eq!(env.count(&one, "notes"), 0);
}

#[test]
fn replacing_a_table_needs_clean_and_keeps_a_safety_dump() {
    let env = Env::new();
    create_shop(&env);
    env.backup(&[]);
    env.sql("DELETE FROM notes WHERE id = 1; INSERT INTO notes VALUES (99, 'written after');");
    let now = || env.sql("SELECT string_agg(id::text, ',' ORDER BY id) FROM notes");
    assert_eq!(now(), "2,3,99");

    // Without --clean: refused, nothing changed.
    let run = env.restore_here(&["--table", "notes", "--yes"]);
    run.assert_code(2);
    let error = run.error_line("pg-logical-backup");
    assert!(
        error.contains("already exist") && error.contains("--clean"),
        "{error}"
    );
    assert_eq!(now(), "2,3,99");

    // With --clean but no terminal and no --yes: refused.
    let run = env.restore_here(&["--table", "notes", "--clean"]);
    run.assert_code(2);
    assert!(run.error_line("pg-logical-backup").contains("--yes"));
    assert_eq!(now(), "2,3,99");

    let run = env.restore_here(&["--table", "notes", "--clean", "--yes", "--output", "json"]);
    run.assert_code(0);
    assert_eq!(now(), "1,2,3");
    let summary = run.summary();
    let safety = std::path::PathBuf::from(summary["safety_dump"].as_str().unwrap());
    assert!(safety.starts_with(env.backup_dir.path()));
    // The safety dump holds the replaced rows.
    let out = env
        .pg
        .command(pg_bin("pg_restore"))
        .args(["--data-only", "--file=-"])
        .arg(&safety)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("written after"));
}

#[test]
fn a_failed_table_restore_changes_nothing() {
    let env = Env::new();
    create_shop(&env);
    env.backup(&[]);
    env.sql("UPDATE customers SET name = 'changed'; DELETE FROM notes;");
    // customers is referenced by orders' foreign key, so it cannot be dropped and replaced;
    // notes comes first in the same transaction and must be rolled back with it.
    let run = env.restore_here(&[
        "--table",
        "notes",
        "--table",
        "customers",
        "--clean",
        "--yes",
    ]);
    run.assert_code(2);
    let error = run.error_line("pg-logical-backup");
    assert!(error.contains("rolled back"), "{error}");
    assert_eq!(env.count(&env.db, "notes"), 0);
    assert_eq!(
        env.sql("SELECT count(*) FROM customers WHERE name = 'changed'"),
        "50"
    );
}

#[test]
fn a_table_out_of_a_damaged_dump_is_rolled_back() {
    let env = Env::new();
    create_shop(&env);
    let id = env.backup(&[])["id"].as_str().unwrap().to_string();
    env.sql("DELETE FROM notes WHERE id = 1; INSERT INTO notes VALUES (99, 'written after');");
    let now = || env.sql("SELECT string_agg(id::text, ',' ORDER BY id) FROM notes");
    // Bytes added at the end: pg_restore, which reads only the table's entries, does not
    // notice; the check of the dump beside the restore does, before the commit.
    let full = env.full_dump(&id);
    let mut bytes = std::fs::read(&full).unwrap();
    bytes.extend_from_slice(b"not part of the dump");
    std::fs::write(&full, &bytes).unwrap();

    let run = env.restore_here(&["--table", "notes", "--clean", "--yes"]);
    run.assert_code(2);
    let error = run.error_line("pg-logical-backup");
    assert!(
        error.contains("damaged") && error.contains("rolled back"),
        "{error}"
    );
    assert_eq!(now(), "2,3,99");

    let target = test_support::unique_name("never");
    let run = env.run(&["restore", "--target-db", &target, "--table", "notes"]);
    run.assert_code(2);
    let error = run.error_line("pg-logical-backup");
    assert!(error.contains("damaged"), "{error}");
    assert!(!env.database_exists(&target));
}

#[test]
fn a_table_of_another_schema_into_a_new_database() {
    let env = Env::new();
    env.sql(
        r#"CREATE SCHEMA "Audit"; CREATE TABLE "Audit"."Log" (id int PRIMARY KEY, what text);
           INSERT INTO "Audit"."Log" SELECT g, 'event ' || g FROM generate_series(1, 25) g;
           CREATE TABLE other (x int);"#,
    );
    env.backup(&[]);
    let target = test_support::unique_name("audit");
    let run = env.run(&[
        "restore",
        "--target-db",
        &target,
        "--table",
        r#""Audit"."Log""#,
        "--output",
        "json",
    ]);
    run.assert_code(0);
    assert_eq!(env.count(&target, r#""Audit"."Log""#), 25);
    assert_eq!(
        env.pg.psql_db(
            &target,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'other'"
        ),
        "0",
        "only the chosen table"
    );
    assert_eq!(run.summary()["created"], true);
}

#[test]
fn whole_database_over_itself_ends_blocking_sessions() {
    let env = Env::new();
    create_shop(&env);
    env.backup(&[]);
    env.sql("UPDATE customers SET name = 'changed'; INSERT INTO notes VALUES (7, 'new');");
    // A session holding a lock on notes would block the DROP of --clean for a minute.
    let mut blocker = env
        .pg
        .command(pg_bin("psql"))
        .args([
            "-X",
            "-q",
            "-d",
            &env.db,
            "-c",
            "BEGIN; LOCK TABLE notes IN ACCESS SHARE MODE; SELECT pg_sleep(120);",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while env.sql(
        "SELECT count(*) FROM pg_locks WHERE relation = 'notes'::regclass AND mode = 'AccessShareLock' AND pid <> pg_backend_pid()",
    ) == "0"
    {
        assert!(std::time::Instant::now() < deadline, "the blocker never locked notes");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let started = std::time::Instant::now();
    let run = env.restore_here(&[
        "--clean",
        "--yes",
        "--terminate-connections",
        "--output",
        "json",
    ]);
    run.assert_code(0);
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    assert!(
        !blocker.wait().unwrap().success(),
        "the blocking session was ended"
    );
    assert_eq!(
        env.sql("SELECT count(*) FROM customers WHERE name = 'changed'"),
        "0"
    );
    assert_eq!(env.count(&env.db, "notes"), 3);
    // The safety dump of a whole-database restore holds the whole database as it was.
    let safety = run.summary()["safety_dump"].as_str().unwrap().to_string();
    let out = env
        .pg
        .command(pg_bin("pg_restore"))
        .arg("--list")
        .arg(&safety)
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    for table in ["customers", "orders", "notes"] {
        assert!(
            list.contains(&format!("TABLE DATA public {table} ")),
            "{list}"
        );
    }
}

#[test]
fn data_only_replaces_rows_under_foreign_keys_or_rolls_back() {
    let env = Env::new();
    create_shop(&env);
    env.sql("CREATE VIEW named AS SELECT id, name FROM customers;");
    env.backup(&[]);
    env.sql("UPDATE customers SET name = 'damaged' WHERE id <= 10;");
    let damaged = || env.sql("SELECT count(*) FROM customers WHERE name = 'damaged'");

    // Replacing the table is impossible: orders' foreign key and the view depend on it.
    let run = env.restore_here(&["--table", "customers", "--clean", "--yes"]);
    run.assert_code(2);
    let error = run.error_line("pg-logical-backup");
    assert!(error.contains("--data-only"), "{error}");
    assert_eq!(damaged(), "10");

    // A new customer with an order, both missing from the backup: replacing the customers'
    // rows would orphan that order, so nothing changes.
    env.sql("INSERT INTO customers VALUES (51, 'new'); INSERT INTO orders (customer_id, amount) VALUES (51, 5);");
    let run = env.restore_here(&["--table", "customers", "--data-only", "--yes"]);
    run.assert_code(2);
    let error = run.error_line("pg-logical-backup");
    assert!(
        error.contains("rows without a parent") && error.contains("rolled back"),
        "{error}"
    );
    assert_eq!(damaged(), "10");
    assert_eq!(env.count(&env.db, "customers"), 51);

    // Without it the rows are replaced; the view, the foreign key and orders stay.
    env.sql("DELETE FROM orders WHERE customer_id = 51;");
    let run = env.restore_here(&[
        "--table",
        "customers",
        "--data-only",
        "--yes",
        "--output",
        "json",
    ]);
    run.assert_code(0);
    assert_eq!(damaged(), "0");
    assert_eq!(env.count(&env.db, "customers"), 50);
    assert_eq!(env.count(&env.db, "orders"), 300);
    assert_eq!(env.count(&env.db, "named"), 50);
    assert_eq!(
        env.sql("SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND confrelid = 'customers'::regclass"),
        "1"
    );
    assert!(run.summary()["safety_dump"].is_string());

    // --data-only only replaces rows of tables that exist.
    env.sql("DROP TABLE notes;");
    let run = env.restore_here(&["--table", "notes", "--data-only", "--yes"]);
    run.assert_code(2);
    assert!(run
        .error_line("pg-logical-backup")
        .contains("not in database"));
}

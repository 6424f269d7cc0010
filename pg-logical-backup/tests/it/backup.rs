//! Taking backups: one snapshot for every part, manifest contents, table selection, the
//! whole server, retention.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use test_support::pg::pg_bin;

use crate::support::{create_shop, manifest_rows, table_entry, Env};

/// A writer commits one row into `a` and one into `b` per transaction, all through the
/// backup. Only a shared snapshot gives equal counts for `a` and `b` in the manifest and in
/// both the whole-database dump and the separate per-table dumps (`--table-dumps`, taken by
/// different pg_dump processes at different moments), and restores of them give back
/// exactly those counts; so does a table restore out of the whole-database dump.
#[test]
fn one_snapshot_for_every_part_while_inserts_go_on() {
    let env = Env::new();
    env.sql(
        r"CREATE TABLE a (id bigserial PRIMARY KEY, v int NOT NULL);
          CREATE TABLE b (id bigserial PRIMARY KEY, v int NOT NULL);
          CREATE PROCEDURE writer(n int) LANGUAGE plpgsql AS $$
          BEGIN
            FOR i IN 1..n LOOP
              INSERT INTO a (v) VALUES (i);
              PERFORM pg_sleep(0.0005);
              INSERT INTO b (v) VALUES (i);
              COMMIT;
            END LOOP;
          END $$;",
    );
    let mut writer = env
        .pg
        .command(pg_bin("psql"))
        .env("PGAPPNAME", "writer")
        .args(["-X", "-q", "-d", &env.db, "-c", "CALL writer(100000000)"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.count(&env.db, "a") < 200 {
        assert!(Instant::now() < deadline, "the writer does not insert");
        std::thread::sleep(Duration::from_millis(50));
    }

    let summary = env.backup(&["--parallel-dumps", "2", "--table-dumps"]);
    let after_backup = env.count(&env.db, "a");
    env.pg.psql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'writer'",
    );
    let _ = writer.kill();
    let _ = writer.wait();

    let id = summary["id"].as_str().unwrap();
    let manifest = env.manifest(id);
    let rows_a = manifest_rows(&manifest, "public", "a");
    let rows_b = manifest_rows(&manifest, "public", "b");
    assert!(rows_a >= 200, "{rows_a}");
    assert_eq!(
        rows_a, rows_b,
        "a and b are written in one transaction each"
    );
    assert!(
        after_backup > rows_a,
        "the writer kept inserting during the backup ({after_backup} > {rows_a})"
    );

    // The whole-database dump holds exactly the snapshot.
    let full = test_support::unique_name("full");
    env.run(&["restore", "--backup-id", id, "--target-db", &full, "--yes"])
        .assert_code(0);
    assert_eq!(env.count(&full, "a"), rows_a);
    assert_eq!(env.count(&full, "b"), rows_b);

    // So do the per-table dumps, taken by other pg_dump processes.
    let tables = test_support::unique_name("tables");
    env.pg.create_database(&tables);
    let run = env.run(&[
        "restore",
        "--backup-id",
        id,
        "--target-db",
        &tables,
        "--table",
        "a",
        "--table",
        "b",
        "--yes",
        "--output",
        "json",
    ]);
    run.assert_code(0);
    assert_eq!(env.count(&tables, "a"), rows_a);
    assert_eq!(env.count(&tables, "b"), rows_b);
    let records = run.json();
    assert!(records
        .iter()
        .filter(|r| r["type"] == "table")
        .all(|r| r["matches"] == true && r["rows"] == r["expected"]));

    // A table out of the whole-database dump (b has no dump of its own in this second set,
    // taken while nothing writes: its counts are exact too).
    let second = env.backup(&["--table", "a"]);
    let second_id = second["id"].as_str().unwrap();
    let rows_b2 = manifest_rows(&env.manifest(second_id), "public", "b");
    assert!(table_entry(&env.manifest(second_id), "public", "b")["file"].is_null());
    let from_full = test_support::unique_name("fromfull");
    env.run(&[
        "restore",
        "--backup-id",
        second_id,
        "--target-db",
        &from_full,
        "--table",
        "a",
        "--table",
        "b",
        "--yes",
    ])
    .assert_code(0);
    assert_eq!(env.count(&from_full, "b"), rows_b2);
    assert_eq!(env.count(&from_full, "a"), rows_b2);

    // The manifest names the snapshot it used.
    let db = &manifest["details"]["databases"][0];
    assert!(!db["snapshot"].as_str().unwrap().is_empty());
    assert!(db["snapshot_lsn"].as_str().unwrap().contains('/'));
    assert!(db["snapshot_time"].as_str().is_some());
}

#[test]
fn manifest_lists_every_part_with_checksums_and_private_files() {
    let env = Env::new();
    create_shop(&env);
    let summary = env.backup(&[]);
    let id = summary["id"].as_str().unwrap();
    assert_eq!(summary["databases"], serde_json::json!([env.db]));
    assert_eq!(summary["tables"], 3);
    assert_eq!(summary["rows"], 50 + 300 + 3);
    assert!(summary["bytes"].as_u64().unwrap() > 0);
    assert!(summary["duration_secs"].as_f64().is_some());
    assert!(summary["full_dump_secs"].as_f64().unwrap() > 0.0);
    let rss = summary["peak_rss_bytes"].as_u64().unwrap();
    assert!(rss > 0 && rss < 100 << 20, "peak RSS {rss}");

    let manifest = env.manifest(id);
    assert_eq!(manifest["kind"], "logical");
    let details = &manifest["details"];
    assert!(details["server_version"]
        .as_str()
        .unwrap()
        .starts_with("15"));
    let db = &details["databases"][0];
    assert_eq!(db["name"], env.db.as_str());
    assert_eq!(db["format"], "custom");
    assert_eq!(manifest_rows(&manifest, "public", "orders"), 300);
    let orders = table_entry(&manifest, "public", "orders");
    assert_eq!(orders["indexes"], 2);
    assert_eq!(orders["constraints"], 3);
    assert!(orders["size_bytes"].as_u64().unwrap() > 0);

    let set = env.set_dir(id);
    let mut paths: Vec<String> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    paths.sort();
    let dir = db["dir"].as_str().unwrap();
    // One dump per database: tables and the schema are restored out of it.
    let expected = vec![format!("{dir}/full.dump"), "globals.sql".to_string()];
    assert_eq!(paths, expected);
    assert!(db["schema_dump"].is_null());
    assert_eq!(details["details_version"], 2);
    // What a table restore selects from it besides the table's own entries.
    assert_eq!(
        orders["index_names"],
        serde_json::json!(["orders_customer_idx", "orders_pkey"])
    );
    assert_eq!(
        orders["sequences"],
        serde_json::json!([["public", "orders_id_seq"]])
    );
    assert!(orders["file"].is_null());
    for file in manifest["files"].as_array().unwrap() {
        let path = set.join(file["path"].as_str().unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(file["size"], bytes.len() as u64);
    }
    let globals = std::fs::read_to_string(set.join("globals.sql")).unwrap();
    assert!(globals.contains("CREATE ROLE postgres"), "{globals}");
}

#[test]
fn table_patterns_choose_the_table_dumps() {
    let env = Env::new();
    create_shop(&env);
    env.sql("CREATE SCHEMA audit; CREATE TABLE audit.log (id int); INSERT INTO audit.log VALUES (1), (2);");
    let summary = env.backup(&["--table", "public.*", "--exclude-table", "notes"]);
    let manifest = env.manifest(summary["id"].as_str().unwrap());
    assert!(table_entry(&manifest, "public", "customers")["file"].is_string());
    assert!(table_entry(&manifest, "public", "orders")["file"].is_string());
    assert!(table_entry(&manifest, "public", "notes")["file"].is_null());
    let log = table_entry(&manifest, "audit", "log");
    assert!(log["file"].is_null());
    // Every table is counted, dumped individually or not: the whole dump holds them all.
    assert_eq!(log["rows"], 2);
}

#[test]
fn all_databases_in_directory_format_with_retention() {
    let env = Env::new();
    create_shop(&env);
    let other = env.pg.create_database(&test_support::unique_name("other"));
    env.pg.psql_db(
        &other,
        "CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 7);",
    );

    let first = env.backup(&["--all-databases", "--jobs", "2", "--no-retention"]);
    let mut names: Vec<String> = first["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect();
    names.sort();
    let mut expected = vec![env.db.clone(), other.clone(), "postgres".to_string()];
    expected.sort();
    assert_eq!(names, expected);
    let manifest = env.manifest(first["id"].as_str().unwrap());
    let dbs = manifest["details"]["databases"].as_array().unwrap();
    let other_entry = dbs.iter().find(|d| d["name"] == other.as_str()).unwrap();
    assert_eq!(other_entry["format"], "directory");
    assert_eq!(other_entry["tables"][0]["rows"], 7);
    // Each database has its own snapshot.
    let snapshots: std::collections::HashSet<&str> = dbs
        .iter()
        .map(|d| d["snapshot"].as_str().unwrap())
        .collect();
    assert_eq!(snapshots.len(), dbs.len());

    // A second backup with count-based retention deletes the first set, keeps the newest.
    let second = env.backup(&["--retention-days", "0", "--keep-count", "1"]);
    assert_eq!(
        second["retention_deleted"],
        serde_json::json!([first["id"]])
    );
    let sets = env.set_dirs();
    assert_eq!(sets.len(), 1);
    assert!(sets[0].ends_with(second["id"].as_str().unwrap()));
}

/// The rows of the whole-database dump are counted as it streams through the tool, in the
/// stored archive, compressed or not: text that looks like line ends, odd names, an empty
/// table, partitions and a large object (a blob block to step over) all count exactly as
/// `count(*)` in the database; the partitioned parent, which has no data entry, is counted
/// with `count(*)`.
#[test]
fn rows_are_counted_in_the_dump_as_it_streams() {
    let env = Env::new();
    env.sql(
        r#"CREATE TABLE "odd ""name"" ü" (t text);
           INSERT INTO "odd ""name"" ü"
             SELECT E'line\nbreak\ttab\\slash\r' || i FROM generate_series(1, 3000) i;
           INSERT INTO "odd ""name"" ü" VALUES (NULL), (''), (E'\\.'), (E'\n\n\n');
           CREATE SCHEMA "s p";
           CREATE TABLE "s p".empty (id int);
           CREATE TABLE parts (id int, v text) PARTITION BY RANGE (id);
           CREATE TABLE parts_low PARTITION OF parts FOR VALUES FROM (0) TO (1000);
           CREATE TABLE parts_high PARTITION OF parts FOR VALUES FROM (1000) TO (100000);
           INSERT INTO parts SELECT i, md5(i::text) FROM generate_series(1, 20000) i;
           CREATE UNLOGGED TABLE scratch AS SELECT i FROM generate_series(1, 77) i;
           SELECT lo_from_bytea(0, 'a large object');"#,
    );
    let tables = [
        (r#""odd ""name"" ü""#, "public", "odd \"name\" ü", 3004),
        (r#""s p".empty"#, "s p", "empty", 0),
        ("parts_low", "public", "parts_low", 999),
        ("parts_high", "public", "parts_high", 19001),
        ("ONLY parts", "public", "parts", 0),
        ("scratch", "public", "scratch", 77),
    ];
    for compress in [None, Some("0")] {
        let mut args = vec!["--output", "json", "--no-globals"];
        if let Some(level) = compress {
            args.extend(["--compress-level", level]);
        }
        let run = env.run(&args);
        run.assert_code(0);
        // Five tables have a data entry; the partitioned parent has none.
        assert!(
            run.stderr
                .contains("(5 tables counted in the dump as it streamed)"),
            "{compress:?}: {}",
            run.stderr
        );
        let manifest = env.manifest(run.summary()["id"].as_str().unwrap());
        for (sql_name, schema, name, rows) in tables {
            assert_eq!(
                env.count(&env.db, sql_name),
                rows,
                "{sql_name} in the database"
            );
            assert_eq!(
                manifest_rows(&manifest, schema, name),
                rows,
                "{compress:?}: {sql_name} in the manifest"
            );
        }
    }
}

//! Verification: a good set passes every level; damage, missing files and wrong row counts
//! are caught and named.

use serde_json::Value;

use crate::support::{create_shop, read_json, Env};

fn checks(records: &[Value]) -> Vec<(String, bool)> {
    records
        .iter()
        .filter(|r| r["type"] == "check")
        .map(|r| {
            (
                r["check"].as_str().unwrap().to_string(),
                r["passed"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn failed(summary: &Value) -> Vec<String> {
    summary["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect()
}

fn verify_databases_left(env: &Env) -> String {
    env.pg
        .psql("SELECT count(*) FROM pg_database WHERE datname LIKE 'pglb_verify%'")
}

#[test]
fn a_good_set_passes_every_level() {
    let env = Env::new();
    create_shop(&env);
    let id = env.backup(&[])["id"].as_str().unwrap().to_string();
    let run = env.run(&[
        "verify",
        "--backup-id",
        &id,
        "--level",
        "deep",
        "--output",
        "json",
    ]);
    run.assert_code(0);
    let records = run.json();
    let names: Vec<String> = checks(&records)
        .into_iter()
        .map(|(n, ok)| {
            assert!(ok, "{n} failed: {records:?}");
            n
        })
        .collect();
    for expected in [
        "checksums",
        "dump_lists",
        "table_dumps",
        "restore",
        "tables",
        "row_counts",
        "foreign_keys",
        "indexes",
        "constraints",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not run: {names:?}"
        );
    }
    let summary = run.summary();
    assert_eq!(summary["passed"], true);
    assert_eq!(summary["level"], "deep");
    assert_eq!(verify_databases_left(&env), "0");

    // The quick level reads only the repository: no server needed.
    let quick = crate::support::Run::from(
        env.tool()
            .env("PGPORT", test_support::free_port().to_string())
            .args(["verify", "--level", "quick", "--output", "json"])
            .output()
            .unwrap(),
    );
    quick.assert_code(0);
    let names: Vec<String> = checks(&quick.json()).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, vec!["checksums", "dump_lists"]);
}

#[test]
fn a_corrupted_dump_is_caught_and_not_restored() {
    let env = Env::new();
    create_shop(&env);
    let id = env.backup(&[])["id"].as_str().unwrap().to_string();
    let full = env.full_dump(&id);
    let mut bytes = std::fs::read(&full).unwrap();
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 16] {
        *b ^= 0xff;
    }
    std::fs::write(&full, &bytes).unwrap();

    let run = env.run(&["verify", "--level", "standard", "--output", "json"]);
    run.assert_code(1);
    let summary = run.summary();
    assert_eq!(summary["passed"], false);
    assert!(
        failed(&summary).contains(&"checksums".to_string()),
        "{summary}"
    );
    let records = run.json();
    let checksum = records.iter().find(|r| r["check"] == "checksums").unwrap();
    assert!(checksum["problems"][0]
        .as_str()
        .unwrap()
        .contains("full.dump"));
    assert_eq!(verify_databases_left(&env), "0");

    // restore refuses a damaged set before touching the server.
    let target = test_support::unique_name("never");
    let run = env.run(&["restore", "--target-db", &target]);
    run.assert_code(2);
    assert!(run.error_line("pg-logical-backup").contains("damaged"));
    assert!(!env.database_exists(&target));
}

#[test]
fn a_missing_table_file_is_caught() {
    let env = Env::new();
    create_shop(&env);
    // A set of the old shape, with per-table dumps.
    let id = env.backup(&["--table-dumps"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest = env.manifest(&id);
    let tables = manifest["details"]["databases"][0]["tables"]
        .as_array()
        .unwrap();
    let notes = tables.iter().find(|t| t["name"] == "notes").unwrap();
    let file = notes["file"].as_str().unwrap();
    std::fs::remove_file(env.set_dir(&id).join(file)).unwrap();

    let run = env.run(&["verify", "--level", "quick", "--output", "json"]);
    run.assert_code(1);
    let records = run.json();
    let checksum = records.iter().find(|r| r["check"] == "checksums").unwrap();
    assert_eq!(checksum["passed"], false);
    assert!(checksum["problems"][0]
        .as_str()
        .unwrap()
        .contains(&format!("{file}: missing")));
    let f = failed(&run.summary());
    assert!(f.contains(&"checksums".to_string()));
    assert!(f.iter().any(|c| c.starts_with("dump_lists")), "{f:?}");

    // Text output names the failed check too.
    let run = env.run(&["verify", "--level", "quick"]);
    run.assert_code(1);
    assert!(run.stdout.contains("FAIL checksums"), "{}", run.stdout);
}

#[test]
fn a_row_count_mismatch_is_caught() {
    let env = Env::new();
    create_shop(&env);
    let id = env.backup(&[])["id"].as_str().unwrap().to_string();
    // The manifest claims one more order than the snapshot held.
    let path = env.set_dir(&id).join("manifest.json");
    let mut manifest = read_json(&path);
    for table in manifest["details"]["databases"][0]["tables"]
        .as_array_mut()
        .unwrap()
    {
        if table["name"] == "orders" {
            table["rows"] = 301.into();
        }
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();

    // Checksums still pass: only a restore or a row count notices.
    env.run(&["verify", "--level", "quick"]).assert_code(0);
    let run = env.run(&["verify", "--level", "standard", "--output", "json"]);
    run.assert_code(1);
    let f = failed(&run.summary());
    assert!(f.iter().any(|c| c.starts_with("row_counts")), "{f:?}");
    assert!(f.iter().any(|c| c.starts_with("table_dumps")), "{f:?}");
    let records = run.json();
    let counts = records.iter().find(|r| r["check"] == "row_counts").unwrap();
    let problem = counts["problems"][0].as_str().unwrap();
    assert!(
        problem.contains("public.orders") && problem.contains("300") && problem.contains("301"),
        "{problem}"
    );
    assert_eq!(verify_databases_left(&env), "0");

    // A table restore counts the rows in its transaction and reports the difference.
    let run = env.run(&[
        "restore",
        "--target-db",
        "mismatch_copy",
        "--table",
        "orders",
        "--table",
        "customers",
        "--yes",
        "--output",
        "json",
    ]);
    run.assert_code(1);
    let records = run.json();
    let orders = records.iter().find(|r| r["table"] == "orders").unwrap();
    assert_eq!(
        (orders["rows"].as_u64(), orders["expected"].as_u64()),
        (Some(300), Some(301))
    );
    assert_eq!(orders["matches"], false);
    let customers = records.iter().find(|r| r["table"] == "customers").unwrap();
    assert_eq!(customers["matches"], true);
    assert_eq!(
        run.summary()["mismatched"],
        serde_json::json!(["public.orders"])
    );
    assert_eq!(env.count("mismatch_copy", "orders"), 300);
}

#[test]
fn partitions_and_odd_names_pass_deep_verify_and_restore() {
    let env = Env::new();
    env.sql(
        r#"CREATE TABLE events (id int, at date NOT NULL, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
           CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
           CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
           INSERT INTO events SELECT g, date '2025-06-01' + g FROM generate_series(1, 400) g;
           CREATE TABLE "Weird Name" ("Col" text); INSERT INTO "Weird Name" VALUES (E'a\tb');
           CREATE TABLE "user" (id int); INSERT INTO "user" VALUES (1), (2);
           CREATE MATERIALIZED VIEW per_year AS SELECT extract(year FROM at) y, count(*) FROM events GROUP BY 1;"#,
    );
    let id = env.backup(&[])["id"].as_str().unwrap().to_string();
    let run = env.run(&["verify", "--level", "deep", "--output", "json"]);
    run.assert_code(0);
    assert_eq!(run.summary()["passed"], true);

    env.sql("DELETE FROM events; DELETE FROM \"user\";");
    let restore = || {
        env.restore_here(&[
            "--table", "events*", "--table", "user", "--clean", "--yes", "--output", "json",
        ])
    };
    // The materialized view depends on events: replacing it is refused, all rolled back.
    let run = restore();
    run.assert_code(2);
    let error = run.error_line("pg-logical-backup");
    assert!(
        error.contains("per_year depends on table public.events"),
        "{error}"
    );
    assert!(error.contains("dependent objects"), "{error}");
    assert_eq!(env.count(&env.db, "\"user\""), 0);

    env.sql("DROP MATERIALIZED VIEW per_year;");
    restore().assert_code(0);
    assert_eq!(env.count(&env.db, "events"), 400);
    assert_eq!(env.count(&env.db, "\"user\""), 2);

    // `list` shows the set as complete.
    let run = env.run(&["list", "--output", "json"]);
    run.assert_code(0);
    let sets = run.json();
    assert_eq!(sets[0]["id"], id.as_str());
    assert_eq!(sets[0]["complete"], true);
    assert_eq!(sets[0]["tables"], 5);
    assert_eq!(run.summary()["newest_complete"], id.as_str());
}

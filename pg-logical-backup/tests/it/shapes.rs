//! The two shapes of a set: old sets (details version 1, a schema dump and one dump per
//! table) stay restorable, verifiable and listable; a `--jobs 2` set (directory format)
//! restores exactly what a one-job set does, whole or table by table.

use serde_json::Value;

use crate::support::{create_shop, Env};

/// Every table's rows (in id order), indexes and constraints of `db`, as one text to compare.
fn contents(env: &Env, db: &str) -> String {
    let mut text = String::new();
    for table in ["customers", "orders", "notes"] {
        text.push_str(&env.pg.psql_db(
            db,
            &format!(
                "SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY id), '')) FROM {table} t"
            ),
        ));
        text.push('\n');
    }
    text.push_str(&env.pg.psql_db(
        db,
        "SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE schemaname = 'public'",
    ));
    text.push_str(&env.pg.psql_db(
        db,
        "SELECT string_agg(conname || ':' || contype::text, ',' ORDER BY conname) FROM pg_constraint WHERE connamespace = 'public'::regnamespace",
    ));
    text
}

/// Rewrites a set's manifest into what versions before details version 2 wrote: version 1,
/// no index or sequence names (its tables restore from their own dumps).
fn make_version_1(env: &Env, id: &str) {
    let path = env.set_dir(id).join("manifest.json");
    let mut manifest: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let details = &mut manifest["details"];
    details["details_version"] = 1.into();
    for db in details["databases"].as_array_mut().unwrap() {
        assert!(
            db["schema_dump"].is_string(),
            "--table-dumps keeps a schema dump"
        );
        for table in db["tables"].as_array_mut().unwrap() {
            assert!(table["file"].is_string(), "--table-dumps dumps every table");
            let table = table.as_object_mut().unwrap();
            table.remove("index_names");
            table.remove("sequences");
        }
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
}

#[test]
fn an_old_shape_set_restores_verifies_and_lists() {
    let env = Env::new();
    create_shop(&env);
    let id = env.backup(&["--table-dumps"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = env.manifest(&id)["details"]["databases"][0]["dir"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(env.set_dir(&id).join(&dir).join("schema.dump").is_file());
    assert!(env
        .set_dir(&id)
        .join(&dir)
        .join("tables/public.orders.dump")
        .is_file());
    make_version_1(&env, &id);
    let source = contents(&env, &env.db);

    let run = env.run(&["list", "--output", "json"]);
    run.assert_code(0);
    let sets = run.json();
    assert_eq!(sets[0]["id"], id.as_str());
    assert_eq!(sets[0]["complete"], true);
    assert_eq!(sets[0]["tables"], 3);

    let run = env.run(&["verify", "--level", "standard", "--output", "json"]);
    run.assert_code(0);
    let counted = run
        .json()
        .into_iter()
        .find(|r| r["check"] == "table_dumps")
        .unwrap();
    assert_eq!(counted["passed"], true);
    assert_eq!(counted["detail"], "3 table dumps counted");

    // Whole database, then schema only (from the schema dump).
    let whole = test_support::unique_name("whole");
    env.run(&["restore", "--target-db", &whole, "--yes"])
        .assert_code(0);
    assert_eq!(contents(&env, &whole), source);
    let schema = test_support::unique_name("schema");
    env.run(&["restore", "--target-db", &schema, "--schema-only", "--yes"])
        .assert_code(0);
    assert_eq!(env.count(&schema, "orders"), 0);
    assert_eq!(
        env.pg.psql_db(
            &schema,
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f'"
        ),
        "1"
    );

    // A table restore reads the table's own dump: it works with the whole-database dump
    // gone.
    std::fs::write(env.set_dir(&id).join(&dir).join("full.dump"), b"gone").unwrap();
    env.sql("DROP TABLE orders");
    let run = env.restore_here(&["--table", "orders", "--yes", "--output", "json"]);
    run.assert_code(0);
    let orders = run
        .json()
        .into_iter()
        .find(|r| r["type"] == "table")
        .unwrap();
    assert_eq!(orders["rows"], 300);
    assert_eq!(orders["matches"], true);
    assert_eq!(contents(&env, &env.db), source);
}

#[test]
fn a_two_job_set_restores_like_a_one_job_set() {
    let env = Env::new();
    create_shop(&env);
    env.sql("INSERT INTO notes SELECT g, repeat('x', g % 100) FROM generate_series(10, 5000) g;");
    let source = contents(&env, &env.db);
    let one = env.backup(&["--no-globals"]);
    let two = env.backup(&["--no-globals", "--jobs", "2"]);
    let two_manifest = env.manifest(two["id"].as_str().unwrap());
    assert_eq!(
        two_manifest["details"]["databases"][0]["format"],
        "directory"
    );
    assert_eq!(
        env.manifest(one["id"].as_str().unwrap())["details"]["databases"][0]["format"],
        "custom"
    );

    for summary in [&one, &two] {
        let id = summary["id"].as_str().unwrap();
        let whole = test_support::unique_name("whole");
        env.run(&["restore", "--backup-id", id, "--target-db", &whole, "--yes"])
            .assert_code(0);
        assert_eq!(contents(&env, &whole), source, "set {id}");

        // Two tables (one referencing the other) out of the whole-database dump.
        let tables = test_support::unique_name("tables");
        let run = env.run(&[
            "restore",
            "--backup-id",
            id,
            "--target-db",
            &tables,
            "--table",
            "customers",
            "--table",
            "orders",
            "--yes",
            "--output",
            "json",
        ]);
        run.assert_code(0);
        assert!(run
            .json()
            .iter()
            .filter(|r| r["type"] == "table")
            .all(|r| r["matches"] == true));
        assert_eq!(env.count(&tables, "orders"), 300);
        assert_eq!(
            env.pg.psql_db(
                &tables,
                "SELECT string_agg(conname, ',' ORDER BY conname) FROM pg_constraint WHERE conrelid = 'orders'::regclass"
            ),
            "orders_amount_check,orders_customer_id_fkey,orders_pkey"
        );
        // Only what was asked for.
        assert_eq!(
            env.pg.psql_db(
                &tables,
                "SELECT count(*) FROM pg_tables WHERE tablename = 'notes'"
            ),
            "0"
        );
    }
}

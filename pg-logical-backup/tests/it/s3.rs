//! The repository on S3 (the SeaweedFS test service): backup, list, verify, table and
//! whole-database restores, restore-globals and the safety dump work as on a local directory;
//! directory-format dumps go through a temporary directory that is removed; a damaged object
//! fails verify and is never restored; a failed or interrupted backup leaves nothing that
//! looks complete and no open upload; a wrong secret key and a missing bucket are one line,
//! exit 2.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use common::repo::{Kind, Repository};
use test_support::os_user::db_tempdir;
use test_support::pg::pg_bin;
use test_support::s3::S3Env;

use crate::support::*;

fn s3(env: &Env) -> (&S3Env, &str) {
    let (s3, url) = env.s3.as_ref().expect("an S3 environment");
    (s3, url)
}

/// The rows of `notes`, one string, to compare contents before and after.
fn notes(env: &Env, db: &str) -> String {
    env.pg.psql_db(
        db,
        "SELECT string_agg(id || ':' || coalesce(body, '<null>'), '|' ORDER BY id) FROM notes",
    )
}

/// What `pg_restore --data-only` makes of a custom-format dump given on stdin.
fn dump_data(env: &Env, dump: &[u8]) -> String {
    let mut child = env
        .pg
        .command(pg_bin("pg_restore"))
        .args(["--data-only", "--file=-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(dump).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn backup_list_verify_and_table_restore_through_s3() {
    let env = Env::on_s3();
    let (s3, url) = s3(&env);
    create_shop(&env);
    let summary = env.backup(&[]);
    let id = summary["id"].as_str().unwrap().to_string();
    assert_eq!(summary["path"], format!("{url}/logical/{id}"));
    assert_eq!(summary["rows"], 353);

    // The objects match the manifest byte for byte, and nothing else is left: no lock, no
    // marker of a running set, no open upload.
    let store = s3.store(url);
    let repo = Repository::with_store(store.clone());
    let (set, manifest) = repo.find(Kind::Logical, None).unwrap();
    assert_eq!(manifest.id, id);
    // The whole-database dump and the globals: tables restore out of the former.
    assert_eq!(manifest.files.len(), 2, "{:?}", manifest.files);
    assert!(repo.verify_files(&set.prefix, &manifest).is_empty());
    let mut expected: Vec<String> = manifest
        .files
        .iter()
        .map(|f| format!("logical/{id}/{}", f.path))
        .chain([format!("logical/{id}/manifest.json")])
        .collect();
    expected.sort();
    assert_eq!(s3.keys(url), expected);
    assert!(s3.open_uploads(url).is_empty());
    let globals = store.read(&format!("logical/{id}/globals.sql")).unwrap();
    assert!(String::from_utf8_lossy(&globals).contains("CREATE ROLE postgres"));

    let run = env.run(&["list", "--output", "json"]);
    run.assert_code(0);
    let sets = run.records("set");
    assert_eq!(sets.len(), 1);
    assert_eq!(sets[0]["id"], id.as_str());
    assert_eq!(sets[0]["complete"], true);
    assert_eq!(sets[0]["tables"], 3);
    assert_eq!(sets[0]["rows"], 353);

    let run = env.run(&["verify", "--level", "standard", "--output", "json"]);
    run.assert_code(0);
    let checks = run.records("check");
    for name in [
        "checksums",
        "dump_lists",
        "table_dumps",
        "restore",
        "tables",
        "row_counts",
    ] {
        let check = checks
            .iter()
            .find(|c| c["check"] == name)
            .unwrap_or_else(|| panic!("{name} not run: {checks:?}"));
        assert_eq!(check["passed"], true, "{check}");
    }
    assert_eq!(run.summary()["passed"], true);
    assert_eq!(
        env.pg
            .psql("SELECT count(*) FROM pg_database WHERE datname LIKE 'pglb_verify%'"),
        "0"
    );

    // One table back out of the whole-database dump (copied from S3 into a temporary
    // directory, checked on the way), over its damaged self.
    let original = notes(&env, &env.db);
    env.sql(
        "DELETE FROM notes WHERE id = 1; UPDATE notes SET body = 'changed' WHERE id = 2;
         INSERT INTO notes VALUES (99, 'written after');",
    );
    let run = env.restore_here(&["--table", "notes", "--clean", "--yes", "--output", "json"]);
    run.assert_code(0);
    let record = run.record("table", "table", "notes");
    assert_eq!(record["rows"], 3);
    assert_eq!(record["matches"], true);
    assert_eq!(env.count(&env.db, "notes"), 3);
    assert_eq!(notes(&env, &env.db), original);
    assert_eq!(env.count(&env.db, "customers"), 50);
    assert_eq!(env.count(&env.db, "orders"), 300);

    // The safety dump went into the repository on S3 and holds the replaced rows.
    let safety = run.summary()["safety_dump"].as_str().unwrap().to_string();
    let key = safety
        .strip_prefix(&format!("{url}/logical-safety/"))
        .map(|name| format!("logical-safety/{name}"))
        .unwrap_or_else(|| panic!("safety dump outside the repository: {safety}"));
    assert!(dump_data(&env, &store.read(&key).unwrap()).contains("written after"));
}

#[test]
fn directory_format_and_parallel_restores_go_through_a_removed_temporary_directory() {
    let env = Env::on_s3();
    let (s3, url) = s3(&env);
    create_shop(&env);
    let tmp = db_tempdir("pglb-tmp-");
    let leftovers = || std::fs::read_dir(tmp.path()).unwrap().count();
    let with_tmp = |args: &[&str]| {
        Run::from(
            env.tool()
                .env("TMPDIR", tmp.path())
                .args(args)
                .output()
                .unwrap(),
        )
    };

    let run = with_tmp(&["--jobs", "2", "--output", "json"]);
    run.assert_code(0);
    let id = run.summary()["id"].as_str().unwrap().to_string();
    assert_eq!(leftovers(), 0, "the staged dump was removed");
    let keys = s3.keys(url);
    let dir = format!("logical/{id}/{}/full.dir/", env.db);
    assert!(
        keys.iter().any(|k| k == &format!("{dir}toc.dat")),
        "{keys:?}"
    );
    assert!(keys.iter().filter(|k| k.starts_with(&dir)).count() > 3);

    with_tmp(&["verify", "--level", "quick"]).assert_code(0);
    let copy = test_support::unique_name("dircopy");
    let run = with_tmp(&["restore", "--target-db", &copy, "--output", "json"]);
    run.assert_code(0);
    assert_eq!(run.summary()["rows"], 353);
    assert_eq!(notes(&env, &copy), notes(&env, &env.db));
    assert_eq!(leftovers(), 0, "the downloaded dump was removed");

    // A custom-format set restored by parallel workers, which need a seekable file.
    let id = env.backup(&["--no-table-dumps"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let copy = test_support::unique_name("jobscopy");
    let run = with_tmp(&[
        "restore",
        "--backup-id",
        &id,
        "--target-db",
        &copy,
        "--jobs",
        "2",
        "--output",
        "json",
    ]);
    run.assert_code(0);
    assert_eq!(run.summary()["mismatched"], serde_json::json!([]));
    assert_eq!(env.count(&copy, "orders"), 300);
    assert_eq!(notes(&env, &copy), notes(&env, &env.db));
    assert_eq!(leftovers(), 0);
}

#[test]
fn a_damaged_object_fails_verify_and_is_not_restored() {
    let env = Env::on_s3();
    let (s3, url) = s3(&env);
    create_shop(&env);
    let id = env.backup(&["--no-table-dumps"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let key = format!("logical/{id}/{}/full.dump", env.db);
    let store = s3.store(url);
    let mut bytes = store.read(&key).unwrap();
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 16] {
        *b ^= 0xff;
    }
    store.put(&key, &bytes).unwrap();

    let run = env.run(&["verify", "--level", "quick", "--output", "json"]);
    run.assert_code(1);
    let checksums = run.record("check", "check", "checksums");
    assert_eq!(checksums["passed"], false);
    assert!(
        checksums["problems"][0]
            .as_str()
            .unwrap()
            .contains("full.dump"),
        "{checksums}"
    );

    let target = test_support::unique_name("never");
    let run = env.run(&["restore", "--target-db", &target]);
    run.assert_code(2);
    assert!(run.error_line("pg-logical-backup").contains("damaged"));
    assert!(!env.database_exists(&target));
}

#[test]
fn restore_globals_from_s3() {
    let env = Env::on_s3();
    env.pg
        .psql("CREATE ROLE s3_reader LOGIN CONNECTION LIMIT 4 VALID UNTIL '2032-01-01'");
    env.sql("CREATE TABLE t (x int)");
    env.backup(&["--no-table-dumps"]);
    env.pg.psql("DROP ROLE s3_reader");

    let run = env.run(&["restore-globals", "--yes", "--output", "json"]);
    run.assert_code(0);
    let summary = run.summary();
    assert_eq!(summary["errors"], serde_json::json!([]));
    assert!(summary["already_existing"].as_u64().unwrap() >= 1);
    let url = &env.s3.as_ref().unwrap().1;
    assert!(
        summary["file"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{url}/logical/")),
        "{summary}"
    );
    assert_eq!(
        env.pg.psql(
            "SELECT rolcanlogin, rolconnlimit, rolvaliduntil::date FROM pg_roles WHERE rolname = 's3_reader'"
        ),
        "t|4|2032-01-01"
    );
}

#[test]
fn failed_backups_leave_no_complete_set_on_s3() {
    let env = Env::on_s3();
    let (s3, url) = s3(&env);
    create_shop(&env);

    // A database that does not exist: found before anything is written.
    let run = Run::from(env.tool().env("PGDATABASE", "nosuch").output().unwrap());
    run.assert_code(2);
    let error = run.error_line("pg-logical-backup");
    assert!(error.contains("nosuch"), "{error}");
    assert_eq!(s3.keys(url), Vec::<String>::new());

    // pg_dump fails half-way (a sequence the role may not read): the set goes again.
    env.sql("CREATE ROLE s3_dumper LOGIN; GRANT SELECT ON customers, orders, notes TO s3_dumper;");
    let run = Run::from(env.tool().env("PGUSER", "s3_dumper").output().unwrap());
    run.assert_code(2);
    let error = run.error_line("pg-logical-backup");
    assert!(
        error.contains("permission denied for sequence orders_id_seq"),
        "{error}"
    );
    let keys = s3.keys(url);
    assert!(
        !keys.iter().any(|k| k.ends_with("manifest.json")),
        "{keys:?}"
    );
    assert!(
        keys.iter().all(|k| !k.starts_with("logical/2")),
        "the incomplete set was removed: {keys:?}"
    );
    assert!(s3.open_uploads(url).is_empty());
    let run = env.run(&["list", "--output", "json"]);
    run.assert_code(0);
    assert_eq!(run.summary()["sets"], 0);
}

#[test]
fn sigterm_mid_backup_to_s3_leaves_no_set_and_no_upload() {
    let env = Env::on_s3();
    let (s3, url) = s3(&env);
    // Hex that compresses to about half: dumps of tens of MB, so several upload parts.
    env.sql(
        "CREATE TABLE big AS SELECT g, md5(g::text) || md5((-g)::text) || md5((g * 7)::text)
                                       || md5((g * 13)::text) AS v
         FROM generate_series(1, 300000) g",
    );
    let child = env
        .tool()
        .args(["--compress-level", "9"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    test_support::process::wait_for("a multipart upload", Duration::from_secs(60), || {
        !s3.open_uploads(url).is_empty()
    });
    let run = test_support::process::signal_and_wait(child, "TERM");
    run.assert_interrupted("pg-logical-backup", "TERM");
    run.error_line("pg-logical-backup");
    let keys = s3.keys(url);
    assert!(
        keys.iter().all(|k| !k.starts_with("logical/2")),
        "the incomplete set was removed: {keys:?}"
    );
    assert!(s3.open_uploads(url).is_empty());
}

#[test]
fn wrong_secret_key_and_missing_bucket_are_one_line_exit_2() {
    let env = Env::on_s3();
    let (s3, url) = s3(&env);
    env.sql("CREATE TABLE t (x int); INSERT INTO t VALUES (1);");
    let wrong = "Wr0ngS3cretKeyForTheTest";
    for args in [&[][..], &["list"][..], &["verify", "--level", "quick"][..]] {
        let run = Run::from(
            env.tool()
                .env("AWS_SECRET_ACCESS_KEY", wrong)
                .args(args)
                .output()
                .unwrap(),
        );
        run.assert_code(2);
        let error = run.error_line("pg-logical-backup");
        assert!(error.contains(url), "{error}");
        assert!(error.contains("AWS_SECRET_ACCESS_KEY"), "{error}");
        for secret in [wrong, s3.secret_key()] {
            assert!(
                !run.stderr.contains(secret) && !run.stdout.contains(secret),
                "{args:?}: a secret shows"
            );
        }
    }
    assert_eq!(s3.keys(url), Vec::<String>::new());

    let missing = format!("s3://pglb-missing-{}/repo", std::process::id());
    for args in [&[][..], &["list"][..]] {
        let run = Run::from(
            env.tool()
                .env("BACKUP_DIR", &missing)
                .args(args)
                .output()
                .unwrap(),
        );
        run.assert_code(2);
        let error = run.error_line("pg-logical-backup");
        assert!(
            error.contains(&missing) && error.contains("NoSuchBucket"),
            "{error}"
        );
    }

    // With the right key the next run works.
    env.backup(&["--no-globals"]);
}

#[test]
fn encrypted_set_through_s3() {
    use test_support::age_keys::AgeKeys;
    let env = Env::on_s3();
    let (s3, url) = s3(&env);
    create_shop(&env);
    let keys = AgeKeys::generate();
    let with =
        |vars: Vec<(String, String)>, args: &[&str]| Run::of(env.tool().envs(vars).args(args));
    // The old shape (per-table dumps), whose tables restore from their own dumps.
    let summary = with(
        keys.recipients_env(),
        &["--output", "json", "--table-dumps"],
    )
    .ok()
    .summary();
    assert_eq!(summary["encrypted"], true);
    let id = summary["id"].as_str().unwrap().to_string();
    let stored: Vec<String> = s3
        .keys(url)
        .into_iter()
        .filter(|k| !k.ends_with("/manifest.json"))
        .collect();
    assert!(stored.len() >= 6, "{stored:?}");
    // Numbered, not named after the tables.
    assert!(
        stored
            .iter()
            .any(|k| k.ends_with("/db1/tables/t1.dump.age")),
        "{stored:?}"
    );
    assert!(stored.iter().all(|k| k.ends_with(".age")), "{stored:?}");
    let manifest = s3
        .store(url)
        .read(&format!("logical/{id}/manifest.json"))
        .unwrap();
    let manifest = String::from_utf8(manifest).unwrap();
    assert!(
        !manifest.contains("notes") && !manifest.contains("customers"),
        "{manifest}"
    );

    let verify = with(keys.identity_env(), &["verify", "--output", "json"]);
    verify.assert_code(0);
    assert_eq!(verify.summary()["passed"], true);

    // One table back over its changed self: the dump streams from S3 decrypted, and the
    // safety dump of what it replaced goes back encrypted to the set's recipient.
    let original = notes(&env, &env.db);
    env.sql("DELETE FROM notes WHERE id = 1; INSERT INTO notes VALUES (99, 'written after');");
    let run = with(
        keys.identity_env(),
        &[
            "restore",
            "--target-db",
            &env.db,
            "--table",
            "notes",
            "--clean",
            "--yes",
            "--output",
            "json",
        ],
    );
    run.assert_code(0);
    assert_eq!(notes(&env, &env.db), original);
    let safety = run.summary()["safety_dump"].as_str().unwrap().to_string();
    assert!(safety.ends_with(".dump.age"), "{safety}");
    let key = safety.strip_prefix(&format!("{url}/")).unwrap();
    let bytes = s3.store(url).read(key).unwrap();
    assert!(bytes.starts_with(b"age-encryption.org/v1\n"));
    assert!(!run.stderr.contains(&keys.secret));
}

//! Encrypted logical sets (age): backup to a recipient, restore (whole database streamed or
//! from a directory-format dump, single tables), verify and restore-globals with the
//! identity; the Debian `age` CLI reads a stored dump; manifest.json names no table or
//! database; wrong and missing identity, a flipped byte and a truncation stop a restore
//! before the target is touched; passphrase mode; a plaintext set is refused into an
//! encrypted repository unless --allow-unencrypted, and a mixed repository restores both.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use test_support::age_keys::{cmdlines_containing, AgeKeys};
use test_support::os_user::{db_tempdir, give_to_db_user};
use test_support::pg::pg_bin;

use crate::support::{create_shop, Env, Run};

/// A table whose name must never be readable in an encrypted set's manifest.
const SECRET_TABLE: &str = "ledger_of_secrets";

fn setup(env: &Env) {
    create_shop(env);
    env.sql(&format!(
        "CREATE TABLE {SECRET_TABLE} (id int PRIMARY KEY, v text);
         INSERT INTO {SECRET_TABLE} SELECT g, 'v' || g FROM generate_series(1, 40) g;"
    ));
}

/// The tool with extra environment (keys) and arguments.
fn run_with(env: &Env, vars: &[(String, String)], args: &[&str]) -> Run {
    Run::of(env.tool().envs(vars.iter().cloned()).args(args))
}

/// Runs the tool while watching every process's command line: none may hold `secret`.
/// Returns the run and whether a pg_restore child was caught meanwhile.
fn run_watched(env: &Env, vars: &[(String, String)], args: &[&str], secret: &str) -> (Run, bool) {
    let mut child = env
        .tool()
        .envs(vars.iter().cloned())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut caught = false;
    while child.try_wait().unwrap().is_none() {
        let leaked = cmdlines_containing(secret);
        assert!(leaked.is_empty(), "a key on a command line: {leaked:?}");
        caught |= cmdlines_containing("pg_restore")
            .iter()
            .any(|l| l.contains("pg_restore "));
        std::thread::sleep(Duration::from_millis(5));
    }
    (Run::from(child.wait_with_output().unwrap()), caught)
}

fn id_of(summary: &Value) -> String {
    summary["id"].as_str().unwrap().to_string()
}

/// Stored file names of a set, relative to it.
fn stored_files(set: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut dirs = vec![set.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let rel = path.strip_prefix(set).unwrap().display().to_string();
                files.push(rel);
            }
        }
    }
    files.sort();
    files
}

fn assert_no_secret(runs: &[&Run], keys: &AgeKeys) {
    for run in runs {
        assert!(!run.stdout.contains(&keys.secret), "{}", run.stdout);
        assert!(!run.stderr.contains(&keys.secret), "{}", run.stderr);
        assert!(!run.stderr.contains("AGE-SECRET-KEY"), "{}", run.stderr);
    }
}

#[test]
fn encrypted_set_round_trip_and_nothing_in_clear() {
    let env = Env::new();
    setup(&env);
    let keys = AgeKeys::generate();
    let rcpt = keys.recipients_env();
    let ident = keys.identity_env();

    let backup = run_with(&env, &rcpt, &["backup", "--output", "json"]);
    backup.assert_code(0);
    let summary = backup.summary();
    assert_eq!(summary["encrypted"], true, "{summary}");
    assert_eq!(
        summary["tables"], 4,
        "the summary still counts what was dumped"
    );
    let id = id_of(&summary);
    let set = env.set_dir(&id);

    // Every stored file is an age file with a numbered name; the manifest names no table,
    // no database, and records the recipient.
    let files = stored_files(&set);
    assert!(files.contains(&"private.json.age".to_string()), "{files:?}");
    assert!(files.contains(&"globals.sql.age".to_string()), "{files:?}");
    for file in files.iter().filter(|f| *f != "manifest.json") {
        assert!(file.ends_with(".age"), "{file} stored in clear: {files:?}");
        assert!(
            !file.contains("orders") && !file.contains(&env.db),
            "{file}"
        );
    }
    let manifest_text = std::fs::read_to_string(set.join("manifest.json")).unwrap();
    for name in [SECRET_TABLE, "customers", "orders", env.db.as_str()] {
        assert!(
            !manifest_text.contains(name),
            "{name} in clear in manifest.json:\n{manifest_text}"
        );
    }
    assert!(!manifest_text.contains(&keys.secret));
    let manifest: Value = serde_json::from_str(&manifest_text).unwrap();
    assert_eq!(
        manifest["source"]["encryption"]["recipients"][0],
        keys.recipient.as_str()
    );
    for file in manifest["files"].as_array().unwrap() {
        assert!(file["path"].as_str().unwrap().ends_with(".age"), "{file}");
    }
    for file in &files {
        let bytes = std::fs::read(set.join(file)).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(SECRET_TABLE), "{file} holds a table name");
    }

    // The Debian age CLI decrypts the whole-database dump into a file pg_restore lists.
    let full = set.join("db1/full.dump.age");
    let scratch = db_tempdir("pglb-age-cli-");
    let plain = scratch.path().join("full.dump");
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&keys.identity_file)
        .arg("-o")
        .arg(&plain)
        .arg(&full)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    give_to_db_user(&plain);
    let listed = env
        .pg
        .command(pg_bin("pg_restore"))
        .arg("--list")
        .arg(&plain)
        .output()
        .unwrap();
    assert!(listed.status.success());
    let toc = String::from_utf8_lossy(&listed.stdout);
    assert!(
        toc.contains(&format!("TABLE DATA public {SECRET_TABLE} ")),
        "{toc}"
    );

    // `list` without the key shows the set as encrypted; with it, what it holds.
    let listing = run_with(&env, &[], &["list", "--output", "json"]);
    listing.assert_code(0);
    let record = listing.record("set", "id", &id);
    assert_eq!(record["encrypted"], true);
    assert_eq!(record["contents_known"], false);
    assert!(!listing.stdout.contains(SECRET_TABLE));
    let listing = run_with(&env, &ident, &["list", "--output", "json"]);
    let record = listing.record("set", "id", &id);
    assert_eq!(record["contents_known"], true);
    assert_eq!(record["tables"], 4);

    // Whole database into a new one: the dump is decrypted into pg_restore's stdin.
    let target = test_support::unique_name("copy");
    let (whole, caught) = run_watched(
        &env,
        &ident,
        &["restore", "--target-db", &target, "--output", "json"],
        &keys.secret,
    );
    whole.assert_code(0);
    assert_eq!(env.count(&target, SECRET_TABLE), 40);
    assert_eq!(env.count(&target, "orders"), 300);
    assert_eq!(whole.summary()["mismatched"], serde_json::json!([]));

    // One table into the live database, from its own encrypted dump.
    env.sql(&format!("DROP TABLE {SECRET_TABLE}"));
    let (table, caught_too) = run_watched(
        &env,
        &ident,
        &[
            "restore",
            "--target-db",
            &env.db,
            "--table",
            SECRET_TABLE,
            "--yes",
            "--output",
            "json",
        ],
        &keys.secret,
    );
    table.assert_code(0);
    // pg_restore runs for the whole restore, and for the table under psql: seen at least
    // once, so the command-line checks above had a child to look at.
    assert!(
        caught || caught_too,
        "no pg_restore child seen while restoring"
    );
    assert_eq!(env.count(&env.db, SECRET_TABLE), 40);
    assert_eq!(
        env.sql(&format!("SELECT v FROM {SECRET_TABLE} WHERE id = 7")),
        "v7"
    );

    // The globals script, decrypted into psql.
    let globals = run_with(
        &env,
        &ident,
        &["restore-globals", "--yes", "--output", "json"],
    );
    globals.assert_code(0);
    assert!(globals.summary()["file"]
        .as_str()
        .unwrap()
        .ends_with("globals.sql.age"));

    // A directory-format dump (--jobs): staged through a temporary directory, decrypted;
    // verify restores it into a temporary database and counts every table dump.
    let dir_backup = run_with(&env, &rcpt, &["backup", "--jobs", "2", "--output", "json"]);
    dir_backup.assert_code(0);
    let dir_id = id_of(&dir_backup.summary());
    let dir_files = stored_files(&env.set_dir(&dir_id));
    assert!(
        dir_files.iter().any(|f| f == "db1/full.dir/toc.dat.age"),
        "{dir_files:?}"
    );
    let verify = run_with(
        &env,
        &ident,
        &["verify", "--backup-id", &dir_id, "--output", "json"],
    );
    verify.assert_code(0);
    assert_eq!(verify.summary()["passed"], true);
    assert!(verify
        .records("check")
        .iter()
        .any(|c| c["check"] == "row_counts" && c["passed"] == true));
    let target2 = test_support::unique_name("copy");
    let from_dir = run_with(
        &env,
        &ident,
        &[
            "restore",
            "--backup-id",
            &dir_id,
            "--target-db",
            &target2,
            "--jobs",
            "2",
        ],
    );
    from_dir.assert_code(0);
    assert_eq!(env.count(&target2, SECRET_TABLE), 40);
    assert_eq!(env.count(&target2, "customers"), 50);
    assert_no_secret(
        &[
            &backup, &listing, &whole, &table, &globals, &verify, &from_dir,
        ],
        &keys,
    );
}

#[test]
fn encrypted_set_refuses_bad_keys_damage_and_plaintext_and_mixes() {
    let env = Env::new();
    setup(&env);
    let keys = AgeKeys::generate();
    let other = AgeKeys::generate();
    let rcpt = keys.recipients_env();
    let ident = keys.identity_env();

    // A plain set from before encryption, then an encrypted one.
    let plain_id = id_of(
        &run_with(&env, &[], &["--output", "json", "--no-table-dumps"])
            .ok()
            .summary(),
    );
    let encrypted = run_with(&env, &rcpt, &["--output", "json", "--no-table-dumps"]).ok();
    let id = id_of(&encrypted.summary());

    // Missing and wrong identity: exit 2, one line naming the file, no database made.
    for vars in [Vec::new(), other.identity_env()] {
        let target = test_support::unique_name("nokey");
        let run = run_with(
            &env,
            &vars,
            &["restore", "--backup-id", &id, "--target-db", &target],
        );
        run.assert_code(2);
        let line = run.error_line("pg-logical-backup");
        assert!(line.contains("private.json.age"), "{line}");
        assert!(!run.stderr.contains(&other.secret));
        assert!(!env.database_exists(&target));
        let verify = run_with(&env, &vars, &["verify", "--backup-id", &id]);
        verify.assert_code(2);
        assert!(verify
            .error_line("pg-logical-backup")
            .contains("private.json.age"));
    }

    // A flipped byte in the middle of the stored dump, then a truncation: refused before
    // the target is touched, naming the file.
    let full = env.set_dir(&id).join("db1/full.dump.age");
    let original = std::fs::read(&full).unwrap();
    let mut flipped = original.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x10;
    for damaged in [flipped, original[..original.len() - 100].to_vec()] {
        std::fs::write(&full, &damaged).unwrap();
        let target = test_support::unique_name("damaged");
        let run = run_with(
            &env,
            &ident,
            &["restore", "--backup-id", &id, "--target-db", &target],
        );
        run.assert_code(2);
        let line = run.error_line("pg-logical-backup");
        assert!(line.contains("full.dump.age"), "{line}");
        assert!(line.contains("nothing restored"), "{line}");
        assert!(!env.database_exists(&target));
    }
    std::fs::write(&full, &original).unwrap();

    // Recipients gone from the environment: a plaintext set is refused...
    let refused = run_with(&env, &[], &["--output", "json", "--no-table-dumps"]);
    refused.assert_code(2);
    assert!(
        refused
            .error_line("pg-logical-backup")
            .contains("--allow-unencrypted"),
        "{}",
        refused.stderr
    );
    // ...unless asked for.
    let allowed = run_with(
        &env,
        &[],
        &[
            "--output",
            "json",
            "--no-table-dumps",
            "--allow-unencrypted",
        ],
    )
    .ok();
    assert_eq!(allowed.summary()["encrypted"], false);

    // The mixed repository restores both: the old plain set without a key, the encrypted
    // one with it.
    let from_plain = test_support::unique_name("plain");
    run_with(
        &env,
        &[],
        &[
            "restore",
            "--backup-id",
            &plain_id,
            "--target-db",
            &from_plain,
        ],
    )
    .ok();
    assert_eq!(env.count(&from_plain, SECRET_TABLE), 40);
    let from_encrypted = test_support::unique_name("enc");
    run_with(
        &env,
        &ident,
        &[
            "restore",
            "--backup-id",
            &id,
            "--target-db",
            &from_encrypted,
        ],
    )
    .ok();
    assert_eq!(env.count(&from_encrypted, SECRET_TABLE), 40);

    // Passphrase mode, both sides from BACKUP_ENCRYPTION_PASSPHRASE_FILE.
    let dir = db_tempdir("pglb-pass-");
    let pass_file = dir.path().join("passphrase");
    std::fs::write(&pass_file, "correct horse battery staple\n").unwrap();
    give_to_db_user(&pass_file);
    let pass = vec![(
        "BACKUP_ENCRYPTION_PASSPHRASE_FILE".to_string(),
        pass_file.display().to_string(),
    )];
    let pass_backup = run_with(
        &env,
        &pass,
        &["--output", "json", "--no-table-dumps", "--no-globals"],
    )
    .ok();
    let pass_id = id_of(&pass_backup.summary());
    assert_eq!(
        env.manifest(&pass_id)["source"]["encryption"]["passphrase"],
        true
    );
    let target = test_support::unique_name("pass");
    let wrong = run_with(
        &env,
        &ident,
        &["restore", "--backup-id", &pass_id, "--target-db", &target],
    );
    wrong.assert_code(2);
    assert!(!env.database_exists(&target));
    run_with(
        &env,
        &pass,
        &["restore", "--backup-id", &pass_id, "--target-db", &target],
    )
    .ok();
    assert_eq!(env.count(&target, "orders"), 300);

    assert_no_secret(&[&encrypted, &refused, &allowed, &wrong], &keys);
}

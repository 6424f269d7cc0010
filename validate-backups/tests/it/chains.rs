//! Chains of base backups (full -> diff/incr): validate-backups reports a broken chain naming
//! the missing or incomplete link, and pg-base-backup's retention keeps a kept set's chain.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use test_support::os_user::db_tempdir;
use test_support::pg::{archiving_options, PgCluster};

use crate::support::{command, edit_manifest, finish, only_set, tool, validate, Checks};

/// A copy of the repository's only base set under a later id, made an incr of `chain` (full first).
fn fake_incr(repo: &Path, chain: &[&str]) -> String {
    let full = only_set(repo, "base");
    let full_id = full.file_name().unwrap().to_str().unwrap().to_string();
    let started = common::timefmt::parse_id_time(&full_id).unwrap();
    let id = common::timefmt::id_string(started + time_seconds(1));
    let copy = repo.join("base").join(&id);
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg(&full)
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let chain: Vec<String> = chain
        .iter()
        .map(|link| link.replace("FULL", &full_id))
        .collect();
    edit_manifest(&copy, |m| {
        m["id"] = json!(id);
        m["details"]["backup_type"] = json!("incr");
        m["details"]["reference"] = json!(chain.last());
        m["details"]["chain"] = json!(chain);
    });
    id
}

fn time_seconds(n: i64) -> time::Duration {
    time::Duration::seconds(n)
}

/// The base.chain result of one set.
fn chain_result(run: &crate::support::Run, set: &str) -> Value {
    run.checks()
        .into_iter()
        .find(|c| c["check"] == "base.chain" && c["subject"] == set)
        .unwrap_or_else(|| panic!("no base.chain result for {set}:\n{}", run.stdout))
}

/// A repository (mode 0700, owned by the database user) in a temporary directory.
fn repo_dir() -> (tempfile::TempDir, PathBuf) {
    let holder = db_tempdir("validate-chains-");
    let backups = holder.path().join("backups");
    std::fs::create_dir(&backups).unwrap();
    std::fs::set_permissions(
        &backups,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    test_support::os_user::give_to_db_user(&backups);
    (holder, backups)
}

#[test]
fn a_chain_with_a_missing_or_incomplete_link_fails_naming_it() {
    // One full set taken with pg_basebackup, its WAL archived.
    let (_h, dir) = repo_dir();
    let mut pg = PgCluster::start_with(archiving_options(&dir));
    pg.switch_wal_and_wait_archived();
    let repo = dir.to_str().unwrap();
    tool(
        &pg,
        "pg-base-backup",
        &["--backup-dir", repo, "--wal-method", "archive", "-q"],
        &[],
    );
    pg.stop();
    let full = only_set(&dir, "base");
    let full_id = full.file_name().unwrap().to_str().unwrap().to_string();
    // Full sets alone have no chain to check.
    let run = validate(&dir, &["--only", "base"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.status("base.chain"), "skip");

    let missing = "20200101T000000Z";
    let incr = fake_incr(&dir, &["FULL", missing]);
    let run = validate(&dir, &["--only", "base"]);
    run.assert_fails(
        "base.chain",
        &format!("needs base backup {missing}, which is missing"),
    );
    let result = chain_result(&run, &incr);
    assert_eq!(result["status"], "fail");
    assert!(
        result["message"].as_str().unwrap().contains(&incr),
        "{result}"
    );
    assert_eq!(
        run.failed(),
        ["base.chain"],
        "only the chain is broken: {}",
        run.stdout
    );
    // An incr is not compared with full sets' sizes.
    assert_eq!(run.status("base.size-change"), "skip");

    // The full of the chain loses its manifest (a crashed run): the link is incomplete.
    edit_manifest(&dir.join("base").join(&incr), |m| {
        m["details"]["chain"] = json!([full_id]);
        m["details"]["reference"] = json!(full_id);
    });
    std::fs::remove_file(full.join("manifest.json")).unwrap();
    let run = validate(&dir, &["--only", "base"]);
    run.assert_fails(
        "base.chain",
        &format!("needs base backup {full_id}, which is incomplete"),
    );

    // An incr whose details name no chain cannot be restored either.
    edit_manifest(&dir.join("base").join(&incr), |m| {
        m["details"]["chain"] = json!([]);
    });
    let run = validate(&dir, &["--only", "base"]);
    run.assert_fails(
        "base.chain",
        "the details of this incr backup name no chain",
    );
}

/// pg-base-backup reading `pg`'s data directory into `backups`; the summary line.
fn pgdata_backup(pg: &PgCluster, backups: &Path, kind: &str, extra: &[&str]) -> Value {
    let pgdata = pg.data_dir.display().to_string();
    let mut args = vec![
        "--backup-dir",
        backups.to_str().unwrap(),
        "--type",
        kind,
        "--pgdata",
        &pgdata,
        "--output",
        "json",
    ];
    args.extend_from_slice(extra);
    let out = tool(pg, "pg-base-backup", &args, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Value = serde_json::from_str(stdout.lines().last().expect("a summary")).unwrap();
    assert_eq!(summary["backup_type"], kind, "{summary}");
    summary
}

fn id(summary: &Value) -> String {
    summary["id"].as_str().unwrap().to_string()
}

fn base_ids(backups: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(backups.join("base"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .collect();
    ids.sort();
    ids
}

#[test]
fn retention_keeps_chains_whole_and_validate_names_a_deleted_link() {
    let (holder, backups) = repo_dir();
    let pg = PgCluster::start_with(archiving_options(&backups));
    pg.psql(
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g;
         CHECKPOINT",
    );
    pg.switch_wal_and_wait_archived();
    let no_retention = ["--no-retention"];
    let old_full = pgdata_backup(&pg, &backups, "full", &no_retention);
    pg.psql("UPDATE t SET v = 'one' WHERE id <= 200; CHECKPOINT");
    let full = pgdata_backup(&pg, &backups, "full", &no_retention);
    pg.psql("UPDATE t SET v = 'two' WHERE id % 100 = 7; CHECKPOINT");
    let first = pgdata_backup(&pg, &backups, "incr", &no_retention);
    assert_eq!(first["reference"], full["id"]);
    pg.psql("UPDATE t SET v = 'three' WHERE id % 100 = 9; CHECKPOINT");
    // Only the newest set by count: the newest is an incr, so its whole chain stays.
    let second = pgdata_backup(
        &pg,
        &backups,
        "incr",
        &["--retention-days", "0", "--keep-count", "1"],
    );
    assert_eq!(second["reference"], first["id"]);
    assert_eq!(second["deleted_sets"], json!([id(&old_full)]), "{second}");
    assert!(
        second["expired_wal_files"].as_u64().unwrap() >= 1,
        "WAL older than the remaining chain's full expires: {second}"
    );
    assert_eq!(base_ids(&backups), [id(&full), id(&first), id(&second)]);
    pg.switch_wal_and_wait_archived();

    let run = validate(&backups, &["--only", "base,wal"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let chained = chain_result(&run, &id(&second));
    assert_eq!(chained["status"], "pass", "{chained}");
    assert!(
        chained["message"].as_str().unwrap().contains(&format!(
            "full {} -> incr {} -> incr {}",
            id(&full),
            id(&first),
            id(&second)
        )),
        "{chained}"
    );
    assert_eq!(chain_result(&run, &id(&first))["status"], "pass");
    assert_eq!(run.status("wal.continuity"), "pass", "{}", run.stdout);
    let details = run.message("base.details");
    assert!(
        details.contains("no PostgreSQL backup_manifest") && details.contains("files.json lists"),
        "{details}"
    );

    // --deep: a set read from the data directory has no backup_manifest for pg_verifybackup;
    // the test restore restores the newest set, an incr, through its chain.
    let scratch = holder.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    test_support::os_user::give_to_db_user(&scratch);
    let mut cmd = command(&["--output", "json", "--deep", "--only", "base"]);
    cmd.arg("--backup-dir")
        .arg(&backups)
        .arg("--scratch-dir")
        .arg(&scratch);
    let deep = finish(cmd.output().unwrap());
    assert_eq!(deep.status("base.verifybackup"), "skip", "{}", deep.stdout);
    assert!(
        deep.message("base.verifybackup")
            .contains("no PostgreSQL backup_manifest"),
        "{}",
        deep.message("base.verifybackup")
    );
    assert_eq!(
        deep.status("base.test-restore"),
        "pass",
        "{}\n{}",
        deep.message("base.test-restore"),
        deep.stderr
    );
    assert_eq!(deep.code, 0, "{:?}", deep.failed());

    // The middle incr disappears (deleted by hand): the newest one cannot be restored.
    std::fs::remove_dir_all(backups.join("base").join(id(&first))).unwrap();
    let run = validate(&backups, &["--only", "base"]);
    run.assert_fails(
        "base.chain",
        &format!("needs base backup {}, which is missing", id(&first)),
    );
    assert_eq!(chain_result(&run, &id(&second))["status"], "fail");
}

#[test]
fn encrypted_chains_are_checked_without_and_with_the_key() {
    let keys = test_support::age_keys::AgeKeys::generate();
    let (_holder, backups) = repo_dir();
    let pg = PgCluster::start_with(archiving_options(&backups));
    pg.psql("CREATE TABLE t AS SELECT generate_series(1, 20000) AS n; CHECKPOINT");
    pg.switch_wal_and_wait_archived();
    let encrypted = |kind: &str| {
        let pgdata = pg.data_dir.display().to_string();
        let args = [
            "--backup-dir",
            backups.to_str().unwrap(),
            "--type",
            kind,
            "--pgdata",
            &pgdata,
            "--no-retention",
            "-q",
        ];
        tool(&pg, "pg-base-backup", &args, &keys.recipients_env());
    };
    encrypted("full");
    pg.psql("UPDATE t SET n = -n WHERE n <= 100; CHECKPOINT");
    encrypted("incr");
    let ids = base_ids(&backups);
    assert_eq!(ids.len(), 2);

    // Without a key: the file list is in clear by design (not an encryption failure), the
    // hashes are not read, the chain is whole.
    let run = validate(&backups, &["--only", "base"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.status("base.encryption"), "pass", "{}", run.stdout);
    let details = run.message("base.details");
    assert!(
        details.contains("files.json lists")
            && details.contains("hashes.json encrypted: content not checked without a key"),
        "{details}"
    );
    assert_eq!(chain_result(&run, &ids[1])["status"], "pass");

    // With the key the hashes are read too.
    let mut cmd = command(&["--output", "json", "--only", "base"]);
    cmd.arg("--backup-dir")
        .arg(&backups)
        .envs(keys.identity_env());
    let run = finish(cmd.output().unwrap());
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let details = run.message("base.details");
    assert!(
        details.contains("hashes") && !details.contains("not checked"),
        "{details}"
    );
    assert!(!run.stdout.contains(&keys.secret) && !run.stderr.contains(&keys.secret));

    // A file list that does not parse (its recorded checksum matching) fails base.details,
    // naming the file.
    let incr = backups.join("base").join(&ids[1]);
    let garbage = b"{\"dirs\": [".to_vec();
    std::fs::write(incr.join("files.json"), &garbage).unwrap();
    edit_manifest(&incr, |m| {
        for f in m["files"].as_array_mut().unwrap() {
            if f["path"] == "files.json" {
                f["size"] = garbage.len().into();
                f["sha256"] = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&garbage)).into();
            }
        }
    });
    let run = validate(&backups, &["--only", "base"]);
    run.assert_fails(
        "base.details",
        "files.json is not a data directory file list",
    );
    assert!(
        run.message("base.details").contains(&ids[1]),
        "{}",
        run.stdout
    );
}

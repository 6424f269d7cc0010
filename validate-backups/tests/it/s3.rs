//! validate-backups on a repository in S3 (the SeaweedFS test service): the same repository
//! as the local tests, written there by the real tools, checked, damaged object by object,
//! and the recovery drill with its repository on S3.

use std::sync::OnceLock;

use common::repo::Repository;
use common::Kind;
use serde_json::Value;
use test_support::os_user::db_tempdir;
use test_support::pg::{archiving_to, PgCluster, PgOptions};
use test_support::s3::{self, S3Env};

use crate::support::{build_fixture, command, finish, Checks, Destination, Run, TOPIC_RECORDS};

/// The good repository on S3, built once per test run (never changed: tests copy it).
fn fixture(s3: &S3Env) -> &'static str {
    static FIXTURE: OnceLock<String> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let url = s3.url("validate-fixture");
        // PostgreSQL's archive_command runs in the server's environment: a config file
        // carries the S3 settings there.
        let config_dir = db_tempdir("validate-s3-config-");
        let config = s3.config_file(config_dir.path());
        build_fixture(&Destination {
            backup_dir: url.clone(),
            env: s3.vars(),
            archiving: archiving_to(&url, Some(&config)),
        });
        url
    })
}

/// A private copy of the good S3 repository under a fresh prefix.
fn good_repo(s3: &S3Env) -> String {
    let from = s3.store(fixture(s3));
    let url = s3.url("validate-repo");
    let to = s3.store(&url);
    for object in from.list("").unwrap() {
        to.put(&object.key, &from.read(&object.key).unwrap())
            .unwrap();
    }
    url
}

/// validate-backups on the S3 repository `url` with JSON output and extra arguments.
fn validate(s3: &S3Env, url: &str, extra: &[&str]) -> Run {
    let mut cmd = command(&["--output", "json", "--backup-dir", url]);
    cmd.args(extra);
    finish(s3.apply(&mut cmd).output().expect("run validate-backups"))
}

/// The key of the one complete set of `kind`, and its manifest.
fn only_set(s3: &S3Env, url: &str, kind: Kind) -> (String, Value) {
    let repo = Repository::with_store(s3.store(url));
    let sets = repo.complete_sets(kind).unwrap();
    assert_eq!(sets.len(), 1, "{kind} sets in {url}");
    let manifest = repo.store().read(&sets[0].key("manifest.json")).unwrap();
    (
        sets[0].prefix.clone(),
        serde_json::from_slice(&manifest).unwrap(),
    )
}

#[test]
fn repository_on_s3_built_by_the_tools_passes_every_check() {
    let s3 = s3::env();
    let url = good_repo(&s3);
    let work = tempfile::tempdir().unwrap();
    let metrics = work.path().join("m.prom");
    let run = validate(
        &s3,
        &url,
        &[
            "--require",
            "base,wal,logical,kafka,slots",
            "--metrics-file",
            metrics.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    for check in [
        "repo.layout",
        "repo.writable",
        "repo.locks",
        "repo.incomplete-sets",
        "repo.temp-files",
        "base.manifest",
        "base.files",
        "base.decompress",
        "base.details",
        "base.wal-present",
        "base.freshness",
        "wal.continuity",
        "wal.freshness",
        "logical.files",
        "logical.dump-list",
        "logical.freshness",
        "kafka.files",
        "kafka.archive",
        "kafka.freshness",
        "slots.files",
        "slots.inventory",
        "slots.freshness",
    ] {
        assert_eq!(run.status(check), "pass", "{check}: {}", run.message(check));
    }
    assert!(
        run.message("repo.layout")
            .contains("base, kafka, logical, slots, wal"),
        "{}",
        run.message("repo.layout")
    );
    assert!(
        run.message("kafka.archive")
            .contains(&format!("{TOPIC_RECORDS} records")),
        "{}",
        run.message("kafka.archive")
    );
    assert!(
        run.message("repo.writable").contains(&url),
        "{}",
        run.message("repo.writable")
    );
    // What only a file system has is not applicable, and says so.
    for check in ["repo.free-space", "repo.permissions"] {
        assert_eq!(run.status(check), "skip", "{check}");
        assert!(
            run.message(check)
                .contains("not applicable on object storage"),
            "{check}: {}",
            run.message(check)
        );
    }
    // The writability probe is gone again.
    let keys = s3.keys(&url);
    assert!(
        !keys.iter().any(|k| k.contains("validate-backups-probe")),
        "{keys:?}"
    );
    let text = std::fs::read_to_string(&metrics).unwrap();
    for kind in ["base", "logical", "kafka", "slots"] {
        assert!(
            text.contains(&format!("\npipeline_backup_sets{{kind=\"{kind}\"}} 1\n")),
            "{kind}: {text}"
        );
    }
    assert!(
        text.contains("\npipeline_backup_wal_archive_ok 1\n")
            && text.contains("pipeline_backup_last_success_timestamp_seconds{kind=\"wal\"} "),
        "{text}"
    );
    assert!(!run.stderr.contains(s3.secret_key()) && !run.stdout.contains(s3.secret_key()));
}

#[test]
fn damaged_objects_on_s3_fail_the_checks_naming_them() {
    let s3 = s3::env();
    let url = good_repo(&s3);
    let store = s3.store(&url);
    // One byte of the base tarball changed: same size, other bytes.
    let (base, manifest) = only_set(&s3, &url, Kind::Base);
    let tar = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .find(|p| p.starts_with("base.tar"))
        .expect("a base tarball")
        .to_string();
    let key = format!("{base}/{tar}");
    let mut bytes = store.read(&key).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    store.put(&key, &bytes).unwrap();
    // The logical dump cut inside its table of contents.
    let (logical, manifest) = only_set(&s3, &url, Kind::Logical);
    let dump = manifest["details"]["databases"][0]["full_dump"]
        .as_str()
        .unwrap()
        .to_string();
    let key = format!("{logical}/{dump}");
    let bytes = store.read(&key).unwrap();
    store.put(&key, &bytes[..64]).unwrap();

    let run = validate(&s3, &url, &[]);
    run.assert_fails("base.files", &format!("{tar}: SHA-256 mismatch"));
    run.assert_fails("base.decompress", "does not decompress");
    run.assert_fails("logical.files", &format!("{dump}: size 64 differs"));
    run.assert_fails("logical.dump-list", &dump);
    assert_eq!(run.status("base.details"), "pass");
    assert_eq!(run.status("kafka.archive"), "pass");
    let mut failed = run.failed();
    failed.sort();
    assert_eq!(
        failed,
        [
            "base.decompress",
            "base.files",
            "logical.dump-list",
            "logical.files"
        ]
    );
}

#[test]
fn s3_lock_of_a_running_backup_is_in_progress_until_too_old() {
    let s3 = s3::env();
    let url = good_repo(&s3);
    let repo = Repository::with_store(s3.store(&url));
    let lock = repo.lock(Kind::Slots).unwrap();
    let set = repo.create_set(Kind::Slots).unwrap();
    let run = validate(&s3, &url, &["--only", "slots"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.message("repo.locks")
            .contains("run in progress: slots held for"),
        "{}",
        run.message("repo.locks")
    );
    assert!(
        run.message("repo.incomplete-sets")
            .contains(&format!("being written: slots/{}", set.id())),
        "{}",
        run.message("repo.incomplete-sets")
    );
    // The run's age is its set's (ids have whole seconds): a lock renewed all along still
    // reads as a hung run.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let run = validate(&s3, &url, &["--only", "slots", "--max-lock-age", "1s"]);
    run.assert_fails("repo.locks", "slots held for");
    drop(set);
    drop(lock);
    let run = validate(&s3, &url, &["--only", "slots", "--max-lock-age", "1s"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.message("repo.locks"), "no run in progress");
    assert_eq!(run.status("repo.incomplete-sets"), "pass");
}

#[test]
fn unusable_s3_repository_exits_2_with_one_line_and_no_secret() {
    let s3 = s3::env();
    let missing = format!("s3://validate-no-such-bucket-{}/x", std::process::id());
    let mut cmd = command(&["--backup-dir", &missing]);
    let run = finish(s3.apply(&mut cmd).output().unwrap());
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);

    let wrong = "wrong-secret-never-shown";
    let mut cmd = command(&["--backup-dir", fixture(&s3)]);
    s3.apply(&mut cmd).env("AWS_SECRET_ACCESS_KEY", wrong);
    let run = finish(cmd.output().unwrap());
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(!run.stderr.contains(wrong), "{}", run.stderr);
}

#[test]
fn deep_mode_on_s3_test_restores_every_kind() {
    let s3 = s3::env();
    let url = good_repo(&s3);
    let pg = PgCluster::start_with(
        PgOptions::default()
            .setting("archive_mode", "on")
            .setting("archive_command", "'/bin/true'"),
    );
    let scratch = db_tempdir("validate-s3-scratch-");
    let mut cmd = command(&["--output", "json", "--deep", "--backup-dir", &url]);
    cmd.arg("--scratch-dir")
        .arg(scratch.path())
        .envs(pg.env())
        .env("KAFKA_BOOTSTRAP_SERVERS", test_support::kafka::bootstrap());
    let run = finish(s3.apply(&mut cmd).output().unwrap());
    for check in [
        "base.verifybackup",
        "base.test-restore",
        "logical.test-restore",
        "kafka.test-replay",
    ] {
        assert_eq!(
            run.status(check),
            "pass",
            "{check}: {}\n{}",
            run.message(check),
            run.stderr
        );
    }
    assert!(
        run.message("base.test-restore").contains("restored system"),
        "{}",
        run.message("base.test-restore")
    );
    assert_eq!(run.code, 0, "{:?}", run.failed());
    assert_eq!(
        std::fs::read_dir(scratch.path()).unwrap().count(),
        0,
        "scratch not cleaned up"
    );
}

#[test]
fn drill_with_its_repository_on_s3_restores_every_component() {
    let s3 = s3::env();
    let url = s3.url("validate-drill");
    let work = db_tempdir("validate-drill-s3-");
    let mut cmd = command(&[
        "drill",
        "--output",
        "json",
        "--rows",
        "500",
        "--records",
        "100",
        "--backup-dir",
        &url,
    ]);
    cmd.arg("--work-dir")
        .arg(work.path().join("w"))
        .arg("--bin-dir")
        .arg(test_support::tool_bin("wal-archive").parent().unwrap())
        .env("KAFKA_BOOTSTRAP_SERVERS", test_support::kafka::bootstrap());
    let run = finish(s3.apply(&mut cmd).output().unwrap());
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let components: Vec<Value> = run
        .json()
        .into_iter()
        .filter(|l| l["type"] == "component")
        .collect();
    let names: Vec<&str> = components
        .iter()
        .map(|c| c["component"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "postgres-pitr",
            "postgres-logical",
            "cdc-slots",
            "kafka",
            "pipeline"
        ]
    );
    for c in &components {
        assert_eq!(c["status"], "ok", "{c}");
    }
    assert!(
        components[0]["detail"]
            .as_str()
            .unwrap()
            .contains("600 rows"),
        "{}",
        components[0]
    );
    let summary = run.summary();
    assert_eq!(summary["passed"], true);
    assert_eq!(summary["backup_dir"], url.as_str());
    // Everything went to the bucket (WAL through the drill server's archive_command), nothing
    // into the work directory.
    let keys = s3.keys(&url);
    for kind in ["base/", "logical/", "slots/", "kafka/", "wal/"] {
        assert!(keys.iter().any(|k| k.starts_with(kind)), "{kind}: {keys:?}");
    }
    assert!(!work.path().join("w/backups").exists());
    assert!(!run.stderr.contains(s3.secret_key()) && !run.stdout.contains(s3.secret_key()));
    let left = test_support::process::matching(work.path().to_str().unwrap());
    assert!(left.is_empty(), "drill processes left: {left}");
}

#[test]
fn directory_format_dump_on_s3_is_listed_from_its_table_of_contents() {
    let s3 = s3::env();
    let url = s3.url("validate-dirdump");
    let pg = PgCluster::start();
    pg.psql(
        "CREATE TABLE items (id int PRIMARY KEY, v text);
         INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 500) g;",
    );
    let args = [
        "backup",
        "--backup-dir",
        &url,
        "--dbname",
        "postgres",
        "--jobs",
        "2",
        "-q",
    ];
    crate::support::tool(&pg, "pg-logical-backup", &args, &s3.vars());
    let (set, manifest) = only_set(&s3, &url, Kind::Logical);
    let full = manifest["details"]["databases"][0]["full_dump"]
        .as_str()
        .unwrap()
        .to_string();
    let toc = format!("{set}/{full}/toc.dat");
    let store = s3.store(&url);
    assert!(store.exists(&toc).unwrap(), "{:?}", s3.keys(&url));
    let run = validate(&s3, &url, &["--only", "logical"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        run.status("logical.dump-list"),
        "pass",
        "{}",
        run.message("logical.dump-list")
    );
    // The table of contents cut short: pg_restore cannot list the dump any more.
    let bytes = store.read(&toc).unwrap();
    store.put(&toc, &bytes[..64]).unwrap();
    let run = validate(&s3, &url, &["--only", "logical"]);
    run.assert_fails("logical.dump-list", &full);
    run.assert_fails("logical.files", "toc.dat: size 64 differs");
}

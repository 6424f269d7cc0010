//! Base backups into an S3 repository: interrupted runs leave nothing complete and no open
//! upload, a dying object store is one clear error and a clean re-run, bad credentials and a
//! missing bucket are one line each, retention and WAL expiry work on the bucket.

use std::process::Command;
use std::time::Duration;

use common::repo::{Kind, Repository};
use common::storage::Store;
use test_support::pg::{archiving_to, PgCluster};
use test_support::run::Run;
use test_support::s3;

use crate::failures::slow_backup_into;
use crate::summary;

/// The test that kills the object store takes this for writing; the others for reading.
static SERVICE: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    SERVICE.read().unwrap_or_else(|e| e.into_inner())
}

/// The test service's settings with short lock lifetimes, so that a killed run's lock can be
/// broken within the test.
fn short_lock_vars() -> Vec<(String, String)> {
    let mut vars = s3::env().vars();
    vars.push(("BACKUP_S3_LOCK_TTL".into(), "3s".into()));
    vars
}

fn backup_cmd(pg: &PgCluster, url: &str, extra: &[&str]) -> Command {
    let mut cmd = pg.command(env!("CARGO_BIN_EXE_pg-base-backup"));
    cmd.args(["--backup-dir", url, "--output", "json"])
        .args(extra);
    s3::env().apply(&mut cmd);
    cmd
}

fn repo(url: &str) -> Repository {
    Repository::with_store(s3::env().store(url))
}

fn wait_for_open_upload(url: &str) {
    let env = s3::env();
    test_support::process::wait_for("a part upload", Duration::from_secs(60), || {
        !env.open_uploads(url).is_empty()
    });
}

#[test]
fn sigterm_mid_upload_leaves_no_set_and_no_open_upload() {
    let _service = shared();
    let env = s3::env();
    let url = env.url("bb-term");
    let (pg, child) = slow_backup_into(&url, &env.vars());
    wait_for_open_upload(&url);
    test_support::process::signal_and_wait(child, "TERM")
        .assert_interrupted("pg-base-backup", "TERM");
    assert!(
        env.open_uploads(&url).is_empty(),
        "{:?}",
        env.open_uploads(&url)
    );
    let left: Vec<String> = env.keys(&url);
    assert!(
        left.iter()
            .all(|k| k == "base/.lock" || !k.starts_with("base/"))
            && !left.iter().any(|k| k.contains("base.tar")),
        "{left:?}"
    );
    assert!(repo(&url).list(Kind::Base).unwrap().is_empty());
    // The next run works.
    let json = summary(&backup_cmd(&pg, &url, &[]).output().unwrap());
    assert_eq!(
        repo(&url).find(Kind::Base, None).unwrap().0.id,
        json["id"].as_str().unwrap()
    );
}

#[test]
fn sigkill_leaves_an_incomplete_set_that_retention_removes_with_its_upload() {
    let _service = shared();
    let env = s3::env();
    let url = env.url("bb-kill");
    let (pg, mut child) = slow_backup_into(&url, &short_lock_vars());
    wait_for_open_upload(&url);
    child.kill().unwrap();
    child.wait().unwrap();
    let sets = repo(&url).list(Kind::Base).unwrap();
    assert_eq!(sets.len(), 1);
    assert!(
        !sets[0].is_complete(),
        "a killed run must not look complete"
    );
    assert!(
        !env.open_uploads(&url).is_empty(),
        "the killed run's upload is still open"
    );
    // A crashed run's lock would hold the next run off until it expires (default 2 min):
    // the next run breaks it once its lifetime is over.
    std::thread::sleep(Duration::from_secs(4));
    let out = backup_cmd(&pg, &url, &["--incomplete-grace", "1s"])
        .env("BACKUP_S3_LOCK_TTL", "3s")
        .output()
        .unwrap();
    let json = summary(&out);
    let sets = repo(&url).list(Kind::Base).unwrap();
    assert_eq!(sets.len(), 1, "retention removed the leftover");
    assert_eq!(sets[0].id, json["id"].as_str().unwrap());
    assert!(
        env.open_uploads(&url).is_empty(),
        "{:?}",
        env.open_uploads(&url)
    );
}

#[test]
fn wrong_secret_and_missing_bucket_are_one_line_each() {
    let _service = shared();
    let env = s3::env();
    let pg = PgCluster::start();
    let url = env.url("bb-creds");
    let out = backup_cmd(&pg, &url, &[])
        .env("AWS_SECRET_ACCESS_KEY", "not-the-secret-0123456789")
        .output()
        .unwrap();
    let run = Run::from(out);
    run.assert_code(2);
    let line = run.error_line("pg-base-backup");
    assert!(
        line.contains("AWS_SECRET_ACCESS_KEY") || line.contains("Signature"),
        "{line}"
    );
    assert!(!run.stderr.contains("not-the-secret") && !run.stderr.contains(env.secret_key()));

    let out = backup_cmd(&pg, "s3://no-such-bucket-pb/x", &[])
        .output()
        .unwrap();
    let run = Run::from(out);
    run.assert_code(2);
    assert!(
        run.error_line("pg-base-backup").contains("NoSuchBucket"),
        "{}",
        run.stderr
    );
    assert!(env.keys(&url).is_empty());
}

#[test]
fn retention_and_wal_expiry_on_s3_keep_what_the_newest_backup_needs() {
    let _service = shared();
    let env = s3::env();
    let url = env.url("bb-retention");
    let config_dir = test_support::os_user::db_tempdir("bb-s3-config-");
    let config = env.config_file(config_dir.path());
    let pg = PgCluster::start_with(archiving_to(&url, Some(&config)));
    pg.psql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS id");
    let mut ids = Vec::new();
    for _ in 0..3 {
        pg.switch_wal_and_wait_archived();
        let json = summary(
            &backup_cmd(&pg, &url, &["--wal-method", "archive", "--no-retention"])
                .output()
                .unwrap(),
        );
        ids.push(json["id"].as_str().unwrap().to_string());
        std::thread::sleep(Duration::from_millis(1100));
    }
    pg.switch_wal_and_wait_archived();
    let store: Store = env.store(&url);
    let wal_before = store.list("wal").unwrap().len();
    let json = summary(
        &backup_cmd(
            &pg,
            &url,
            &[
                "--wal-method",
                "archive",
                "--keep-count",
                "2",
                "--retention-days",
                "0",
            ],
        )
        .output()
        .unwrap(),
    );
    let deleted: Vec<String> = json["deleted_sets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(deleted, ids[..2].to_vec(), "{json}");
    let kept: Vec<String> = repo(&url)
        .complete_sets(Kind::Base)
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(kept.len(), 2);
    assert_eq!(kept[0], ids[2]);
    assert!(json["expired_wal_files"].as_u64().unwrap() > 0, "{json}");
    assert!(store.list("wal").unwrap().len() < wal_before);
    // Every deleted set is gone entirely, and what the oldest kept set needs is still there.
    for id in &ids[..2] {
        assert!(store.list(&format!("base/{id}")).unwrap().is_empty());
    }
    let out = Command::new(test_support::tool_bin("wal-archive"))
        .args(["verify", "--backup-dir", &url, "--output", "json"])
        .envs(env.vars())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn the_object_store_dying_mid_backup_is_exit_2_and_the_rerun_is_clean() {
    let _service = SERVICE.write().unwrap_or_else(|e| e.into_inner());
    let env = s3::env();
    let url = env.url("bb-dies");
    let (pg, child) = slow_backup_into(&url, &short_lock_vars());
    wait_for_open_upload(&url);
    s3::kill_service();
    let out = child.wait_with_output().unwrap();
    s3::restart_service();
    let run = Run::from(out);
    run.assert_code(2);
    let line = run.error_line("pg-base-backup");
    assert!(
        !line.is_empty() && !run.stderr.contains(env.secret_key()),
        "{}",
        run.stderr
    );
    assert!(
        repo(&url).find(Kind::Base, None).is_err(),
        "nothing complete"
    );
    // The dead run's lock could not be released while the store was down: it expires.
    std::thread::sleep(Duration::from_secs(4));
    let out = backup_cmd(&pg, &url, &["--incomplete-grace", "0s"])
        .env("BACKUP_S3_LOCK_TTL", "3s")
        .output()
        .unwrap();
    let json = summary(&out);
    let sets = repo(&url).list(Kind::Base).unwrap();
    assert_eq!(sets.len(), 1, "{sets:?}");
    assert_eq!(sets[0].id, json["id"].as_str().unwrap());
    assert!(env.open_uploads(&url).is_empty());
}

/// The object store stops answering mid-upload (found by the fault campaign): each request
/// used to wait 5 minutes, and the clean-up's requests after it as long again. With
/// BACKUP_S3_REQUEST_TIMEOUT each one ends in time: exit 2 well within a minute, one line
/// saying the request timed out, nothing complete; a re-run straight to the store is clean.
/// (A proxy in front of the shared service stalls; the service itself is not touched.)
#[test]
fn a_stalling_object_store_times_out_within_the_bound_and_the_rerun_is_clean() {
    let _service = shared();
    let env = s3::env();
    let url = env.url("bb-stall");
    let proxy = test_support::stall::StallProxy::to_endpoint(&env.endpoint);
    let mut vars: Vec<(String, String)> = short_lock_vars()
        .into_iter()
        .filter(|(k, _)| k != "AWS_ENDPOINT_URL" && k != "BACKUP_S3_RETRY_TIMEOUT")
        .collect();
    vars.extend(
        [
            ("AWS_ENDPOINT_URL", proxy.endpoint()),
            ("BACKUP_S3_REQUEST_TIMEOUT", "2s".to_string()),
            ("BACKUP_S3_RETRY_TIMEOUT", "1s".to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    );
    let (pg, mut child) = slow_backup_into(&url, &vars);
    wait_for_open_upload(&url);
    proxy.stall();
    let stalled = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if stalled.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the backup still waits 60 s after the store stalled (request timeout 2s)");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let run = Run::from(child.wait_with_output().unwrap());
    drop(proxy);
    run.assert_code(2);
    let line = run.error_line("pg-base-backup");
    assert!(line.contains("timed out"), "the cause is named: {line}");
    assert!(
        repo(&url).find(Kind::Base, None).is_err(),
        "nothing complete"
    );
    // The stalled run's lock could not be released: it expires.
    std::thread::sleep(Duration::from_secs(4));
    let out = backup_cmd(&pg, &url, &[])
        .env("BACKUP_S3_LOCK_TTL", "3s")
        .output()
        .unwrap();
    let json = summary(&out);
    let (good, _) = repo(&url).find(Kind::Base, None).unwrap();
    assert_eq!(good.id, json["id"].as_str().unwrap());
}

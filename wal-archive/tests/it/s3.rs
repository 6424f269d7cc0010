//! The WAL archive on S3: the archive_command contract (conditional create, identical re-push
//! succeeds, a different one fails and leaves the copy untouched, concurrent pushes of one
//! segment) and the restore_command exit codes (1 not archived, 126 damaged), with real WAL.

use std::io::Read;
use std::process::{Command, Output};

use test_support::s3;

fn wal_archive(args: &[&str], url: &str) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wal-archive"));
    cmd.args(args).args(["--backup-dir", url]);
    s3::env().apply(&mut cmd).output().expect("run wal-archive")
}

/// A segment-sized file with a given fill.
fn segment_file(dir: &std::path::Path, name: &str, seed: u8) -> std::path::PathBuf {
    let path = dir.join(name);
    let data: Vec<u8> = (0..16 * 1024 * 1024u32)
        .map(|x| (x as u8).wrapping_mul(seed) ^ (x >> 12) as u8)
        .collect();
    std::fs::write(&path, data).unwrap();
    path
}

fn decompressed(url: &str, key: &str) -> Vec<u8> {
    let stored = s3::env().store(url).open_read(key).unwrap();
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(stored)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn concurrent_pushes_of_one_segment_store_it_once_and_a_different_one_is_refused() {
    let env = s3::env();
    let url = env.url("wal-race");
    let work = tempfile::tempdir().unwrap();
    let name = "000000010000000000000042";
    let ours = segment_file(work.path(), name, 3);
    let children: Vec<_> = (0..4)
        .map(|_| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_wal-archive"));
            cmd.args(["push", ours.to_str().unwrap(), "--backup-dir", &url]);
            env.apply(&mut cmd).spawn().unwrap()
        })
        .collect();
    for mut child in children {
        assert!(
            child.wait().unwrap().success(),
            "every identical push succeeds"
        );
    }
    let key = format!("wal/{name}.zst");
    assert_eq!(decompressed(&url, &key), std::fs::read(&ours).unwrap());
    assert_eq!(env.keys(&url), vec![key.clone()]);
    let stored_before = env.store(&url).read(&key).unwrap();

    // PostgreSQL retrying after a crash: an identical push succeeds.
    let again = wal_archive(&["push", ours.to_str().unwrap()], &url);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // Another cluster's segment of the same name: refused, the archived copy untouched.
    let other_dir = tempfile::tempdir().unwrap();
    let theirs = segment_file(other_dir.path(), name, 5);
    let out = wal_archive(&["push", theirs.to_str().unwrap()], &url);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("already archived with different content"),
        "{stderr}"
    );
    assert!(stderr.contains(&url), "names the archived copy: {stderr}");
    assert_eq!(env.store(&url).read(&key).unwrap(), stored_before);
}

#[test]
fn fetch_from_s3_gives_back_real_wal_and_keeps_its_exit_codes() {
    let env = s3::env();
    let url = env.url("wal-fetch");
    let config_dir = test_support::os_user::db_tempdir("wal-s3-config-");
    let config = env.config_file(config_dir.path());
    let pg = test_support::pg::PgCluster::start_with(test_support::pg::archiving_to(
        &url,
        Some(&config),
    ));
    pg.psql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS x");
    pg.switch_wal_and_wait_archived();
    pg.psql("INSERT INTO t SELECT generate_series(1, 1000)");
    pg.switch_wal_and_wait_archived();

    let list = wal_archive(&["list", "--output", "json"], &url);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let names: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["name"].as_str().map(str::to_string))
        .collect();
    assert!(names.len() >= 2, "{names:?}");
    let verify = wal_archive(&["verify", "--output", "json"], &url);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );

    let out_dir = tempfile::tempdir().unwrap();
    let dest = out_dir.path().join("RECOVERYXLOG");
    let out = wal_archive(&["fetch", &names[0], dest.to_str().unwrap()], &url);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::metadata(&dest).unwrap().len(), 16 * 1024 * 1024);
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        decompressed(&url, &format!("wal/{}.zst", names[0]))
    );

    let missing = wal_archive(
        &["fetch", "0000000100000000000000FF", dest.to_str().unwrap()],
        &url,
    );
    assert_eq!(missing.status.code(), Some(1));

    // A damaged copy stops recovery (126) and writes nothing.
    let key = format!("wal/{}.zst", names[1]);
    let mut bytes = env.store(&url).read(&key).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    env.store(&url).put(&key, &bytes).unwrap();
    let damaged_dest = out_dir.path().join("damaged");
    let out = wal_archive(&["fetch", &names[1], damaged_dest.to_str().unwrap()], &url);
    assert_eq!(
        out.status.code(),
        Some(126),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!damaged_dest.exists());
    let verify = wal_archive(&["verify", "--output", "json"], &url);
    assert_eq!(verify.status.code(), Some(1));

    // A repository that cannot be read is not "end of archive": 126, not 1.
    let out = Command::new(env!("CARGO_BIN_EXE_wal-archive"))
        .args([
            "fetch",
            &names[0],
            dest.to_str().unwrap(),
            "--backup-dir",
            &url,
        ])
        .envs(env.vars())
        .env("AWS_SECRET_ACCESS_KEY", "wrong-secret-xyz")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(126));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("wrong-secret-xyz"));
}

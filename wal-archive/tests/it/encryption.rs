//! Encrypted WAL (age): push by archive_command with recipients from its config file, fetch
//! with the identity, interoperability with the `age` CLI, damage, wrong and missing keys,
//! refusal of plaintext pushes into an encrypted archive, and verify with and without a key.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

use test_support::age_keys::AgeKeys;
use test_support::os_user::db_tempdir;
use test_support::pg::{archiving_to, PgCluster};

use crate::local_repo;

fn run(args: &[&str], backup_dir: &Path, env: &[(String, String)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wal-archive"))
        .args(args)
        .arg("--backup-dir")
        .arg(backup_dir)
        .env_remove("BACKUP_ENCRYPTION_RECIPIENTS")
        .env_remove("BACKUP_ENCRYPTION_IDENTITY_FILE")
        .envs(env.iter().cloned())
        .output()
        .expect("run wal-archive")
}

fn last_json(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().expect("a summary line")).expect("JSON")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn encrypted_archive_round_trip_damage_keys_and_refusal() {
    let keys = AgeKeys::generate();
    let other = AgeKeys::generate();
    let backups = db_tempdir("wal-age-repo-");
    let cfg_dir = db_tempdir("wal-age-cfg-");
    let config = keys.config_file(cfg_dir.path(), &[]);
    let pg = PgCluster::start_with(archiving_to(
        &backups.path().display().to_string(),
        Some(&config),
    ));
    for n in 0..2 {
        pg.psql(&format!(
            "CREATE TABLE t{n} AS SELECT generate_series(1, 1000) AS x"
        ));
        pg.switch_wal_and_wait_archived();
    }
    let archive = common::wal::WalArchive::new(&local_repo(backups.path()));
    let segments: Vec<_> = archive
        .list()
        .unwrap()
        .into_iter()
        .filter(|f| matches!(f.kind, common::wal::WalFile::Segment { .. }))
        .collect();
    assert!(segments.len() >= 2);
    for s in &segments {
        assert!(s.key.ends_with(".zst.age"), "{}", s.key);
        assert!(s.is_encrypted());
        assert_eq!(s.compression, common::stream::Compression::Zstd);
    }
    let segment = &segments[0];
    let stored_path = backups.path().join(&segment.key);
    let out_dir = tempfile::tempdir().unwrap();
    let dest = out_dir.path().join("RECOVERYXLOG");
    let dest_s = dest.to_str().unwrap();

    // With the identity: the segment, header checked.
    let out = run(
        &["fetch", &segment.name, dest_s],
        backups.path(),
        &keys.identity_env(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let restored = std::fs::read(&dest).unwrap();
    assert_eq!(restored.len(), 16 * 1024 * 1024);
    let header = wal_archive::SegmentHeader::parse(&restored).unwrap();
    assert_eq!(
        header.system_identifier.to_string(),
        pg.psql("SELECT system_identifier FROM pg_control_system()")
    );
    assert!(!stderr(&out).contains(&keys.secret));

    // The Debian age CLI decrypts it; zstd then gives the same bytes.
    let decrypted = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&keys.identity_file)
        .arg(&stored_path)
        .output()
        .unwrap();
    assert!(decrypted.status.success(), "{}", stderr(&decrypted));
    assert_eq!(zstd::decode_all(&decrypted.stdout[..]).unwrap(), restored);

    // A file the age CLI encrypted to our recipient is accepted.
    let second = &segments[1];
    let plain_dest = out_dir.path().join("second");
    let out = run(
        &["fetch", &second.name, plain_dest.to_str().unwrap()],
        backups.path(),
        &keys.identity_env(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let second_bytes = std::fs::read(&plain_dest).unwrap();
    let compressed = zstd::encode_all(&second_bytes[..], 3).unwrap();
    let mut age_cli = Command::new("age")
        .args(["-r", &keys.recipient, "-o"])
        .arg(backups.path().join(&second.key))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    age_cli
        .stdin
        .take()
        .unwrap()
        .write_all(&compressed)
        .unwrap();
    assert!(age_cli.wait().unwrap().success());
    let again = out_dir.path().join("again");
    let out = run(
        &["fetch", &second.name, again.to_str().unwrap()],
        backups.path(),
        &keys.identity_env(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(&again).unwrap(), second_bytes);

    // Missing identity, wrong identity: 126, the file named, nothing at %p.
    let nothing = out_dir.path().join("nothing");
    let nothing_s = nothing.to_str().unwrap();
    let out = run(&["fetch", &segment.name, nothing_s], backups.path(), &[]);
    assert_eq!(out.status.code(), Some(126), "{}", stderr(&out));
    assert!(stderr(&out).contains(&segment.key), "{}", stderr(&out));
    assert!(stderr(&out).contains("BACKUP_ENCRYPTION_IDENTITY_FILE"));
    let out = run(
        &["fetch", &segment.name, nothing_s],
        backups.path(),
        &other.identity_env(),
    );
    assert_eq!(out.status.code(), Some(126), "{}", stderr(&out));
    assert!(stderr(&out).contains(&segment.key), "{}", stderr(&out));
    assert!(!stderr(&out).contains(&other.secret));
    assert!(!nothing.exists());

    // Not archived is still exit 1.
    let out = run(
        &["fetch", "0000000100000000000000FF", nothing_s],
        backups.path(),
        &keys.identity_env(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    // Verify without a key: headers well-formed; with it: content checked.
    let out = run(&["verify", "--output", "json"], backups.path(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary = last_json(&out);
    assert!(
        summary["encrypted_unchecked"].as_u64().unwrap() >= 2,
        "{summary}"
    );
    let out = run(
        &["verify", "--output", "json"],
        backups.path(),
        &keys.identity_env(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(last_json(&out)["encrypted_unchecked"], 0);

    // A flipped byte and a truncation: 126 naming the file, nothing at %p.
    let original = std::fs::read(&stored_path).unwrap();
    let mut flipped = original.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x01;
    std::fs::write(&stored_path, &flipped).unwrap();
    let out = run(
        &["fetch", &segment.name, nothing_s],
        backups.path(),
        &keys.identity_env(),
    );
    assert_eq!(out.status.code(), Some(126), "{}", stderr(&out));
    assert!(stderr(&out).contains(&segment.key), "{}", stderr(&out));
    assert!(!nothing.exists());
    let out = run(
        &["verify", "--output", "json"],
        backups.path(),
        &keys.identity_env(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    std::fs::write(&stored_path, &original[..original.len() - 100]).unwrap();
    let out = run(
        &["fetch", &segment.name, nothing_s],
        backups.path(),
        &keys.identity_env(),
    );
    assert_eq!(out.status.code(), Some(126), "{}", stderr(&out));
    assert!(stderr(&out).contains(&segment.key), "{}", stderr(&out));
    assert!(!nothing.exists());
    std::fs::write(&stored_path, &original).unwrap();

    // Without recipients, a plaintext push into this archive is refused, unless allowed.
    let wal_file = pg.root().join("fake");
    std::fs::create_dir_all(&wal_file).unwrap();
    let fake = wal_file.join("00000009.history");
    std::fs::write(&fake, "8\t0/9000000\tno recovery target specified\n").unwrap();
    let out = run(&["push", fake.to_str().unwrap()], backups.path(), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--allow-unencrypted"),
        "{}",
        stderr(&out)
    );
    assert!(archive.find("00000009.history").unwrap().is_none());
    let out = run(
        &["push", fake.to_str().unwrap(), "--allow-unencrypted"],
        backups.path(),
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let (key, _) = archive.find("00000009.history").unwrap().unwrap();
    assert!(key.ends_with(".zst"), "{key}");
    // Plain and encrypted copies side by side: both listed and fetched.
    let out = run(
        &["fetch", "00000009.history", nothing_s],
        backups.path(),
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // A re-push of an encrypted segment by the backup side (no identity) is accepted.
    let repush = wal_file.join(&segment.name);
    std::fs::write(&repush, &restored).unwrap();
    let out = run(
        &["push", repush.to_str().unwrap()],
        backups.path(),
        &keys.recipients_env(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // With the identity, a different content is still refused.
    std::fs::write(&repush, &second_bytes).unwrap();
    let mut both = keys.recipients_env();
    both.extend(keys.identity_env());
    let out = run(&["push", repush.to_str().unwrap()], backups.path(), &both);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("different content"),
        "{}",
        stderr(&out)
    );

    // The key never shows on a command line: archive_command got it from its config file.
    assert!(test_support::age_keys::cmdlines_containing(&keys.secret).is_empty());
    assert!(!std::fs::read_to_string(pg.log_file())
        .unwrap_or_default()
        .contains(&keys.secret));
}

#[test]
fn encrypted_push_and_fetch_on_s3() {
    let env = test_support::s3::env();
    let url = env.url("wal-age");
    let keys = AgeKeys::generate();
    let work = tempfile::tempdir().unwrap();
    let name = "00000002.history";
    let source = work.path().join(name);
    std::fs::write(&source, "1\t0/3000060\tno recovery target specified\n").unwrap();
    let tool = |args: &[&str], extra: &[(String, String)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wal-archive"));
        cmd.args(args)
            .args(["--backup-dir", &url])
            .env_remove("BACKUP_ENCRYPTION_RECIPIENTS")
            .env_remove("BACKUP_ENCRYPTION_IDENTITY_FILE")
            .envs(extra.iter().cloned());
        env.apply(&mut cmd).output().expect("run wal-archive")
    };
    let out = tool(&["push", source.to_str().unwrap()], &keys.recipients_env());
    assert!(out.status.success(), "{}", stderr(&out));
    let key = format!("wal/{name}.zst.age");
    let stored = env.store(&url).read(&key).unwrap();
    assert!(stored.starts_with(b"age-encryption.org/v1\n"));

    let dest = work.path().join("fetched");
    let out = tool(
        &["fetch", name, dest.to_str().unwrap()],
        &keys.identity_env(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        std::fs::read(&source).unwrap()
    );

    // Truncated on the server: 126, the object named, nothing written.
    env.store(&url)
        .put(&key, &stored[..stored.len() - 5])
        .unwrap();
    let nothing = work.path().join("nothing");
    let out = tool(
        &["fetch", name, nothing.to_str().unwrap()],
        &keys.identity_env(),
    );
    assert_eq!(out.status.code(), Some(126), "{}", stderr(&out));
    assert!(stderr(&out).contains(&key), "{}", stderr(&out));
    assert!(!nothing.exists());

    // Recipients missing: a plaintext push is refused.
    let other = work.path().join("00000003.history");
    std::fs::write(&other, "2\t0/4000000\tx\n").unwrap();
    let out = tool(&["push", other.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!env.keys(&url).iter().any(|k| k.contains("00000003")));
}

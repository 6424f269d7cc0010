//! Encrypted base backups and WAL (age): point-in-time restore with the WAL fetched by
//! PostgreSQL's restore_command through the config file, the Debian `age` CLI reading a
//! tarball, damage, wrong and missing keys, refusal of a plaintext backup into an encrypted
//! repository, passphrase mode, and a repository mixing plain and encrypted sets.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::repo::{Kind, Repository};
use common::storage::Location;
use test_support::age_keys::AgeKeys;
use test_support::os_user::db_tempdir;
use test_support::pg::{archiving_to, PgCluster};
use test_support::tool_bin;

use crate::{last_json, Restore};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn base_backup(pg: &PgCluster, backups: &Path, args: &[&str], env: &[(String, String)]) -> Output {
    let mut cmd = pg.command(tool_bin("pg-base-backup"));
    cmd.arg("--backup-dir")
        .arg(backups)
        .args(["--output", "json", "--no-retention", "--compress", "zstd"])
        .args(args)
        .envs(env.iter().cloned());
    cmd.output().unwrap()
}

/// Files left in a restore target: none after a failed restore.
fn left_in(pgdata: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(pgdata) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

fn rows(server: &test_support::pg::DataDirServer) -> String {
    server.psql("SELECT count(*) FROM t")
}

#[test]
fn encrypted_pitr_round_trip_keys_damage_mixing_and_passphrase() {
    let keys = AgeKeys::generate();
    let other = AgeKeys::generate();
    let backups = db_tempdir("pitr-age-repo-");
    let cfg_dir = db_tempdir("pitr-age-cfg-");
    let config = keys.config_file(cfg_dir.path(), &[]);
    let config_s = config.display().to_string();
    let pg = PgCluster::start_with(archiving_to(
        &backups.path().display().to_string(),
        Some(&config),
    ));
    pg.psql("CREATE TABLE t AS SELECT generate_series(1, 5000) AS n");

    // An encrypted base backup, keys from the config file.
    let out = base_backup(&pg, backups.path(), &["--config", &config_s], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary = last_json(&out);
    assert_eq!(summary["encrypted"], true, "{summary}");
    let encrypted_id = summary["id"].as_str().unwrap().to_string();
    let repo = Repository::open(&Location::Local(backups.path().into())).unwrap();
    let (set, manifest) = repo.find(Kind::Base, Some(&encrypted_id)).unwrap();
    let encryption = manifest.encryption().expect("recorded in the manifest");
    assert_eq!(encryption.recipients, vec![keys.recipient.clone()]);
    let paths: Vec<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    assert!(paths.contains(&"base.tar.zst.age"), "{paths:?}");
    assert!(paths.contains(&"backup_manifest.age"), "{paths:?}");
    assert!(repo.verify_files(&set.prefix, &manifest).is_empty());
    let tar_path = backups.path().join(set.key("base.tar.zst.age"));

    // The Debian age CLI decrypts the tarball; zstd and tar then list it.
    let decrypted = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&keys.identity_file)
        .arg(&tar_path)
        .output()
        .unwrap();
    assert!(decrypted.status.success(), "{}", stderr(&decrypted));
    let tarball = zstd::decode_all(&decrypted.stdout[..]).unwrap();
    let mut archive = tar::Archive::new(&tarball[..]);
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(names.iter().any(|n| n.ends_with("PG_VERSION")), "{names:?}");
    let tar_t = Command::new("tar")
        .arg("-t")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(&tarball)?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(tar_t.status.success());
    assert!(String::from_utf8_lossy(&tar_t.stdout).contains("PG_VERSION"));

    // More data after the backup, in encrypted WAL only.
    pg.psql("INSERT INTO t SELECT generate_series(5001, 7000)");
    pg.switch_wal_and_wait_archived();

    // Restore to the latest point: the server fetches encrypted WAL via the config file.
    let restore = Restore::in_tempdir();
    let (out, server) = restore.run(backups.path(), &["--config", &config_s]);
    assert!(out.status.success(), "{}", stderr(&out));
    let server = server.unwrap();
    assert_eq!(rows(&server), "7000");
    assert!(!stderr(&out).contains(&keys.secret));
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&keys.secret));
    assert!(test_support::age_keys::cmdlines_containing(&keys.secret).is_empty());
    assert!(test_support::age_keys::cmdlines_containing("AGE-SECRET-KEY").is_empty());
    drop(server);

    // Missing identity, wrong identity: exit 2 naming the file, nothing in the target.
    for env in [Vec::new(), other.identity_env()] {
        let restore = Restore::in_tempdir();
        let out = restore.run_with(backups.path(), &[], false, &env);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("base.tar.zst.age"),
            "{}",
            stderr(&out)
        );
        assert!(!stderr(&out).contains(&other.secret));
        assert!(left_in(&restore.pgdata).is_empty());
    }

    // A flipped byte and a truncation: exit 2 naming the file, nothing left.
    let original = std::fs::read(&tar_path).unwrap();
    let mut flipped = original.clone();
    let at = flipped.len() * 2 / 3;
    flipped[at] ^= 0x04;
    for damaged in [flipped, original[..original.len() - 1000].to_vec()] {
        std::fs::write(&tar_path, &damaged).unwrap();
        let restore = Restore::in_tempdir();
        let out = restore.run_with(backups.path(), &[], false, &keys.identity_env());
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("base.tar.zst.age"),
            "{}",
            stderr(&out)
        );
        let left = left_in(&restore.pgdata);
        assert!(left.is_empty(), "partly restored files left: {left:?}");
    }
    std::fs::write(&tar_path, &original).unwrap();

    // Recipients gone from the environment: refused, unless --allow-unencrypted.
    let out = base_backup(&pg, backups.path(), &[], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--allow-unencrypted"),
        "{}",
        stderr(&out)
    );
    let out = base_backup(&pg, backups.path(), &["--allow-unencrypted"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plain = last_json(&out);
    assert_eq!(plain["encrypted"], false);
    let plain_id = plain["id"].as_str().unwrap().to_string();
    pg.psql("INSERT INTO t SELECT generate_series(7001, 8000)");
    pg.switch_wal_and_wait_archived();

    // Passphrase mode: a base backup with no recipients but a passphrase file.
    let pass_file = cfg_dir.path().join("passphrase");
    std::fs::write(&pass_file, "correct horse battery staple\n").unwrap();
    test_support::os_user::give_to_db_user(&pass_file);
    let pass_env = vec![(
        "BACKUP_ENCRYPTION_PASSPHRASE_FILE".to_string(),
        pass_file.display().to_string(),
    )];
    let out = base_backup(&pg, backups.path(), &[], &pass_env);
    assert!(out.status.success(), "{}", stderr(&out));
    let pass_id = last_json(&out)["id"].as_str().unwrap().to_string();
    let (_, pass_manifest) = repo.find(Kind::Base, Some(&pass_id)).unwrap();
    assert!(pass_manifest.encryption().unwrap().passphrase);
    pg.psql("INSERT INTO t SELECT generate_series(8001, 9000)");
    pg.switch_wal_and_wait_archived();

    // The mixed repository restores each kind of set: plain, encrypted to a key, passphrase
    // (the WAL after each, encrypted, through the config file).
    for (id, env) in [
        (plain_id.as_str(), Vec::new()),
        (encrypted_id.as_str(), Vec::new()),
        (pass_id.as_str(), pass_env.clone()),
    ] {
        let restore = Restore::in_tempdir();
        let out = restore.run_with(
            backups.path(),
            &["--config", &config_s, "--backup-id", id],
            true,
            &env,
        );
        assert!(out.status.success(), "{id}: {}", stderr(&out));
        let server = test_support::pg::DataDirServer::new(
            restore.pgdata.clone(),
            restore.port,
            restore.dir.path().to_path_buf(),
        );
        assert_eq!(rows(&server), "9000", "restored from {id}");
    }
    // Without the passphrase the passphrase set does not open.
    let restore = Restore::in_tempdir();
    let out = restore.run_with(
        backups.path(),
        &["--backup-id", &pass_id],
        false,
        &keys.identity_env(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(left_in(&restore.pgdata).is_empty());
}

#[test]
fn encrypted_pitr_round_trip_on_s3() {
    let env = test_support::s3::env();
    let url = env.url("pitr-age");
    let keys = AgeKeys::generate();
    let cfg_dir = db_tempdir("pitr-age-s3-cfg-");
    let config = keys.config_file(cfg_dir.path(), &env.vars());
    let config_s = config.display().to_string();
    let pg = PgCluster::start_with(archiving_to(&url, Some(&config)));
    pg.psql("CREATE TABLE t AS SELECT generate_series(1, 3000) AS n");
    let mut cmd = pg.command(tool_bin("pg-base-backup"));
    cmd.args(["--backup-dir", &url, "--config", &config_s])
        .args(["--output", "json", "--no-retention", "--compress", "zstd"]);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(last_json(&out)["encrypted"], true);
    pg.psql("INSERT INTO t SELECT generate_series(3001, 4000)");
    pg.switch_wal_and_wait_archived();

    let stored = env.keys(&url);
    assert!(
        stored.iter().any(|k| k.ends_with("/base.tar.zst.age")),
        "{stored:?}"
    );
    assert!(
        stored
            .iter()
            .filter(|k| k.starts_with("wal/") && !k.contains("/."))
            // Block summaries (relation and block numbers) are in clear.
            .all(|k| k.ends_with(".age") || k.ends_with(".blocks.zst")),
        "{stored:?}"
    );
    let tar_key = stored
        .iter()
        .find(|k| k.ends_with("/base.tar.zst.age"))
        .unwrap();
    let head = env.store(&url).read(tar_key).unwrap();
    assert!(head.starts_with(b"age-encryption.org/v1\n"));

    let restore = Restore::in_tempdir();
    let out = restore.run_with(&url, &["--config", &config_s], true, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let server = test_support::pg::DataDirServer::new(
        restore.pgdata.clone(),
        restore.port,
        restore.dir.path().to_path_buf(),
    );
    assert_eq!(rows(&server), "4000");
    assert!(!stderr(&out).contains(&keys.secret));
    assert!(test_support::age_keys::cmdlines_containing(&keys.secret).is_empty());
}

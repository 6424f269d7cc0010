//! Encrypted sets (age): without a key their stored bytes and age headers are checked and
//! their content is reported unchecked; with the identity they are decrypted and decoded;
//! `--expect-recipients` names the sets that still need an old key; damage, a forged file and
//! a wrong key are caught, and the secret key never shows.

use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};
use test_support::age_keys::AgeKeys;
use test_support::os_user::db_tempdir;
use test_support::pg::{archiving_to, PgCluster};

use crate::support::{
    build_fixture, command, edit_manifest, finish, flip_byte, tool, validate, Checks, Destination,
    Run,
};

/// validate-backups on `dir` with JSON output, `extra` arguments and `env`.
fn validate_with(dir: &Path, extra: &[&str], env: &[(String, String)]) -> Run {
    let mut cmd = command(&["--output", "json"]);
    cmd.arg("--backup-dir")
        .arg(dir)
        .args(extra)
        .envs(env.iter().cloned());
    finish(cmd.output().expect("run validate-backups"))
}

/// The set folders of `kind`, oldest first.
fn sets(repo: &Path, kind: &str) -> Vec<PathBuf> {
    let mut sets: Vec<PathBuf> = std::fs::read_dir(repo.join(kind))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("manifest.json").exists())
        .collect();
    sets.sort();
    sets
}

fn stored_file(set: &Path, suffix: &str) -> PathBuf {
    std::fs::read_dir(set)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(suffix))
        .unwrap_or_else(|| panic!("no *{suffix} in {}", set.display()))
}

fn assert_no_secret(run: &Run, keys: &AgeKeys) {
    assert!(!run.stdout.contains(&keys.secret) && !run.stderr.contains(&keys.secret));
}

#[test]
fn encrypted_base_sets_checked_without_and_with_the_key() {
    let keys = AgeKeys::generate();
    let other = AgeKeys::generate();
    let repo = db_tempdir("validate-age-");
    private(repo.path());
    let dir = repo.path().display().to_string();
    let pg = PgCluster::start();
    pg.psql("CREATE TABLE t AS SELECT generate_series(1, 20000) AS n");
    let backup = ["--backup-dir", &dir, "--no-retention", "--compress", "zstd"];
    // A plain set from before encryption, then an encrypted one.
    tool(&pg, "pg-base-backup", &backup, &[]);
    tool(&pg, "pg-base-backup", &backup, &keys.recipients_env());
    let [_plain, sealed] = <[PathBuf; 2]>::try_from(sets(repo.path(), "base")).unwrap();
    assert!(stored_file(&sealed, ".age").exists());

    // Without a key: stored bytes and age headers check out; the content is not claimed.
    let run = validate(repo.path(), &["--only", "base"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.status("base.files"), "pass");
    assert_eq!(run.status("base.details"), "pass", "{}", run.stdout);
    let encryption = run.message("base.encryption");
    assert!(
        encryption.contains("plaintext") && encryption.contains("age, 1 recipients"),
        "{encryption}"
    );
    let decode = run.message("base.decompress");
    assert!(decode.contains("age header"), "{decode}");
    assert!(run
        .message("base.details")
        .contains("not checked without a key"));

    // --expect-recipients: the encrypted set needs a key not in the list, the plain set none.
    let run = validate(
        repo.path(),
        &["--only", "base", "--expect-recipients", &other.recipient],
    );
    run.assert_fails("base.encryption", &keys.recipient);
    assert!(run
        .message("base.encryption")
        .contains("stored in plaintext"));
    let bad = validate(repo.path(), &["--expect-recipients", "age1nope"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);

    // With the identity the content is decrypted and decoded.
    let run = validate_with(repo.path(), &["--only", "base"], &keys.identity_env());
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let decode = run.message("base.decompress");
    assert!(
        decode.contains("decode") && !decode.contains("age header"),
        "{decode}"
    );
    assert!(!run.message("base.details").contains("not checked"));
    assert_no_secret(&run, &keys);

    // The wrong key: the content cannot be checked, named as such.
    let run = validate_with(repo.path(), &["--only", "base"], &other.identity_env());
    run.assert_fails("base.decompress", "none of the keys");

    // A forged file with matching checksums but no age header: caught without a key.
    let forged_dir = db_tempdir("validate-age-forged-");
    private(forged_dir.path());
    copy_dir(repo.path(), forged_dir.path());
    let forged_set = forged_dir
        .path()
        .join("base")
        .join(sealed.file_name().unwrap());
    let manifest_file = stored_file(&forged_set, "backup_manifest.age");
    let fake = b"not an age file at all\n".to_vec();
    std::fs::write(&manifest_file, &fake).unwrap();
    edit_manifest(&forged_set, |m: &mut Value| {
        for f in m["files"].as_array_mut().unwrap() {
            if f["path"] == "backup_manifest.age" {
                f["size"] = fake.len().into();
                f["sha256"] = hex::encode(Sha256::digest(&fake)).into();
            }
        }
    });
    let run = validate(forged_dir.path(), &["--only", "base"]);
    run.assert_fails("base.decompress", "backup_manifest.age");
    assert!(
        run.message("base.decompress").contains("age"),
        "{}",
        run.stdout
    );

    // A flipped byte: the stored checksum fails without a key, decryption with it.
    let tar = stored_file(&sealed, ".tar.zst.age");
    flip_byte(&tar);
    let run = validate(repo.path(), &["--only", "base"]);
    run.assert_fails("base.files", "SHA-256 mismatch");
    let run = validate_with(repo.path(), &["--only", "base"], &keys.identity_env());
    run.assert_fails("base.decompress", "does not decrypt");
    assert_no_secret(&run, &keys);
}

/// Repositories are private to their owner (repo.permissions).
fn private(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Every kind written encrypted (WAL through PostgreSQL's archive_command with a config file):
/// without a key the stored bytes, headers and recipients check out and the content checks
/// are skipped, naming what to set; with the identity every content check runs and passes.
#[test]
fn every_kind_encrypted_checked_without_and_with_the_key() {
    let keys = AgeKeys::generate();
    let repo = db_tempdir("validate-age-all-");
    private(repo.path());
    let cfg_dir = db_tempdir("validate-age-cfg-");
    let config = keys.config_file(cfg_dir.path(), &[]);
    let dir = repo.path().display().to_string();
    build_fixture(&Destination {
        backup_dir: dir.clone(),
        env: keys.recipients_env(),
        archiving: archiving_to(&dir, Some(&config)),
    });
    for kind in ["base", "logical", "kafka", "slots"] {
        let set = &sets(repo.path(), kind)[0];
        let manifest = std::fs::read_to_string(set.join("manifest.json")).unwrap();
        assert!(manifest.contains(&keys.recipient), "{kind}: {manifest}");
    }

    let run = validate(repo.path(), &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    for kind in ["base", "logical", "kafka", "slots"] {
        let check = format!("{kind}.encryption");
        assert_eq!(run.status(&check), "pass");
        assert!(run.message(&check).contains("age, 1 recipients"));
        assert_eq!(run.status(&format!("{kind}.files")), "pass");
    }
    for check in ["logical.dump-list", "kafka.archive", "slots.inventory"] {
        assert_eq!(run.status(check), "skip", "{check}: {}", run.stdout);
        assert!(run
            .message(check)
            .contains("BACKUP_ENCRYPTION_IDENTITY_FILE"));
    }
    assert_eq!(run.status("wal.continuity"), "pass", "{}", run.stdout);

    let run = validate_with(
        repo.path(),
        &["--expect-recipients", &keys.recipient],
        &keys.identity_env(),
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    for check in [
        "logical.dump-list",
        "kafka.archive",
        "slots.inventory",
        "base.decompress",
        "logical.decompress",
        "kafka.decompress",
    ] {
        assert_eq!(run.status(check), "pass", "{check}: {}", run.stdout);
    }
    assert_no_secret(&run, &keys);
}

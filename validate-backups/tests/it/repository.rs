//! Repository checks on small repositories written with common's set writer.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::repo::SetMeta;
use common::storage::Location;
use common::stream::Compression;
use common::{Kind, Repository};

use crate::support::{empty_repo, finish, validate, Checks, BIN};

/// Writes a complete set of `kind` holding one file of `size` bytes.
pub fn synthetic_set(dir: &Path, kind: Kind, size: usize, compression: Compression) -> String {
    let repo = Repository::create(&Location::Local(dir.to_path_buf())).unwrap();
    let mut set = repo.create_set(kind).unwrap();
    let mut file = set.create_file("data.bin", compression, None, 1).unwrap();
    let mut seed = 12345u64;
    let bytes: Vec<u8> = (0..size)
        .map(|_| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            (seed >> 56) as u8
        })
        .collect();
    file.write_all(&bytes).unwrap();
    let entry = file.finish().unwrap();
    set.add(entry);
    let id = set.id().to_string();
    set.commit(SetMeta {
        tool: "test",
        tool_version: "0",
        source: serde_json::json!({}),
        details: serde_json::json!({}),
    })
    .unwrap();
    id
}

#[test]
fn empty_repository_passes_with_kinds_skipped() {
    let (_h, dir) = empty_repo();
    let run = validate(&dir, &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    for check in [
        "repo.layout",
        "repo.writable",
        "repo.free-space",
        "repo.permissions",
        "repo.locks",
        "repo.incomplete-sets",
        "repo.temp-files",
    ] {
        assert_eq!(run.status(check), "pass", "{check}: {}", run.message(check));
    }
    for check in [
        "base.freshness",
        "logical.files",
        "kafka.archive",
        "slots.count",
        "wal.continuity",
        "pg.reachable",
        "kafka.reachable",
    ] {
        assert_eq!(run.status(check), "skip", "{check}");
    }
    let summary = run.summary();
    assert_eq!(summary["passed"], true);
    assert_eq!(summary["fail"], 0);
}

#[test]
fn require_turns_a_missing_kind_into_a_failure() {
    let (_h, dir) = empty_repo();
    let run = validate(&dir, &["--require", "base,wal"]);
    run.assert_fails("base.freshness", "--require base");
    assert_eq!(run.status("base.count"), "fail");
    assert_eq!(run.status("wal.continuity"), "fail");
    assert_eq!(run.status("logical.freshness"), "skip");
}

#[test]
fn world_readable_file_fails_permissions() {
    let (_h, dir) = empty_repo();
    let id = synthetic_set(&dir, Kind::Slots, 1000, Compression::Gzip);
    assert_eq!(validate(&dir, &[]).status("repo.permissions"), "pass");
    let file = dir.join("slots").join(&id).join("data.bin");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = validate(&dir, &["--only", "wal"]);
    run.assert_fails("repo.permissions", "data.bin (mode 644)");
    assert_eq!(run.failed(), vec!["repo.permissions".to_string()]);
}

#[test]
fn set_without_manifest_is_reported_incomplete() {
    let (_h, dir) = empty_repo();
    synthetic_set(&dir, Kind::Logical, 100, Compression::None);
    let crashed = dir.join("logical").join("20200101T000000Z");
    std::fs::create_dir(&crashed).unwrap();
    std::fs::set_permissions(&crashed, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(crashed.join("half.dump"), b"partial").unwrap();
    std::fs::set_permissions(
        crashed.join("half.dump"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let run = validate(&dir, &["--only", "logical"]);
    run.assert_fails("repo.incomplete-sets", "logical/20200101T000000Z");
}

#[test]
fn held_lock_is_a_run_in_progress_until_too_old() {
    let (_h, dir) = empty_repo();
    let repo = Repository::create(&Location::Local(dir.clone())).unwrap();
    let lock = repo.lock(Kind::Base).unwrap();
    let run = validate(&dir, &[]);
    assert_eq!(run.status("repo.locks"), "pass");
    assert!(
        run.message("repo.locks").contains("in progress"),
        "{}",
        run.message("repo.locks")
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let run = validate(&dir, &["--max-lock-age", "1s"]);
    run.assert_fails("repo.locks", "base held for");
    drop(lock);
    // A released lock leaves its file behind; that is not stale.
    let run = validate(&dir, &["--max-lock-age", "1s"]);
    assert_eq!(
        run.status("repo.locks"),
        "pass",
        "{}",
        run.message("repo.locks")
    );
}

#[test]
fn leftover_temporary_file_fails() {
    let (_h, dir) = empty_repo();
    let id = synthetic_set(&dir, Kind::Slots, 100, Compression::None);
    let temp = dir.join("slots").join(&id).join(".data.bin.tmp.999.0");
    std::fs::write(&temp, b"half").unwrap();
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Young temporary files may belong to a write in flight.
    assert_eq!(validate(&dir, &[]).status("repo.temp-files"), "pass");
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&temp)
        .unwrap()
        .set_modified(old)
        .unwrap();
    validate(&dir, &[]).assert_fails("repo.temp-files", ".data.bin.tmp.999.0");
}

#[test]
fn too_little_free_space_fails() {
    let (_h, dir) = empty_repo();
    validate(&dir, &["--min-free-space", "1000TB"]).assert_fails("repo.free-space", "minimum");
    assert_eq!(
        validate(&dir, &["--min-free-space", "1MB"]).status("repo.free-space"),
        "pass"
    );
}

#[test]
fn file_in_place_of_a_kind_folder_fails_layout() {
    let (_h, dir) = empty_repo();
    std::fs::write(dir.join("base"), b"oops").unwrap();
    std::fs::set_permissions(dir.join("base"), std::fs::Permissions::from_mode(0o600)).unwrap();
    validate(&dir, &[]).assert_fails("repo.layout", "is not a directory");
}

#[test]
fn unwritable_repository_fails() {
    if test_support::os_user::db_user_ids().is_none() {
        return; // needs root to run the tool as another user
    }
    let holder = tempfile::tempdir().unwrap();
    let dir = holder.path().join("backups");
    std::fs::create_dir(&dir).unwrap();
    // Owned by root, readable but not writable by the database user.
    std::fs::set_permissions(holder.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("--backup-dir").arg(&dir).args(["--output", "json"]);
    test_support::os_user::as_db_user(&mut cmd);
    let run = finish(cmd.output().unwrap());
    run.assert_fails("repo.writable", "cannot write in");
}

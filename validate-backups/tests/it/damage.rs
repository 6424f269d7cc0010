//! A good repository passes; each kind of damage fails the check meant to catch it.

use crate::support::{
    edit_manifest, flip_byte, good_repo, only_set, validate, Checks, TOPIC_RECORDS,
};

#[test]
fn good_repository_passes_every_check() {
    let (_h, dir) = good_repo();
    let run = validate(&dir, &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    for check in [
        "repo.permissions",
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
        "kafka.archive",
        "kafka.files",
        "slots.inventory",
        "slots.freshness",
    ] {
        assert_eq!(run.status(check), "pass", "{check}: {}", run.message(check));
    }
    assert!(
        run.message("kafka.archive")
            .contains(&format!("{TOPIC_RECORDS} records")),
        "{}",
        run.message("kafka.archive")
    );
    assert_eq!(run.status("base.verifybackup"), "skip");
    assert!(run.failed().is_empty());
}

#[test]
fn flipped_byte_in_base_tarball_fails_checksum_and_decompression() {
    let (_h, dir) = good_repo();
    let set = only_set(&dir, "base");
    let tar = std::fs::read_dir(&set)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("base.tar")
        })
        .expect("a base tarball");
    flip_byte(&tar);
    let run = validate(&dir, &["--only", "base"]);
    run.assert_fails("base.files", "SHA-256 mismatch");
    run.assert_fails("base.decompress", "does not decompress");
    assert_eq!(run.status("base.details"), "pass");
}

#[test]
fn truncated_dump_fails_size_and_pg_restore_list() {
    let (_h, dir) = good_repo();
    let set = only_set(&dir, "logical");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(set.join("manifest.json")).unwrap()).unwrap();
    let full = manifest["details"]["databases"][0]["full_dump"]
        .as_str()
        .unwrap()
        .to_string();
    let path = set.join(&full);
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    // Cut in the data section: the checksum catches it (pg_restore --list reads only the TOC).
    let run = validate(&dir, &["--only", "logical"]);
    run.assert_fails("logical.files", "differs from the manifest");
    // Cut inside the table of contents: pg_restore cannot list it either.
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(64)
        .unwrap();
    let run = validate(&dir, &["--only", "logical"]);
    run.assert_fails("logical.dump-list", &full);
}

#[test]
fn missing_wal_segment_fails_continuity() {
    let (_h, dir) = good_repo();
    let mut segments: Vec<std::path::PathBuf> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            name.len() >= 24
                && name[..24].chars().all(|c| c.is_ascii_hexdigit())
                && !name.contains(".backup")
                && !name.contains(".partial")
                && !name.contains(".blocks")
        })
        .collect();
    segments.sort();
    assert!(segments.len() >= 3, "{segments:?}");
    let victim = segments[segments.len() - 2].clone();
    std::fs::remove_file(&victim).unwrap();
    let name = victim.file_name().unwrap().to_string_lossy()[..24].to_string();
    let run = validate(
        &dir,
        &[
            "--only",
            "wal",
            "--metrics-file",
            dir.join("../m.prom").to_str().unwrap(),
        ],
    );
    run.assert_fails("wal.continuity", &name);
    let metrics = std::fs::read_to_string(dir.join("../m.prom")).unwrap();
    assert!(
        metrics.contains("\npipeline_backup_wal_archive_ok 0\n"),
        "{metrics}"
    );
}

#[test]
fn missing_manifest_makes_the_set_incomplete() {
    let (_h, dir) = good_repo();
    let set = only_set(&dir, "kafka");
    std::fs::remove_file(set.join("manifest.json")).unwrap();
    let run = validate(&dir, &["--only", "kafka"]);
    run.assert_fails("repo.incomplete-sets", "kafka/");
    assert_eq!(run.status("kafka.freshness"), "skip");
    let run = validate(&dir, &["--only", "kafka", "--require", "kafka"]);
    run.assert_fails("kafka.freshness", "no complete kafka set");
}

#[test]
fn broken_manifest_fails_manifest_check() {
    let (_h, dir) = good_repo();
    let set = only_set(&dir, "slots");
    std::fs::write(
        set.join("manifest.json"),
        b"{\"format_version\": 1, \"kind\": ",
    )
    .unwrap();
    let run = validate(&dir, &["--only", "slots"]);
    run.assert_fails("slots.manifest", "not a valid manifest");
}

#[test]
fn manifest_of_another_set_fails_manifest_check() {
    let (_h, dir) = good_repo();
    let set = only_set(&dir, "slots");
    edit_manifest(&set, |m| m["id"] = "20200101T000000Z".into());
    validate(&dir, &["--only", "slots"])
        .assert_fails("slots.manifest", "differs from its folder name");
}

#[test]
fn corrupted_topic_archive_fails_archive_check() {
    let (_h, dir) = good_repo();
    let set = only_set(&dir, "kafka");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(set.join("manifest.json")).unwrap()).unwrap();
    let archive = set.join(manifest["details"]["topics"][0]["file"].as_str().unwrap());
    flip_byte(&archive);
    let run = validate(&dir, &["--only", "kafka"]);
    run.assert_fails("kafka.archive", "corrupted");
    run.assert_fails("kafka.files", "SHA-256 mismatch");
}

#[test]
fn record_count_differing_from_the_manifest_fails_archive_check() {
    let (_h, dir) = good_repo();
    let set = only_set(&dir, "kafka");
    edit_manifest(&set, |m| {
        let records = m["details"]["topics"][0]["records"].as_u64().unwrap();
        m["details"]["topics"][0]["records"] = (records + 1).into();
    });
    validate(&dir, &["--only", "kafka"]).assert_fails("kafka.archive", "the manifest says");
}

#[test]
fn slot_inventory_not_matching_its_manifest_fails() {
    let (_h, dir) = good_repo();
    let set = only_set(&dir, "slots");
    edit_manifest(&set, |m| m["details"]["slots"] = serde_json::json!([]));
    validate(&dir, &["--only", "slots"]).assert_fails("slots.inventory", "the manifest lists 0");
}

#[test]
fn missing_wal_to_consistency_fails_base_wal_present() {
    let (_h, dir) = good_repo();
    let set = only_set(&dir, "base");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(set.join("manifest.json")).unwrap()).unwrap();
    if manifest["details"]["wal_method"] != "archive" {
        panic!(
            "the fixture's base backup should use the WAL archive: {}",
            manifest["details"]
        );
    }
    let start = manifest["details"]["start_lsn"]
        .as_str()
        .unwrap()
        .to_string();
    let timeline = manifest["details"]["timeline"].as_u64().unwrap();
    let (hi, lo) = start.split_once('/').unwrap();
    let lsn = (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap();
    let segno = lsn / (16 << 20);
    let name = format!("{timeline:08X}{:08X}{:08X}", segno / 256, segno % 256);
    let mut removed = false;
    for e in std::fs::read_dir(dir.join("wal")).unwrap().flatten() {
        let f = e.file_name().to_string_lossy().to_string();
        if f.starts_with(&name) && !f.contains(".backup") {
            std::fs::remove_file(e.path()).unwrap();
            removed = true;
        }
    }
    assert!(removed, "segment {name} not in the archive");
    let run = validate(&dir, &["--only", "base"]);
    run.assert_fails("base.wal-present", &name);
}

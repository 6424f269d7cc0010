//! A set written through the repository lists, verifies, and is caught when damaged.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::repo::{Kind, Repository, SetMeta};
use common::stream::Compression;
use common::Manifest;

fn meta() -> SetMeta {
    SetMeta {
        tool: "test",
        tool_version: "0.0.0",
        source: serde_json::json!({"server": "test"}),
        details: serde_json::json!({"note": "round trip"}),
    }
}

fn write_set(repo: &Repository) -> (String, Vec<u8>) {
    let mut set = repo.create_set(Kind::Logical).unwrap();
    let payload: Vec<u8> = (0..300_000u32)
        .flat_map(|i| (i % 97).to_le_bytes())
        .collect();
    let mut file = set
        .create_file("data/payload.gz", Compression::Gzip, None, 1)
        .unwrap();
    file.write_all(&payload).unwrap();
    let entry = file.finish().unwrap();
    assert_eq!(entry.raw_size, Some(payload.len() as u64));
    set.add(entry);
    let mut plain = set
        .create_file("notes.txt", Compression::None, None, 1)
        .unwrap();
    plain.write_all(b"plain text\n").unwrap();
    set.add(plain.finish().unwrap());
    let id = set.id().to_string();
    set.commit(meta()).unwrap();
    (id, payload)
}

#[test]
fn set_round_trip_lists_verifies_and_decompresses() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::create(&common::storage::Location::Local(dir.path().into())).unwrap();
    let (id, payload) = write_set(&repo);

    let sets = repo.list(Kind::Logical).unwrap();
    assert_eq!(sets.len(), 1);
    assert!(sets[0].is_complete());
    let (info, manifest) = repo.find(Kind::Logical, None).unwrap();
    assert_eq!(info.id, id);
    assert_eq!(manifest.kind, Kind::Logical);
    assert_eq!(manifest.files.len(), 2);
    assert_eq!(manifest.details["note"], "round trip");
    assert!(repo.verify_files(&info.prefix, &manifest).is_empty());

    // The compressed file is plain gzip that the standard tool accepts.
    let gz = dir.path().join(&info.prefix).join("data/payload.gz");
    let status = Command::new("gzip").arg("-t").arg(&gz).status().unwrap();
    assert!(status.success());
    let mut back = Vec::new();
    Compression::Gzip
        .decoder(std::fs::File::open(&gz).unwrap())
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert_eq!(back, payload);

    // sha256sum of the stored file equals the manifest's checksum.
    let out = Command::new("sha256sum").arg(&gz).output().unwrap();
    let sum = String::from_utf8_lossy(&out.stdout);
    assert!(sum.starts_with(&manifest.file("data/payload.gz").unwrap().sha256));

    // Files and the manifest are private.
    for path in [gz, dir.path().join(&info.prefix).join("manifest.json")] {
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{} is {:o}", path.display(), mode);
    }
}

#[test]
fn flipped_byte_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::create(&common::storage::Location::Local(dir.path().into())).unwrap();
    write_set(&repo);
    let (info, manifest) = repo.find(Kind::Logical, None).unwrap();
    let path = dir.path().join(&info.prefix).join("data/payload.gz");
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let problems = repo.verify_files(&info.prefix, &manifest);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("data/payload.gz"));
    assert!(problems[0].contains("SHA-256"));
    // The fast check before a restore catches it too, with the XXH3-128 the set lists...
    let store = repo.store();
    let problems = manifest.check_files(store, &info.prefix);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("data/payload.gz") && problems[0].contains("XXH3-128"));
    // ...and with SHA-256 in a set from before that hash.
    let mut older = manifest.clone();
    older.files.iter_mut().for_each(|f| f.xxh3 = None);
    let problems = older.check_files(store, &info.prefix);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("SHA-256"), "{problems:?}");
    bytes[middle] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(
        manifest.check_files(store, &info.prefix),
        Vec::<String>::new()
    );

    std::fs::remove_file(dir.path().join(&info.prefix).join("notes.txt")).unwrap();
    let problems = repo.verify_files(&info.prefix, &manifest);
    assert!(problems.iter().any(|p| p.contains("notes.txt: missing")));
    let problems = manifest.check_files(store, &info.prefix);
    assert!(problems.iter().any(|p| p.contains("notes.txt: missing")));
}

#[test]
fn set_without_manifest_is_incomplete_and_never_chosen() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::create(&common::storage::Location::Local(dir.path().into())).unwrap();
    let (good, _) = write_set(&repo);
    // A second run that died before its manifest.
    let set = repo.create_set(Kind::Logical).unwrap();
    let crashed = set.id().to_string();
    let mut f = set.create_file("part", Compression::None, None, 1).unwrap();
    f.write_all(b"half").unwrap();
    f.finish().unwrap();
    // Killed outright: no destructor runs (a dropped writer would remove its directory).
    std::mem::forget(set);

    let sets = repo.list(Kind::Logical).unwrap();
    assert_eq!(sets.len(), 2);
    let incomplete: Vec<_> = sets.iter().filter(|s| !s.is_complete()).collect();
    assert_eq!(incomplete.len(), 1);
    assert_eq!(incomplete[0].id, crashed);
    assert_eq!(repo.find(Kind::Logical, None).unwrap().0.id, good);
    let err = repo.find(Kind::Logical, Some(&crashed)).unwrap_err();
    assert!(format!("{err:#}").contains("incomplete"), "{err:#}");
    let err = repo.find(Kind::Logical, Some("nope")).unwrap_err();
    assert!(format!("{err:#}").contains("no logical backup set 'nope'"));

    // A manifest that does not parse also makes the set incomplete.
    let (info, _) = repo.find(Kind::Logical, None).unwrap();
    std::fs::write(
        dir.path().join(&info.prefix).join("manifest.json"),
        b"{ truncated",
    )
    .unwrap();
    assert!(repo.find(Kind::Logical, None).is_err());
    let listed = repo.list(Kind::Logical).unwrap();
    assert!(listed.iter().any(|s| s.manifest_error.is_some()));
}

#[test]
fn manifest_commit_refuses_a_file_changed_before_commit() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::create(&common::storage::Location::Local(dir.path().into())).unwrap();
    let mut set = repo.create_set(Kind::Kafka).unwrap();
    let mut f = set.create_file("x", Compression::None, None, 1).unwrap();
    f.write_all(b"original").unwrap();
    set.add(f.finish().unwrap());
    let set_dir = dir.path().join(set.prefix());
    std::fs::write(set_dir.join("x"), b"tampered").unwrap();
    let prefix = set.prefix().to_string();
    let err = set.commit(meta()).unwrap_err();
    assert!(format!("{err:#}").contains("x: "), "{err:#}");
    assert!(Manifest::load(repo.store(), &prefix).unwrap().is_none());
    assert!(!set_dir.exists(), "a set that failed its check is removed");
}

#[test]
fn a_writer_dropped_before_commit_removes_its_set_and_a_committed_one_stays() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::create(&common::storage::Location::Local(dir.path().into())).unwrap();
    let (good, _) = write_set(&repo);
    let set = repo.create_set(Kind::Logical).unwrap();
    let mut f = set.create_file("part", Compression::Zstd, None, 1).unwrap();
    f.write_all(b"half written").unwrap();
    let set_dir = dir.path().join(set.prefix());
    assert!(set_dir.is_dir());
    // The run fails here: its error unwinds past the writer.
    drop(f);
    drop(set);
    assert!(!set_dir.exists());
    let sets = repo.list(Kind::Logical).unwrap();
    assert_eq!(sets.len(), 1);
    assert_eq!(sets[0].id, good);
    assert!(sets[0].is_complete());
}

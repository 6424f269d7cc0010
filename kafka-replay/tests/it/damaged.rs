//! A damaged archive is refused with an error naming the chunk, before anything is produced;
//! an unreachable broker is a clear error with exit code 2.

use std::path::{Path, PathBuf};

use crate::support::*;

/// A set of a 3000-record topic in small chunks; returns the topic and its archive file.
fn small_chunked_set(dir: &Path) -> (String, PathBuf) {
    let source = topic("dmg_src", 3);
    produce(&source, (0..3000u64).map(|i| ((i % 3) as i32, varied(i))));
    let summary = backup(dir, &["--topic", &source, "--chunk-kib", "16"])
        .ok()
        .summary();
    let set_dir = PathBuf::from(summary["dir"].as_str().unwrap());
    let file = set_dir.join(summary["topics"][0]["file"].as_str().unwrap());
    (source, file)
}

#[test]
fn corrupted_archive_is_refused_naming_the_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let (source, file) = small_chunked_set(dir.path());
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() * 3 / 5;
    bytes[at] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();

    let target = test_support::unique_name("dmg_dst");
    let run = replay(dir.path(), &["--topic", &source, "--target-topic", &target]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let line = run.stderr.lines().last().unwrap();
    assert!(line.starts_with("kafka-replay: archive "), "{line}");
    assert!(
        line.contains("is corrupted") && line.contains("chunk "),
        "{line}"
    );
    assert_eq!(
        partition_count(&target),
        0,
        "nothing may be produced from a damaged archive"
    );
}

#[test]
fn truncated_archive_is_refused_naming_the_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let (source, file) = small_chunked_set(dir.path());
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();

    let target = test_support::unique_name("trunc_dst");
    let run = replay(dir.path(), &["--topic", &source, "--target-topic", &target]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("is truncated") && run.stderr.contains("chunk "),
        "{}",
        run.stderr
    );
    assert_eq!(partition_count(&target), 0);

    // Cut exactly at a chunk boundary: the missing END chunk gives it away.
    let mut reader = common::topic_archive::ArchiveReader::open(&bytes[..]).unwrap();
    let mut boundary = reader.position();
    for _ in 0..3 {
        reader.next_records().unwrap();
        boundary = reader.position();
    }
    std::fs::write(&file, &bytes[..boundary as usize]).unwrap();
    let run = replay(dir.path(), &["--topic", &source, "--target-topic", &target]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("without its END chunk"),
        "{}",
        run.stderr
    );
}

#[test]
fn unreachable_broker_is_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let (source, _) = small_chunked_set(dir.path());
    let port = test_support::free_port();
    let run = replay(
        dir.path(),
        &[
            "--topic",
            &source,
            "--bootstrap-servers",
            &format!("127.0.0.1:{port}"),
        ],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("cannot reach Kafka"), "{}", run.stderr);
}

#[test]
fn an_archive_swapped_for_another_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (source, first) = small_chunked_set(dir.path());
    produce(&source, [(0, varied(1))]);
    let summary = backup(dir.path(), &["--topic", &source]).ok().summary();
    let second = PathBuf::from(summary["dir"].as_str().unwrap())
        .join(summary["topics"][0]["file"].as_str().unwrap());
    // A readable archive of the same topic, but not the one the first set's manifest lists.
    std::fs::copy(&second, &first).unwrap();
    let first_id = first
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();

    let target = test_support::unique_name("swap_dst");
    let run = replay(
        dir.path(),
        &[
            "--topic",
            &source,
            "--target-topic",
            &target,
            "--backup-id",
            &first_id,
        ],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("do not match their manifest"),
        "{}",
        run.stderr
    );
    assert_eq!(partition_count(&target), 0);
}

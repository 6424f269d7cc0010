//! A damaged archive is refused with an error naming the chunk, before anything is produced;
//! an unreachable broker is a clear error with exit code 2.

use std::path::PathBuf;

use crate::support::*;

/// A set of a 3000-record topic in small chunks, and its archive file.
fn small_chunked_set() -> (BackedUp, PathBuf) {
    let source = source_topic(
        "dmg_src",
        3,
        (0..3000u64).map(|i| ((i % 3) as i32, varied(i))),
    );
    let set = BackedUp::new(source, &["--chunk-kib", "16"]);
    let file = archive_file(&set.summary);
    (set, file)
}

#[test]
fn corrupted_archive_is_refused_naming_the_chunk() {
    let (set, file) = small_chunked_set();
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() * 3 / 5;
    bytes[at] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();

    let target = test_support::unique_name("dmg_dst");
    let run = set.replay_into(&target, &[]);
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
    let (set, file) = small_chunked_set();
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();

    let target = test_support::unique_name("trunc_dst");
    let run = set.replay_into(&target, &[]);
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
    let run = set.replay_into(&target, &[]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("without its END chunk"),
        "{}",
        run.stderr
    );
}

#[test]
fn unreachable_broker_is_exit_2() {
    let (set, _) = small_chunked_set();
    let port = test_support::free_port();
    let run = replay(
        set.dir(),
        &[
            "--topic",
            &set.source,
            "--bootstrap-servers",
            &format!("127.0.0.1:{port}"),
        ],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("cannot reach Kafka"), "{}", run.stderr);
}

#[test]
fn an_archive_swapped_for_another_is_refused() {
    let (set, first) = small_chunked_set();
    produce(&set.source, [(0, varied(1))]);
    let second = archive_file(&backup(set.dir(), &["--topic", &set.source]).ok().summary());
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
    let run = set.replay_into(&target, &["--backup-id", &first_id]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("do not match their manifest"),
        "{}",
        run.stderr
    );
    assert_eq!(partition_count(&target), 0);
}

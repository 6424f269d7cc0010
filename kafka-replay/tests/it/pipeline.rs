//! `kafka-topic-backup --stdout | kafka-replay --stdin` copies a topic, creating the target
//! with the partition count carried in the stream.

use std::process::Command;

use crate::support::*;

#[test]
fn stdout_to_stdin_pipeline_round_trip() {
    let source = topic("pipe_src", 3);
    produce(&source, (0..3000u64).map(|i| ((i % 3) as i32, varied(i))));
    let target = test_support::unique_name("pipe_dst");
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "set -o pipefail; '{}' -q --stdout --topic '{}' | '{}' --output json --stdin --target-topic '{}'",
        backup_bin().display(),
        source,
        replay_bin(),
        target
    );
    let output = Command::new("bash")
        .args(["-c", &script])
        .env("KAFKA_BOOTSTRAP_SERVERS", test_support::kafka::bootstrap())
        .env("BACKUP_DIR", dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["source"], "stdin");
    assert_eq!(summary["verified"], true);
    assert_eq!(summary["records_produced"], 3000);
    // Nothing was written to the repository by --stdout.
    assert!(!dir.path().join("kafka").exists());
    assert_eq!(partition_count(&target), 3);
    assert_eq!(recs(&read_all(&target)), recs(&read_all(&source)));
}

#[test]
fn empty_input_is_named_as_such_and_creates_nothing() {
    // What a pipeline gives when the backup before the pipe failed: nothing at all.
    let dir = tempfile::tempdir().unwrap();
    let target = test_support::unique_name("pipe_empty");
    let run = replay(dir.path(), &["--stdin", "--target-topic", &target]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let line = run.stderr.lines().last().unwrap();
    assert!(line.contains("the input is empty"), "{line}");
    assert!(line.contains("did the command before it fail?"), "{line}");
    assert!(run.stdout.is_empty());
    assert_eq!(partition_count(&target), 0, "no topic was created");
}

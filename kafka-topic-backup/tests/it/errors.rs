//! Failures are clear, exit 2, and leave no set that could pass for a backup.

use common::repo::{Kind, Repository};

use crate::support::*;

#[test]
fn unreachable_broker_is_exit_2_without_a_set() {
    let dir = tempfile::tempdir().unwrap();
    let port = test_support::free_port();
    let run = backup(
        dir.path(),
        &[
            "--bootstrap-servers",
            &format!("127.0.0.1:{port}"),
            "--topic",
            "orders",
        ],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    let line = run.stderr.lines().last().unwrap();
    assert!(
        line.starts_with("kafka-topic-backup: cannot reach Kafka at 127.0.0.1:"),
        "{line}"
    );
    assert!(line.contains("KAFKA_BOOTSTRAP_SERVERS"), "{line}");
    assert!(run.stdout.is_empty());
    if let Ok(repo) = Repository::open(dir.path()) {
        assert!(repo.list(Kind::Kafka).unwrap().is_empty());
    }
}

#[test]
fn missing_topic_and_bad_regex_are_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = test_support::unique_name("missing");
    let run = backup(dir.path(), &["--topic", &missing]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains(&format!("topic '{missing}' does not exist")),
        "{}",
        run.stderr
    );
    // Asking for it did not create it.
    let consumer: rdkafka::consumer::BaseConsumer =
        test_support::kafka::client_config().create().unwrap();
    let metadata = rdkafka::consumer::Consumer::fetch_metadata(
        &consumer,
        None,
        std::time::Duration::from_secs(10),
    )
    .unwrap();
    assert!(metadata.topics().iter().all(|t| t.name() != missing));
    let run = backup(dir.path(), &["--topic-regex", "(unclosed"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("invalid --topic-regex"),
        "{}",
        run.stderr
    );
    let repo = Repository::open(dir.path()).unwrap();
    assert!(repo.complete_sets(Kind::Kafka).unwrap().is_empty());
}

//! Replaying from a repository on S3 (the SeaweedFS test service): a set and an incremental
//! chain come back record for record; a damaged object is refused before anything is
//! produced; a wrong secret key is one line, exit 2; `--stdout | --stdin` never touches the
//! repository; an encrypted set replays exactly and a damaged encrypted object is refused.

use std::process::Command;

use test_support::s3::S3Env;

use crate::support::*;

/// Runs kafka-topic-backup on the repository `url` with the service's credentials.
fn backup_s3(s3: &S3Env, url: &str, args: &[&str]) -> Run {
    Run::of(s3.apply(&mut tool(backup_bin(), url, args)))
}

/// Runs kafka-replay on the repository `url` with the service's credentials.
fn replay_s3(s3: &S3Env, url: &str, args: &[&str]) -> Run {
    Run::of(s3.apply(&mut tool(replay_bin(), url, args)))
}

/// A value of `len` bytes that does not compress.
fn noise(len: usize, mut state: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[test]
fn round_trip_through_s3_is_exact_and_resumable() {
    let s3 = test_support::s3::env();
    let source = topic("s3rt_src", 3);
    // Varied records, and 7 of 900 kB that do not compress: the archive (over 6 MB) goes up
    // as a multipart upload of 5 MiB parts and comes down in one streamed GET.
    let mut records: Vec<(i32, Rec)> = (0..6000u64).map(|i| ((i % 3) as i32, varied(i))).collect();
    for i in 0..7u64 {
        let mut big = varied(6000 + i);
        big.value = Some(noise(900_000, i + 1));
        records.push(((i % 3) as i32, big));
    }
    produce(&source, records);
    let url = s3.url("kafka-replay");

    let backup = backup_s3(&s3, &url, &["--topic", &source]).ok().summary();
    assert_eq!(backup["records"], 6007);
    assert!(backup["bytes"].as_u64().unwrap() > 6_000_000, "{backup}");
    let id = backup["id"].as_str().unwrap();
    assert_eq!(backup["dir"], format!("{url}/kafka/{id}"));

    let target = test_support::unique_name("s3rt_dst");
    let replayed = replay_s3(&s3, &url, &["--topic", &source, "--target-topic", &target])
        .ok()
        .summary();
    assert_eq!(replayed["verified"], true);
    assert_eq!(replayed["created_topic"], true);
    assert_eq!(replayed["sets"], serde_json::json!([id]));
    assert_eq!(replayed["records_produced"], 6007);

    let original = read_all(&source);
    let restored = read_all(&target);
    assert_eq!(restored.len(), 3);
    for partition in 0..3 {
        let (a, b) = (&original[&partition], &restored[&partition]);
        assert_eq!(a.len(), 2002 + usize::from(partition < 1));
        assert_eq!(a.len(), b.len(), "partition {partition}");
        for (x, y) in a.iter().zip(b) {
            assert_eq!(
                x.rec, y.rec,
                "partition {partition} source offset {}",
                x.offset
            );
            assert!(y.create_time);
        }
    }

    // A re-run (what resuming an interrupted replay does) reads the set from S3 again,
    // checks the target against it and produces nothing.
    let again = replay_s3(&s3, &url, &["--topic", &source, "--target-topic", &target])
        .ok()
        .summary();
    assert_eq!(again["records_produced"], 0);
    assert_eq!(again["records_present"], 6007);
    assert_eq!(recs(&read_all(&target)), recs(&restored));
    assert!(s3.open_uploads(&url).is_empty());
}

#[test]
fn incremental_chain_on_s3_replays_every_record_once() {
    let s3 = test_support::s3::env();
    let source = topic("s3chain_src", 2);
    produce(&source, (0..300u64).map(|i| ((i % 2) as i32, varied(i))));
    let url = s3.url("kafka-replay-chain");
    let full = backup_s3(&s3, &url, &["--topic", &source, "--incremental"])
        .ok()
        .summary();
    produce(&source, (300..500u64).map(|i| ((i % 2) as i32, varied(i))));
    let second = backup_s3(&s3, &url, &["--topic", &source, "--incremental"])
        .ok()
        .summary();
    assert_eq!(second["records"], 200);
    assert_eq!(second["topics"][0]["incremental_from"], full["id"]);

    let target = test_support::unique_name("s3chain_dst");
    let run = replay_s3(&s3, &url, &["--topic", &source, "--target-topic", &target])
        .ok()
        .summary();
    assert_eq!(run["sets"], serde_json::json!([full["id"], second["id"]]));
    assert_eq!(run["records_produced"], 500);
    assert_eq!(run["verified"], true);
    assert_eq!(recs(&read_all(&target)), recs(&read_all(&source)));
}

#[test]
fn damaged_object_on_s3_is_refused_before_producing() {
    let s3 = test_support::s3::env();
    let source = topic("s3dmg_src", 3);
    produce(&source, (0..3000u64).map(|i| ((i % 3) as i32, varied(i))));
    let url = s3.url("kafka-replay-damaged");
    let summary = backup_s3(&s3, &url, &["--topic", &source, "--chunk-kib", "16"])
        .ok()
        .summary();
    let key = format!(
        "kafka/{}/{}",
        summary["id"].as_str().unwrap(),
        summary["topics"][0]["file"].as_str().unwrap()
    );
    let store = s3.store(&url);
    let mut bytes = store.read(&key).unwrap();
    let at = bytes.len() * 3 / 5;
    bytes[at] ^= 0xff;
    store.put(&key, &bytes).unwrap();

    let target = test_support::unique_name("s3dmg_dst");
    let run = replay_s3(&s3, &url, &["--topic", &source, "--target-topic", &target]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let line = run.error_line("kafka-replay");
    assert!(
        line.starts_with(&format!("kafka-replay: archive {url}/{key} is damaged")),
        "{line}"
    );
    assert!(
        line.contains("is corrupted") && line.contains("chunk "),
        "{line}"
    );
    assert_eq!(partition_count(&target), 0, "nothing may be produced");
}

#[test]
fn wrong_secret_key_is_one_line_and_exit_2() {
    let s3 = test_support::s3::env();
    let source = topic("s3key_src", 1);
    produce(&source, (0..20u64).map(|i| (0, varied(i))));
    let url = s3.url("kafka-replay-badkey");
    backup_s3(&s3, &url, &["--topic", &source]).ok();

    let wrong = "Wr0ngSecretKeyForTheTestService0000000000";
    let target = test_support::unique_name("s3key_dst");
    let mut command = tool(
        replay_bin(),
        &url,
        &["--topic", &source, "--target-topic", &target],
    );
    let run = Run::of(s3.apply(&mut command).env("AWS_SECRET_ACCESS_KEY", wrong));
    assert_eq!(run.code, 2, "{}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", run.stderr);
    assert!(lines[0].starts_with("kafka-replay: "), "{}", lines[0]);
    assert!(lines[0].contains("AWS_SECRET_ACCESS_KEY"), "{}", lines[0]);
    assert!(!run.stderr.contains(wrong) && !run.stderr.contains(s3.secret_key()));
    assert!(run.stdout.is_empty());
    assert_eq!(partition_count(&target), 0);
}

#[test]
fn stdout_to_stdin_pipeline_never_touches_an_s3_backup_dir() {
    let s3 = test_support::s3::env();
    let source = topic("s3pipe_src", 3);
    produce(&source, (0..3000u64).map(|i| ((i % 3) as i32, varied(i))));
    let target = test_support::unique_name("s3pipe_dst");
    let url = s3.url("kafka-pipe");
    let script = format!(
        "set -o pipefail; '{}' -q --stdout --topic '{}' | '{}' --output json --stdin --target-topic '{}'",
        backup_bin().display(),
        source,
        replay_bin(),
        target
    );
    // BACKUP_DIR names the bucket, with a secret key the service refuses: a tool that
    // opened the repository would fail.
    let mut command = Command::new("bash");
    command
        .args(["-c", &script])
        .env("KAFKA_BOOTSTRAP_SERVERS", test_support::kafka::bootstrap())
        .env("BACKUP_DIR", &url);
    s3.apply(&mut command).env(
        "AWS_SECRET_ACCESS_KEY",
        "Wr0ngSecretKeyForTheTestService0000000000",
    );
    let run = Run::of(&mut command).ok();
    let summary = run.summary();
    assert_eq!(summary["source"], "stdin");
    assert_eq!(summary["verified"], true);
    assert_eq!(summary["records_produced"], 3000);
    assert_eq!(recs(&read_all(&target)), recs(&read_all(&source)));
    assert_eq!(s3.keys(&url), Vec::<String>::new());
}

#[test]
fn encrypted_set_on_s3_replays_exactly_and_a_damaged_object_is_refused() {
    let s3 = test_support::s3::env();
    let keys = test_support::age_keys::AgeKeys::generate();
    let source = topic("s3enc_src", 2);
    produce(&source, (0..2000u64).map(|i| ((i % 2) as i32, varied(i))));
    let url = s3.url("kafka-replay-age");
    let mut command = tool(backup_bin(), &url, &["--topic", &source]);
    let backup = Run::of(s3.apply(&mut command).envs(keys.recipients_env()))
        .ok()
        .summary();
    assert_eq!(backup["encrypted"], true);
    let key = format!(
        "kafka/{}/{}",
        backup["id"].as_str().unwrap(),
        backup["topics"][0]["file"].as_str().unwrap()
    );
    assert!(key.ends_with(".kta.age"), "{key}");
    let store = s3.store(&url);
    let bytes = store.read(&key).unwrap();
    assert!(bytes.starts_with(b"age-encryption.org/v1\n"));

    let replay_age = |target: &str| {
        let mut command = tool(
            replay_bin(),
            &url,
            &["--topic", &source, "--target-topic", target],
        );
        Run::of(s3.apply(&mut command).envs(keys.identity_env()))
    };
    let target = test_support::unique_name("s3enc_dst");
    let replayed = replay_age(&target).ok().summary();
    assert_eq!(replayed["verified"], true);
    assert_eq!(replayed["records_produced"], 2000);
    assert_eq!(recs(&read_all(&target)), recs(&read_all(&source)));

    let mut damaged = bytes.clone();
    let at = damaged.len() * 3 / 5;
    damaged[at] ^= 0x01;
    store.put(&key, &damaged).unwrap();
    let target = test_support::unique_name("s3enc_dmg");
    let run = replay_age(&target);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let line = run.error_line("kafka-replay");
    assert!(
        line.starts_with(&format!("kafka-replay: archive {url}/{key} is damaged")),
        "{line}"
    );
    assert!(line.contains("fails authentication"), "{line}");
    assert_eq!(partition_count(&target), 0, "nothing may be produced");
}

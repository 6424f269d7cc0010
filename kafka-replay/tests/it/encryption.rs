//! Encrypted backups (age): an encrypted set and an encrypted `--stdout | --stdin` pipe replay
//! record for record; a stream the `age` CLI encrypted is accepted; a missing or wrong key, a
//! flipped byte or a truncation is one line naming the file, exit 2, and nothing produced;
//! passphrase mode; a chain mixing plain and encrypted sets replays whole; no key shows.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use test_support::age_keys::{cmdlines_containing, AgeKeys};

use crate::support::*;

/// The first line of every age file.
const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";

/// Runs kafka-topic-backup on `dir` with extra environment.
fn backup_env(dir: &Path, args: &[&str], env: &[(String, String)]) -> Run {
    Run::from(
        tool(backup_bin(), dir, args)
            .envs(env.iter().cloned())
            .output()
            .unwrap(),
    )
}

/// Runs kafka-replay on `dir` with extra environment.
fn replay_env(dir: &Path, args: &[&str], env: &[(String, String)]) -> Run {
    Run::from(
        tool(replay_bin(), dir, args)
            .envs(env.iter().cloned())
            .output()
            .unwrap(),
    )
}

/// Runs `kafka-replay --stdin` fed `input`, with extra environment.
fn replay_stdin(dir: &Path, input: &[u8], args: &[&str], env: &[(String, String)]) -> Run {
    let mut child = tool(replay_bin(), dir, &[&["--stdin"], args].concat())
        .envs(env.iter().cloned())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A replay that fails early closes its end of the pipe: that is not the test's error.
    let _ = child.stdin.take().unwrap().write_all(input);
    Run::from(child.wait_with_output().unwrap())
}

/// Asserts the run failed with exit 2 and one error line holding every `needle`, and that
/// `target` was never created.
fn refused(run: &Run, target: &str, needles: &[&str]) -> String {
    assert_eq!(run.code, 2, "{}", run.stderr);
    let line = run.error_line("kafka-replay");
    for needle in needles {
        assert!(line.contains(needle), "no '{needle}' in: {line}");
    }
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert_eq!(
        partition_count(target),
        0,
        "nothing may be produced: {line}"
    );
    line
}

#[test]
fn encrypted_set_replays_record_for_record_and_keys_never_show() {
    let keys = AgeKeys::generate();
    let other = AgeKeys::generate();
    let source = topic("encrt_src", 3);
    produce(&source, (0..6000u64).map(|i| ((i % 3) as i32, varied(i))));
    let dir = tempfile::tempdir().unwrap();
    let backup = backup_env(dir.path(), &["--topic", &source], &keys.recipients_env())
        .ok()
        .summary();
    assert_eq!(backup["encrypted"], true);
    let file = archive_file(&backup);
    let name = file.file_name().unwrap().to_str().unwrap().to_string();
    assert!(name.ends_with(".kta.age"), "{name}");
    assert!(std::fs::read(&file).unwrap().starts_with(AGE_MAGIC));
    let args = |target: &str| {
        [
            "--topic".to_string(),
            source.clone(),
            "--target-topic".into(),
            target.into(),
        ]
    };

    // No identity, then the wrong one: refused before any topic is created.
    let target = test_support::unique_name("encrt_dst");
    let a = args(&target);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let run = replay(dir.path(), &a);
    refused(
        &run,
        &target,
        &[&name, "is encrypted", "BACKUP_ENCRYPTION_IDENTITY_FILE"],
    );
    let run = replay_env(dir.path(), &a, &other.identity_env());
    refused(&run, &target, &[&name, "wrong identity"]);
    assert!(!run.stderr.contains(&other.secret));

    // With the identity, record for record; the key on no process's command line meanwhile.
    let mut child = tool(replay_bin(), dir.path(), &a)
        .envs(keys.identity_env())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut on_argv = Vec::new();
    while child.try_wait().unwrap().is_none() {
        on_argv.extend(cmdlines_containing(&keys.secret));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(on_argv, Vec::<String>::new());
    let run = Run::from(child.wait_with_output().unwrap()).ok();
    for out in [&run.stdout, &run.stderr] {
        assert!(!out.contains(&keys.secret));
    }
    let summary = run.summary();
    assert_eq!(summary["verified"], true);
    assert_eq!(summary["created_topic"], true);
    assert_eq!(summary["records_produced"], 6000);
    let original = read_all(&source);
    let restored = read_all(&target);
    for partition in 0..3 {
        let (a, b) = (&original[&partition], &restored[&partition]);
        assert_eq!(a.len(), 2000);
        assert_eq!(a.len(), b.len(), "partition {partition}");
        for (x, y) in a.iter().zip(b) {
            assert_eq!(x.rec, y.rec, "partition {partition} offset {}", x.offset);
            assert!(y.create_time);
        }
    }
    // The saved config came out of the encrypted archive.
    assert_eq!(
        crate::round_trip::topic_config(&target, "retention.ms").as_deref(),
        Some("-1")
    );

    // A resume reads the encrypted set again, checks the target and produces nothing.
    let again = replay_env(dir.path(), &a, &keys.identity_env())
        .ok()
        .summary();
    assert_eq!(again["records_produced"], 0);
    assert_eq!(again["records_present"], 6000);
}

#[test]
fn damaged_or_truncated_encrypted_archive_is_refused_before_producing() {
    let keys = AgeKeys::generate();
    let source = topic("encdmg_src", 3);
    // Values that do not compress: an archive of several 64 KiB age chunks.
    produce(
        &source,
        (0..3000u64).map(|i| {
            let mut rec = varied(i);
            let mut state = i + 1;
            rec.value = Some(
                (0..200)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        state as u8
                    })
                    .collect(),
            );
            ((i % 3) as i32, rec)
        }),
    );
    let dir = tempfile::tempdir().unwrap();
    let summary = backup_env(
        dir.path(),
        &["--topic", &source, "--chunk-kib", "16"],
        &keys.recipients_env(),
    )
    .ok()
    .summary();
    let file = archive_file(&summary);
    let name = file.file_name().unwrap().to_str().unwrap().to_string();
    let bytes = std::fs::read(&file).unwrap();
    assert!(bytes.len() > 4 * 65_536, "{} bytes", bytes.len());
    let target = test_support::unique_name("encdmg_dst");
    let args = ["--topic", &source, "--target-topic", &target];

    let mut flipped = bytes.clone();
    let at = flipped.len() * 3 / 5;
    flipped[at] ^= 0x01;
    std::fs::write(&file, &flipped).unwrap();
    let run = replay_env(dir.path(), &args, &keys.identity_env());
    let line = refused(
        &run,
        &target,
        &[&name, "is damaged", "fails authentication"],
    );
    assert!(line.starts_with("kafka-replay: archive "), "{line}");

    // Cut at an age chunk boundary (after the header's MAC line and a 16-byte nonce come
    // chunks of 64 KiB + a 16-byte tag): only the missing last chunk tells.
    let mac = bytes.windows(4).position(|w| w == b"\n---").unwrap() + 1;
    let payload = mac + bytes[mac..].iter().position(|&b| b == b'\n').unwrap() + 1 + 16;
    for cut in [bytes.len() / 2, payload + 2 * 65_552] {
        std::fs::write(&file, &bytes[..cut]).unwrap();
        let run = replay_env(dir.path(), &args, &keys.identity_env());
        refused(&run, &target, &[&name, "truncated"]);
    }
    // Cut inside the age header.
    std::fs::write(&file, &bytes[..40]).unwrap();
    let run = replay_env(dir.path(), &args, &keys.identity_env());
    refused(&run, &target, &[&name]);

    // The intact file replays.
    std::fs::write(&file, &bytes).unwrap();
    let run = replay_env(dir.path(), &args, &keys.identity_env())
        .ok()
        .summary();
    assert_eq!(run["records_produced"], 3000);
}

#[test]
fn encrypted_pipe_and_a_stream_the_age_cli_encrypted_replay_from_stdin() {
    let keys = AgeKeys::generate();
    let other = AgeKeys::generate();
    let source = topic("encpipe_src", 3);
    produce(&source, (0..3000u64).map(|i| ((i % 3) as i32, varied(i))));
    let original = recs(&read_all(&source));
    let dir = tempfile::tempdir().unwrap();

    // The pipe, each side with its own key.
    let target = test_support::unique_name("encpipe_dst");
    let script = format!(
        "set -o pipefail; BACKUP_ENCRYPTION_RECIPIENTS='{}' '{}' -q --stdout --topic '{}' | BACKUP_ENCRYPTION_IDENTITY_FILE='{}' '{}' --output json --stdin --target-topic '{}'",
        keys.recipient,
        backup_bin().display(),
        source,
        keys.identity_file.display(),
        replay_bin(),
        target
    );
    let run = Run::from(
        Command::new("bash")
            .args(["-c", &script])
            .env("KAFKA_BOOTSTRAP_SERVERS", test_support::kafka::bootstrap())
            .env("BACKUP_DIR", dir.path())
            .output()
            .unwrap(),
    )
    .ok();
    assert!(run.stderr.contains("age stream"), "{}", run.stderr);
    assert!(!run.stderr.contains(&keys.secret) && !run.stdout.contains(&keys.secret));
    let summary = run.summary();
    assert_eq!(summary["source"], "stdin");
    assert_eq!(summary["verified"], true);
    assert_eq!(summary["records_produced"], 3000);
    assert_eq!(recs(&read_all(&target)), original);
    assert!(!dir.path().join("kafka").exists());

    // The same stream captured: it is an age file, refused without the right key, and
    // refused when damaged in its first chunk, before anything is produced.
    let out = tool(
        backup_bin(),
        dir.path(),
        &["-q", "--stdout", "--topic", &source],
    )
    .envs(keys.recipients_env())
    .output()
    .unwrap();
    assert!(out.status.success());
    let stream = out.stdout;
    assert!(stream.starts_with(AGE_MAGIC));
    let none = test_support::unique_name("encpipe_none");
    let run = replay_stdin(dir.path(), &stream, &["--target-topic", &none], &[]);
    refused(
        &run,
        &none,
        &["stdin is encrypted", "BACKUP_ENCRYPTION_IDENTITY_FILE"],
    );
    let run = replay_stdin(
        dir.path(),
        &stream,
        &["--target-topic", &none],
        &other.identity_env(),
    );
    refused(&run, &none, &["stdin", "wrong identity"]);
    let mut damaged = stream.clone();
    damaged[1000] ^= 0x01;
    let run = replay_stdin(
        dir.path(),
        &damaged,
        &["--target-topic", &none],
        &keys.identity_env(),
    );
    refused(&run, &none, &["stdin", "fails authentication"]);

    // A plain stream encrypted by the Debian age CLI to our recipient is accepted.
    let plain = tool(
        backup_bin(),
        dir.path(),
        &["-q", "--stdout", "--topic", &source],
    )
    .output()
    .unwrap();
    assert!(plain.status.success());
    let mut age = Command::new("age")
        .args(["-r", &keys.recipient])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run age (Debian package age)");
    let mut input = age.stdin.take().unwrap();
    let feed = std::thread::spawn(move || input.write_all(&plain.stdout).unwrap());
    let encrypted = age.wait_with_output().unwrap();
    feed.join().unwrap();
    assert!(encrypted.status.success());
    let by_cli = test_support::unique_name("encpipe_cli");
    let run = replay_stdin(
        dir.path(),
        &encrypted.stdout,
        &["--target-topic", &by_cli],
        &keys.identity_env(),
    )
    .ok();
    assert_eq!(run.summary()["records_produced"], 3000);
    assert_eq!(recs(&read_all(&by_cli)), original);
}

#[test]
fn passphrase_mode_round_trip() {
    let source = topic("encpw_src", 2);
    produce(&source, (0..400u64).map(|i| ((i % 2) as i32, varied(i))));
    let dir = tempfile::tempdir().unwrap();
    let secret = "correct horse battery staple 4711";
    let passphrase = dir.path().join("passphrase");
    std::fs::write(&passphrase, format!("{secret}\n")).unwrap();
    let env = [(
        "BACKUP_ENCRYPTION_PASSPHRASE_FILE".to_string(),
        passphrase.display().to_string(),
    )];
    let repo = dir.path().join("repo");
    let run = backup_env(&repo, &["--topic", &source], &env).ok();
    let backup = run.summary();
    assert_eq!(backup["encrypted"], true);
    assert!(archive_file(&backup)
        .to_str()
        .unwrap()
        .ends_with(".kta.age"));
    let manifest =
        std::fs::read_to_string(Path::new(backup["dir"].as_str().unwrap()).join("manifest.json"))
            .unwrap();
    assert!(manifest.contains("\"passphrase\": true") || manifest.contains("\"passphrase\":true"));
    assert!(!manifest.contains(secret));

    let target = test_support::unique_name("encpw_dst");
    let args = ["--topic", &source, "--target-topic", &target];
    refused(
        &replay(&repo, &args),
        &target,
        &["is encrypted", "BACKUP_ENCRYPTION_PASSPHRASE_FILE"],
    );
    let replayed = replay_env(&repo, &args, &env).ok();
    for out in [&run.stdout, &run.stderr, &replayed.stdout, &replayed.stderr] {
        assert!(!out.contains(secret));
    }
    assert_eq!(replayed.summary()["records_produced"], 400);
    assert_eq!(recs(&read_all(&target)), recs(&read_all(&source)));
}

#[test]
fn chain_of_a_plain_then_an_encrypted_set_replays_whole() {
    let keys = AgeKeys::generate();
    let source = topic("encmix_src", 2);
    produce(&source, (0..300u64).map(|i| ((i % 2) as i32, varied(i))));
    let dir = tempfile::tempdir().unwrap();
    let full = backup(dir.path(), &["--topic", &source, "--incremental"])
        .ok()
        .summary();
    assert_eq!(full["encrypted"], false);
    produce(&source, (300..500u64).map(|i| ((i % 2) as i32, varied(i))));
    let second = backup_env(
        dir.path(),
        &["--topic", &source, "--incremental"],
        &keys.recipients_env(),
    )
    .ok()
    .summary();
    assert_eq!(second["encrypted"], true);
    assert_eq!(second["topics"][0]["incremental_from"], full["id"]);

    // Without the key, the encrypted part is named before the plain part is produced.
    let target = test_support::unique_name("encmix_dst");
    let args = ["--topic", &source, "--target-topic", &target];
    let name = archive_file(&second);
    let name = name.file_name().unwrap().to_str().unwrap();
    refused(&replay(dir.path(), &args), &target, &[name, "is encrypted"]);

    let run = replay_env(dir.path(), &args, &keys.identity_env())
        .ok()
        .summary();
    assert_eq!(run["sets"], serde_json::json!([full["id"], second["id"]]));
    assert_eq!(run["records_produced"], 500);
    assert_eq!(run["verified"], true);
    assert_eq!(recs(&read_all(&target)), recs(&read_all(&source)));
}

//! The recovery drill end to end: real cluster, real tools, real broker.

use std::time::Duration;

use crate::support::{command, finish};

#[test]
fn drill_restores_every_component_and_measures_rto_and_rpo() {
    let work = test_support::os_user::db_tempdir("validate-drill-");
    let mut cmd = command(&[
        "drill",
        "--output",
        "json",
        "--rows",
        "2000",
        "--records",
        "200",
        "--cdc-rows",
        "300",
        "--keep",
    ]);
    cmd.arg("--work-dir")
        .arg(work.path().join("w"))
        .arg("--bin-dir")
        .arg(test_support::tool_bin("wal-archive").parent().unwrap())
        .env("KAFKA_BOOTSTRAP_SERVERS", test_support::kafka::bootstrap());
    let run = finish(cmd.output().unwrap());
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    // --keep leaves the drill's topics on the broker, named: the Kafka component's and the
    // pipeline's (originals and restored copies).
    let kept: Vec<String> = run
        .stderr
        .lines()
        .filter_map(|l| {
            l.split_once("the drill's topics ")?
                .1
                .split_once(" are left")
        })
        .flat_map(|(names, _)| names.split(' ').map(str::to_string))
        .collect();
    assert_eq!(kept.len(), 5, "{}", run.stderr);
    let existing = test_support::kafka::topic_names();
    for topic in &kept {
        assert!(existing.contains(topic), "{topic} kept: {existing:?}");
    }
    test_support::kafka::delete_topics(&kept);
    let lines = run.json();
    let components: Vec<_> = lines.iter().filter(|l| l["type"] == "component").collect();
    let names: Vec<&str> = components
        .iter()
        .map(|c| c["component"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "postgres-pitr",
            "postgres-logical",
            "cdc-slots",
            "kafka",
            "pipeline"
        ]
    );
    for c in &components {
        assert_eq!(c["status"], "ok", "{c}");
        let rto = c["rto_s"].as_f64().unwrap();
        let rpo = c["rpo_s"].as_f64().unwrap();
        assert!(rto > 0.0 && rto < 600.0, "{c}");
        assert!((0.0..600.0).contains(&rpo), "{c}");
    }
    // PITR recovers the changes made after the backups; the dump and the topic export only
    // hold what existed when they were taken, so their RPO is larger.
    let rpo = |name: &str| {
        components.iter().find(|c| c["component"] == name).unwrap()["rpo_s"]
            .as_f64()
            .unwrap()
    };
    assert!(
        rpo("postgres-pitr") < rpo("postgres-logical"),
        "{components:?}"
    );
    // The whole pipeline came back at one cut before the disaster: the changes streamed after
    // the backups are lost, so its RPO is above zero.
    let pipeline = components[4];
    assert!(rpo("pipeline") > 0.0, "{pipeline}");
    assert!(pipeline["rto_s"].as_f64().unwrap() > 0.0, "{pipeline}");
    let detail = pipeline["detail"].as_str().unwrap();
    assert!(
        detail.contains("restored to one point") && detail.contains("lost in the disaster"),
        "{pipeline}"
    );
    // 60 rows (a fifth of --cdc-rows, ids 361-420) after the backups: 60 inserts, 20
    // updates, 9 deletes.
    assert!(detail.contains("; 89 CDC event(s)"), "{pipeline}");
    assert!(
        components[0]["detail"]
            .as_str()
            .unwrap()
            .contains("2400 rows"),
        "{}",
        components[0]
    );
    let summary = run.summary();
    assert_eq!(summary["passed"], true);
    assert!(summary["total_rto_s"].as_f64().unwrap() > 0.0);
    // Nothing of the drill keeps running: its servers are stopped.
    let left = test_support::process::matching(work.path().to_str().unwrap());
    assert!(left.is_empty(), "drill processes left: {left}");
}

#[test]
fn drill_without_kafka_skips_that_component_with_a_note() {
    let work = test_support::os_user::db_tempdir("validate-drill-");
    let mut cmd = command(&["drill", "--rows", "100"]);
    let metrics = work.path().join("drill.prom");
    cmd.arg("--work-dir")
        .arg(work.path().join("w"))
        .arg("--metrics-file")
        .arg(&metrics)
        .arg("--bin-dir")
        .arg(test_support::tool_bin("wal-archive").parent().unwrap());
    let run = finish(cmd.output().unwrap());
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let kafka = run
        .stdout
        .lines()
        .find(|l| l.starts_with("kafka "))
        .expect("a kafka line");
    assert!(
        kafka.contains("skipped") && kafka.contains("KAFKA_BOOTSTRAP_SERVERS"),
        "{kafka}"
    );
    let pipeline = run
        .stdout
        .lines()
        .find(|l| l.starts_with("pipeline "))
        .expect("a pipeline line");
    assert!(pipeline.contains("skipped"), "{pipeline}");
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("postgres-pitr") && l.contains(" ok ")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .lines()
            .last()
            .unwrap()
            .starts_with("drill passed"),
        "{}",
        run.stdout
    );
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        text.contains("\npipeline_backup_drill_ok{component=\"postgres-pitr\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("pipeline_backup_drill_rto_seconds{component=\"cdc-slots\"} "),
        "{text}"
    );
    assert!(
        !text.contains("component=\"kafka\""),
        "skipped components are absent: {text}"
    );
}

#[test]
fn drill_with_an_unreachable_broker_fails_only_the_kafka_component() {
    let work = test_support::os_user::db_tempdir("validate-drill-");
    let mut cmd = command(&["drill", "--output", "json", "--rows", "100"]);
    cmd.arg("--work-dir").arg(work.path().join("w")).args([
        "-b",
        "127.0.0.1:1",
        "-X",
        "socket.connection.setup.timeout.ms=1000",
    ]);
    let run = finish(cmd.output().unwrap());
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let status = |name: &str| {
        run.json()
            .into_iter()
            .find(|l| l["type"] == "component" && l["component"] == name)
            .unwrap_or_else(|| panic!("no {name} line"))["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(status("kafka"), "failed");
    assert_eq!(status("pipeline"), "skipped");
    assert_eq!(status("postgres-pitr"), "ok");
    let summary = run.summary();
    assert_eq!(summary["passed"], false);
    assert_eq!(summary["failed"][0], "kafka");
}

#[test]
fn sigterm_during_the_restore_stops_every_server_of_the_drill_and_exits_143() {
    let work = test_support::os_user::db_tempdir("validate-drill-");
    let mut cmd = command(&["drill", "--rows", "2000"]);
    cmd.arg("--work-dir")
        .arg(work.path().join("w"))
        .arg("--bin-dir")
        .arg(test_support::tool_bin("wal-archive").parent().unwrap())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    // Wait for the point-in-time restore: pitr-restore running as a child of the drill.
    let restoring = format!("pitr-restore .*{}", work.path().display());
    test_support::process::wait_for("the restore", Duration::from_secs(120), || {
        !test_support::process::matching(&restoring).is_empty()
    });
    test_support::process::signal_and_wait(child, "TERM")
        .assert_interrupted("validate-backups", "TERM");
    // Neither the source server, nor pitr-restore, nor a server it started keeps running.
    let left = test_support::process::matching(work.path().to_str().unwrap());
    assert!(left.is_empty(), "drill processes left: {left}");
}

//! Output formats: plain text without colour when piped, JSON lines, JUnit XML, and the
//! Prometheus metrics file.

use std::os::unix::fs::PermissionsExt;

use common::stream::Compression;
use common::Kind;

use crate::repository::synthetic_set;
use crate::support::{command, empty_repo, finish, good_repo, only_set, validate, Checks};

#[test]
fn text_is_plain_when_piped_and_summarises() {
    let (_h, dir) = empty_repo();
    let mut cmd = command(&[]);
    cmd.arg("--backup-dir").arg(&dir);
    let run = finish(cmd.output().unwrap());
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        !run.stdout.contains('\x1b'),
        "colour on a pipe: {}",
        run.stdout
    );
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("PASS  repo.writable")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("SKIP  base.freshness")),
        "{}",
        run.stdout
    );
    let last = run.stdout.lines().last().unwrap();
    assert!(
        last.starts_with("OK: ") && last.contains("0 failed"),
        "{last}"
    );
}

/// `validate-backups | head -0`: the reader went away, which ends the run normally (as for
/// any Unix filter), with no error line.
#[test]
fn a_closed_stdout_is_a_normal_end() {
    let (_h, dir) = empty_repo();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut cmd = command(&["--output", "json"]);
    cmd.arg("--backup-dir").arg(&dir).stdout(writer);
    let run = finish(cmd.output().unwrap());
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stderr.contains("validate-backups:"), "{}", run.stderr);
}

/// A minimal XML well-formedness check: tags nest and close, attributes are quoted, entities
/// are known. Returns the element names in document order.
fn parse_xml(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    let body = text
        .strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")
        .expect("XML declaration");
    let mut stack: Vec<String> = Vec::new();
    let mut elements = Vec::new();
    let mut rest = body;
    while let Some(start) = rest.find('<') {
        let text_part = &rest[..start];
        check_entities(text_part);
        let end = rest[start..].find('>').expect("unclosed tag") + start;
        let tag = &rest[start + 1..end];
        rest = &rest[end + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop().as_deref(), Some(name), "mismatched close tag");
            continue;
        }
        let self_closing = tag.ends_with('/');
        let tag = tag.trim_end_matches('/');
        let (name, mut attrs_text) = tag.split_once(' ').unwrap_or((tag, ""));
        let mut attrs = Vec::new();
        while let Some(eq) = attrs_text.find("=\"") {
            let key = attrs_text[..eq].trim().to_string();
            let after = &attrs_text[eq + 2..];
            let close = after.find('"').expect("unterminated attribute");
            let value = &after[..close];
            assert!(!value.contains('<'), "raw < in attribute");
            check_entities(value);
            attrs.push((key, value.to_string()));
            attrs_text = &after[close + 1..];
        }
        assert!(attrs_text.trim().is_empty(), "garbage in tag: {tag}");
        elements.push((name.to_string(), attrs));
        if !self_closing {
            stack.push(name.to_string());
        }
    }
    assert!(stack.is_empty(), "unclosed elements {stack:?}");
    elements
}

fn check_entities(text: &str) {
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        let semi = rest[amp..].find(';').expect("bare &") + amp;
        let entity = &rest[amp + 1..semi];
        assert!(
            ["amp", "lt", "gt", "quot", "apos"].contains(&entity),
            "unknown entity {entity}"
        );
        rest = &rest[semi + 1..];
    }
}

#[test]
fn junit_report_parses_and_counts_failures() {
    let (_h, dir) = good_repo();
    let set = only_set(&dir, "slots");
    std::fs::write(set.join("manifest.json"), b"<broken & \"quoted\">").unwrap();
    let mut cmd = command(&["--output", "junit", "--only", "slots"]);
    cmd.arg("--backup-dir").arg(&dir);
    let run = finish(cmd.output().unwrap());
    assert_eq!(run.code, 1, "{}", run.stderr);
    let elements = parse_xml(&run.stdout);
    let suite = elements
        .iter()
        .find(|(n, _)| n == "testsuite")
        .expect("a testsuite");
    let attr = |k: &str| {
        suite
            .1
            .iter()
            .find(|(a, _)| a == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let cases = elements.iter().filter(|(n, _)| n == "testcase").count();
    let failures = elements.iter().filter(|(n, _)| n == "failure").count();
    let skipped = elements.iter().filter(|(n, _)| n == "skipped").count();
    assert_eq!(attr("tests"), cases.to_string());
    assert_eq!(attr("failures"), failures.to_string());
    assert_eq!(attr("skipped"), skipped.to_string());
    assert!(failures >= 1);
    assert!(elements.iter().any(|(n, a)| n == "testcase"
        && a.iter()
            .any(|(k, v)| k == "name" && v.starts_with("slots.manifest"))));
}

#[test]
fn json_lines_carry_every_check_and_a_summary() {
    let (_h, dir) = empty_repo();
    synthetic_set(&dir, Kind::Kafka, 100, Compression::Zstd);
    let run = validate(&dir, &["--only", "kafka"]);
    let summary = run.summary();
    let checks = run.checks();
    assert_eq!(summary["checks"], checks.len());
    assert!(checks
        .iter()
        .all(|c| c["kind"].is_null() || c["kind"] == "kafka"));
    assert!(!checks
        .iter()
        .any(|c| c["check"].as_str().unwrap().starts_with("base.")));
    // The synthetic set has no topic details: the archive check must say so.
    run.assert_fails("kafka.archive", "Kafka details");
    assert_eq!(summary["passed"], false);
    assert_eq!(summary["failed_checks"][0], "kafka.archive");
}

fn metric(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_start) && l[line_start.len()..].starts_with(' '))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
}

#[test]
fn metrics_file_is_written_atomically_with_the_contract_names() {
    let (h, dir) = good_repo();
    let path = h.path().join("validate.prom");
    let run = validate(&dir, &["--metrics-file", path.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    let text = std::fs::read_to_string(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    let leftovers: Vec<_> = std::fs::read_dir(h.path())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".validate-backups-metrics")
        })
        .collect();
    assert!(leftovers.is_empty());
    for kind in ["base", "logical", "kafka", "slots", "wal"] {
        let ts = metric(
            &text,
            &format!("pipeline_backup_last_success_timestamp_seconds{{kind=\"{kind}\"}}"),
        )
        .unwrap_or_else(|| panic!("no timestamp for {kind}:\n{text}"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(ts > now - 3600.0 && ts <= now + 1.0, "{kind} {ts}");
        let age = metric(
            &text,
            &format!("pipeline_backup_age_seconds{{kind=\"{kind}\"}}"),
        )
        .unwrap();
        assert!((0.0..3600.0).contains(&age));
        assert!(
            metric(
                &text,
                &format!("pipeline_backup_size_bytes{{kind=\"{kind}\"}}")
            )
            .unwrap()
                > 0.0
        );
        assert_eq!(
            metric(
                &text,
                &format!("pipeline_backup_verification_ok{{kind=\"{kind}\"}}")
            ),
            Some(1.0),
            "{kind}\n{text}"
        );
        assert!(metric(&text, &format!("pipeline_backup_sets{{kind=\"{kind}\"}}")).unwrap() >= 1.0);
    }
    assert!(metric(&text, "pipeline_backup_duration_seconds{kind=\"base\"}").unwrap() > 0.0);
    assert_eq!(
        metric(&text, "pipeline_backup_check_ok{check=\"base.files\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "pipeline_backup_check_ok{check=\"base.verifybackup\"}"
        ),
        None,
        "skipped checks are absent"
    );
    assert_eq!(metric(&text, "pipeline_backup_wal_archive_ok"), Some(1.0));
    assert!(text.contains("# TYPE pipeline_backup_check_ok gauge"));

    // Damage flips the gauges.
    let set = only_set(&dir, "base");
    std::fs::remove_file(set.join("backup_manifest")).unwrap();
    let run = validate(&dir, &["--metrics-file", path.to_str().unwrap()]);
    assert_eq!(run.code, 1);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        metric(&text, "pipeline_backup_check_ok{check=\"base.files\"}"),
        Some(0.0)
    );
    assert_eq!(
        metric(&text, "pipeline_backup_verification_ok{kind=\"base\"}"),
        Some(0.0)
    );
    assert_eq!(
        metric(&text, "pipeline_backup_verification_ok{kind=\"logical\"}"),
        Some(1.0)
    );
}

/// Runs validate-backups on a pseudo-terminal (util-linux `script`), returning its output.
fn on_terminal(dir: &std::path::Path, no_color: bool) -> Option<String> {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        return None; // no util-linux script on this machine
    }
    let line = format!(
        "{} --backup-dir {} --only wal",
        crate::support::BIN,
        dir.display()
    );
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qec", &line, "/dev/null"])
        .env_remove("NO_COLOR");
    if no_color {
        cmd.env("NO_COLOR", "1");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let (_h, dir) = empty_repo();
    let Some(coloured) = on_terminal(&dir, false) else {
        return;
    };
    assert!(
        coloured.contains("\x1b[32mPASS\x1b[0m  repo.writable"),
        "{coloured:?}"
    );
    let plain = on_terminal(&dir, true).unwrap();
    assert!(!plain.contains('\x1b'), "{plain:?}");
    assert!(plain.contains("PASS  repo.writable"), "{plain:?}");
}

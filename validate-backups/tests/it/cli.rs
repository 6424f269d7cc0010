//! Command-line behaviour: --list, bad input, exit code 2.

use crate::support::{command, empty_repo, finish};

#[test]
fn list_shows_at_least_twenty_named_checks() {
    let run = finish(command(&["--list"]).output().unwrap());
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines.len() >= 20, "{}", run.stdout);
    for name in [
        "repo.permissions",
        "base.files",
        "wal.continuity",
        "kafka.archive",
        "slots.inventory",
        "logical.dump-list",
        "pg.archiver",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(name)),
            "{name} missing in --list"
        );
    }
    let json = finish(command(&["--list", "--output", "json"]).output().unwrap());
    let values: Vec<serde_json::Value> = json
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let checks = values.iter().filter(|v| v["type"] == "check").count();
    assert_eq!(checks, lines.len());
    assert_eq!(values.last().unwrap()["checks"], checks);
}

#[test]
fn missing_backup_dir_exits_2_with_a_hint() {
    let run = finish(
        command(&["--backup-dir", "/nonexistent/validate-backups"])
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.starts_with("validate-backups: "),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("BACKUP_DIR"), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
}

#[test]
fn bad_thresholds_exit_2() {
    let (_holder, dir) = empty_repo();
    for args in [
        ["--max-age", "bogus=1h"],
        ["--max-age", "base=soon"],
        ["--min-free-space", "12 parsecs"],
        ["--only", "tapes"],
    ] {
        let mut cmd = command(&args);
        cmd.arg("--backup-dir").arg(&dir);
        let run = finish(cmd.output().unwrap());
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(run.stdout.is_empty());
    }
}

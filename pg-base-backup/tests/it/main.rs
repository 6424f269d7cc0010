//! pg-base-backup against real PostgreSQL 15 clusters.

mod auth;
mod backup;
mod failures;
mod incremental;
mod s3;

use std::path::Path;
use std::process::{Command, Output};

use test_support::pg::PgCluster;

/// Runs pg-base-backup as the database user against `pg`, into `backup_dir`.
pub fn base_backup(pg: &PgCluster, backup_dir: &Path, extra: &[&str]) -> Output {
    let mut cmd: Command = pg.command(env!("CARGO_BIN_EXE_pg-base-backup"));
    cmd.arg("--backup-dir")
        .arg(backup_dir)
        .args(["--output", "json"])
        .args(extra);
    cmd.output().expect("run pg-base-backup")
}

/// The summary line of a JSON run, asserting success.
pub fn summary(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "pg-base-backup failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().expect("a summary line");
    let value: serde_json::Value = serde_json::from_str(last).expect("JSON summary");
    assert_eq!(value["type"], "summary");
    value
}

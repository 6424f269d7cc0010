//! Checks every scenario shares: `validate-backups` on a repository (every check passes,
//! except those a killed run is allowed to trip), and waiting out a killed run's S3 lock.

use std::time::{Duration, Instant};

use common::repo::Kind;

use crate::context::{Ctx, Repo, S3_LOCK_TTL_S};
use crate::process;

/// Checks that report what a killed run leaves by design (a set without a manifest, a
/// temporary file) and one about the machine (free space), not about a complete set.
const EXPECTED_AFTER_A_KILL: [&str; 3] =
    ["repo.incomplete-sets", "repo.temp-files", "repo.free-space"];

/// Runs `validate-backups --only KIND` on `repo`: every check of the complete sets must pass
/// (or skip); returns how many passed.
pub fn validate(ctx: &Ctx, repo: &Repo, kind: Kind) -> anyhow::Result<usize> {
    let mut cmd = ctx.tool("validate-backups");
    repo.apply(&mut cmd)
        .args(["--backup-dir", &repo.url, "--output", "json", "--only"])
        .arg(kind.name())
        .args(["--max-size-change", "1000", "--min-free-space", "1MiB"])
        .env_remove("PGHOST")
        .env_remove("KAFKA_BOOTSTRAP_SERVERS");
    let ended = process::run(&mut cmd, "validate-backups")?;
    anyhow::ensure!(
        ended.run.code == 0 || ended.run.code == 1,
        "validate-backups exited {}: {}",
        ended.run.code,
        process::last_lines(&ended.run.stderr, 3)
    );
    let mut passed = 0;
    let mut failures = Vec::new();
    for line in ended.run.stdout.lines() {
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| {
            anyhow::anyhow!("validate-backups printed a line that is not JSON ({e}): {line}")
        })?;
        if value["type"] != "check" {
            continue;
        }
        let check = value["check"].as_str().unwrap_or_default();
        match value["status"].as_str().unwrap_or_default() {
            "pass" => passed += 1,
            "fail" if !EXPECTED_AFTER_A_KILL.contains(&check) => failures.push(format!(
                "{check}{}: {}",
                value["subject"]
                    .as_str()
                    .map(|s| format!(" [{s}]"))
                    .unwrap_or_default(),
                value["message"].as_str().unwrap_or_default()
            )),
            _ => {}
        }
    }
    anyhow::ensure!(
        failures.is_empty(),
        "validate-backups failed on the repository: {}",
        failures.join("; ")
    );
    Ok(passed)
}

/// On S3, waits until the lock of `kind` that a killed run held has expired, so that the next
/// run may take it (as the next scheduled run would find it).
pub fn wait_for_s3_lock(repo: &Repo, kind: Kind) -> anyhow::Result<()> {
    if !repo.is_s3() {
        return Ok(());
    }
    let repository = common::repo::Repository::with_store(repo.store()?);
    let deadline = Instant::now() + Duration::from_secs(S3_LOCK_TTL_S + 5);
    while repository.is_locked(kind) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the {kind} lock is still held {}s after the kill (its lifetime is {S3_LOCK_TTL_S}s)",
            S3_LOCK_TTL_S + 5
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// Uniform in `[0, length)`: where a kill lands.
pub fn kill_moment(rng: &mut fastrand::Rng, length: Duration) -> Duration {
    let micros = length.as_micros().max(1) as u64;
    Duration::from_micros(rng.u64(0..micros))
}

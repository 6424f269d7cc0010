//! Logical sets: every dump is readable by `pg_restore --list`; `--deep` runs
//! `pg-logical-backup verify --level standard` (a test restore compared with the manifest).

use std::path::Path;
use std::process::Command;

use common::repo::SetInfo;
use common::{Kind, Manifest};

use crate::check::{CheckResult, Run, Settings};
use crate::tools;

pub fn run(run: &mut Run, settings: &Settings, sets: &[SetInfo]) {
    const NAME: &str = "logical.dump-list";
    run.check(settings, NAME, || {
        super::per_set(NAME, Kind::Logical, sets, |set, manifest| match list_dumps(
            &set.dir, manifest,
        ) {
            Ok(n) => CheckResult::pass(NAME, format!("pg_restore lists all {n} dumps")),
            Err(p) => CheckResult::fail(NAME, p),
        })
    });
    run.check(settings, "logical.test-restore", || {
        vec![test_restore(settings, sets)]
    });
}

/// The dumps of a set from its details: per database the whole-database dump (a file or a
/// directory), the schema dump and every table dump.
pub fn dumps(manifest: &Manifest) -> Result<Vec<String>, String> {
    let databases = manifest.details["databases"]
        .as_array()
        .ok_or("the manifest's details list no databases")?;
    let mut dumps = Vec::new();
    for db in databases {
        for key in ["full_dump", "schema_dump"] {
            match db[key].as_str() {
                Some(path) => dumps.push(path.to_string()),
                None => return Err(format!("a database entry has no {key}")),
            }
        }
        for table in db["tables"].as_array().into_iter().flatten() {
            if let Some(file) = table["file"].as_str() {
                dumps.push(file.to_string());
            }
        }
    }
    if dumps.is_empty() {
        return Err("the set holds no dumps".to_string());
    }
    Ok(dumps)
}

fn list_dumps(dir: &Path, manifest: &Manifest) -> Result<usize, String> {
    let dumps = dumps(manifest)?;
    let program = common::pgbin::program("pg_restore");
    let mut problems = Vec::new();
    for dump in &dumps {
        let mut cmd = Command::new(&program);
        cmd.arg("--list").arg(dir.join(dump));
        match tools::capture(&mut cmd, "pg_restore --list") {
            Err(_) => return Err(common::pgbin::missing_hint("pg_restore")),
            Ok(run) if run.code != Some(0) => {
                problems.push(format!("{dump}: {}", run.last_error()))
            }
            Ok(run)
                if !run
                    .stdout
                    .lines()
                    .any(|l| !l.starts_with(';') && !l.trim().is_empty()) =>
            {
                problems.push(format!("{dump}: pg_restore lists no entries"))
            }
            Ok(_) => {}
        }
    }
    if problems.is_empty() {
        Ok(dumps.len())
    } else {
        Err(problems.join("; "))
    }
}

/// `pg-logical-backup verify --level standard` of the newest set against the configured
/// server (it restores into a temporary database and drops it).
fn test_restore(settings: &Settings, sets: &[SetInfo]) -> CheckResult {
    const NAME: &str = "logical.test-restore";
    let Some((set, _)) = super::complete(sets).pop() else {
        return CheckResult::skip(NAME, "no complete logical sets").on("logical");
    };
    let Some(pg) = &settings.pg else {
        return CheckResult::skip(
            NAME,
            "needs a PostgreSQL server to restore into (--host/PGHOST)",
        )
        .on(&set.id);
    };
    let program = tools::program("pg-logical-backup", settings.bin_dir.as_deref());
    let mut cmd = Command::new(program);
    cmd.arg("verify")
        .arg("--backup-dir")
        .arg(&settings.backup_dir)
        .args([
            "--backup-id",
            &set.id,
            "--level",
            "standard",
            "--output",
            "json",
            "-q",
        ])
        .envs(pg.libpq_env());
    let run = match tools::capture(&mut cmd, "pg-logical-backup verify") {
        Ok(run) => run,
        Err(e) => return CheckResult::fail(NAME, format!("{e:#}")).on(&set.id),
    };
    let failed: Vec<String> =
        run.failed_items("check", |l| l["type"] == "check" && l["passed"] == false);
    match run.code {
        Some(0) => CheckResult::pass(
            NAME,
            format!(
                "test restore matches the manifest ({} checks)",
                run.summary()
                    .map_or(0, |s| s["checks"].as_u64().unwrap_or(0))
            ),
        ),
        Some(1) => CheckResult::fail(NAME, failed.join("; ")),
        _ => CheckResult::fail(
            NAME,
            format!(
                "pg-logical-backup verify could not run: {}",
                run.last_error()
            ),
        ),
    }
    .on(&set.id)
}

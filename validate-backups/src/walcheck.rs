//! WAL archive checks: continuity and integrity through `wal-archive verify`, and freshness
//! of the newest archived file.

use std::collections::HashMap;
use std::process::Command;

use common::wal::{ArchivedFile, WalArchive};
use common::{Kind, Repository};
use time::OffsetDateTime;

use crate::check::{CheckResult, Run, Settings};
use crate::thresholds::human;
use crate::tools;

pub fn run(run: &mut Run, settings: &Settings, repo: &Repository) {
    let archive = WalArchive::new(repo);
    let files = archive.list().unwrap_or_default();
    let required = settings.requires(Kind::Wal);
    // Base sets that rely on the archive make it required too.
    let needed_by_base = repo
        .complete_sets(Kind::Base)
        .unwrap_or_default()
        .iter()
        .filter_map(|s| s.manifest())
        .filter_map(|m| common::physical::PhysicalDetails::from_manifest(m).ok())
        .any(|d| d.wal_method == common::physical::WalMethod::Archive);
    let empty = |name: &'static str| {
        if required || needed_by_base {
            CheckResult::fail(
                name,
                "the WAL archive is empty, but base backups need it (check archive_command)",
            )
        } else {
            CheckResult::skip(name, "no archived WAL (use --require wal to fail)")
        }
    };

    run.check(settings, "wal.continuity", || {
        if files.is_empty() {
            return vec![empty("wal.continuity")];
        }
        vec![continuity(settings)]
    });

    run.check(settings, "wal.freshness", || {
        let Some((modified, name)) = newest(repo, &files) else {
            return vec![empty("wal.freshness")];
        };
        let age = crate::health::age(modified);
        let max = settings.max_age[Kind::Wal.name()];
        let text = format!(
            "newest archived file {name} written {} ago (maximum {})",
            human(age),
            human(max)
        );
        vec![if age > max {
            CheckResult::fail(
                "wal.freshness",
                format!("{text}: is archiving stuck? (see pg_stat_archiver; archive_timeout forces switches on quiet servers)"),
            )
        } else {
            CheckResult::pass("wal.freshness", text)
        }]
    });
}

/// The newest of the archived `files` by the time it was stored (a file's modification time,
/// an object's last-modified), with its name.
pub fn newest(repo: &Repository, files: &[ArchivedFile]) -> Option<(OffsetDateTime, String)> {
    let (objects, _) = repo.store().list_dir(Kind::Wal.name()).ok()?;
    let stored: HashMap<String, OffsetDateTime> = objects
        .into_iter()
        .filter_map(|o| Some((o.key, o.modified?)))
        .collect();
    files
        .iter()
        .filter_map(|f| Some((*stored.get(&f.key)?, f.name.clone())))
        .max()
}

/// `wal-archive verify --output json`: exit 0 continuous, 1 gap or damage, 2 error.
fn continuity(settings: &Settings) -> CheckResult {
    const NAME: &str = "wal.continuity";
    let program = tools::program("wal-archive", settings.bin_dir.as_deref());
    let mut cmd = Command::new(&program);
    let backup_dir = match tools::backup_dir_arg(&settings.backup_dir) {
        Ok(dir) => dir,
        Err(e) => return CheckResult::fail(NAME, format!("{e:#}")),
    };
    cmd.arg("verify")
        .arg("--backup-dir")
        .arg(backup_dir)
        .args(["--output", "json", "-q"]);
    let run = match tools::capture(&mut cmd, "wal-archive verify") {
        Ok(run) => run,
        Err(e) => return CheckResult::fail(NAME, format!("{e:#}")),
    };
    let summary = run.summary();
    match (run.code, summary) {
        (Some(0), Some(s)) => CheckResult::pass(
            NAME,
            format!(
                "{} files, continuous from {} to {}",
                s["files"],
                s["required_from"].as_str().unwrap_or("the first file"),
                s["newest"].as_str().unwrap_or("?")
            ),
        ),
        (Some(1), Some(s)) => {
            let mut problems = Vec::new();
            for gap in s["gaps"].as_array().into_iter().flatten() {
                problems.push(format!(
                    "gap on timeline {}: {} .. {} missing",
                    gap["timeline"],
                    gap["from"].as_str().unwrap_or("?"),
                    gap["to"].as_str().unwrap_or("?")
                ));
            }
            for d in s["damaged"].as_array().into_iter().flatten() {
                problems.push(format!(
                    "{}: {}",
                    d["file"].as_str().unwrap_or("?"),
                    d["problem"].as_str().unwrap_or("damaged")
                ));
            }
            if problems.is_empty() {
                problems.push("wal-archive verify reported a problem".into());
            }
            CheckResult::fail(
                NAME,
                format!(
                    "{} (point-in-time recovery cannot cross it)",
                    problems.join("; ")
                ),
            )
        }
        (code, _) => CheckResult::fail(
            NAME,
            format!(
                "wal-archive verify could not run (exit {}): {}",
                code.map_or("signal".into(), |c| c.to_string()),
                run.last_error()
            ),
        ),
    }
}

//! Logical sets: every dump is readable by `pg_restore --list`; `--deep` runs
//! `pg-logical-backup verify --level standard` (a test restore compared with the manifest).

use std::process::Command;

use common::repo::SetInfo;
use common::stream::Compression;
use common::{Kind, Manifest, Repository};

use super::Problem;
use crate::check::{CheckResult, Run, Settings};
use crate::tools::{self, ToolRun};

pub fn run(run: &mut Run, settings: &Settings, repo: &Repository, sets: &[SetInfo]) {
    const NAME: &str = "logical.dump-list";
    run.check(settings, NAME, || {
        super::per_set_content(
            NAME,
            Kind::Logical,
            sets,
            settings,
            repo,
            |set, manifest| match list_dumps(settings, repo, set, manifest) {
                Ok(n) => CheckResult::pass(NAME, format!("pg_restore lists all {n} dumps")),
                Err(p) => CheckResult::fail(NAME, p),
            },
        )
    });
    run.check(settings, "logical.test-restore", || {
        vec![test_restore(settings, sets)]
    });
}

/// The dumps of a set from its details: per database the whole-database dump (a file or a
/// directory) and, in sets that have them, the schema dump and every table dump.
pub fn dumps(manifest: &Manifest) -> Result<Vec<String>, Problem> {
    let databases = manifest.details["databases"]
        .as_array()
        .ok_or("the manifest's details list no databases")?;
    let mut dumps = Vec::new();
    for db in databases {
        match db["full_dump"].as_str() {
            Some(path) => dumps.push(path.to_string()),
            None => return Err("a database entry has no full_dump".into()),
        }
        // Only sets with per-table dumps have a schema dump (all of details version 1);
        // newer sets keep the schema in the whole-database dump.
        match &db["schema_dump"] {
            serde_json::Value::Null => {}
            value => match value.as_str() {
                Some(path) => dumps.push(path.to_string()),
                None => return Err("a database entry has a malformed schema_dump".into()),
            },
        }
        for table in db["tables"].as_array().into_iter().flatten() {
            if let Some(file) = table["file"].as_str() {
                dumps.push(file.to_string());
            }
        }
    }
    if dumps.is_empty() {
        return Err("the set holds no dumps".into());
    }
    Ok(dumps)
}

fn list_dumps(
    settings: &Settings,
    repo: &Repository,
    set: &SetInfo,
    manifest: &Manifest,
) -> Result<usize, Problem> {
    let dumps = dumps(manifest)?;
    let mut problems = Vec::new();
    for dump in &dumps {
        match list_dump(settings, repo, set, manifest, dump) {
            Err(DumpListError::NoPgRestore) => {
                return Err(common::pgbin::missing_hint("pg_restore").into())
            }
            Err(DumpListError::Unreadable(e)) => problems.push(format!("{dump}: {e:#}")),
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
        Err(Problem::joined(&problems, "; "))
    }
}

/// Why a dump could not be listed.
enum DumpListError {
    /// pg_restore is not installed.
    NoPgRestore,
    /// The dump could not be read from the repository.
    Unreadable(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for DumpListError {
    fn from(e: E) -> DumpListError {
        DumpListError::Unreadable(e.into())
    }
}

/// `pg_restore --list` of one dump. A local repository's dump is read in place; from object
/// storage a dump file streams to pg_restore's stdin, and of a directory-format dump only its
/// table of contents (`toc.dat`, all that listing reads) is fetched into a scratch directory.
fn list_dump(
    settings: &Settings,
    repo: &Repository,
    set: &SetInfo,
    manifest: &Manifest,
    dump: &str,
) -> Result<ToolRun, DumpListError> {
    const WHAT: &str = "pg_restore --list";
    let mut cmd = Command::new(common::pgbin::program("pg_restore"));
    cmd.arg("--list");
    if let Some(entry) = manifest.stored(dump) {
        // A plain local dump is read in place; else it streams, decrypted and decompressed.
        if let Some(path) = repo.store().local_path(&set.key(dump)) {
            if !entry.is_encrypted() && entry.compression == Compression::None {
                cmd.arg(path);
                return tools::capture(&mut cmd, WHAT).map_err(|_| DumpListError::NoPgRestore);
            }
        }
        let stored = repo
            .open_entry(set, entry, settings.identities.as_deref())
            .map_err(|e| DumpListError::Unreadable(anyhow::anyhow!("cannot read {dump}: {e}")))?;
        let compression = entry.compression;
        let feed = move |stdin: &mut dyn std::io::Write| {
            std::io::copy(&mut compression.decoder(stored)?, stdin).map(drop)
        };
        return tools::capture_with_input(&mut cmd, WHAT, feed)
            .map_err(|_| DumpListError::NoPgRestore);
    }
    let toc = format!("{dump}/toc.dat");
    if manifest.stored(&toc).is_none() {
        return Err(anyhow::anyhow!("the set holds neither this file nor {toc}").into());
    }
    let scratch = super::scratch(settings, "validate-dump-list-")?;
    let dir = scratch.path().join("dump");
    std::fs::create_dir(&dir)?;
    let mut plain = super::open_plain(repo, settings, set, manifest, &toc)
        .map_err(|e| DumpListError::Unreadable(anyhow::anyhow!(e)))?;
    std::io::copy(&mut plain, &mut std::fs::File::create(dir.join("toc.dat"))?)?;
    cmd.arg("--format=directory").arg(&dir);
    tools::capture(&mut cmd, WHAT).map_err(|_| DumpListError::NoPgRestore)
}

/// `pg-logical-backup verify --level standard` of the newest set against the configured
/// server (it restores into a temporary database and drops it).
fn test_restore(settings: &Settings, sets: &[SetInfo]) -> CheckResult {
    const NAME: &str = "logical.test-restore";
    let Some((set, manifest)) = super::complete(sets).pop() else {
        return CheckResult::skip(NAME, "no complete logical sets").on("logical");
    };
    if let Some(skip) = super::sealed_skip(NAME, settings, manifest) {
        return skip.on(&set.id);
    }
    let Some(pg) = &settings.pg else {
        return CheckResult::skip(
            NAME,
            "needs a PostgreSQL server to restore into (--host/PGHOST)",
        )
        .on(&set.id);
    };
    let program = tools::program("pg-logical-backup", settings.bin_dir.as_deref());
    let mut cmd = Command::new(program);
    let backup_dir = match tools::backup_dir_arg(&settings.backup_dir) {
        Ok(dir) => dir,
        Err(e) => return CheckResult::fail(NAME, format!("{e:#}")).on(&set.id),
    };
    cmd.arg("verify")
        .arg("--backup-dir")
        .arg(backup_dir)
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

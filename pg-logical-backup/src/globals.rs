//! `restore-globals`: replays a set's `globals.sql` (roles, role settings, tablespaces from
//! `pg_dumpall --globals-only`) into the server, so a restore onto a new cluster finds the
//! owners and grantees its dumps name.
//!
//! The script runs through psql without stopping at errors, as pg_dumpall output is meant to:
//! a role that already exists fails its CREATE and is then brought to the saved attributes by
//! the ALTER that follows. Such "already exists" errors are counted, not failures; any other
//! error makes the run exit 1 and is listed.

use common::cli::{GlobalArgs, PgArgs, RepoArgs};
use common::Status;
use serde::Serialize;

use crate::details::ChosenSet;
use crate::pgbin::{self, PgBin, PgBinArgs};

/// Settings of `restore-globals`.
#[derive(Debug, Clone, clap::Args)]
pub struct RestoreGlobalsArgs {
    #[command(flatten)]
    pub pg: PgArgs,
    #[command(flatten)]
    pub repo: RepoArgs,
    #[command(flatten)]
    pub bin: PgBinArgs,
    /// Set to restore from [default: the newest complete set].
    #[arg(long, value_name = "ID")]
    pub backup_id: Option<String>,
    /// Do not ask for confirmation (needed when not on a terminal: existing roles are altered
    /// to the saved attributes, passwords included).
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, Serialize)]
struct Summary {
    id: String,
    /// The script: a path, or an s3:// URL.
    file: String,
    /// Statements that failed because the object already existed.
    already_existing: usize,
    /// Other errors, as psql reported them.
    errors: Vec<String>,
    without_passwords: bool,
}

/// Restores the globals.
pub fn run(args: RestoreGlobalsArgs, global: &GlobalArgs) -> anyhow::Result<Status> {
    let runtime = common::postgres::runtime()?;
    runtime.block_on(common::interrupt::or_interrupted(
        restore_globals(args, global),
        "psql was stopped; running restore-globals again completes it",
    ))
}

async fn restore_globals(args: RestoreGlobalsArgs, global: &GlobalArgs) -> anyhow::Result<Status> {
    let bin = PgBin::resolve(&args.bin, &args.pg)?;
    let chosen = ChosenSet::find(&args.repo.backup_dir, args.backup_id.as_deref())?;
    let (manifest, details) = (&chosen.manifest, &chosen.details);
    let Some(file) = details.globals.clone() else {
        anyhow::bail!(
            "set {} holds no globals (it was taken with --no-globals); pick another with --backup-id",
            manifest.id
        );
    };
    chosen.check(std::slice::from_ref(&file)).await?;
    let script = chosen.source(&file);
    // Reachable before anything is asked or run.
    drop(common::postgres::connect(&args.pg, crate::TOOL).await?);

    let question = format!(
        "restore the roles and tablespaces of set {} into the server (existing roles get the saved attributes{})",
        manifest.id,
        if details.globals_without_passwords {
            ""
        } else {
            " and passwords"
        }
    );
    common::prompt::confirm(&question, args.yes, common::prompt::Unattended::Refuse)?;
    tracing::info!("{question}");

    let mut cmd = bin.command("psql", "postgres");
    cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=0"]);
    script.psql_input(&mut cmd);
    let output = script.output(&mut cmd).await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        anyhow::bail!(
            "psql could not run {} ({}): {}",
            script.shown(),
            output.status,
            pgbin::last_lines(&stderr, 3)
        );
    }
    let (already_existing, errors) = classify(&stderr);
    let summary = Summary {
        id: manifest.id.clone(),
        file: script.shown(),
        already_existing,
        errors,
        without_passwords: details.globals_without_passwords,
    };
    for error in &summary.errors {
        tracing::error!("{error}");
    }
    common::output::summary(global.output, &summary, || {
        format!(
            "globals of set {} restored: {} already existed, {} error(s){}",
            summary.id,
            summary.already_existing,
            summary.errors.len(),
            if summary.without_passwords {
                " (the set holds no role passwords: set them again)"
            } else {
                ""
            }
        )
    })?;
    Ok(Status::from_passed(summary.errors.is_empty()))
}

/// Splits psql's error lines into "already exists" (expected for roles present on the
/// server) and the rest.
fn classify(stderr: &str) -> (usize, Vec<String>) {
    let mut existing = 0;
    let mut errors = Vec::new();
    for line in stderr.lines().filter(|l| l.contains("ERROR:")) {
        if line.contains("already exists") {
            existing += 1;
        } else {
            errors.push(line.trim().to_string());
        }
    }
    (existing, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn already_existing_objects_are_not_errors() {
        let stderr = "psql:/b/globals.sql:14: ERROR:  role \"postgres\" already exists\n\
                      psql:/b/globals.sql:20: ERROR:  directory \"/x\" does not exist\n\
                      psql:/b/globals.sql:21: NOTICE:  something\n";
        let (existing, errors) = classify(stderr);
        assert_eq!(existing, 1);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("does not exist"));
    }
}

//! A wiped repository, or a volume that failed to mount: the validation CronJobs' exact
//! command lines (read from `scripts/deploy/backup-cronjobs.yaml`) run against an empty and a
//! missing backup directory must fail, not skip every kind and exit 0.

use std::path::Path;

use anyhow::Context as _;
use test_support::os_user::db_tempdir;

use super::{entry, Entry, Scenario};
use crate::context::{Ctx, Tier};
use crate::process;

const CRONJOBS: &str = "scripts/deploy/backup-cronjobs.yaml";

pub fn entries() -> Vec<Entry> {
    vec![entry(
        "wiped:validate-backups".into(),
        "the validation CronJobs' command lines on an empty and a missing repository: they fail",
        |_: Tier| 4,
        Box::new(|_ctx| Ok(Box::new(Wiped::new()?) as Box<dyn Scenario>)),
    )]
}

struct Wiped {
    /// The `args` of each validate-backups container in the CronJobs.
    jobs: Vec<Vec<String>>,
    case: usize,
}

impl Wiped {
    fn new() -> anyhow::Result<Wiped> {
        let path = test_support::workspace_root().join(CRONJOBS);
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        let jobs = validate_args(&text);
        anyhow::ensure!(
            !jobs.is_empty(),
            "no validate-backups container in {CRONJOBS}"
        );
        Ok(Wiped { jobs, case: 0 })
    }
}

/// The `args:` list following each `command: ["validate-backups"]` (no subcommand).
fn validate_args(yaml: &str) -> Vec<Vec<String>> {
    let mut jobs = Vec::new();
    let mut lines = yaml.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() != r#"command: ["validate-backups"]"# {
            continue;
        }
        let mut args = Vec::new();
        while let Some(next) = lines.peek() {
            let t = next.trim();
            if t.starts_with('#') || t == "args:" {
                lines.next();
            } else if let Some(arg) = t.strip_prefix("- ") {
                args.push(arg.trim_matches('"').to_string());
                lines.next();
            } else {
                break;
            }
        }
        if args.first().is_none_or(|a| a.starts_with('-')) {
            jobs.push(args);
        }
    }
    jobs
}

impl Scenario for Wiped {
    fn trial(&mut self, ctx: &Ctx, _rng: &mut fastrand::Rng) -> anyhow::Result<String> {
        let job = &self.jobs[(self.case / 2) % self.jobs.len()];
        let missing = self.case % 2 == 1;
        self.case += 1;
        let root = db_tempdir("fc-wiped-");
        let backups = root.path().join("backups");
        for dir in ["metrics", "scratch"] {
            std::fs::create_dir_all(root.path().join(dir))?;
        }
        if !missing {
            use std::os::unix::fs::PermissionsExt;
            std::fs::create_dir_all(&backups)?;
            std::fs::set_permissions(&backups, std::fs::Permissions::from_mode(0o700))?;
        }
        test_support::os_user::give_to_db_user(root.path());
        let args: Vec<String> = job.iter().map(|a| relocate(a, root.path())).collect();
        let mut cmd = ctx.tool("validate-backups");
        cmd.env("BACKUP_DIR", &backups)
            .env_remove("PGHOST")
            .env_remove("KAFKA_BOOTSTRAP_SERVERS")
            .args(&args)
            .args(["--output", "json"]);
        let ended = process::run(&mut cmd, "validate-backups")?;
        let state = if missing { "a missing" } else { "an empty" };
        anyhow::ensure!(
            if missing { ended.run.code != 0 } else { ended.run.code == 1 },
            "`validate-backups {}` on {state} repository exited {} (wanted {}): a wiped repository must fail validation",
            job.join(" "),
            ended.run.code,
            if missing { "non-zero" } else { "1" }
        );
        if !missing {
            let failed: Vec<String> = ended
                .run
                .records("check")
                .iter()
                .filter(|c| c["status"] == "fail")
                .filter_map(|c| c["kind"].as_str().map(str::to_string))
                .collect();
            let unguarded: Vec<&str> = SCHEDULED_KINDS
                .into_iter()
                .filter(|k| !failed.iter().any(|f| f == k))
                .collect();
            anyhow::ensure!(
                unguarded.is_empty(),
                "`validate-backups {}` on an empty repository fails no check of {unguarded:?}: those kinds may vanish unnoticed",
                job.join(" ")
            );
        }
        Ok(format!(
            "`validate-backups {}` on {state} repository: exit {}",
            job.join(" "),
            ended.run.code
        ))
    }
}

/// The kinds the CronJobs (and PostgreSQL's archive_command) write.
const SCHEDULED_KINDS: [&str; 5] = ["base", "wal", "logical", "kafka", "slots"];

/// The CronJob's paths moved under `root`: the metrics directory and the scratch directory
/// exist whatever happened to the backup volume.
fn relocate(arg: &str, root: &Path) -> String {
    for (prefix, to) in [
        ("/backups/metrics", "metrics"),
        ("/scratch", "scratch"),
        ("/backups", "backups"),
    ] {
        if let Some(rest) = arg.strip_prefix(prefix) {
            return format!("{}/{to}{rest}", root.display());
        }
    }
    arg.to_string()
}

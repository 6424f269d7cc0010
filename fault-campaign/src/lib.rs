//! The fault campaign: kills every tool with SIGKILL at seeded random moments,
//! fills the disk under it, fails the services under it (PostgreSQL restarted, a private
//! broker and S3 server killed, S3 stalling) and feeds it hostile input, then checks that
//! nothing that looks complete is damaged, that the next run works and that a restore gives
//! exactly the source's data. Each trial has its own seed; a failure names it, and `--scenario NAME --seed SEED
//! --trials 1` runs that trial again.
//!
//! Run it through `scripts/fault-campaign.sh`, which builds the tools beside this binary and
//! starts the test services (PostgreSQL clusters are created here, as the `postgres` user).

mod checks;
mod context;
mod process;
mod report;
mod s3_server;
mod scenarios;
mod sql;
mod topic;
mod trial;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

pub use context::Tier;

/// Kill -9 at random moments, full disks and hostile input against every backup and restore
/// tool, with a report of trials per scenario and the seed of every failure.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Exit codes:\n  0    every trial ended as it should\n  1    at least one trial did not (see the table and the report)\n  2    the campaign itself could not run (tools not built, services not running)\n\nThe tools are taken from the directory of this binary (cargo build --workspace --all-features --bins).\nServices: PIPELINE_BACKUP_TEST_KAFKA and PIPELINE_BACKUP_TEST_S3_* as scripts/services.sh env prints them.\nRuns as root (PostgreSQL runs as the postgres user; disk-full mounts tmpfs)."
)]
pub struct Args {
    /// The short tier for CI: 5 trials per kill scenario instead of 50 (1 or 2 for the
    /// `--pgdata` base backups), one per disk-full case, one per failing-service case
    /// instead of 10
    #[arg(long)]
    pub quick: bool,

    /// Seed of the first trial; trial N of a scenario uses SEED + N [default: from the clock]
    #[arg(long)]
    pub seed: Option<u64>,

    /// Run only this scenario, or every scenario whose name starts with NAME followed by
    /// ':' (e.g. `kill`, `kill:pg-base-backup`); repeatable [default: all]
    #[arg(long, value_name = "NAME")]
    pub scenario: Vec<String>,

    /// Trials per scenario, overriding the tier's count (with --seed, `--trials 1` repeats one
    /// failed trial)
    #[arg(long, value_name = "N")]
    pub trials: Option<usize>,

    /// Minutes of pgbench in the load scenario [default: 2 with --quick, else 30]
    #[arg(long, value_name = "MINUTES")]
    pub load_minutes: Option<f64>,

    /// Where the JSON report goes
    #[arg(long, default_value = "fault-report.json")]
    pub report: PathBuf,

    /// List the scenarios and exit
    #[arg(long)]
    pub list: bool,
}

/// Parses the arguments, runs, and maps the outcome to the exit code.
pub fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("fault-campaign: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// The campaign: pick the scenarios, check the tools and services, run every trial, print the
/// table and write the report. True when every trial ended as it should.
pub fn run(args: Args) -> anyhow::Result<bool> {
    let tier = if args.quick { Tier::Quick } else { Tier::Full };
    let selected = scenarios::select(&args.scenario)?;
    if args.list {
        for entry in &selected {
            println!("{:<40} {}", entry.name, entry.about);
        }
        return Ok(true);
    }
    let minutes = args.load_minutes.unwrap_or(match tier {
        Tier::Quick => 2.0,
        Tier::Full => 30.0,
    });
    let ctx = context::Ctx::new(tier, std::time::Duration::from_secs_f64(minutes * 60.0))?;
    let seed = args.seed.unwrap_or_else(trial::seed_from_clock);
    eprintln!(
        "fault-campaign: {} tier, {} scenarios, seed {seed}",
        tier.name(),
        selected.len()
    );
    let started = std::time::Instant::now();
    let mut results = Vec::new();
    for entry in selected {
        let trials = args.trials.unwrap_or_else(|| (entry.trials)(tier));
        results.push(trial::run_scenario(&ctx, &entry, seed, trials));
    }
    let report = report::Report::new(tier, seed, results, started.elapsed());
    print!("{}", report.table());
    report.write(&args.report)?;
    eprintln!(
        "fault-campaign: report written to {}",
        args.report.display()
    );
    Ok(report.all_ok())
}

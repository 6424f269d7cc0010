//! `validate-backups`: named checks of the backup repository (integrity, freshness, WAL
//! continuity, connectivity), Prometheus textfile metrics, and `drill`, an end-to-end
//! recovery drill that measures RTO and RPO.
//!
//! Replaces the `validate-backups.sh` shell script and the health and verification scripts
//! that ran beside it.
#![forbid(unsafe_code)]

pub mod broker;
pub mod check;
pub mod connectivity;
pub mod cut;
pub mod drill;
pub mod health;
pub mod kinds;
pub mod metrics;
pub mod notify_test;
pub mod report;
pub mod repository;
pub mod scratch;
pub mod sets;
pub mod thresholds;
pub mod tools;
pub mod walcheck;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use clap::{Parser, Subcommand};
use common::cli::{GlobalArgs, PgArgs, RepoArgs};
use common::output::OutputFormat;
use common::{Kind, Status};

use crate::check::{Run, Settings};
use crate::thresholds::{KindMap, Size};

/// Exit codes of validate-backups.
pub const EXIT_CODES_HELP: &str = "Exit codes:\n  0    every check passed or was skipped (drill: restored and verified)\n  1    a check failed (drill: a component was not restored or verified)\n  2    could not run (bad input, missing backup directory, unusable service)\n  130  interrupted";

/// How results are printed on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Colour-coded lines (plain when stdout is not a terminal or NO_COLOR is set).
    #[default]
    Text,
    /// One JSON object per check, then a summary line.
    Json,
    /// A JUnit XML report (one testcase per check result) for CI systems.
    Junit,
}

/// Validate the backup repository: named checks with a pass/fail/skip summary, Prometheus
/// metrics, and `drill`, an end-to-end recovery drill.
///
/// Kinds without any set are skipped unless --require names them; checks that need a server
/// run only when one is configured (PGHOST/--host, KAFKA_BOOTSTRAP_SERVERS).
#[derive(Debug, Parser)]
#[command(
    name = "validate-backups",
    version,
    after_help = EXIT_CODES_HELP,
    args_conflicts_with_subcommands = true
)]
pub struct Args {
    /// More log detail on stderr (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Format of the results on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text, global = true)]
    pub output: Format,
    /// File of KEY=VALUE lines with the environment variables' names, read first; variables
    /// already set win [default: /etc/pipeline-backup/env when it exists].
    #[arg(long, global = true, env = common::env::PIPELINE_BACKUP_CONFIG, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub checks: CheckArgs,
    /// The logging settings in the shared form, derived from the flags above.
    #[arg(skip)]
    global: OnceLock<GlobalArgs>,
}

impl Args {
    fn output_format(&self) -> OutputFormat {
        match self.output {
            Format::Json => OutputFormat::Json,
            _ => OutputFormat::Text,
        }
    }
}

impl common::entry::ToolArgs for Args {
    fn global(&self) -> &GlobalArgs {
        self.global.get_or_init(|| GlobalArgs {
            verbose: self.verbose,
            quiet: self.quiet,
            output: self.output_format(),
            config: self.config.clone(),
        })
    }

    /// Failed checks and drills are reported; the tools they run on throwaway data (and the
    /// scratch servers' archive_command) stay quiet. `--list` and `--notify-test` send
    /// nothing of their own.
    fn notify_policy(&self) -> common::notify::Policy {
        use common::notify::Policy;
        if self.command.is_none() && (self.checks.list || self.checks.notify_test) {
            return Policy::NEVER;
        }
        Policy::CONFIGURED.with_quiet_children()
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// End-to-end recovery drill on throwaway services: back up everything, simulate a
    /// disaster, restore, verify, and report the measured RTO and RPO per component.
    #[command(after_help = EXIT_CODES_HELP)]
    Drill(drill::DrillArgs),
    /// Restore the whole pipeline to one consistent point: PostgreSQL to the target, its CDC
    /// slots, the CDC topics up to the LSN recovery reached (no phantom events), the
    /// connector's offset to it; then prove the cut. Exit 1, saying what is missing, when the
    /// backups cannot give one.
    #[command(after_help = EXIT_CODES_HELP)]
    Restore(Box<cut::CutArgs>),
}

/// Options of the checks (the default command).
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// List every check with its stable name and what it checks, then exit.
    #[arg(long)]
    pub list: bool,
    /// Send one test message to every configured notification channel, then exit: 0 when
    /// every channel accepted it, 2 otherwise (naming the channel) or when none is
    /// configured. Channels: BACKUP_NOTIFICATION_WEBHOOK (JSON POST), SLACK_WEBHOOK_URL,
    /// BACKUP_EMAIL_RECIPIENT with SMTP_HOST, SMTP_PORT, SMTP_USERNAME, SMTP_PASSWORD,
    /// SMTP_FROM, SMTP_TLS=opportunistic|required|wrapper|off. Every tool reports failures
    /// there (BACKUP_NOTIFY_ON=always: successes too; a check that fails counts as a failure).
    #[arg(long, conflicts_with = "list")]
    pub notify_test: bool,
    /// Check only these kinds (repeatable or comma-separated); repository checks always run.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "KIND")]
    pub only: Vec<Kind>,
    /// Fail (instead of skip) when these kinds have no complete set (repeatable or
    /// comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "KIND")]
    pub require: Vec<Kind>,
    /// Maximum age of the newest set per kind, e.g. base=26h,logical=26h,kafka=8d,slots=26h,wal=26h
    /// (given kinds replace the defaults shown).
    #[arg(long, value_name = "KIND=DURATION,...", value_parser = thresholds::parse_durations)]
    pub max_age: Option<KindMap<Duration>>,
    /// Minimum number of complete sets per kind, e.g. base=7 or all=2 [default: 1 each].
    #[arg(long, value_name = "KIND=N,...", value_parser = thresholds::parse_counts)]
    pub min_sets: Option<KindMap<usize>>,
    /// Largest size change in percent between the newest set of a kind and the previous one.
    #[arg(long, value_name = "PERCENT", default_value_t = 50.0)]
    pub max_size_change: f64,
    /// Free space the backup file system must keep, e.g. 1GiB, 500MB.
    #[arg(long, value_name = "SIZE", default_value = "1GiB", value_parser = thresholds::parse_size)]
    pub min_free_space: Size,
    /// A kind's lock held longer than this means a hung run.
    #[arg(long, value_name = "DURATION", default_value = "12h", value_parser = humantime::parse_duration)]
    pub max_lock_age: Duration,
    /// slots.healthy: a slot whose consumer lags more than this is unhealthy (passed to
    /// cdc-slot-tool status --max-lag-bytes), e.g. 512MB.
    #[arg(long, value_name = "SIZE", value_parser = thresholds::parse_size)]
    pub max_slot_lag: Option<Size>,
    /// Also test-restore into throwaway places: pg_verifybackup and a PITR of the newest base
    /// set, pg-logical-backup verify --level standard (needs a server), a replay of the newest
    /// Kafka set into a scratch topic (needs a broker). Always cleaned up.
    #[arg(long)]
    pub deep: bool,
    /// Report encrypted sets whose recipients are not all among these age public keys
    /// (comma-separated `age1...`), and plain or passphrase sets, as failures of the
    /// `<kind>.encryption` checks: an old key may be retired once no set needs it. Encrypted
    /// files are checked by their stored checksum and age header without a key; with
    /// BACKUP_ENCRYPTION_IDENTITY_FILE (or BACKUP_ENCRYPTION_PASSPHRASE_FILE) their content is
    /// decrypted and checked too.
    #[arg(long, value_name = "AGE1...,...", value_delimiter = ',', value_parser = parse_recipient)]
    pub expect_recipients: Option<Vec<String>>,
    /// Scratch directory for --deep restores [default: the system temporary directory].
    #[arg(long, value_name = "DIR")]
    pub scratch_dir: Option<PathBuf>,
    /// Write Prometheus textfile-collector metrics to this file (replaced atomically).
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    /// Directory of the other pipeline-backup tools [default: next to this program, else PATH].
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// PostgreSQL to check (reachability, pg_stat_archiver, slots); only when --host or
    /// PGHOST is given.
    #[command(flatten)]
    pub pg: PgArgs,
    /// Kafka brokers to check (host:port,...); only when given.
    #[arg(long, short = 'b', env = common::env::KAFKA_BOOTSTRAP_SERVERS, value_name = "HOSTS")]
    pub bootstrap_servers: Option<String>,
    /// Extra librdkafka property as key=value (repeatable); secrets better in KAFKA_CLIENT_CONFIG.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = common::kafka::parse_key_value)]
    pub client_config: Vec<(String, String)>,
}

impl CheckArgs {
    /// Turns the flags into [`Settings`].
    pub fn settings(&self) -> anyhow::Result<Settings> {
        if !(0.0..=1e6).contains(&self.max_size_change) {
            anyhow::bail!(
                "--max-size-change {} is out of range: give a percentage such as 50",
                self.max_size_change
            );
        }
        let pg = self
            .pg
            .host
            .as_deref()
            .filter(|h| !h.is_empty())
            .map(|_| self.pg.clone());
        let kafka = match self
            .bootstrap_servers
            .as_deref()
            .filter(|b| !b.trim().is_empty())
        {
            Some(servers) => Some((
                servers.to_string(),
                common::kafka::kafka_properties(&self.client_config)?,
            )),
            None => None,
        };
        Ok(Settings {
            backup_dir: self.repo.backup_dir.clone(),
            only: self.only.clone(),
            require: self.require.clone(),
            max_age: thresholds::max_ages(self.max_age.as_ref()),
            min_sets: thresholds::min_sets(self.min_sets.as_ref()),
            max_size_change: self.max_size_change / 100.0,
            min_free_space: self.min_free_space.0,
            max_lock_age: self.max_lock_age,
            max_slot_lag: self.max_slot_lag.map(|s| s.0),
            deep: self.deep,
            pg,
            kafka,
            bin_dir: self.bin_dir.clone(),
            scratch_dir: self.scratch_dir.clone(),
            identities: common::encryption::Identities::from_env()?.map(std::sync::Arc::new),
            expect_recipients: self.expect_recipients.clone(),
        })
    }
}

/// One `age1...` public key of `--expect-recipients`.
fn parse_recipient(text: &str) -> Result<String, common::encryption::KeyError> {
    let key = text.trim();
    common::encryption::Recipients::parse(key).map(|_| key.to_string())
}

/// Runs the checks, or the drill.
pub fn run(args: Args) -> anyhow::Result<Status> {
    let output = args.output;
    match args.command {
        Some(Command::Drill(drill)) => return drill::run(drill, output),
        Some(Command::Restore(cut)) => return cut::run(*cut, output),
        None => {}
    }
    let checks = args.checks;
    if checks.notify_test {
        return notify_test::run(output);
    }
    if checks.list {
        report::print_list(output)?;
        return Ok(Status::Ok);
    }
    let settings = checks.settings()?;
    // A missing directory, bucket or credentials: exit 2 before any check runs.
    let repo = common::Repository::open(&settings.backup_dir)?;
    let started = std::time::Instant::now();
    let run = run_checks(&settings, &repo)?;
    if let Some(path) = &checks.metrics_file {
        metrics::write(path, &settings, &repo, &run)?;
    }
    report::print(output, &run, started.elapsed().as_secs_f64())?;
    Ok(Status::from_passed(run.failed() == 0))
}

/// Runs every check the settings ask for, in catalogue order.
pub fn run_checks(settings: &Settings, repo: &common::Repository) -> anyhow::Result<Run> {
    let mut run = Run::default();
    repository::run(&mut run, settings, repo);
    for kind in [
        Kind::Base,
        Kind::Wal,
        Kind::Logical,
        Kind::Kafka,
        Kind::Slots,
    ] {
        if kind == Kind::Wal {
            walcheck::run(&mut run, settings, repo);
            continue;
        }
        // An unlistable kind folder fails repo.layout; its sets count as none here.
        let sets = repo.list(kind).unwrap_or_else(|e| {
            tracing::debug!("{e:#}");
            Vec::new()
        });
        sets::run(&mut run, settings, repo, kind, &sets);
        kinds::run(&mut run, settings, repo, kind, &sets);
        health::run(&mut run, settings, kind, &sets);
    }
    connectivity::run(&mut run, settings);
    Ok(run)
}

//! Point-in-time restore: unpack a base backup into a data directory, configure recovery from
//! the WAL archive to a target, and optionally start the server and wait until it is ready.
#![forbid(unsafe_code)]

mod extract;
mod recovery;
mod safety;
mod start;
mod target;
mod walcheck;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use common::cli::{GlobalArgs, RepoArgs};
use common::physical::{PhysicalDetails, BASE_TAR};
use common::repo::{Repository, SetInfo};
use common::FileEntry;
use common::Status;
use serde::Serialize;

pub use target::{Named, Target};

/// Restore a base backup and replay archived WAL up to a target (default: all of it).
///
/// Without --start the data directory is left ready for `pg_ctl start`: PostgreSQL then
/// recovers to the target and promotes. With --start this tool does that and waits.
#[derive(Debug, Parser)]
#[command(name = "pitr-restore", version, after_help = format!(
    "{}\n\nEncrypted backups and WAL (age) are decrypted with BACKUP_ENCRYPTION_IDENTITY_FILE (an age\nidentity file, several keys allowed) or BACKUP_ENCRYPTION_PASSPHRASE_FILE. Give them in the\n--config file: restore_command is written with it, so the server's wal-archive fetch reads\nthem too. A missing or wrong key, a damaged or truncated file: exit 2, nothing left in --pgdata.",
    common::exit::EXIT_CODES_HELP
))]
pub struct Args {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Data directory to restore into (created if missing; must be empty unless --force).
    #[arg(long)]
    pub pgdata: PathBuf,
    /// Base backup set to restore [default: the newest that ended before the target].
    #[arg(long)]
    pub backup_id: Option<String>,
    /// Recover up to this time: RFC 3339 (2026-11-21T02:00:00.5Z) or PostgreSQL's syntax.
    #[arg(long, group = "target_group", value_parser = common::timefmt::parse_timestamp)]
    pub target_time: Option<time::OffsetDateTime>,
    /// Recover up to this WAL position (e.g. 0/3000060).
    #[arg(long, group = "target_group")]
    pub target_lsn: Option<common::lsn::Lsn>,
    /// Recover up to and including this transaction id.
    #[arg(long, group = "target_group")]
    pub target_xid: Option<u64>,
    /// Recover up to a restore point made with pg_create_restore_point().
    #[arg(long, group = "target_group")]
    pub target_name: Option<String>,
    /// `immediate`: stop as soon as the backup is consistent; `latest`: replay everything.
    #[arg(long, group = "target_group", value_enum)]
    pub target: Option<Named>,
    /// Replace a non-empty data directory (stopping a server running on it).
    #[arg(long)]
    pub force: bool,
    /// Do not ask for confirmation on a terminal.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Keep WAL archiving on in the restored cluster (off by default, so a restored copy
    /// cannot push a new timeline into the production archive).
    #[arg(long)]
    pub keep_archiving: bool,
    /// wal-archive program for restore_command [default: next to this program, else PATH].
    #[arg(long)]
    pub wal_archive_bin: Option<PathBuf>,
    /// Start the restored server, wait until it has recovered and promoted, and check it.
    #[arg(long)]
    pub start: bool,
    /// Port for the started server.
    #[arg(long, default_value_t = 5432)]
    pub port: u16,
    /// Unix-socket directory for the started server.
    #[arg(long, default_value = "/tmp")]
    pub socket_dir: PathBuf,
    /// Role to check the started server with.
    #[arg(long, default_value = "postgres")]
    pub db_user: String,
    /// Restore even if the WAL archive has a gap on the backup's timeline (recovery then
    /// stops at the gap).
    #[arg(long)]
    pub accept_wal_gaps: bool,
    /// How long --start waits for recovery.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

impl common::entry::ToolArgs for Args {
    fn global(&self) -> &GlobalArgs {
        &self.global
    }
}

impl Args {
    pub fn recovery_target(&self) -> Target {
        if let Some(t) = self.target_time {
            Target::Time(t)
        } else if let Some(lsn) = self.target_lsn {
            Target::Lsn(lsn)
        } else if let Some(xid) = self.target_xid {
            Target::Xid(xid)
        } else if let Some(name) = &self.target_name {
            Target::Name(name.clone())
        } else if self.target == Some(Named::Immediate) {
            Target::Immediate
        } else {
            Target::Latest
        }
    }
}

#[derive(Debug, Serialize)]
struct Summary {
    id: String,
    pgdata: String,
    target: String,
    backup_timeline: u32,
    backup_stop_lsn: String,
    restored_bytes: u64,
    started: bool,
    #[serde(flatten)]
    reached: Option<start::Reached>,
    /// Seconds from the start of the restore to a verified, writable server (with --start),
    /// or to a configured data directory.
    rto_s: f64,
}

pub fn run(args: Args) -> anyhow::Result<Status> {
    let began = Instant::now();
    let target = args.recovery_target();
    let repo = Repository::open(&args.repo.backup_dir)?;
    let chosen = choose_backup(&args, &repo, &target)?;
    if !args.accept_wal_gaps {
        walcheck::check_continuity(&repo, &chosen.details, &target)?;
    }
    let identities = common::encryption::Identities::from_env()?;
    extract::check_key(&repo, &chosen.set, &chosen.tar_entry, identities.as_ref())?;
    warn_if_server_lacks_key(&repo, &chosen.tar_entry, identities.is_some())?;
    safety::prepare_pgdata(&args.pgdata, args.force)?;
    let unfinished = safety::emptied_unless_done(&args.pgdata);
    let raw_bytes = chosen.details.raw_bytes;
    safety::check_space(&args.pgdata, raw_bytes + raw_bytes / 10)?;
    extract_backup(&args, &repo, &chosen, identities.as_ref())?;
    configure_recovery(&args, &repo, &target)?;
    unfinished.done();
    tracing::info!(
        "data directory {} is ready for recovery",
        args.pgdata.display()
    );
    let reached = start_or_explain(&args, &target, chosen.details.timeline)?;
    report(
        args.global.output,
        &Summary {
            id: chosen.set.id.clone(),
            pgdata: args.pgdata.display().to_string(),
            target: target.describe(),
            backup_timeline: chosen.details.timeline,
            backup_stop_lsn: chosen.details.stop_lsn.to_string(),
            restored_bytes: raw_bytes,
            started: reached.is_some(),
            reached,
            rto_s: began.elapsed().as_secs_f64(),
        },
    )?;
    Ok(Status::Ok)
}

/// The base backup being restored.
struct Chosen {
    set: SetInfo,
    details: PhysicalDetails,
    tar_entry: FileEntry,
}

/// Picks the set that can reach the target and asks for confirmation on a terminal.
fn choose_backup(args: &Args, repo: &Repository, target: &Target) -> anyhow::Result<Chosen> {
    let (set, manifest, details) = target::choose(repo, args.backup_id.as_deref(), target)?;
    let tar_entry = manifest
        .files
        .iter()
        .find(|f| f.path.starts_with(BASE_TAR))
        .with_context(|| format!("base backup {} has no {BASE_TAR} file", set.id))?
        .clone();
    tracing::info!(
        "restoring base backup {} (LSN {} .. {}, timeline {}) to {}",
        set.id,
        details.start_lsn,
        details.stop_lsn,
        details.timeline,
        target.describe()
    );
    common::prompt::confirm(
        &format!(
            "Restore base backup {} into {} (target {})",
            set.id,
            args.pgdata.display(),
            target.describe()
        ),
        args.yes,
        common::prompt::Unattended::Proceed,
    )?;
    Ok(Chosen {
        set,
        details,
        tar_entry,
    })
}

/// Unpacks the tarball into the data directory, with a progress bar.
fn extract_backup(
    args: &Args,
    repo: &Repository,
    chosen: &Chosen,
    identities: Option<&common::encryption::Identities>,
) -> anyhow::Result<()> {
    let progress = common::progress::bytes(&args.global, Some(chosen.tar_entry.size), "restore");
    extract::extract(
        repo,
        &chosen.set,
        &chosen.tar_entry,
        identities,
        &args.pgdata,
        &progress,
    )?;
    progress.finish_and_clear();
    Ok(())
}

/// Writes restore_command and the target into the data directory.
fn configure_recovery(args: &Args, repo: &Repository, target: &Target) -> anyhow::Result<()> {
    let wal_archive = recovery::wal_archive_bin(args.wal_archive_bin.as_deref());
    let backup_dir = args.repo.backup_dir.absolute()?;
    recovery::configure(
        &args.pgdata,
        &backup_dir,
        &wal_archive,
        target,
        args.keep_archiving,
        !common::wal::WalArchive::new(repo).exists()?,
    )
}

/// With --start, starts the server and waits until it has recovered; else says how to.
fn start_or_explain(
    args: &Args,
    target: &Target,
    timeline: u32,
) -> anyhow::Result<Option<start::Reached>> {
    if !args.start {
        tracing::info!(
            "start it with: pg_ctl -D {} -l {} start",
            args.pgdata.display(),
            start::log_file(&args.pgdata).display()
        );
        return Ok(None);
    }
    let options = start::StartOptions {
        port: args.port,
        socket_dir: args.socket_dir.clone(),
        user: args.db_user.clone(),
        timeout: args.timeout,
    };
    start::start(&args.pgdata, &options, target, timeline).map(Some)
}

/// The summary on stdout: a JSON record, or one line.
fn report(format: common::output::OutputFormat, summary: &Summary) -> anyhow::Result<()> {
    common::output::summary(format, summary, || match &summary.reached {
        Some(r) => format!(
            "restored {} into {}: timeline {}, at {}, ready in {:.1}s",
            summary.id, summary.pgdata, r.timeline, r.current_lsn, summary.rto_s
        ),
        None => format!(
            "restored {} into {} (target {}); start the server to recover",
            summary.id, summary.pgdata, summary.target
        ),
    })
}

/// PostgreSQL runs restore_command in its own environment: encrypted WAL needs the identity
/// there too, which a --config file carries (a server started by --start also inherits ours).
fn warn_if_server_lacks_key(
    repo: &Repository,
    tar_entry: &common::FileEntry,
    have_identity: bool,
) -> anyhow::Result<()> {
    if common::config_file::loaded().is_some() {
        return Ok(());
    }
    let encrypted_wal = common::wal::WalArchive::new(repo).is_marked_encrypted()?;
    if encrypted_wal || (tar_entry.is_encrypted() && have_identity) {
        tracing::warn!(
            "the WAL archive may be encrypted: restore_command needs {} in the server's environment; a server started by --start inherits this run's, one started otherwise needs it in a config file (--config FILE / PIPELINE_BACKUP_CONFIG)",
            common::encryption::IDENTITY_FILE_ENV
        );
    }
    Ok(())
}

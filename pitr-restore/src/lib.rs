//! Point-in-time restore: unpack a base backup into a data directory, configure recovery from
//! the WAL archive to a target, and optionally start the server and wait until it is ready.
#![forbid(unsafe_code)]

mod chain;
mod conform;
mod delta;
mod extract;
mod locate;
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
use common::encryption::Identities;
use common::physical::filelist::FileList;
use common::repo::Repository;
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
    /// Data directory to restore into (created if missing; must be empty unless --force or
    /// --delta).
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
    /// Restore into an existing, stopped data directory of the same database system,
    /// rewriting only the files whose size or content differ from the backup and removing
    /// those it does not have. Needs a backup taken with `pg-base-backup --pgdata` (it keeps
    /// a file list). Refused, with nothing changed, while a server runs on the directory or
    /// when it belongs to another system (pg_control's system identifier). Interrupted, the
    /// directory is left without global/pg_control (it cannot start half-restored): run the
    /// same command again to finish.
    #[arg(long)]
    pub delta: bool,
    /// With --delta: keep a local file whose size and modification time (to the nanosecond)
    /// are the ones the backup listed, without reading it, when that time is over a second
    /// older than the backup's start (as pgBackRest's --delta --force). Much faster on a
    /// large directory whose files mostly did not change; other files are compared by
    /// checksum. A file changed with its time set back by hand is not seen: use plain --delta
    /// after tampering. pitr-restore gives every file it restores its listed time.
    #[arg(long, requires = "delta")]
    pub delta_by_timestamp: bool,
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
    /// full, diff or incr.
    backup_type: &'static str,
    /// The sets unpacked, in order (the full first, `id` last).
    chain: Vec<String>,
    /// Bytes written into the data directory: its files' size (the tarball's for a backup
    /// taken by pg_basebackup); with --delta, the size of the files rewritten.
    restored_bytes: u64,
    /// With --delta: what was kept, rewritten and removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<delta::Report>,
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
    let chain = choose_backup(&args, &repo, &target)?;
    let last = chain.last();
    if !args.accept_wal_gaps {
        walcheck::check_continuity(&repo, &last.details, &target)?;
    }
    let identities = Identities::from_env()?;
    chain.check_keys(&repo, identities.as_ref())?;
    warn_if_server_lacks_key(&repo, &last.tar, identities.is_some())?;
    let destination = destination(&args, &chain, chain.file_list(&repo)?)?;
    confirm(&args, &chain, &target)?;
    let restore = Restore {
        args: &args,
        repo: &repo,
        chain: &chain,
        identities: identities.as_ref(),
        target: &target,
    };
    let restored = match destination {
        Destination::Empty(list) => restore.fresh(list.as_ref())?,
        Destination::Delta {
            system_identifier,
            list,
        } => restore.delta(system_identifier, &list)?,
    };
    tracing::info!(
        "data directory {} is ready for recovery",
        args.pgdata.display()
    );
    let reached = start_or_explain(&args, &target, last.details.timeline)?;
    report(
        args.global.output,
        &Summary {
            id: last.set.id.clone(),
            pgdata: args.pgdata.display().to_string(),
            target: target.describe(),
            backup_timeline: last.details.timeline,
            backup_stop_lsn: last.details.stop_lsn.to_string(),
            backup_type: last.details.backup_type.name(),
            chain: chain.ids(),
            restored_bytes: restored.bytes,
            delta: restored.delta,
            started: reached.is_some(),
            reached,
            rto_s: began.elapsed().as_secs_f64(),
        },
    )?;
    Ok(Status::Ok)
}

/// Picks the set that can reach the target, with the sets it is restored on top of.
fn choose_backup(args: &Args, repo: &Repository, target: &Target) -> anyhow::Result<chain::Chain> {
    let (set, _, details) = target::choose(repo, args.backup_id.as_deref(), target)?;
    tracing::info!(
        "restoring {} base backup {} (LSN {} .. {}, timeline {}) to {}",
        details.backup_type.name(),
        set.id,
        details.start_lsn,
        details.stop_lsn,
        details.timeline,
        target.describe()
    );
    let chain = chain::Chain::resolve(repo, set, details)?;
    if chain.links().len() > 1 {
        tracing::info!("restoring the chain {}", chain.ids().join(" -> "));
    }
    Ok(chain)
}

/// What the restore writes into, with the chosen set's file list.
enum Destination {
    /// An empty (or missing) directory, or one --force empties.
    Empty(Option<FileList>),
    /// An existing data directory of the same system (--delta).
    Delta {
        system_identifier: u64,
        list: FileList,
    },
}

/// With --delta, checks the set has a file list and the data directory may be rewritten
/// (stopped, of the same system). Nothing is changed.
fn destination(
    args: &Args,
    chain: &chain::Chain,
    list: Option<FileList>,
) -> anyhow::Result<Destination> {
    if !args.delta {
        return Ok(Destination::Empty(list));
    }
    let last = chain.last();
    let list = list.with_context(|| {
        format!(
            "delta restore needs a backup taken with --pgdata: base backup {} was taken by pg_basebackup and has no file list to compare with; restore it into an empty directory",
            last.set.id
        )
    })?;
    let system_identifier = delta::check(&args.pgdata, &last.set.id, &last.details)?;
    Ok(Destination::Delta {
        system_identifier,
        list,
    })
}

/// Asks for confirmation on a terminal.
fn confirm(args: &Args, chain: &chain::Chain, target: &Target) -> anyhow::Result<()> {
    let how = if args.delta {
        "Rewrite what differs from base backup"
    } else {
        "Restore base backup"
    };
    common::prompt::confirm(
        &format!(
            "{how} {} in {} (target {})",
            chain.last().set.id,
            args.pgdata.display(),
            target.describe()
        ),
        args.yes,
        common::prompt::Unattended::Proceed,
    )
}

/// What a restore wrote.
struct Restored {
    bytes: u64,
    delta: Option<delta::Report>,
}

/// A restore about to write into the data directory.
struct Restore<'a> {
    args: &'a Args,
    repo: &'a Repository,
    chain: &'a chain::Chain,
    identities: Option<&'a Identities>,
    target: &'a Target,
}

impl Restore<'_> {
    /// Into an empty directory (or one emptied with --force): every link unpacked, then the
    /// files the chosen set's list does not have removed and the listed ones checked. A
    /// failure empties the directory again.
    fn fresh(&self, list: Option<&FileList>) -> anyhow::Result<Restored> {
        let pgdata = &self.args.pgdata;
        safety::prepare_pgdata(pgdata, self.args.force)?;
        let mut unfinished = safety::emptied_unless_done(pgdata);
        let size = list.map_or(self.chain.last().details.raw_bytes, FileList::total_size);
        safety::check_space(pgdata, size + size / 10)?;
        self.extract(|_| Some(extract::Members::All))?;
        if let Some(list) = list {
            let local = conform::walk(pgdata, &[])?;
            conform::remove(pgdata, &conform::unlisted(&local, list))?;
            conform::verify(pgdata, list, &self.chain.last().set.id, str::to_string)?;
        }
        // Its last writes while no interruption empties the directory beside them.
        unfinished.done_if_ok(|| configure_recovery(self.args, self.repo, self.target))?;
        Ok(Restored {
            bytes: size,
            delta: None,
        })
    }

    /// Into the existing data directory (checked by [`check_delta`]): only what differs.
    fn delta(&self, system_identifier: u64, list: &FileList) -> anyhow::Result<Restored> {
        let pgdata = &self.args.pgdata;
        let states = self.chain.states(self.repo, self.identities)?;
        let progress = common::progress::bytes(&self.args.global, None, "compare");
        let how = if self.args.delta_by_timestamp {
            delta::Compare::Timestamp
        } else {
            delta::Compare::Checksum
        };
        let mut plan = delta::compare(pgdata, &states, how, &progress)?;
        plan.name_sets_read(&self.chain.ids());
        progress.finish_and_clear();
        let report = plan.report().clone();
        tracing::info!(
            "{} file(s) unchanged, {} to rewrite ({} MiB), {} to remove",
            report.kept_files,
            report.rewritten_files,
            report.rewritten_bytes >> 20,
            report.removed_files
        );
        safety::check_space(pgdata, report.rewritten_bytes)?;
        let pending = delta::begin(pgdata, system_identifier, &plan)?;
        self.extract(|link| plan.members(link))?;
        pending.verify(list, &self.chain.last().set.id)?;
        configure_recovery(self.args, self.repo, self.target)?;
        pending.finish()?;
        Ok(Restored {
            bytes: report.rewritten_bytes,
            delta: Some(report),
        })
    }

    /// Unpacks the chain's tarballs, with a progress bar.
    fn extract<'m>(
        &self,
        members: impl Fn(usize) -> Option<extract::Members<'m>>,
    ) -> anyhow::Result<()> {
        let progress = common::progress::bytes(
            &self.args.global,
            Some(self.chain.stored_bytes()),
            "restore",
        );
        self.chain.extract(
            self.repo,
            self.identities,
            &self.args.pgdata,
            members,
            &progress,
        )?;
        progress.finish_and_clear();
        Ok(())
    }
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
    } + &match &summary.delta {
        Some(d) => format!(
            " (delta: {} file(s) rewritten, {} kept, {} removed)",
            d.rewritten_files, d.kept_files, d.removed_files
        ),
        None => String::new(),
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

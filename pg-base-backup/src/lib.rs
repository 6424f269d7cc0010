//! Physical base backups: `pg_basebackup` streams a tarball over the replication protocol;
//! this tool compresses it on every core, checksums it, keeps PostgreSQL's own
//! `backup_manifest`, makes sure the WAL needed for consistency is available, writes the
//! set's manifest last, and applies retention to base backups and archived WAL. With
//! recipients set, the tarball and PostgreSQL's manifest are stored encrypted (age).
//!
//! With `--pgdata` the files are read from the data directory instead (see `datadir`), which
//! makes differential and incremental backups possible (`--type diff|incr`).
#![forbid(unsafe_code)]

mod capture;
mod datadir;
mod reference;
mod retention;
mod server;
mod walcheck;

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use common::cli::{GlobalArgs, PgArgs, RepoArgs, RetentionArgs};
use common::output::{self, OutputFormat};
use common::physical::filelist::{FILE_LIST, HASHES};
use common::physical::{BackupType, CaptureMethod, PhysicalDetails, WalMethod, PG_BACKUP_MANIFEST};
use common::repo::{Kind, Repository, SetMeta, SetWriter};
use common::storage::Location;
use common::stream::Compression;
use common::Status;
use serde::Serialize;
use std::path::PathBuf;

/// Take a physical base backup of a running PostgreSQL cluster into BACKUP_DIR/base.
///
/// The connection uses libpq settings (flags or PGHOST, PGPORT, PGUSER, PGDATABASE); the
/// password comes only from PGPASSWORD or ~/.pgpass. The role needs the REPLICATION attribute.
#[derive(Debug, Parser)]
#[command(name = "pg-base-backup", version, after_help = format!(
    "{}\n\n{}\nOnce the repository holds encrypted base backups or WAL, a backup without\nrecipients is refused unless --allow-unencrypted.",
    common::exit::EXIT_CODES_HELP,
    common::encryption::ENCRYPTION_HELP
))]
pub struct Args {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(flatten)]
    pub pg: PgArgs,
    #[command(flatten)]
    pub repo: RepoArgs,
    #[command(flatten)]
    pub retention: RetentionArgs,
    /// Compression of the tarball.
    #[arg(long, value_enum, default_value_t = Compression::Gzip)]
    pub compress: Compression,
    /// Compression level [default: gzip 6, zstd 3].
    #[arg(long)]
    pub compress_level: Option<i32>,
    /// Compression threads, and with --pgdata also file-reading threads [default: all cores].
    #[arg(long)]
    pub jobs: Option<u32>,
    /// Where the WAL that makes the backup consistent is kept: inside the tarball (fetch), or
    /// in BACKUP_DIR/wal, verified before the set is complete (archive). Default: archive
    /// when the server archives (archive_mode on) and BACKUP_DIR/wal exists, else fetch.
    #[arg(long, value_enum)]
    pub wal_method: Option<WalMethod>,
    /// How long to wait for the backup's WAL to reach the archive.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub wal_timeout: Duration,
    /// Checkpoint mode at the start: fast (immediate) or spread (gentle on the server).
    #[arg(long, default_value = "fast", value_parser = ["fast", "spread"])]
    pub checkpoint: String,
    /// Label stored in the backup.
    #[arg(long, default_value = "pg-base-backup")]
    pub label: String,
    /// Store the backup in plaintext even though the repository holds encrypted base
    /// backups or WAL (no recipients set). Without it such a backup is refused.
    #[arg(long)]
    pub allow_unencrypted: bool,
    /// full: every file. diff: what changed since the newest full backup. incr: what changed
    /// since the newest backup of any type. diff and incr need --pgdata; they store changed
    /// files whole and, of relation files, only the 8 KiB pages whose LSN is newer than the
    /// reference backup's start. Without a full backup taken with --pgdata of the same system
    /// and timeline to build on, a diff or incr is taken as a full (with a warning).
    #[arg(long = "type", value_enum, default_value_t = BackupType::Full)]
    pub backup_type: BackupType,
    /// Read the files from this data directory (on the database host, or in a sidecar that
    /// mounts its volume) between pg_backup_start and pg_backup_stop on this tool's session,
    /// instead of streaming pg_basebackup. Needs WAL archiving into BACKUP_DIR/wal (the WAL
    /// method is archive) and a role allowed to run pg_backup_start.
    #[arg(long, value_name = "PATH")]
    pub pgdata: Option<PathBuf>,
    /// How a diff or incr finds the changed pages of a changed relation file: from the WAL
    /// since its reference (only those pages are read; each segment's block summary stored
    /// by wal-archive push, else the segment decoded from the data directory's pg_wal or the
    /// archive), or by reading the file whole for its page LSNs (scan). auto reads the WAL
    /// unless that costs more than half of reading the changed files, and scans when the WAL
    /// cannot be read.
    #[arg(long, value_enum, default_value_t = datadir::PagePicking::Auto)]
    pub changed_pages: datadir::PagePicking,
}

impl common::entry::ToolArgs for Args {
    fn global(&self) -> &GlobalArgs {
        &self.global
    }
}

/// The JSON summary of a backup.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub id: String,
    pub path: String,
    pub start_lsn: String,
    pub stop_lsn: String,
    pub timeline: u32,
    pub bytes: u64,
    pub raw_bytes: u64,
    pub duration_s: f64,
    pub compression: Compression,
    pub wal_method: WalMethod,
    pub deleted_sets: Vec<String>,
    pub expired_wal_files: usize,
    /// Whether the set's files are encrypted (age).
    pub encrypted: bool,
    /// full, diff or incr (a diff or incr without a reference is taken as full).
    pub backup_type: BackupType,
    /// The set a diff or incr was taken against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// How the files of a --pgdata backup were stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<datadir::Counts>,
}

pub fn run(mut args: Args) -> anyhow::Result<Status> {
    let started = Instant::now();
    // A base backup needs no particular database, and a replication role seldom owns one.
    args.pg = args.pg.for_server_work();
    check_type(&args)?;
    let server = server::Connected::open(&args.pg)?;
    let repo = Repository::create(&args.repo.backup_dir)?;
    let wal_method = choose_wal_method(
        args.wal_method,
        server.info.archiving,
        // A --pgdata backup has no other place for its WAL: the server's archive is assumed
        // to be this repository (the wait for the backup's WAL checks it).
        server.info.archiving
            && (args.pgdata.is_some() || repo.kind_exists(Kind::Wal).unwrap_or(false)),
        &args.repo.backup_dir,
    )?;
    if args.pgdata.is_some() && wal_method != WalMethod::Archive {
        anyhow::bail!(
            "--pgdata backups keep their WAL in the archive: turn WAL archiving on (archive_command = 'wal-archive push %p --backup-dir {}') and create BACKUP_DIR/wal, or drop --pgdata",
            args.repo.backup_dir
        );
    }
    let recipients = repo.recipients_for(Kind::Base, args.allow_unencrypted)?;
    let _lock = repo.lock(Kind::Base)?;
    let mut set = repo.create_set(Kind::Base)?;
    set.encrypt_to(recipients);
    let (id, path, encrypted) = (set.id().to_string(), set.describe(), set.is_encrypted());
    tracing::info!("writing base backup {id} (WAL method {wal_method:?})");
    // A failed set is removed as its writer is dropped (see common::repo::SetWriter).
    let (details, counts) = match &args.pgdata {
        None => (
            write_backup(&args, &mut set, &server, &repo, wal_method, started)?,
            None,
        ),
        Some(pgdata) => {
            let (details, counts) =
                write_from_datadir(&args, pgdata, &mut set, &server, &repo, started)?;
            (details, Some(counts))
        }
    };
    let stored_bytes = commit(&args, set, &server.info, &details)?;
    let (deleted_sets, expired_wal_files) =
        common::retention::after_commit(Kind::Base, &id, retention::apply(&args, &repo))?;
    report(
        args.global.output,
        &Summary {
            id,
            path,
            start_lsn: details.start_lsn.to_string(),
            stop_lsn: details.stop_lsn.to_string(),
            timeline: details.timeline,
            bytes: stored_bytes,
            raw_bytes: details.raw_bytes,
            duration_s: started.elapsed().as_secs_f64(),
            compression: details.compression,
            wal_method,
            deleted_sets,
            expired_wal_files,
            encrypted,
            backup_type: details.backup_type,
            reference: details.reference.clone(),
            files: counts,
        },
    )?;
    if let Some(failed) = details.checksum_failures.first() {
        // As pg_basebackup: the backup is kept (its pages are what the disk holds), the run
        // fails so that someone looks at the storage.
        tracing::error!(
            "data checksum verification failed for {} page(s) in {} file(s) (first: {}, blocks {:?}); the backup is complete but the cluster's storage is damaged",
            details.checksum_failures.iter().map(|f| f.blocks.len()).sum::<usize>(),
            details.checksum_failures.len(),
            failed.path,
            failed.blocks
        );
        return Ok(Status::CheckFailed);
    }
    Ok(Status::Ok)
}

/// diff and incr read the data directory.
fn check_type(args: &Args) -> anyhow::Result<()> {
    if args.backup_type != BackupType::Full && args.pgdata.is_none() {
        anyhow::bail!(
            "--type {} needs --pgdata PATH: the data directory, on the database host or in a sidecar that mounts its volume",
            args.backup_type.name()
        );
    }
    Ok(())
}

/// The WAL method: the flag, else archive when the server archives and the repository has a
/// WAL archive, else fetch. Archive without archiving on the server cannot complete.
fn choose_wal_method(
    flag: Option<WalMethod>,
    server_archives: bool,
    repo_has_wal: bool,
    backup_dir: &Location,
) -> anyhow::Result<WalMethod> {
    let method = flag.unwrap_or(if server_archives && repo_has_wal {
        WalMethod::Archive
    } else {
        WalMethod::Fetch
    });
    if method == WalMethod::Archive && !server_archives {
        anyhow::bail!(
            "--wal-method archive needs WAL archiving on the server (archive_mode = on, archive_command = 'wal-archive push %p --backup-dir {backup_dir}'); or use --wal-method fetch"
        );
    }
    Ok(method)
}

/// Streams the tarball into the set, keeps PostgreSQL's manifest beside it, waits for the
/// backup's WAL when it goes to the archive, and describes what was written.
fn write_backup(
    args: &Args,
    set: &mut SetWriter,
    server: &server::Connected,
    repo: &Repository,
    wal_method: WalMethod,
    started: Instant,
) -> anyhow::Result<PhysicalDetails> {
    let threads = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
    let expected_bytes = server.database_bytes()?;
    let captured = capture::run_pg_basebackup(args, set, wal_method, threads, expected_bytes)?;
    set.add(captured.tar_entry.clone());
    set.put_file(PG_BACKUP_MANIFEST, captured.pg_manifest.as_bytes())?;
    if wal_method == WalMethod::Archive {
        server.wait_for_archive(repo, captured.range, args.wal_timeout)?;
    }
    Ok(PhysicalDetails {
        file_count: captured.file_count,
        wal_method,
        stop_time: captured.finished_at,
        ..common_details(
            args,
            set,
            &server.info,
            captured.range,
            &captured.tar_entry,
            started,
        )
    })
}

/// The details every base backup has, as a full backup whose WAL is in the archive (stop
/// time the start, until the caller sets it); the caller sets what its way of reading
/// differs in.
fn common_details(
    args: &Args,
    set: &SetWriter,
    info: &server::ServerInfo,
    range: capture::WalRange,
    tar_entry: &common::FileEntry,
    started: Instant,
) -> PhysicalDetails {
    PhysicalDetails {
        start_lsn: range.start,
        stop_lsn: range.stop,
        timeline: range.timeline,
        start_time: set.started_at(),
        stop_time: set.started_at(),
        system_identifier: info.system_identifier.clone(),
        server_version_num: info.server_version_num,
        server_version: info.server_version.clone(),
        wal_segment_size: info.wal_segment_size,
        wal_method: WalMethod::Archive,
        compression: args.compress,
        raw_bytes: tar_entry.raw_size.unwrap_or(0),
        stored_bytes: tar_entry.size,
        duration_s: started.elapsed().as_secs_f64(),
        file_count: 0,
        backup_type: BackupType::Full,
        method: CaptureMethod::PgBasebackup,
        reference: None,
        reference_lsn: None,
        chain: Vec::new(),
        checksum_failures: Vec::new(),
    }
}

/// Reads the data directory into the set (see `datadir`), stores its file list and hashes,
/// waits for the backup's WAL in the archive, and describes what was written.
fn write_from_datadir(
    args: &Args,
    pgdata: &std::path::Path,
    set: &mut SetWriter,
    server: &server::Connected,
    repo: &Repository,
    started: Instant,
) -> anyhow::Result<(PhysicalDetails, datadir::Counts)> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let jobs = args.jobs.unwrap_or(cores).max(1);
    let options = datadir::Options {
        pgdata,
        label: &args.label,
        fast_checkpoint: args.checkpoint == "fast",
        threads: jobs,
        read_jobs: jobs as usize,
        wanted: args.backup_type,
        picking: args.changed_pages,
    };
    let captured = datadir::capture(args, &options, set, server, repo)?;
    set.add(captured.tar_entry.clone());
    set.put_clear_file(FILE_LIST, &serde_json::to_vec(&captured.list)?)?;
    set.put_file(HASHES, &serde_json::to_vec(&captured.hashes)?)?;
    server.wait_for_archive(repo, captured.range, args.wal_timeout)?;
    let reference = captured.reference.as_ref();
    let details = PhysicalDetails {
        file_count: captured.list.files.len() as u64,
        backup_type: match reference {
            Some(_) => args.backup_type,
            None => BackupType::Full,
        },
        method: CaptureMethod::DataDir,
        reference: reference.map(|r| r.id.clone()),
        reference_lsn: reference.map(|r| r.start_lsn),
        chain: reference.map(|r| r.chain.clone()).unwrap_or_default(),
        checksum_failures: captured.checksum_failures,
        stop_time: captured.finished_at,
        ..common_details(
            args,
            set,
            &server.info,
            captured.range,
            &captured.tar_entry,
            started,
        )
    };
    Ok((details, captured.counts))
}

/// Verifies the set and writes its manifest, the step that makes it complete; returns the
/// bytes stored.
fn commit(
    args: &Args,
    set: SetWriter,
    info: &server::ServerInfo,
    details: &PhysicalDetails,
) -> anyhow::Result<u64> {
    let id = set.id().to_string();
    let manifest = set
        .commit(SetMeta {
            tool: "pg-base-backup",
            tool_version: env!("CARGO_PKG_VERSION"),
            source: serde_json::json!({
                "host": args.pg.host(),
                "port": args.pg.port(),
                "user": args.pg.user(),
                "system_identifier": info.system_identifier,
                "server_version": info.server_version,
            }),
            details: serde_json::to_value(details)?,
        })
        .context("the backup was written but failed verification")?;
    tracing::info!(
        "base backup {id} complete: {} bytes stored, LSN {} .. {}",
        manifest.total_size(),
        details.start_lsn,
        details.stop_lsn
    );
    Ok(manifest.total_size())
}

/// The summary on stdout: a JSON record, or one tab-separated line.
fn report(format: OutputFormat, summary: &Summary) -> anyhow::Result<()> {
    output::summary(format, summary, || summary_line(summary))
}

fn summary_line(summary: &Summary) -> String {
    format!(
        "{}\t{}\t{}..{}\ttimeline {}\t{} bytes\t{:.1}s",
        summary.id,
        summary.path,
        summary.start_lsn,
        summary.stop_lsn,
        summary.timeline,
        summary.bytes,
        summary.duration_s
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> Location {
        Location::Local("/backups".into())
    }

    #[test]
    fn wal_method_defaults_to_archive_only_when_both_sides_archive() {
        let choose = |archives, has_wal| choose_wal_method(None, archives, has_wal, &dir());
        assert_eq!(choose(true, true).unwrap(), WalMethod::Archive);
        assert_eq!(choose(true, false).unwrap(), WalMethod::Fetch);
        assert_eq!(choose(false, false).unwrap(), WalMethod::Fetch);
        let flag = |method, archives| choose_wal_method(Some(method), archives, false, &dir());
        assert_eq!(flag(WalMethod::Fetch, true).unwrap(), WalMethod::Fetch);
        assert_eq!(flag(WalMethod::Archive, true).unwrap(), WalMethod::Archive);
    }

    #[test]
    fn archive_without_server_archiving_says_how_to_set_it_up() {
        let err = choose_wal_method(Some(WalMethod::Archive), false, true, &dir()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("archive_command = 'wal-archive push %p --backup-dir /backups'"),
            "{text}"
        );
        assert!(text.ends_with("or use --wal-method fetch"), "{text}");
    }

    #[test]
    fn the_text_summary_is_one_tab_separated_line() {
        let summary = Summary {
            id: "20261121T020000Z".into(),
            path: "/backups/base/20261121T020000Z".into(),
            start_lsn: "0/2000028".into(),
            stop_lsn: "0/2000100".into(),
            timeline: 1,
            bytes: 4096,
            raw_bytes: 40960,
            duration_s: 1.25,
            compression: Compression::Gzip,
            wal_method: WalMethod::Fetch,
            deleted_sets: Vec::new(),
            expired_wal_files: 0,
            encrypted: false,
            backup_type: BackupType::Full,
            reference: None,
            files: None,
        };
        assert_eq!(
            summary_line(&summary),
            "20261121T020000Z\t/backups/base/20261121T020000Z\t0/2000028..0/2000100\ttimeline 1\t4096 bytes\t1.2s"
        );
    }
}

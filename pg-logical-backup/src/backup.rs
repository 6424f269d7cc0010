//! Taking a backup: export a snapshot per database, run every pg_dump of the set with
//! `--snapshot` (several at once), count rows (in the whole-database dump as it streams, else
//! in the same snapshot), check each dump with `pg_restore --list`, and commit the set with its
//! manifest last. With recipients in the environment every file is encrypted (age) and what
//! the set holds stays out of `manifest.json` (see [`crate::details`]).

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::time::Instant;

use serde::Serialize;

use common::cli::{GlobalArgs, PgArgs, RepoArgs, RetentionArgs};
use common::encryption::Recipients;
use common::output::OutputFormat;
use common::repo::{SetMeta, SetWriter};
use common::{Kind, Repository, Status};

use crate::catalog::{self};
use crate::details::{DatabaseEntry, LogicalDetails, DETAILS_VERSION};
use crate::dump::{self, DumpPlan, Naming};
use crate::patterns::{self, TablePattern};
use crate::pgbin::{self, PgBin, PgBinArgs};
use crate::snapshot::SnapshotSession;

/// Default of `RETENTION_DAYS` for logical sets: 14 days, as the shell scripts this tool
/// replaces kept them.
pub const DEFAULT_RETENTION_DAYS: u32 = 14;

/// Settings of a backup run.
#[derive(Debug, Clone, clap::Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub pg: PgArgs,
    #[command(flatten)]
    pub repo: RepoArgs,
    #[command(flatten)]
    pub bin: PgBinArgs,
    #[command(flatten)]
    pub retention: RetentionArgs,
    /// Back up every database of the server (except templates) instead of --dbname.
    #[arg(long)]
    pub all_databases: bool,
    /// Also dump the tables matching this pattern individually ([schema.]table, * and ?
    /// wildcards; repeatable), as with --table-dumps. The whole-database dump always holds
    /// every table, and table restores read it when a table has no dump of its own.
    #[arg(long, short = 't', value_name = "PATTERN")]
    pub table: Vec<String>,
    /// With --table-dumps or --table: do not dump tables matching this pattern
    /// individually (repeatable).
    #[arg(long, short = 'T', value_name = "PATTERN")]
    pub exclude_table: Vec<String>,
    /// Also write one dump per table and a schema-only dump (the layout of sets before
    /// details version 2). Not needed for table restores, which select the table from the
    /// whole-database dump; it reads and compresses every table a second time.
    #[arg(long, conflicts_with = "no_table_dumps")]
    pub table_dumps: bool,
    /// Dump the whole database in directory format with this many parallel pg_dump workers
    /// (instead of one custom-format file). pg_dump writes this format only into a
    /// directory: with an s3:// repository the dump is staged in a temporary directory under
    /// TMPDIR (room for the whole dump needed there), uploaded, then removed. A worker dumps
    /// whole tables: when one table holds most (2/3 or more) of a database of 64 MiB or
    /// more, --jobs cannot split it, and that database is dumped as one custom-format file
    /// instead (with a warning).
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<NonZeroUsize>,
    /// pg_dump compression level, 0 (none) to 9 [default: pg_dump's, 6 in practice].
    #[arg(long, short = 'Z', value_name = "LEVEL", value_parser = clap::value_parser!(u32).range(0..=9))]
    pub compress_level: Option<u32>,
    /// How many pg_dump processes run at once [default: the number of CPUs]. With an s3://
    /// repository each running dump streams into its own upload, which buffers up to
    /// (BACKUP_S3_UPLOAD_CONCURRENCY + 1) x BACKUP_S3_PART_SIZE (192 MiB by default; a dump
    /// smaller than one part takes only its size).
    #[arg(long, value_name = "N")]
    pub parallel_dumps: Option<NonZeroUsize>,
    /// Take no per-table dumps (the default since details version 2; kept for scripts).
    #[arg(long)]
    pub no_table_dumps: bool,
    /// Skip `pg_dumpall --globals-only` (roles, tablespaces).
    #[arg(long)]
    pub no_globals: bool,
    /// Dump roles without their password hashes (also the fallback for non-superusers).
    #[arg(long)]
    pub no_role_passwords: bool,
    /// Store the set in plaintext even though the repository's newest logical set is
    /// encrypted (no recipients set). Without it such a backup is refused.
    #[arg(long)]
    pub allow_unencrypted: bool,
}

impl BackupArgs {
    /// Whether the set gets per-table dumps and a schema dump (the old layout).
    pub fn per_table_dumps(&self) -> bool {
        !self.no_table_dumps && (self.table_dumps || !self.table.is_empty())
    }
}

/// What one table contributes to the JSON output.
#[derive(Debug, Serialize)]
struct TableRecord<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    database: &'a str,
    schema: &'a str,
    table: &'a str,
    rows: u64,
    size_bytes: u64,
    file: Option<&'a str>,
}

/// The summary line of a backup.
#[derive(Debug, Serialize)]
struct Summary {
    id: String,
    /// The set's folder: a path, or an s3:// URL.
    path: String,
    databases: Vec<String>,
    tables: usize,
    rows: u64,
    bytes: u64,
    files: usize,
    duration_secs: f64,
    /// Wall time of the whole-database dumps alone.
    full_dump_secs: f64,
    /// Peak resident memory of this process (pg_dump children not included).
    peak_rss_bytes: Option<u64>,
    retention_deleted: Vec<String>,
    /// Whether the set's files are encrypted (age).
    encrypted: bool,
}

/// Takes a backup.
pub fn run(args: BackupArgs, global: &GlobalArgs) -> anyhow::Result<Status> {
    let started = Instant::now();
    let bin = PgBin::resolve(&args.bin, &args.pg)?;
    let include = patterns::parse_all(&args.table)?;
    let exclude = patterns::parse_all(&args.exclude_table)?;
    let runtime = common::postgres::runtime()?;
    // On SIGINT or SIGTERM the backup future is dropped: pg_dump children are killed and the
    // incomplete set removed before exiting with 130 or 143.
    let (manifest, details, repo) = runtime.block_on(common::interrupt::or_interrupted(
        backup(&args, global, &bin, &include, &exclude),
        "the incomplete set was removed",
    ))?;
    let deleted = common::retention::after_commit(
        Kind::Logical,
        &manifest.id,
        apply_retention(&args.retention, &repo),
    )?;
    if global.output == OutputFormat::Json {
        print_tables(&details)?;
    }
    let summary = Summary::new(&manifest, &details, &repo, started, deleted);
    print_summary(global.output, &summary)?;
    Ok(Status::Ok)
}

/// Applies the retention policy to the logical sets; the ids deleted (none in a dry run).
fn apply_retention(retention: &RetentionArgs, repo: &Repository) -> anyhow::Result<Vec<String>> {
    let mut deleted = Vec::new();
    if !retention.no_retention {
        let policy = retention.policy(DEFAULT_RETENTION_DAYS);
        let dry_run = retention.dry_run_retention;
        for decision in policy.apply(repo, Kind::Logical, dry_run)? {
            if !decision.keep && !dry_run {
                deleted.push(decision.id);
            }
        }
    }
    Ok(deleted)
}

/// One JSON line per table backed up.
fn print_tables(details: &LogicalDetails) -> anyhow::Result<()> {
    for db in &details.databases {
        for t in &db.tables {
            common::output::json_line(&TableRecord {
                kind: "table",
                database: &db.name,
                schema: &t.schema,
                table: &t.name,
                rows: t.rows,
                size_bytes: t.size_bytes,
                file: t.file.as_deref(),
            })?;
        }
    }
    Ok(())
}

impl Summary {
    fn new(
        manifest: &common::Manifest,
        details: &LogicalDetails,
        repo: &Repository,
        started: Instant,
        retention_deleted: Vec<String>,
    ) -> Summary {
        Summary {
            id: manifest.id.clone(),
            path: repo.describe(&common::storage::join(Kind::Logical.name(), &manifest.id)),
            databases: details.databases.iter().map(|d| d.name.clone()).collect(),
            tables: details.databases.iter().map(|d| d.tables.len()).sum(),
            rows: details
                .databases
                .iter()
                .flat_map(|d| d.tables.iter().map(|t| t.rows))
                .sum(),
            bytes: manifest.total_size(),
            files: manifest.files.len(),
            duration_secs: started.elapsed().as_secs_f64(),
            full_dump_secs: details
                .databases
                .iter()
                .filter_map(|d| d.full_dump_secs)
                .sum(),
            peak_rss_bytes: peak_rss_bytes(),
            retention_deleted,
            encrypted: manifest.encryption().is_some(),
        }
    }
}

/// The closing line, or the JSON summary record.
fn print_summary(format: OutputFormat, summary: &Summary) -> anyhow::Result<()> {
    common::output::summary(format, summary, || {
        format!(
            "backup {}: {} database(s), {} tables, {} rows, {} bytes in {} files{}, {:.1}s -> {}",
            summary.id,
            summary.databases.len(),
            summary.tables,
            summary.rows,
            summary.bytes,
            summary.files,
            if summary.encrypted {
                " (encrypted)"
            } else {
                ""
            },
            summary.duration_secs,
            summary.path
        )
    })
}

/// `VmHWM` of this process from /proc, when available.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A table named by schema and name.
type TableName = (String, String);

async fn backup(
    args: &BackupArgs,
    global: &GlobalArgs,
    bin: &PgBin,
    include: &[TablePattern],
    exclude: &[TablePattern],
) -> anyhow::Result<(common::Manifest, LogicalDetails, Repository)> {
    // Everything that can be wrong with the input is found before anything is written.
    let (server, names) = server_and_databases(args).await?;
    let sessions = open_sessions(args, &names).await?;
    check_readable(args, &sessions).await?;
    check_patterns_match(include, &names, &sessions)?;
    let selections = sessions
        .iter()
        .map(|session| per_table_selection(args, include, exclude, session))
        .collect();

    let repo = Repository::create(&args.repo.backup_dir)?;
    let recipients = repo.recipients_for(Kind::Logical, args.allow_unencrypted)?;
    let _lock = repo.lock(Kind::Logical)?;
    let set = start_set(&repo, recipients)?;
    let (manifest, details) =
        write_set(args, global, bin, &server, sessions, selections, set).await?;
    Ok((manifest, details, repo))
}

/// The server's version and the databases to back up.
async fn server_and_databases(
    args: &BackupArgs,
) -> anyhow::Result<(catalog::ServerInfo, Vec<String>)> {
    let client = common::postgres::connect(&args.pg, crate::TOOL).await?;
    let server = catalog::server_info(&client).await?;
    let names = if args.all_databases {
        catalog::list_databases(&client).await?
    } else {
        vec![args.pg.dbname()]
    };
    Ok((server, names))
}

/// A snapshot session per database, its name checked first.
async fn open_sessions(
    args: &BackupArgs,
    names: &[String],
) -> anyhow::Result<Vec<SnapshotSession>> {
    let mut sessions = Vec::new();
    for name in names {
        pgbin::plain_dbname(name)?;
        sessions.push(SnapshotSession::open(&args.pg, name).await?);
    }
    Ok(sessions)
}

/// Refuses a role that may not read every table: its dump would fail halfway.
async fn check_readable(args: &BackupArgs, sessions: &[SnapshotSession]) -> anyhow::Result<()> {
    for session in sessions {
        let unreadable = session.unreadable_tables().await?;
        if !unreadable.is_empty() {
            anyhow::bail!(
                "role '{}' may not read {} table(s) of database '{}' ({}); GRANT SELECT on them (or pg_read_all_data), or back up as a superuser",
                args.pg.user(),
                unreadable.len(),
                session.database,
                unreadable.iter().take(10).cloned().collect::<Vec<_>>().join(", ")
            );
        }
    }
    Ok(())
}

/// Every --table pattern must match a table in some database.
fn check_patterns_match(
    include: &[TablePattern],
    names: &[String],
    sessions: &[SnapshotSession],
) -> anyhow::Result<()> {
    for pattern in include {
        let matched = sessions
            .iter()
            .any(|s| s.tables.iter().any(|t| pattern.matches(&t.schema, &t.name)));
        if !matched {
            anyhow::bail!(
                "--table '{pattern}' matches no table in {} (patterns are [schema.]table with * and ?; list tables with psql's \\dt *.*)",
                names.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ")
            );
        }
    }
    Ok(())
}

/// The tables of a database that get a dump of their own (none unless per-table dumps).
fn per_table_selection(
    args: &BackupArgs,
    include: &[TablePattern],
    exclude: &[TablePattern],
    session: &SnapshotSession,
) -> HashSet<TableName> {
    if !args.per_table_dumps() {
        return HashSet::new();
    }
    session
        .tables
        .iter()
        .filter(|t| include.is_empty() || include.iter().any(|p| p.matches(&t.schema, &t.name)))
        .filter(|t| !exclude.iter().any(|p| p.matches(&t.schema, &t.name)))
        .map(|t| (t.schema.clone(), t.name.clone()))
        .collect()
}

/// Creates the set, encrypted to `recipients` when there are any.
fn start_set(repo: &Repository, recipients: Option<Recipients>) -> anyhow::Result<SetWriter> {
    // Dropped unfinished (a failure, or the future dropped on a signal), the set is removed.
    let mut set = repo.create_set(Kind::Logical)?;
    set.encrypt_to(recipients);
    // What the set holds (databases, tables, row counts) goes into its encrypted part.
    set.keep_private(&["databases"], &["databases"]);
    tracing::info!(
        "backup set {} in {}{}",
        set.id(),
        set.describe(),
        if set.is_encrypted() {
            ", encrypted"
        } else {
            ""
        }
    );
    Ok(set)
}

async fn write_set(
    args: &BackupArgs,
    global: &GlobalArgs,
    bin: &PgBin,
    server: &catalog::ServerInfo,
    sessions: Vec<SnapshotSession>,
    selections: Vec<HashSet<TableName>>,
    mut set: SetWriter,
) -> anyhow::Result<(common::Manifest, LogicalDetails)> {
    let mut globals = None;
    let mut globals_without_passwords = args.no_role_passwords;
    if !args.no_globals {
        let (entry, no_passwords) =
            dump::dump_globals(bin, &args.pg, &set, args.no_role_passwords).await?;
        globals = Some(entry.path.clone());
        set.add(entry);
        globals_without_passwords = no_passwords;
    }

    let databases = dump_databases(args, global, bin, sessions, selections, &mut set).await?;
    let details = LogicalDetails {
        details_version: DETAILS_VERSION,
        server_version: server.version.clone(),
        server_version_num: server.version_num,
        compress_level: args.compress_level,
        globals,
        globals_without_passwords,
        databases,
    };
    let source = serde_json::json!({
        "host": args.pg.host(),
        "port": args.pg.port(),
        "user": args.pg.user(),
        "server_version": server.version,
        "databases": details.databases.iter().map(|d| d.name.clone()).collect::<Vec<_>>(),
    });
    let manifest = set.commit(SetMeta {
        tool: crate::TOOL,
        tool_version: env!("CARGO_PKG_VERSION"),
        source,
        details: serde_json::to_value(&details)?,
    })?;
    Ok((manifest, details))
}

/// Dumps every database in its snapshot, several pg_dumps at once, counting rows meanwhile;
/// each database's entry of the details, its files added to `set`.
async fn dump_databases(
    args: &BackupArgs,
    global: &GlobalArgs,
    bin: &PgBin,
    sessions: Vec<SnapshotSession>,
    selections: Vec<HashSet<TableName>>,
    set: &mut SetWriter,
) -> anyhow::Result<Vec<DatabaseEntry>> {
    let parallel = args
        .parallel_dumps
        .map(NonZeroUsize::get)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, NonZeroUsize::get));
    let extra = usize::from(args.per_table_dumps());
    let total_jobs: usize = selections.iter().map(|s| s.len() + 1 + extra).sum();
    let bar = common::progress::items(global, Some(total_jobs as u64), "dumping", "dumps");
    let naming = if set.is_encrypted() {
        Naming::Numbers
    } else {
        Naming::Tables
    };
    let mut taken = HashSet::new();
    let mut databases = Vec::new();
    for (n, (session, selected)) in sessions.into_iter().zip(selections).enumerate() {
        let dir = naming.database_dir(n, &session.database, &mut taken);
        let plan = DumpPlan::new(args, &dir, naming, &session, &selected);
        let (dumped, counts, in_dump) = if plan.counts_rows() {
            // Counted in the whole-database dump as it streams; what it lacks, afterwards.
            let mut dumped = dump::run_jobs(bin, set, &session, &plan.jobs, parallel, &bar).await?;
            let found = dumped
                .iter_mut()
                .find_map(|d| d.rows.take())
                .unwrap_or_default();
            let counts = dump::count_missing(&session, &found).await?;
            (dumped, counts, found.len())
        } else {
            // The first failure wins and drops the other side (killing its pg_dumps): a failed
            // count also ends the snapshot, which would only show up as confusing dump errors.
            let (dumped, counts) = tokio::try_join!(
                dump::run_jobs(bin, set, &session, &plan.jobs, parallel, &bar),
                dump::count_all(&session)
            )?;
            (dumped, counts, 0)
        };
        let entry = plan.entry(&session, counts, &dumped);
        tracing::info!(
            "database {}: {} tables, {} rows ({in_dump} tables counted in the dump as it streamed), snapshot {} at {}",
            entry.name,
            entry.tables.len(),
            entry.tables.iter().map(|t| t.rows).sum::<u64>(),
            entry.snapshot,
            entry.snapshot_lsn
        );
        session.close().await?;
        dump::record_files(set, &entry, dumped);
        databases.push(entry);
    }
    bar.finish_and_clear();
    Ok(databases)
}

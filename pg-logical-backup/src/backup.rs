//! Taking a backup: export a snapshot per database, run every pg_dump of the set with
//! `--snapshot` (several at once), count rows in the same snapshot meanwhile, check each dump
//! with `pg_restore --list`, and commit the set with its manifest last.

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use common::cli::{GlobalArgs, PgArgs, RepoArgs, RetentionArgs};
use common::output::OutputFormat;
use common::repo::{SetMeta, SetWriter};
use common::stream::Compression;
use common::{Kind, Repository, Status};

use crate::catalog::{self, TableInfo};
use crate::details::{
    self, DatabaseEntry, DumpFormat, LogicalDetails, TableEntry, DETAILS_VERSION,
};
use crate::patterns::{self, TablePattern};
use crate::pgbin::{self, PgBin, PgBinArgs};
use crate::snapshot::SnapshotSession;
use crate::toc;

/// Default of `RETENTION_DAYS` for logical sets (seed 000: 14 days).
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
    /// Dump only the tables matching this pattern individually ([schema.]table, * and ?
    /// wildcards; repeatable). The whole-database dump always holds every table.
    #[arg(long, short = 't', value_name = "PATTERN")]
    pub table: Vec<String>,
    /// Do not dump tables matching this pattern individually (repeatable).
    #[arg(long, short = 'T', value_name = "PATTERN")]
    pub exclude_table: Vec<String>,
    /// Dump the whole database in directory format with this many parallel pg_dump workers
    /// (instead of one custom-format file).
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<NonZeroUsize>,
    /// pg_dump compression level, 0 (none) to 9 [default: pg_dump's, 6 in practice].
    #[arg(long, short = 'Z', value_name = "LEVEL", value_parser = clap::value_parser!(u32).range(0..=9))]
    pub compress_level: Option<u32>,
    /// How many pg_dump processes run at once [default: the number of CPUs].
    #[arg(long, value_name = "N")]
    pub parallel_dumps: Option<NonZeroUsize>,
    /// Skip the per-table dumps (the whole-database and schema dumps are still taken).
    #[arg(long)]
    pub no_table_dumps: bool,
    /// Skip `pg_dumpall --globals-only` (roles, tablespaces).
    #[arg(long)]
    pub no_globals: bool,
    /// Dump roles without their password hashes (also the fallback for non-superusers).
    #[arg(long)]
    pub no_role_passwords: bool,
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
    path: PathBuf,
    databases: Vec<String>,
    tables: usize,
    rows: u64,
    bytes: u64,
    files: usize,
    duration_secs: f64,
    retention_deleted: Vec<String>,
}

/// Takes a backup.
pub fn run(args: BackupArgs, global: &GlobalArgs) -> anyhow::Result<Status> {
    let started = Instant::now();
    let bin = PgBin::resolve(&args.bin, &args.pg)?;
    let include = patterns::parse_all(&args.table)?;
    let exclude = patterns::parse_all(&args.exclude_table)?;
    let runtime = common::postgres::runtime()?;
    let (manifest, repo) = runtime.block_on(backup(&args, global, &bin, &include, &exclude))?;
    let details = LogicalDetails::from_manifest(&manifest)?;

    let mut deleted = Vec::new();
    if !args.retention.no_retention {
        let policy = args.retention.policy(DEFAULT_RETENTION_DAYS);
        let dry_run = args.retention.dry_run_retention;
        for decision in policy.apply(&repo, Kind::Logical, dry_run)? {
            if !decision.keep && !dry_run {
                deleted.push(decision.id);
            }
        }
    }

    if global.output == OutputFormat::Json {
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
    }
    let summary = Summary {
        id: manifest.id.clone(),
        path: repo.kind_dir(Kind::Logical).join(&manifest.id),
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
        retention_deleted: deleted,
    };
    common::output::summary(global.output, &summary, || {
        format!(
            "backup {}: {} database(s), {} tables, {} rows, {} bytes in {} files, {:.1}s -> {}",
            summary.id,
            summary.databases.len(),
            summary.tables,
            summary.rows,
            summary.bytes,
            summary.files,
            summary.duration_secs,
            summary.path.display()
        )
    })?;
    Ok(Status::Ok)
}

async fn backup(
    args: &BackupArgs,
    global: &GlobalArgs,
    bin: &PgBin,
    include: &[TablePattern],
    exclude: &[TablePattern],
) -> anyhow::Result<(common::Manifest, Repository)> {
    // Everything that can be wrong with the input is found before anything is written.
    let client = common::postgres::connect(&args.pg, crate::TOOL).await?;
    let server = catalog::server_info(&client).await?;
    let names = if args.all_databases {
        catalog::list_databases(&client).await?
    } else {
        vec![args.pg.dbname()]
    };
    drop(client);
    let mut sessions = Vec::new();
    for name in &names {
        pgbin::plain_dbname(name)?;
        sessions.push(SnapshotSession::open(&args.pg, name).await?);
    }
    let mut selections = Vec::new();
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
    for session in &sessions {
        let selected: HashSet<(String, String)> = if args.no_table_dumps {
            HashSet::new()
        } else {
            session
                .tables
                .iter()
                .filter(|t| {
                    include.is_empty() || include.iter().any(|p| p.matches(&t.schema, &t.name))
                })
                .filter(|t| !exclude.iter().any(|p| p.matches(&t.schema, &t.name)))
                .map(|t| (t.schema.clone(), t.name.clone()))
                .collect()
        };
        selections.push(selected);
    }

    let repo = Repository::create(&args.repo.backup_dir)?;
    let _lock = repo.lock(Kind::Logical)?;
    let set = repo.create_set(Kind::Logical)?;
    let mut partial = PartialSet {
        dir: Some(set.dir().to_path_buf()),
    };
    tracing::info!("backup set {} in {}", set.id(), set.dir().display());
    let manifest = write_set(args, global, bin, &server, sessions, selections, set).await?;
    partial.dir = None;
    Ok((manifest, repo))
}

/// Removes a set directory that did not get its manifest, so a failed run leaves nothing
/// behind that could be mistaken for a backup.
struct PartialSet {
    dir: Option<PathBuf>,
}

impl Drop for PartialSet {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            tracing::warn!(
                "backup failed; removing the incomplete set {}",
                dir.display()
            );
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!("cannot remove {}: {e}", dir.display());
            }
        }
    }
}

async fn write_set(
    args: &BackupArgs,
    global: &GlobalArgs,
    bin: &PgBin,
    server: &catalog::ServerInfo,
    sessions: Vec<SnapshotSession>,
    selections: Vec<HashSet<(String, String)>>,
    mut set: SetWriter,
) -> anyhow::Result<common::Manifest> {
    let parallel = args
        .parallel_dumps
        .map(NonZeroUsize::get)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, NonZeroUsize::get));
    let mut globals = None;
    let mut globals_without_passwords = args.no_role_passwords;
    if !args.no_globals {
        let (path, no_passwords) =
            dump_globals(bin, &args.pg, set.dir(), args.no_role_passwords).await?;
        set.add_existing(&path, Compression::None)
            .with_context(|| format!("cannot record {path}"))?;
        globals = Some(path);
        globals_without_passwords = no_passwords;
    }

    let total_jobs: usize = selections.iter().map(|s| s.len() + 2).sum();
    let bar = common::progress::items(global, Some(total_jobs as u64), "dumping", "dumps");
    let mut taken = HashSet::new();
    let mut databases = Vec::new();
    for (session, selected) in sessions.into_iter().zip(selections) {
        let dir = details::file_name(&session.database, &mut taken);
        let plan = DumpPlan::new(args, &dir, &session, &selected);
        let (results, counts) = tokio::join!(
            run_jobs(bin, set.dir(), &session, plan.jobs.clone(), parallel, &bar),
            count_all(&session)
        );
        results?;
        let counts = counts?;
        let entry = plan.entry(&session, counts);
        session.close().await?;
        record_files(&mut set, &entry)?;
        databases.push(entry);
    }
    bar.finish_and_clear();
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
    set.commit(SetMeta {
        tool: crate::TOOL,
        tool_version: env!("CARGO_PKG_VERSION"),
        source,
        details: serde_json::to_value(&details)?,
    })
}

/// `pg_dumpall --globals-only` into `globals.sql`; falls back to `--no-role-passwords` when
/// the role may not read password hashes. Returns the file and whether passwords are left out.
async fn dump_globals(
    bin: &PgBin,
    pg: &PgArgs,
    set_dir: &Path,
    no_role_passwords: bool,
) -> anyhow::Result<(String, bool)> {
    let rel = "globals.sql";
    let run = |no_passwords: bool| {
        let mut cmd = bin.command("pg_dumpall", &pg.dbname());
        cmd.args(["--globals-only", "--file"])
            .arg(set_dir.join(rel));
        if no_passwords {
            cmd.arg("--no-role-passwords");
        }
        cmd
    };
    let first = pgbin::run(&mut run(no_role_passwords), "pg_dumpall --globals-only").await;
    match first {
        Ok(_) => Ok((rel.to_string(), no_role_passwords)),
        Err(e) if !no_role_passwords && format!("{e:#}").contains("permission denied") => {
            tracing::warn!("cannot read role passwords ({e:#}); dumping roles without them");
            pgbin::run(
                &mut run(true),
                "pg_dumpall --globals-only --no-role-passwords",
            )
            .await?;
            Ok((rel.to_string(), true))
        }
        Err(e) => Err(e),
    }
}

/// One pg_dump run of a set.
#[derive(Debug, Clone)]
struct DumpJob {
    what: String,
    /// Output relative to the set directory.
    output: String,
    args: Vec<String>,
    /// Table whose data the dump must list, checked with `pg_restore --list`.
    must_hold: Option<(String, String)>,
}

/// The dumps of one database and where they go.
struct DumpPlan {
    dir: String,
    format: DumpFormat,
    full: String,
    schema: String,
    table_files: Vec<Option<String>>,
    jobs: Vec<DumpJob>,
}

impl DumpPlan {
    fn new(
        args: &BackupArgs,
        dir: &str,
        session: &SnapshotSession,
        selected: &HashSet<(String, String)>,
    ) -> DumpPlan {
        let mut common_args = vec![format!("--snapshot={}", session.snapshot)];
        if let Some(level) = args.compress_level {
            common_args.push(format!("--compress={level}"));
        }
        let (format, full) = match args.jobs {
            Some(_) => (DumpFormat::Directory, format!("{dir}/full.dir")),
            None => (DumpFormat::Custom, format!("{dir}/full.dump")),
        };
        let mut full_args = common_args.clone();
        match args.jobs {
            Some(jobs) => full_args.extend(["--format=directory".into(), format!("--jobs={jobs}")]),
            None => full_args.push("--format=custom".into()),
        }
        let schema = format!("{dir}/schema.dump");
        let mut jobs = vec![
            DumpJob {
                what: format!("whole database {}", session.database),
                output: full.clone(),
                args: full_args,
                must_hold: None,
            },
            DumpJob {
                what: format!("schema of {}", session.database),
                output: schema.clone(),
                args: [
                    common_args.clone(),
                    vec!["--format=custom".into(), "--schema-only".into()],
                ]
                .concat(),
                must_hold: None,
            },
        ];
        let mut taken = HashSet::new();
        let mut table_files = Vec::new();
        for table in &session.tables {
            if !selected.contains(&(table.schema.clone(), table.name.clone())) {
                table_files.push(None);
                continue;
            }
            let name = details::file_name(&table.display_name(), &mut taken);
            let output = format!("{dir}/tables/{name}.dump");
            let mut table_args = common_args.clone();
            table_args.extend([
                "--format=custom".into(),
                "--strict-names".into(),
                format!(
                    "--table={}",
                    patterns::qualified(&table.schema, &table.name)
                ),
            ]);
            jobs.push(DumpJob {
                what: format!("table {} of {}", table.display_name(), session.database),
                output: output.clone(),
                args: table_args,
                must_hold: (table.kind == 'r').then(|| (table.schema.clone(), table.name.clone())),
            });
            table_files.push(Some(output));
        }
        // Biggest first, so the long dumps start early and the short ones fill the gaps.
        jobs[2..].sort_by_key(|j| {
            std::cmp::Reverse(
                session
                    .tables
                    .iter()
                    .find(|t| j.must_hold.as_ref() == Some(&(t.schema.clone(), t.name.clone())))
                    .map_or(0, |t| t.size_bytes),
            )
        });
        DumpPlan {
            dir: dir.to_string(),
            format,
            full,
            schema,
            table_files,
            jobs,
        }
    }

    fn entry(&self, session: &SnapshotSession, counts: Vec<u64>) -> DatabaseEntry {
        let tables = session
            .tables
            .iter()
            .zip(counts)
            .zip(&self.table_files)
            .map(
                |((t, rows), file): ((&TableInfo, u64), &Option<String>)| TableEntry {
                    schema: t.schema.clone(),
                    name: t.name.clone(),
                    rows,
                    size_bytes: t.size_bytes,
                    indexes: t.indexes,
                    constraints: t.constraints,
                    file: file.clone(),
                },
            )
            .collect();
        DatabaseEntry {
            name: session.database.clone(),
            dir: self.dir.clone(),
            encoding: session.encoding.clone(),
            snapshot: session.snapshot.clone(),
            snapshot_lsn: session.lsn.clone(),
            snapshot_time: session.time,
            format: self.format,
            full_dump: self.full.clone(),
            schema_dump: self.schema.clone(),
            tables,
        }
    }
}

/// Exact row counts of every table, in the session's snapshot, in table order.
async fn count_all(session: &SnapshotSession) -> anyhow::Result<Vec<u64>> {
    let mut counts = Vec::with_capacity(session.tables.len());
    for table in &session.tables {
        counts.push(session.count_rows(table).await?);
    }
    Ok(counts)
}

/// Runs the dumps, at most `parallel` at once, each checked with `pg_restore --list`. The
/// first failure aborts the rest (their pg_dump processes are killed).
async fn run_jobs(
    bin: &PgBin,
    set_dir: &Path,
    session: &SnapshotSession,
    jobs: Vec<DumpJob>,
    parallel: usize,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    let limit = Arc::new(Semaphore::new(parallel.max(1)));
    let mut running = JoinSet::new();
    for job in jobs {
        let limit = Arc::clone(&limit);
        let bin = bin.clone();
        let set_dir = set_dir.to_path_buf();
        let database = session.database.clone();
        running.spawn(async move {
            let _slot = limit.acquire_owned().await.context("dump queue closed")?;
            dump_one(&bin, &set_dir, &database, &job).await
        });
    }
    while let Some(result) = running.join_next().await {
        let what = result.context("a dump task failed")??;
        bar.inc(1);
        tracing::debug!("dumped {what}");
    }
    Ok(())
}

async fn dump_one(
    bin: &PgBin,
    set_dir: &Path,
    database: &str,
    job: &DumpJob,
) -> anyhow::Result<String> {
    let output = set_dir.join(&job.output);
    if let Some(parent) = output.parent() {
        common::durable::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let mut cmd = bin.command("pg_dump", database);
    cmd.args(&job.args).arg("--file").arg(&output);
    pgbin::run(&mut cmd, &format!("pg_dump of {}", job.what)).await?;
    let toc = toc::list(bin, &output)
        .await
        .with_context(|| format!("the dump of {} is unreadable", job.what))?;
    if let Some((schema, table)) = &job.must_hold {
        if !toc.has_table_data(schema, table) {
            anyhow::bail!("the dump of {} holds no data entry for it", job.what);
        }
    }
    Ok(job.what.clone())
}

/// Adds a database's files to the set: the dumps written by pg_dump, hashed in place.
fn record_files(set: &mut SetWriter, entry: &DatabaseEntry) -> anyhow::Result<()> {
    let mut files = Vec::new();
    match entry.format {
        DumpFormat::Custom => files.push(entry.full_dump.clone()),
        DumpFormat::Directory => {
            let dir = set.dir().join(&entry.full_dump);
            let mut names: Vec<String> = std::fs::read_dir(&dir)
                .with_context(|| format!("cannot list {}", dir.display()))?
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<Result<_, _>>()
                .with_context(|| format!("cannot list {}", dir.display()))?;
            names.sort();
            files.extend(
                names
                    .into_iter()
                    .map(|n| format!("{}/{n}", entry.full_dump)),
            );
        }
    }
    files.push(entry.schema_dump.clone());
    files.extend(entry.tables.iter().filter_map(|t| t.file.clone()));
    for file in files {
        set.add_existing(&file, Compression::None)
            .with_context(|| format!("cannot record {file}"))?;
    }
    for dir in [
        set.dir().join(&entry.dir).join("tables"),
        set.dir().join(&entry.dir),
    ] {
        if dir.is_dir() {
            common::durable::fsync_dir(&dir)?;
        }
    }
    Ok(())
}

//! The pg_dump runs of a set: the globals, and per database the whole-database dump, the
//! schema dump and one dump per table, all with the database's exported snapshot, several at
//! once, each checked with `pg_restore --list` before it is recorded.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use common::cli::PgArgs;
use common::repo::SetWriter;
use common::stream::Compression;

use crate::backup::BackupArgs;
use crate::catalog::TableInfo;
use crate::details::{self, DatabaseEntry, DumpFormat, TableEntry};
use crate::patterns;
use crate::pgbin::{self, PgBin};
use crate::snapshot::SnapshotSession;
use crate::toc;

/// `pg_dumpall --globals-only` into `globals.sql`; falls back to `--no-role-passwords` when
/// the role may not read password hashes. Returns the file and whether passwords are left out.
pub async fn dump_globals(
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
pub struct DumpJob {
    what: String,
    /// Output relative to the set directory.
    output: String,
    args: Vec<String>,
    /// Table whose data the dump must list, checked with `pg_restore --list`.
    must_hold: Option<(String, String)>,
    /// Size of what it dumps, to start the big ones first.
    size_bytes: u64,
}

/// The dumps of one database and where they go.
pub struct DumpPlan {
    dir: String,
    format: DumpFormat,
    full: String,
    schema: String,
    table_files: Vec<Option<String>>,
    pub jobs: Vec<DumpJob>,
}

impl DumpPlan {
    pub fn new(
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
                size_bytes: u64::MAX,
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
                size_bytes: u64::MAX,
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
                size_bytes: table.size_bytes,
            });
            table_files.push(Some(output));
        }
        // Biggest first, so the long dumps start early and the short ones fill the gaps.
        jobs.sort_by_key(|j| std::cmp::Reverse(j.size_bytes));
        DumpPlan {
            dir: dir.to_string(),
            format,
            full,
            schema,
            table_files,
            jobs,
        }
    }

    /// The manifest entry, once the dumps ran (`timings`: seconds per output) and the rows
    /// were counted.
    pub fn entry(
        &self,
        session: &SnapshotSession,
        counts: Vec<u64>,
        timings: &[(String, f64)],
    ) -> DatabaseEntry {
        let full_dump_secs = timings
            .iter()
            .find(|(output, _)| *output == self.full)
            .map(|(_, secs)| *secs);
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
            full_dump_secs,
            schema_dump: self.schema.clone(),
            tables,
        }
    }
}

/// Exact row counts of every table, in the session's snapshot, in table order.
pub async fn count_all(session: &SnapshotSession) -> anyhow::Result<Vec<u64>> {
    let mut counts = Vec::with_capacity(session.tables.len());
    for table in &session.tables {
        counts.push(session.count_rows(table).await?);
    }
    Ok(counts)
}

/// Runs the dumps, at most `parallel` at once, each checked with `pg_restore --list`. The
/// first failure aborts the rest (their pg_dump processes are killed).
pub async fn run_jobs(
    bin: &PgBin,
    set_dir: &Path,
    session: &SnapshotSession,
    jobs: Vec<DumpJob>,
    parallel: usize,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<Vec<(String, f64)>> {
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
    let mut timings = Vec::new();
    while let Some(result) = running.join_next().await {
        let (output, secs) = result.context("a dump task failed")??;
        bar.inc(1);
        timings.push((output, secs));
    }
    Ok(timings)
}

async fn dump_one(
    bin: &PgBin,
    set_dir: &Path,
    database: &str,
    job: &DumpJob,
) -> anyhow::Result<(String, f64)> {
    let started = std::time::Instant::now();
    let output = set_dir.join(&job.output);
    if let Some(parent) = output.parent() {
        common::durable::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let mut cmd = bin.command("pg_dump", database);
    cmd.args(&job.args).arg("--file").arg(&output);
    pgbin::run(&mut cmd, &format!("pg_dump of {}", job.what)).await?;
    let secs = started.elapsed().as_secs_f64();
    tracing::debug!("dumped {} in {secs:.2}s", job.what);
    let toc = toc::list(bin, &output)
        .await
        .with_context(|| format!("the dump of {} is unreadable", job.what))?;
    if let Some((schema, table)) = &job.must_hold {
        if !toc.has_table_data(schema, table) {
            anyhow::bail!("the dump of {} holds no data entry for it", job.what);
        }
    }
    Ok((job.output.clone(), secs))
}

/// Adds a database's files to the set: the dumps written by pg_dump, hashed in place.
pub fn record_files(set: &mut SetWriter, entry: &DatabaseEntry) -> anyhow::Result<()> {
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

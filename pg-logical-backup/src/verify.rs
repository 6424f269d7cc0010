//! Verifying a set at three levels: `quick` checks checksums and that pg_restore
//! can list every dump; `standard` also counts the rows of every table in the dumps (the
//! per-table dumps of sets that have them, else the whole-database dump) and restores the
//! whole-database dump into a temporary database to compare tables and row counts with the
//! manifest; `deep` also checks foreign keys, indexes (amcheck where available) and
//! constraints there (the checks of `integrity`). The temporary database is always dropped.
//! An encrypted set needs its identity (`BACKUP_ENCRYPTION_IDENTITY_FILE`): its dumps are
//! decrypted as pg_restore reads them.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use common::cli::{GlobalArgs, PgArgs, RepoArgs};
use common::output::OutputFormat;
use common::{Manifest, Status};

use crate::catalog::{self, TableInfo};
use crate::details::{ChosenSet, DatabaseEntry, DumpFormat, TableEntry};
use crate::integrity;
use crate::pgbin::{PgBin, PgBinArgs};
use crate::source::DumpSource;
use crate::toc;

/// How thorough a verification is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Checksums and `pg_restore --list` of every dump; needs no server.
    Quick,
    /// Also row counts of the table dumps, and a test restore compared with the manifest.
    Standard,
    /// Also foreign keys, indexes and constraints of the test restore.
    Deep,
}

/// Settings of a verification.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub pg: PgArgs,
    #[command(flatten)]
    pub repo: RepoArgs,
    #[command(flatten)]
    pub bin: PgBinArgs,
    /// Set to verify [default: the newest complete set].
    #[arg(long, value_name = "ID")]
    pub backup_id: Option<String>,
    /// How thorough: quick, standard or deep. (A directory-format dump, taken with
    /// `backup --jobs`, in an s3:// repository is downloaded into a temporary directory under
    /// TMPDIR to be read.)
    #[arg(long, value_enum, default_value_t = Level::Standard)]
    pub level: Level,
}

/// The result of one check.
#[derive(Debug, Serialize)]
pub struct Check {
    #[serde(rename = "type")]
    kind: &'static str,
    pub check: &'static str,
    pub database: Option<String>,
    pub passed: bool,
    pub detail: String,
    pub problems: Vec<String>,
}

impl Check {
    pub(crate) fn new(
        check: &'static str,
        database: Option<&str>,
        detail: String,
        problems: Vec<String>,
    ) -> Check {
        Check {
            kind: "check",
            check,
            database: database.map(str::to_string),
            passed: problems.is_empty(),
            detail,
            problems,
        }
    }
}

#[derive(Debug, Serialize)]
struct Summary {
    id: String,
    level: Level,
    passed: bool,
    checks: usize,
    failed: Vec<String>,
    duration_secs: f64,
}

/// Verifies a set; exit 1 when a check fails.
pub fn run(args: VerifyArgs, global: &GlobalArgs) -> anyhow::Result<Status> {
    let started = Instant::now();
    let bin = PgBin::resolve(&args.bin, &args.pg)?;
    let chosen = ChosenSet::find(&args.repo.backup_dir, args.backup_id.as_deref())?;
    let manifest = &chosen.manifest;
    let runtime = common::postgres::runtime()?;
    let mut checks = Vec::new();
    runtime.block_on(async {
        let problems = chosen.repo.verify_files(&chosen.set.prefix, manifest);
        let detail = format!("{} files", manifest.files.len());
        emit(
            global,
            Check::new("checksums", None, detail, problems),
            &mut checks,
        )?;
        for db in &chosen.details.databases {
            let full = match full_dump(&chosen, db).await {
                Ok(full) => full,
                Err(e) => {
                    let problem = format!("{e:#}");
                    let detail = format!("{} could not be read", db.full_dump);
                    emit(
                        global,
                        Check::new("dump_lists", Some(&db.name), detail, vec![problem]),
                        &mut checks,
                    )?;
                    continue;
                }
            };
            for check in quick(&bin, &chosen, &full, db).await {
                emit(global, check, &mut checks)?;
            }
            if args.level >= Level::Standard {
                let counted = if db.tables.iter().any(|t| t.file.is_some()) {
                    table_dumps(&bin, &chosen, db).await
                } else {
                    table_data(&bin, &full, db).await
                };
                emit(global, counted, &mut checks)?;
                for check in test_restore(&bin, &args, &full, db).await? {
                    emit(global, check, &mut checks)?;
                }
            }
        }
        anyhow::Ok(())
    })?;
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| match &c.database {
            Some(db) => format!("{} ({db})", c.check),
            None => c.check.to_string(),
        })
        .collect();
    let summary = Summary {
        id: manifest.id.clone(),
        level: args.level,
        passed: failed.is_empty(),
        checks: checks.len(),
        failed,
        duration_secs: started.elapsed().as_secs_f64(),
    };
    print_summary(global, &summary, manifest)?;
    Ok(Status::from_passed(summary.passed))
}

fn print_summary(
    global: &GlobalArgs,
    summary: &Summary,
    manifest: &Manifest,
) -> anyhow::Result<()> {
    common::output::summary(global.output, summary, || {
        if summary.passed {
            format!(
                "set {} verified ({} level): all {} checks passed",
                manifest.id,
                format!("{:?}", summary.level).to_lowercase(),
                summary.checks
            )
        } else {
            format!(
                "set {} FAILED verification: {}",
                manifest.id,
                summary.failed.join(", ")
            )
        }
    })
}

fn emit(global: &GlobalArgs, check: Check, all: &mut Vec<Check>) -> anyhow::Result<()> {
    match global.output {
        OutputFormat::Json => common::output::json_line(&check)?,
        OutputFormat::Text => {
            let scope = check
                .database
                .as_ref()
                .map(|d| format!(" [{d}]"))
                .unwrap_or_default();
            let mut line = format!(
                "{} {}{scope}: {}",
                if check.passed { "ok  " } else { "FAIL" },
                check.check,
                check.detail
            );
            for problem in &check.problems {
                line.push_str(&format!("\n       {problem}"));
            }
            common::output::text_line(&line)?;
        }
    }
    if !check.passed {
        tracing::error!(
            "check {} failed: {}",
            check.check,
            check.problems.join("; ")
        );
    }
    all.push(check);
    Ok(())
}

/// The whole-database dump as pg_restore reads it. A directory-format dump on object storage,
/// or encrypted, is downloaded or decrypted first (and checked against the manifest on the
/// way).
async fn full_dump(chosen: &ChosenSet, db: &DatabaseEntry) -> anyhow::Result<DumpSource> {
    match db.format {
        DumpFormat::Directory
            if chosen.repo.store().local_path("").is_none() || chosen.is_encrypted() =>
        {
            chosen.checked_copy(&db.full_dump).await
        }
        _ => Ok(chosen.source(&db.full_dump)),
    }
}

/// `dump_lists`: pg_restore can read every dump, and each holds the data it should.
async fn quick(
    bin: &PgBin,
    chosen: &ChosenSet,
    full: &DumpSource,
    db: &DatabaseEntry,
) -> Vec<Check> {
    let mut problems = Vec::new();
    let mut listed = 0;
    match toc::list(bin, full).await {
        Ok(list) => {
            listed += 1;
            for t in db.tables.iter().filter(|t| t.rows > 0) {
                if !list.has_table_data(&t.schema, &t.name) {
                    problems.push(format!(
                        "{}: no data for {}",
                        db.full_dump,
                        t.display_name()
                    ));
                }
            }
        }
        Err(e) => problems.push(format!("{e:#}")),
    }
    if let Some(schema) = &db.schema_dump {
        match toc::list(bin, &chosen.source(schema)).await {
            Ok(_) => listed += 1,
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    for t in &db.tables {
        let Some(file) = &t.file else { continue };
        match toc::list(bin, &chosen.source(file)).await {
            Ok(list) => {
                listed += 1;
                if t.rows > 0 && !list.has_table_data(&t.schema, &t.name) {
                    problems.push(format!("{file}: no data for {}", t.display_name()));
                }
            }
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    vec![Check::new(
        "dump_lists",
        Some(&db.name),
        format!("{listed} dumps readable by pg_restore"),
        problems,
    )]
}

/// `table_dumps`: the rows in each table's own dump equal the manifest's count.
async fn table_dumps(bin: &PgBin, chosen: &ChosenSet, db: &DatabaseEntry) -> Check {
    let mut problems = Vec::new();
    let mut checked = 0;
    for t in &db.tables {
        let Some(file) = &t.file else { continue };
        match toc::count_data_rows(bin, &chosen.source(file)).await {
            Ok(counts) => {
                checked += 1;
                problems.extend(row_count_problem(&counts, t, file));
            }
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    Check::new(
        "table_dumps",
        Some(&db.name),
        format!("{checked} table dumps counted"),
        problems,
    )
}

/// `table_dumps` of a set without per-table dumps: the rows of every table in the
/// whole-database dump (one pass over it) equal the manifest's counts.
async fn table_data(bin: &PgBin, full: &DumpSource, db: &DatabaseEntry) -> Check {
    let mut problems = Vec::new();
    match toc::count_data_rows(bin, full).await {
        Ok(counts) => problems.extend(
            db.tables
                .iter()
                .filter_map(|t| row_count_problem(&counts, t, &db.full_dump)),
        ),
        Err(e) => problems.push(format!("{e:#}")),
    }
    Check::new(
        "table_dumps",
        Some(&db.name),
        format!(
            "rows of {} tables counted in the whole-database dump",
            db.tables.len()
        ),
        problems,
    )
}

/// What is wrong, if anything, with the rows `counts` (per COPY block of dump `file`) holds
/// for table `t`: the manifest says how many there should be.
fn row_count_problem(counts: &BTreeMap<String, u64>, t: &TableEntry, file: &str) -> Option<String> {
    let found = counts
        .get(&toc::copy_name(&t.schema, &t.name))
        .copied()
        .unwrap_or(0);
    (found != t.rows).then(|| {
        format!(
            "{}: {file} holds {found} rows, the manifest says {}",
            t.display_name(),
            t.rows
        )
    })
}

/// Restores the whole-database dump into a temporary database, runs the comparisons, and
/// drops the database again whatever happened.
async fn test_restore(
    bin: &PgBin,
    args: &VerifyArgs,
    full: &DumpSource,
    db: &DatabaseEntry,
) -> anyhow::Result<Vec<Check>> {
    let admin = common::postgres::connect(&args.pg, crate::TOOL)
        .await
        .context("the standard and deep levels restore into a temporary database")?;
    let temp = format!("pglb_verify_{}_{}", std::process::id(), unique());
    catalog::create_database(&admin, &temp, Some(&db.encoding)).await?;
    // Interrupted or not, the temporary database goes away (pg_restore is killed with the
    // dropped future, and DROP ... WITH (FORCE) ends its session).
    let result = common::interrupt::or_interrupted(
        restore_and_compare(bin, args, full, db, &temp),
        &format!("the temporary database {temp} was dropped"),
    )
    .await;
    let dropped = catalog::drop_database(&admin, &temp).await;
    let checks = result?;
    dropped?;
    Ok(checks)
}

fn unique() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

async fn restore_and_compare(
    bin: &PgBin,
    args: &VerifyArgs,
    full: &DumpSource,
    db: &DatabaseEntry,
    temp: &str,
) -> anyhow::Result<Vec<Check>> {
    let name = Some(db.name.as_str());
    if let Err(e) = restore_into(bin, full, db, temp).await {
        return Ok(vec![Check::new(
            "restore",
            name,
            "into a temporary database".into(),
            vec![format!("{e:#}")],
        )]);
    }
    let mut checks = vec![Check::new(
        "restore",
        name,
        format!("{} restored into temporary database {temp}", db.full_dump),
        Vec::new(),
    )];
    let client =
        common::postgres::connect(&catalog::for_database(&args.pg, temp), crate::TOOL).await?;
    let present = catalog::list_tables(&client).await?;
    checks.push(compare_tables(db, &present));
    checks.push(compare_row_counts(&client, db, &present).await?);
    if args.level >= crate::verify::Level::Deep {
        checks.push(integrity::foreign_keys(&client, name).await?);
        checks.push(integrity::indexes(&client, db, &present, name).await?);
        checks.push(integrity::constraints(&client, db, &present, name).await?);
    }
    Ok(checks)
}

/// pg_restore of the whole-database dump into database `temp`.
async fn restore_into(
    bin: &PgBin,
    full: &DumpSource,
    db: &DatabaseEntry,
    temp: &str,
) -> anyhow::Result<()> {
    let mut cmd = bin.command("pg_restore", temp);
    cmd.arg(format!("--dbname={temp}"))
        .args(["--exit-on-error", "--no-owner", "--no-privileges"]);
    match db.format {
        DumpFormat::Directory => cmd.arg("--jobs=2"),
        DumpFormat::Custom => cmd.arg("--single-transaction"),
    };
    full.pg_restore_input(&mut cmd);
    full.run(&mut cmd, "test restore").await?;
    Ok(())
}

fn is_present(present: &[TableInfo], t: &TableEntry) -> bool {
    present
        .iter()
        .any(|p| p.schema == t.schema && p.name == t.name)
}

/// `tables`: the restored tables are the manifest's.
fn compare_tables(db: &DatabaseEntry, present: &[TableInfo]) -> Check {
    let mut problems = Vec::new();
    for t in &db.tables {
        if !is_present(present, t) {
            problems.push(format!(
                "{}: in the manifest, missing after restore",
                t.display_name()
            ));
        }
    }
    for p in present {
        if !db
            .tables
            .iter()
            .any(|t| t.schema == p.schema && t.name == p.name)
        {
            problems.push(format!(
                "{}: restored, not in the manifest",
                p.display_name()
            ));
        }
    }
    Check::new(
        "tables",
        Some(&db.name),
        format!("{} tables", db.tables.len()),
        problems,
    )
}

/// `row_counts`: each restored table holds the manifest's count of rows.
async fn compare_row_counts(
    client: &tokio_postgres::Client,
    db: &DatabaseEntry,
    present: &[TableInfo],
) -> anyhow::Result<Check> {
    let mut problems = Vec::new();
    let mut rows = 0;
    for t in db.tables.iter().filter(|t| is_present(present, t)) {
        let count = catalog::count_rows(client, &t.schema, &t.name).await?;
        rows += count;
        if count != t.rows {
            problems.push(format!(
                "{}: {count} rows restored, the manifest says {}",
                t.display_name(),
                t.rows
            ));
        }
    }
    Ok(Check::new(
        "row_counts",
        Some(&db.name),
        format!("{rows} rows"),
        problems,
    ))
}

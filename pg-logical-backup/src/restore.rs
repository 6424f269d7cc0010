//! Restoring a set: the whole database (pg_restore) or selected tables, into an existing or
//! new database; then ANALYZE and a row-count comparison with the manifest (for tables, in
//! the restore's own transaction).
//!
//! Tables come from the whole-database dump: `pg_restore --use-list` takes their entries
//! (definition, data, indexes, constraints, owned sequences...) out of it, replayed through
//! one psql transaction, so a failed table restore changes nothing. The dump must be a real
//! file for that: in a local repository it is read in place (pg_restore skips the other
//! tables' data); from object storage, or encrypted, it is copied (decrypted) into a
//! temporary directory once, checked against the manifest on the way, rather than read
//! once to check it and once more to restore. Sets with per-table dumps (`--table-dumps`,
//! and every set before details version 2) restore from those.
//! The guards around the target database live in [`crate::target`].

use std::future::Future;
use std::num::NonZeroUsize;
use std::time::Instant;

use serde::Serialize;

use common::cli::{GlobalArgs, PgArgs, RepoArgs};
use common::storage::Location;
use common::Status;

use crate::catalog;
use anyhow::Context;

use crate::details::{ChosenSet, DatabaseEntry, DumpFormat, TableEntry};
use crate::integrity;
use crate::load::{self, Closing, Inserted, TableDumps};
use crate::patterns;
use crate::pgbin::{self, PgBin, PgBinArgs};
use crate::restored::check_restored;
use crate::source::{DumpSource, Scratch};
use crate::target::{self, TargetState};
use crate::toc::{self, TableItems};

/// Settings of a restore.
#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub pg: PgArgs,
    #[command(flatten)]
    pub repo: RepoArgs,
    #[command(flatten)]
    pub bin: PgBinArgs,
    /// Set to restore [default: the newest complete set].
    #[arg(long, value_name = "ID")]
    pub backup_id: Option<String>,
    /// Database to restore into; created (from template0) when it does not exist.
    #[arg(long, value_name = "NAME")]
    pub target_db: String,
    /// Database of the set to restore [default: the set's only database].
    #[arg(long, value_name = "NAME")]
    pub source_db: Option<String>,
    /// Restore only the tables matching this pattern ([schema.]table, * and ? wildcards;
    /// repeatable), with their indexes, constraints and owned sequences, selected from the
    /// whole-database dump (or from their own dumps in a set taken with --table-dumps).
    /// From an s3:// repository or an encrypted set the whole-database dump is first
    /// copied into a temporary directory under TMPDIR (room for it needed there).
    #[arg(long, short = 't', value_name = "PATTERN")]
    pub table: Vec<String>,
    /// Restore definitions only, no rows.
    #[arg(long)]
    pub schema_only: bool,
    /// Replace only the rows of existing tables (with --table), keeping the tables, their
    /// views, grants and the foreign keys pointing at them; one transaction that rolls back if
    /// any reference would break. Needs a superuser (triggers are off while loading).
    #[arg(long, requires = "table", conflicts_with_all = ["schema_only", "clean"])]
    pub data_only: bool,
    /// Replace objects that already exist in the target (a safety dump of them is taken
    /// first). Without it, a restore over existing tables is refused.
    #[arg(long)]
    pub clean: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// End other sessions on the target database before restoring.
    #[arg(long)]
    pub terminate_connections: bool,
    /// Parallel pg_restore workers for a whole-database restore. With more than one the
    /// restore is no longer a single transaction, and with an s3:// repository the dump is
    /// first downloaded into a temporary directory under TMPDIR (parallel workers need a
    /// seekable file; so does a directory-format dump, taken with `backup --jobs`, whatever
    /// this setting).
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<NonZeroUsize>,
    /// Do not restore object ownership (for a server without the original roles).
    #[arg(long)]
    pub no_owner: bool,
    /// Skip the safety dump before replacing existing objects.
    #[arg(long)]
    pub no_safety_dump: bool,
    /// Where safety dumps go: a directory or s3://BUCKET[/PREFIX] [default:
    /// BACKUP_DIR/logical-safety, in the repository itself, local or on S3]. They are
    /// streamed there as pg_dump writes them.
    #[arg(long, value_name = "DIR|URL")]
    pub safety_dir: Option<Location>,
    /// Skip ANALYZE after the restore.
    #[arg(long)]
    pub no_analyze: bool,
}

/// The summary of a restore.
#[derive(Debug, Serialize)]
struct Summary {
    id: String,
    source_db: String,
    target_db: String,
    created: bool,
    schema_only: bool,
    tables: usize,
    rows: u64,
    mismatched: Vec<String>,
    /// Where the safety dump went: a path, or an s3:// URL.
    safety_dump: Option<String>,
    duration_secs: f64,
}

/// Restores.
pub fn run(args: RestoreArgs, global: &GlobalArgs) -> anyhow::Result<Status> {
    let runtime = common::postgres::runtime()?;
    // Interrupted, pg_restore or psql is stopped with the dropped future. A table restore
    // runs in one transaction and leaves nothing; a whole-database restore may be partial.
    runtime.block_on(common::interrupt::or_interrupted(
        restore(args, global),
        "the restore was stopped; a whole-database restore may be partial: run it again with --clean",
    ))
}

/// What a restore takes from the set and where it goes, decided before anything is touched.
pub struct Selection<'a> {
    pub chosen: &'a ChosenSet,
    pub db: &'a DatabaseEntry,
    pub tables: Vec<&'a TableEntry>,
    /// Files (relative to the set) the restore reads.
    pub files: Vec<String>,
    /// Whether the selected tables are taken out of the whole-database dump (some have no
    /// dump of their own).
    pub from_archive: bool,
    pub target: String,
    /// `database 'x'` or `N table(s) of 'x'`, for messages.
    pub what: String,
}

async fn restore(args: RestoreArgs, global: &GlobalArgs) -> anyhow::Result<Status> {
    let started = Instant::now();
    let bin = PgBin::resolve(&args.bin, &args.pg)?;
    let chosen = ChosenSet::find(&args.repo.backup_dir, args.backup_id.as_deref())?;
    let selection = Selection::new(&chosen, &args)?;
    let (whole_dump, check_later) = check_files(&selection, &args).await?;
    let admin = common::postgres::connect(&args.pg, crate::TOOL).await?;
    let state = target::inspect(&admin, &args, &selection).await?;
    target::confirm(&args, &selection, &state)?;
    let safety_dump = target::prepare(&bin, &admin, &args, &selection, &state).await?;
    let checked = async {
        match check_later {
            Some(files) => chosen.check(&files).await,
            None => Ok(()),
        }
    };
    let inserted = load_dumps(&bin, &admin, &args, &selection, &state, whole_dump, checked).await?;
    let (mismatched, rows) = check_restored(&args, &selection, &state, inserted, global).await?;
    let summary = Summary {
        id: chosen.manifest.id.clone(),
        source_db: selection.db.name.clone(),
        target_db: selection.target.clone(),
        created: !state.exists,
        schema_only: args.schema_only,
        tables: selection.tables.len(),
        rows,
        mismatched,
        safety_dump,
        duration_secs: started.elapsed().as_secs_f64(),
    };
    print_summary(global, &summary, &selection.what)?;
    Ok(Status::from_passed(summary.mismatched.is_empty()))
}

impl<'a> Selection<'a> {
    fn new(chosen: &'a ChosenSet, args: &RestoreArgs) -> anyhow::Result<Selection<'a>> {
        let db = chosen
            .details
            .database(args.source_db.as_deref(), &chosen.manifest.id)?;
        let target = pgbin::plain_dbname(&args.target_db)?.to_string();
        let tables = select(db, &args.table)?;
        let from_archive = !args.table.is_empty() && tables.iter().any(|t| t.file.is_none());
        let files = files_needed(db, &tables, args, from_archive);
        let what = if args.table.is_empty() {
            format!("database '{}'", db.name)
        } else {
            format!("{} table(s) of '{}'", tables.len(), db.name)
        };
        Ok(Selection {
            chosen,
            db,
            tables,
            files,
            from_archive,
            target,
            what,
        })
    }
}

/// Checks the files to restore against the manifest: a whole-database restore before
/// anything is touched; a table restore, which runs in one transaction, while it runs (it
/// commits only once they pass), so a table comes out of a large local dump without reading
/// all of it first. A copy (from object storage, or decrypted) is checked as it is made.
/// Returns the whole-database dump when pg_restore needs it as a real file, and the files
/// still to check.
async fn check_files(
    selection: &Selection<'_>,
    args: &RestoreArgs,
) -> anyhow::Result<(Option<DumpSource>, Option<Vec<String>>)> {
    let chosen = selection.chosen;
    let later = Some(selection.files.clone());
    if !args.table.is_empty() {
        if !selection.from_archive {
            return Ok((None, later));
        }
        return Ok(match chosen.in_place(&selection.files[0]) {
            Some(in_place) => (Some(in_place), later),
            None => (Some(chosen.checked_copy(&selection.files[0]).await?), None),
        });
    }
    if needs_real_file(selection.db, args) {
        return Ok((Some(chosen.checked_copy(&selection.files[0]).await?), None));
    }
    chosen.check(&selection.files).await?;
    Ok((None, None))
}

/// Loads the dumps: the whole database, the rows of existing tables (--data-only), or the
/// selected tables (and then the rows inserted into each). A database this run created is
/// dropped again when that fails.
async fn load_dumps(
    bin: &PgBin,
    admin: &tokio_postgres::Client,
    args: &RestoreArgs,
    selection: &Selection<'_>,
    state: &TargetState,
    whole_dump: Option<DumpSource>,
    before_commit: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<Option<Inserted>> {
    let (chosen, target) = (selection.chosen, &selection.target);
    let result = if args.table.is_empty() {
        let dump = whole_dump.unwrap_or_else(|| chosen.source(&selection.files[0]));
        load::restore_database(bin, &dump, target, args, state.exists)
            .await
            .map(|()| None)
    } else {
        load_tables(bin, args, selection, state, whole_dump, before_commit)
            .await
            .map(Some)
    };
    if let Err(e) = result {
        if !state.exists {
            // We made it; an empty or half-filled database is no use to anyone.
            if let Err(drop_error) = catalog::drop_database(admin, target).await {
                tracing::warn!("{drop_error:#}");
            }
        }
        return Err(e);
    }
    result
}

/// The selected tables, from their own dumps or out of the whole-database dump.
async fn load_tables(
    bin: &PgBin,
    args: &RestoreArgs,
    selection: &Selection<'_>,
    state: &TargetState,
    whole_dump: Option<DumpSource>,
    before_commit: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<Inserted> {
    let (chosen, target) = (selection.chosen, &selection.target);
    // Kept until the restore ends: the list file lives in it.
    let mut _scratch = None;
    let dumps = match whole_dump.filter(|_| selection.from_archive) {
        Some(archive) => {
            let scratch = Scratch::new("restore-list")?;
            let list = scratch.path().join("tables.list");
            write_use_list(bin, &archive, selection, &list).await?;
            _scratch = Some(scratch);
            TableDumps::Archive {
                dump: archive,
                list,
            }
        }
        None => TableDumps::Own(
            selection
                .tables
                .iter()
                .filter_map(|t| t.file.as_ref().map(|f| chosen.source(f)))
                .collect(),
        ),
    };
    let names: Vec<(String, String)> = selection
        .tables
        .iter()
        .map(|t| (t.schema.clone(), t.name.clone()))
        .collect();
    let closing = Closing {
        tables: &names,
        analyze: !args.no_analyze,
    };
    if args.data_only {
        return replace_rows(bin, &dumps, selection, &state.pg, &closing, before_commit).await;
    }
    let mut schemas: Vec<&str> = selection.tables.iter().map(|t| t.schema.as_str()).collect();
    schemas.sort_unstable();
    schemas.dedup();
    load::restore_tables(
        bin,
        &dumps,
        &schemas,
        target,
        args,
        state.exists,
        &closing,
        before_commit,
    )
    .await
}

/// Writes the `pg_restore --use-list` file taking the selected tables out of `archive`.
async fn write_use_list(
    bin: &PgBin,
    archive: &DumpSource,
    selection: &Selection<'_>,
    list: &std::path::Path,
) -> anyhow::Result<()> {
    let toc = toc::list(bin, archive).await?;
    let items: Vec<TableItems> = selection
        .tables
        .iter()
        .map(|t| TableItems {
            schema: &t.schema,
            name: &t.name,
            index_names: &t.index_names,
            sequences: &t.sequences,
        })
        .collect();
    let all: Vec<(&str, &str)> = selection
        .db
        .tables
        .iter()
        .map(|t| (t.schema.as_str(), t.name.as_str()))
        .collect();
    let text = toc.use_list(&items, &all);
    for t in &selection.tables {
        let data = format!(" TABLE DATA {} {} ", t.schema, t.name);
        if t.rows > 0 && !text.contains(&data) {
            anyhow::bail!(
                "{} holds no data for {}: nothing restored",
                archive.shown(),
                t.display_name()
            );
        }
    }
    std::fs::write(list, text).with_context(|| format!("cannot write {}", list.display()))
}

fn print_summary(global: &GlobalArgs, summary: &Summary, what: &str) -> anyhow::Result<()> {
    common::output::summary(global.output, summary, || {
        format!(
            "restored {what} from set {} into '{}': {} tables, {} rows{}{}",
            summary.id,
            summary.target_db,
            summary.tables,
            summary.rows,
            if summary.mismatched.is_empty() {
                String::new()
            } else {
                format!(", MISMATCH in {}", summary.mismatched.join(", "))
            },
            summary
                .safety_dump
                .as_ref()
                .map(|p| format!(" (safety dump: {p})"))
                .unwrap_or_default()
        )
    })
}

/// `--data-only`: the tables' rows from their dumps, checked against every foreign key that
/// involves them before the transaction commits.
async fn replace_rows(
    bin: &PgBin,
    dumps: &TableDumps,
    selection: &Selection<'_>,
    target_pg: &PgArgs,
    closing: &Closing<'_>,
    before_commit: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<Inserted> {
    let client = common::postgres::connect(target_pg, crate::TOOL).await?;
    let checks: Vec<String> = integrity::list_foreign_keys(&client)
        .await?
        .iter()
        .filter(|k| k.touches(closing.tables))
        .map(|k| k.check_statement())
        .collect();
    drop(client);
    load::replace_rows(
        bin,
        dumps,
        &checks,
        &selection.target,
        closing,
        before_commit,
    )
    .await
}

/// The tables to restore: those matching the patterns (each must match one), or all of the
/// database.
fn select<'a>(db: &'a DatabaseEntry, patterns: &[String]) -> anyhow::Result<Vec<&'a TableEntry>> {
    if patterns.is_empty() {
        return Ok(db.tables.iter().collect());
    }
    let parsed = patterns::parse_all(patterns)?;
    for pattern in &parsed {
        if !db
            .tables
            .iter()
            .any(|t| pattern.matches(&t.schema, &t.name))
        {
            anyhow::bail!(
                "--table '{pattern}' matches no table of database '{}' in the set (tables: {})",
                db.name,
                db.tables
                    .iter()
                    .map(TableEntry::display_name)
                    .take(20)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    Ok(db
        .tables
        .iter()
        .filter(|t| parsed.iter().any(|p| p.matches(&t.schema, &t.name)))
        .collect())
}

/// Files (relative to the set) the restore reads.
fn files_needed(
    db: &DatabaseEntry,
    tables: &[&TableEntry],
    args: &RestoreArgs,
    from_archive: bool,
) -> Vec<String> {
    if !args.table.is_empty() && !from_archive {
        tables.iter().filter_map(|t| t.file.clone()).collect()
    } else if args.schema_only && args.table.is_empty() {
        vec![db
            .schema_dump
            .clone()
            .unwrap_or_else(|| db.full_dump.clone())]
    } else {
        vec![db.full_dump.clone()]
    }
}

/// Whether pg_restore must open the whole-database dump as a file (a directory-format dump,
/// or parallel workers) rather than read it streamed. On object storage that means a
/// download first.
fn needs_real_file(db: &DatabaseEntry, args: &RestoreArgs) -> bool {
    let parallel = args.jobs.is_some_and(|j| j.get() > 1);
    let directory =
        db.format == DumpFormat::Directory && !(args.schema_only && db.schema_dump.is_some());
    parallel || directory
}

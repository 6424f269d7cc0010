//! What a database's pg_dump runs are: the whole-database dump, and with `--table-dumps` the
//! schema dump and one dump per selected table, with their pg_dump arguments and outputs;
//! and, once they ran, the database's manifest entry naming those outputs.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;

use crate::backup::BackupArgs;
use crate::catalog::TableInfo;
use crate::details::{self, DatabaseEntry, DumpFormat, TableEntry};
use crate::patterns;
use crate::snapshot::SnapshotSession;

use super::Dumped;

/// One pg_dump run of a set.
#[derive(Debug, Clone)]
pub struct DumpJob {
    pub(super) what: String,
    /// Output relative to the set: a file, or a folder for the directory format.
    pub(super) output: String,
    pub(super) format: DumpFormat,
    pub(super) args: Vec<String>,
    /// Table whose data the dump must list, checked with `pg_restore --list`.
    pub(super) must_hold: Option<(String, String)>,
    /// Size of what it dumps, to start the big ones first.
    pub(super) size_bytes: u64,
    /// Its rows are counted as it streams: the whole-database dump, when it is one file.
    pub(super) counts_rows: bool,
}

/// The dumps of one database and where they go.
pub struct DumpPlan {
    dir: String,
    format: DumpFormat,
    full: String,
    schema: Option<String>,
    table_files: Vec<Option<String>>,
    pub jobs: Vec<DumpJob>,
}

/// How a set's files are named: after the databases and tables, or (encrypted sets, whose
/// file names are in clear) by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    Tables,
    Numbers,
}

impl Naming {
    /// The folder of the `n`th database (from 0) of a set.
    pub fn database_dir(self, n: usize, database: &str, taken: &mut HashSet<String>) -> String {
        match self {
            Naming::Tables => details::file_name(database, taken),
            Naming::Numbers => format!("db{}", n + 1),
        }
    }
}

impl DumpPlan {
    pub fn new(
        args: &BackupArgs,
        dir: &str,
        naming: Naming,
        session: &SnapshotSession,
        selected: &HashSet<(String, String)>,
    ) -> DumpPlan {
        let common_args = shared_args(args, session);
        let workers = args.jobs.filter(|_| jobs_pay(session));
        let full_job = DumpJob::whole_database(session, dir, workers, &common_args);
        let (format, full) = (full_job.format, full_job.output.clone());
        let mut jobs = vec![full_job];
        // The old layout's schema dump; without it a schema restore reads the definitions
        // from the whole-database dump's table of contents, which costs nothing extra to keep.
        let schema = args.per_table_dumps().then(|| format!("{dir}/schema.dump"));
        if let Some(schema) = &schema {
            jobs.push(DumpJob::schema(session, schema, &common_args));
        }
        let mut taken = HashSet::new();
        let mut table_files = Vec::new();
        for (n, table) in session.tables.iter().enumerate() {
            if !selected.contains(&(table.schema.clone(), table.name.clone())) {
                table_files.push(None);
                continue;
            }
            let name = match naming {
                Naming::Tables => details::file_name(&table.display_name(), &mut taken),
                Naming::Numbers => format!("t{}", n + 1),
            };
            let job = DumpJob::table(
                session,
                table,
                format!("{dir}/tables/{name}.dump"),
                &common_args,
            );
            table_files.push(Some(job.output.clone()));
            jobs.push(job);
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

    /// Whether one of the dumps counts the rows of every table as it streams (when it can
    /// read the dump; [`super::count_missing`] counts the rest).
    pub fn counts_rows(&self) -> bool {
        self.jobs.iter().any(|j| j.counts_rows)
    }

    /// The manifest entry, once the dumps ran and the rows were counted.
    pub fn entry(
        &self,
        session: &SnapshotSession,
        counts: Vec<u64>,
        dumped: &[Dumped],
    ) -> DatabaseEntry {
        let full_dump_secs = dumped
            .iter()
            .find(|d| d.output == self.full)
            .map(|d| d.secs);
        // Recorded under their stored names (`.age` added to an encrypted file).
        let stored: HashMap<&str, &str> = dumped
            .iter()
            .map(|d| (d.output.as_str(), d.stored.as_str()))
            .collect();
        let stored = |output: &String| {
            stored
                .get(output.as_str())
                .map_or_else(|| output.clone(), |s| s.to_string())
        };
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
                    file: file.as_ref().map(stored),
                    index_names: t.index_names.clone(),
                    sequences: t.sequences.clone(),
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
            full_dump: stored(&self.full),
            full_dump_secs,
            schema_dump: self.schema.as_ref().map(stored),
            tables,
        }
    }
}

/// The pg_dump arguments every dump of a database shares: its snapshot, the compression.
fn shared_args(args: &BackupArgs, session: &SnapshotSession) -> Vec<String> {
    let mut common_args = vec![format!("--snapshot={}", session.snapshot)];
    if let Some(level) = args.compress_level {
        common_args.push(format!("--compress={level}"));
    }
    common_args
}

impl DumpJob {
    /// The whole-database dump into `dir`: directory format with `workers`, else custom.
    fn whole_database(
        session: &SnapshotSession,
        dir: &str,
        workers: Option<NonZeroUsize>,
        common_args: &[String],
    ) -> DumpJob {
        let (format, output) = match workers {
            Some(_) => (DumpFormat::Directory, format!("{dir}/full.dir")),
            None => (DumpFormat::Custom, format!("{dir}/full.dump")),
        };
        let mut args = common_args.to_vec();
        match workers {
            Some(jobs) => args.extend(["--format=directory".into(), format!("--jobs={jobs}")]),
            None => args.push("--format=custom".into()),
        }
        DumpJob {
            what: format!("whole database {}", session.database),
            output,
            format,
            args,
            must_hold: None,
            size_bytes: u64::MAX,
            counts_rows: format == DumpFormat::Custom,
        }
    }

    /// The schema-only dump into `output`.
    fn schema(session: &SnapshotSession, output: &str, common_args: &[String]) -> DumpJob {
        DumpJob {
            what: format!("schema of {}", session.database),
            output: output.to_string(),
            format: DumpFormat::Custom,
            args: [
                common_args.to_vec(),
                vec!["--format=custom".into(), "--schema-only".into()],
            ]
            .concat(),
            must_hold: None,
            size_bytes: u64::MAX,
            counts_rows: false,
        }
    }

    /// The dump of one table into `output`; an ordinary table's must hold its data.
    fn table(
        session: &SnapshotSession,
        table: &TableInfo,
        output: String,
        common_args: &[String],
    ) -> DumpJob {
        let mut args = common_args.to_vec();
        args.extend([
            "--format=custom".into(),
            "--strict-names".into(),
            format!(
                "--table={}",
                patterns::qualified(&table.schema, &table.name)
            ),
        ]);
        DumpJob {
            what: format!("table {} of {}", table.display_name(), session.database),
            output,
            format: DumpFormat::Custom,
            args,
            must_hold: (table.kind == 'r').then(|| (table.schema.clone(), table.name.clone())),
            size_bytes: table.size_bytes,
            counts_rows: false,
        }
    }
}

/// A database smaller than this is dumped with `--jobs` as asked, whatever its tables.
const JOBS_MIN_BYTES: u64 = 64 << 20;

/// Whether parallel pg_dump workers can pay off on this database: pg_dump gives each
/// worker whole tables, so when one table holds 2/3 or more of the data the others finish
/// early and the run takes as long as that table alone, plus the directory format's cost.
/// Says so when they cannot.
fn jobs_pay(session: &SnapshotSession) -> bool {
    let total: u64 = session.tables.iter().map(|t| t.size_bytes).sum();
    let Some(largest) = session.tables.iter().max_by_key(|t| t.size_bytes) else {
        return true;
    };
    if total < JOBS_MIN_BYTES || largest.size_bytes.saturating_mul(3) < total.saturating_mul(2) {
        return true;
    }
    tracing::warn!(
        "database {}: table {} holds {}% of the data and --jobs cannot split a table (each pg_dump worker dumps whole tables); dumping it as one custom-format file instead",
        session.database,
        largest.display_name(),
        largest.size_bytes * 100 / total.max(1)
    );
    false
}

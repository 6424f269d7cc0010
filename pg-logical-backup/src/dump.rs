//! The pg_dump runs of a set: the globals, and per database the whole-database dump (and,
//! with `--table-dumps`, the schema dump and one dump per table), all with the database's
//! exported snapshot, several at once, each checked with `pg_restore --list` before it is
//! recorded.
//!
//! pg_dump and pg_dumpall write to their stdout, streamed into the set's file as it is
//! produced (a local file or an object upload), never staged whole. The exception is the
//! directory format (`--jobs`), which pg_dump can only write into a directory: in a local
//! repository straight into the set's folder, for object storage into a temporary directory
//! under `$TMPDIR` whose files are then uploaded.
//!
//! In an encrypted set every file is stored as an age file (`.age`) and named by number
//! rather than by table; a directory-format dump then goes through the temporary directory
//! wherever the repository is, and a custom-format dump is listed by `pg_restore --list`
//! from a pipe as it streams into the set, since this run holds no key to read it back.

mod plan;
mod rows;

use std::collections::HashMap;
use std::io::{self, Write};
use std::time::Instant;

use anyhow::Context;
use futures::StreamExt;
use tokio::process::Command;

use common::cli::PgArgs;
use common::repo::SetWriter;
use common::storage::{self, Store};
use common::stream::{Compression, HashingReader};
use common::FileEntry;

use crate::details::{DatabaseEntry, DumpFormat};
use crate::pgbin::{self, PgBin};
use crate::snapshot::SnapshotSession;
use crate::source::{DumpSource, Scratch};
use crate::toc;

pub use plan::{DumpJob, DumpPlan, Naming};
pub use rows::TableRows;

/// The globals' file in a set.
pub const GLOBALS_FILE: &str = "globals.sql";

/// `pg_dumpall --globals-only` into `globals.sql`; falls back to `--no-role-passwords` when
/// the role may not read password hashes. Returns the file and whether passwords are left out.
pub async fn dump_globals(
    bin: &PgBin,
    pg: &PgArgs,
    set: &SetWriter,
    no_role_passwords: bool,
) -> anyhow::Result<(FileEntry, bool)> {
    let command = |no_passwords: bool| {
        let mut cmd = bin.command("pg_dumpall", &pg.dbname());
        cmd.arg("--globals-only");
        if no_passwords {
            cmd.arg("--no-role-passwords");
        }
        cmd
    };
    let what = "pg_dumpall --globals-only";
    let first = dump_to_set(
        set,
        GLOBALS_FILE,
        &mut command(no_role_passwords),
        what,
        Sinks::default(),
    )
    .await;
    match first {
        Ok(entry) => Ok((entry, no_role_passwords)),
        Err(e) if !no_role_passwords && format!("{e:#}").contains("permission denied") => {
            tracing::warn!("cannot read role passwords ({e:#}); dumping roles without them");
            let what = "pg_dumpall --globals-only --no-role-passwords";
            let entry = dump_to_set(
                set,
                GLOBALS_FILE,
                &mut command(true),
                what,
                Sinks::default(),
            )
            .await?;
            Ok((entry, true))
        }
        Err(e) => Err(e),
    }
}

/// Runs `cmd` with its stdout streamed into the new file `path` of the set (and into the
/// `sinks` beside it), and finishes the file once the program succeeded.
async fn dump_to_set(
    set: &SetWriter,
    path: &str,
    cmd: &mut Command,
    what: &str,
    sinks: Sinks,
) -> anyhow::Result<FileEntry> {
    let shown = set.store().describe(&storage::join(set.prefix(), path));
    let file = set
        .create_file(path, Compression::None, None, 1)
        .with_context(|| format!("cannot create {shown}"))?;
    let tee = pgbin::run_into(cmd, Tee { file, sinks }, what).await?;
    // Finished here, with no await in between: a run that fails or is interrupted drops its
    // other dumps only at an await, so the set is never removed while a file of it commits.
    // (Dropping the sinks ends their readers' input.)
    tee.file
        .finish()
        .with_context(|| format!("cannot store {shown}"))
}

/// Where a dump goes besides the set's file, each as long as it reads.
#[derive(Default)]
struct Sinks {
    /// `pg_restore --list`, which stops reading after the table of contents (or fails, and
    /// says why itself).
    list: Option<std::fs::File>,
    /// The row counter, which stops reading an archive it cannot read.
    rows: Option<io::PipeWriter>,
}

/// Writes a dump into the set's file and its other sinks.
struct Tee<W> {
    file: W,
    sinks: Sinks,
}

impl<W: Write> Write for Tee<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        feed(&mut self.sinks.list, &buf[..n])?;
        feed(&mut self.sinks.rows, &buf[..n])?;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Writes `bytes` into `sink` while its reader reads: one that stopped is let go.
fn feed(sink: &mut Option<impl Write>, bytes: &[u8]) -> io::Result<()> {
    if let Some(writer) = sink {
        match writer.write_all(bytes) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => *sink = None,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Exact row counts of every table, in the session's snapshot, in table order.
pub async fn count_all(session: &SnapshotSession) -> anyhow::Result<Vec<u64>> {
    count_missing(session, &TableRows::new()).await
}

/// Row counts of every table in table order: those found in a dump as it streamed, the
/// others with `count(*)` in the session's snapshot (a table without data in the dump, a dump
/// the counter could not read).
pub async fn count_missing(
    session: &SnapshotSession,
    found: &TableRows,
) -> anyhow::Result<Vec<u64>> {
    let mut counts = Vec::with_capacity(session.tables.len());
    for table in &session.tables {
        let key = (table.schema.clone(), table.name.clone());
        counts.push(match found.get(&key) {
            Some(&rows) => rows,
            None => session.count_rows(table).await?,
        });
    }
    Ok(counts)
}

/// A finished dump: its output, how long pg_dump took, and its files, stored and hashed.
#[derive(Debug)]
pub struct Dumped {
    pub output: String,
    /// The output as stored: a file's stored name (`.age` when encrypted), or the folder.
    pub stored: String,
    pub secs: f64,
    pub files: Vec<FileEntry>,
    /// The rows of each table, counted as the dump streamed (see [`DumpJob::counts_rows`]).
    pub rows: Option<TableRows>,
}

/// Runs the dumps, at most `parallel` at once, each checked with `pg_restore --list`. The
/// first failure aborts the rest (their pg_dump processes are killed, their files dropped
/// unfinished).
pub async fn run_jobs(
    bin: &PgBin,
    set: &SetWriter,
    session: &SnapshotSession,
    jobs: &[DumpJob],
    parallel: usize,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<Vec<Dumped>> {
    let mut running = futures::stream::iter(jobs)
        .map(|job| dump_one(bin, set, &session.database, job))
        .buffer_unordered(parallel.max(1));
    let mut done = Vec::new();
    while let Some(result) = running.next().await {
        done.push(result?);
        bar.inc(1);
    }
    Ok(done)
}

async fn dump_one(
    bin: &PgBin,
    set: &SetWriter,
    database: &str,
    job: &DumpJob,
) -> anyhow::Result<Dumped> {
    let started = Instant::now();
    let mut cmd = bin.command("pg_dump", database);
    cmd.args(&job.args);
    let what = format!("pg_dump of {}", job.what);
    // Timed as pg_dump and the storing of what it wrote, without the check (an encrypted
    // set's is listed as it streams).
    let (counter, rows) = if job.counts_rows {
        let (counter, pipe) = rows::Counter::start().context("cannot make a pipe")?;
        (Some(counter), Some(pipe))
    } else {
        (None, None)
    };
    let (files, secs) = match job.format {
        DumpFormat::Custom if set.is_encrypted() => {
            let shown = set
                .store()
                .describe(&storage::join(set.prefix(), &job.output));
            let (pipe, listing) = toc::list_piped(bin, &shown)?;
            let sinks = Sinks {
                list: Some(pipe),
                rows,
            };
            let entry = dump_to_set(set, &job.output, &mut cmd, &what, sinks).await?;
            let secs = started.elapsed().as_secs_f64();
            check_toc(job, listing.finish().await)?;
            (vec![entry], secs)
        }
        DumpFormat::Custom => {
            let sinks = Sinks { list: None, rows };
            let entry = dump_to_set(set, &job.output, &mut cmd, &what, sinks).await?;
            let secs = started.elapsed().as_secs_f64();
            let key = storage::join(set.prefix(), &job.output);
            check_list(bin, job, &DumpSource::of(set.store(), &key)).await?;
            (vec![entry], secs)
        }
        DumpFormat::Directory => {
            let files = dump_directory(bin, set, job, &mut cmd, &what).await?;
            (files, started.elapsed().as_secs_f64())
        }
    };
    let rows = match counter {
        Some(counter) => counter.finish(&job.what).await,
        None => None,
    };
    tracing::debug!("dumped {} in {secs:.2}s", job.what);
    let stored = match job.format {
        DumpFormat::Custom => files[0].path.clone(),
        DumpFormat::Directory => job.output.clone(),
    };
    Ok(Dumped {
        output: job.output.clone(),
        stored,
        secs,
        files,
        rows,
    })
}

/// pg_restore can read the dump, and it holds the data it should.
async fn check_list(bin: &PgBin, job: &DumpJob, dump: &DumpSource) -> anyhow::Result<()> {
    check_toc(job, toc::list(bin, dump).await)
}

/// What `pg_restore --list` made of the dump: readable, holding the data it should.
fn check_toc(job: &DumpJob, toc: anyhow::Result<toc::Toc>) -> anyhow::Result<()> {
    let toc = toc.with_context(|| format!("the dump of {} is unreadable", job.what))?;
    if let Some((schema, table)) = &job.must_hold {
        if !toc.has_table_data(schema, table) {
            anyhow::bail!("the dump of {} holds no data entry for it", job.what);
        }
    }
    Ok(())
}

/// A directory-format dump (`pg_dump -Fd -j N`): written into the set's folder in a local
/// repository; for object storage, or an encrypted set, into a temporary directory, then
/// stored file by file.
async fn dump_directory(
    bin: &PgBin,
    set: &SetWriter,
    job: &DumpJob,
    cmd: &mut Command,
    what: &str,
) -> anyhow::Result<Vec<FileEntry>> {
    let key = storage::join(set.prefix(), &job.output);
    let in_place = set.store().local_path(&key).filter(|_| !set.is_encrypted());
    if let Some(dir) = in_place {
        if let Some(parent) = dir.parent() {
            common::durable::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        cmd.arg("--file").arg(&dir);
        pgbin::run(cmd, what).await?;
        check_list(bin, job, &DumpSource::Path(dir.clone())).await?;
        let (store, output) = (set.store().clone(), job.output.clone());
        let prefix = set.prefix().to_string();
        return tokio::task::spawn_blocking(move || record_local_folder(&store, &prefix, &output))
            .await
            .context("the checksum task failed")?;
    }
    let scratch = Scratch::new("dump")?;
    let dir = scratch.path().join("dump");
    cmd.arg("--file").arg(&dir);
    pgbin::run(cmd, what).await?;
    check_list(bin, job, &DumpSource::Path(dir.clone())).await?;
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .and_then(|entries| {
            entries
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .with_context(|| format!("cannot list {}", dir.display()))?;
    names.sort();
    let mut files = Vec::with_capacity(names.len());
    for name in names {
        let path = format!("{}/{name}", job.output);
        let shown = set.store().describe(&storage::join(set.prefix(), &path));
        let mut source = std::fs::File::open(dir.join(&name))
            .with_context(|| format!("cannot read {}", dir.join(&name).display()))?;
        let mut file = set
            .create_file(&path, Compression::None, None, 1)
            .with_context(|| format!("cannot create {shown}"))?;
        let file = tokio::task::spawn_blocking(move || {
            std::io::copy(&mut source, &mut file).map(|_| file)
        })
        .await
        .context("the upload task failed")?
        .with_context(|| format!("cannot upload {shown}"))?;
        // As in dump_to_set: finished with no await in between.
        files.push(
            file.finish()
                .with_context(|| format!("cannot store {shown}"))?,
        );
    }
    Ok(files)
}

/// Hashes the files pg_dump wrote into the folder `output` of a local set (reading them
/// through the store), makes them private and durable, and returns their entries. pg_dump
/// wrote them itself, so this pass cannot be folded into the dump; it runs on every core
/// (a directory-format dump has one file per table) to keep its share of the run small.
fn record_local_folder(
    store: &Store,
    prefix: &str,
    output: &str,
) -> anyhow::Result<Vec<FileEntry>> {
    let folder = storage::join(prefix, output);
    let shown = store.describe(&folder);
    let keys: Vec<String> = store
        .list(&folder)
        .with_context(|| format!("cannot list {shown}"))?
        .into_iter()
        .map(|o| o.key)
        .collect();
    let workers = std::thread::available_parallelism()
        .map_or(2, std::num::NonZeroUsize::get)
        .min(keys.len())
        .max(1);
    let mut results: Vec<(usize, anyhow::Result<FileEntry>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|worker| {
                let keys = &keys;
                scope.spawn(move || {
                    keys.iter()
                        .enumerate()
                        .skip(worker)
                        .step_by(workers)
                        .map(|(n, key)| (n, record_local_file(store, prefix, key)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a checksum thread panicked"))
            .collect()
    });
    results.sort_by_key(|(n, _)| *n);
    let files = results
        .into_iter()
        .map(|(_, r)| r)
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(dir) = store.local_path(&folder) {
        for dir in [Some(dir.as_path()), dir.parent()].into_iter().flatten() {
            common::durable::fsync_dir(dir)
                .with_context(|| format!("cannot sync {}", dir.display()))?;
        }
    }
    Ok(files)
}

/// One file of [`record_local_folder`].
fn record_local_file(store: &Store, prefix: &str, key: &str) -> anyhow::Result<FileEntry> {
    use std::os::unix::fs::PermissionsExt;
    let shown = store.describe(key);
    if let Some(path) = store.local_path(key) {
        std::fs::set_permissions(
            &path,
            std::fs::Permissions::from_mode(common::durable::FILE_MODE),
        )
        .and_then(|()| std::fs::File::open(&path)?.sync_all())
        .with_context(|| format!("cannot make {shown} private and durable"))?;
    }
    let sum = store
        .open_read(key)
        .and_then(|r| HashingReader::new(r).finish())
        .with_context(|| format!("cannot read {shown}"))?;
    Ok(FileEntry {
        path: key
            .strip_prefix(&format!("{prefix}/"))
            .unwrap_or(key)
            .to_string(),
        size: sum.size,
        sha256: sum.sha256,
        compression: Compression::None,
        raw_size: None,
        xxh3: Some(sum.xxh3),
    })
}

/// Adds a database's files to the set, in the order of its entry: the whole-database dump,
/// the schema, the tables.
pub fn record_files(set: &mut SetWriter, entry: &DatabaseEntry, dumped: Vec<Dumped>) {
    let mut by_output: HashMap<String, Vec<FileEntry>> =
        dumped.into_iter().map(|d| (d.stored, d.files)).collect();
    let outputs = std::iter::once(entry.full_dump.clone())
        .chain(entry.schema_dump.clone())
        .chain(entry.tables.iter().filter_map(|t| t.file.clone()));
    for output in outputs {
        for file in by_output.remove(&output).unwrap_or_default() {
            set.add(file);
        }
    }
}

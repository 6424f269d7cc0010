//! Loading dumps into the target database: pg_restore for a whole database, and for tables
//! their entries of the whole-database dump (or their own dumps, in older sets) replayed as
//! SQL through one psql transaction.

use std::future::Future;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::Stdio;

use anyhow::Context;
use std::io::Write;

use tokio::io::AsyncReadExt;
use tokio::process::Child;
use tokio::task::JoinHandle;

use crate::patterns;
use crate::pgbin::{self, PgBin};
use crate::restore::RestoreArgs;
use crate::source::DumpSource;

/// Whole database with pg_restore: one transaction, or `--jobs` workers (which need
/// `dump` to be a real file).
pub async fn restore_database(
    bin: &PgBin,
    dump: &DumpSource,
    target: &str,
    args: &RestoreArgs,
    exists: bool,
) -> anyhow::Result<()> {
    let mut cmd = bin.command("pg_restore", target);
    cmd.arg(format!("--dbname={target}")).arg("--exit-on-error");
    match args.jobs.map(NonZeroUsize::get) {
        Some(jobs) if jobs > 1 => cmd.arg(format!("--jobs={jobs}")),
        _ => cmd.arg("--single-transaction"),
    };
    if exists && args.clean {
        cmd.args(["--clean", "--if-exists"]);
    }
    if args.no_owner {
        cmd.arg("--no-owner");
    }
    if args.schema_only {
        // A no-op on a schema dump; on the whole-database dump only its table of contents
        // is read.
        cmd.arg("--schema-only");
    }
    dump.pg_restore_input(&mut cmd);
    dump.run(&mut cmd, &format!("pg_restore into '{target}'"))
        .await?;
    Ok(())
}

/// One piece of a psql script: SQL text, or the SQL pg_restore makes of a dump.
#[derive(Debug, Clone)]
pub enum Part {
    Sql(String),
    Dump {
        source: DumpSource,
        args: Vec<String>,
    },
}

/// Where the selected tables' entries come from.
#[derive(Debug)]
pub enum TableDumps {
    /// Their own dumps (sets taken with `--table-dumps`, and all before details version 2).
    Own(Vec<DumpSource>),
    /// The whole-database dump, a real file, with the `pg_restore --use-list` file naming
    /// their entries.
    Archive { dump: DumpSource, list: PathBuf },
}

/// Selected tables, all in one psql transaction: first every table's definition and rows,
/// then every index, constraint and trigger, so foreign keys between restored tables find
/// their targets whatever the order; then the [`Closing`] statements. Any error rolls
/// everything back.
#[allow(clippy::too_many_arguments)]
pub async fn restore_tables(
    bin: &PgBin,
    dumps: &TableDumps,
    schemas: &[&str],
    target: &str,
    args: &RestoreArgs,
    exists: bool,
    closing: &Closing<'_>,
    before_commit: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<Inserted> {
    // Table dumps do not create their schema; a new database may lack it.
    let mut parts = vec![Part::Sql(
        schemas
            .iter()
            .map(|s| {
                format!(
                    "CREATE SCHEMA IF NOT EXISTS {};\n",
                    patterns::quote_ident(s)
                )
            })
            .collect(),
    )];
    let pre: &[&str] = if args.schema_only {
        &["--section=pre-data"]
    } else {
        &["--section=pre-data", "--section=data"]
    };
    let mut owner: Vec<String> = Vec::new();
    if args.no_owner {
        owner.push("--no-owner".into());
    }
    // Out of the whole-database dump, the same two passes with the list (the second reads
    // only its table of contents): --clean must not drop the post-data objects, which go
    // with their tables (a partition's inherited key cannot be dropped on its own).
    let dumps: Vec<(&DumpSource, Vec<String>)> = match dumps {
        TableDumps::Own(dumps) => dumps.iter().map(|d| (d, Vec::new())).collect(),
        TableDumps::Archive { dump, list } => {
            vec![(dump, vec![format!("--use-list={}", list.display())])]
        }
    };
    for (dump, list) in &dumps {
        let mut dump_args: Vec<String> = list.clone();
        dump_args.extend(pre.iter().map(|s| s.to_string()));
        if exists && args.clean {
            dump_args.extend(["--clean".into(), "--if-exists".into()]);
        }
        dump_args.extend(owner.iter().cloned());
        parts.push(Part::Dump {
            source: (*dump).clone(),
            args: dump_args,
        });
    }
    for (dump, list) in &dumps {
        let mut dump_args = list.clone();
        dump_args.push("--section=post-data".to_string());
        dump_args.extend(owner.iter().cloned());
        parts.push(Part::Dump {
            source: (*dump).clone(),
            args: dump_args,
        });
    }
    parts.push(closing.part());
    run_script(bin, target, parts, closing, before_commit).await
}

/// Replaces the rows of existing tables with those of their dumps, keeping the tables, their
/// dependents and grants: in one transaction with triggers and foreign-key enforcement off
/// (`session_replication_role = replica`, superuser only), delete the rows, load the dump's
/// data, then `fk_checks` must find no broken reference, else everything rolls back; then
/// the [`Closing`] statements.
pub async fn replace_rows(
    bin: &PgBin,
    dumps: &TableDumps,
    fk_checks: &[String],
    target: &str,
    closing: &Closing<'_>,
    before_commit: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<Inserted> {
    let mut parts = vec![Part::Sql(
        "SET LOCAL session_replication_role = replica;\n".to_string(),
    )];
    for (schema, table) in closing.tables {
        parts.push(Part::Sql(format!(
            "DELETE FROM ONLY {};\n",
            patterns::qualified(schema, table)
        )));
    }
    match dumps {
        TableDumps::Own(dumps) => {
            for dump in dumps {
                parts.push(Part::Dump {
                    source: dump.clone(),
                    args: vec!["--data-only".into()],
                });
            }
        }
        TableDumps::Archive { dump, list } => parts.push(Part::Dump {
            source: dump.clone(),
            args: vec![
                "--data-only".into(),
                format!("--use-list={}", list.display()),
            ],
        }),
    }
    parts.extend(fk_checks.iter().map(|sql| Part::Sql(format!("{sql}\n"))));
    parts.push(Part::Sql(
        "SET LOCAL session_replication_role = origin;\n".to_string(),
    ));
    parts.push(closing.part());
    run_script(bin, target, parts, closing, before_commit).await
}

/// What ends a table restore's script, inside its transaction: ANALYZE of the tables (unless
/// `--no-analyze`; the statistics commit with the rows), and a report of the rows the
/// transaction inserted into each. The tables are new or emptied by the restore, so these
/// are the rows they hold, counted without a second pass over them.
pub struct Closing<'a> {
    /// The restored tables, (schema, name).
    pub tables: &'a [(String, String)],
    pub analyze: bool,
}

/// Per table of [`Closing::tables`], the rows the restore inserted; `None`: the table is not
/// there.
pub type Inserted = Vec<Option<u64>>;

/// What starts psql's output lines that report rows inserted: `pglb-rows|INDEX|ROWS`.
const ROWS_MARKER: &str = "pglb-rows";

impl Closing<'_> {
    fn part(&self) -> Part {
        let mut sql = String::new();
        for (schema, table) in self.tables.iter().filter(|_| self.analyze) {
            sql += &format!("ANALYZE {};\n", patterns::qualified(schema, table));
        }
        for (index, (schema, table)) in self.tables.iter().enumerate() {
            let name = patterns::qualified(schema, table).replace('\'', "''");
            sql += &format!(
                "SELECT '{ROWS_MARKER}', {index}, coalesce((SELECT n_tup_ins FROM pg_catalog.pg_stat_xact_user_tables WHERE relid = pg_catalog.to_regclass('{name}')), -1);\n"
            );
        }
        Part::Sql(sql)
    }

    /// The rows reported in psql's output.
    fn inserted(&self, output: &str) -> anyhow::Result<Inserted> {
        let mut inserted: Vec<Option<Option<u64>>> = vec![None; self.tables.len()];
        for line in output.lines() {
            let mut fields = line.split('|');
            if fields.next() != Some(ROWS_MARKER) {
                continue;
            }
            let index = fields.next().and_then(|i| i.parse::<usize>().ok());
            let rows = fields.next().and_then(|n| n.parse::<i64>().ok());
            if let (Some(slot), Some(rows)) = (index.and_then(|i| inserted.get_mut(i)), rows) {
                *slot = Some(u64::try_from(rows).ok());
            }
        }
        inserted
            .into_iter()
            .zip(self.tables)
            .map(|(rows, (schema, table))| {
                rows.with_context(|| {
                    format!("psql did not report the rows restored into {schema}.{table}")
                })
            })
            .collect()
    }
}

/// Streams the parts into one `psql --single-transaction` session on `target` while
/// `before_commit` (the check of the dumps read) runs beside it; psql sees the end of its
/// input, and commits, only once both succeeded. Any error, in psql, in a pg_restore
/// producing a part or in the check, leaves the database as it was.
async fn run_script(
    bin: &PgBin,
    target: &str,
    parts: Vec<Part>,
    closing: &Closing<'_>,
    before_commit: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<Inserted> {
    let mut psql = Psql::spawn(bin, target)?;
    let (fed, checked) = tokio::join!(psql.feed(bin, parts), before_commit);
    let stopped = match (fed, checked) {
        // A part that could not even start (pg_restore missing...) must not commit the
        // parts before it either.
        (Err(e), _) => Some(Stopped::Producer(e)),
        (Ok(Some(stopped)), _) => Some(stopped),
        (Ok(None), Err(e)) => Some(Stopped::Producer(e)),
        (Ok(None), Ok(())) => None,
    };
    let (succeeded, psql_errors, output) = psql
        .end(matches!(stopped, Some(Stopped::Producer(_))))
        .await?;
    outcome(target, succeeded, &psql_errors, stopped)?;
    closing.inserted(&output)
}

/// `psql` reading a script from a pipe of ours, and the tasks collecting what it says on
/// stdout and on stderr. Each pg_restore producing a part writes into the pipe itself (no
/// copy through this process); psql sees the end of its input only when [`Psql::end`]
/// closes it, or when it is gone: it is killed before its input closes otherwise (fields
/// drop in order), so it never commits a script cut short.
struct Psql {
    child: Child,
    input: Option<std::io::PipeWriter>,
    output: JoinHandle<String>,
    errors: JoinHandle<String>,
}

impl Psql {
    fn spawn(bin: &PgBin, target: &str) -> anyhow::Result<Psql> {
        let (reader, input) = std::io::pipe().context("cannot make a pipe for psql")?;
        let mut psql = bin.command("psql", target);
        psql.args([
            "-X",
            "-q",
            "--no-align",
            "--tuples-only",
            "-v",
            "ON_ERROR_STOP=1",
            "--single-transaction",
            "--file=-",
        ])
        .stdin(reader)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = psql.spawn().map_err(|e| pgbin::spawn_error(e, "psql"))?;
        let output = collect(child.stdout.take().context("psql stdout")?);
        let errors = collect(child.stderr.take().context("psql stderr")?);
        Ok(Psql {
            child,
            input: Some(input),
            output,
            errors,
        })
    }

    fn input(&self) -> std::io::Result<std::io::PipeWriter> {
        match &self.input {
            Some(input) => input.try_clone(),
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        }
    }

    /// Writes the parts into psql's input, in order, until one cannot be written.
    async fn feed(&mut self, bin: &PgBin, parts: Vec<Part>) -> anyhow::Result<Option<Stopped>> {
        for part in parts {
            let stopped = match part {
                Part::Sql(sql) => self.write(sql).await.err().map(psql_stopped),
                Part::Dump { source, args } => self.feed_dump(bin, &source, &args).await?,
            };
            if stopped.is_some() {
                return Ok(stopped);
            }
        }
        Ok(None)
    }

    async fn write(&self, sql: String) -> std::io::Result<()> {
        let mut input = self.input()?;
        tokio::task::spawn_blocking(move || input.write_all(sql.as_bytes()))
            .await
            .map_err(std::io::Error::other)?
    }

    /// Has pg_restore write the SQL it makes of `source` into psql's input.
    async fn feed_dump(
        &mut self,
        bin: &PgBin,
        source: &DumpSource,
        args: &[String],
    ) -> anyhow::Result<Option<Stopped>> {
        let mut cmd = bin.command("pg_restore", "postgres");
        cmd.arg("--file=-").args(args);
        source.pg_restore_input(&mut cmd);
        let input = match self.input() {
            Ok(input) => input,
            Err(e) => return Ok(Some(psql_stopped(e))),
        };
        cmd.stdout(input).stderr(Stdio::piped());
        let (reader, feeder) = source.spawn(&mut cmd)?;
        let output = reader
            .wait_with_output()
            .await
            .context("cannot wait for pg_restore")?;
        let fed = feeder.finish().await;
        let read =
            fed.and_then(|()| pgbin::check(&output, &format!("pg_restore of {}", source.shown())));
        Ok(match read {
            Ok(()) => None,
            // It could not write: psql stopped reading (it hit an error, which it reports).
            Err(e) if self.child.try_wait().ok().flatten().is_some() => {
                Some(Stopped::Psql(e.context("psql stopped reading")))
            }
            Err(e) => Some(Stopped::Producer(e)),
        })
    }

    /// Ends psql's input (killing it first when `kill`: it must not commit) and waits for
    /// it: whether it succeeded, its stderr and its stdout.
    async fn end(mut self, kill: bool) -> anyhow::Result<(bool, String, String)> {
        if kill {
            let _ = self.child.start_kill();
        }
        drop(self.input.take());
        let status = self.child.wait().await.context("cannot wait for psql")?;
        let errors = (&mut self.errors).await.unwrap_or_default();
        let output = (&mut self.output).await.unwrap_or_default();
        Ok((status.success(), errors, output))
    }
}

/// A task reading `stream` to its end.
fn collect(mut stream: impl tokio::io::AsyncRead + Unpin + Send + 'static) -> JoinHandle<String> {
    tokio::spawn(async move {
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes).await;
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Why feeding the script stopped before its end.
enum Stopped {
    /// psql stopped reading: it hit an error, which it reports itself.
    Psql(anyhow::Error),
    /// A pg_restore producing a part, or the check of the dumps, failed: psql must not
    /// commit what it got.
    Producer(anyhow::Error),
}

fn psql_stopped(e: std::io::Error) -> Stopped {
    Stopped::Psql(anyhow::Error::new(e).context("psql stopped reading"))
}

/// The verdict on the script: psql's own errors (with a hint where one helps) when it
/// failed, else why feeding it stopped.
fn outcome(
    target: &str,
    psql_succeeded: bool,
    psql_errors: &str,
    stopped: Option<Stopped>,
) -> anyhow::Result<()> {
    let rolled_back =
        format!("restoring the tables into '{target}' failed and was rolled back, nothing changed");
    let feed_error = match stopped {
        // psql was killed for it: what psql said (notices) is not the cause.
        Some(Stopped::Producer(e)) => return Err(e.context(rolled_back)),
        Some(Stopped::Psql(e)) => Some(e),
        None => None,
    };
    if !psql_succeeded && (feed_error.is_none() || !psql_errors.trim().is_empty()) {
        let hint = if psql_errors.contains("depends on") {
            " (other objects depend on a table being replaced: drop or include them, replace only the rows with --data-only, or restore into a new database)"
        } else if psql_errors.contains("session_replication_role") {
            " (--data-only needs a superuser)"
        } else {
            ""
        };
        anyhow::bail!("{rolled_back}: {}{hint}", pgbin::last_lines(psql_errors, 3));
    }
    if let Some(e) = feed_error {
        return Err(e.context(rolled_back));
    }
    Ok(())
}

/// Fresh planner statistics for a restored database, so the first queries on it plan well
/// (a restore loads rows but leaves the tables unanalyzed). Restored tables are analyzed
/// in their restore's transaction ([`Closing`]).
pub async fn analyze(client: &tokio_postgres::Client) -> anyhow::Result<()> {
    client
        .batch_execute("ANALYZE")
        .await
        .context("ANALYZE failed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closing_names_each_table_quoted_and_reads_back_its_rows() {
        let tables = [
            ("public".to_string(), "it's".to_string()),
            ("Sales".to_string(), "orders".to_string()),
        ];
        let closing = Closing {
            tables: &tables,
            analyze: true,
        };
        let Part::Sql(sql) = closing.part() else {
            panic!("the closing is SQL")
        };
        assert!(
            sql.starts_with("ANALYZE \"public\".\"it's\";\nANALYZE \"Sales\".\"orders\";\n"),
            "{sql}"
        );
        assert!(sql.contains("to_regclass('\"public\".\"it''s\"')"), "{sql}");
        // psql's output: the dump's own SELECTs print empty lines; a missing table says -1.
        let output = "\n\npglb-rows|1|-1\npglb-rows|0|1250000\n";
        assert_eq!(closing.inserted(output).unwrap(), [Some(1_250_000), None]);
        let error = closing.inserted("pglb-rows|0|5\n").unwrap_err();
        assert!(error.to_string().contains("Sales.orders"), "{error}");
        let quiet = Closing {
            tables: &tables,
            analyze: false,
        };
        let Part::Sql(sql) = quiet.part() else {
            panic!("the closing is SQL")
        };
        assert!(!sql.contains("ANALYZE"), "{sql}");
    }
}

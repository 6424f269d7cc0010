//! Reading dumps without a database: their table of contents (`pg_restore --list`) and the
//! number of data rows they hold for each table (counted in `pg_restore --data-only` output).
//! A dump this run cannot read back (an encrypted set: the backup side holds no key) is
//! listed from a pipe while it is written ([`list_piped`]).

use std::collections::BTreeMap;
use std::process::{Output, Stdio};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::pgbin::{self, PgBin};
use crate::source::DumpSource;

/// The table of contents of a dump.
#[derive(Debug, Clone, Default)]
pub struct Toc {
    lines: Vec<String>,
}

impl Toc {
    /// Entries (not comments) in the list.
    pub fn entries(&self) -> usize {
        self.lines.len()
    }

    /// True when the dump holds the data of `schema.table`.
    pub fn has_table_data(&self, schema: &str, table: &str) -> bool {
        let needle = format!(" TABLE DATA {schema} {table} ");
        self.lines.iter().any(|l| l.contains(&needle))
    }
}

/// Runs `pg_restore --list` on a dump file or directory, or on a streamed dump (of which it
/// reads only the head); fails when pg_restore cannot read it. (An empty database gives an
/// empty list: its header entries are not listed.)
pub async fn list(bin: &PgBin, dump: &DumpSource) -> anyhow::Result<Toc> {
    let mut cmd = bin.command("pg_restore", "postgres");
    cmd.arg("--list");
    dump.pg_restore_input(&mut cmd);
    let output = dump
        .run(&mut cmd, &format!("pg_restore --list {}", dump.shown()))
        .await?;
    Ok(Toc::parse(&output.stdout))
}

impl Toc {
    /// The entries of `pg_restore --list` output.
    fn parse(stdout: &[u8]) -> Toc {
        let text = String::from_utf8_lossy(stdout);
        let lines: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
            .map(str::to_string)
            .collect();
        Toc { lines }
    }
}

/// A `pg_restore --list` reading a custom-format dump from a pipe, started by [`list_piped`].
#[derive(Debug)]
pub struct PipedList {
    waiting: tokio::task::JoinHandle<std::io::Result<Output>>,
    what: String,
}

/// Starts `pg_restore --list` on a pipe; write the dump into the returned file (it reads
/// only the head and may close the pipe early: a broken pipe there is expected), close it,
/// then [`PipedList::finish`]. `shown` names the dump in errors.
pub fn list_piped(bin: &PgBin, shown: &str) -> anyhow::Result<(std::fs::File, PipedList)> {
    let mut cmd = bin.command("pg_restore", "postgres");
    cmd.arg("--list")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| pgbin::spawn_error(e, "pg_restore"))?;
    let stdin = child.stdin.take().context("no stdin pipe to pg_restore")?;
    let stdin = std::fs::File::from(
        stdin
            .into_owned_fd()
            .context("cannot set up pg_restore's stdin")?,
    );
    let list = PipedList {
        waiting: tokio::spawn(child.wait_with_output()),
        what: format!("pg_restore --list {shown}"),
    };
    Ok((stdin, list))
}

impl PipedList {
    /// Waits for pg_restore (its input must be closed by now) and reads its list.
    pub async fn finish(self) -> anyhow::Result<Toc> {
        let output = self
            .waiting
            .await
            .context("the pg_restore task failed")?
            .context("cannot wait for pg_restore")?;
        pgbin::check(&output, &self.what)?;
        Ok(Toc::parse(&output.stdout))
    }
}

/// Counts the data rows of every table in a dump by streaming `pg_restore --data-only` as
/// SQL: one line per row between `COPY ... FROM stdin;` and `\.` (COPY text format escapes
/// newlines inside values, so lines are rows). Keys are the COPY targets as pg_restore
/// prints them (`public.orders`, quoted where needed).
pub async fn count_data_rows(
    bin: &PgBin,
    dump: &DumpSource,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut cmd = bin.command("pg_restore", "postgres");
    cmd.args(["--data-only", "--file", "-"]);
    dump.pg_restore_input(&mut cmd);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let (mut child, feeder) = dump.spawn(&mut cmd)?;
    let stdout = child.stdout.take().context("pg_restore stdout")?;
    let mut lines = BufReader::new(stdout).split(b'\n');
    let mut counts = BTreeMap::new();
    let mut current: Option<String> = None;
    while let Some(line) = lines
        .next_segment()
        .await
        .context("cannot read pg_restore output")?
    {
        match &current {
            Some(table) => {
                if line == b"\\." {
                    current = None;
                } else {
                    *counts.entry(table.clone()).or_insert(0) += 1;
                }
            }
            None => {
                if let Some(table) = copy_target(&line) {
                    counts.entry(table.clone()).or_insert(0);
                    current = Some(table);
                }
            }
        }
    }
    let output = child
        .wait_with_output()
        .await
        .context("cannot wait for pg_restore")?;
    feeder.finish().await?;
    pgbin::check(&output, &format!("pg_restore --data-only {}", dump.shown()))?;
    if current.is_some() {
        anyhow::bail!("{}: data of a table ends early", dump.shown());
    }
    Ok(counts)
}

/// The table of a `COPY <table> (<columns>) FROM stdin;` line.
fn copy_target(line: &[u8]) -> Option<String> {
    let line = std::str::from_utf8(line).ok()?;
    let rest = line.strip_prefix("COPY ")?;
    if !line.ends_with("FROM stdin;") {
        return None;
    }
    // The target ends before the column list, which starts with " (".
    let end = rest
        .find(" (")
        .unwrap_or_else(|| rest.find(" FROM stdin;").unwrap_or(rest.len()));
    Some(rest[..end].to_string())
}

/// How pg_restore prints a table in COPY statements: identifiers quoted only when needed.
pub fn copy_name(schema: &str, table: &str) -> String {
    format!("{}.{}", maybe_quote(schema), maybe_quote(table))
}

fn maybe_quote(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !is_reserved(name);
    if plain {
        name.to_string()
    } else {
        crate::patterns::quote_ident(name)
    }
}

/// A few reserved words pg_dump quotes; a table named like one is rare, and a miss only
/// means the check compares against an absent key and reports it clearly.
fn is_reserved(name: &str) -> bool {
    matches!(
        name,
        "all"
            | "analyse"
            | "analyze"
            | "and"
            | "any"
            | "array"
            | "as"
            | "asc"
            | "both"
            | "case"
            | "cast"
            | "check"
            | "collate"
            | "column"
            | "constraint"
            | "create"
            | "default"
            | "desc"
            | "distinct"
            | "do"
            | "else"
            | "end"
            | "except"
            | "false"
            | "for"
            | "foreign"
            | "from"
            | "grant"
            | "group"
            | "having"
            | "in"
            | "into"
            | "is"
            | "join"
            | "limit"
            | "not"
            | "null"
            | "offset"
            | "on"
            | "only"
            | "or"
            | "order"
            | "primary"
            | "references"
            | "select"
            | "table"
            | "then"
            | "to"
            | "true"
            | "union"
            | "unique"
            | "user"
            | "using"
            | "when"
            | "where"
            | "with"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_lines_name_their_table() {
        assert_eq!(
            copy_target(b"COPY public.orders (id, note) FROM stdin;").as_deref(),
            Some("public.orders")
        );
        assert_eq!(
            copy_target(b"COPY \"Sales\".\"a b\" (id) FROM stdin;").as_deref(),
            Some("\"Sales\".\"a b\"")
        );
        assert_eq!(copy_target(b"SELECT 1;"), None);
    }

    #[test]
    fn names_are_quoted_like_pg_dump() {
        assert_eq!(copy_name("public", "orders"), "public.orders");
        assert_eq!(copy_name("Sales", "a b"), "\"Sales\".\"a b\"");
        assert_eq!(copy_name("public", "user"), "public.\"user\"");
    }
}

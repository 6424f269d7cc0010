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

/// One entry of a `pg_restore --list`: `<id>; <tableoid> <oid> <DESC> <schema> <tag> <owner>`.
#[derive(Debug, PartialEq, Eq)]
struct Entry<'a> {
    desc: &'a str,
    schema: &'a str,
    tag: &'a str,
}

/// Entry kinds a table restore takes, longest first where one starts like another.
const TABLE_KINDS: &[&str] = &[
    "TABLE DATA",
    "TABLE ATTACH",
    "TABLE",
    "FK CONSTRAINT",
    "CHECK CONSTRAINT",
    "CONSTRAINT",
    "DEFAULT",
    "TRIGGER",
    "RULE",
    "POLICY",
    "ROW SECURITY",
    "INDEX ATTACH",
    "INDEX",
    "SEQUENCE OWNED BY",
    "SEQUENCE SET",
    "SEQUENCE",
    "COMMENT",
    "ACL",
];

impl<'a> Entry<'a> {
    /// The parts of a list line, for the kinds of [`TABLE_KINDS`] (None for others).
    fn parse(line: &'a str) -> Option<Entry<'a>> {
        let (_, rest) = line.split_once("; ")?;
        let mut ids = rest.splitn(3, ' ');
        let rest = ids.nth(2)?;
        let desc = TABLE_KINDS
            .iter()
            .find(|k| rest.strip_prefix(**k).is_some_and(|r| r.starts_with(' ')))?;
        let rest = &rest[desc.len() + 1..];
        let (schema, rest) = rest.split_once(' ')?;
        // The owner is the last word (empty for entries without one).
        let tag = rest.rsplit_once(' ').map_or(rest, |(tag, _)| tag);
        Some(Entry { desc, schema, tag })
    }
}

/// A table to restore from a whole-database dump: what its entries are tagged with.
#[derive(Debug, Clone, Copy)]
pub struct TableItems<'a> {
    pub schema: &'a str,
    pub name: &'a str,
    pub index_names: &'a [String],
    pub sequences: &'a [(String, String)],
}

impl Toc {
    /// The `pg_restore --use-list` file restoring `tables` (and only them) from this dump:
    /// each table, its data, defaults, constraints, foreign keys, indexes, triggers, rules,
    /// policies, owned sequences, comments and grants, in the dump's order. `all` lists
    /// every table of the database, to tell `orders` from `orders archive` in entries
    /// tagged `<table> <object>`.
    pub fn use_list(&self, tables: &[TableItems], all: &[(&str, &str)]) -> String {
        let mut list = String::new();
        for line in &self.lines {
            let Some(entry) = Entry::parse(line) else {
                continue;
            };
            if tables.iter().any(|t| entry.belongs_to(t, all)) {
                list.push_str(line);
                list.push('\n');
            }
        }
        list
    }
}

impl Entry<'_> {
    fn belongs_to(&self, t: &TableItems, all: &[(&str, &str)]) -> bool {
        let owned_sequence = || {
            t.sequences
                .iter()
                .any(|(s, n)| s == self.schema && n == self.tag)
        };
        match self.desc {
            "SEQUENCE" | "SEQUENCE OWNED BY" | "SEQUENCE SET" => return owned_sequence(),
            "COMMENT" | "ACL" => {
                if let Some(sequence) = self.tag.strip_prefix("SEQUENCE ") {
                    return t
                        .sequences
                        .iter()
                        .any(|(s, n)| s == self.schema && n == sequence);
                }
            }
            _ => {}
        }
        if self.schema != t.schema {
            return false;
        }
        match self.desc {
            "TABLE" | "TABLE DATA" | "TABLE ATTACH" | "ROW SECURITY" => self.tag == t.name,
            "INDEX" | "INDEX ATTACH" => t.index_names.iter().any(|i| i == self.tag),
            "COMMENT" | "ACL" => {
                let tag = self.tag;
                tag.strip_prefix("TABLE ").is_some_and(|n| n == t.name)
                    || tag
                        .strip_prefix("COLUMN ")
                        .and_then(|c| c.strip_prefix(t.name))
                        .is_some_and(|c| c.starts_with('.'))
                        && owner_of(
                            tag.strip_prefix("COLUMN ").unwrap_or(tag),
                            '.',
                            self.schema,
                            all,
                        ) == Some(t.name)
                    || tag
                        .strip_prefix("INDEX ")
                        .is_some_and(|i| t.index_names.iter().any(|n| n == i))
                    || tag
                        .split_once(' ')
                        .and_then(|(_, rest)| rest.rsplit_once(" ON "))
                        .is_some_and(|(_, on)| on == t.name)
            }
            // Tagged `<table> <object>`.
            _ => owner_of(self.tag, ' ', self.schema, all) == Some(t.name),
        }
    }
}

/// The table of `schema` whose name starts `tag` followed by `sep`: the longest such
/// name, so `a b` wins over `a` for the tag `a b pkey`.
fn owner_of<'a>(tag: &str, sep: char, schema: &str, all: &[(&str, &'a str)]) -> Option<&'a str> {
    all.iter()
        .filter(|(s, n)| {
            *s == schema
                && tag
                    .strip_prefix(*n)
                    .is_some_and(|rest| rest.starts_with(sep))
        })
        .map(|(_, n)| *n)
        .max_by_key(|n| n.len())
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
    fn a_use_list_takes_a_table_and_what_belongs_to_it() {
        let toc = Toc::parse(
            b";\n; Archive created\n\
215; 1259 16390 TABLE public orders postgres\n\
216; 1259 16391 TABLE public orders archive postgres\n\
217; 1259 16392 SEQUENCE public orders_id_seq postgres\n\
218; 0 0 SEQUENCE OWNED BY public orders_id_seq postgres\n\
219; 2604 16393 DEFAULT public orders id postgres\n\
220; 0 16390 TABLE DATA public orders postgres\n\
221; 0 16391 TABLE DATA public orders archive postgres\n\
222; 0 0 SEQUENCE SET public orders_id_seq postgres\n\
223; 2606 16394 CONSTRAINT public orders orders_pkey postgres\n\
224; 2606 16395 CONSTRAINT public orders archive orders archive_pkey postgres\n\
225; 1259 16396 INDEX public orders_customer_idx postgres\n\
226; 2606 16397 FK CONSTRAINT public orders orders_customer_fkey postgres\n\
227; 0 0 COMMENT public TABLE orders postgres\n\
228; 0 0 COMMENT public COLUMN orders.id postgres\n\
229; 0 0 COMMENT public COLUMN orders archive.id postgres\n\
230; 1259 16398 TABLE other orders postgres\n",
        );
        let index_names = vec!["orders_customer_idx".to_string()];
        let sequences = vec![("public".to_string(), "orders_id_seq".to_string())];
        let orders = TableItems {
            schema: "public",
            name: "orders",
            index_names: &index_names,
            sequences: &sequences,
        };
        let all = [
            ("public", "orders"),
            ("public", "orders archive"),
            ("other", "orders"),
        ];
        let list = toc.use_list(&[orders], &all);
        let ids: Vec<&str> = list.lines().map(|l| l.split(';').next().unwrap()).collect();
        assert_eq!(
            ids,
            ["215", "217", "218", "219", "220", "222", "223", "225", "226", "227", "228"]
        );
    }

    #[test]
    fn names_are_quoted_like_pg_dump() {
        assert_eq!(copy_name("public", "orders"), "public.orders");
        assert_eq!(copy_name("Sales", "a b"), "\"Sales\".\"a b\"");
        assert_eq!(copy_name("public", "user"), "public.\"user\"");
    }
}

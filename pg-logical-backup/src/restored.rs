//! What a restore left, compared with the manifest: each restored table present, with the
//! rows the snapshot held. A table restore reports the rows its transaction inserted (and
//! analyzed them there); a whole-database restore is counted here, beside its ANALYZE.

use serde::Serialize;

use common::cli::GlobalArgs;
use common::output::OutputFormat;

use crate::catalog;
use crate::details::TableEntry;
use crate::load::{self, Inserted};
use crate::restore::{RestoreArgs, Selection};
use crate::target::TargetState;

/// One restored table in the output.
#[derive(Debug, Serialize)]
struct TableRecord<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    schema: &'a str,
    table: &'a str,
    /// Rows now in the table: for a table restore, those its transaction inserted into the
    /// table it created or emptied (None for a schema-only restore).
    rows: Option<u64>,
    /// Rows the manifest recorded in the snapshot.
    expected: u64,
    present: bool,
    matches: bool,
}

/// Every restored table's rows compared with the manifest: for a table restore, the rows
/// its transaction reported inserting (it analyzed them too); for a whole database, counted
/// after fresh statistics (unless --no-analyze). Returns the tables that differ and the
/// rows counted.
pub async fn check_restored(
    args: &RestoreArgs,
    selection: &Selection<'_>,
    state: &TargetState,
    inserted: Option<Inserted>,
    global: &GlobalArgs,
) -> anyhow::Result<(Vec<String>, u64)> {
    let found = match inserted {
        Some(inserted) => inserted
            .into_iter()
            .map(|rows| Found {
                present: rows.is_some(),
                rows: rows.filter(|_| !args.schema_only),
            })
            .collect(),
        None => count_database(args, selection, state).await?,
    };
    report(&selection.tables, &found, args.schema_only, global)
}

/// What is in the target of one restored table.
struct Found {
    present: bool,
    /// Its rows (None for a schema-only restore, or when it is missing).
    rows: Option<u64>,
}

/// A restored database's tables, counted while ANALYZE samples them on a second session:
/// the slower of the two, not their sum.
async fn count_database(
    args: &RestoreArgs,
    selection: &Selection<'_>,
    state: &TargetState,
) -> anyhow::Result<Vec<Found>> {
    let client = common::postgres::connect(&state.pg, crate::TOOL).await?;
    let counted = count_tables(&client, &selection.tables, args.schema_only);
    if args.no_analyze {
        return counted.await;
    }
    let analyzer = common::postgres::connect(&state.pg, crate::TOOL).await?;
    let (analyzed, counted) = tokio::join!(load::analyze(&analyzer), counted);
    analyzed?;
    counted
}

/// Whether each table is in the target, and its rows by `count(*)`.
async fn count_tables(
    client: &tokio_postgres::Client,
    tables: &[&TableEntry],
    schema_only: bool,
) -> anyhow::Result<Vec<Found>> {
    let present = catalog::list_tables(client).await?;
    let mut found = Vec::with_capacity(tables.len());
    for table in tables {
        let is_present = present
            .iter()
            .any(|p| p.schema == table.schema && p.name == table.name);
        let rows = if is_present && !schema_only {
            Some(catalog::count_rows(client, &table.schema, &table.name).await?)
        } else {
            None
        };
        found.push(Found {
            present: is_present,
            rows,
        });
    }
    Ok(found)
}

/// Compares what was found of each restored table with the manifest; prints one record per
/// table. Returns the tables that differ and the rows found.
fn report(
    tables: &[&TableEntry],
    found: &[Found],
    schema_only: bool,
    global: &GlobalArgs,
) -> anyhow::Result<(Vec<String>, u64)> {
    let mut mismatched = Vec::new();
    let mut total_rows = 0;
    for (table, found) in tables.iter().zip(found) {
        let (is_present, rows) = (found.present, found.rows);
        let matches = is_present && (schema_only || rows == Some(table.rows));
        if !matches {
            tracing::warn!(
                "{}: {} after restore, the backup recorded {} rows",
                table.display_name(),
                match rows {
                    Some(n) => format!("{n} rows"),
                    None if is_present => "present".to_string(),
                    None => "missing".to_string(),
                },
                table.rows
            );
            mismatched.push(table.display_name());
        }
        total_rows += rows.unwrap_or(0);
        let record = TableRecord {
            kind: "table",
            schema: &table.schema,
            table: &table.name,
            rows,
            expected: table.rows,
            present: is_present,
            matches,
        };
        match global.output {
            OutputFormat::Json => common::output::json_line(&record)?,
            OutputFormat::Text => common::output::text_line(&format!(
                "{} {}: {} (backup: {})",
                if matches { "ok  " } else { "FAIL" },
                table.display_name(),
                match rows {
                    Some(n) => format!("{n} rows"),
                    None if is_present => "restored".to_string(),
                    None => "missing".to_string(),
                },
                table.rows
            ))?,
        }
    }
    Ok((mismatched, total_rows))
}

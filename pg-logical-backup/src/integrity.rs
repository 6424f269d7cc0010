//! The deep checks of a test restore (seed 001's integrity checks): foreign keys without
//! orphans, indexes valid and structurally sound (amcheck), constraints present and
//! validated, each compared with what the manifest recorded at backup time.

use anyhow::Context;
use tokio_postgres::Client;

use crate::catalog;
use crate::details::DatabaseEntry;
use crate::patterns::{qualified, quote_ident};
use crate::verify::Check;

/// Every foreign key exists validated, and no row points at a missing parent.
pub async fn foreign_keys(client: &Client, db: Option<&str>) -> anyhow::Result<Check> {
    let rows = client
        .query(
            r"SELECT c.conname::text, cn.nspname::text, cl.relname::text, fn.nspname::text, fl.relname::text,
                     ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
                           JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i),
                     ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, i)
                           JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i),
                     c.convalidated
              FROM pg_constraint c
              JOIN pg_class cl ON cl.oid = c.conrelid JOIN pg_namespace cn ON cn.oid = cl.relnamespace
              JOIN pg_class fl ON fl.oid = c.confrelid JOIN pg_namespace fn ON fn.oid = fl.relnamespace
              WHERE c.contype = 'f'",
            &[],
        )
        .await
        .context("cannot list foreign keys")?;
    let mut problems = Vec::new();
    for row in &rows {
        let name: String = row.get(0);
        let child = qualified(row.get(1), row.get(2));
        let parent = qualified(row.get(3), row.get(4));
        let cols: Vec<String> = row.get(5);
        let ref_cols: Vec<String> = row.get(6);
        let validated: bool = row.get(7);
        if !validated {
            problems.push(format!("{name} on {child}: not validated"));
        }
        let not_null: Vec<String> = cols
            .iter()
            .map(|c| format!("c.{} IS NOT NULL", quote_ident(c)))
            .collect();
        let join: Vec<String> = cols
            .iter()
            .zip(&ref_cols)
            .map(|(c, r)| format!("p.{} = c.{}", quote_ident(r), quote_ident(c)))
            .collect();
        let sql = format!(
            "SELECT count(*) FROM ONLY {child} c WHERE {} AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE {})",
            not_null.join(" AND "),
            join.join(" AND ")
        );
        let orphans: i64 = client
            .query_one(&sql, &[])
            .await
            .with_context(|| format!("cannot check foreign key {name}"))?
            .get(0);
        if orphans > 0 {
            problems.push(format!(
                "{name} on {child}: {orphans} rows without a parent in {parent}"
            ));
        }
    }
    Ok(Check::new(
        "foreign_keys",
        db,
        format!("{} foreign keys", rows.len()),
        problems,
    ))
}

/// Index counts as in the manifest, every index valid, and B-tree structure checked with
/// amcheck when the server has it.
pub async fn indexes(
    client: &Client,
    db: &DatabaseEntry,
    present: &[catalog::TableInfo],
    name: Option<&str>,
) -> anyhow::Result<Check> {
    let mut problems = Vec::new();
    for t in &db.tables {
        if let Some(p) = present
            .iter()
            .find(|p| p.schema == t.schema && p.name == t.name)
        {
            if p.indexes != t.indexes {
                problems.push(format!(
                    "{}: {} indexes restored, the backup had {}",
                    t.display_name(),
                    p.indexes,
                    t.indexes
                ));
            }
        }
    }
    let invalid = client
        .query(
            "SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE NOT (i.indisvalid AND i.indisready)",
            &[],
        )
        .await
        .context("cannot list invalid indexes")?;
    for row in &invalid {
        problems.push(format!("index {} is invalid", row.get::<_, String>(0)));
    }
    let mut detail = format!(
        "{} indexes",
        db.tables.iter().map(|t| t.indexes).sum::<u32>()
    );
    if client
        .batch_execute("CREATE EXTENSION IF NOT EXISTS amcheck")
        .await
        .is_ok()
    {
        let btrees = client
            .query(
                "SELECT c.oid, n.nspname::text, c.relname::text FROM pg_index i
                 JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                 JOIN pg_am am ON am.oid = c.relam
                 WHERE am.amname = 'btree' AND c.relkind = 'i'
                   AND n.nspname NOT IN ('pg_catalog', 'pg_toast', 'information_schema')",
                &[],
            )
            .await
            .context("cannot list B-tree indexes")?;
        for row in &btrees {
            let oid: u32 = row.get(0);
            if let Err(e) = client
                .batch_execute(&format!(
                    "SELECT bt_index_check({oid}::oid::regclass, true)"
                ))
                .await
            {
                problems.push(format!(
                    "index {}.{}: amcheck: {}",
                    row.get::<_, String>(1),
                    row.get::<_, String>(2),
                    catalog::db_message(&e)
                ));
            }
        }
        detail.push_str(&format!(", {} B-trees checked with amcheck", btrees.len()));
    } else {
        detail.push_str(", amcheck not available");
    }
    Ok(Check::new("indexes", name, detail, problems))
}

/// Constraint counts as in the manifest, and every constraint validated.
pub async fn constraints(
    client: &Client,
    db: &DatabaseEntry,
    present: &[catalog::TableInfo],
    name: Option<&str>,
) -> anyhow::Result<Check> {
    let mut problems = Vec::new();
    for t in &db.tables {
        if let Some(p) = present
            .iter()
            .find(|p| p.schema == t.schema && p.name == t.name)
        {
            if p.constraints != t.constraints {
                problems.push(format!(
                    "{}: {} constraints restored, the backup had {}",
                    t.display_name(),
                    p.constraints,
                    t.constraints
                ));
            }
        }
    }
    let unvalidated = client
        .query(
            "SELECT conname::text, conrelid::regclass::text FROM pg_constraint WHERE NOT convalidated AND conrelid <> 0",
            &[],
        )
        .await
        .context("cannot list constraints")?;
    for row in &unvalidated {
        problems.push(format!(
            "constraint {} on {} is not validated",
            row.get::<_, String>(0),
            row.get::<_, String>(1)
        ));
    }
    Ok(Check::new(
        "constraints",
        name,
        format!(
            "{} constraints",
            db.tables.iter().map(|t| t.constraints).sum::<u32>()
        ),
        problems,
    ))
}

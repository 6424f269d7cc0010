//! The deep checks of a test restore: foreign keys without orphans, indexes valid and
//! structurally sound (amcheck), constraints present and validated, each compared with what
//! the manifest recorded at backup time.

use anyhow::Context;
use tokio_postgres::Client;

use crate::catalog;
use crate::details::DatabaseEntry;
use crate::patterns::{qualified, quote_ident};
use crate::verify::Check;

/// A foreign key of the connected database.
#[derive(Debug, Clone)]
pub struct ForeignKey {
    pub name: String,
    /// (schema, table) of the referencing side.
    pub child: (String, String),
    /// (schema, table) of the referenced side.
    pub parent: (String, String),
    pub columns: Vec<String>,
    pub ref_columns: Vec<String>,
    pub validated: bool,
}

impl ForeignKey {
    /// `SELECT <what>` over the referencing rows whose parent row is missing (MATCH SIMPLE:
    /// rows with a NULL in the key reference nothing).
    pub fn orphans_query(&self, what: &str) -> String {
        let not_null: Vec<String> = self
            .columns
            .iter()
            .map(|c| format!("c.{} IS NOT NULL", quote_ident(c)))
            .collect();
        let join: Vec<String> = self
            .columns
            .iter()
            .zip(&self.ref_columns)
            .map(|(c, r)| format!("p.{} = c.{}", quote_ident(r), quote_ident(c)))
            .collect();
        format!(
            "SELECT {what} FROM ONLY {} c WHERE {} AND NOT EXISTS (SELECT 1 FROM {} p WHERE {})",
            qualified(&self.child.0, &self.child.1),
            not_null.join(" AND "),
            qualified(&self.parent.0, &self.parent.1),
            join.join(" AND ")
        )
    }

    /// A statement that fails (and so rolls back its transaction) when a reference is broken.
    pub fn check_statement(&self) -> String {
        let message = format!(
            "foreign key {} of {}.{}: rows without a parent in {}.{}",
            self.name, self.child.0, self.child.1, self.parent.0, self.parent.1
        )
        .replace('\'', "''");
        format!(
            "DO $pglb$ BEGIN IF EXISTS ({}) THEN RAISE EXCEPTION '%', '{message}'; END IF; END $pglb$;",
            self.orphans_query("1")
        )
    }

    /// True when either side is one of `tables`.
    pub fn touches(&self, tables: &[(String, String)]) -> bool {
        tables.contains(&self.child) || tables.contains(&self.parent)
    }
}

/// Every foreign key of the connected database.
pub async fn list_foreign_keys(client: &Client) -> anyhow::Result<Vec<ForeignKey>> {
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
    Ok(rows
        .iter()
        .map(|row| ForeignKey {
            name: row.get(0),
            child: (row.get(1), row.get(2)),
            parent: (row.get(3), row.get(4)),
            columns: row.get(5),
            ref_columns: row.get(6),
            validated: row.get(7),
        })
        .collect())
}

/// Every foreign key exists validated, and no row points at a missing parent.
pub async fn foreign_keys(client: &Client, db: Option<&str>) -> anyhow::Result<Check> {
    let keys = list_foreign_keys(client).await?;
    let mut problems = Vec::new();
    for key in &keys {
        let child = format!("{}.{}", key.child.0, key.child.1);
        if !key.validated {
            problems.push(format!("{} on {child}: not validated", key.name));
        }
        let orphans: i64 = client
            .query_one(&key.orphans_query("count(*)"), &[])
            .await
            .with_context(|| format!("cannot check foreign key {}", key.name))?
            .get(0);
        if orphans > 0 {
            problems.push(format!(
                "{} on {child}: {orphans} rows without a parent in {}.{}",
                key.name, key.parent.0, key.parent.1
            ));
        }
    }
    Ok(Check::new(
        "foreign_keys",
        db,
        format!("{} foreign keys", keys.len()),
        problems,
    ))
}

/// `"<table>: N <what> restored, the backup had M"` for every table whose restored count
/// differs from the manifest's.
fn count_mismatches(
    db: &DatabaseEntry,
    present: &[catalog::TableInfo],
    what: &str,
    restored: impl Fn(&catalog::TableInfo) -> u32,
    saved: impl Fn(&crate::details::TableEntry) -> u32,
) -> Vec<String> {
    db.tables
        .iter()
        .filter_map(|t| {
            let p = present
                .iter()
                .find(|p| p.schema == t.schema && p.name == t.name)?;
            (restored(p) != saved(t)).then(|| {
                format!(
                    "{}: {} {what} restored, the backup had {}",
                    t.display_name(),
                    restored(p),
                    saved(t)
                )
            })
        })
        .collect()
}

/// Index counts as in the manifest, every index valid, and B-tree structure checked with
/// amcheck when the server has it.
pub async fn indexes(
    client: &Client,
    db: &DatabaseEntry,
    present: &[catalog::TableInfo],
    name: Option<&str>,
) -> anyhow::Result<Check> {
    let mut problems = count_mismatches(db, present, "indexes", |p| p.indexes, |t| t.indexes);
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
    let mut problems = count_mismatches(
        db,
        present,
        "constraints",
        |p| p.constraints,
        |t| t.constraints,
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orphan_checks_quote_names_and_skip_null_keys() {
        let key = ForeignKey {
            name: "it's".into(),
            child: ("public".into(), "Order Lines".into()),
            parent: ("public".into(), "orders".into()),
            columns: vec!["order_id".into(), "Shop".into()],
            ref_columns: vec!["id".into(), "shop".into()],
            validated: true,
        };
        let sql = key.orphans_query("1");
        assert_eq!(
            sql,
            "SELECT 1 FROM ONLY \"public\".\"Order Lines\" c WHERE c.\"order_id\" IS NOT NULL AND c.\"Shop\" IS NOT NULL AND NOT EXISTS (SELECT 1 FROM \"public\".\"orders\" p WHERE p.\"id\" = c.\"order_id\" AND p.\"shop\" = c.\"Shop\")"
        );
        assert!(key
            .check_statement()
            .contains("'foreign key it''s of public.Order Lines"));
        assert!(key.touches(&[("public".into(), "orders".into())]));
        assert!(!key.touches(&[("public".into(), "other".into())]));
    }
}

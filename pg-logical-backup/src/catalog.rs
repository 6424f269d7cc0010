//! What the server holds: its version, its databases, and the user tables of a database with
//! their sizes, index and constraint counts and exact row counts.

use anyhow::Context;
use common::cli::PgArgs;
use tokio_postgres::Client;

use crate::patterns::{qualified, quote_ident, TablePattern};

/// The server we talk to.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// `server_version`, e.g. `15.8 (Debian 15.8-1)`.
    pub version: String,
    /// `server_version_num`, e.g. 150008.
    pub version_num: i32,
}

/// Reads the server version.
pub async fn server_info(client: &Client) -> anyhow::Result<ServerInfo> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int",
            &[],
        )
        .await
        .context("cannot read the server version")?;
    Ok(ServerInfo {
        version: row.get(0),
        version_num: row.get(1),
    })
}

/// Every database a logical backup of the whole server covers: all that accept connections,
/// except the templates.
pub async fn list_databases(client: &Client) -> anyhow::Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname",
            &[],
        )
        .await
        .context("cannot list databases")?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// True when the database exists.
pub async fn database_exists(client: &Client, name: &str) -> anyhow::Result<bool> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
            &[&name],
        )
        .await
        .context("cannot look up the database")?;
    Ok(row.get(0))
}

/// The encoding of the connected database.
pub async fn database_encoding(client: &Client) -> anyhow::Result<String> {
    let row = client
        .query_one("SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()", &[])
        .await
        .context("cannot read the database encoding")?;
    Ok(row.get(0))
}

/// One user table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    pub schema: String,
    pub name: String,
    /// `r` ordinary, `p` partitioned (holds no rows itself).
    pub kind: char,
    /// `pg_total_relation_size`: heap, indexes and TOAST.
    pub size_bytes: u64,
    pub indexes: u32,
    pub constraints: u32,
    /// Names of its indexes.
    pub index_names: Vec<String>,
    /// Sequences it owns (serial, identity), as (schema, name).
    pub sequences: Vec<(String, String)>,
}

impl TableInfo {
    /// `schema.table` for messages.
    pub fn display_name(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// Exact SQL name.
    pub fn sql_name(&self) -> String {
        qualified(&self.schema, &self.name)
    }
}

/// User tables of the connected database (not system, temporary or extension-owned ones,
/// whose data pg_dump does not dump), sorted by schema and name.
pub async fn list_tables(client: &Client) -> anyhow::Result<Vec<TableInfo>> {
    let rows = client
        .query(
            r"SELECT n.nspname, c.relname, c.relkind::text, pg_total_relation_size(c.oid),
                     (SELECT count(*) FROM pg_index i WHERE i.indrelid = c.oid),
                     (SELECT count(*) FROM pg_constraint k WHERE k.conrelid = c.oid),
                     ARRAY(SELECT x.relname::text FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid
                           WHERE i.indrelid = c.oid ORDER BY 1),
                     ARRAY(SELECT sn.nspname::text FROM pg_depend d
                             JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
                             JOIN pg_namespace sn ON sn.oid = s.relnamespace
                           WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
                             AND d.refobjid = c.oid AND d.deptype IN ('a', 'i') ORDER BY s.relname),
                     ARRAY(SELECT s.relname::text FROM pg_depend d
                             JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
                           WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
                             AND d.refobjid = c.oid AND d.deptype IN ('a', 'i') ORDER BY s.relname)
              FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind IN ('r', 'p') AND c.relpersistence <> 't'
                AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp\_%'
                AND NOT EXISTS (SELECT 1 FROM pg_depend d
                                WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                                  AND d.deptype = 'e')
              ORDER BY n.nspname, c.relname",
            &[],
        )
        .await
        .context("cannot list tables")?;
    Ok(rows
        .iter()
        .map(|r| TableInfo {
            schema: r.get(0),
            name: r.get(1),
            kind: r.get::<_, String>(2).chars().next().unwrap_or('r'),
            size_bytes: u64::try_from(r.get::<_, i64>(3)).unwrap_or(0),
            indexes: u32::try_from(r.get::<_, i64>(4)).unwrap_or(0),
            constraints: u32::try_from(r.get::<_, i64>(5)).unwrap_or(0),
            index_names: r.get(6),
            sequences: r
                .get::<_, Vec<String>>(7)
                .into_iter()
                .zip(r.get::<_, Vec<String>>(8))
                .collect(),
        })
        .collect())
}

/// Rows stored in the table itself (`ONLY`: not in partitions or inheritance children,
/// which are counted as tables of their own), as seen by the connection's snapshot.
pub async fn count_rows(client: &Client, schema: &str, table: &str) -> anyhow::Result<u64> {
    let sql = format!("SELECT count(*) FROM ONLY {}", qualified(schema, table));
    let row = client
        .query_one(&sql, &[])
        .await
        .with_context(|| format!("cannot count the rows of {schema}.{table}"))?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}

/// Which tables get a dump of their own: those matching any `include` pattern (all when
/// there is none) and no `exclude` pattern. Fails when an include pattern matches nothing.
pub fn select_tables<'a>(
    tables: &'a [TableInfo],
    include: &[TablePattern],
    exclude: &[TablePattern],
    database: &str,
) -> anyhow::Result<Vec<&'a TableInfo>> {
    for pattern in include {
        if !tables.iter().any(|t| pattern.matches(&t.schema, &t.name)) {
            anyhow::bail!(
                "--table '{pattern}' matches no table in database '{database}' (patterns are [schema.]table with * and ?; list tables with psql's \\dt *.*)"
            );
        }
    }
    Ok(tables
        .iter()
        .filter(|t| include.is_empty() || include.iter().any(|p| p.matches(&t.schema, &t.name)))
        .filter(|t| !exclude.iter().any(|p| p.matches(&t.schema, &t.name)))
        .collect())
}

/// The server's message of a failed statement (tokio-postgres' own text is just "db error").
pub fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}

/// Settings for connecting to another database of the same server.
pub fn for_database(pg: &PgArgs, dbname: &str) -> PgArgs {
    PgArgs {
        dbname: Some(dbname.to_string()),
        ..pg.clone()
    }
}

/// `CREATE DATABASE` from template0 with the given encoding, if known.
pub async fn create_database(
    client: &Client,
    name: &str,
    encoding: Option<&str>,
) -> anyhow::Result<()> {
    let mut sql = format!("CREATE DATABASE {} TEMPLATE template0", quote_ident(name));
    if let Some(encoding) =
        encoding.filter(|e| e.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    {
        sql.push_str(&format!(" ENCODING '{encoding}'"));
    }
    client
        .batch_execute(&sql)
        .await
        .with_context(|| format!("cannot create database '{name}'"))
}

/// Drops a database, disconnecting its sessions first.
pub async fn drop_database(client: &Client, name: &str) -> anyhow::Result<()> {
    client
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(name)
        ))
        .await
        .with_context(|| format!("cannot drop database '{name}'"))
}

/// Ends every other session on a database; returns how many.
pub async fn terminate_sessions(client: &Client, name: &str) -> anyhow::Result<u64> {
    let row = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&name],
        )
        .await
        .with_context(|| format!("cannot terminate the sessions on '{name}'"))?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(schema: &str, name: &str) -> TableInfo {
        TableInfo {
            schema: schema.into(),
            name: name.into(),
            kind: 'r',
            size_bytes: 0,
            indexes: 0,
            constraints: 0,
            index_names: Vec::new(),
            sequences: Vec::new(),
        }
    }

    #[test]
    fn selection_applies_include_then_exclude() {
        let tables = vec![
            table("public", "a"),
            table("public", "b"),
            table("audit", "log"),
        ];
        let include = crate::patterns::parse_all(&["public.*".into()]).unwrap();
        let exclude = crate::patterns::parse_all(&["b".into()]).unwrap();
        let picked = select_tables(&tables, &include, &exclude, "db").unwrap();
        assert_eq!(picked, vec![&tables[0]]);
        let all = select_tables(&tables, &[], &[], "db").unwrap();
        assert_eq!(all.len(), 3);
    }

    #[test]
    fn unmatched_include_is_an_error() {
        let tables = vec![table("public", "a")];
        let include = crate::patterns::parse_all(&["nope".into()]).unwrap();
        let err = select_tables(&tables, &include, &[], "db").unwrap_err();
        assert!(err.to_string().contains("'nope' matches no table"));
    }
}

//! The server being examined: connections to its databases and what it says about itself
//! (version, system identifier, timeline, current WAL position, settings).

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use common::cli::PgArgs;

use common::lsn::Lsn;

/// `application_name` of every connection, so the tool's sessions are recognisable.
pub const APPLICATION_NAME: &str = "cdc-slot-tool";

/// Opens connections to any database of one server with the same libpq settings.
#[derive(Debug, Clone)]
pub struct Server {
    pg: PgArgs,
}

impl Server {
    pub fn new(pg: &PgArgs) -> Server {
        // Slots and publications need no particular database: `postgres` unless one is named.
        Server {
            pg: pg.for_server_work(),
        }
    }

    /// The database named by `--dbname`/`PGDATABASE` (the maintenance connection).
    pub fn default_dbname(&self) -> String {
        self.pg.dbname()
    }

    /// Server description for logs and manifests (never a password).
    pub fn describe(&self) -> String {
        self.pg.describe()
    }

    /// Connects to `dbname`, or to the default database when None.
    pub async fn connect(&self, dbname: Option<&str>) -> anyhow::Result<Client> {
        let mut config = common::postgres::config(&self.pg, APPLICATION_NAME);
        let mut describe = self.pg.describe();
        if let Some(db) = dbname {
            config.dbname(db);
            describe = format!(
                "host={} port={} user={} dbname={db}",
                self.pg.host(),
                self.pg.port(),
                self.pg.user()
            );
        }
        common::postgres::connect_config(&config, &describe).await
    }
}

/// Who the server is and where its WAL stands, at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// `pg_control_system().system_identifier`, as text (it does not fit a JSON double).
    pub system_identifier: String,
    /// Timeline the server writes (or replays, on a standby).
    pub timeline: u32,
    /// `pg_current_wal_lsn()`, or the replay position on a standby.
    pub current_lsn: Lsn,
    pub in_recovery: bool,
    pub server_version_num: u32,
    pub server_version: String,
    pub wal_level: String,
    pub max_replication_slots: u32,
}

impl Identity {
    /// Logical slots can be created here.
    pub fn supports_logical(&self) -> bool {
        self.wal_level == "logical"
    }
}

/// Reads the server's identity. Needs superuser or `pg_monitor` membership for
/// `pg_control_system()`.
pub async fn identity(client: &Client) -> anyhow::Result<Identity> {
    let row = client
        .query_one(
            "SELECT (SELECT system_identifier FROM pg_control_system())::text,
                    pg_is_in_recovery(),
                    (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                          ELSE pg_current_wal_lsn() END)::text,
                    CASE WHEN pg_is_in_recovery()
                         THEN lpad(to_hex((SELECT timeline_id FROM pg_control_checkpoint())), 8, '0')
                         ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END,
                    current_setting('server_version_num'),
                    current_setting('server_version'),
                    current_setting('wal_level'),
                    current_setting('max_replication_slots')",
            &[],
        )
        .await
        .context(
            "cannot read the server identity (pg_control_system, pg_current_wal_lsn); \
             connect as a superuser or a member of pg_monitor",
        )?;
    let lsn: Option<String> = row.get(2);
    let timeline: String = row.get(3);
    let version_num: String = row.get(4);
    let max_slots: String = row.get(7);
    Ok(Identity {
        system_identifier: row.get(0),
        in_recovery: row.get(1),
        current_lsn: parse_lsn(lsn.as_deref().unwrap_or("0/0"))?,
        timeline: u32::from_str_radix(&timeline, 16)
            .with_context(|| format!("unexpected timeline '{timeline}' from the server"))?,
        server_version_num: version_num
            .parse()
            .with_context(|| format!("unexpected server_version_num '{version_num}'"))?,
        server_version: row.get(5),
        wal_level: row.get(6),
        max_replication_slots: max_slots
            .parse()
            .with_context(|| format!("unexpected max_replication_slots '{max_slots}'"))?,
    })
}

/// Databases a tool can connect to (not templates, connections allowed), sorted.
pub async fn databases(client: &Client) -> anyhow::Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT datname FROM pg_database
             WHERE datallowconn AND NOT datistemplate ORDER BY datname",
            &[],
        )
        .await
        .context("cannot list databases")?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The serde name of a unit enum variant (`would_create`), for text output that matches
/// the JSON.
pub fn serde_name<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// An LSN the server printed.
pub fn parse_lsn(text: &str) -> anyhow::Result<Lsn> {
    text.parse().map_err(anyhow::Error::msg)
}

/// `"name"` quoted as an SQL identifier.
pub use common::postgres::quote_ident;

/// `'text'` quoted as an SQL string literal.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_escapes() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}

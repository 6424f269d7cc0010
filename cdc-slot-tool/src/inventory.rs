//! What a slot backup records: every replication slot, the server's identity and WAL
//! position, publications with their tables and options, and slot statistics.
//!
//! Rows are read as `row_to_json`, so one query fits every server version: columns a
//! version lacks (`two_phase` before 14, `failover` before 17) simply come out as None.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio_postgres::Client;

use common::timefmt::rfc3339;
use common::wal::history::HistoryEntry;

use crate::history;
use crate::server::{self, Identity, Server};
use crate::size;
use common::lsn::Lsn;

/// Version of `slots.json`; bumped on incompatible changes.
pub const INVENTORY_VERSION: u32 = 1;

/// One replication slot as `pg_replication_slots` shows it, plus the computed lag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slot {
    pub slot_name: String,
    /// `logical` or `physical`.
    pub slot_type: String,
    /// Output plugin of a logical slot (`pgoutput`, `test_decoding`, `wal2json`...).
    #[serde(default)]
    pub plugin: Option<String>,
    /// Database of a logical slot.
    #[serde(default)]
    pub database: Option<String>,
    #[serde(default)]
    pub temporary: bool,
    #[serde(default)]
    pub active: bool,
    #[serde(default)]
    pub active_pid: Option<i64>,
    /// PostgreSQL 14+.
    #[serde(default)]
    pub two_phase: Option<bool>,
    /// PostgreSQL 17+.
    #[serde(default)]
    pub failover: Option<bool>,
    #[serde(default)]
    pub restart_lsn: Option<Lsn>,
    #[serde(default)]
    pub confirmed_flush_lsn: Option<Lsn>,
    /// `reserved`, `extended`, `unreserved` or `lost` (PostgreSQL 13+).
    #[serde(default)]
    pub wal_status: Option<String>,
    /// Bytes of WAL that can still be written before the slot is in danger of being lost;
    /// None when `max_slot_wal_keep_size` is unlimited.
    #[serde(default)]
    pub safe_wal_size: Option<i64>,
    /// PostgreSQL 17+: when the slot became inactive.
    #[serde(default)]
    pub inactive_since: Option<String>,
    /// PostgreSQL 16+: invalidated by a recovery conflict.
    #[serde(default)]
    pub conflicting: Option<bool>,
    /// PostgreSQL 17+.
    #[serde(default)]
    pub invalidation_reason: Option<String>,
    /// Bytes between the server's current position and what the consumer confirmed
    /// (`confirmed_flush_lsn` of a logical slot, `restart_lsn` of a physical one).
    #[serde(default)]
    pub lag_bytes: Option<u64>,
    /// Bytes of WAL the slot holds back (from `restart_lsn`).
    #[serde(default)]
    pub retained_wal_bytes: Option<u64>,
}

impl Slot {
    pub fn is_logical(&self) -> bool {
        self.slot_type == "logical"
    }

    /// The position a consumer has acknowledged.
    pub fn consumer_lsn(&self) -> Option<Lsn> {
        if self.is_logical() {
            self.confirmed_flush_lsn
        } else {
            self.restart_lsn
        }
    }

    fn compute_lag(&mut self, current: Lsn) {
        self.lag_bytes = self.consumer_lsn().map(|lsn| size::wal_bytes(lsn, current));
        self.retained_wal_bytes = self.restart_lsn.map(|lsn| size::wal_bytes(lsn, current));
    }
}

/// A `schema.table` name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

/// A table named in a publication, with its PostgreSQL 15 column list and row filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedTable {
    pub schema: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_filter: Option<String>,
}

/// A publication as defined, enough to create it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publication {
    pub database: String,
    pub name: String,
    pub owner: String,
    pub all_tables: bool,
    /// Operations published: `insert`, `update`, `delete`, `truncate`.
    pub publish: Vec<String>,
    #[serde(default)]
    pub via_partition_root: Option<bool>,
    /// Tables named in the definition (`FOR TABLE ...`).
    pub tables: Vec<PublishedTable>,
    /// Schemas named in the definition (`FOR TABLES IN SCHEMA ...`, PostgreSQL 15+).
    #[serde(default)]
    pub schemas: Vec<String>,
    /// Every table the publication covers at backup time (`pg_publication_tables`).
    pub effective_tables: Vec<TableName>,
}

/// A database whose publications could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedDatabase {
    pub database: String,
    pub error: String,
}

/// Everything one slot backup holds (`slots.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Inventory {
    pub format_version: u32,
    #[serde(with = "rfc3339")]
    pub taken_at: OffsetDateTime,
    pub server: Identity,
    /// Ancestors of the server's timeline at backup time; None when they could not be read.
    #[serde(default)]
    pub timeline_history: Option<Vec<HistoryEntry>>,
    pub slots: Vec<Slot>,
    pub publications: Vec<Publication>,
    /// Rows of `pg_stat_replication_slots` (PostgreSQL 14+), None when the view is missing.
    #[serde(default)]
    pub slot_stats: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    pub skipped_databases: Vec<SkippedDatabase>,
}

impl Inventory {
    pub fn slot(&self, name: &str) -> Option<&Slot> {
        self.slots.iter().find(|s| s.slot_name == name)
    }

    /// Parses the text of a `slots.json`, refusing a newer format; `shown` names the file in
    /// errors.
    pub fn parse(text: &[u8], shown: &str) -> anyhow::Result<Inventory> {
        let inventory: Inventory = serde_json::from_slice(text)
            .with_context(|| format!("{shown} is not a slot inventory"))?;
        if inventory.format_version > INVENTORY_VERSION {
            anyhow::bail!(
                "{shown} has format version {}, newer than this tool understands ({INVENTORY_VERSION}); upgrade cdc-slot-tool",
                inventory.format_version,
            );
        }
        Ok(inventory)
    }
}

/// Reads every slot, then the identity (so lags are never negative).
pub async fn slots_and_identity(client: &Client) -> anyhow::Result<(Vec<Slot>, Identity)> {
    let rows = client
        .query(
            "SELECT row_to_json(s)::text FROM pg_replication_slots s ORDER BY slot_name",
            &[],
        )
        .await
        .context("cannot read pg_replication_slots")?;
    let mut slots = Vec::with_capacity(rows.len());
    for row in rows {
        let json: String = row.get(0);
        let slot: Slot = serde_json::from_str(&json)
            .with_context(|| format!("unexpected pg_replication_slots row {json}"))?;
        slots.push(slot);
    }
    let identity = server::identity(client).await?;
    for slot in &mut slots {
        slot.compute_lag(identity.current_lsn);
    }
    Ok((slots, identity))
}

/// `pg_stat_replication_slots`, or None before PostgreSQL 14.
pub async fn slot_stats(
    client: &Client,
    identity: &Identity,
) -> anyhow::Result<Option<Vec<serde_json::Value>>> {
    if identity.server_version_num < 140000 {
        return Ok(None);
    }
    let rows = client
        .query(
            "SELECT row_to_json(s)::text FROM pg_stat_replication_slots s ORDER BY slot_name",
            &[],
        )
        .await
        .context("cannot read pg_stat_replication_slots")?;
    let mut stats = Vec::with_capacity(rows.len());
    for row in rows {
        let json: String = row.get(0);
        stats.push(serde_json::from_str(&json)?);
    }
    Ok(Some(stats))
}

#[derive(Deserialize)]
struct PublicationRow {
    pubname: String,
    puballtables: bool,
    pubinsert: bool,
    pubupdate: bool,
    pubdelete: bool,
    #[serde(default)]
    pubtruncate: Option<bool>,
    #[serde(default)]
    pubviaroot: Option<bool>,
}

impl PublicationRow {
    /// The operations published, by their `CREATE PUBLICATION ... WITH (publish = ...)` names.
    fn publish(&self) -> Vec<String> {
        [
            ("insert", self.pubinsert),
            ("update", self.pubupdate),
            ("delete", self.pubdelete),
            ("truncate", self.pubtruncate.unwrap_or(false)),
        ]
        .into_iter()
        .filter(|(_, on)| *on)
        .map(|(op, _)| op.to_string())
        .collect()
    }
}

/// The publications of the database `client` is connected to.
pub async fn publications(
    client: &Client,
    database: &str,
    version_num: u32,
) -> anyhow::Result<Vec<Publication>> {
    let rows = client
        .query(
            "SELECT row_to_json(p)::text, pg_get_userbyid(p.pubowner)::text, p.oid
             FROM pg_publication p ORDER BY p.pubname",
            &[],
        )
        .await
        .context("cannot read pg_publication")?;
    let mut publications = Vec::with_capacity(rows.len());
    for row in rows {
        let json: String = row.get(0);
        let p: PublicationRow = serde_json::from_str(&json)
            .with_context(|| format!("unexpected pg_publication row {json}"))?;
        let oid: u32 = row.get(2);
        publications.push(Publication {
            database: database.to_string(),
            owner: row.get(1),
            all_tables: p.puballtables,
            publish: p.publish(),
            via_partition_root: p.pubviaroot,
            tables: listed_tables(client, oid, &p.pubname, version_num).await?,
            schemas: listed_schemas(client, oid, &p.pubname, version_num).await?,
            effective_tables: effective_tables(client, &p.pubname).await?,
            name: p.pubname,
        });
    }
    Ok(publications)
}

/// The tables publication `oid` lists by name, with their row filters and column lists
/// (PostgreSQL 15+).
async fn listed_tables(
    client: &Client,
    oid: u32,
    name: &str,
    version_num: u32,
) -> anyhow::Result<Vec<PublishedTable>> {
    let sql = if version_num >= 150000 {
        "SELECT n.nspname::text, c.relname::text, pg_get_expr(pr.prqual, pr.prrelid),
                (SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
                 WHERE a.attrelid = pr.prrelid AND a.attnum = ANY(pr.prattrs::int2[]))
         FROM pg_publication_rel pr
         JOIN pg_class c ON c.oid = pr.prrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE pr.prpubid = $1 ORDER BY 1, 2"
    } else {
        "SELECT n.nspname::text, c.relname::text, NULL::text, NULL::text[]
         FROM pg_publication_rel pr
         JOIN pg_class c ON c.oid = pr.prrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE pr.prpubid = $1 ORDER BY 1, 2"
    };
    Ok(client
        .query(sql, &[&oid])
        .await
        .with_context(|| format!("cannot read the tables of publication {name}"))?
        .iter()
        .map(|r| PublishedTable {
            schema: r.get(0),
            name: r.get(1),
            row_filter: r.get(2),
            columns: r.get(3),
        })
        .collect())
}

/// The schemas publication `oid` lists (`FOR TABLES IN SCHEMA`, PostgreSQL 15+).
async fn listed_schemas(
    client: &Client,
    oid: u32,
    name: &str,
    version_num: u32,
) -> anyhow::Result<Vec<String>> {
    if version_num < 150000 {
        return Ok(Vec::new());
    }
    Ok(client
        .query(
            "SELECT n.nspname::text FROM pg_publication_namespace pn
             JOIN pg_namespace n ON n.oid = pn.pnnspid
             WHERE pn.pnpubid = $1 ORDER BY 1",
            &[&oid],
        )
        .await
        .with_context(|| format!("cannot read the schemas of publication {name}"))?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Every table publication `name` covers, however it came to: `pg_publication_tables`.
async fn effective_tables(client: &Client, name: &str) -> anyhow::Result<Vec<TableName>> {
    Ok(client
        .query(
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables
             WHERE pubname = $1 ORDER BY 1, 2",
            &[&name],
        )
        .await
        .with_context(|| format!("cannot read pg_publication_tables for {name}"))?
        .iter()
        .map(|r| TableName {
            schema: r.get(0),
            name: r.get(1),
        })
        .collect())
}

/// Collects the whole inventory: slots and identity on the default connection, then the
/// publications of every database that accepts connections.
pub async fn collect(server: &Server) -> anyhow::Result<Inventory> {
    let client = server.connect(None).await?;
    let (slots, identity) = slots_and_identity(&client).await?;
    let slot_stats = slot_stats(&client, &identity).await?;
    let timeline_history = match history::read(&client, identity.timeline).await {
        Ok(entries) => Some(entries),
        Err(e) => {
            tracing::warn!(
                "the backup will not hold the timeline history, so a restore onto a sibling \
                 timeline cannot find the fork: {e:#}"
            );
            None
        }
    };
    let default_db = server.default_dbname();
    let mut publications = Vec::new();
    let mut skipped_databases = Vec::new();
    for database in server::databases(&client).await? {
        if database == default_db {
            publications.append(&mut publications_of(&client, &database, &identity).await?);
            continue;
        }
        // A database we may not connect to is noted and skipped; anything else is an error.
        match server.connect(Some(&database)).await {
            Ok(db_client) => {
                publications.append(&mut publications_of(&db_client, &database, &identity).await?)
            }
            Err(e) => {
                tracing::warn!("skipping the publications of database {database}: {e:#}");
                skipped_databases.push(SkippedDatabase {
                    database,
                    error: format!("{e:#}"),
                });
            }
        }
    }
    Ok(Inventory {
        format_version: INVENTORY_VERSION,
        taken_at: common::timefmt::now(),
        server: identity,
        timeline_history,
        slots,
        publications,
        slot_stats,
        skipped_databases,
    })
}

async fn publications_of(
    client: &Client,
    database: &str,
    identity: &Identity,
) -> anyhow::Result<Vec<Publication>> {
    publications(client, database, identity.server_version_num)
        .await
        .with_context(|| format!("in database {database}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_pg15_slot_row_and_computes_lag() {
        let json = r#"{"slot_name":"s1","plugin":"pgoutput","slot_type":"logical",
            "datoid":5,"database":"app","temporary":false,"active":false,"active_pid":null,
            "xmin":null,"catalog_xmin":"735","restart_lsn":"0/1500000",
            "confirmed_flush_lsn":"0/1500100","wal_status":"reserved","safe_wal_size":null,
            "two_phase":false}"#;
        let mut slot: Slot = serde_json::from_str(json).unwrap();
        slot.compute_lag("0/1500200".parse().unwrap());
        assert_eq!(slot.lag_bytes, Some(0x100));
        assert_eq!(slot.retained_wal_bytes, Some(0x200));
        assert_eq!(slot.failover, None);
        assert_eq!(slot.two_phase, Some(false));
        assert_eq!(slot.database.as_deref(), Some("app"));
    }

    #[test]
    fn physical_slot_lag_uses_restart_lsn() {
        let json = r#"{"slot_name":"standby","plugin":null,"slot_type":"physical",
            "database":null,"temporary":false,"active":true,"restart_lsn":null,
            "confirmed_flush_lsn":null,"wal_status":null,"safe_wal_size":null}"#;
        let mut slot: Slot = serde_json::from_str(json).unwrap();
        slot.compute_lag("0/10".parse().unwrap());
        assert_eq!(slot.lag_bytes, None);
        assert!(!slot.is_logical());
    }
}

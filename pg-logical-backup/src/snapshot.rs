//! The exported snapshot every part of a database's backup is taken from.
//!
//! A REPEATABLE READ, READ ONLY transaction exports its snapshot with
//! `pg_export_snapshot()` and stays open until every pg_dump has started with
//! `--snapshot` and every row count has been taken in the same transaction. So the
//! whole-database dump, the table dumps, the schema dump and the manifest's row counts all
//! show the database at one instant, however busy it is.

use anyhow::Context;
use common::cli::PgArgs;
use time::OffsetDateTime;
use tokio_postgres::Client;

use crate::catalog::{self, TableInfo};

/// An open transaction holding an exported snapshot of one database.
pub struct SnapshotSession {
    client: Client,
    pub database: String,
    /// The id to pass to `pg_dump --snapshot`.
    pub snapshot: String,
    /// WAL position when the snapshot was taken (replay position on a standby).
    pub lsn: String,
    pub time: OffsetDateTime,
    pub encoding: String,
    /// User tables as the snapshot sees them.
    pub tables: Vec<TableInfo>,
}

impl std::fmt::Debug for SnapshotSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotSession")
            .field("database", &self.database)
            .field("snapshot", &self.snapshot)
            .finish_non_exhaustive()
    }
}

impl SnapshotSession {
    /// Connects to `database`, starts the transaction and exports its snapshot.
    pub async fn open(pg: &PgArgs, database: &str) -> anyhow::Result<SnapshotSession> {
        let settings = catalog::for_database(pg, database);
        let client = common::postgres::connect(&settings, crate::TOOL).await?;
        // Row counts with count(*) (beside a directory-format dump) take one backend, not a
        // parallel query whose workers would take the cores the dumps are compressing on.
        client
            .batch_execute(
                "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;
                 SET LOCAL max_parallel_workers_per_gather = 0",
            )
            .await
            .context("cannot start the snapshot transaction")?;
        let row = client
            .query_one(
                "SELECT pg_export_snapshot(),
                        (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                              ELSE pg_current_wal_lsn() END)::text,
                        clock_timestamp()::text",
                &[],
            )
            .await
            .with_context(|| format!("cannot export a snapshot of database '{database}'"))?;
        let snapshot: String = row.get(0);
        let lsn: Option<String> = row.get(1);
        let time_text: String = row.get(2);
        let time = common::timefmt::parse_timestamp(&time_text)
            .with_context(|| format!("unexpected server time '{time_text}'"))?;
        let encoding = catalog::database_encoding(&client).await?;
        let tables = catalog::list_tables(&client).await?;
        tracing::debug!(
            "database {database}: snapshot {snapshot}, {} tables",
            tables.len()
        );
        Ok(SnapshotSession {
            client,
            database: database.to_string(),
            snapshot,
            lsn: lsn.unwrap_or_default(),
            time,
            encoding,
            tables,
        })
    }

    /// Exact row count of a table in the snapshot.
    pub async fn count_rows(&self, table: &TableInfo) -> anyhow::Result<u64> {
        catalog::count_rows(&self.client, &table.schema, &table.name).await
    }

    /// Tables the role may not read (pg_dump would fail on them), as `schema.table`.
    pub async fn unreadable_tables(&self) -> anyhow::Result<Vec<String>> {
        let mut names = Vec::new();
        for table in &self.tables {
            let row = self
                .client
                .query_one(
                    "SELECT has_table_privilege($1::text::regclass, 'SELECT')",
                    &[&table.sql_name()],
                )
                .await
                .with_context(|| format!("cannot check access to {}", table.display_name()))?;
            if !row.get::<_, bool>(0) {
                names.push(table.display_name());
            }
        }
        Ok(names)
    }

    /// Ends the transaction; the snapshot is gone afterwards.
    pub async fn close(self) -> anyhow::Result<()> {
        self.client
            .batch_execute("COMMIT")
            .await
            .context("cannot end the snapshot transaction")
    }
}

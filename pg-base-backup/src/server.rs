//! The server being backed up: one connection for the whole run, and what it says about
//! itself before the backup starts.

use std::time::Duration;

use anyhow::Context;
use common::cli::PgArgs;
use common::lsn::Lsn;
use common::repo::Repository;
use tokio::runtime::Runtime;
use tokio_postgres::Client;

use crate::capture::WalRange;

/// The open connection, with the runtime that drives it and the server's identity.
pub struct Connected {
    client: Client,
    pub info: ServerInfo,
    /// Dropped last, after the connection.
    runtime: Runtime,
}

impl Connected {
    /// Connects and reads the server's identity and settings.
    pub fn open(pg: &PgArgs) -> anyhow::Result<Connected> {
        let runtime = common::postgres::runtime()?;
        let client = runtime.block_on(common::postgres::connect(pg, "pg-base-backup"))?;
        let info = runtime.block_on(ServerInfo::query(&client))?;
        tracing::info!(
            "backing up {} (PostgreSQL {}, system {})",
            pg.describe(),
            info.server_version,
            info.system_identifier
        );
        Ok(Connected {
            client,
            info,
            runtime,
        })
    }

    /// `pg_backup_start` on this session (non-exclusive: the backup lasts as long as the
    /// session, so a killed run ends it on the server): the start LSN and its timeline.
    pub fn backup_start(&self, label: &str, fast: bool) -> anyhow::Result<(Lsn, u32)> {
        self.runtime.block_on(async {
            let row = self
                .client
                .query_one(
                    "SELECT pg_backup_start($1, $2)::text,
                            (SELECT timeline_id FROM pg_control_checkpoint())",
                    &[&label, &fast],
                )
                .await
                .context("pg_backup_start failed (the role needs EXECUTE on pg_backup_start, or superuser)")?;
            let lsn: String = row.get(0);
            let timeline: i32 = row.get(1);
            Ok((lsn.parse()?, timeline as u32))
        })
    }

    /// `pg_backup_stop` (which switches to a new WAL segment): the stop LSN and the
    /// backup_label to store (and the tablespace_map, empty without tablespaces). It does not
    /// wait for the archive (PostgreSQL polls once a second): the caller waits for the backup's
    /// WAL in the repository itself (`wait_for_archive`), in shorter steps.
    pub fn backup_stop(&self) -> anyhow::Result<Stopped> {
        self.runtime.block_on(async {
            let row = self
                .client
                .query_one(
                    "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(false)",
                    &[],
                )
                .await
                .context("pg_backup_stop failed")?;
            let lsn: String = row.get(0);
            Ok(Stopped {
                lsn: lsn.parse()?,
                label: row.get(1),
                tablespace_map: row.get::<_, Option<String>>(2).unwrap_or_default(),
            })
        })
    }

    /// The sum of the databases' sizes: what pg_basebackup will send, for progress (it walks
    /// every database's directory, so only the pg_basebackup path asks).
    pub fn database_bytes(&self) -> anyhow::Result<u64> {
        self.runtime.block_on(async {
            let row = self
                .client
                .query_one(
                    "SELECT sum(pg_database_size(oid))::bigint FROM pg_database",
                    &[],
                )
                .await
                .context("cannot read the databases' sizes")?;
            Ok(row.get::<_, Option<i64>>(0).unwrap_or(0).max(0) as u64)
        })
    }

    /// Waits until every WAL segment of `range` is in the repository's archive.
    pub fn wait_for_archive(
        &self,
        repo: &Repository,
        range: WalRange,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        self.runtime.block_on(crate::walcheck::wait_for_archive(
            &self.client,
            repo,
            range,
            self.info.wal_segment_size,
            timeout,
        ))
    }
}

/// What `pg_backup_stop` returns.
pub struct Stopped {
    pub lsn: Lsn,
    pub label: String,
    pub tablespace_map: String,
}

/// Identity and settings of the server being backed up.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub system_identifier: String,
    pub server_version: String,
    pub server_version_num: u32,
    pub wal_segment_size: u64,
    /// archive_mode is on (or always) and archive_command is set.
    pub archiving: bool,
    /// The cluster was initialised with data checksums.
    pub data_checksums: bool,
}

impl ServerInfo {
    pub async fn query(client: &Client) -> anyhow::Result<ServerInfo> {
        let row = client
            .query_one(
                "SELECT (SELECT system_identifier::text FROM pg_control_system()),
                        current_setting('server_version'),
                        current_setting('server_version_num')::int,
                        (SELECT setting::bigint * CASE unit WHEN 'B' THEN 1 WHEN 'kB' THEN 1024
                                 WHEN 'MB' THEN 1048576 ELSE 1 END
                           FROM pg_settings WHERE name = 'wal_segment_size'),
                        current_setting('archive_mode') <> 'off'
                          AND current_setting('archive_command') NOT IN ('', '(disabled)'),
                        current_setting('data_checksums') = 'on'",
                &[],
            )
            .await
            .context("cannot read the server's identity (is the role allowed to read pg_control_system()?)")?;
        let version_num: i32 = row.get(2);
        if version_num < 150000 {
            anyhow::bail!(
                "server version {} is not supported: PostgreSQL 15 or newer is required",
                row.get::<_, String>(1)
            );
        }
        Ok(ServerInfo {
            system_identifier: row.get(0),
            server_version: row.get(1),
            server_version_num: version_num as u32,
            wal_segment_size: row.get::<_, i64>(3) as u64,
            archiving: row.get(4),
            data_checksums: row.get(5),
        })
    }
}

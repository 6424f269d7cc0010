//! `heartbeat`: writes a logical decoding message (`pg_logical_emit_message`) into each
//! database with logical slots, so their consumers receive something, confirm a newer
//! position, and the slots stop holding back WAL on quiet databases (the Debezium heartbeat).

use std::collections::BTreeSet;

use anyhow::Context;
use serde::Serialize;

use common::cli::{GlobalArgs, PgArgs};
use common::output::{self, OutputFormat};
use common::Status;

use crate::server::{self, Server};
use common::lsn::Lsn;

/// Default message prefix; consumers can filter on it.
pub const DEFAULT_PREFIX: &str = "cdc-slot-tool.heartbeat";

/// Options of `cdc-slot-tool heartbeat`.
#[derive(Debug, clap::Args)]
pub struct HeartbeatArgs {
    #[command(flatten)]
    pub pg: PgArgs,
    /// Emit into this database (repeatable) [default: every database with a logical slot].
    /// Messages are decoded only by slots of the database they are written in.
    #[arg(long = "database", value_name = "NAME")]
    pub databases: Vec<String>,
    /// Prefix of the message.
    #[arg(long, default_value = DEFAULT_PREFIX)]
    pub prefix: String,
    /// Content of the message [default: the current time, RFC 3339].
    #[arg(long)]
    pub content: Option<String>,
    /// Emit inside a transaction (consumers see a commit) rather than as a
    /// non-transactional message.
    #[arg(long)]
    pub transactional: bool,
}

/// One emitted message.
#[derive(Debug, Serialize)]
struct Emitted {
    database: String,
    lsn: Lsn,
}

#[derive(Debug, Serialize)]
struct Summary {
    databases: usize,
    prefix: String,
    transactional: bool,
}

pub fn run(args: &HeartbeatArgs, global: &GlobalArgs) -> anyhow::Result<Status> {
    let server = Server::new(&args.pg);
    let content = args
        .content
        .clone()
        .unwrap_or_else(|| common::timefmt::rfc3339_string(common::timefmt::now()));
    let emitted = common::postgres::runtime()?.block_on(async {
        let databases = if args.databases.is_empty() {
            slot_databases(&server).await?
        } else {
            args.databases.clone()
        };
        if databases.is_empty() {
            tracing::warn!(
                "no logical slots on {}: nothing to keep moving (name databases with --database)",
                server.describe()
            );
        }
        let mut emitted = Vec::new();
        for database in databases {
            let client = server.connect(Some(&database)).await?;
            // A non-transactional message is not flushed by itself before PostgreSQL 17
            // (the WAL writer does it within wal_writer_delay); 17 can flush at once.
            let version: String = client
                .query_one("SELECT current_setting('server_version_num')", &[])
                .await?
                .get(0);
            let sql = if version.parse::<u32>().unwrap_or(0) >= 170000 {
                "SELECT pg_logical_emit_message($1, $2, $3::text, true)::text"
            } else {
                "SELECT pg_logical_emit_message($1, $2, $3::text)::text"
            };
            let row = client
                .query_one(sql, &[&args.transactional, &args.prefix, &content])
                .await
                .with_context(|| {
                    format!(
                        "cannot emit a logical message in database {database} \
                         (needs wal_level = logical and superuser or REPLICATION)"
                    )
                })?;
            let lsn: Lsn = server::parse_lsn(&row.get::<_, String>(0))?;
            tracing::debug!("heartbeat in {database} at {lsn}");
            emitted.push(Emitted { database, lsn });
        }
        anyhow::Ok(emitted)
    })?;
    for e in &emitted {
        match global.output {
            OutputFormat::Json => output::json_line(&serde_json::json!({
                "type": "heartbeat", "database": e.database, "lsn": e.lsn,
            }))?,
            OutputFormat::Text => {
                output::text_line(&format!("heartbeat in {} at {}", e.database, e.lsn))?
            }
        }
    }
    let summary = Summary {
        databases: emitted.len(),
        prefix: args.prefix.clone(),
        transactional: args.transactional,
    };
    output::summary(global.output, &summary, || {
        format!("{} heartbeat(s) emitted", summary.databases)
    })?;
    Ok(Status::Ok)
}

/// Databases that have at least one logical slot.
async fn slot_databases(server: &Server) -> anyhow::Result<Vec<String>> {
    let client = server.connect(None).await?;
    let rows = client
        .query(
            "SELECT DISTINCT database::text FROM pg_replication_slots
             WHERE slot_type = 'logical' AND database IS NOT NULL",
            &[],
        )
        .await
        .context("cannot read pg_replication_slots")?;
    let databases: BTreeSet<String> = rows.iter().map(|r| r.get(0)).collect();
    Ok(databases.into_iter().collect())
}

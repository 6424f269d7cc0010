//! Restoring and verifying each component after the disaster, with its measured RTO and RPO.

use std::time::Instant;

use anyhow::Context;
use common::{Kind, Repository};

use super::cluster::{self, Server};
use super::components::{Disaster, Drill, Kafka, DB, PARTITIONS};
use super::{topic, Component, ComponentStatus};
use crate::tools;

impl Drill<'_> {
    pub(super) fn restore_postgres(
        &self,
        disaster: &Disaster,
    ) -> anyhow::Result<(Component, Server)> {
        let started = Instant::now();
        let root = self.work.join("restore");
        let pgdata = root.join("data");
        let port = cluster::free_port()?;
        let wal_archive = tools::resolve("wal-archive", self.args.bin_dir.as_deref())?;
        let port_text = port.to_string();
        // Stopped when dropped or interrupted, also when pitr-restore fails after starting it.
        let server = Server::adopt(pgdata.clone(), root.clone(), port);
        let mut cmd = self.command("pitr-restore", None)?;
        cmd.arg("--backup-dir")
            .arg(&self.backup_dir_arg)
            .arg("--pgdata")
            .arg(&pgdata)
            .args([
                "--target-time",
                disaster.target.as_str(),
                "--start",
                "--yes",
            ])
            .args(["--port", port_text.as_str()])
            .arg("--socket-dir")
            .arg(&root)
            .arg("--wal-archive-bin")
            .arg(&wal_archive)
            .args(["--output", "json", "-q"]);
        tools::checked(&mut cmd, "pitr-restore")?;
        let found: u64 = server
            .value(DB, "SELECT count(*) FROM drill_orders")
            .context("the dropped table is not back after the point-in-time restore")?
            .parse()?;
        if found != disaster.rows {
            anyhow::bail!(
                "the restored table holds {found} rows, {} were committed before the disaster",
                disaster.rows
            );
        }
        let rpo = self.rpo_of_table(&server, DB, disaster)?;
        Ok((
            Component {
                component: "postgres-pitr",
                status: ComponentStatus::Ok,
                rto_s: Some(started.elapsed().as_secs_f64()),
                rpo_s: Some(rpo),
                detail: format!(
                    "base backup + WAL to {}: all {found} rows back, the drop undone",
                    disaster.target
                ),
            },
            server,
        ))
    }

    /// Seconds between the newest row of `drill_orders` in `db` and the disaster.
    fn rpo_of_table(&self, server: &Server, db: &str, disaster: &Disaster) -> anyhow::Result<f64> {
        let value = server.value(
            db,
            &format!(
                "SELECT extract(epoch FROM ('{}'::timestamptz - max(created_at))) FROM drill_orders",
                disaster.target
            ),
        )?;
        value
            .parse::<f64>()
            .with_context(|| format!("unexpected RPO value '{value}'"))
    }

    pub(super) fn restore_logical(
        &self,
        server: &Server,
        disaster: &Disaster,
    ) -> anyhow::Result<Component> {
        let started = Instant::now();
        let pg = server.pg_args("postgres");
        self.repo_tool(
            "pg-logical-backup",
            &["restore"],
            &["--target-db", "drill_logical", "--yes", "-q"],
            Some(&pg),
        )?;
        let found: u64 = server
            .value("drill_logical", "SELECT count(*) FROM drill_orders")?
            .parse()?;
        if found != self.args.rows {
            anyhow::bail!(
                "the logical restore holds {found} rows, the dump was taken with {}",
                self.args.rows
            );
        }
        let rpo = self.rpo_of_table(server, "drill_logical", disaster)?;
        Ok(Component {
            component: "postgres-logical",
            status: ComponentStatus::Ok,
            rto_s: Some(started.elapsed().as_secs_f64()),
            rpo_s: Some(rpo),
            detail: format!(
                "dump restored into database drill_logical: {found} rows as at the dump"
            ),
        })
    }

    pub(super) fn restore_slots(
        &self,
        server: &Server,
        disaster: &Disaster,
    ) -> anyhow::Result<Component> {
        let started = Instant::now();
        let pg = server.pg_args(DB);
        // Exit 1 means restored, but a consumer must act (typically: the changes between the
        // slot backup and the restore point cannot be streamed and need a new snapshot).
        let mut cmd = self.command("cdc-slot-tool", Some(&pg))?;
        cmd.args(["restore", "--backup-dir"])
            .arg(&self.backup_dir_arg)
            .args(["--yes", "--output", "json", "-q"]);
        let run = tools::capture(&mut cmd, "cdc-slot-tool restore")?;
        if !matches!(run.code, Some(0) | Some(1)) {
            anyhow::bail!("cdc-slot-tool restore failed: {}", run.last_error());
        }
        let notes: Vec<String> = run
            .json_lines()
            .iter()
            .filter(|l| l["slot_name"] == "drill_slot")
            .filter_map(|l| {
                l["message"]
                    .as_str()
                    .or(l["note"].as_str())
                    .map(str::to_string)
            })
            .filter(|n| !n.is_empty())
            .collect();
        let plugin = server
            .query(
                DB,
                "SELECT plugin FROM pg_replication_slots WHERE slot_name = 'drill_slot'",
            )?
            .pop()
            .context("slot drill_slot is missing after cdc-slot-tool restore")?;
        if plugin != "pgoutput" {
            anyhow::bail!("slot drill_slot came back with plugin {plugin}, not pgoutput");
        }
        let publications: u64 = server
            .value(
                DB,
                "SELECT count(*) FROM pg_publication WHERE pubname = 'drill_pub'",
            )?
            .parse()?;
        if publications != 1 {
            anyhow::bail!("publication drill_pub is missing after the restore");
        }
        let repo = Repository::open(&self.backup_dir)?;
        let (_, manifest) = repo.find(Kind::Slots, None)?;
        let rpo = (disaster.at - manifest.finished_at)
            .as_seconds_f64()
            .max(0.0);
        Ok(Component {
            component: "cdc-slots",
            status: ComponentStatus::Ok,
            rto_s: Some(started.elapsed().as_secs_f64()),
            rpo_s: Some(rpo),
            detail: if run.code == Some(0) {
                "slot drill_slot (pgoutput) and publication drill_pub back, consumers resume without loss"
                    .to_string()
            } else {
                format!(
                    "slot drill_slot (pgoutput) and publication drill_pub back; consumer must act: {}",
                    if notes.is_empty() { "see cdc-slot-tool restore".to_string() } else { notes.join("; ") }
                )
            },
        })
    }

    pub(super) fn restore_kafka(
        &self,
        kafka: &Kafka,
        disaster: &Disaster,
    ) -> anyhow::Result<Component> {
        let started = Instant::now();
        topic::wait_gone(&kafka.config, &kafka.topic)?;
        let args = [
            "--topic",
            kafka.topic.as_str(),
            "--bootstrap-servers",
            kafka.servers.as_str(),
            "--output",
            "json",
            "-q",
        ];
        let run = self.repo_tool("kafka-replay", &[], &args, None)?;
        let summary = run.summary().context("kafka-replay printed no summary")?;
        if summary["verified"] != true {
            anyhow::bail!("kafka-replay could not verify its deliveries");
        }
        let expected = self.args.records * PARTITIONS as u64;
        let found = topic::wait_records(&kafka.config, &kafka.topic, expected)?;
        if found != expected {
            anyhow::bail!("the replayed topic holds {found} records, {expected} were backed up");
        }
        let rpo = disaster
            .last_kafka_record
            .map(|t| (disaster.at - t).as_seconds_f64().max(0.0));
        Ok(Component {
            component: "kafka",
            status: ComponentStatus::Ok,
            rto_s: Some(started.elapsed().as_secs_f64()),
            rpo_s: rpo,
            detail: format!(
                "topic {} recreated and replayed: {found} records as at the topic backup",
                kafka.topic
            ),
        })
    }
}

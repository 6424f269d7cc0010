//! The drill's whole-pipeline component (when a Kafka broker is configured): a CDC table in
//! the drill's database streamed into Kafka by the CDC connector emulator (`cdc-emulator`,
//! Debezium-shaped events and a Connect-style offsets topic), a restore point taken while
//! every change up to it has its events acknowledged, more changes after the backups (lost in
//! the disaster), then `validate-backups restore` of PostgreSQL, the slots, the CDC topics and
//! the connector's offset to that one point. Its RTO is the restore's own; its RPO is the
//! time between the cut's last transaction and the disaster.
//!
//! Every topic of the component (the CDC topic, the offsets topic, their restored copies) is
//! deleted afterwards, whatever happened.

use anyhow::Context;
use cdc_emulator::{CdcConfig, CdcProducer, Endpoint};
use rdkafka::ClientConfig;
use time::OffsetDateTime;

use super::cluster::{self, Server};
use super::components::{Disaster, Drill, Kafka, DB};
use super::{Component, ComponentStatus};
use crate::{broker, tools};

pub(super) const NAME: &str = "pipeline";
/// The CDC table, in the drill's database.
const TABLE: &str = "drill_cdc";
/// The restore point the pipeline is restored to.
const RESTORE_POINT: &str = "validate-backups-drill-cut";
/// Appended to the restored copies of the topics, so they do not collide with the originals.
const RESTORED_SUFFIX: &str = ".restored";

/// Where the component stands: its names, the emulator while the origin runs, and the first
/// error, after which it only reports that error.
pub(super) struct Pipeline {
    config: ClientConfig,
    /// `topic.prefix` of the emulated connector.
    prefix: String,
    offsets_topic: String,
    connector: String,
    emulator: Option<CdcProducer>,
    restore_point: Option<String>,
    /// Change events produced after the restore point: lost in the disaster.
    lost_events: u64,
    failure: Option<anyhow::Error>,
}

impl Pipeline {
    /// The component's names, unique per drill run (derived from the drill's topic).
    pub(super) fn new(kafka: &Kafka) -> Pipeline {
        let prefix = format!("{}-cdc", kafka.topic);
        Pipeline {
            config: kafka.config.clone(),
            offsets_topic: format!("{}-offsets", kafka.topic),
            connector: format!("{prefix}-connector"),
            prefix,
            emulator: None,
            restore_point: None,
            lost_events: 0,
            failure: None,
        }
    }

    /// The CDC topic of the drill's table.
    fn cdc_topic(&self) -> String {
        cdc_emulator::topic_name(&self.prefix, "public", TABLE)
    }

    /// Runs a step unless an earlier one failed; a failure is kept for the component (the
    /// rest of the drill goes on) and stops the emulator.
    fn step(&mut self, what: &str, f: impl FnOnce(&mut Pipeline) -> anyhow::Result<()>) {
        if self.failure.is_some() {
            return;
        }
        if let Err(e) = f(self) {
            tracing::warn!("drill: the pipeline component failed: {what}: {e:#}");
            self.failure = Some(e.context(what.to_string()));
            self.emulator = None;
        }
    }

    /// The workload: the CDC table, the emulator's slot created before its rows, `rows`
    /// inserts with updates and deletes, streamed until the emulator caught up.
    pub(super) fn start(&mut self, origin: &Server, bootstrap: &str, rows: u64) {
        self.step("CDC workload", |p| {
            origin.query(
                DB,
                &format!(
                    "CREATE TABLE {TABLE} (id bigint PRIMARY KEY, v text NOT NULL, n int NOT NULL)"
                ),
            )?;
            let endpoint = Endpoint::new(origin.socket_dir.display().to_string(), origin.port);
            let mut config = CdcConfig::new(endpoint, DB, &p.prefix, bootstrap);
            config.slot = "drill_cdc_slot".to_string();
            config.connector = p.connector.clone();
            config.offsets_topic = p.offsets_topic.clone();
            config.offsets_partitions = 1;
            let emulator = CdcProducer::new(config)?;
            emulator.create_slot()?;
            p.emulator = Some(emulator);
            p.change_and_stream(origin, 1, rows).map(drop)
        });
    }

    /// After the base backup: more changes, streamed, then the restore point, so everything
    /// up to it has its events in Kafka when the topics are backed up.
    pub(super) fn mark(&mut self, origin: &Server, rows: u64) {
        self.step("restore point", |p| {
            p.change_and_stream(origin, rows + 1, (rows / 5).max(1))?;
            origin.query(
                "postgres",
                &format!("SELECT pg_create_restore_point('{RESTORE_POINT}')"),
            )?;
            p.restore_point = Some(RESTORE_POINT.to_string());
            Ok(())
        });
    }

    /// The topics the Kafka backup must hold: the CDC topic and the offsets topic (none
    /// once the component failed).
    pub(super) fn topics_to_back_up(&self) -> Vec<String> {
        if self.failure.is_some() || self.restore_point.is_none() {
            return Vec::new();
        }
        vec![self.cdc_topic(), self.offsets_topic.clone()]
    }

    /// After the backups: more changes, streamed too. The disaster loses them: the pipeline's
    /// RPO.
    pub(super) fn lose(&mut self, origin: &Server, rows: u64) {
        self.step("changes after the backups", |p| {
            let from = rows + (rows / 5).max(1) + 1;
            p.lost_events = p.change_and_stream(origin, from, (rows / 5).max(1))?;
            p.emulator = None;
            Ok(())
        });
    }

    /// Inserts `count` rows from id `from`, updates every third and deletes every seventh
    /// of them, then polls the emulator until it caught up; returns the events it produced.
    fn change_and_stream(&mut self, origin: &Server, from: u64, count: u64) -> anyhow::Result<u64> {
        let to = from + count - 1;
        origin.query(
            DB,
            &format!(
                "INSERT INTO {TABLE} (id, v, n) SELECT g, 'row ' || g, g % 97 FROM generate_series({from}, {to}) g;
                 UPDATE {TABLE} SET v = v || ' updated', n = n + 1 WHERE id BETWEEN {from} AND {to} AND id % 3 = 0;
                 DELETE FROM {TABLE} WHERE id BETWEEN {from} AND {to} AND id % 7 = 0;"
            ),
        )?;
        let emulator = self
            .emulator
            .as_mut()
            .context("the CDC connector emulator is not running")?;
        // One poll passes until the slot holds nothing more: the changes above included.
        Ok(emulator.poll()?.events)
    }

    /// Every topic the component may have created, restored copies included.
    pub(super) fn topics(&self) -> Vec<String> {
        let originals = [self.cdc_topic(), self.offsets_topic.clone()];
        let copies = originals.clone().map(|t| format!("{t}{RESTORED_SUFFIX}"));
        originals.into_iter().chain(copies).collect()
    }

    /// Deletes every topic of the component; a topic that does not exist is fine.
    pub(super) fn delete_topics(&self) {
        for topic in self.topics() {
            if let Err(e) =
                broker::block_on(broker::delete_topic(&self.config, &topic)).and_then(|r| r)
            {
                tracing::warn!("could not delete the drill's topic {topic}: {e:#}");
            }
        }
    }
}

impl Drill<'_> {
    /// The pipeline component: skipped without a broker, failed with the first error of its
    /// workload, else the restore of the whole pipeline to the restore point.
    pub(super) fn pipeline_component(
        &self,
        pipeline: Option<&mut Pipeline>,
        disaster: &Disaster,
        kafka_failed: bool,
    ) -> Component {
        let Some(pipeline) = pipeline else {
            return Component::skipped(
                NAME,
                if kafka_failed {
                    "the Kafka broker is unusable (see the kafka component)"
                } else {
                    "no Kafka broker configured (set KAFKA_BOOTSTRAP_SERVERS or --bootstrap-servers)"
                },
            );
        };
        if let Some(e) = pipeline.failure.take() {
            return Component::failed(NAME, &e);
        }
        self.restore_pipeline(pipeline, disaster)
            .unwrap_or_else(|e| Component::failed(NAME, &e))
    }

    /// `validate-backups restore` into a server of its own, to the restore point; its JSON
    /// summary gives the component. The restored server is stopped afterwards.
    fn restore_pipeline(
        &self,
        pipeline: &Pipeline,
        disaster: &Disaster,
    ) -> anyhow::Result<Component> {
        let kafka = self
            .kafka
            .as_ref()
            .context("no Kafka broker to restore the CDC topics into")?;
        let restore_point = pipeline
            .restore_point
            .as_deref()
            .context("no restore point was made")?;
        let root = self.work.join("pipeline");
        let pgdata = root.join("data");
        let port = cluster::free_port()?;
        // Stopped when dropped or interrupted, also when the restore fails after starting it.
        let _server = Server::adopt(pgdata.clone(), root.clone(), port);
        let mut cmd = std::process::Command::new(tools::program(
            "validate-backups",
            self.args.bin_dir.as_deref(),
        ));
        cmd.arg("restore")
            .arg("--backup-dir")
            .arg(&self.backup_dir_arg)
            .arg("--pgdata")
            .arg(&pgdata)
            .args(["--port", &port.to_string()])
            .arg("--socket-dir")
            .arg(&root)
            .args(["--target-name", restore_point])
            .args([
                "--cdc-topic-regex",
                &format!("{}\\..*", regex::escape(&pipeline.prefix)),
            ])
            .args([
                "--connector",
                &format!("{}={}", pipeline.connector, pipeline.prefix),
            ])
            .args([
                "--offsets-topic",
                &format!("{}{RESTORED_SUFFIX}", pipeline.offsets_topic),
            ])
            .args(["--topic-suffix", RESTORED_SUFFIX])
            .args(["--database", DB])
            .args(["--bootstrap-servers", &kafka.servers])
            .args(["--output", "json", "-q"]);
        common::kafka::pass_to_child(&mut cmd, &kafka.properties);
        if let Some(dir) = &self.args.bin_dir {
            cmd.arg("--bin-dir").arg(dir);
        }
        let run = tools::capture(&mut cmd, "validate-backups restore")?;
        let summary = run.summary().with_context(|| {
            format!(
                "validate-backups restore printed no summary (exit {:?}): {}",
                run.code,
                run.last_error()
            )
        })?;
        let restore: RestoreSummary =
            serde_json::from_value(summary.clone()).with_context(|| {
                format!("unexpected summary of validate-backups restore: {summary}")
            })?;
        Ok(component(&restore, disaster, pipeline.lost_events))
    }
}

/// What the drill reads of `validate-backups restore`'s summary.
#[derive(Debug, serde::Deserialize)]
struct RestoreSummary {
    consistent: bool,
    cut_lsn: Option<String>,
    cut_time: Option<String>,
    #[serde(default)]
    missing: Vec<String>,
    rto_s: f64,
    #[serde(default)]
    components: Vec<serde_json::Value>,
}

/// The component from the restore's summary: ok when the cut holds, with the restore's RTO
/// and the time from the cut's last transaction to the disaster as its RPO.
fn component(restore: &RestoreSummary, disaster: &Disaster, lost_events: u64) -> Component {
    let cut_time = restore
        .cut_time
        .as_deref()
        .and_then(|t| common::timefmt::parse_timestamp(t).ok());
    let rpo_s = cut_time.map(|t: OffsetDateTime| (disaster.at - t).as_seconds_f64().max(0.0));
    let lsn = restore.cut_lsn.as_deref().unwrap_or("none");
    if !restore.consistent {
        let failed: Vec<String> = restore
            .components
            .iter()
            .filter(|c| c["status"] == "failed")
            .map(|c| {
                format!(
                    "{}: {}",
                    c["component"].as_str().unwrap_or("?"),
                    c["detail"].as_str().unwrap_or("")
                )
            })
            .collect();
        return Component {
            component: NAME,
            status: ComponentStatus::Failed,
            rto_s: Some(restore.rto_s),
            rpo_s,
            detail: format!(
                "the pipeline does not agree at LSN {lsn}: {}",
                restore
                    .missing
                    .iter()
                    .chain(&failed)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        };
    }
    Component {
        component: NAME,
        status: ComponentStatus::Ok,
        rto_s: Some(restore.rto_s),
        rpo_s,
        detail: format!(
            "PostgreSQL, slots, CDC topic and connector offset restored to one point: LSN {lsn} ({}), restore point {RESTORE_POINT}; {lost_events} CDC event(s) after it lost in the disaster",
            restore.cut_time.as_deref().unwrap_or("no transaction replayed"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disaster(at: &str) -> Disaster {
        Disaster {
            target: at.to_string(),
            at: common::timefmt::parse_timestamp(at).unwrap(),
            rows: 0,
            last_kafka_record: None,
        }
    }

    fn summary(json: serde_json::Value) -> RestoreSummary {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_consistent_cut_gives_the_restore_rto_and_the_rpo_up_to_the_disaster() {
        let restore = summary(serde_json::json!({
            "consistent": true, "cut_lsn": "0/3000100",
            "cut_time": "2026-12-03 10:00:00.5+00", "missing": [], "rto_s": 12.5,
            "components": [{"component": "postgres", "status": "ok"}]
        }));
        let c = component(&restore, &disaster("2026-12-03T10:00:08Z"), 40);
        assert_eq!(c.status, ComponentStatus::Ok);
        assert_eq!(c.rto_s, Some(12.5));
        assert_eq!(c.rpo_s, Some(7.5));
        assert!(
            c.detail.contains("LSN 0/3000100") && c.detail.contains("40 CDC event(s)"),
            "{}",
            c.detail
        );
    }

    #[test]
    fn an_inconsistent_cut_fails_with_what_is_missing() {
        let restore = summary(serde_json::json!({
            "consistent": false, "cut_lsn": null, "cut_time": null,
            "missing": ["no slot set in the repository"], "rto_s": 1.0,
            "components": [{"component": "proof:t", "status": "failed", "detail": "3 rows without an event"}]
        }));
        let c = component(&restore, &disaster("2026-12-03T10:00:08Z"), 0);
        assert_eq!(c.status, ComponentStatus::Failed);
        assert_eq!(c.rpo_s, None);
        assert!(
            c.detail.contains("no slot set")
                && c.detail.contains("proof:t: 3 rows without an event"),
            "{}",
            c.detail
        );
    }
}

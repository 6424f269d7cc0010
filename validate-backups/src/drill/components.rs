//! The drill's phases: workload, full pipeline backup and disaster, then the restore of every
//! component (in `restore`, and the whole pipeline's in `pipeline`) and the outcome.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use common::cli::PgArgs;
use common::os_user;
use common::storage::Location;
use common::{Kind, Repository};
use rdkafka::ClientConfig;
use time::OffsetDateTime;

use super::cluster::{self, Server};
use super::pipeline::Pipeline;
use super::{topic, Component, DrillArgs};
use crate::broker;
use crate::tools::{self, ToolRun};

/// What the drill measured.
#[derive(Debug)]
pub struct Outcome {
    pub components: Vec<Component>,
    pub total_rto_s: f64,
    pub backup_s: f64,
    pub backup_dir: Location,
}

/// The Kafka side, when a broker is configured.
pub(super) struct Kafka {
    pub(super) servers: String,
    pub(super) properties: Vec<(String, String)>,
    pub(super) config: ClientConfig,
    pub(super) topic: String,
}

pub struct Drill<'a> {
    pub(super) args: &'a DrillArgs,
    pub(super) work: PathBuf,
    /// The repository, a local path made absolute.
    pub(super) backup_dir: Location,
    /// The repository as the tools' `--backup-dir` takes it.
    pub(super) backup_dir_arg: OsString,
    pub(super) kafka: Option<Kafka>,
}

pub(super) const PARTITIONS: i32 = 2;
pub(super) const DB: &str = "drill";

/// What the backup phase leaves: how long the backups took and the disaster to recover from.
struct Prepared {
    backup_s: f64,
    disaster: Disaster,
}

/// What the disaster left to recover from.
pub(super) struct Disaster {
    /// Server time just before the table was dropped: the PITR target.
    pub(super) target: String,
    pub(super) at: OffsetDateTime,
    /// Rows committed (and archived) before the disaster.
    pub(super) rows: u64,
    pub(super) last_kafka_record: Option<OffsetDateTime>,
}

impl<'a> Drill<'a> {
    pub fn new(args: &'a DrillArgs, work: &Path) -> anyhow::Result<Drill<'a>> {
        let backup_dir = match &args.backup_dir {
            Some(location) => location.absolute()?,
            None => Location::Local(work.join("backups")),
        };
        let backup_dir_arg = tools::backup_dir_arg(&backup_dir)?;
        let kafka = match args.bootstrap_servers.as_deref().map(str::trim) {
            Some(servers) if !servers.is_empty() => {
                let properties = common::kafka::kafka_properties(&args.client_config)?;
                let config = broker::config(servers, &properties);
                let topic = format!(
                    "validate-backups-drill-{}-{}",
                    std::process::id(),
                    OffsetDateTime::now_utc().unix_timestamp()
                );
                Some(Kafka {
                    servers: servers.to_string(),
                    properties,
                    config,
                    topic,
                })
            }
            _ => None,
        };
        Ok(Drill {
            args,
            work: work.to_path_buf(),
            backup_dir,
            backup_dir_arg,
            kafka,
        })
    }

    /// A pipeline-backup tool's command, as the database OS user when root, with the
    /// connection settings of `pg`. It inherits this process's environment, the repository's
    /// `AWS_*` settings included.
    pub(super) fn command(&self, name: &str, pg: Option<&PgArgs>) -> anyhow::Result<Command> {
        let mut cmd = Command::new(tools::program(name, self.args.bin_dir.as_deref()));
        if let Some(pg) = pg {
            cmd.envs(pg.libpq_env());
        }
        if let Some(kafka) = &self.kafka {
            common::kafka::pass_to_child(&mut cmd, &kafka.properties);
        }
        os_user::as_db_user(&mut cmd)?;
        Ok(cmd)
    }

    /// Runs `<name> <before> --backup-dir <the drill's repository> <after>`, which must
    /// succeed.
    pub(super) fn repo_tool(
        &self,
        name: &str,
        before: &[&str],
        after: &[&str],
        pg: Option<&PgArgs>,
    ) -> anyhow::Result<ToolRun> {
        let mut cmd = self.command(name, pg)?;
        cmd.args(before)
            .arg("--backup-dir")
            .arg(&self.backup_dir_arg)
            .args(after);
        tools::checked(&mut cmd, name)
    }

    /// Runs the drill: prepare, Kafka workload, PostgreSQL workload, full backup, disaster,
    /// then the restore of every component, timed as the recovery time. The pipeline
    /// component's topics are deleted at the end, whatever happened (kept with `--keep`).
    pub fn run(mut self) -> anyhow::Result<Outcome> {
        self.prepare()?;
        let wal_archive = tools::resolve("wal-archive", self.args.bin_dir.as_deref())?;
        let kafka_failure = self.start_kafka();
        let mut pipeline = self.kafka.as_ref().map(Pipeline::new);
        let outcome = self.backup_and_restore(&wal_archive, kafka_failure, pipeline.as_mut());
        match &pipeline {
            Some(pipeline) if self.args.keep => {
                tracing::warn!(
                    "--keep: the drill's topics {} are left on the broker; delete them when done",
                    pipeline.topics().join(" ")
                );
            }
            Some(pipeline) => pipeline.delete_topics(),
            None => {}
        }
        outcome
    }

    fn backup_and_restore(
        &self,
        wal_archive: &Path,
        kafka_failure: Option<anyhow::Error>,
        mut pipeline: Option<&mut Pipeline>,
    ) -> anyhow::Result<Outcome> {
        let prepared = self.backup_and_disaster(wal_archive, pipeline.as_deref_mut())?;
        tracing::info!("drill: restoring every component");
        let restore_started = Instant::now();
        let (mut components, server) = self.restore_postgres_side(&prepared.disaster);
        let kafka_failed = kafka_failure.is_some();
        components.push(self.kafka_component(&prepared.disaster, kafka_failure));
        components.push(self.pipeline_component(pipeline, &prepared.disaster, kafka_failed));
        let total_rto_s = restore_started.elapsed().as_secs_f64();
        drop(server);
        Ok(Outcome {
            components,
            total_rto_s,
            backup_s: prepared.backup_s,
            backup_dir: self.backup_dir.clone(),
        })
    }

    /// The drill's directories, owned by the database user, and a repository that holds no
    /// base backup yet.
    fn prepare(&self) -> anyhow::Result<()> {
        let local_repo = self.backup_dir.local().map(Path::to_path_buf);
        let dirs = ["origin", "restore", "pipeline"].map(|d| self.work.join(d));
        for dir in dirs.into_iter().chain(local_repo) {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            os_user::give_to_db_user(&dir)?;
        }
        if !Repository::open(&self.backup_dir)?
            .complete_sets(Kind::Base)?
            .is_empty()
        {
            anyhow::bail!(
                "{} already holds base backups; give the drill an empty --backup-dir",
                self.backup_dir
            );
        }
        Ok(())
    }

    /// The Kafka workload, when a broker is configured. An unusable broker fails the Kafka
    /// component, not the whole drill: its error is returned and the drill goes on without
    /// Kafka.
    fn start_kafka(&mut self) -> Option<anyhow::Error> {
        let kafka = self.kafka.as_ref()?;
        // A quick metadata request first: an unreachable broker fails in seconds.
        let result = broker::metadata(&kafka.config).and_then(|_| {
            self.kafka_workload(kafka)
                .inspect_err(|_| self.delete_topic())
        });
        let Err(e) = result else { return None };
        let failure = e.context(format!("Kafka at {}", kafka.servers));
        self.kafka = None;
        Some(failure)
    }

    /// A throwaway origin cluster: its workload, the full pipeline backup, the disaster. The
    /// drill's topic is removed when this fails after the cluster started.
    fn backup_and_disaster(
        &self,
        wal_archive: &Path,
        mut pipeline: Option<&mut Pipeline>,
    ) -> anyhow::Result<Prepared> {
        tracing::info!("drill: starting a throwaway PostgreSQL 15 cluster");
        let mut origin = Server::create(&self.work.join("origin"), &self.backup_dir, wal_archive)?;
        let prepared = (|| -> anyhow::Result<Prepared> {
            self.workload(&origin)?;
            if let (Some(pipeline), Some(kafka)) = (pipeline.as_deref_mut(), &self.kafka) {
                pipeline.start(&origin, &kafka.servers, self.args.cdc_rows);
            }
            tracing::info!("drill: taking the full pipeline backup");
            let backup_started = Instant::now();
            let last_kafka_record = self.backup(&origin, pipeline.as_deref_mut())?;
            let backup_s = backup_started.elapsed().as_secs_f64();
            if let Some(pipeline) = pipeline.as_deref_mut() {
                pipeline.lose(&origin, self.args.cdc_rows);
            }
            let disaster = self.disaster(&mut origin, last_kafka_record)?;
            Ok(Prepared { backup_s, disaster })
        })();
        drop(origin);
        prepared.inspect_err(|_| self.delete_topic())
    }

    /// Restores PostgreSQL to the point before the disaster, then the logical backup and the
    /// slots into the restored server. Returns their components and the restored server (it
    /// lives until the restore is timed).
    fn restore_postgres_side(&self, disaster: &Disaster) -> (Vec<Component>, Option<Server>) {
        let mut components = Vec::new();
        let server = match self.restore_postgres(disaster) {
            Ok((component, server)) => {
                components.push(component);
                Some(server)
            }
            Err(e) => {
                components.push(Component::failed("postgres-pitr", &e));
                None
            }
        };
        match &server {
            Some(server) => {
                components.push(
                    self.restore_logical(server, disaster)
                        .unwrap_or_else(|e| Component::failed("postgres-logical", &e)),
                );
                components.push(
                    self.restore_slots(server, disaster)
                        .unwrap_or_else(|e| Component::failed("cdc-slots", &e)),
                );
            }
            None => {
                let e = anyhow::anyhow!("no restored server to restore into");
                components.push(Component::failed("postgres-logical", &e));
                components.push(Component::failed("cdc-slots", &e));
            }
        }
        (components, server)
    }

    /// The Kafka component: failed when the broker was unusable, skipped without one, else
    /// the topic's restore (after which the drill's topic is removed).
    fn kafka_component(&self, disaster: &Disaster, failure: Option<anyhow::Error>) -> Component {
        if let Some(e) = failure {
            return Component::failed("kafka", &e);
        }
        let Some(kafka) = &self.kafka else {
            return Component::skipped(
                "kafka",
                "no Kafka broker configured (set KAFKA_BOOTSTRAP_SERVERS or --bootstrap-servers)",
            );
        };
        let result = self
            .restore_kafka(kafka, disaster)
            .unwrap_or_else(|e| Component::failed("kafka", &e));
        self.delete_topic();
        result
    }

    /// Removes the drill's own topic, whatever state the drill ended in (kept with `--keep`).
    fn delete_topic(&self) {
        if let Some(kafka) = self.kafka.as_ref().filter(|_| self.args.keep) {
            tracing::warn!(
                "--keep: the drill's topics {} are left on the broker; delete them when done",
                kafka.topic
            );
            return;
        }
        if let Some(kafka) = &self.kafka {
            if let Err(e) =
                broker::block_on(broker::delete_topic(&kafka.config, &kafka.topic)).and_then(|r| r)
            {
                tracing::warn!("could not delete the drill's topic {}: {e:#}", kafka.topic);
            }
        }
    }

    fn workload(&self, origin: &Server) -> anyhow::Result<()> {
        origin.query("postgres", &format!("CREATE DATABASE {DB}"))?;
        origin.query(
            DB,
            &format!(
                "CREATE TABLE drill_orders (id bigint PRIMARY KEY, amount int NOT NULL, \
                 created_at timestamptz NOT NULL DEFAULT clock_timestamp());
                 INSERT INTO drill_orders (id, amount) SELECT g, g % 997 FROM generate_series(1, {}) g;
                 CREATE PUBLICATION drill_pub FOR TABLE drill_orders;",
                self.args.rows
            ),
        )?;
        origin.query(
            DB,
            "SELECT lsn FROM pg_create_logical_replication_slot('drill_slot', 'pgoutput')",
        )?;
        Ok(())
    }

    /// The Kafka workload: the drill's topic with its records.
    fn kafka_workload(&self, kafka: &Kafka) -> anyhow::Result<()> {
        broker::block_on(broker::create_topic(
            &kafka.config,
            &kafka.topic,
            PARTITIONS,
        ))??;
        topic::produce(
            &kafka.config,
            &kafka.topic,
            PARTITIONS,
            0,
            self.args.records,
        )
    }

    /// Takes every backup; returns when the last Kafka record that will be backed up was sent.
    /// The pipeline's restore point comes after the base backup (recovery can only stop
    /// after the backup's end) and before the topic backup, which holds its topics too.
    fn backup(
        &self,
        origin: &Server,
        pipeline: Option<&mut Pipeline>,
    ) -> anyhow::Result<Option<OffsetDateTime>> {
        let pg = origin.pg_args("postgres");
        let db = origin.pg_args(DB);
        let once = ["--no-retention", "-q"];
        self.repo_tool("pg-base-backup", &[], &once, Some(&pg))?;
        self.repo_tool("pg-logical-backup", &["backup"], &once, Some(&db))?;
        self.repo_tool("cdc-slot-tool", &["backup"], &once, Some(&pg))?;
        let Some(kafka) = &self.kafka else {
            return Ok(None);
        };
        let mut pipeline_topics = Vec::new();
        if let Some(pipeline) = pipeline {
            pipeline.mark(origin, self.args.cdc_rows);
            pipeline_topics = pipeline.topics_to_back_up();
        }
        let last_record = OffsetDateTime::now_utc();
        let mut args = vec![
            "--topic",
            kafka.topic.as_str(),
            "--bootstrap-servers",
            kafka.servers.as_str(),
            "--no-retention",
            "-q",
        ];
        for topic in &pipeline_topics {
            args.extend(["--topic", topic.as_str()]);
        }
        self.repo_tool("kafka-topic-backup", &[], &args, None)?;
        Ok(Some(last_record))
    }

    /// More changes, then the disaster: the table is dropped, the topic deleted, the server
    /// crashes.
    fn disaster(
        &self,
        origin: &mut Server,
        last_kafka_record: Option<OffsetDateTime>,
    ) -> anyhow::Result<Disaster> {
        let extra = (self.args.rows / 5).max(1);
        let rows = self.args.rows + extra;
        origin.query(
            DB,
            &format!(
                "INSERT INTO drill_orders (id, amount) SELECT g, g % 997 FROM generate_series({}, {rows}) g",
                self.args.rows + 1
            ),
        )?;
        if let Some(kafka) = &self.kafka {
            // Records after the topic backup: lost in the disaster (that is the Kafka RPO).
            topic::produce(
                &kafka.config,
                &kafka.topic,
                PARTITIONS,
                self.args.records,
                self.args.records / 5,
            )?;
        }
        cluster::switch_and_wait(origin)?;
        let target = origin.value(
            "postgres",
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
        )?;
        let at = common::timefmt::parse_timestamp(&target)?;
        tracing::info!("drill: disaster at {target}: dropping the table, deleting the topic");
        origin.query(DB, "DROP TABLE drill_orders")?;
        // Recovery must see the drop's commit in the archive to stop just before it.
        cluster::switch_and_wait(origin)?;
        if let Some(kafka) = &self.kafka {
            broker::block_on(broker::delete_topic(&kafka.config, &kafka.topic))??;
        }
        origin.stop("immediate")?;
        Ok(Disaster {
            target,
            at,
            rows,
            last_kafka_record,
        })
    }
}

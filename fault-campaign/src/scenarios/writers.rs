//! The backup tools as [`Writer`]s: how one run is invoked, and how a set is proven to hold
//! the source's data (restored and compared, replayed and compared, or planned against the
//! server it came from).

use std::process::Command;
use std::rc::Rc;

use anyhow::Context as _;
use common::repo::Kind;
use test_support::os_user::db_tempdir;
use test_support::pg::{DataDirServer, PgOptions};

use super::kill_writer::Writer;
use super::sources::{self, Cluster, SlotCluster, APP_DB, APP_TABLES};
use crate::context::{Ctx, Repo};
use crate::process;
use crate::{sql, topic};

/// Retention that keeps one complete set, so a killed run may be deleting the previous one.
pub const KEEP_ONE: [&str; 4] = ["--keep-count", "1", "--retention-days", "0"];

/// pg-base-backup of a cluster that does not archive (the WAL goes into the tarball).
pub struct Base {
    source: Rc<Cluster>,
}

impl Base {
    pub fn new(ctx: &Ctx) -> anyhow::Result<Base> {
        Ok(Base {
            source: ctx.shared("cluster:base", || Cluster::with_app(PgOptions::default()))?,
        })
    }
}

impl Writer for Base {
    fn kind(&self) -> Kind {
        Kind::Base
    }

    fn name(&self) -> &'static str {
        "base"
    }

    fn command(&self, ctx: &Ctx, repo: &Repo) -> Command {
        let mut cmd = ctx.tool("pg-base-backup");
        repo.apply(&mut cmd)
            .envs(self.source.pg.env())
            .args(["--backup-dir", &repo.url, "--output", "json"])
            .args(KEEP_ONE);
        cmd
    }

    fn check_set(&self, ctx: &Ctx, repo: &Repo, id: &str) -> anyhow::Result<String> {
        restore_base(
            ctx,
            repo,
            id,
            &["--target", "immediate"],
            &self.source.digests,
        )?;
        Ok("restored with pitr-restore, tables equal".into())
    }
}

/// Restores base set `id` with `pitr-restore --start` into a scratch directory and compares
/// the application tables with `digests`.
pub fn restore_base(
    ctx: &Ctx,
    repo: &Repo,
    id: &str,
    target: &[&str],
    digests: &[String],
) -> anyhow::Result<()> {
    let dir = db_tempdir("fc-restore-");
    let pgdata = dir.path().join("pgdata");
    let port = test_support::free_port();
    let mut cmd = ctx.tool("pitr-restore");
    repo.apply(&mut cmd)
        .args(["--backup-dir", &repo.url, "--backup-id", id])
        .arg("--pgdata")
        .arg(&pgdata)
        .args(target)
        .args(["--start", "--port", &port.to_string(), "--socket-dir"])
        .arg(dir.path())
        .args(["--yes", "--output", "json", "--timeout", "120s"]);
    let ended = process::run(&mut cmd, "pitr-restore")?;
    let server = DataDirServer::new(pgdata, port, dir.path().to_path_buf());
    ended.ok("pitr-restore")?;
    sql::expect_tables(&server, APP_DB, &APP_TABLES, digests)
}

/// pg-logical-backup of the application database.
pub struct Logical {
    source: Rc<Cluster>,
}

impl Logical {
    pub fn new(ctx: &Ctx) -> anyhow::Result<Logical> {
        Ok(Logical {
            source: ctx.shared(
                "cluster:logical",
                || Cluster::with_app(PgOptions::default()),
            )?,
        })
    }
}

impl Writer for Logical {
    fn kind(&self) -> Kind {
        Kind::Logical
    }

    fn name(&self) -> &'static str {
        "logical"
    }

    fn command(&self, ctx: &Ctx, repo: &Repo) -> Command {
        let mut cmd = ctx.tool("pg-logical-backup");
        repo.apply(&mut cmd)
            .envs(self.source.pg.env())
            .args(["backup", "--backup-dir", &repo.url, "--dbname", APP_DB])
            .args(["--output", "json"])
            .args(KEEP_ONE);
        cmd
    }

    fn check_set(&self, ctx: &Ctx, repo: &Repo, id: &str) -> anyhow::Result<String> {
        let target = test_support::unique_name("fc_check");
        let result = restore_logical(ctx, &self.source, repo, id, &target);
        sql::drop_database(&self.source.pg, &target)?;
        result?;
        Ok("restored with pg-logical-backup restore, tables equal".into())
    }
}

fn restore_logical(
    ctx: &Ctx,
    source: &Cluster,
    repo: &Repo,
    id: &str,
    target: &str,
) -> anyhow::Result<()> {
    let mut cmd = ctx.tool("pg-logical-backup");
    repo.apply(&mut cmd)
        .envs(source.pg.env())
        .args(["restore", "--backup-dir", &repo.url, "--backup-id", id])
        .args(["--target-db", target, "--yes", "--output", "json"]);
    process::run_ok(&mut cmd, "pg-logical-backup restore")?;
    sql::expect_tables(&source.pg, target, &APP_TABLES, &source.digests)
}

/// kafka-topic-backup of a three-partition topic.
pub struct TopicExport {
    source: Rc<sources::Topic>,
}

impl TopicExport {
    pub fn new(ctx: &Ctx) -> anyhow::Result<TopicExport> {
        Ok(TopicExport {
            source: ctx.shared("topic:source", || sources::Topic::new("fc_source", 1000))?,
        })
    }
}

impl Writer for TopicExport {
    fn kind(&self) -> Kind {
        Kind::Kafka
    }

    fn name(&self) -> &'static str {
        "kafka"
    }

    fn command(&self, ctx: &Ctx, repo: &Repo) -> Command {
        let mut cmd = ctx.tool("kafka-topic-backup");
        repo.apply(&mut cmd)
            .args(["--bootstrap-servers", &ctx.kafka, "--backup-dir", &repo.url])
            .args(["--topic", &self.source.name, "--output", "json"])
            .args(KEEP_ONE);
        cmd
    }

    fn check_set(&self, ctx: &Ctx, repo: &Repo, id: &str) -> anyhow::Result<String> {
        let target = test_support::unique_name("fc_check");
        let result = (|| -> anyhow::Result<()> {
            let mut cmd = ctx.tool("kafka-replay");
            repo.apply(&mut cmd)
                .args(["--bootstrap-servers", &ctx.kafka, "--backup-dir", &repo.url])
                .args(["--backup-id", id, "--topic", &self.source.name])
                .args(["--target-topic", &target, "--output", "json"]);
            process::run_ok(&mut cmd, "kafka-replay")?;
            let got = topic::read(&target)?;
            topic::expect_same(&got, &self.source.contents, "the replayed set")
        })();
        topic::delete(&[target]);
        result?;
        Ok("replayed with kafka-replay, every record once".into())
    }
}

/// cdc-slot-tool backup of a cluster with two logical slots and two publications.
pub struct Slots {
    source: Rc<SlotCluster>,
}

impl Slots {
    pub fn new(ctx: &Ctx) -> anyhow::Result<Slots> {
        Ok(Slots {
            source: ctx.shared("cluster:slots", SlotCluster::new)?,
        })
    }
}

impl Writer for Slots {
    fn kind(&self) -> Kind {
        Kind::Slots
    }

    fn name(&self) -> &'static str {
        "slots"
    }

    fn command(&self, ctx: &Ctx, repo: &Repo) -> Command {
        let mut cmd = ctx.tool("cdc-slot-tool");
        repo.apply(&mut cmd)
            .envs(self.source.pg.env())
            .args(["backup", "--backup-dir", &repo.url, "--output", "json"])
            .args(KEEP_ONE);
        cmd
    }

    /// The set, planned against the server it came from (nothing changed since): every
    /// slot kept and continuous, every publication in place.
    fn check_set(&self, ctx: &Ctx, repo: &Repo, id: &str) -> anyhow::Result<String> {
        let mut cmd = ctx.tool("cdc-slot-tool");
        repo.apply(&mut cmd)
            .envs(self.source.pg.env())
            .args(["restore", "--backup-dir", &repo.url, "--backup-id", id])
            .args(["--dry-run", "--output", "json"]);
        let ended = process::run_ok(&mut cmd, "cdc-slot-tool restore --dry-run")?;
        for (slot, _) in sources::SLOTS {
            let record = ended
                .run
                .records("slot")
                .into_iter()
                .find(|r| r["slot_name"] == slot);
            let record =
                record.with_context(|| format!("the set's plan does not name slot {slot}"))?;
            anyhow::ensure!(
                record["action"] == "kept" && record["verdict"] == "continuous",
                "the set's plan for slot {slot} is not kept/continuous: {record}"
            );
        }
        for publication in sources::PUBLICATIONS {
            let record = ended
                .run
                .records("publication")
                .into_iter()
                .find(|r| r["name"] == publication)
                .with_context(|| {
                    format!("the set's plan does not name publication {publication}")
                })?;
            anyhow::ensure!(
                record["action"] == "exists",
                "the set's plan for publication {publication}: {record}"
            );
        }
        Ok("planned against the source: every slot continuous".into())
    }
}

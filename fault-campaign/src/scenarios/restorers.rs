//! The restore tools as [`Restorer`]s: each prepares a source and one complete set in a
//! repository of its backend, restores it into fresh targets, and knows what exactly right
//! looks like (tables equal to the source's, every record once and in order, every slot and
//! publication back with the lost window named).

use std::process::Command;
use std::rc::Rc;

use tempfile::TempDir;
use test_support::os_user::db_tempdir;
use test_support::pg::{DataDirServer, PgCluster, PgOptions};

use super::kill_restorer::Restorer;
use super::sources::{self, Cluster, SlotCluster, APP_DB, APP_TABLES};
use crate::context::{Backend, Ctx, Repo};
use crate::process::{self, Ended};
use crate::{sql, topic};

/// A cluster archiving WAL into a repository of its own, with one base backup and more data
/// after it, every segment archived: the reference is the data at the end.
pub struct ArchivingSource {
    pub cluster: Cluster,
    pub repo: Repo,
    /// The `--config` arguments the repository needs in PostgreSQL's environment.
    pub config: Vec<String>,
    _config_dir: TempDir,
}

impl ArchivingSource {
    /// The cluster with one `pg_basebackup` base backup, more data after it, every segment
    /// archived.
    pub fn new(ctx: &Ctx, backend: Backend) -> anyhow::Result<ArchivingSource> {
        let mut source = ArchivingSource::without_backup(ctx, backend, "pitr")?;
        let (cluster, repo) = (&mut source.cluster, &source.repo);
        let mut cmd = ctx.tool("pg-base-backup");
        repo.apply(&mut cmd).envs(cluster.pg.env()).args([
            "--backup-dir",
            &repo.url,
            "--wal-method",
            "archive",
            "--output",
            "json",
        ]);
        process::run_ok(&mut cmd, "pg-base-backup")?;
        sources::fill_app(&cluster.pg, 2001)?;
        sql::switch_wal_and_wait(&cluster.pg, std::time::Duration::from_secs(60))?;
        cluster.refresh()?;
        Ok(source)
    }

    /// A cluster with the application database archiving its WAL into a fresh repository
    /// (`fc-NAME`) of `backend`; no base backup yet.
    pub fn without_backup(
        ctx: &Ctx,
        backend: Backend,
        name: &str,
    ) -> anyhow::Result<ArchivingSource> {
        let repo = ctx.fresh_repo(backend, name)?;
        let config_dir = db_tempdir("fc-config-");
        let config = repo.config_args(config_dir.path())?;
        let options = PgOptions::default()
            .setting("archive_mode", "on")
            .setting(
                "archive_command",
                &format!(
                    "'{} push %p --backup-dir {} {} -q'",
                    ctx.tool_path("wal-archive").display(),
                    repo.url,
                    config.join(" ")
                ),
            )
            .setting("archive_timeout", "0");
        let cluster = Cluster::with_app(options)?;
        Ok(ArchivingSource {
            cluster,
            repo,
            config,
            _config_dir: config_dir,
        })
    }
}

/// pitr-restore of the newest base backup plus every archived segment, with `--start`.
pub struct Pitr {
    source: Rc<ArchivingSource>,
    target: Option<(TempDir, u16)>,
}

impl Pitr {
    pub fn new(ctx: &Ctx, backend: Backend) -> anyhow::Result<Pitr> {
        Ok(Pitr {
            source: ctx.shared(&format!("pitr:{}", backend.name()), || {
                ArchivingSource::new(ctx, backend)
            })?,
            target: None,
        })
    }

    fn target(&self) -> (&TempDir, u16) {
        let (dir, port) = self.target.as_ref().expect("a target was made");
        (dir, *port)
    }

    fn server(&self) -> DataDirServer {
        let (dir, port) = self.target();
        DataDirServer::new(dir.path().join("pgdata"), port, dir.path().to_path_buf())
    }
}

impl Restorer for Pitr {
    fn fresh_target(&mut self, _ctx: &Ctx) -> anyhow::Result<()> {
        self.target = Some((db_tempdir("fc-pitr-target-"), test_support::free_port()));
        Ok(())
    }

    fn command(&self, ctx: &Ctx, rerun: bool) -> Command {
        let (dir, port) = self.target();
        let repo = &self.source.repo;
        let mut cmd = ctx.tool("pitr-restore");
        repo.apply(&mut cmd)
            .args(["--backup-dir", &repo.url])
            .args(&self.source.config)
            .arg("--pgdata")
            .arg(dir.path().join("pgdata"))
            .args(["--start", "--port", &port.to_string(), "--socket-dir"])
            .arg(dir.path())
            .args(["--yes", "--output", "json", "--timeout", "120s"]);
        if rerun {
            cmd.arg("--force");
        }
        cmd
    }

    fn check_after_kill(&self, _ctx: &Ctx) -> anyhow::Result<()> {
        Ok(())
    }

    fn check_restored(&self, _ctx: &Ctx, run: &Ended) -> anyhow::Result<String> {
        run.ok("pitr-restore")?;
        let server = self.server();
        sql::expect_tables(&server, APP_DB, &APP_TABLES, &self.source.cluster.digests)?;
        Ok("tables equal to the source at the end of the archive".into())
    }

    fn clean_up(&mut self, _ctx: &Ctx) {
        if self.target.is_some() {
            // Stops whatever server a killed or finished run left on the data directory.
            drop(self.server());
        }
        self.target = None;
    }
}

/// A repository holding one complete logical set of [`APP_DB`].
pub struct LogicalSet {
    pub repo: Repo,
}

/// pg-logical-backup restore of a whole database into a new one.
pub struct LogicalRestore {
    source: Rc<Cluster>,
    set: Rc<LogicalSet>,
    target: String,
}

impl LogicalRestore {
    pub fn new(ctx: &Ctx, backend: Backend) -> anyhow::Result<LogicalRestore> {
        let source = ctx.shared(
            "cluster:logical",
            || Cluster::with_app(PgOptions::default()),
        )?;
        let set = ctx.shared(&format!("logical-set:{}", backend.name()), || {
            let repo = ctx.fresh_repo(backend, "logical-set")?;
            let mut cmd = ctx.tool("pg-logical-backup");
            repo.apply(&mut cmd).envs(source.pg.env()).args([
                "backup",
                "--backup-dir",
                &repo.url,
                "--dbname",
                APP_DB,
            ]);
            process::run_ok(&mut cmd, "pg-logical-backup backup")?;
            Ok(LogicalSet { repo })
        })?;
        Ok(LogicalRestore {
            source,
            set,
            target: String::new(),
        })
    }
}

impl Restorer for LogicalRestore {
    fn fresh_target(&mut self, _ctx: &Ctx) -> anyhow::Result<()> {
        self.target = test_support::unique_name("fc_restore");
        Ok(())
    }

    fn command(&self, ctx: &Ctx, rerun: bool) -> Command {
        let repo = &self.set.repo;
        let mut cmd = ctx.tool("pg-logical-backup");
        repo.apply(&mut cmd)
            .envs(self.source.pg.env())
            .args(["restore", "--backup-dir", &repo.url])
            .args(["--target-db", &self.target, "--yes", "--output", "json"]);
        if rerun {
            cmd.arg("--clean");
        }
        cmd
    }

    fn settle(&self) -> anyhow::Result<()> {
        sql::wait_until_idle(&self.source.pg, std::time::Duration::from_secs(60))
    }

    /// Each table is either absent or whole: a restore is one transaction.
    fn check_after_kill(&self, _ctx: &Ctx) -> anyhow::Result<()> {
        let exists = sql::query(
            &self.source.pg,
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_database WHERE datname = '{}'",
                self.target
            ),
        )?;
        if exists != "1" {
            return Ok(());
        }
        let found = sql::digests(&self.source.pg, &self.target, &APP_TABLES)?;
        for ((table, got), want) in APP_TABLES.iter().zip(found).zip(&self.source.digests) {
            if let Some(got) = got {
                anyhow::ensure!(
                    &got == want,
                    "half-restored table {table}: {got}, the source {want}"
                );
            }
        }
        Ok(())
    }

    fn check_restored(&self, _ctx: &Ctx, run: &Ended) -> anyhow::Result<String> {
        run.ok("pg-logical-backup restore")?;
        sql::expect_tables(
            &self.source.pg,
            &self.target,
            &APP_TABLES,
            &self.source.digests,
        )?;
        Ok("tables equal to the source".into())
    }

    fn clean_up(&mut self, _ctx: &Ctx) {
        let _ = sql::drop_database(&self.source.pg, &self.target);
    }
}

/// A repository holding one complete Kafka set of the source topic.
pub struct TopicSet {
    pub repo: Repo,
}

/// kafka-replay of a set into a new topic.
pub struct Replay {
    source: Rc<sources::Topic>,
    set: Rc<TopicSet>,
    target: String,
}

impl Replay {
    pub fn new(ctx: &Ctx, backend: Backend) -> anyhow::Result<Replay> {
        let source = ctx.shared("topic:source", || sources::Topic::new("fc_source", 1000))?;
        let set = ctx.shared(&format!("kafka-set:{}", backend.name()), || {
            let repo = ctx.fresh_repo(backend, "kafka-set")?;
            let mut cmd = ctx.tool("kafka-topic-backup");
            repo.apply(&mut cmd)
                .args(["--bootstrap-servers", &ctx.kafka, "--backup-dir", &repo.url])
                .args(["--topic", &source.name]);
            process::run_ok(&mut cmd, "kafka-topic-backup")?;
            Ok(TopicSet { repo })
        })?;
        Ok(Replay {
            source,
            set,
            target: String::new(),
        })
    }
}

impl Restorer for Replay {
    fn fresh_target(&mut self, _ctx: &Ctx) -> anyhow::Result<()> {
        self.target = test_support::unique_name("fc_replay");
        Ok(())
    }

    fn command(&self, ctx: &Ctx, _rerun: bool) -> Command {
        let repo = &self.set.repo;
        let mut cmd = ctx.tool("kafka-replay");
        repo.apply(&mut cmd)
            .args(["--bootstrap-servers", &ctx.kafka, "--backup-dir", &repo.url])
            .args(["--topic", &self.source.name, "--target-topic", &self.target])
            .args(["--output", "json"]);
        cmd
    }

    /// What reached the target is a prefix of each source partition: nothing twice, no hole.
    fn check_after_kill(&self, _ctx: &Ctx) -> anyhow::Result<()> {
        let Ok(got) = topic::read(&self.target) else {
            return Ok(()); // not created yet
        };
        topic::expect_prefix(&got, &self.source.contents)?;
        Ok(())
    }

    fn check_restored(&self, _ctx: &Ctx, run: &Ended) -> anyhow::Result<String> {
        run.ok("kafka-replay")?;
        let got = topic::read(&self.target)?;
        topic::expect_same(&got, &self.source.contents, "the target topic")?;
        Ok(format!(
            "{} records, each once and in order",
            topic::count(&got)
        ))
    }

    fn clean_up(&mut self, _ctx: &Ctx) {
        topic::delete(std::slice::from_ref(&self.target));
    }
}

/// A cluster with slots and publications, one slot set of it, and what its publications
/// looked like.
pub struct SlotSource {
    pub cluster: SlotCluster,
    pub repo: Repo,
    pub slots: Vec<String>,
    pub publications: String,
}

/// cdc-slot-tool restore after the slots and publications were dropped.
pub struct SlotRestore {
    source: Rc<SlotSource>,
}

impl SlotRestore {
    pub fn new(ctx: &Ctx, backend: Backend) -> anyhow::Result<SlotRestore> {
        let source = ctx.shared(&format!("slot-set:{}", backend.name()), || {
            let cluster = SlotCluster::new()?;
            let repo = ctx.fresh_repo(backend, "slot-set")?;
            let mut cmd = ctx.tool("cdc-slot-tool");
            repo.apply(&mut cmd)
                .envs(cluster.pg.env())
                .args(["backup", "--backup-dir", &repo.url]);
            process::run_ok(&mut cmd, "cdc-slot-tool backup")?;
            let slots = cluster.slots()?;
            let publications = cluster.publications()?;
            Ok(SlotSource {
                cluster,
                repo,
                slots,
                publications,
            })
        })?;
        Ok(SlotRestore { source })
    }

    fn pg(&self) -> &PgCluster {
        &self.source.cluster.pg
    }
}

impl Restorer for SlotRestore {
    /// The slots and publications gone, and changes since the backup (so a recreated slot
    /// starts after the saved position: consumers lost a window).
    fn fresh_target(&mut self, _ctx: &Ctx) -> anyhow::Result<()> {
        self.source.cluster.drop_all()?;
        sql::query(
            self.pg(),
            APP_DB,
            "INSERT INTO events SELECT max(id) + 1, '{}' FROM events",
        )?;
        Ok(())
    }

    fn command(&self, ctx: &Ctx, _rerun: bool) -> Command {
        let repo = &self.source.repo;
        let mut cmd = ctx.tool("cdc-slot-tool");
        repo.apply(&mut cmd).envs(self.pg().env()).args([
            "restore",
            "--backup-dir",
            &repo.url,
            "--yes",
            "--output",
            "json",
        ]);
        cmd
    }

    fn settle(&self) -> anyhow::Result<()> {
        sql::wait_until_idle(self.pg(), std::time::Duration::from_secs(60))
    }

    fn check_after_kill(&self, _ctx: &Ctx) -> anyhow::Result<()> {
        Ok(())
    }

    /// Exit 1 (consumers must act), every slot back and judged a gap, the publications as
    /// they were.
    fn check_restored(&self, _ctx: &Ctx, run: &Ended) -> anyhow::Result<String> {
        run.expect_code(1, "cdc-slot-tool restore")?;
        let slots = self.source.cluster.slots()?;
        anyhow::ensure!(
            slots == self.source.slots,
            "slots after the restore: {slots:?}, saved {:?}",
            self.source.slots
        );
        let publications = self.source.cluster.publications()?;
        anyhow::ensure!(
            publications == self.source.publications,
            "publications after the restore: {publications}, saved {}",
            self.source.publications
        );
        for record in run.run.records("slot") {
            anyhow::ensure!(
                record["verdict"] == "gap",
                "slot {} is judged {} after it was recreated past the saved position: {record}",
                record["slot_name"],
                record["verdict"]
            );
        }
        let summary = run.run.summary();
        anyhow::ensure!(
            summary["failed"] == 0,
            "the restore reports failures: {summary}"
        );
        Ok("every slot and publication back, lost window named".into())
    }

    fn clean_up(&mut self, _ctx: &Ctx) {}
}

//! SIGKILL or SIGTERM (seeded) of `pg-base-backup --pgdata` at a random moment, for
//! `--type incr` and `--type full`. The source cluster archives its WAL into the scenario's
//! repository; retention keeps one set and the chain it needs. Each trial:
//!
//! 1. a full backup from the data directory (it expires the previous trial's chain as a
//!    unit), changed rows, then a timed run like the one to stop (incr: an incr on that full;
//!    full: a second full, whose retention deletes the first);
//! 2. more changed rows, and the same run stopped at a uniform moment of the timed length;
//! 3. no new set looks complete unless the run had committed it before the signal, a run
//!    stopped by SIGTERM exited 143 and removed its unfinished set, every complete set's chain
//!    resolves, and `validate-backups` passes on what remains;
//! 4. the same run again, with `--incomplete-grace 0s` so that its retention removes what the
//!    stopped run left, succeeds: a new complete set of the type whose chain (`details.chain`)
//!    resolves, the full first and the newest set complete before it last, and no incomplete
//!    set is left;
//! 5. a point-in-time restore of that set (`--target latest --start`) gives the source's
//!    `pg_dumpall`.

use std::collections::HashSet;
use std::process::Command;
use std::rc::Rc;
use std::time::Duration;

use anyhow::Context as _;
use common::physical::{chain, BackupType, CaptureMethod, PhysicalDetails};
use common::repo::{Kind, SetInfo};
use test_support::os_user::db_tempdir;
use test_support::pg::DataDirServer;

use super::kill_writer::describe;
use super::restorers::ArchivingSource;
use super::sources::APP_DB;
use super::writers::KEEP_ONE;
use super::Scenario;
use crate::checks;
use crate::context::{Backend, Ctx};
use crate::process::{self, Ended, Running, Stop};
use crate::sql;

/// A signal this soon after the start may come before the program has set its handler (the
/// runtime's own start-up): it then ends by the signal, as any program would.
const STARTING: Duration = Duration::from_millis(20);

/// How long the archiver may take to archive the segment a restore needs.
const ARCHIVE_WAIT: Duration = Duration::from_secs(60);

struct KillPgdata {
    source: Rc<ArchivingSource>,
    backup_type: BackupType,
}

/// The scenario for `backup_type` (incr or full) on a repository of `backend`; the source
/// cluster is shared by both types.
pub fn make(
    ctx: &Ctx,
    backup_type: BackupType,
    backend: Backend,
) -> anyhow::Result<Box<dyn Scenario>> {
    let source = ctx.shared(&format!("pgdata:{}", backend.name()), || {
        ArchivingSource::without_backup(ctx, backend, "pgdata")
    })?;
    Ok(Box::new(KillPgdata {
        source,
        backup_type,
    }))
}

impl Scenario for KillPgdata {
    fn trial(&mut self, ctx: &Ctx, rng: &mut fastrand::Rng) -> anyhow::Result<String> {
        let t = self.backup_type.name();
        self.run(ctx, BackupType::Full, "the trial's full backup")?;
        self.change_rows(rng)?;
        let timed = self.run(ctx, self.backup_type, &format!("the timed {t} run"))?;
        self.change_rows(rng)?;

        let before = self.sets()?;
        let stop = if rng.bool() { Stop::Kill } else { Stop::Term };
        let at = checks::kill_moment(rng, timed.elapsed);
        let stopped = Running::spawn(&mut self.command(ctx, self.backup_type), "the stopped run")?
            .stop_at(at, stop)?;
        let note = format!(
            "{} of a {:.2}s {t} run",
            stopped.kill_note(),
            timed.elapsed.as_secs_f64()
        );
        let committed = self
            .check_stopped(ctx, &stopped, &before)
            .with_context(|| format!("after the stopped run ({note})"))?;

        checks::wait_for_s3_lock(&self.source.repo, Kind::Base)?;
        sql::wait_until_idle(&self.source.cluster.pg, ARCHIVE_WAIT)?;
        self.change_rows(rng)?;
        let reference = self
            .sets()?
            .into_iter()
            .rev()
            .find(SetInfo::is_complete)
            .context("no complete set before the re-run")?
            .id;
        let mut rerun = self.command(ctx, self.backup_type);
        rerun.args(["--incomplete-grace", "0s"]);
        let next = process::run_ok(&mut rerun, "the re-run")
            .with_context(|| format!("after the stopped run ({note})"))?;
        let next_id = next.set_id()?;
        let links = self.check_rerun(&next_id, &reference).with_context(|| {
            format!("the re-run's set {next_id} after the stopped run ({note})")
        })?;
        self.check_restore(ctx, &next_id)
            .with_context(|| format!("restoring the re-run's set {next_id} ({note})"))?;
        Ok(format!(
            "{note}; {}; re-run {next_id} ({t}, chain of {links} set(s)) restores to the source's pg_dumpall",
            match (stopped.killed_at, committed) {
                (None, _) => "its complete set validates",
                (Some(_), true) => "its set, committed before the signal, validates",
                (Some(_), false) => "no new complete set, validate-backups passes",
            }
        ))
    }
}

impl KillPgdata {
    /// `pg-base-backup --type TYPE --pgdata <the source's data directory>`, WAL in the
    /// archive, keeping one set (and its chain).
    fn command(&self, ctx: &Ctx, backup_type: BackupType) -> Command {
        let (repo, pg) = (&self.source.repo, &self.source.cluster.pg);
        let mut cmd = ctx.tool("pg-base-backup");
        repo.apply(&mut cmd)
            .envs(pg.env())
            .args(["--backup-dir", &repo.url, "--type", backup_type.name()])
            .arg("--pgdata")
            .arg(&pg.data_dir)
            .args(["--wal-method", "archive", "--output", "json"])
            .args(KEEP_ONE);
        cmd
    }

    fn run(&self, ctx: &Ctx, backup_type: BackupType, what: &str) -> anyhow::Result<Ended> {
        process::run_ok(&mut self.command(ctx, backup_type), what)
    }

    fn sets(&self) -> anyhow::Result<Vec<SetInfo>> {
        self.source.repo.sets(Kind::Base)
    }

    /// Updates a seeded slice of the orders and adds an event: pages an incr must carry.
    fn change_rows(&self, rng: &mut fastrand::Rng) -> anyhow::Result<()> {
        let slice = rng.u32(0..37);
        sql::query(
            &self.source.cluster.pg,
            APP_DB,
            &format!(
                "UPDATE orders SET total = total + 1, note = md5(random()::text) WHERE id % 37 = {slice};
                 INSERT INTO events SELECT max(id) + 1, jsonb_build_object('slice', {slice}) FROM events;"
            ),
        )
        .map(drop)
    }

    /// What the stopped run left: no child alive; its exit (0 if it ended first, 143 after
    /// SIGTERM); a new complete set only if it had committed one, and then no unfinished one
    /// after SIGTERM; every complete set's chain whole; `validate-backups` clean. True when
    /// the run had committed its set.
    fn check_stopped(
        &self,
        ctx: &Ctx,
        stopped: &Ended,
        before: &[SetInfo],
    ) -> anyhow::Result<bool> {
        anyhow::ensure!(
            stopped.orphans.is_empty(),
            "children outlived it by {}s: {}",
            process::ORPHAN_GRACE.as_secs(),
            stopped.orphans.join("; ")
        );
        match (stopped.killed_at, stopped.stop) {
            (None, _) => stopped.ok("the run meant to be stopped (it ended first)")?,
            // Signalled while the program was still starting, before any program can have
            // its handler: ended by the signal itself, with nothing written (checked below).
            (Some(at), Stop::Term) if stopped.run.code == -1 && at < STARTING => {}
            (Some(_), Stop::Term) if stopped.run.code != 0 => {
                stopped.expect_code(143, "the run stopped by SIGTERM")?
            }
            _ => {}
        }
        let old: HashSet<&str> = before.iter().map(|s| s.id.as_str()).collect();
        let after = self.sets()?;
        let new: Vec<&SetInfo> = after
            .iter()
            .filter(|s| !old.contains(s.id.as_str()))
            .collect();
        let committed = new.iter().any(|s| s.is_complete());
        if committed {
            // Only a run that got past its commit may leave a complete set: it must say so
            // when it ended on its own; killed, its set must hold up (checked below).
            anyhow::ensure!(
                new.len() == 1,
                "it left {} new sets: {}",
                new.len(),
                describe(new.iter().copied())
            );
        }
        let unfinished: Vec<&SetInfo> = new.iter().copied().filter(|s| !s.is_complete()).collect();
        anyhow::ensure!(
            stopped.stop == Stop::Kill || stopped.killed_at.is_none() || unfinished.is_empty(),
            "SIGTERM (exit {}) left its unfinished set {} behind",
            stopped.run.code,
            describe(unfinished.iter().copied())
        );
        for set in after.iter().filter(|s| s.is_complete()) {
            chain::resolve(&after, set).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        checks::validate(ctx, &self.source.repo, Kind::Base)?;
        Ok(committed)
    }

    /// The re-run's set is complete, of the type asked, read from the data directory, and its
    /// chain resolves: the full first, `reference` (the newest complete set before it) last;
    /// retention left no incomplete set. Returns the chain's length.
    fn check_rerun(&self, id: &str, reference: &str) -> anyhow::Result<usize> {
        let sets = self.sets()?;
        let set = sets
            .iter()
            .find(|s| s.id == id)
            .context("it is not in the repository")?;
        let manifest = set.manifest().context("it has no manifest")?;
        let details = PhysicalDetails::from_manifest(manifest)?;
        anyhow::ensure!(
            details.backup_type == self.backup_type && details.method == CaptureMethod::DataDir,
            "it is a {} backup taken with {:?}, not a {} from the data directory",
            details.backup_type.name(),
            details.method,
            self.backup_type.name()
        );
        let links = chain::resolve(&sets, set).map_err(|e| anyhow::anyhow!("{e}"))?;
        let first = &links[0].details;
        anyhow::ensure!(
            first.backup_type == BackupType::Full,
            "its chain starts with a {} set, {}",
            first.backup_type.name(),
            links[0].set.id
        );
        if self.backup_type == BackupType::Incr {
            anyhow::ensure!(
                details.reference.as_deref() == Some(reference)
                    && details.chain.last().map(String::as_str) == Some(reference),
                "its reference is {:?} and its chain {:?}, not the newest complete set {reference}",
                details.reference,
                details.chain
            );
        }
        let incomplete: Vec<&SetInfo> = sets.iter().filter(|s| !s.is_complete()).collect();
        anyhow::ensure!(
            incomplete.is_empty(),
            "its retention (--incomplete-grace 0s) left incomplete sets: {}",
            describe(incomplete.iter().copied())
        );
        Ok(links.len())
    }

    /// Archives everything so far, then restores set `id` to the end of the archive with
    /// `pitr-restore --start` and compares `pg_dumpall` with the source's.
    fn check_restore(&self, ctx: &Ctx, id: &str) -> anyhow::Result<()> {
        let (repo, pg) = (&self.source.repo, &self.source.cluster.pg);
        sql::switch_wal_and_wait(pg, ARCHIVE_WAIT)?;
        let reference = sql::dumpall(pg)?;
        let dir = db_tempdir("fc-pgdata-restore-");
        let pgdata = dir.path().join("pgdata");
        let port = test_support::free_port();
        let mut cmd = ctx.tool("pitr-restore");
        repo.apply(&mut cmd)
            .args(["--backup-dir", &repo.url, "--backup-id", id])
            .args(&self.source.config)
            .arg("--pgdata")
            .arg(&pgdata)
            .args(["--target", "latest", "--start", "--port", &port.to_string()])
            .arg("--socket-dir")
            .arg(dir.path())
            .args(["--yes", "--output", "json", "--timeout", "120s"]);
        let ended = process::run(&mut cmd, "pitr-restore")?;
        let server = DataDirServer::new(pgdata, port, dir.path().to_path_buf());
        ended.ok("pitr-restore --target latest")?;
        let restored = sql::dumpall(&server)?;
        anyhow::ensure!(
            restored == reference,
            "pg_dumpall of the restored cluster differs from the source's: {}",
            sql::first_difference(&restored, &reference)
        );
        Ok(())
    }
}

//! SIGKILL of a restore tool at a random moment. The restorer prepares a source and one
//! complete set once; a calibration run restores it to completion (proving the check) and
//! gives the length the kill moment is drawn over. Each trial: a fresh target, a run killed
//! at a uniform moment in `[0, length)`, the restorer's check of what a killed run may leave
//! (no half-restored table), a re-run that must succeed, and the exact data.

use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;

use super::Scenario;
use crate::checks;
use crate::context::Ctx;
use crate::process::{self, Running};

/// A restore tool under test.
pub trait Restorer {
    /// A fresh target (a data directory, a database, a topic, a cluster without its slots).
    fn fresh_target(&mut self, ctx: &Ctx) -> anyhow::Result<()>;
    /// The restore into the current target; `rerun` after a killed run.
    fn command(&self, ctx: &Ctx, rerun: bool) -> Command;
    /// Waits until what the killed run started on a server has ended (a backend finishing a
    /// CREATE DATABASE after its client died), as it would have before anyone re-ran it.
    fn settle(&self) -> anyhow::Result<()> {
        Ok(())
    }
    /// What a killed run left must not pretend: e.g. no half-restored table.
    fn check_after_kill(&self, ctx: &Ctx) -> anyhow::Result<()>;
    /// The finished run's exit code is right and the target holds exactly the source.
    fn check_restored(&self, ctx: &Ctx, run: &process::Ended) -> anyhow::Result<String>;
    /// Removes the current target.
    fn clean_up(&mut self, ctx: &Ctx);
}

struct KillRestorer<R> {
    restorer: R,
    length: Duration,
}

/// The scenario, calibrated: an uninterrupted restore must pass the same checks first.
pub fn make<R: Restorer + 'static>(ctx: &Ctx, restorer: R) -> anyhow::Result<Box<dyn Scenario>> {
    let mut scenario = KillRestorer {
        restorer,
        length: Duration::ZERO,
    };
    scenario.calibrate(ctx)?;
    Ok(Box::new(scenario))
}

impl<R: Restorer> KillRestorer<R> {
    fn calibrate(&mut self, ctx: &Ctx) -> anyhow::Result<()> {
        self.restorer.fresh_target(ctx)?;
        let result = (|| -> anyhow::Result<Duration> {
            let ended = process::run(
                &mut self.restorer.command(ctx, false),
                "the calibration run",
            )?;
            self.restorer
                .check_restored(ctx, &ended)
                .context("the uninterrupted calibration run")?;
            Ok(ended.elapsed)
        })();
        self.restorer.clean_up(ctx);
        self.length = result?;
        Ok(())
    }

    fn killed_trial(&mut self, ctx: &Ctx, rng: &mut fastrand::Rng) -> anyhow::Result<String> {
        let at = checks::kill_moment(rng, self.length);
        let length = self.length;
        let killed = Running::spawn(&mut self.restorer.command(ctx, false), "the killed run")?
            .kill_at(at)?;
        let note = killed.kill_note();
        anyhow::ensure!(
            killed.orphans.is_empty(),
            "{note}: children outlived it by {}s: {}",
            process::ORPHAN_GRACE.as_secs(),
            killed.orphans.join("; ")
        );
        self.restorer
            .settle()
            .and_then(|()| self.restorer.check_after_kill(ctx))
            .with_context(|| format!("after the kill ({note})"))?;
        let rerun = process::run(&mut self.restorer.command(ctx, true), "the re-run")?;
        let checked = self
            .restorer
            .check_restored(ctx, &rerun)
            .with_context(|| format!("the re-run after the kill ({note})"))?;
        // The re-run is a whole run: it keeps the kill window in step with the machine's load.
        self.length = (length + rerun.elapsed) / 2;
        Ok(format!(
            "{note} of a {:.2}s restore; re-run: {checked}",
            length.as_secs_f64()
        ))
    }
}

impl<R: Restorer> Scenario for KillRestorer<R> {
    fn trial(&mut self, ctx: &Ctx, rng: &mut fastrand::Rng) -> anyhow::Result<String> {
        self.restorer.fresh_target(ctx)?;
        let result = self.killed_trial(ctx, rng);
        self.restorer.clean_up(ctx);
        result
    }
}

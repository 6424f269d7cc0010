//! SIGKILL of a backup tool at a random moment. Each trial, in a fresh repository:
//!
//! 1. two runs complete; the second, whose retention (keep one set) deletes the first set,
//!    is as long as the killed run would be: the kill moment is uniform over its length;
//! 2. a third run is killed at that moment (it may be writing, committing, or deleting the
//!    previous set);
//! 3. what lists as complete is intact: at least one set, `validate-backups` passes on the
//!    kind, and the newest complete set restores to the source's data;
//! 4. the next run (after a killed S3 run's lock expired) succeeds with a new complete set.

use std::process::Command;

use anyhow::Context as _;
use common::repo::Kind;

use super::Scenario;
use crate::checks;
use crate::context::{Backend, Ctx, Repo};
use crate::process::{self, Running};

/// A backup tool under test.
pub trait Writer {
    fn kind(&self) -> Kind;
    /// Short name for repositories and messages.
    fn name(&self) -> &'static str;
    /// One backup run into `repo`, keeping one complete set.
    fn command(&self, ctx: &Ctx, repo: &Repo) -> Command;
    /// Restores set `id` of `repo` and fails unless it holds the source's data.
    fn check_set(&self, ctx: &Ctx, repo: &Repo, id: &str) -> anyhow::Result<String>;
}

struct KillWriter<W> {
    writer: W,
    backend: Backend,
}

pub fn make<W: Writer + 'static>(writer: W, backend: Backend) -> anyhow::Result<Box<dyn Scenario>> {
    Ok(Box::new(KillWriter { writer, backend }))
}

impl<W: Writer> Scenario for KillWriter<W> {
    fn trial(&mut self, ctx: &Ctx, rng: &mut fastrand::Rng) -> anyhow::Result<String> {
        let w = &self.writer;
        let kind = w.kind();
        let repo = ctx.fresh_repo(self.backend, w.name())?;
        process::run_ok(&mut w.command(ctx, &repo), "the first run")?;
        // A run like the killed one (a set to keep, one for retention to delete) sets the length.
        let timed = process::run_ok(&mut w.command(ctx, &repo), "the second run")?;
        let at = checks::kill_moment(rng, timed.elapsed);

        let killed = Running::spawn(&mut w.command(ctx, &repo), "the killed run")?.kill_at(at)?;
        let note = format!(
            "{} of a {:.2}s run",
            killed.kill_note(),
            timed.elapsed.as_secs_f64()
        );
        anyhow::ensure!(
            killed.orphans.is_empty(),
            "{note}: children outlived it by {}s: {}",
            process::ORPHAN_GRACE.as_secs(),
            killed.orphans.join("; ")
        );
        if killed.killed_at.is_none() {
            killed.ok("the run meant to be killed (it ended first)")?;
        }

        let sets = repo.sets(kind)?;
        let complete: Vec<_> = sets.iter().filter(|s| s.is_complete()).collect();
        let newest = complete
            .last()
            .with_context(|| format!("{note}: no complete {kind} set is left"))?
            .id
            .clone();
        checks::validate(ctx, &repo, kind).with_context(|| format!("after the kill ({note})"))?;
        let restored = w
            .check_set(ctx, &repo, &newest)
            .with_context(|| format!("the newest complete set {newest} after the kill ({note})"))?;

        checks::wait_for_s3_lock(&repo, kind)?;
        let next = process::run_ok(&mut w.command(ctx, &repo), "the next run")
            .with_context(|| format!("after the kill ({note})"))?;
        let after = repo.sets(kind)?;
        let newest_after = after.iter().rev().find(|s| s.is_complete());
        anyhow::ensure!(
            newest_after.is_some_and(|s| s.id != newest),
            "the next run after the kill ({note}) exited 0 but the newest complete set is still {newest}; sets before: {}; after: {}; its output: {}",
            describe(&sets),
            describe(&after),
            process::last_lines(&next.run.stdout, 1)
        );
        Ok(format!(
            "{note}; {} set(s), {} complete; {restored}; next run ok",
            sets.len(),
            complete.len()
        ))
    }
}

/// "id (complete|incomplete)" of each set.
pub fn describe<'a>(sets: impl IntoIterator<Item = &'a common::repo::SetInfo>) -> String {
    sets.into_iter()
        .map(|s| {
            format!(
                "{} ({})",
                s.id,
                if s.is_complete() {
                    "complete"
                } else {
                    "incomplete"
                }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

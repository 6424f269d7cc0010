//! Services failing mid-run (scenario 4): PostgreSQL restarted (fast and immediate) under a
//! base backup and a logical dump, a private broker killed under a topic export and a
//! replay, a private S3 server killed under an upload and started again, and S3 stalling
//! behind a proxy. A writer trial, in a fresh repository:
//!
//! 1. a run completes (a set that must survive), a second one through the same path as the
//!    faulty run gives its length;
//! 2. a third run meets the fault at a seeded moment, uniform over that length;
//! 3. it ends within the fault's stated bound after the fault: exit 2 with one
//!    `<tool>: ...` line naming the cause (not a child's signal), and no new set that lists
//!    as complete; or exit 0 when the fault came too late to matter, with a set that checks;
//! 4. once the service is back, `validate-backups` passes on the kind, and the next run
//!    succeeds with a new complete set that restores (or replays) to the source's data.
//!
//! The faults are in [`super::service_faults`], the replay's trial in [`super::service_replay`].

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use test_support::run::Run;

use super::kill_writer::{describe, Writer};
use super::service_faults::{BrokerKill, PgRestart, S3Kill, S3Stall};
use super::service_replay::{BrokerExport, BrokerReplay};
use super::writers::{Base, Logical, TopicExport};
use super::{entry, Entry, Scenario};
use crate::checks;
use crate::context::{Ctx, Repo, Tier};
use crate::process::{self, Ended, Running};

/// Trials per scenario: 1 in the quick tier (ten scenarios of a few seconds each, for
/// CI), 10 in the full campaign.
pub fn trials(tier: Tier) -> usize {
    match tier {
        Tier::Quick => 1,
        Tier::Full => 10,
    }
}

pub fn entries() -> Vec<Entry> {
    let mut list = Vec::new();
    for (mode, about_base, about_logical) in [
        (
            "fast",
            "pg_ctl restart -m fast mid base backup: exit 2, one line, nothing new complete; the next run restores",
            "pg_ctl restart -m fast mid logical dump: exit 2, one line, nothing new complete; the next run restores",
        ),
        (
            "immediate",
            "pg_ctl restart -m immediate mid base backup: exit 2, one line, nothing new complete; the next run restores",
            "pg_ctl restart -m immediate mid logical dump: exit 2, one line, nothing new complete; the next run restores",
        ),
    ] {
        list.push(entry(
            format!("service:pg-restart-{mode}:pg-base-backup"),
            about_base,
            trials,
            Box::new(move |ctx| {
                let fault = PgRestart::base(ctx, mode)?;
                make(Base::new(ctx)?, fault)
            }),
        ));
        list.push(entry(
            format!("service:pg-restart-{mode}:pg-logical-backup"),
            about_logical,
            trials,
            Box::new(move |ctx| {
                let fault = PgRestart::logical(ctx, mode)?;
                make(Logical::new(ctx)?, fault)
            }),
        ));
    }
    list.push(entry(
        "service:broker-kill:kafka-topic-backup".into(),
        "private broker killed (-9) mid export: exit 2 in bounded time, nothing new complete; restarted, the next run replays exactly",
        trials,
        Box::new(|_| {
            let fault = BrokerKill::start()?;
            let writer = BrokerExport::new(&fault)?;
            make(writer, fault)
        }),
    ));
    list.push(entry(
        "service:broker-kill:kafka-replay".into(),
        "private broker killed (-9) mid replay: exit 2 in bounded time; restarted, a re-run leaves every record once, in order",
        trials,
        Box::new(|ctx| Ok(Box::new(BrokerReplay::new(ctx)?) as Box<dyn Scenario>)),
    ));
    list.push(entry(
        "service:s3-kill:pg-base-backup".into(),
        "private S3 server killed (-9) mid upload: exit 2, nothing new complete; restarted, validate green and the next run restores",
        trials,
        Box::new(|ctx| make(Base::new(ctx)?, S3Kill::start()?)),
    ));
    list.push(entry(
        "service:s3-kill:kafka-topic-backup".into(),
        "private S3 server killed (-9) mid upload: exit 2, nothing new complete; restarted, validate green and the next run replays",
        trials,
        Box::new(|ctx| make(TopicExport::new(ctx)?, S3Kill::start()?)),
    ));
    list.push(entry(
        "service:s3-slow:pg-base-backup".into(),
        "S3 stops answering (stalling proxy) mid upload: exit 2 within the request timeout's bound, nothing new complete; clean re-run direct",
        trials,
        Box::new(|ctx| make(Base::new(ctx)?, S3Stall::new(ctx)?)),
    ));
    list.push(entry(
        "service:s3-slow:kafka-topic-backup".into(),
        "S3 stops answering (stalling proxy) mid upload: exit 2 within the request timeout's bound, nothing new complete; clean re-run direct",
        trials,
        Box::new(|ctx| make(TopicExport::new(ctx)?, S3Stall::new(ctx)?)),
    ));
    list
}

/// A service that fails at a moment of a run, and comes back.
pub trait Fault {
    /// A fresh repository for a trial.
    fn fresh_repo(&mut self, ctx: &Ctx, name: &str) -> anyhow::Result<Repo>;
    /// Prepares a trial's timed and faulty runs (e.g. a proxy in front of the service).
    fn arm(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
    /// Routes a run of the tool the way the fault reaches it (through the proxy).
    fn route(&self, _cmd: &mut Command) {}
    /// Breaks the service; returns what was done.
    fn inject(&mut self) -> anyhow::Result<String>;
    /// Brings the service back (or the direct way to it).
    fn recover(&mut self) -> anyhow::Result<()>;
    /// How long a tool may run on after the fault before it counts as waiting without bound.
    fn bound(&self) -> Duration;
    /// Words of which the tool's error line must hold one (lower case): it names the cause.
    fn causes(&self) -> &'static [&'static str];
}

/// Injects `fault` now and waits for the run to end within the fault's bound after it;
/// returns what was injected, when (since `started`), and how the run ended.
pub(super) fn inject_and_wait(
    fault: &mut impl Fault,
    running: Running,
    started: Instant,
) -> anyhow::Result<(String, Duration, Ended)> {
    let injected_at = started.elapsed();
    let what = fault.inject()?;
    let bound = fault.bound();
    let ended = running.wait(injected_at + bound).with_context(|| {
        format!(
            "{what} at {:.2}s: no end within {}s of it",
            injected_at.as_secs_f64(),
            bound.as_secs()
        )
    })?;
    Ok((what, injected_at, ended))
}

struct FaultWriter<W, F> {
    writer: W,
    fault: F,
}

fn make<W: Writer + 'static, F: Fault + 'static>(
    writer: W,
    fault: F,
) -> anyhow::Result<Box<dyn Scenario>> {
    Ok(Box::new(FaultWriter { writer, fault }))
}

impl<W: Writer, F: Fault> Scenario for FaultWriter<W, F> {
    fn trial(&mut self, ctx: &Ctx, rng: &mut fastrand::Rng) -> anyhow::Result<String> {
        // A trial that failed half-way left the service down: the next one starts it again.
        self.fault.recover()?;
        let repo = self.fault.fresh_repo(ctx, self.writer.name())?;
        let result = self.faulty_trial(ctx, rng, &repo);
        // Whatever happened, the service comes back before the repository is removed.
        let recovered = self.fault.recover();
        let note = result?;
        recovered?;
        self.after(ctx, &repo, note)
    }
}

/// How the faulty run ended.
struct Outcome {
    note: String,
    /// The complete sets before the faulty run.
    before: BTreeSet<String>,
    /// The run exited 0: the fault came too late to matter.
    succeeded: bool,
    /// The failed run's error line.
    error_line: Option<String>,
    /// What the faulty run said last ([`Ended::output_tail`]), for a report that needs it.
    output_tail: String,
}

impl<W: Writer, F: Fault> FaultWriter<W, F> {
    fn run(&self, ctx: &Ctx, repo: &Repo) -> Command {
        let mut cmd = self.writer.command(ctx, repo);
        self.fault.route(&mut cmd);
        cmd
    }

    /// Steps 1 to 3: the runs before the fault, and the faulty run's end.
    fn faulty_trial(
        &mut self,
        ctx: &Ctx,
        rng: &mut fastrand::Rng,
        repo: &Repo,
    ) -> anyhow::Result<Outcome> {
        let kind = self.writer.kind();
        process::run_ok(&mut self.writer.command(ctx, repo), "the first run")?;
        self.fault.arm()?;
        let timed = process::run_ok(&mut self.run(ctx, repo), "the timed run")?;
        checks::wait_for_s3_lock(repo, kind)?;
        let before = complete_ids(repo, kind)?;
        let at = checks::kill_moment(rng, timed.elapsed);
        let mut running = Running::spawn(&mut self.run(ctx, repo), "the faulty run")?;
        let started = Instant::now();
        std::thread::sleep(at.saturating_sub(started.elapsed()));
        if !running.is_running() {
            let ended = running.wait(process::RUN_LIMIT)?;
            ended.ok("the run meant to meet the fault (it ended first)")?;
            return Ok(Outcome {
                note: format!(
                    "ended after {:.2}s, before the fault at {:.2}s",
                    ended.elapsed.as_secs_f64(),
                    at.as_secs_f64()
                ),
                before,
                succeeded: true,
                error_line: None,
                output_tail: ended.output_tail(),
            });
        }
        let (what, injected_at, ended) = inject_and_wait(&mut self.fault, running, started)?;
        let after = ended.elapsed.saturating_sub(injected_at);
        let mut note = format!(
            "{what} at {:.2}s of a {:.2}s run; exit {} {:.1}s later",
            injected_at.as_secs_f64(),
            timed.elapsed.as_secs_f64(),
            ended.run.code,
            after.as_secs_f64()
        );
        let succeeded = ended.run.code == 0;
        let mut error_line = None;
        if !succeeded {
            let line = expect_error_line(&ended.run, tool_of(&self.writer), self.fault.causes())
                .with_context(|| note.clone())?;
            note.push_str(&format!(": \"{line}\""));
            error_line = Some(line);
        }
        Ok(Outcome {
            note,
            before,
            succeeded,
            error_line,
            output_tail: ended.output_tail(),
        })
    }

    /// Step 4, with the service back: nothing new looks complete unless the run succeeded,
    /// the repository validates, the next run works and its set holds the source's data.
    fn after(&self, ctx: &Ctx, repo: &Repo, outcome: Outcome) -> anyhow::Result<String> {
        let kind = self.writer.kind();
        let Outcome {
            note,
            before,
            succeeded,
            error_line,
            output_tail,
        } = outcome;
        let sets = repo.sets(kind)?;
        let now = complete_ids(repo, kind)?;
        let new: Vec<&String> = now.difference(&before).collect();
        if succeeded {
            let newest = new.last().with_context(|| {
                format!(
                    "{note}: it exited 0 but left no new complete set; sets: {}; {output_tail}",
                    describe(&sets)
                )
            })?;
            self.writer
                .check_set(ctx, repo, newest)
                .with_context(|| format!("{note}: its set {newest}"))?;
        } else if let Some(&kept) = new.first() {
            // Only a set the run said may be complete, and which checks out.
            let said = error_line.as_deref().is_some_and(|line| {
                COMPLETE_DESPITE.iter().any(|why| line.contains(why))
                    && line.contains(kept.as_str())
            });
            anyhow::ensure!(
                said && new.len() == 1,
                "{note}: a set looks complete after the failure: {kept}; sets: {}",
                describe(&sets)
            );
            self.writer
                .check_set(ctx, repo, kept)
                .with_context(|| format!("{note}: the set {kept} its manifest's write left"))?;
        }
        checks::validate(ctx, repo, kind).with_context(|| format!("after the fault ({note})"))?;
        checks::wait_for_s3_lock(repo, kind)?;
        process::run_ok(&mut self.writer.command(ctx, repo), "the next run")
            .with_context(|| format!("after the fault ({note})"))?;
        let id = complete_ids(repo, kind)?
            .difference(&now)
            .last()
            .cloned()
            .with_context(|| format!("the next run ({note}) left no new complete set"))?;
        let restored = self
            .writer
            .check_set(ctx, repo, &id)
            .with_context(|| format!("the next run's set {id} ({note})"))?;
        Ok(format!(
            "{note}; {} set(s) then; next run ok, {restored}",
            sets.len()
        ))
    }
}

/// What a failed run says when it leaves a complete set, the only cases where it may: the
/// store may have kept a manifest whose answer was lost (`common::repo::SetWriter::commit`),
/// or retention failed after the commit (`common::retention::after_commit`).
const COMPLETE_DESPITE: [&str; 2] = [
    "if the store kept the manifest, the set is complete",
    "is complete, but retention failed",
];

/// The binary a writer runs, for its error line's prefix.
fn tool_of<W: Writer>(writer: &W) -> &'static str {
    match writer.kind() {
        common::repo::Kind::Base => "pg-base-backup",
        common::repo::Kind::Logical => "pg-logical-backup",
        common::repo::Kind::Kafka => "kafka-topic-backup",
        common::repo::Kind::Slots => "cdc-slot-tool",
        common::repo::Kind::Wal => "wal-archive",
    }
}

fn complete_ids(repo: &Repo, kind: common::repo::Kind) -> anyhow::Result<BTreeSet<String>> {
    Ok(repo
        .complete_sets(kind)?
        .into_iter()
        .map(|s| s.id)
        .collect())
}

/// The one `<tool>: ...` line of a run that failed because of a service: exit 2, exactly one
/// such line, naming one of `causes`, not blaming a child's signal.
pub fn expect_error_line(run: &Run, tool: &str, causes: &[&str]) -> anyhow::Result<String> {
    let prefix = format!("{tool}: ");
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .collect();
    anyhow::ensure!(
        run.code == 2,
        "exit {} instead of 2; stderr: {}",
        run.code,
        process::last_lines(&run.stderr, 3)
    );
    anyhow::ensure!(
        lines.len() == 1,
        "{} error lines instead of one: {}",
        lines.len(),
        process::last_lines(&run.stderr, 4)
    );
    let line = lines[0];
    let lower = line.to_lowercase();
    anyhow::ensure!(
        causes.iter().any(|c| lower.contains(c)),
        "the error does not name the cause (one of {causes:?}): {line}"
    );
    anyhow::ensure!(
        !lower.contains("signal") && !line.contains("SIGPIPE"),
        "the error blames a child's signal: {line}"
    );
    Ok(line.to_string())
}

//! The scenarios, by name, in the order they run. A name is `<fault>:<tool>[:<backend>]`;
//! `--scenario kill` selects every name starting with `kill:`.

mod disk_full;
mod hostile;
mod kill_pgdata;
mod kill_restorer;
mod kill_writer;
mod load;
mod restorers;
mod service;
mod service_faults;
mod service_replay;
mod sources;
mod wal_push;
mod wiped;
mod writers;

use common::physical::BackupType;

use crate::context::{Backend, Ctx, Tier};

/// One scenario, prepared: it runs trials.
pub trait Scenario {
    /// One trial with its own random source: Ok with what happened when everything ended as
    /// it should, an error saying what did not.
    fn trial(&mut self, ctx: &Ctx, rng: &mut fastrand::Rng) -> anyhow::Result<String>;
}

type Make = Box<dyn Fn(&Ctx) -> anyhow::Result<Box<dyn Scenario>>>;

/// A scenario in the list: made (its fixtures set up) only when selected and reached.
pub struct Entry {
    pub name: String,
    pub about: &'static str,
    pub trials: fn(Tier) -> usize,
    pub make: Make,
}

fn entry(name: String, about: &'static str, trials: fn(Tier) -> usize, make: Make) -> Entry {
    Entry {
        name,
        about,
        trials,
        make,
    }
}

fn all() -> Vec<Entry> {
    let mut list = Vec::new();
    for backend in [Backend::Local, Backend::S3] {
        kill_writers(backend, &mut list);
    }
    for backend in [Backend::Local, Backend::S3] {
        kill_restorers(backend, &mut list);
    }
    list.extend(disk_full::entries());
    list.extend(service::entries());
    list.extend(hostile::entries());
    list.extend(wiped::entries());
    list.extend(load::entries());
    list
}

/// SIGKILL (and SIGTERM) mid run of each tool that writes, on `backend`.
fn kill_writers(backend: Backend, list: &mut Vec<Entry>) {
    let kill = Tier::kill_trials;
    let b = backend.name();
    list.push(entry(
        format!("kill:pg-base-backup:{b}"),
        "SIGKILL mid base backup; complete sets validate and restore, the next run works",
        kill,
        Box::new(move |ctx| kill_writer::make(writers::Base::new(ctx)?, backend)),
    ));
    list.push(entry(
        format!("kill:pg-base-backup-pgdata-full:{b}"),
        "SIGKILL/SIGTERM mid --pgdata full backup; nothing new looks complete, the re-run restores the source",
        Tier::pgdata_kill_trials,
        Box::new(move |ctx| kill_pgdata::make(ctx, BackupType::Full, backend)),
    ));
    list.push(entry(
        format!("kill:pg-base-backup-pgdata-incr:{b}"),
        "SIGKILL/SIGTERM mid --pgdata incr; nothing new looks complete, the re-run's chain restores the source",
        match backend {
            Backend::Local => Tier::pgdata_incr_local_trials,
            Backend::S3 => Tier::pgdata_kill_trials,
        },
        Box::new(move |ctx| kill_pgdata::make(ctx, BackupType::Incr, backend)),
    ));
    list.push(entry(
        format!("kill:wal-archive-push:{b}"),
        "SIGKILL mid push; archived WAL verifies and fetches intact, the re-push works",
        kill,
        Box::new(move |ctx| wal_push::make(ctx, backend)),
    ));
    list.push(entry(
        format!("kill:pg-logical-backup:{b}"),
        "SIGKILL mid logical backup; complete sets validate and restore, the next run works",
        kill,
        Box::new(move |ctx| kill_writer::make(writers::Logical::new(ctx)?, backend)),
    ));
    list.push(entry(
        format!("kill:kafka-topic-backup:{b}"),
        "SIGKILL mid topic export; complete sets validate and replay, the next run works",
        kill,
        Box::new(move |ctx| kill_writer::make(writers::TopicExport::new(ctx)?, backend)),
    ));
    list.push(entry(
        format!("kill:cdc-slot-tool-backup:{b}"),
        "SIGKILL mid slot backup; complete sets validate and match the server, the next run works",
        kill,
        Box::new(move |ctx| kill_writer::make(writers::Slots::new(ctx)?, backend)),
    ));
}

/// SIGKILL mid run of each tool that restores, on `backend`.
fn kill_restorers(backend: Backend, list: &mut Vec<Entry>) {
    let kill = Tier::kill_trials;
    let b = backend.name();
    list.push(entry(
        format!("kill:pitr-restore:{b}"),
        "SIGKILL mid point-in-time restore; a re-run with --force restores exactly the source",
        kill,
        Box::new(move |ctx| kill_restorer::make(ctx, restorers::Pitr::new(ctx, backend)?)),
    ));
    list.push(entry(
        format!("kill:pg-logical-backup-restore:{b}"),
        "SIGKILL mid logical restore; no half-restored table, a re-run restores exactly the source",
        kill,
        Box::new(move |ctx| {
            kill_restorer::make(ctx, restorers::LogicalRestore::new(ctx, backend)?)
        }),
    ));
    list.push(entry(
        format!("kill:kafka-replay:{b}"),
        "SIGKILL mid replay; a re-run leaves the target with every record once, in order",
        kill,
        Box::new(move |ctx| kill_restorer::make(ctx, restorers::Replay::new(ctx, backend)?)),
    ));
    list.push(entry(
        format!("kill:cdc-slot-tool-restore:{b}"),
        "SIGKILL mid slot restore; a re-run recreates every slot and publication and names the lost window",
        kill,
        Box::new(move |ctx| kill_restorer::make(ctx, restorers::SlotRestore::new(ctx, backend)?)),
    ));
}

/// The scenarios `wanted` names (all when empty), in list order; an unknown name is an error.
pub fn select(wanted: &[String]) -> anyhow::Result<Vec<Entry>> {
    let matches = |name: &str, want: &str| {
        name == want
            || name
                .strip_prefix(want)
                .is_some_and(|rest| rest.starts_with(':'))
    };
    let list = all();
    for want in wanted {
        anyhow::ensure!(
            list.iter().any(|e| matches(&e.name, want)),
            "no scenario '{want}' (see --list)"
        );
    }
    Ok(list
        .into_iter()
        .filter(|e| wanted.is_empty() || wanted.iter().any(|w| matches(&e.name, w)))
        .collect())
}

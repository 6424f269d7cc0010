//! Checks specific to one backup kind: physical details and WAL coverage, dump lists, topic
//! archives, slot inventories, and the `--deep` test restores.

mod kafka;
mod logical;
mod physical;
mod slots;

use common::repo::SetInfo;
use common::{Kind, Manifest, Repository};

use crate::check::{CheckResult, Run, Settings};
use crate::scratch::ScratchDir;

pub fn run(run: &mut Run, settings: &Settings, repo: &Repository, kind: Kind, sets: &[SetInfo]) {
    match kind {
        Kind::Base => physical::run(run, settings, repo, sets),
        Kind::Logical => logical::run(run, settings, repo, sets),
        Kind::Kafka => kafka::run(run, settings, repo, sets),
        Kind::Slots => slots::run(run, settings, repo, sets),
        Kind::Wal => {}
    }
}

/// The complete sets, oldest first.
fn complete(sets: &[SetInfo]) -> Vec<(&SetInfo, &Manifest)> {
    sets.iter()
        .filter_map(|s| s.manifest.as_ref().map(|m| (s, m)))
        .collect()
}

/// One result per complete set, or one skip when there is none.
fn per_set(
    name: &'static str,
    kind: Kind,
    sets: &[SetInfo],
    f: impl Fn(&SetInfo, &Manifest) -> CheckResult,
) -> Vec<CheckResult> {
    let complete = complete(sets);
    if complete.is_empty() {
        return vec![CheckResult::skip(name, format!("no complete {kind} sets")).on(kind.name())];
    }
    complete
        .into_iter()
        .map(|(set, m)| f(set, m).on(&set.id))
        .collect()
}

/// A scratch directory for a test restore, removed on drop.
fn scratch(settings: &Settings, prefix: &str) -> anyhow::Result<ScratchDir> {
    ScratchDir::create(settings.scratch_dir.as_deref(), prefix)
        .map_err(|e| anyhow::anyhow!("cannot create a scratch directory: {e} (set --scratch-dir)"))
}

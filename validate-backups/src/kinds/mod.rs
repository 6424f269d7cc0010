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
        .filter_map(|s| s.manifest().map(|m| (s, m)))
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

/// [`per_set`] for checks that read a set's content: an encrypted set is skipped without a
/// key (`<kind>.files` checks its stored bytes and age headers), and `f` gets the whole
/// manifest, its private part decrypted.
fn per_set_content(
    name: &'static str,
    kind: Kind,
    sets: &[SetInfo],
    settings: &Settings,
    repo: &Repository,
    f: impl Fn(&SetInfo, &Manifest) -> CheckResult,
) -> Vec<CheckResult> {
    per_set(name, kind, sets, |set, m| {
        if let Some(skip) = sealed_skip(name, settings, m) {
            return skip;
        }
        match repo.reveal(set, m, settings.identities.as_deref()) {
            Ok(whole) => f(set, &whole),
            Err(e) => CheckResult::fail(name, format!("{e:#}")),
        }
    })
}

/// The skip of a content check on an encrypted set when no key is configured.
fn sealed_skip(name: &'static str, settings: &Settings, m: &Manifest) -> Option<CheckResult> {
    (m.encryption().is_some() && settings.identities.is_none()).then(|| {
        CheckResult::skip(
            name,
            format!(
                "the set is encrypted: set {} to check its content",
                common::encryption::IDENTITY_FILE_ENV
            ),
        )
    })
}

/// What a check found wrong with a set, worded for its failure line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
struct Problem(String);

impl Problem {
    /// Several findings in one line.
    fn joined(found: &[String], separator: &str) -> Problem {
        Problem(found.join(separator))
    }
}

impl From<String> for Problem {
    fn from(text: String) -> Problem {
        Problem(text)
    }
}

impl From<&str> for Problem {
    fn from(text: &str) -> Problem {
        Problem(text.to_string())
    }
}

impl From<Problem> for String {
    fn from(problem: Problem) -> String {
        problem.0
    }
}

/// A file of a set as it was written (decrypted, decompressed), by the name it was written
/// under; errors say what went wrong with it.
fn open_plain(
    repo: &Repository,
    settings: &Settings,
    set: &SetInfo,
    manifest: &Manifest,
    path: &str,
) -> Result<Box<dyn std::io::Read>, Problem> {
    let entry = manifest
        .stored(path)
        .ok_or_else(|| Problem(format!("{path}: not listed in the manifest's files")))?;
    repo.open_plain(set, entry, settings.identities.as_deref())
        .map_err(|e| Problem(format!("cannot read {path}: {e}")))
}

/// A scratch directory for a test restore, removed on drop.
fn scratch(settings: &Settings, prefix: &str) -> anyhow::Result<ScratchDir> {
    ScratchDir::create(settings.scratch_dir.as_deref(), prefix)
        .map_err(|e| anyhow::anyhow!("cannot create a scratch directory: {e} (set --scratch-dir)"))
}

//! Listing the logical sets of the repository, oldest first, complete or not, so an operator
//! can pick a `--backup-id`. What an encrypted set holds (databases, tables, rows) is shown
//! only with its identity in the environment; without it the set is listed as encrypted.

use serde::Serialize;

use common::cli::{GlobalArgs, RepoArgs};
use common::encryption::Identities;
use common::output::OutputFormat;
use common::repo::{SetInfo, SetState};
use common::{Kind, Manifest, Repository, Status};

use crate::details::LogicalDetails;

/// Settings of `list`.
#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
}

#[derive(Debug, Serialize)]
struct SetRecord {
    #[serde(rename = "type")]
    kind: &'static str,
    id: String,
    complete: bool,
    /// Why the set is not usable, when it is not.
    problem: Option<String>,
    /// The set's files are encrypted (age).
    encrypted: bool,
    /// Whether databases, tables and rows below are known: false for an encrypted set
    /// listed without its identity.
    contents_known: bool,
    databases: Vec<String>,
    tables: usize,
    rows: u64,
    bytes: u64,
}

#[derive(Debug, Serialize)]
struct Summary {
    sets: usize,
    complete: usize,
    newest_complete: Option<String>,
}

/// Prints one line per set and a summary.
pub fn run(args: ListArgs, global: &GlobalArgs) -> anyhow::Result<Status> {
    let repo = Repository::open(&args.repo.backup_dir)?;
    let sets = repo.list(Kind::Logical)?;
    let identities = Identities::from_env()?;
    let mut complete = 0;
    let mut newest = None;
    for set in &sets {
        let record = SetRecord::of(&repo, set, identities.as_ref());
        if record.complete {
            complete += 1;
            newest = Some(set.id.clone());
        }
        match global.output {
            OutputFormat::Json => common::output::json_line(&record)?,
            OutputFormat::Text => common::output::text_line(&record.text())?,
        }
    }
    let summary = Summary {
        sets: sets.len(),
        complete,
        newest_complete: newest,
    };
    common::output::summary(global.output, &summary, || {
        format!("{} set(s), {} complete", summary.sets, summary.complete)
    })?;
    Ok(Status::Ok)
}

impl SetRecord {
    /// What the listing says of `set`: its contents, read with `identities` when encrypted,
    /// or why it is not usable.
    fn of(repo: &Repository, set: &SetInfo, identities: Option<&Identities>) -> SetRecord {
        let details = set.manifest().map(|m| contents(repo, set, m, identities));
        let (databases, tables, rows, problem) = match &details {
            Some(Ok(None)) => (Vec::new(), 0, 0, None),
            Some(Ok(Some(d))) => (
                d.databases.iter().map(|db| db.name.clone()).collect(),
                d.databases.iter().map(|db| db.tables.len()).sum(),
                d.databases
                    .iter()
                    .flat_map(|db| db.tables.iter().map(|t| t.rows))
                    .sum(),
                None,
            ),
            Some(Err(e)) => (Vec::new(), 0, 0, Some(format!("{e:#}"))),
            None => (
                Vec::new(),
                0,
                0,
                Some(match set.state() {
                    SetState::Broken(error) => error.to_string(),
                    _ => "no manifest: running, or a failed run".into(),
                }),
            ),
        };
        SetRecord {
            kind: "set",
            id: set.id.clone(),
            complete: problem.is_none(),
            problem,
            encrypted: set.manifest().is_some_and(|m| m.encryption().is_some()),
            contents_known: !matches!(details, Some(Ok(None))),
            databases,
            tables,
            rows,
            bytes: set.manifest().map_or(0, |m| m.total_size()),
        }
    }

    /// The record as a text line.
    fn text(&self) -> String {
        match &self.problem {
            None if !self.contents_known => format!(
                "{}  complete    encrypted (set BACKUP_ENCRYPTION_IDENTITY_FILE to see what it holds)  {} bytes",
                self.id, self.bytes
            ),
            None => format!(
                "{}  complete    {}  {} tables  {} rows  {} bytes",
                self.id,
                self.databases.join(","),
                self.tables,
                self.rows,
                self.bytes
            ),
            Some(problem) => format!("{}  INCOMPLETE  {problem}", self.id),
        }
    }
}

/// The details of a complete set; `None` for an encrypted set whose private part cannot be
/// read (no identity, or not the right one, with a warning).
fn contents(
    repo: &Repository,
    set: &SetInfo,
    manifest: &Manifest,
    identities: Option<&Identities>,
) -> anyhow::Result<Option<LogicalDetails>> {
    if manifest.encryption().is_none() {
        return LogicalDetails::from_manifest(manifest).map(Some);
    }
    let Some(identities) = identities else {
        return Ok(None);
    };
    match repo.reveal(set, manifest, Some(identities)) {
        Ok(whole) => LogicalDetails::from_manifest(&whole).map(Some),
        Err(e) => {
            tracing::warn!("set {}: {e:#}", set.id);
            Ok(None)
        }
    }
}

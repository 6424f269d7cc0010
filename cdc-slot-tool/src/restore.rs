//! `restore`: recreates saved publications and logical slots on a server (typically one just
//! restored by pitr-restore) and reports, per slot, what its consumer lost.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;
use tokio_postgres::Client;

use common::cli::{GlobalArgs, PgArgs, RepoArgs};
use common::output::{self, OutputFormat};
use common::repo::Repository;
use common::Status;

use crate::backup;
use crate::continuity::{SavedHistory, ServerHistory};
use crate::history;
use crate::inventory::{self, Inventory, Publication, Slot};
use crate::publications::{self, PublicationAction, PublicationOutcome};
use crate::recreate::{self, Plan, Setting, SlotAction, SlotOutcome};
use crate::server::{self, Identity, Server};
use common::lsn::Lsn;

/// Exit codes of `restore`.
pub const EXIT_CODES_HELP: &str = "Exit codes:\n  0    every selected slot and publication is in place and consumers resume without loss\n  1    done, but a consumer must act: a window of changes cannot be streamed, the history\n       diverged, or the server is another cluster (see the report)\n  2    error: bad input, unreachable server, or a slot/publication could not be restored\n  130  interrupted";

/// Options of `cdc-slot-tool restore`.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub pg: PgArgs,
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Slots set to restore from [default: the newest complete one].
    #[arg(long, value_name = "ID")]
    pub backup_id: Option<String>,
    /// Restore only this slot (repeatable) [default: every saved logical slot].
    #[arg(long = "slot", value_name = "NAME")]
    pub slots: Vec<String>,
    /// Change the server without asking (required when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Print the plan and the predicted report; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Replace existing slots that differ from the saved ones (drops them) and advance
    /// existing ones that are behind the saved position.
    #[arg(long)]
    pub force: bool,
    /// Leave publications alone.
    #[arg(long)]
    pub no_publications: bool,
    /// Never move slots forward to the saved position.
    #[arg(long)]
    pub no_advance: bool,
    /// Also write the whole report as one JSON document to this local file (atomically),
    /// wherever BACKUP_DIR is.
    #[arg(long, value_name = "PATH")]
    pub report_file: Option<PathBuf>,
}

/// Both sides of the comparison, for the summary.
#[derive(Debug, Serialize)]
struct Position {
    system_identifier: String,
    timeline: u32,
    lsn: Lsn,
    /// When the slot backup was taken (saved side only).
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "common::timefmt::rfc3339::option"
    )]
    taken_at: Option<time::OffsetDateTime>,
}

/// The restore's summary (last JSON line).
#[derive(Debug, Serialize)]
struct Summary {
    backup_id: String,
    dry_run: bool,
    saved: Position,
    server: Position,
    slots_created: usize,
    slots_advanced: usize,
    slots_kept: usize,
    slots_skipped: usize,
    publications_created: usize,
    failed: usize,
    needs_attention: usize,
    warnings: Vec<String>,
}

/// The whole report, as written to `--report-file`.
#[derive(Debug, Serialize)]
struct Report<'a> {
    summary: &'a Summary,
    slots: &'a [SlotOutcome],
    publications: &'a [PublicationOutcome],
}

pub fn run(args: &RestoreArgs, global: &GlobalArgs) -> anyhow::Result<Status> {
    let repo = Repository::open(&args.repo.backup_dir)?;
    let (set, inventory) = backup::load(&repo, args.backup_id.as_deref())?;
    let selected = select_slots(&inventory, &args.slots)?;
    tracing::info!(
        "restoring from slots set {} ({} slots selected)",
        set.id,
        selected.len()
    );
    let runtime = common::postgres::runtime()?;
    let (slots, pubs, summary) = runtime.block_on(restore(args, &set.id, &inventory, &selected))?;

    log_problems(&slots, &pubs, &summary.warnings);
    print_report(global.output, &slots, &pubs, &summary)?;
    if let Some(path) = &args.report_file {
        write_report(path, &summary, &slots, &pubs)?;
    }
    if summary.failed > 0 {
        anyhow::bail!(
            "{} slot(s) or publication(s) could not be restored (see the report above)",
            summary.failed
        );
    }
    Ok(Status::from_passed(
        summary.needs_attention == 0 && summary.warnings.is_empty(),
    ))
}

/// What needs a consumer's attention, and what failed, on stderr.
fn log_problems(slots: &[SlotOutcome], pubs: &[PublicationOutcome], warnings: &[String]) {
    for outcome in slots {
        if let Some(a) = outcome
            .assessment
            .as_ref()
            .filter(|a| a.verdict.needs_attention())
        {
            tracing::warn!("slot {}: {}: {}", outcome.slot_name, a.verdict, a.message);
        }
        if outcome.action == SlotAction::Failed {
            tracing::error!("slot {}: {}", outcome.slot_name, outcome.note);
        }
    }
    for outcome in pubs
        .iter()
        .filter(|p| p.action == PublicationAction::Failed)
    {
        tracing::error!("publication {}: {}", outcome.name, outcome.message);
    }
    for warning in warnings {
        tracing::warn!("{warning}");
    }
}

/// `--report-file`: the whole report as one JSON document, written atomically.
fn write_report(
    path: &std::path::Path,
    summary: &Summary,
    slots: &[SlotOutcome],
    pubs: &[PublicationOutcome],
) -> anyhow::Result<()> {
    let report = Report {
        summary,
        slots,
        publications: pubs,
    };
    let mut bytes = serde_json::to_vec_pretty(&report)?;
    bytes.push(b'\n');
    common::durable::write_atomic(path, &bytes)
        .with_context(|| format!("cannot write the report to {}", path.display()))
}

/// The saved slots to restore: all, or those named (each must exist in the backup).
fn select_slots<'a>(inventory: &'a Inventory, names: &[String]) -> anyhow::Result<Vec<&'a Slot>> {
    if names.is_empty() {
        return Ok(inventory.slots.iter().collect());
    }
    let mut selected = Vec::new();
    for name in names {
        let slot = inventory.slot(name).with_context(|| {
            let known: Vec<&str> = inventory
                .slots
                .iter()
                .map(|s| s.slot_name.as_str())
                .collect();
            format!(
                "slot '{name}' is not in the backup (it has: {})",
                if known.is_empty() {
                    "no slots".to_string()
                } else {
                    known.join(", ")
                }
            )
        })?;
        selected.push(slot);
    }
    Ok(selected)
}

async fn restore(
    args: &RestoreArgs,
    backup_id: &str,
    inventory: &Inventory,
    selected: &[&Slot],
) -> anyhow::Result<(Vec<SlotOutcome>, Vec<PublicationOutcome>, Summary)> {
    let server = Server::new(&args.pg);
    let (setting, identity) = read_server(&server, args, inventory).await?;
    let plans: Vec<Plan> = selected
        .iter()
        .map(|s| recreate::plan(s, &setting))
        .collect();
    let saved_pubs = publications_to_restore(args, inventory, selected);
    let warnings = blockers(&identity, &setting, &plans);
    if !warnings.is_empty() && !args.dry_run {
        anyhow::bail!("cannot restore slots here: {}", warnings.join("; "));
    }
    let clients = connect_databases(&server, &saved_pubs, selected, &setting.databases).await?;
    if !args.dry_run && !args.yes {
        let version = identity.server_version_num;
        ask(&server, args.force, &plans, &saved_pubs, &clients, version).await?;
    }
    let pub_outcomes = publications::restore(
        &saved_pubs,
        &clients,
        identity.server_version_num,
        args.dry_run,
    )
    .await;
    let mut slot_outcomes = Vec::new();
    for (saved, plan) in selected.iter().zip(&plans) {
        let db_client = saved.database.as_ref().and_then(|db| clients.get(db));
        slot_outcomes.push(recreate::carry_out(saved, plan, &setting, db_client).await);
    }
    let summary = summarize(
        args.dry_run,
        backup_id,
        inventory,
        &identity,
        (&slot_outcomes, &pub_outcomes),
        warnings,
    );
    Ok((slot_outcomes, pub_outcomes, summary))
}

/// What the server is now (its slots, identity, history and databases) beside what was
/// saved: everything [`recreate::plan`] decides on.
async fn read_server(
    server: &Server,
    args: &RestoreArgs,
    inventory: &Inventory,
) -> anyhow::Result<(Setting, Identity)> {
    let client = server.connect(None).await?;
    let (existing, identity) = inventory::slots_and_identity(&client).await?;
    let ancestors = history::read(&client, identity.timeline)
        .await
        .map_err(|e| format!("{e:#}"));
    let databases: BTreeSet<String> = server::databases(&client).await?.into_iter().collect();
    let setting = Setting {
        saved_history: SavedHistory {
            system_identifier: inventory.server.system_identifier.clone(),
            timeline: inventory.server.timeline,
            ancestors: inventory.timeline_history.clone(),
        },
        server_history: ServerHistory {
            system_identifier: identity.system_identifier.clone(),
            timeline: identity.timeline,
            current_lsn: identity.current_lsn,
            ancestors,
        },
        existing: existing
            .iter()
            .map(|s| (s.slot_name.clone(), s.clone()))
            .collect(),
        databases,
        version_num: identity.server_version_num,
        force: args.force,
        advance: !args.no_advance,
        dry_run: args.dry_run,
    };
    Ok((setting, identity))
}

/// Publications of the databases concerned: every saved one, or those of the chosen slots
/// (none with --no-publications).
fn publications_to_restore(
    args: &RestoreArgs,
    inventory: &Inventory,
    selected: &[&Slot],
) -> Vec<Publication> {
    if args.no_publications {
        return Vec::new();
    }
    let slot_databases: BTreeSet<&str> = selected
        .iter()
        .filter_map(|s| s.database.as_deref())
        .collect();
    inventory
        .publications
        .iter()
        .filter(|p| args.slots.is_empty() || slot_databases.contains(p.database.as_str()))
        .cloned()
        .collect()
}

/// Why no slot can be created on this server (when some are to be): in recovery, no logical
/// WAL, too few free slots. Empty when nothing stands in the way.
fn blockers(identity: &Identity, setting: &Setting, plans: &[Plan]) -> Vec<String> {
    let mut warnings = Vec::new();
    if !plans.iter().any(Plan::creates) {
        return warnings;
    }
    if identity.in_recovery {
        warnings.push("the server is in recovery (a standby, or a restore still replaying): promote it first; no slot can be created".to_string());
    }
    if !identity.supports_logical() {
        warnings.push(format!("wal_level is {}, logical slots need wal_level = logical (set it and restart the server)", identity.wal_level));
    }
    let in_use = setting.existing.len();
    let free = (identity.max_replication_slots as usize).saturating_sub(in_use);
    let new = plans.iter().filter(|p| matches!(p, Plan::Create)).count();
    if new > free {
        warnings.push(format!(
            "max_replication_slots is {} with {in_use} in use: {new} more are needed; raise it and restart the server",
            identity.max_replication_slots,
        ));
    }
    warnings
}

/// One connection per database that gets a publication or a slot (and exists).
async fn connect_databases(
    server: &Server,
    saved_pubs: &[Publication],
    selected: &[&Slot],
    databases: &BTreeSet<String>,
) -> anyhow::Result<HashMap<String, Client>> {
    let mut clients = HashMap::new();
    let needed: BTreeSet<String> = saved_pubs
        .iter()
        .map(|p| p.database.clone())
        .chain(selected.iter().filter_map(|s| s.database.clone()))
        .filter(|db| databases.contains(db))
        .collect();
    for db in needed {
        let db_client = server.connect(Some(&db)).await?;
        clients.insert(db, db_client);
    }
    Ok(clients)
}

/// Asks before creating slots or publications, or before --force may replace slots.
async fn ask(
    server: &Server,
    force: bool,
    plans: &[Plan],
    saved_pubs: &[Publication],
    clients: &HashMap<String, Client>,
    version_num: u32,
) -> anyhow::Result<()> {
    let creating = plans.iter().filter(|p| p.creates()).count();
    let missing_pubs = publications::restore(saved_pubs, clients, version_num, true)
        .await
        .iter()
        .filter(|p| p.action == PublicationAction::WouldCreate)
        .count();
    if creating > 0 || missing_pubs > 0 || force {
        confirm(server, creating, missing_pubs, force)?;
    }
    Ok(())
}

/// The counts of the report, both sides' positions, and the warnings.
fn summarize(
    dry_run: bool,
    backup_id: &str,
    inventory: &Inventory,
    identity: &Identity,
    (slot_outcomes, pub_outcomes): (&[SlotOutcome], &[PublicationOutcome]),
    warnings: Vec<String>,
) -> Summary {
    let count = |actions: &[SlotAction]| {
        slot_outcomes
            .iter()
            .filter(|o| actions.contains(&o.action))
            .count()
    };
    let pubs = |actions: &[PublicationAction]| {
        pub_outcomes
            .iter()
            .filter(|p| actions.contains(&p.action))
            .count()
    };
    Summary {
        backup_id: backup_id.to_string(),
        dry_run,
        saved: Position {
            system_identifier: inventory.server.system_identifier.clone(),
            timeline: inventory.server.timeline,
            lsn: inventory.server.current_lsn,
            taken_at: Some(inventory.taken_at),
        },
        server: Position {
            system_identifier: identity.system_identifier.clone(),
            timeline: identity.timeline,
            lsn: identity.current_lsn,
            taken_at: None,
        },
        slots_created: count(&[
            SlotAction::Created,
            SlotAction::WouldCreate,
            SlotAction::Replaced,
            SlotAction::WouldReplace,
        ]),
        slots_advanced: count(&[SlotAction::Advanced, SlotAction::WouldAdvance]),
        slots_kept: count(&[SlotAction::Kept]),
        slots_skipped: count(&[SlotAction::Skipped]),
        publications_created: pubs(&[PublicationAction::Created, PublicationAction::WouldCreate]),
        failed: count(&[SlotAction::Failed]) + pubs(&[PublicationAction::Failed]),
        needs_attention: slot_outcomes
            .iter()
            .filter(|o| {
                o.assessment
                    .as_ref()
                    .is_some_and(|a| a.verdict.needs_attention())
            })
            .count(),
        warnings,
    }
}

/// Asks on the terminal; refuses when nobody can answer.
fn confirm(server: &Server, slots: usize, pubs: usize, force: bool) -> anyhow::Result<()> {
    let what = format!(
        "create {slots} slot(s) and {pubs} publication(s){} on {}",
        if force {
            ", replacing or advancing existing slots"
        } else {
            ""
        },
        server.describe()
    );
    common::prompt::confirm(
        &format!("{what} (--dry-run previews)"),
        false,
        common::prompt::Unattended::Refuse,
    )
}

fn print_report(
    format: OutputFormat,
    slots: &[SlotOutcome],
    pubs: &[PublicationOutcome],
    summary: &Summary,
) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => {
            for p in pubs {
                let mut value = serde_json::to_value(p)?;
                value["type"] = "publication".into();
                output::json_line(&value)?;
            }
            for s in slots {
                let mut value = serde_json::to_value(s)?;
                value["type"] = "slot".into();
                output::json_line(&value)?;
            }
        }
        OutputFormat::Text => {
            for p in pubs {
                output::text_line(&format!(
                    "publication {} (database {}): {}: {}",
                    p.name, p.database, p.action, p.message
                ))?;
            }
            for s in slots {
                let verdict = s
                    .assessment
                    .as_ref()
                    .map(|a| format!(" [{}] {}", a.verdict, a.message))
                    .unwrap_or_default();
                output::text_line(&format!(
                    "slot {} (database {}): {}: {}{verdict}",
                    s.slot_name,
                    s.database.as_deref().unwrap_or("-"),
                    s.action,
                    s.note
                ))?;
            }
        }
    }
    output::summary(format, summary, || {
        let verb = if summary.dry_run {
            "to create"
        } else {
            "created"
        };
        format!(
            "{}{} slot(s) {verb}, {} {}, {} kept, {} skipped, {} publication(s) {verb}, {} failed, {} need attention",
            if summary.dry_run { "dry run: " } else { "" },
            summary.slots_created,
            summary.slots_advanced,
            if summary.dry_run { "to advance" } else { "advanced" },
            summary.slots_kept,
            summary.slots_skipped,
            summary.publications_created,
            summary.failed,
            summary.needs_attention
        )
    })
}

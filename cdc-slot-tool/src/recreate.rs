//! Recreating saved slots: decide per slot (create, replace, keep, skip), then carry it out,
//! advance where the saved position lies ahead on the same history, and judge the result
//! against the consumer's saved position.

use std::collections::{BTreeSet, HashMap};

use anyhow::Context;
use serde::Serialize;
use tokio_postgres::Client;

use crate::continuity::{self, Assessment, Placement, SavedHistory, ServerHistory};
use crate::inventory::Slot;
use crate::server;
use common::lsn::Lsn;

/// What happened to one saved slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotAction {
    Created,
    WouldCreate,
    /// An existing slot that differed from the saved one was dropped and created again.
    Replaced,
    WouldReplace,
    /// An existing slot was moved forward to the saved position.
    Advanced,
    WouldAdvance,
    /// An existing slot of that name was left alone.
    Kept,
    /// Not recreated by design (temporary or physical).
    Skipped,
    Failed,
}

impl std::fmt::Display for SlotAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::server::serde_name(self))
    }
}

/// The report line of one slot.
#[derive(Debug, Clone, Serialize)]
pub struct SlotOutcome {
    pub slot_name: String,
    pub database: Option<String>,
    pub plugin: Option<String>,
    pub action: SlotAction,
    pub note: String,
    /// Positions are predictions (dry run): a real slot would start at or after `slot_lsn`.
    pub estimated: bool,
    #[serde(flatten)]
    pub assessment: Option<Assessment>,
}

/// The decision for one saved slot before anything is changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Create,
    /// Drop the existing slot (it differs) and create the saved one.
    Replace(String),
    /// Leave the existing slot; `same` when it matches the saved definition.
    Keep {
        same: bool,
        why: String,
    },
    Skip(String),
    Fail(String),
}

impl Plan {
    /// True when carrying it out changes the server (before advancing).
    pub fn creates(&self) -> bool {
        matches!(self, Plan::Create | Plan::Replace(_))
    }
}

/// What the decisions depend on.
#[derive(Debug)]
pub struct Setting {
    pub saved_history: SavedHistory,
    pub server_history: ServerHistory,
    pub existing: HashMap<String, Slot>,
    pub databases: BTreeSet<String>,
    pub version_num: u32,
    pub force: bool,
    pub advance: bool,
    pub dry_run: bool,
}

/// Decides what to do with one saved slot.
pub fn plan(saved: &Slot, setting: &Setting) -> Plan {
    if saved.temporary {
        return Plan::Skip(
            "temporary slot: it belonged to one session and is not recreated".into(),
        );
    }
    if !saved.is_logical() {
        return Plan::Skip(
            "physical slot: recreate it together with the standby that uses it".into(),
        );
    }
    let (Some(database), Some(plugin)) = (&saved.database, &saved.plugin) else {
        return Plan::Fail("the backup lacks the slot's database or plugin".into());
    };
    if !setting.databases.contains(database) {
        return Plan::Fail(format!(
            "database {database} does not exist on this server; restore it first"
        ));
    }
    let Some(existing) = setting.existing.get(&saved.slot_name) else {
        return Plan::Create;
    };
    let mut differences = Vec::new();
    if !existing.is_logical() {
        differences.push(format!("it is a {} slot", existing.slot_type));
    }
    if existing.database.as_ref() != Some(database) {
        differences.push(format!(
            "database {} instead of {database}",
            existing.database.as_deref().unwrap_or("none")
        ));
    }
    if existing.plugin.as_ref() != Some(plugin) {
        differences.push(format!(
            "plugin {} instead of {plugin}",
            existing.plugin.as_deref().unwrap_or("none")
        ));
    }
    if differences.is_empty() {
        return Plan::Keep {
            same: true,
            why: "a slot of that name exists already".into(),
        };
    }
    let differences = differences.join(", ");
    if !setting.force {
        return Plan::Keep {
            same: false,
            why: format!(
                "an existing slot of that name differs ({differences}); pass --force to replace it"
            ),
        };
    }
    if existing.active {
        return Plan::Fail(format!(
            "the existing slot differs ({differences}) but is in use by process {}; stop its consumer first",
            existing.active_pid.unwrap_or_default()
        ));
    }
    Plan::Replace(differences)
}

/// Carries out a plan. `client` is a connection to the slot's database (None for plans that
/// need none).
pub async fn carry_out(
    saved: &Slot,
    plan: &Plan,
    setting: &Setting,
    client: Option<&Client>,
) -> SlotOutcome {
    let mut outcome = SlotOutcome {
        slot_name: saved.slot_name.clone(),
        database: saved.database.clone(),
        plugin: saved.plugin.clone(),
        action: SlotAction::Failed,
        note: String::new(),
        estimated: false,
        assessment: None,
    };
    let result = match plan {
        Plan::Skip(why) => {
            outcome.action = SlotAction::Skipped;
            outcome.note = why.clone();
            return outcome;
        }
        Plan::Fail(why) => {
            outcome.note = why.clone();
            return outcome;
        }
        Plan::Create | Plan::Replace(_) => create(saved, plan, setting, client, &mut outcome).await,
        Plan::Keep { same, why } => keep(saved, *same, why, setting, client, &mut outcome).await,
    };
    if let Err(e) = result {
        outcome.action = SlotAction::Failed;
        outcome.note = format!("{e:#}");
    }
    outcome
}

fn placement(saved: &Slot, setting: &Setting) -> Placement {
    continuity::place(
        &setting.saved_history,
        &setting.server_history,
        saved.confirmed_flush_lsn.unwrap_or_default(),
    )
}

async fn create(
    saved: &Slot,
    plan: &Plan,
    setting: &Setting,
    client: Option<&Client>,
    outcome: &mut SlotOutcome,
) -> anyhow::Result<()> {
    let placement = placement(saved, setting);
    let replacing = matches!(plan, Plan::Replace(_));
    if setting.dry_run {
        outcome.estimated = true;
        outcome.action = if replacing {
            SlotAction::WouldReplace
        } else {
            SlotAction::WouldCreate
        };
        let start = setting.server_history.current_lsn;
        let mut assessment = continuity::assess(&placement, saved.confirmed_flush_lsn, start);
        outcome.note = if replacing {
            format!(
                "would drop the existing slot and create it again: {}",
                plan_reason(plan)
            )
        } else {
            "missing; would be created".into()
        };
        if let (Some(target), true) = (assessment.advance_to, setting.advance) {
            outcome.note.push_str(&format!(" and advanced to {target}"));
            assessment = continuity::assess(&placement, saved.confirmed_flush_lsn, target);
        }
        outcome.assessment = Some(assessment);
        return Ok(());
    }
    let client = client.context("no connection to the slot's database")?;
    if replacing {
        client
            .execute("SELECT pg_drop_replication_slot($1)", &[&saved.slot_name])
            .await
            .with_context(|| format!("cannot drop the existing slot {}", saved.slot_name))?;
        tracing::warn!(
            "dropped existing slot {} ({})",
            saved.slot_name,
            plan_reason(plan)
        );
    }
    let start = create_slot(client, saved, setting.version_num).await?;
    tracing::info!("created slot {} at {start}", saved.slot_name);
    outcome.action = if replacing {
        SlotAction::Replaced
    } else {
        SlotAction::Created
    };
    outcome.note = format!("created at {start}");
    let assessment = continuity::assess(&placement, saved.confirmed_flush_lsn, start);
    outcome.assessment =
        Some(advance_if_useful(client, saved, &placement, assessment, setting, outcome).await?);
    Ok(())
}

async fn keep(
    saved: &Slot,
    same: bool,
    why: &str,
    setting: &Setting,
    client: Option<&Client>,
    outcome: &mut SlotOutcome,
) -> anyhow::Result<()> {
    outcome.action = SlotAction::Kept;
    outcome.note = why.to_string();
    if !same {
        return Ok(());
    }
    let existing = &setting.existing[&saved.slot_name];
    let Some(position) = existing.confirmed_flush_lsn else {
        outcome
            .note
            .push_str("; it has no confirmed position (invalidated?)");
        return Ok(());
    };
    let placement = placement(saved, setting);
    let assessment = continuity::assess(&placement, saved.confirmed_flush_lsn, position);
    let Some(target) = assessment.advance_to else {
        outcome.assessment = Some(assessment);
        return Ok(());
    };
    if !setting.force || !setting.advance {
        outcome
            .note
            .push_str(&format!("; pass --force to advance it to {target}"));
        outcome.assessment = Some(assessment);
        return Ok(());
    }
    if existing.active {
        outcome.note.push_str(&format!(
            "; in use by process {}, not advanced",
            existing.active_pid.unwrap_or_default()
        ));
        outcome.assessment = Some(assessment);
        return Ok(());
    }
    if setting.dry_run {
        outcome.action = SlotAction::WouldAdvance;
        outcome.estimated = true;
        outcome.note = format!("exists at {position}; would be advanced to {target}");
        outcome.assessment = Some(continuity::assess(
            &placement,
            saved.confirmed_flush_lsn,
            target,
        ));
        return Ok(());
    }
    let client = client.context("no connection to the slot's database")?;
    outcome.assessment =
        Some(advance_if_useful(client, saved, &placement, assessment, setting, outcome).await?);
    outcome.action = SlotAction::Advanced;
    Ok(())
}

/// Moves the slot forward when the assessment says that helps; returns the final verdict.
async fn advance_if_useful(
    client: &Client,
    saved: &Slot,
    placement: &Placement,
    assessment: Assessment,
    setting: &Setting,
    outcome: &mut SlotOutcome,
) -> anyhow::Result<Assessment> {
    let Some(target) = assessment.advance_to.filter(|_| setting.advance) else {
        return Ok(assessment);
    };
    let row = client
        .query_one(
            "SELECT end_lsn::text FROM pg_replication_slot_advance($1, $2::text::pg_lsn)",
            &[&saved.slot_name, &target.to_string()],
        )
        .await
        .with_context(|| format!("cannot advance slot {} to {target}", saved.slot_name))?;
    let reached: Lsn = server::parse_lsn(&row.get::<_, String>(0))?;
    tracing::info!("advanced slot {} to {reached}", saved.slot_name);
    outcome.note.push_str(&format!("; advanced to {reached}"));
    if reached < target {
        outcome
            .note
            .push_str(&format!(" (the server has no WAL up to {target} yet)"));
    }
    Ok(continuity::assess(
        placement,
        saved.confirmed_flush_lsn,
        reached,
    ))
}

/// Creates the logical slot with the saved plugin and options; returns where it starts.
async fn create_slot(client: &Client, saved: &Slot, version_num: u32) -> anyhow::Result<Lsn> {
    let plugin = saved.plugin.clone().unwrap_or_default();
    let two_phase = saved.two_phase.unwrap_or(false);
    let failover = saved.failover.unwrap_or(false);
    let row = if version_num >= 170000 {
        client
            .query_one(
                "SELECT lsn::text FROM pg_create_logical_replication_slot($1, $2, false, $3, $4)",
                &[&saved.slot_name, &plugin, &two_phase, &failover],
            )
            .await
    } else if version_num >= 140000 {
        client
            .query_one(
                "SELECT lsn::text FROM pg_create_logical_replication_slot($1, $2, false, $3)",
                &[&saved.slot_name, &plugin, &two_phase],
            )
            .await
    } else {
        client
            .query_one(
                "SELECT lsn::text FROM pg_create_logical_replication_slot($1, $2)",
                &[&saved.slot_name, &plugin],
            )
            .await
    }
    .with_context(|| {
        format!(
            "cannot create logical slot {} with plugin {plugin} (is the plugin installed?)",
            saved.slot_name
        )
    })?;
    server::parse_lsn(&row.get::<_, String>(0))
}

fn plan_reason(plan: &Plan) -> &str {
    match plan {
        Plan::Replace(why) | Plan::Skip(why) | Plan::Fail(why) => why,
        Plan::Keep { why, .. } => why,
        Plan::Create => "missing",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(name: &str, plugin: &str, database: &str) -> Slot {
        serde_json::from_value(serde_json::json!({
            "slot_name": name, "slot_type": "logical", "plugin": plugin,
            "database": database, "temporary": false, "active": false,
            "confirmed_flush_lsn": "0/4000000", "restart_lsn": "0/3F00000"
        }))
        .unwrap()
    }

    fn setting(existing: Vec<Slot>, force: bool) -> Setting {
        let history = SavedHistory {
            system_identifier: "1".into(),
            timeline: 1,
            ancestors: Some(Vec::new()),
        };
        Setting {
            saved_history: history,
            server_history: ServerHistory {
                system_identifier: "1".into(),
                timeline: 1,
                current_lsn: "0/5000000".parse().unwrap(),
                ancestors: Ok(Vec::new()),
            },
            existing: existing
                .into_iter()
                .map(|s| (s.slot_name.clone(), s))
                .collect(),
            databases: ["app".to_string()].into_iter().collect(),
            version_num: 150000,
            force,
            advance: true,
            dry_run: false,
        }
    }

    #[test]
    fn plans_follow_the_safety_rules() {
        let saved = slot("s", "pgoutput", "app");
        assert_eq!(plan(&saved, &setting(vec![], false)), Plan::Create);
        let same = setting(vec![slot("s", "pgoutput", "app")], false);
        assert!(matches!(plan(&saved, &same), Plan::Keep { same: true, .. }));
        let other = setting(vec![slot("s", "test_decoding", "app")], false);
        assert!(matches!(
            plan(&saved, &other),
            Plan::Keep { same: false, .. }
        ));
        let forced = setting(vec![slot("s", "test_decoding", "app")], true);
        assert!(matches!(plan(&saved, &forced), Plan::Replace(_)));
        let elsewhere = slot("s", "pgoutput", "gone");
        assert!(matches!(
            plan(&elsewhere, &setting(vec![], true)),
            Plan::Fail(_)
        ));
        let mut temporary = slot("t", "pgoutput", "app");
        temporary.temporary = true;
        assert!(matches!(
            plan(&temporary, &setting(vec![], true)),
            Plan::Skip(_)
        ));
    }
}

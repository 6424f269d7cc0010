//! The restore steps, each by the tool that owns it: pitr-restore, cdc-slot-tool restore,
//! kafka-replay. Each returns what its tool reported, as a component of the result.
//! (`cut_off` runs kafka-replay's `--list-txids` pass through [`kafka_replay`] too.)

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use anyhow::Context;
use common::lsn::Lsn;

use super::plan::Plan;
use super::{lsn_at, Component, CutArgs, Missing};
use crate::tools::{self, ToolRun};

/// Where the other tools are.
pub struct Tools {
    bin_dir: Option<PathBuf>,
}

impl Tools {
    pub fn new(bin_dir: Option<PathBuf>) -> Tools {
        Tools { bin_dir }
    }

    /// `name [subcommand] --output json -q [--backup-dir ...]`.
    fn command(
        &self,
        name: &str,
        subcommand: Option<&str>,
        args: &CutArgs,
    ) -> anyhow::Result<Command> {
        let mut cmd = Command::new(tools::program(name, self.bin_dir.as_deref()));
        cmd.args(subcommand).arg("--output").arg("json").arg("-q");
        if name != "kafka-replay" {
            cmd.arg("--backup-dir")
                .arg(tools::backup_dir_arg(&args.repo.backup_dir)?);
        }
        Ok(cmd)
    }
}

/// What PostgreSQL's restore reached.
pub struct Database {
    /// Where recovery ended (the new timeline's switch point): the pipeline's cut.
    pub recovery_end: Lsn,
    pub last_replay_time: Option<String>,
    pub rpo_s: Option<f64>,
    summary: serde_json::Value,
}

impl Database {
    pub fn component(&self) -> Component {
        Component::ok(
            "postgres",
            Some(self.recovery_end.to_string()),
            format!(
                "base backup {} ({}) + WAL, recovery ended on timeline {}, last transaction replayed {}",
                self.summary["id"].as_str().unwrap_or("?"),
                self.summary["backup_type"].as_str().unwrap_or("full"),
                self.summary["timeline"],
                self.last_replay_time.as_deref().unwrap_or("none")
            ),
        )
    }
}

/// pitr-restore --start: the database at the target, and the LSN recovery ended at.
pub fn restore_database(args: &CutArgs, plan: &Plan, bins: &Tools) -> anyhow::Result<Database> {
    let mut cmd = bins.command("pitr-restore", None, args)?;
    cmd.arg("--pgdata")
        .arg(&args.pgdata)
        .args(&plan.target_flags)
        .args(["--start", "--yes", "--port", &args.port.to_string()])
        .arg("--socket-dir")
        .arg(&args.socket_dir)
        .args(["--db-user", &args.db_user]);
    if args.force {
        cmd.arg("--force");
    }
    common::os_user::as_db_user(&mut cmd)?;
    let run = tools::checked(&mut cmd, "pitr-restore")?;
    let summary = run
        .summary()
        .context("pitr-restore printed no JSON summary")?;
    let recovery_end = lsn_at(&summary, "/recovery_end_lsn").with_context(|| {
        format!(
            "pitr-restore did not report where recovery ended (no recovery_end_lsn in {summary})"
        )
    })?;
    let last_replay_time = summary["last_replay_time"].as_str().map(str::to_string);
    let rpo_s = rpo(args, last_replay_time.as_deref());
    Ok(Database {
        recovery_end,
        last_replay_time,
        rpo_s,
        summary,
    })
}

/// Seconds between a time target and the last transaction replayed before it.
fn rpo(args: &CutArgs, last_replay: Option<&str>) -> Option<f64> {
    let target = common::timefmt::parse_timestamp(args.target_time.as_deref()?).ok()?;
    let last = common::timefmt::parse_timestamp(last_replay?).ok()?;
    Some((target - last).as_seconds_f64().max(0.0))
}

/// cdc-slot-tool restore on the restored server: slots and publications back, created now
/// (after the cut), never advanced to a saved position of the old timeline.
pub fn restore_slots(args: &CutArgs, bins: &Tools) -> anyhow::Result<Component> {
    let mut cmd = bins.command("cdc-slot-tool", Some("restore"), args)?;
    cmd.args(["--yes", "--no-advance"])
        .env("PGHOST", &args.socket_dir)
        .env("PGPORT", args.port.to_string())
        .env("PGUSER", &args.db_user)
        .env("PGDATABASE", &args.database);
    let run = tools::capture(&mut cmd, "cdc-slot-tool restore")?;
    let summary = run.summary().unwrap_or_default();
    // Exit 1 with nothing failed: slots whose saved position the new ones cannot have (they
    // start after the cut, on the new timeline). The changes in between are the CDC events the
    // topics get back up to the cut, which the proof checks.
    let attention_only = run.code == Some(1) && summary["failed"] == 0;
    if run.code != Some(0) && !attention_only {
        return Ok(Component::failed(
            "cdc-slots",
            format!(
                "cdc-slot-tool restore failed (exit {:?}): {} {summary}",
                run.code,
                run.last_error()
            ),
        ));
    }
    Ok(Component::ok(
        "cdc-slots",
        summary
            .pointer("/server/lsn")
            .and_then(|v| v.as_str())
            .map(str::to_string),
        format!(
            "{} slot(s) created after the cut, {} publication(s) created, from slot set {} (saved at {}){}",
            summary["slots_created"],
            summary["publications_created"],
            summary["backup_id"].as_str().unwrap_or("?"),
            summary.pointer("/saved/lsn").and_then(|v| v.as_str()).unwrap_or("?"),
            if attention_only {
                "; the changes from the saved slot position to the cut come back as the replayed CDC events"
            } else {
                ""
            }
        ),
    ))
}

/// What the CDC replays gave.
pub struct Replayed {
    pub components: Vec<Component>,
    pub missing: Vec<String>,
    /// Events below the cut of transactions the restore cut off, left out.
    pub skipped_cut_off_events: u64,
}

/// kafka-replay --until-lsn of every CDC topic, leaving out the events of the transactions
/// the restore cut off (`--skip-txids -`, fed on stdin); the last one also writes the
/// connector's offset.
pub fn replay_cdc_topics(
    args: &CutArgs,
    plan: &Plan,
    bins: &Tools,
    reached: Lsn,
    cut_off: &BTreeSet<u64>,
) -> anyhow::Result<Replayed> {
    let mut replayed = Replayed {
        components: Vec::new(),
        missing: Vec::new(),
        skipped_cut_off_events: 0,
    };
    let skip_list: String = cut_off.iter().map(|id| format!("{id}\n")).collect();
    for (index, topic) in plan.cdc_topics.iter().enumerate() {
        let last = index + 1 == plan.cdc_topics.len();
        let mut cmd = kafka_replay(args, bins, topic, reached)?;
        target_flags(args, &mut cmd, topic);
        cmd.args(["--skip-txids", "-"]);
        if let (true, Some(connector)) = (last, &args.connector) {
            cmd.arg("--connector-offset")
                .arg(connector)
                .arg("--offsets-topic")
                .arg(&args.offsets_topic);
        }
        let list = skip_list.clone();
        let run = tools::capture_with_input(&mut cmd, "kafka-replay", move |stdin| {
            stdin.write_all(list.as_bytes())
        })?;
        match cdc_outcome(topic, &run, reached) {
            Ok(component) => {
                replayed.skipped_cut_off_events += run
                    .summary()
                    .and_then(|s| s.pointer("/lsn_cut/skipped_cut_off_events")?.as_u64())
                    .unwrap_or(0);
                replayed.components.push(component);
            }
            Err(missing) => {
                replayed
                    .components
                    .push(Component::failed(topic.clone(), missing.to_string()));
                replayed.missing.push(missing.into());
            }
        }
    }
    Ok(replayed)
}

/// The component of one CDC topic's replay, or what is missing.
fn cdc_outcome(topic: &str, run: &ToolRun, reached: Lsn) -> Result<Component, Missing> {
    if run.code != Some(0) {
        return Err(Missing(format!(
            "CDC topic {topic} could not be replayed up to LSN {reached}: {}",
            run.last_error()
        )));
    }
    let summary = run.summary().unwrap_or_default();
    let cut = &summary["lsn_cut"];
    let offset = summary
        .pointer("/connector_offset/value")
        .map(|v| format!("; connector offset {v}"))
        .unwrap_or_default();
    Ok(Component::ok(
        topic,
        cut["max_replayed_lsn"].as_str().map(str::to_string),
        format!(
            "{} event(s) replayed below LSN {reached}, {} phantom event(s) after it and {} of transactions cut off by the restore left out (newest in the backup: {}){offset}",
            cut["replayed"],
            cut["dropped_after_cut"],
            cut["skipped_cut_off_events"],
            cut["backup_newest_lsn"].as_str().unwrap_or("none")
        ),
    ))
}

/// kafka-replay of the other topics, up to the target time when there is one.
pub fn replay_other_topics(
    args: &CutArgs,
    plan: &Plan,
    bins: &Tools,
) -> anyhow::Result<Vec<Component>> {
    let mut components = Vec::new();
    for topic in &plan.other_topics {
        let mut cmd = replay_command(args, bins, topic)?;
        if let Some(time) = &plan.target_time {
            cmd.arg("--to-time").arg(time);
        }
        let run = tools::capture(&mut cmd, "kafka-replay")?;
        components.push(if run.code == Some(0) {
            let summary = run.summary().unwrap_or_default();
            Component::ok(
                topic.clone(),
                plan.target_time.clone(),
                format!("{} record(s) replayed by time", summary["produced"]),
            )
        } else {
            Component::failed(topic.clone(), run.last_error())
        });
    }
    Ok(components)
}

/// kafka-replay of a topic into its target, by time.
fn replay_command(args: &CutArgs, bins: &Tools, topic: &str) -> anyhow::Result<Command> {
    let mut cmd = source_command(args, bins, topic)?;
    target_flags(args, &mut cmd, topic);
    Ok(cmd)
}

/// kafka-replay of a CDC topic's events cut at `cut`, with the LSN and txId fields; the
/// caller adds the mode (a replay into the target, or --list-txids).
pub fn kafka_replay(
    args: &CutArgs,
    bins: &Tools,
    topic: &str,
    cut: Lsn,
) -> anyhow::Result<Command> {
    let mut cmd = source_command(args, bins, topic)?;
    cmd.arg("--until-lsn").arg(cut.to_string());
    if let Some(spec) = args.lsn_field.as_ref().and_then(field_spec) {
        cmd.arg("--lsn-field").arg(spec);
    }
    if let Some(spec) = args.txid_field.as_ref().and_then(txid_spec) {
        cmd.arg("--txid-field").arg(spec);
    }
    Ok(cmd)
}

/// The target topic and the group offsets of a replay.
fn target_flags(args: &CutArgs, cmd: &mut Command, topic: &str) {
    cmd.arg("--target-topic")
        .arg(format!("{topic}{}", args.topic_suffix));
    if args.restore_group_offsets {
        cmd.arg("--restore-group-offsets");
    }
}

/// kafka-replay reading `topic` from the repository, with the broker and client settings.
fn source_command(args: &CutArgs, bins: &Tools, topic: &str) -> anyhow::Result<Command> {
    let mut cmd = bins.command("kafka-replay", None, args)?;
    cmd.arg("--backup-dir")
        .arg(tools::backup_dir_arg(&args.repo.backup_dir)?)
        .arg("--topic")
        .arg(topic)
        .arg("--bootstrap-servers")
        .arg(&args.bootstrap_servers);
    let properties = common::kafka::kafka_properties(&args.client_config)?;
    common::kafka::pass_to_child(&mut cmd, &properties);
    Ok(cmd)
}

/// The flag value of an LSN field (the default needs none).
fn field_spec(field: &common::cdc::LsnField) -> Option<String> {
    match field {
        common::cdc::LsnField::Envelope => None,
        common::cdc::LsnField::Pointer(p) => Some(p.clone()),
        common::cdc::LsnField::Header(h) => Some(format!("header:{h}")),
    }
}

/// The flag value of a txId field (the default needs none).
fn txid_spec(field: &common::cdc::TxIdField) -> Option<String> {
    match field {
        common::cdc::TxIdField::Envelope => None,
        common::cdc::TxIdField::Pointer(p) => Some(p.clone()),
        common::cdc::TxIdField::Header(h) => Some(format!("header:{h}")),
    }
}

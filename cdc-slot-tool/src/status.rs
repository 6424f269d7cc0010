//! `status`: each slot's lag, WAL status, safe WAL size and inactivity, checked against
//! thresholds so a CronJob or monitoring probe can alert (exit 1), and optionally written as
//! Prometheus metrics.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use common::cli::{GlobalArgs, PgArgs};
use common::output::{self, OutputFormat};
use common::timefmt::{self, rfc3339};
use common::Status;

use crate::inventory::{self, Slot};
use crate::metrics;
use crate::server::{Identity, Server};
use crate::size;
use common::lsn::Lsn;

/// Exit codes of `status`.
pub const EXIT_CODES_HELP: &str = "Exit codes:\n  0    every slot is healthy\n  1    a slot is lost, unreserved, invalidated, over --max-lag-bytes or inactive longer\n       than --max-inactive\n  2    error (unreachable server, bad input); the metrics file then says cdc_slot_up 0\n  130  interrupted";

/// Options of `cdc-slot-tool status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub pg: PgArgs,
    /// Exit 1 when a slot's lag (the server's WAL position minus what its consumer confirmed)
    /// exceeds this many bytes; kB, MB, GB, TB suffixes accepted (e.g. 512MB).
    #[arg(long, value_name = "BYTES", value_parser = size::parse_size)]
    pub max_lag_bytes: Option<u64>,
    /// Exit 1 when a slot has had no consumer for longer than this (e.g. 15m, 2h).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub max_inactive: Option<Duration>,
    /// Write Prometheus textfile-collector metrics to this file (replaced atomically);
    /// `-` prints them on stdout instead of the report (e.g. for a Pushgateway).
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    /// Remember in this local file when each slot was first seen inactive. PostgreSQL
    /// before 17 does not record it, so --max-inactive needs this file there (kept between
    /// runs).
    #[arg(long, value_name = "PATH")]
    pub state_file: Option<PathBuf>,
    /// Check only this slot (repeatable) [default: every slot].
    #[arg(long = "slot", value_name = "NAME")]
    pub slots: Vec<String>,
}

/// One slot with the verdict of the checks.
#[derive(Debug, Clone, Serialize)]
pub struct SlotHealth {
    #[serde(flatten)]
    pub slot: Slot,
    /// Seconds without a consumer: 0 when active, None when unknown.
    pub inactive_seconds: Option<u64>,
    pub healthy: bool,
    pub problems: Vec<String>,
}

/// The summary line.
#[derive(Debug, Serialize)]
struct Summary {
    system_identifier: String,
    timeline: u32,
    current_lsn: Lsn,
    slots: usize,
    unhealthy: usize,
    healthy: bool,
}

pub fn run(args: &StatusArgs, global: &GlobalArgs) -> anyhow::Result<Status> {
    let now = timefmt::now();
    let (slots, identity) = read_slots(args, now)?;
    let slots = selected(slots, args)?;
    let healths = assess(slots, args, &identity, now)?;
    emit_metrics(
        args,
        &metrics::render_status(&healths, &identity, unix(now)),
    )?;
    let unhealthy = healths.iter().filter(|h| !h.healthy).count();
    for health in healths.iter().filter(|h| !h.healthy) {
        tracing::warn!(
            "slot {}: {}",
            health.slot.slot_name,
            health.problems.join("; ")
        );
    }
    if !metrics_on_stdout(args) {
        report(global.output, &healths, &identity, unhealthy)?;
    }
    Ok(Status::from_passed(unhealthy == 0))
}

/// Every slot and the server's identity; when the server cannot be read, the metrics say
/// `cdc_slot_up 0` before the error is returned.
fn read_slots(args: &StatusArgs, now: OffsetDateTime) -> anyhow::Result<(Vec<Slot>, Identity)> {
    let read = common::postgres::runtime()?.block_on(async {
        let client = Server::new(&args.pg).connect(None).await?;
        inventory::slots_and_identity(&client).await
    });
    if read.is_err() {
        if let Err(write_error) = emit_metrics(args, &metrics::render_down(unix(now))) {
            tracing::error!("{write_error:#}");
        }
    }
    read
}

/// The slots `--slot` names (every slot without it); a name with no slot is an error.
fn selected(mut slots: Vec<Slot>, args: &StatusArgs) -> anyhow::Result<Vec<Slot>> {
    if args.slots.is_empty() {
        return Ok(slots);
    }
    for name in &args.slots {
        if !slots.iter().any(|s| &s.slot_name == name) {
            anyhow::bail!(
                "no replication slot named '{name}' on {}",
                args.pg.describe()
            );
        }
    }
    slots.retain(|s| args.slots.contains(&s.slot_name));
    Ok(slots)
}

/// Checks every slot, counting inactivity from the `--state-file` where the server does
/// not record it (and updating that file).
fn assess(
    slots: Vec<Slot>,
    args: &StatusArgs,
    identity: &Identity,
    now: OffsetDateTime,
) -> anyhow::Result<Vec<SlotHealth>> {
    let mut state = args
        .state_file
        .as_ref()
        .map(|path| InactiveState::load(path, identity));
    let mut unknown_inactivity = false;
    let healths: Vec<SlotHealth> = slots
        .into_iter()
        .map(|slot| {
            let inactive = inactive_seconds(&slot, state.as_mut(), now);
            unknown_inactivity |= inactive.is_none();
            check(slot, inactive, args)
        })
        .collect();
    if let (Some(path), Some(state)) = (&args.state_file, &state) {
        state.store(path)?;
    }
    if unknown_inactivity && args.max_inactive.is_some() {
        tracing::warn!(
            "PostgreSQL {} does not record when a slot became inactive: pass --state-file so \
             --max-inactive can count from the first run that saw it inactive",
            identity.server_version
        );
    }
    Ok(healths)
}

/// The slot lines and the summary line.
fn report(
    format: OutputFormat,
    healths: &[SlotHealth],
    identity: &Identity,
    unhealthy: usize,
) -> anyhow::Result<()> {
    print(format, healths)?;
    let summary = Summary {
        system_identifier: identity.system_identifier.clone(),
        timeline: identity.timeline,
        current_lsn: identity.current_lsn,
        slots: healths.len(),
        unhealthy,
        healthy: unhealthy == 0,
    };
    output::summary(format, &summary, || {
        format!(
            "{} slot(s), {unhealthy} need attention; server at {} on timeline {}",
            summary.slots, summary.current_lsn, summary.timeline
        )
    })?;
    Ok(())
}

fn metrics_on_stdout(args: &StatusArgs) -> bool {
    args.metrics_file.as_deref() == Some(Path::new("-"))
}

/// Writes the metrics file, or prints the metrics for `--metrics-file -`.
fn emit_metrics(args: &StatusArgs, text: &str) -> anyhow::Result<()> {
    match &args.metrics_file {
        None => Ok(()),
        Some(_) if metrics_on_stdout(args) => {
            use std::io::Write;
            let mut out = common::output::stdout();
            out.write_all(text.as_bytes())?;
            Ok(out.flush()?)
        }
        Some(path) => metrics::write(path, text),
    }
}

fn unix(t: OffsetDateTime) -> f64 {
    t.unix_timestamp_nanos() as f64 / 1e9
}

/// Applies every check to one slot.
fn check(slot: Slot, inactive_seconds: Option<u64>, args: &StatusArgs) -> SlotHealth {
    let mut problems = Vec::new();
    match slot.wal_status.as_deref() {
        Some("lost") => problems.push(
            "wal_status lost: WAL it needs was removed; the consumer must take a new snapshot"
                .to_string(),
        ),
        Some("unreserved") => problems.push(
            "wal_status unreserved: it needs WAL beyond max_slot_wal_keep_size and is lost at the \
             next checkpoint unless its consumer catches up"
                .to_string(),
        ),
        _ => {}
    }
    if slot.conflicting == Some(true) || slot.invalidation_reason.is_some() {
        problems.push(format!(
            "invalidated ({})",
            slot.invalidation_reason
                .as_deref()
                .unwrap_or("recovery conflict")
        ));
    }
    if let (Some(max), Some(lag)) = (args.max_lag_bytes, slot.lag_bytes) {
        if lag > max {
            problems.push(format!(
                "lag {} ({lag} bytes) exceeds --max-lag-bytes {max}",
                size::human(lag)
            ));
        }
    }
    if let (Some(max), Some(seconds)) = (args.max_inactive, inactive_seconds) {
        if seconds > max.as_secs() {
            problems.push(format!(
                "inactive for {}, longer than --max-inactive {}",
                humantime::format_duration(Duration::from_secs(seconds)),
                humantime::format_duration(max)
            ));
        }
    }
    SlotHealth {
        healthy: problems.is_empty(),
        slot,
        inactive_seconds,
        problems,
    }
}

/// How long the slot has been without a consumer: from the server (PostgreSQL 17+), else
/// from the state file.
fn inactive_seconds(
    slot: &Slot,
    state: Option<&mut InactiveState>,
    now: OffsetDateTime,
) -> Option<u64> {
    if slot.active {
        if let Some(state) = state {
            state.slots.remove(&slot.slot_name);
        }
        return Some(0);
    }
    let since = match slot
        .inactive_since
        .as_deref()
        .and_then(|t| timefmt::parse_timestamp(t).ok())
    {
        Some(since) => since,
        None => state?.observe(slot, now),
    };
    Some((now - since).whole_seconds().max(0) as u64)
}

/// When each inactive slot was first seen so, kept between runs.
#[derive(Debug, Default, Serialize, Deserialize)]
struct InactiveState {
    system_identifier: String,
    slots: BTreeMap<String, Seen>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Seen {
    #[serde(with = "rfc3339")]
    since: OffsetDateTime,
    /// The consumer position then: if it moves, a consumer came by in between.
    position: Option<Lsn>,
}

impl InactiveState {
    /// Reads the state; a missing, unreadable or other server's file starts afresh.
    fn load(path: &Path, identity: &Identity) -> InactiveState {
        let fresh = || InactiveState {
            system_identifier: identity.system_identifier.clone(),
            slots: BTreeMap::new(),
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return fresh(),
            Err(e) => {
                tracing::warn!(
                    "cannot read state file {}: {e}; starting afresh",
                    path.display()
                );
                return fresh();
            }
        };
        match serde_json::from_str::<InactiveState>(&text) {
            Ok(state) if state.system_identifier == identity.system_identifier => state,
            Ok(_) => fresh(),
            Err(e) => {
                tracing::warn!(
                    "state file {} is damaged ({e}); starting afresh",
                    path.display()
                );
                fresh()
            }
        }
    }

    /// Records an inactive slot and returns since when it has been inactive.
    fn observe(&mut self, slot: &Slot, now: OffsetDateTime) -> OffsetDateTime {
        let position = slot.consumer_lsn();
        let seen = self.slots.entry(slot.slot_name.clone()).or_insert(Seen {
            since: now,
            position,
        });
        if seen.position != position {
            *seen = Seen {
                since: now,
                position,
            };
        }
        seen.since
    }

    fn store(&self, path: &Path) -> anyhow::Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self)?;
        bytes.push(b'\n');
        common::durable::write_atomic(path, &bytes)
            .with_context(|| format!("cannot write the state file {}", path.display()))
    }
}

fn print(format: OutputFormat, healths: &[SlotHealth]) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => {
            for health in healths {
                let mut value = serde_json::to_value(health)?;
                value["type"] = "slot".into();
                output::json_line(&value)?;
            }
        }
        OutputFormat::Text => {
            if !healths.is_empty() {
                output::text_line(&format!(
                    "{:<24} {:<8} {:<16} {:<6} {:<10} {:>10} {:>10} {:>10} {:>9}  STATUS",
                    "SLOT",
                    "TYPE",
                    "DATABASE",
                    "ACTIVE",
                    "WAL",
                    "LAG",
                    "RETAINED",
                    "SAFE",
                    "INACTIVE"
                ))?;
            }
            let dash = || "-".to_string();
            for h in healths {
                let s = &h.slot;
                output::text_line(&format!(
                    "{:<24} {:<8} {:<16} {:<6} {:<10} {:>10} {:>10} {:>10} {:>9}  {}",
                    s.slot_name,
                    s.slot_type,
                    s.database.as_deref().unwrap_or("-"),
                    if s.active { "yes" } else { "no" },
                    s.wal_status.as_deref().unwrap_or("-"),
                    s.lag_bytes.map_or_else(dash, size::human),
                    s.retained_wal_bytes.map_or_else(dash, size::human),
                    s.safe_wal_size
                        .map_or_else(dash, |b| size::human(b.max(0) as u64)),
                    h.inactive_seconds
                        .map_or_else(dash, |secs| format!("{secs}s")),
                    if h.healthy {
                        "ok".to_string()
                    } else {
                        h.problems.join("; ")
                    }
                ))?;
            }
        }
    }
    Ok(())
}

//! `validate-backups restore`: one recovery point for the whole pipeline. PostgreSQL is
//! restored to the target with `pitr-restore`, which reports the LSN recovery actually ended
//! at; the CDC slots and publications are recreated with `cdc-slot-tool restore`; every CDC
//! topic is replayed with `kafka-replay --until-lsn` up to that LSN (no event of a change the
//! database does not have: neither after the cut nor of a transaction begun before it and
//! committed after it, found by `cut_off`), the connector's source offset is set to it,
//! other topics are replayed by time; then the cut is proved: each CDC topic, applied in order, gives exactly
//! the rows of its table in the restored database, no replayed event is at or after the
//! reached LSN, and a change made after the restore streams through the recreated slots.
//!
//! When the backups cannot give a consistent cut (no backup of a CDC topic, no slot set, an
//! event without an LSN, or below the cut without a transaction id, a topic backup that ends
//! before the reached point), it says what is missing and which window is inconsistent, and
//! exits 1: it never reports a cut it did not reach.

mod cut_off;
mod plan;
mod prove;
mod steps;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Instant;

use common::cdc::{LsnField, TxIdField};
use common::cli::RepoArgs;
use common::lsn::Lsn;
use common::output::{self, OutputFormat};
use common::Status;
use serde::Serialize;

use crate::Format;

/// Options of `validate-backups restore`.
#[derive(Debug, Clone, clap::Args)]
pub struct CutArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Data directory PostgreSQL is restored into (pitr-restore --pgdata).
    #[arg(long)]
    pub pgdata: PathBuf,
    /// Recover up to this time (RFC 3339 or PostgreSQL's syntax).
    #[arg(long, group = "cut_target")]
    pub target_time: Option<String>,
    /// Recover up to this WAL position.
    #[arg(long, group = "cut_target")]
    pub target_lsn: Option<String>,
    /// Recover up to a restore point made with pg_create_restore_point().
    #[arg(long, group = "cut_target")]
    pub target_name: Option<String>,
    /// `latest`: replay all archived WAL (the default).
    #[arg(long, group = "cut_target", value_parser = ["latest"])]
    pub target: Option<String>,
    /// Topics of the CDC connector (a regular expression matching whole names in the newest
    /// Kafka backup, as kafka-topic-backup's --topic-regex), replayed up to the reached LSN.
    #[arg(long, value_name = "REGEX")]
    pub cdc_topic_regex: String,
    /// Where each CDC event's LSN is: a JSON pointer into the value (/source/lsn) or
    /// header:NAME [default: Debezium's source.lsn, with or without the schema wrapper].
    #[arg(long, value_name = "SPEC")]
    pub lsn_field: Option<LsnField>,
    /// Where each CDC event's transaction id is (a JSON pointer or header:NAME), to leave out
    /// the events of transactions begun before the cut and committed after it, which the
    /// restored database does not hold [default: Debezium's source.txId].
    #[arg(long, value_name = "SPEC")]
    pub txid_field: Option<TxIdField>,
    /// Other topics (a regular expression), replayed up to the target time (whole without
    /// a time target).
    #[arg(long, value_name = "REGEX")]
    pub other_topic_regex: Option<String>,
    /// Replay each topic into `<topic><SUFFIX>` instead of its own name (the original must
    /// then not exist or be empty, as kafka-replay requires).
    #[arg(long, value_name = "SUFFIX", default_value = "")]
    pub topic_suffix: String,
    /// The connector's name and its topic prefix (Debezium's `name` and `topic.prefix`):
    /// its source offset is written to the reached LSN.
    #[arg(long, value_name = "NAME=PREFIX")]
    pub connector: Option<String>,
    /// Kafka Connect's offsets topic.
    #[arg(long, default_value = "connect-offsets")]
    pub offsets_topic: String,
    /// Translate the saved consumer-group offsets of the replayed topics (kafka-replay
    /// --restore-group-offsets).
    #[arg(long)]
    pub restore_group_offsets: bool,
    /// Database the CDC tables are in, for the proof.
    #[arg(long, default_value = "postgres")]
    pub database: String,
    /// Port of the restored server.
    #[arg(long, default_value_t = 5432)]
    pub port: u16,
    /// Unix-socket directory of the restored server.
    #[arg(long, default_value = "/tmp")]
    pub socket_dir: PathBuf,
    /// Role the restored server is used with.
    #[arg(long, default_value = "postgres")]
    pub db_user: String,
    /// Replace a non-empty data directory (pitr-restore --force).
    #[arg(long)]
    pub force: bool,
    /// Skip the streaming probe (a logical decoding message with prefix
    /// `pipeline-backup-probe`, peeked on every recreated slot without consuming it).
    #[arg(long)]
    pub no_stream_probe: bool,
    /// Kafka brokers (host:port,...).
    #[arg(long, short = 'b', env = common::env::KAFKA_BOOTSTRAP_SERVERS, value_name = "HOSTS")]
    pub bootstrap_servers: String,
    /// Extra librdkafka property as key=value (repeatable).
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = common::kafka::parse_key_value)]
    pub client_config: Vec<(String, String)>,
    /// Directory of the other pipeline-backup tools [default: next to this program, else PATH].
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
}

/// Where one component of the pipeline ended up.
#[derive(Debug, Clone, Serialize)]
pub struct Component {
    pub component: String,
    /// `ok`, `failed` or `skipped`.
    pub status: &'static str,
    /// The point it reached (an LSN, or a time for topics replayed by time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reached: Option<String>,
    pub detail: String,
}

impl Component {
    fn ok(
        component: impl Into<String>,
        reached: Option<String>,
        detail: impl Into<String>,
    ) -> Self {
        Component {
            component: component.into(),
            status: "ok",
            reached,
            detail: detail.into(),
        }
    }

    fn failed(component: impl Into<String>, detail: impl Into<String>) -> Self {
        Component {
            component: component.into(),
            status: "failed",
            reached: None,
            detail: detail.into(),
        }
    }
}

/// A part of the cut that could not be restored or proven, worded for the summary's
/// `missing` list (and the failed component's detail).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
struct Missing(String);

impl From<Missing> for String {
    fn from(missing: Missing) -> String {
        missing.0
    }
}

/// The result of a pipeline restore.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// The cut holds: every component reached it and the proof passed.
    pub consistent: bool,
    /// The LSN PostgreSQL's recovery ended at: the pipeline's recovery point.
    pub cut_lsn: Option<String>,
    /// The commit time of the last transaction replayed.
    pub cut_time: Option<String>,
    pub target: String,
    /// When the newest Kafka backup (the CDC topics' source) was taken.
    pub topics_backed_up_at: Option<String>,
    /// What is missing, and the window it leaves inconsistent, when the cut does not hold.
    pub missing: Vec<String>,
    /// Transactions begun before the cut and committed after it (so not in the restored
    /// database) whose events below the cut were left out.
    pub cut_off_txids: BTreeSet<u64>,
    /// Their events, over all CDC topics.
    pub skipped_cut_off_events: u64,
    /// Seconds from the start to a verified pipeline (the whole-pipeline RTO).
    pub rto_s: f64,
    /// Seconds between the cut and the newest change in the backups (the whole-pipeline RPO
    /// relative to the latest recoverable point), when the target is a time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpo_s: Option<f64>,
    pub components: Vec<Component>,
}

pub fn run(args: CutArgs, format: Format) -> anyhow::Result<Status> {
    let began = Instant::now();
    let bins = steps::Tools::new(args.bin_dir.clone());
    let plan = plan::Plan::prepare(&args)?;
    let mut summary = Summary {
        consistent: false,
        cut_lsn: None,
        cut_time: None,
        target: plan.target_description(),
        topics_backed_up_at: plan.kafka_backup_time.map(common::timefmt::rfc3339_string),
        missing: plan.missing.clone(),
        cut_off_txids: BTreeSet::new(),
        skipped_cut_off_events: 0,
        rto_s: 0.0,
        rpo_s: None,
        components: Vec::new(),
    };
    if summary.missing.is_empty() {
        restore_pipeline(&args, &plan, &bins, &mut summary)?;
    }
    summary.rto_s = began.elapsed().as_secs_f64();
    summary.consistent =
        summary.missing.is_empty() && summary.components.iter().all(|c| c.status != "failed");
    report(format, &summary)?;
    Ok(Status::from_passed(summary.consistent))
}

/// The restore proper: database, slots, the transactions the restore cut off, topics,
/// connector offset, proof. A step that cannot
/// give its part of the cut ends the run with what it found missing.
fn restore_pipeline(
    args: &CutArgs,
    plan: &plan::Plan,
    bins: &steps::Tools,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let database = steps::restore_database(args, plan, bins)?;
    let reached = database.recovery_end;
    summary.cut_lsn = Some(reached.to_string());
    summary.cut_time = database.last_replay_time.clone();
    summary.rpo_s = database.rpo_s;
    summary.components.push(database.component());
    summary.components.push(steps::restore_slots(args, bins)?);
    match cut_off::find(args, plan, bins, reached)? {
        cut_off::CutOff::Found { txids, component } => {
            summary.cut_off_txids = txids;
            summary.components.push(component);
        }
        cut_off::CutOff::Missing(missing) => {
            summary.missing.extend(missing);
            return Ok(());
        }
    }
    let replayed = steps::replay_cdc_topics(args, plan, bins, reached, &summary.cut_off_txids)?;
    summary.skipped_cut_off_events = replayed.skipped_cut_off_events;
    summary.missing.extend(replayed.missing.iter().cloned());
    summary
        .components
        .extend(replayed.components.iter().cloned());
    summary
        .components
        .extend(steps::replay_other_topics(args, plan, bins)?);
    if !summary.missing.is_empty() {
        return Ok(());
    }
    let proof = prove::prove(args, plan, reached)?;
    summary.missing.extend(proof.missing);
    summary.components.extend(proof.components);
    Ok(())
}

fn report(format: Format, summary: &Summary) -> anyhow::Result<()> {
    let output = match format {
        Format::Json => OutputFormat::Json,
        _ => OutputFormat::Text,
    };
    output::summary(output, summary, || text(summary))
}

fn text(summary: &Summary) -> String {
    let mut lines = vec![match (&summary.cut_lsn, summary.consistent) {
        (Some(lsn), true) => format!(
            "pipeline restored to one consistent point: LSN {lsn} ({}), in {:.1}s",
            summary
                .cut_time
                .as_deref()
                .unwrap_or("no transaction replayed"),
            summary.rto_s
        ),
        (Some(lsn), false) => format!("the pipeline does NOT agree at LSN {lsn}"),
        (None, _) => "no consistent cut can be made from these backups".to_string(),
    }];
    for c in &summary.components {
        lines.push(format!(
            "  {:8} {:40} {}{}",
            c.status,
            c.component,
            c.reached
                .as_deref()
                .map(|r| format!("at {r}: "))
                .unwrap_or_default(),
            c.detail
        ));
    }
    for m in &summary.missing {
        lines.push(format!("  missing: {m}"));
    }
    lines.join("\n")
}

/// An LSN from a tool's JSON summary.
fn lsn_at(value: &serde_json::Value, pointer: &str) -> Option<Lsn> {
    value.pointer(pointer)?.as_str()?.parse().ok()
}

//! `validate-backups drill`: an end-to-end recovery drill on throwaway services. It takes the
//! full pipeline backup (base backup with archived WAL, logical dump, slot set, topic export),
//! simulates a disaster (drops a table, deletes a topic, crashes the server), restores every
//! component to its last good point with the real tools, verifies the data, and reports the
//! measured RTO (time to restored and verified) and RPO (time between the last change that
//! survived and the disaster) per component. With a Kafka broker it also restores the whole
//! pipeline (PostgreSQL, slots, CDC topics, connector offset) to one consistent cut with
//! `validate-backups restore`, and reports that cut's RTO and RPO.

mod cluster;
mod components;
mod pipeline;
mod restore;
mod topic;

use std::path::PathBuf;

use anyhow::Context;
use common::output::{self, OutputFormat};
use common::storage::Location;
use common::Status;
use serde::Serialize;

use crate::Format;

/// Options of `validate-backups drill`.
#[derive(Debug, Clone, clap::Args)]
pub struct DrillArgs {
    /// Work directory for the drill's cluster, restores and (unless --backup-dir) its backup
    /// repository [default: a new temporary directory, removed afterwards].
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Backup repository the drill writes its sets into: a directory or s3://BUCKET[/PREFIX]
    /// (credentials from the AWS_* environment, passed on to the drill's server for its
    /// archive_command) [default: WORK_DIR/backups]. Use an empty folder or prefix: the
    /// drill restores the newest sets it finds there.
    #[arg(long, value_name = "DIR|URL")]
    pub backup_dir: Option<Location>,
    /// Keep the work directory (cluster data, restores, logs) and the drill's Kafka topics
    /// (named on stderr) for inspection.
    #[arg(long)]
    pub keep: bool,
    /// Kafka brokers for the Kafka component (host:port,...); without them that component is
    /// skipped. The drill only creates and deletes a topic of its own.
    #[arg(long, short = 'b', env = common::env::KAFKA_BOOTSTRAP_SERVERS, value_name = "HOSTS")]
    pub bootstrap_servers: Option<String>,
    /// Extra librdkafka property as key=value (repeatable).
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = common::kafka::parse_key_value)]
    pub client_config: Vec<(String, String)>,
    /// Rows in the drill's table at backup time.
    #[arg(long, default_value_t = 5000)]
    pub rows: u64,
    /// Records per partition in the drill's topic at backup time.
    #[arg(long, default_value_t = 500)]
    pub records: u64,
    /// Rows of the pipeline component's CDC table inserted (a third of them updated, a
    /// seventh deleted) and streamed by the CDC connector emulator before the backups; a
    /// fifth as many before the restore point and again after the backups (lost in the
    /// disaster: the pipeline's RPO). Needs a Kafka broker.
    #[arg(long, default_value_t = 1000)]
    pub cdc_rows: u64,
    /// Directory of the other pipeline-backup tools [default: next to this program, else PATH].
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Write Prometheus textfile-collector metrics of the drill (per component: ok, RTO,
    /// RPO) to this file (replaced atomically).
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
}

/// How the restore of one component ended; serialized as `ok`, `failed` or `skipped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ComponentStatus {
    Ok,
    Failed,
    Skipped,
}

impl ComponentStatus {
    pub fn name(self) -> &'static str {
        match self {
            ComponentStatus::Ok => "ok",
            ComponentStatus::Failed => "failed",
            ComponentStatus::Skipped => "skipped",
        }
    }
}

impl std::fmt::Display for ComponentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad` keeps width and alignment flags working in the text table.
        f.pad(self.name())
    }
}

/// Result of one restored component.
#[derive(Debug, Clone, Serialize)]
pub struct Component {
    pub component: &'static str,
    pub status: ComponentStatus,
    /// Seconds from the start of its restore to restored and verified data.
    pub rto_s: Option<f64>,
    /// Seconds between the last change that survived and the disaster.
    pub rpo_s: Option<f64>,
    pub detail: String,
}

impl Component {
    pub fn skipped(component: &'static str, detail: impl Into<String>) -> Component {
        Component {
            component,
            status: ComponentStatus::Skipped,
            rto_s: None,
            rpo_s: None,
            detail: detail.into(),
        }
    }

    pub fn failed(component: &'static str, error: &anyhow::Error) -> Component {
        Component {
            component,
            status: ComponentStatus::Failed,
            rto_s: None,
            rpo_s: None,
            detail: format!("{error:#}"),
        }
    }
}

#[derive(Debug, Serialize)]
struct Summary {
    passed: bool,
    backup_dir: String,
    /// Seconds from the first restore step to the last component verified.
    total_rto_s: f64,
    /// The largest RPO of the restored components.
    worst_rpo_s: Option<f64>,
    backup_s: f64,
    components: usize,
    failed: Vec<&'static str>,
    skipped: Vec<&'static str>,
}

pub fn run(args: DrillArgs, format: Format) -> anyhow::Result<Status> {
    let holder = match &args.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            None
        }
        None => Some(
            crate::scratch::ScratchDir::create(None, "validate-backups-drill-")
                .context("cannot create a work directory (set --work-dir)")?,
        ),
    };
    let work = match (&args.work_dir, &holder) {
        (Some(dir), _) => std::path::absolute(dir)?,
        (None, Some(h)) => {
            // Our own temporary directory: the database OS user must be able to enter it.
            if let Some((uid, gid)) = common::os_user::db_user_ids()? {
                std::os::unix::fs::chown(h.path(), Some(uid), Some(gid))?;
            }
            h.path().to_path_buf()
        }
        (None, None) => unreachable!("a work directory exists"),
    };
    let result = components::Drill::new(&args, &work).and_then(|drill| drill.run());
    if args.keep {
        if let Some(h) = holder {
            let kept = h.keep();
            tracing::info!("kept the drill's work directory {}", kept.display());
        }
    }
    let outcome = result?;
    if let Some(path) = &args.metrics_file {
        crate::metrics::write_text(path, &metrics(&outcome))?;
    }
    report(format, &outcome)?;
    Ok(Status::from_passed(
        outcome
            .components
            .iter()
            .all(|c| c.status != ComponentStatus::Failed),
    ))
}

fn report(format: Format, outcome: &components::Outcome) -> anyhow::Result<()> {
    let summary = Summary {
        passed: outcome
            .components
            .iter()
            .all(|c| c.status != ComponentStatus::Failed),
        backup_dir: outcome.backup_dir.to_string(),
        total_rto_s: outcome.total_rto_s,
        worst_rpo_s: outcome
            .components
            .iter()
            .filter_map(|c| c.rpo_s)
            .reduce(f64::max),
        backup_s: outcome.backup_s,
        components: outcome.components.len(),
        failed: outcome
            .components
            .iter()
            .filter(|c| c.status == ComponentStatus::Failed)
            .map(|c| c.component)
            .collect(),
        skipped: outcome
            .components
            .iter()
            .filter(|c| c.status == ComponentStatus::Skipped)
            .map(|c| c.component)
            .collect(),
    };
    let json = format == Format::Json;
    if json {
        for c in &outcome.components {
            let mut value = serde_json::to_value(c)?;
            value["type"] = "component".into();
            output::json_line(&value)?;
        }
    } else {
        output::text_line(&format!(
            "{:<16} {:<8} {:>9} {:>9}  DETAIL",
            "COMPONENT", "STATUS", "RTO", "RPO"
        ))?;
        let secs = |v: Option<f64>| v.map_or("-".to_string(), |s| format!("{s:.1}s"));
        for c in &outcome.components {
            output::text_line(&format!(
                "{:<16} {:<8} {:>9} {:>9}  {}",
                c.component,
                c.status,
                secs(c.rto_s),
                secs(c.rpo_s),
                c.detail
            ))?;
        }
    }
    let format = if json {
        OutputFormat::Json
    } else {
        OutputFormat::Text
    };
    output::summary(format, &summary, || {
        format!(
            "drill {}: backup {:.1}s, everything restored and verified in {:.1}s (RTO), worst RPO {}",
            if summary.passed { "passed" } else { "FAILED" },
            summary.backup_s,
            summary.total_rto_s,
            summary
                .worst_rpo_s
                .map_or("-".to_string(), |s| format!("{s:.1}s"))
        )
    })
}

/// The drill's metrics: per component whether it was restored and verified, its RTO and RPO.
fn metrics(outcome: &components::Outcome) -> String {
    use crate::metrics::{label, Families};
    let ran: Vec<&Component> = outcome
        .components
        .iter()
        .filter(|c| c.status != ComponentStatus::Skipped)
        .collect();
    let per = |f: &dyn Fn(&Component) -> Option<f64>| -> Vec<(String, f64)> {
        ran.iter()
            .filter_map(|c| f(c).map(|v| (label("component", c.component), v)))
            .collect()
    };
    let mut m = Families::default();
    m.family(
        "pipeline_backup_drill_ok",
        "1 when the drill restored and verified the component, 0 when it failed.",
        &per(&|c| {
            Some(if c.status == ComponentStatus::Ok {
                1.0
            } else {
                0.0
            })
        }),
    );
    m.family(
        "pipeline_backup_drill_rto_seconds",
        "Measured time from the start of the component's restore to verified data.",
        &per(&|c| c.rto_s),
    );
    m.family(
        "pipeline_backup_drill_rpo_seconds",
        "Measured time between the component's last surviving change and the disaster.",
        &per(&|c| c.rpo_s),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs() as f64);
    m.family(
        "pipeline_backup_drill_timestamp_seconds",
        "Unix time the drill finished.",
        &[(String::new(), now)],
    );
    m.text
}

//! Connectivity checks, run only when a server is configured: PostgreSQL answers and archives
//! without failures, the Kafka cluster answers, replication slots are healthy.

use std::process::Command;

use common::cli::PgArgs;

use crate::check::{CheckResult, Run, Settings};
use crate::{broker, tools};

pub fn run(run: &mut Run, settings: &Settings) {
    let pg = settings.pg.clone();
    let archiver = pg.as_ref().map(read_archiver);
    run.check(settings, "pg.reachable", || {
        vec![match (&pg, &archiver) {
            (None, _) => {
                CheckResult::skip("pg.reachable", "no PostgreSQL configured (--host/PGHOST)")
            }
            (Some(pg), Some(Ok(a))) => CheckResult::pass(
                "pg.reachable",
                format!("{} answers: {}", pg.describe(), a.version),
            ),
            (Some(pg), Some(Err(e))) => {
                CheckResult::fail("pg.reachable", format!("{}: {e:#}", pg.describe()))
            }
            (Some(_), None) => unreachable!("archiver read whenever a server is configured"),
        }]
    });
    if let Some(Ok(a)) = &archiver {
        run.archiver_failed_count = Some(a.failed_count);
    }
    run.check(settings, "pg.archiver", || {
        vec![match &archiver {
            None => CheckResult::skip("pg.archiver", "no PostgreSQL configured (--host/PGHOST)"),
            Some(Err(e)) => CheckResult::fail(
                "pg.archiver",
                format!("cannot read pg_stat_archiver: {e:#}"),
            ),
            Some(Ok(a)) => judge_archiver(a),
        }]
    });
    run.check(settings, "kafka.reachable", || {
        vec![match &settings.kafka {
            None => CheckResult::skip(
                "kafka.reachable",
                "no Kafka configured (--bootstrap-servers/KAFKA_BOOTSTRAP_SERVERS)",
            ),
            Some((servers, props)) => match broker::metadata(&broker::config(servers, props)) {
                Ok((brokers, topics)) => CheckResult::pass(
                    "kafka.reachable",
                    format!("{servers}: {brokers} broker(s), {topics} topic(s)"),
                ),
                Err(e) => CheckResult::fail("kafka.reachable", format!("{servers}: {e:#}")),
            },
        }]
    });
    run.check(settings, "slots.healthy", || {
        vec![match &pg {
            None => CheckResult::skip("slots.healthy", "no PostgreSQL configured (--host/PGHOST)"),
            Some(pg) => slots_healthy(settings, pg),
        }]
    });
}

/// What pg_stat_archiver says.
#[derive(Debug)]
pub struct Archiver {
    pub version: String,
    pub archive_mode: String,
    pub archived_count: i64,
    pub failed_count: i64,
    pub last_failed_wal: Option<String>,
    /// The last failure is newer than the last success: archiving is failing now.
    pub failing_now: bool,
}

fn read_archiver(pg: &PgArgs) -> anyhow::Result<Archiver> {
    let runtime = common::postgres::runtime()?;
    runtime.block_on(async {
        let client = common::postgres::connect(pg, "validate-backups").await?;
        let row = client
            .query_one(
                "SELECT version(), current_setting('archive_mode'), archived_count, failed_count, \
                 last_failed_wal, \
                 coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false) \
                 FROM pg_stat_archiver",
                &[],
            )
            .await?;
        Ok(Archiver {
            version: row
                .get::<_, String>(0)
                .split(" on ")
                .next()
                .unwrap_or("")
                .to_string(),
            archive_mode: row.get(1),
            archived_count: row.get(2),
            failed_count: row.get(3),
            last_failed_wal: row.get(4),
            failing_now: row.get(5),
        })
    })
}

fn judge_archiver(a: &Archiver) -> CheckResult {
    const NAME: &str = "pg.archiver";
    if a.archive_mode == "off" {
        return CheckResult::fail(
            NAME,
            "archive_mode is off: no WAL reaches the archive, point-in-time recovery is impossible",
        );
    }
    let text = format!(
        "archived_count {}, failed_count {}",
        a.archived_count, a.failed_count
    );
    if a.failing_now {
        CheckResult::fail(
            NAME,
            format!(
                "{text}; archiving is failing (last failed {}; see the server log for archive_command errors)",
                a.last_failed_wal.as_deref().unwrap_or("?")
            ),
        )
    } else {
        CheckResult::pass(NAME, text)
    }
}

/// `cdc-slot-tool status` exits 1 when a slot is lost, invalidated or lagging.
fn slots_healthy(settings: &Settings, pg: &PgArgs) -> CheckResult {
    const NAME: &str = "slots.healthy";
    let mut cmd = Command::new(tools::program("cdc-slot-tool", settings.bin_dir.as_deref()));
    cmd.args(["status", "--output", "json", "-q"])
        .envs(pg.libpq_env());
    if let Some(lag) = settings.max_slot_lag {
        cmd.args(["--max-lag-bytes", &lag.to_string()]);
    }
    let run = match tools::capture(&mut cmd, "cdc-slot-tool status") {
        Ok(run) => run,
        Err(e) => return CheckResult::fail(NAME, format!("{e:#}")),
    };
    let unhealthy: Vec<String> = run.failed_items("slot_name", |l| {
        l["healthy"] == false && l.get("slot_name").is_some()
    });
    let summary = run.summary();
    match run.code {
        Some(0) => CheckResult::pass(
            NAME,
            format!(
                "{} slot(s), all healthy",
                summary
                    .as_ref()
                    .map_or(0, |s| s["slots"].as_u64().unwrap_or(0))
            ),
        ),
        Some(1) => CheckResult::fail(
            NAME,
            if unhealthy.is_empty() {
                "cdc-slot-tool status reports an unhealthy slot".to_string()
            } else {
                unhealthy.join("; ")
            },
        ),
        _ => CheckResult::fail(
            NAME,
            format!("cdc-slot-tool status could not run: {}", run.last_error()),
        ),
    }
}

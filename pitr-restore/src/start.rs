//! `--start`: run the restored server, wait until recovery has finished and it accepts
//! writes, then check where it ended up.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use common::lsn::Lsn;
use serde::Serialize;

use crate::target::Target;

/// Where and how to run the restored server.
#[derive(Debug, Clone)]
pub struct StartOptions {
    pub port: u16,
    pub socket_dir: PathBuf,
    pub user: String,
    pub timeout: Duration,
}

/// What the restored server reports once promoted.
#[derive(Debug, Clone, Serialize)]
pub struct Reached {
    pub timeline: u32,
    pub current_lsn: String,
    /// Where recovery ended: the switch point of the new timeline (from its history file).
    /// Every transaction that committed before it is in the restored cluster, none after.
    pub recovery_end_lsn: Option<String>,
    /// Commit time of the last transaction replayed (None when none was replayed).
    pub last_replay_time: Option<String>,
    /// The server's own words on where recovery stopped, from its log.
    pub recovery_stop: Option<String>,
    pub log_file: String,
}

pub fn log_file(pgdata: &Path) -> PathBuf {
    pgdata.join("pitr-restore-server.log")
}

/// The server's last words, one line: its FATAL and PANIC lines (the cause, such as
/// "recovery ended before configured recovery target was reached"), else the last few
/// lines of its log (which after a failure are only the shutdown).
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    server_words(&text)
}

fn server_words(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut fatal: Vec<&str> = lines
        .iter()
        .filter(|l| l.contains("FATAL:") || l.contains("PANIC:"))
        // Our own connection attempts while it recovers are turned away with FATAL lines
        // ("the database system is starting up"): not the cause.
        .filter(|l| !l.contains("the database system is "))
        .map(|l| {
            l.find("FATAL:")
                .or_else(|| l.find("PANIC:"))
                .map_or(*l, |at| l[at..].trim())
        })
        .collect();
    fatal.dedup();
    let words = if fatal.is_empty() {
        &lines[lines.len().saturating_sub(3)..]
    } else {
        &fatal[fatal.len().saturating_sub(3)..]
    };
    if words.is_empty() {
        "no log".to_string()
    } else {
        words.join(" | ")
    }
}

pub fn start(
    pgdata: &Path,
    options: &StartOptions,
    target: &Target,
    backup_timeline: u32,
) -> anyhow::Result<Reached> {
    if rustix::process::geteuid().is_root() {
        anyhow::bail!(
            "PostgreSQL cannot run as root: run pitr-restore --start as the database's OS user (e.g. su postgres -c '...'), or restore without --start"
        );
    }
    let log = log_file(pgdata);
    let server_options = format!(
        "-c port={} -c unix_socket_directories='{}' -c listen_addresses=''",
        options.port,
        options.socket_dir.display()
    );
    let status = Command::new(common::pgbin::program("pg_ctl"))
        .arg("start")
        .arg("-D")
        .arg(pgdata)
        .arg("-l")
        .arg(&log)
        .arg("-o")
        .arg(&server_options)
        .args(["-w", "-t"])
        .arg(options.timeout.as_secs().max(1).to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| common::pgbin::missing_hint("pg_ctl"))?;
    if !status.success() {
        anyhow::bail!(
            "the restored server did not start ({status}): {} (full log: {})",
            log_tail(&log),
            log.display()
        );
    }
    let runtime = common::postgres::runtime()?;
    runtime.block_on(wait_promoted(
        pgdata,
        options,
        target,
        backup_timeline,
        &log,
    ))
}

async fn wait_promoted(
    pgdata: &Path,
    options: &StartOptions,
    target: &Target,
    backup_timeline: u32,
    log: &Path,
) -> anyhow::Result<Reached> {
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(&options.socket_dir)
        .port(options.port)
        .user(&options.user)
        .dbname("postgres")
        .application_name("pitr-restore");
    let deadline = Instant::now() + options.timeout;
    loop {
        if Instant::now() > deadline {
            anyhow::bail!(
                "recovery did not finish within {}s; the server keeps running on {} (log: {})",
                options.timeout.as_secs(),
                pgdata.display(),
                log.display()
            );
        }
        if !crate::safety::server_running(pgdata) {
            anyhow::bail!(
                "the restored server stopped during recovery: {} (log: {})",
                log_tail(log),
                log.display()
            );
        }
        let Ok(client) = common::postgres::connect_config(&config, "restored server").await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let in_recovery: bool = client
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .context("querying the restored server")?
            .get(0);
        if in_recovery {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let row = client
            .query_one(
                "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int,
                        pg_current_wal_lsn()::text,
                        pg_last_xact_replay_timestamp()",
                &[],
            )
            .await
            .context("querying the restored server")?;
        let timeline = row.get::<_, i32>(0) as u32;
        let current_lsn: String = row.get(1);
        let last_replay: Option<std::time::SystemTime> = row.get(2);
        let reached = Reached {
            timeline,
            current_lsn: current_lsn.clone(),
            recovery_end_lsn: recovery_end(pgdata, timeline),
            last_replay_time: last_replay
                .map(|t| common::timefmt::rfc3339_string(time::OffsetDateTime::from(t))),
            recovery_stop: recovery_stop_line(log),
            log_file: log.display().to_string(),
        };
        validate(&reached, target, backup_timeline, last_replay, &current_lsn)?;
        return Ok(reached);
    }
}

/// The new timeline's switch point, from `pg_wal/<timeline>.history` (PostgreSQL writes it
/// at promotion).
fn recovery_end(pgdata: &Path, timeline: u32) -> Option<String> {
    let name = common::wal::history::file_name(timeline);
    let path = pgdata.join("pg_wal").join(&name);
    let bytes = std::fs::read(&path).ok()?;
    match common::wal::history::switch_point(&bytes, &path.display().to_string()) {
        Ok(lsn) => lsn.map(|l| l.to_string()),
        Err(e) => {
            tracing::warn!("{e}");
            None
        }
    }
}

/// The "recovery stopping ..." or "redo done at ..." line of the server log.
fn recovery_stop_line(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text
        .lines()
        .find(|l| l.contains("recovery stopping"))
        .or_else(|| text.lines().find(|l| l.contains("redo done at")))?;
    Some(
        line.split_once("LOG:")
            .map_or(line, |(_, rest)| rest)
            .trim()
            .to_string(),
    )
}

fn validate(
    reached: &Reached,
    target: &Target,
    backup_timeline: u32,
    last_replay: Option<std::time::SystemTime>,
    current_lsn: &str,
) -> anyhow::Result<()> {
    if reached.timeline <= backup_timeline {
        anyhow::bail!(
            "the restored server is on timeline {}, not a new one after {backup_timeline}: recovery did not end as expected",
            reached.timeline
        );
    }
    match target {
        Target::Time(t) => {
            if let Some(replayed) = last_replay {
                let replayed = time::OffsetDateTime::from(replayed);
                if replayed > *t {
                    anyhow::bail!(
                        "recovery replayed a transaction of {} past the target {}",
                        common::timefmt::rfc3339_string(replayed),
                        common::timefmt::rfc3339_string(*t)
                    );
                }
            }
        }
        Target::Lsn(lsn) => {
            let now: Lsn = current_lsn.parse().map_err(anyhow::Error::msg)?;
            if now < *lsn {
                anyhow::bail!("recovery ended at {now}, before the target LSN {lsn}");
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::server_words;

    #[test]
    fn the_fatal_line_is_quoted_rather_than_the_shutdown() {
        let log = "\
2026-12-03 09:11:38.996 UTC [100] LOG:  starting point-in-time recovery to \"A\"
2026-12-03 09:11:39.001 UTC [101] FATAL:  the database system is starting up
2026-12-03 09:11:39.204 UTC [100] LOG:  redo done at 0/5000060 system usage: CPU: user: 0.00 s
2026-12-03 09:11:39.204 UTC [100] FATAL:  recovery ended before configured recovery target was reached
2026-12-03 09:11:39.205 UTC [99] LOG:  startup process (PID 100) exited with exit code 1
2026-12-03 09:11:39.205 UTC [99] LOG:  terminating any other active server processes
2026-12-03 09:11:39.206 UTC [99] LOG:  shutting down due to startup process failure
2026-12-03 09:11:39.207 UTC [99] LOG:  database system is shut down
";
        assert_eq!(
            server_words(log),
            "FATAL:  recovery ended before configured recovery target was reached"
        );
        let clean = "a\n\nb\nc\nd\n";
        assert_eq!(server_words(clean), "b | c | d");
        assert_eq!(server_words(""), "no log");
    }
}

//! Load: pgbench at a steady rate on a cluster whose archive_command is `wal-archive push`,
//! base backups back to back for the whole run, and named restore points at seeded moments.
//! At each restore point the pgbench tables are locked against writers for a moment, so the
//! `pg_dumpall` taken then is exactly the state recovery stops at. Afterwards the archive has
//! no gap (`wal-archive verify`), the archiver's backlog stayed bounded, and a point-in-time
//! restore to each restore point (and to one at the end) gives a `pg_dumpall` equal to its
//! reference.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tempfile::TempDir;
use test_support::os_user::db_tempdir;
use test_support::pg::{pg_bin, DataDirServer, PgCluster, PgOptions};

use super::{entry, Entry, Scenario};
use crate::context::{Backend, Ctx, Repo, Tier};
use crate::process::{self, Running};
use crate::sql;

/// The most `.ready` files the archiver may have waiting at any moment of the run.
pub const MAX_BACKLOG: usize = 16;
/// pgbench's rate (transactions per second) and clients.
const RATE: &str = "20";
const CLIENTS: &str = "2";

pub fn entries() -> Vec<Entry> {
    vec![entry(
        "load:pgbench".into(),
        "pgbench + archive_command + back-to-back base backups; PITR to restore points equals pg_dumpall references, no WAL gap",
        |_: Tier| 1,
        Box::new(|ctx| Ok(Box::new(Load::new(ctx)?) as Box<dyn Scenario>)),
    )]
}

struct Load {
    pg: PgCluster,
    first_base: String,
    repo: Repo,
    duration: Duration,
    points: usize,
}

impl Load {
    fn new(ctx: &Ctx) -> anyhow::Result<Load> {
        let repo = ctx.fresh_repo(Backend::Local, "load")?;
        let pg = PgCluster::start_with(
            PgOptions::default()
                .setting("archive_mode", "on")
                .setting(
                    "archive_command",
                    &format!(
                        "'{} push %p --backup-dir {} -q'",
                        ctx.tool_path("wal-archive").display(),
                        repo.url
                    ),
                )
                .setting("archive_timeout", "0"),
        );
        let mut init = pg.command(pg_bin("pgbench"));
        init.args(["-i", "-s", "2", "-q", "postgres"]);
        process::run_ok(&mut init, "pgbench -i")?;
        let mut base = base_backup(ctx, &pg, &repo);
        let first = process::run_ok(&mut base, "the first base backup")?;
        Ok(Load {
            first_base: first.set_id()?,
            pg,
            repo,
            duration: ctx.load_duration,
            points: match ctx.tier {
                Tier::Quick => 2,
                Tier::Full => 5,
            },
        })
    }
}

fn base_backup(ctx: &Ctx, pg: &PgCluster, repo: &Repo) -> Command {
    let mut cmd = ctx.tool("pg-base-backup");
    cmd.envs(pg.env()).args([
        "--backup-dir",
        &repo.url,
        "--wal-method",
        "archive",
        "--compress",
        "zstd",
        "--no-retention",
        "--output",
        "json",
    ]);
    cmd
}

/// `.ready` files in the cluster's archive status directory: the archiver's backlog.
fn backlog(pg: &PgCluster) -> usize {
    std::fs::read_dir(pg.data_dir.join("pg_wal/archive_status"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".ready"))
                .count()
        })
        .unwrap_or(0)
}

/// Creates restore point `name` while pgbench's tables are locked against writers, and
/// returns `pg_dumpall` taken under that lock: the state recovery to `name` must give.
fn restore_point(pg: &PgCluster, name: &str) -> anyhow::Result<String> {
    let mut psql = pg.command(pg_bin("psql"));
    psql.args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", "postgres"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut session = psql.spawn().context("cannot start psql")?;
    let mut stdin = session.stdin.take().expect("piped");
    writeln!(
        stdin,
        "BEGIN; LOCK TABLE pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history IN EXCLUSIVE MODE;
         SELECT 'rp ' || pg_create_restore_point('{name}');"
    )?;
    stdin.flush()?;
    let mut lines = BufReader::new(session.stdout.take().expect("piped")).lines();
    let locked = lines
        .find(|l| l.as_ref().map_or(true, |l| l.starts_with("rp ")))
        .transpose()?
        .unwrap_or_default();
    let dump = if locked.starts_with("rp ") {
        sql::dumpall(pg)
    } else {
        Err(anyhow::anyhow!(
            "could not create restore point {name}: {locked}"
        ))
    };
    writeln!(stdin, "COMMIT;")?;
    drop(stdin);
    let _ = session.wait();
    dump
}

/// What the run under load produced.
struct Run {
    /// Restore point, the newest base set complete when it was made, `pg_dumpall` then.
    references: Vec<(String, String, String)>,
    backups: usize,
    max_backlog: usize,
    pgbench: String,
}

impl Load {
    /// pgbench for the whole duration; base backups back to back; restore points at the
    /// seeded moments; the backlog sampled as it goes.
    fn under_load(&self, ctx: &Ctx, rng: &mut fastrand::Rng) -> anyhow::Result<Run> {
        let mut moments: Vec<Duration> = (0..self.points)
            .map(|_| self.duration.mul_f64(0.1 + 0.8 * rng.f64()))
            .collect();
        moments.sort();
        let mut bench = self.pg.command(pg_bin("pgbench"));
        bench
            .args(["-n", "-c", CLIENTS, "-j", CLIENTS, "-R", RATE])
            .args(["-T", &self.duration.as_secs().to_string(), "postgres"]);
        let bench = Running::spawn(&mut bench, "pgbench")?;
        let started = Instant::now();
        let mut run = Run {
            references: Vec::new(),
            backups: 0,
            max_backlog: 0,
            pgbench: String::new(),
        };
        let mut backup: Option<Running> = None;
        let mut newest = self.first_base.clone();
        while started.elapsed() < self.duration {
            run.max_backlog = run.max_backlog.max(backlog(&self.pg));
            if moments.first().is_some_and(|m| started.elapsed() >= *m) {
                moments.remove(0);
                let name = format!("fc_point_{}", run.references.len() + 1);
                let dump = restore_point(&self.pg, &name)?;
                run.references.push((name, newest.clone(), dump));
            }
            match backup.as_mut().map(Running::is_running) {
                Some(true) => {}
                finished => {
                    if finished.is_some() {
                        let ended = backup.take().expect("finished").wait(process::RUN_LIMIT)?;
                        ended.ok(&format!("base backup {} under load", run.backups + 1))?;
                        newest = ended.set_id()?;
                        run.backups += 1;
                    }
                    backup = Some(Running::spawn(
                        &mut base_backup(ctx, &self.pg, &self.repo),
                        "pg-base-backup",
                    )?);
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if let Some(last) = backup {
            let ended = last.wait(process::RUN_LIMIT)?;
            ended.ok("the last base backup under load")?;
            newest = ended.set_id()?;
            run.backups += 1;
        }
        let bench = bench.wait(Duration::from_secs(120))?;
        bench.ok("pgbench")?;
        run.pgbench = bench
            .run
            .stdout
            .lines()
            .find(|l| l.starts_with("tps"))
            .unwrap_or_default()
            .to_string();
        let dump = restore_point(&self.pg, "fc_point_end")?;
        run.references.push(("fc_point_end".into(), newest, dump));
        Ok(run)
    }

    /// Restores to restore point `name` (from base set `base`, or the one pitr-restore picks)
    /// and fails unless `pg_dumpall` equals `reference`.
    fn restore_to(
        &self,
        ctx: &Ctx,
        name: &str,
        base: Option<&str>,
        reference: &str,
    ) -> anyhow::Result<()> {
        let dir: TempDir = db_tempdir("fc-load-restore-");
        let pgdata = dir.path().join("pgdata");
        let port = test_support::free_port();
        let mut cmd = ctx.tool("pitr-restore");
        cmd.args([
            "--backup-dir",
            &self.repo.url,
            "--target-name",
            name,
            "--pgdata",
        ])
        .arg(&pgdata)
        .args(["--start", "--port", &port.to_string(), "--socket-dir"])
        .arg(dir.path())
        .args(["--yes", "--output", "json", "--timeout", "300s"]);
        if let Some(base) = base {
            cmd.args(["--backup-id", base]);
        }
        let ended = process::run(&mut cmd, "pitr-restore")?;
        let server = DataDirServer::new(pgdata, port, dir.path().to_path_buf());
        let shown = match base {
            Some(base) => format!("pitr-restore --target-name {name} --backup-id {base}"),
            None => format!("pitr-restore --target-name {name} (the base set it picks)"),
        };
        ended.ok(&shown)?;
        let restored = sql::dumpall(&server)?;
        anyhow::ensure!(
            restored == reference,
            "restored to {name}, pg_dumpall differs from the reference: {}",
            sql::first_difference(&restored, reference)
        );
        Ok(())
    }
}

impl Scenario for Load {
    fn trial(&mut self, ctx: &Ctx, rng: &mut fastrand::Rng) -> anyhow::Result<String> {
        let run = self.under_load(ctx, rng)?;
        sql::switch_wal_and_wait(&self.pg, Duration::from_secs(120))?;
        anyhow::ensure!(
            run.max_backlog <= MAX_BACKLOG,
            "the archiver's backlog reached {} segments (bound {MAX_BACKLOG})",
            run.max_backlog
        );
        let mut verify = ctx.tool("wal-archive");
        verify.args(["verify", "--backup-dir", &self.repo.url, "--output", "json"]);
        process::run_ok(&mut verify, "wal-archive verify").context("a gap in the WAL archive")?;
        for (name, base, reference) in &run.references {
            self.restore_to(ctx, name, Some(base), reference)?;
        }
        // As a user would: no --backup-id, the tool picks a base set that reaches the point.
        let (name, _, reference) = &run.references[0];
        self.restore_to(ctx, name, None, reference)?;
        Ok(format!(
            "{:.0} min of pgbench ({}), {} base backups, archiver backlog at most {}, verify ok, {} restore points restored equal (and the first again from the base set pitr-restore picks)",
            self.duration.as_secs_f64() / 60.0,
            run.pgbench.trim(),
            run.backups,
            run.max_backlog,
            run.references.len()
        ))
    }
}

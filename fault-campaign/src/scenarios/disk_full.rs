//! Disk full, on a small tmpfs mounted for the trial:
//!
//! - `pg-base-backup`: the repository's filesystem is smaller than the backup (its size
//!   seeded): exit 2 with one line naming no-space and the path, no complete set; with room,
//!   the next run works and validates.
//! - `wal-archive push` as archive_command: the repository's filesystem filled to a seeded
//!   few KiB: the push fails (exit 2, one clear line) so PostgreSQL keeps the segment and
//!   counts a failure; once space is freed the archiver catches up with no gap.
//! - `pitr-restore`: the target's filesystem filled by another writer at a seeded moment of
//!   the extraction: exit 2, one clear line, nothing left in `--pgdata`; with room, a re-run
//!   restores the source's data.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use common::repo::Kind;
use tempfile::TempDir;
use test_support::os_user::db_tempdir;
use test_support::pg::{PgCluster, PgOptions};
use test_support::run::Run;

use super::sources::{self, Cluster};
use super::{entry, Entry, Scenario};
use crate::context::{Backend, Ctx, Repo, Tier};
use crate::process::{self, Running};
use crate::{checks, sql};

fn trials(tier: Tier) -> usize {
    match tier {
        Tier::Quick => 1,
        Tier::Full => 5,
    }
}

pub fn entries() -> Vec<Entry> {
    vec![
        entry(
            "disk-full:pg-base-backup".into(),
            "repository on a tmpfs smaller than the backup: exit 2, one line, nothing complete; then a good run",
            trials,
            Box::new(|ctx| Ok(Box::new(BaseFull::new(ctx)?) as Box<dyn Scenario>)),
        ),
        entry(
            "disk-full:wal-archive-push".into(),
            "archive_command onto a full tmpfs: the push fails, PostgreSQL retries; freed, no WAL lost",
            trials,
            Box::new(|ctx| Ok(Box::new(WalFull::new(ctx)?) as Box<dyn Scenario>)),
        ),
        entry(
            "disk-full:pitr-restore".into(),
            "restore target filled mid-extraction: exit 2, one line, --pgdata emptied; then a good re-run",
            trials,
            Box::new(|ctx| Ok(Box::new(PitrFull::new(ctx)?) as Box<dyn Scenario>)),
        ),
    ]
}

/// A tmpfs of a given size, unmounted on drop.
struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    fn mount(bytes: u64) -> anyhow::Result<Tmpfs> {
        let dir = db_tempdir("fc-tmpfs-");
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes},mode=0777"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .context("cannot run mount")?;
        anyhow::ensure!(
            status.success(),
            "cannot mount a tmpfs on {}",
            dir.path().display()
        );
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn resize(&self, bytes: u64) -> anyhow::Result<()> {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={bytes}")])
            .arg(self.path())
            .status()?;
        anyhow::ensure!(status.success(), "cannot resize the tmpfs");
        Ok(())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes zeros into `path` until the filesystem is full, then gives back `leave` bytes.
fn fill(path: &Path, leave: u64) -> anyhow::Result<()> {
    let mut file =
        std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => return Err(e).with_context(|| format!("fill {}", path.display())),
        }
    }
    file.set_len(written.saturating_sub(leave))?;
    Ok(())
}

/// The one `<tool>: ...` line of a run that must have failed for lack of space on `place`.
fn expect_no_space(run: &Run, tool: &str, place: &Path) -> anyhow::Result<String> {
    let line =
        super::service::expect_error_line(run, tool, &["no space", "free space", "space left"])?;
    anyhow::ensure!(
        line.contains(&place.display().to_string()),
        "the error does not name the full filesystem's path ({}): {line}",
        place.display()
    );
    Ok(line)
}

/// pg-base-backup onto a repository filesystem smaller than the backup.
struct BaseFull {
    source: Rc<Cluster>,
    /// Bytes of an uncompressed set of the source.
    set_bytes: u64,
}

impl BaseFull {
    fn new(ctx: &Ctx) -> anyhow::Result<BaseFull> {
        let source = ctx.shared("cluster:base", || Cluster::with_app(PgOptions::default()))?;
        let repo = ctx.fresh_repo(Backend::Local, "base-size")?;
        let ended = process::run_ok(&mut base_backup(ctx, &source, &repo.url), "pg-base-backup")?;
        let set_bytes = ended.run.summary()["bytes"]
            .as_u64()
            .or_else(|| {
                repo.complete_sets(Kind::Base)
                    .ok()?
                    .last()?
                    .manifest()
                    .map(common::manifest::Manifest::total_size)
            })
            .context("the backup's size is unknown")?;
        Ok(BaseFull { source, set_bytes })
    }
}

fn base_backup(ctx: &Ctx, source: &Cluster, backup_dir: &str) -> Command {
    let mut cmd = ctx.tool("pg-base-backup");
    cmd.envs(source.pg.env()).args([
        "--backup-dir",
        backup_dir,
        "--compress",
        "none",
        "--output",
        "json",
    ]);
    cmd
}

impl Scenario for BaseFull {
    fn trial(&mut self, ctx: &Ctx, rng: &mut fastrand::Rng) -> anyhow::Result<String> {
        let size = rng.u64(256 * 1024..self.set_bytes * 9 / 10);
        let mount = Tmpfs::mount(size)?;
        let url = mount.path().join("repo").display().to_string();
        let ended = process::run(&mut base_backup(ctx, &self.source, &url), "pg-base-backup")?;
        let line = expect_no_space(&ended.run, "pg-base-backup", mount.path())
            .with_context(|| format!("a {} KiB repository filesystem", size >> 10))?;
        let repo = local_repo(&url);
        let complete = repo.complete_sets(Kind::Base)?;
        anyhow::ensure!(
            complete.is_empty(),
            "a set looks complete after the failure: {}",
            complete[0].id
        );
        mount.resize(self.set_bytes * 4)?;
        process::run_ok(
            &mut base_backup(ctx, &self.source, &url),
            "the run with room",
        )?;
        anyhow::ensure!(
            repo.complete_sets(Kind::Base)?.len() == 1,
            "the run with room left no complete set"
        );
        checks::validate(ctx, &repo, Kind::Base)?;
        Ok(format!(
            "{} KiB of a {} KiB set: \"{line}\"; with room: ok",
            size >> 10,
            self.set_bytes >> 10
        ))
    }
}

/// A [`Repo`] on an existing local path.
fn local_repo(path: &str) -> Repo {
    Repo::at_local(path)
}

/// A cluster archiving onto a tmpfs repository that holds one base backup.
struct WalFull {
    // Dropped in this order: the server stops before its repository is unmounted.
    pg: PgCluster,
    repo: Repo,
    mount: Tmpfs,
}

const WAL_TMPFS: u64 = 48 << 20;

impl WalFull {
    fn new(ctx: &Ctx) -> anyhow::Result<WalFull> {
        let mount = Tmpfs::mount(WAL_TMPFS)?;
        let url = mount.path().join("repo").display().to_string();
        let pg = PgCluster::start_with(
            PgOptions::default()
                .setting("archive_mode", "on")
                .setting(
                    "archive_command",
                    &format!(
                        "'{} push %p --backup-dir {url} -q'",
                        ctx.tool_path("wal-archive").display()
                    ),
                )
                .setting("archive_timeout", "0"),
        );
        pg.create_database(sources::APP_DB);
        sources::fill_app(&pg, 1)?;
        sql::switch_wal_and_wait(&pg, Duration::from_secs(60))?;
        let mut cmd = ctx.tool("pg-base-backup");
        cmd.envs(pg.env()).args([
            "--backup-dir",
            &url,
            "--wal-method",
            "archive",
            "--compress",
            "zstd",
        ]);
        process::run_ok(&mut cmd, "pg-base-backup")?;
        Ok(WalFull {
            mount,
            pg,
            repo: local_repo(&url),
        })
    }

    fn archiver(&self) -> anyhow::Result<(u64, String)> {
        let row = sql::query(
            &self.pg,
            "postgres",
            "SELECT failed_count || ' ' || coalesce(last_archived_wal, '') FROM pg_stat_archiver",
        )?;
        let (failed, last) = row.split_once(' ').unwrap_or((&row, ""));
        Ok((failed.parse()?, last.to_string()))
    }
}

impl Scenario for WalFull {
    fn trial(&mut self, ctx: &Ctx, rng: &mut fastrand::Rng) -> anyhow::Result<String> {
        let (failed_before, _) = self.archiver()?;
        let leave = rng.u64(0..16 * 1024);
        let filler = self.mount.path().join("filler");
        fill(&filler, leave)?;
        let full = self.while_full(ctx, failed_before);
        std::fs::remove_file(&filler)?;
        // Freed, whatever happened while full: the next trial starts from a clean archive.
        let freed = self.after_freed(ctx, failed_before);
        let (segment, line) = match full {
            Ok(found) => found,
            Err(e) => match freed {
                Ok(_) => anyhow::bail!("{e:#} (once freed, the archive caught up with no gap)"),
                Err(f) => anyhow::bail!("{e:#}; once freed: {f:#}"),
            },
        };
        let (last, failures) = freed?;
        Ok(format!(
            "{leave} bytes left: {segment} refused (\"{line}\"), {failures} archiver failures; freed: archived through {last}, verify ok"
        ))
    }
}

impl WalFull {
    /// Once space is freed: a new switch wakes the archiver, which must archive everything
    /// with no gap, having counted the failures. Returns the last segment and the failures.
    fn after_freed(&self, ctx: &Ctx, failed_before: u64) -> anyhow::Result<(String, u64)> {
        let last = sql::switch_wal_and_wait(&self.pg, Duration::from_secs(120))
            .context("the archiver did not catch up once space was freed")?;
        let (failed_after, _) = self.archiver()?;
        anyhow::ensure!(
            failed_after > failed_before,
            "pg_stat_archiver counted no failure while the disk was full"
        );
        let mut cmd = ctx.tool("wal-archive");
        self.repo.apply(&mut cmd).args([
            "verify",
            "--backup-dir",
            &self.repo.url,
            "--output",
            "json",
        ]);
        process::run_ok(&mut cmd, "wal-archive verify").context("after space was freed")?;
        Ok((last, failed_after - failed_before))
    }

    /// With the disk full: new WAL fails to archive, PostgreSQL keeps it, and a push by hand
    /// says why in one line. Returns the segment and that line.
    fn while_full(&self, ctx: &Ctx, failed_before: u64) -> anyhow::Result<(String, String)> {
        sources::fill_app(&self.pg, next_id(&self.pg)?)?;
        sql::query(&self.pg, "postgres", "SELECT pg_switch_wal()")?;
        sql::wait_for(
            &self.pg,
            "postgres",
            "SELECT failed_count FROM pg_stat_archiver",
            |n| n.parse::<u64>().is_ok_and(|n| n > failed_before),
            Duration::from_secs(60),
        )
        .context("archive_command did not fail on the full disk")?;
        let segment = sql::query(
            &self.pg,
            "postgres",
            "SELECT coalesce(last_failed_wal, '') FROM pg_stat_archiver",
        )?;
        let ready = self
            .pg
            .data_dir
            .join(format!("pg_wal/archive_status/{segment}.ready"));
        anyhow::ensure!(
            ready.exists(),
            "PostgreSQL does not keep {segment} for a retry"
        );
        let mut cmd = ctx.tool("wal-archive");
        cmd.arg("push")
            .arg(self.pg.data_dir.join("pg_wal").join(&segment))
            .args(["--backup-dir", &self.repo.url]);
        let ended = process::run(&mut cmd, "wal-archive push")?;
        let line = expect_no_space(&ended.run, "wal-archive", self.mount.path())?;
        let mut cmd = ctx.tool("wal-archive");
        cmd.args(["list", "--backup-dir", &self.repo.url, "--output", "json"]);
        let listed = process::run_ok(&mut cmd, "wal-archive list")?;
        anyhow::ensure!(
            !listed
                .run
                .records("wal_file")
                .iter()
                .any(|r| r["name"] == segment.as_str()),
            "{segment} is listed in the archive although its push failed"
        );
        Ok((segment, line))
    }
}

fn next_id(pg: &PgCluster) -> anyhow::Result<i64> {
    Ok(sql::query(
        pg,
        sources::APP_DB,
        "SELECT coalesce(max(id), 0) + 1 FROM customers",
    )?
    .parse()?)
}

/// pitr-restore into a target filesystem that another writer fills mid-extraction.
struct PitrFull {
    source: Rc<Cluster>,
    repo: Repo,
    /// Bytes of a restored data directory, and how long the extraction takes.
    raw_bytes: u64,
    length: Duration,
}

impl PitrFull {
    fn new(ctx: &Ctx) -> anyhow::Result<PitrFull> {
        let source = ctx.shared("cluster:base", || Cluster::with_app(PgOptions::default()))?;
        let repo = ctx.fresh_repo(Backend::Local, "pitr-full")?;
        let mut cmd = ctx.tool("pg-base-backup");
        cmd.envs(source.pg.env()).args(["--backup-dir", &repo.url]);
        process::run_ok(&mut cmd, "pg-base-backup")?;
        let scratch = db_tempdir("fc-pitr-size-");
        let pgdata = scratch.path().join("pgdata");
        let ended = process::run_ok(&mut restore(ctx, &repo, &pgdata, None), "pitr-restore")?;
        let raw_bytes = walk_size(&pgdata);
        Ok(PitrFull {
            source,
            repo,
            raw_bytes,
            length: ended.elapsed,
        })
    }
}

fn restore(ctx: &Ctx, repo: &Repo, pgdata: &Path, start: Option<(u16, &Path)>) -> Command {
    let mut cmd = ctx.tool("pitr-restore");
    cmd.args([
        "--backup-dir",
        &repo.url,
        "--target",
        "immediate",
        "--pgdata",
    ])
    .arg(pgdata)
    .args(["--yes", "--output", "json", "--timeout", "120s"]);
    if let Some((port, socket_dir)) = start {
        cmd.args(["--start", "--port", &port.to_string(), "--socket-dir"])
            .arg(socket_dir);
    }
    cmd
}

fn walk_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Files under `dir` (none when it does not exist).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            } else {
                found.push(e.path());
            }
        }
    }
    found
}

impl Scenario for PitrFull {
    fn trial(&mut self, ctx: &Ctx, rng: &mut fastrand::Rng) -> anyhow::Result<String> {
        // Room for the tool's own check (raw size + 10%), then filled by someone else.
        let mount = Tmpfs::mount(self.raw_bytes * 3 / 2 + (4 << 20))?;
        let pgdata = mount.path().join("pgdata");
        // Within the first half: the rest of a run is checks and syncing, not extraction.
        let at = checks::kill_moment(rng, self.length / 2);
        let running = Running::spawn(&mut restore(ctx, &self.repo, &pgdata, None), "pitr-restore")?;
        let started = Instant::now();
        std::thread::sleep(at.saturating_sub(started.elapsed()));
        let filler = mount.path().join("filler");
        fill(&filler, 0)?;
        let ended = running.wait(process::RUN_LIMIT)?;
        let outcome = if ended.run.code == 0 {
            format!(
                "the restore ended before the disk filled at {:.2}s",
                at.as_secs_f64()
            )
        } else {
            let line = expect_no_space(&ended.run, "pitr-restore", mount.path())
                .with_context(|| format!("filled at {:.2}s", at.as_secs_f64()))?;
            let left = files_under(&pgdata);
            anyhow::ensure!(
                left.is_empty(),
                "{} files left in --pgdata after the failure, e.g. {}",
                left.len(),
                left[0].display()
            );
            format!(
                "filled at {:.2}s: \"{line}\", --pgdata emptied",
                at.as_secs_f64()
            )
        };
        std::fs::remove_file(&filler)?;
        let port = test_support::free_port();
        let socket = db_tempdir("fc-pitr-socket-");
        let mut cmd = restore(ctx, &self.repo, &pgdata, Some((port, socket.path())));
        if ended.run.code == 0 {
            cmd.arg("--force");
        }
        let rerun = process::run(&mut cmd, "pitr-restore with room")?;
        let server =
            test_support::pg::DataDirServer::new(pgdata, port, socket.path().to_path_buf());
        rerun.ok("pitr-restore with room")?;
        sql::expect_tables(
            &server,
            sources::APP_DB,
            &sources::APP_TABLES,
            &self.source.digests,
        )?;
        drop(server);
        Ok(format!("{outcome}; with room: tables equal"))
    }
}

//! SIGKILL of `wal-archive push` (the archive_command) at a random moment. Real segments are
//! staged once by a cluster whose archive_command copies them aside. Each trial, in a fresh
//! repository: push two segments (the second timed), kill the push of a third within that
//! length, then every file the archive lists must fetch back byte for byte,
//! `validate-backups` must pass on the WAL, and pushing the third segment again (as
//! PostgreSQL retries) must succeed and fetch back intact.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use anyhow::Context as _;
use common::repo::Kind;
use tempfile::TempDir;
use test_support::os_user::db_tempdir;
use test_support::pg::{PgCluster, PgOptions};

use super::Scenario;
use crate::context::{Backend, Ctx, Repo};
use crate::process::{self, Running};
use crate::{checks, sql};

/// Segments copied aside by a cluster's archive_command.
pub struct Staged {
    _pg: PgCluster,
    dir: TempDir,
    pub segments: Vec<String>,
}

impl Staged {
    /// A cluster that copies each finished segment into a directory, and `count` of them.
    pub fn new(count: usize) -> anyhow::Result<Staged> {
        let dir = db_tempdir("fc-wal-staging-");
        let pg = PgCluster::start_with(PgOptions::default().setting("archive_mode", "on").setting(
            "archive_command",
            &format!("'cp %p {}/%f'", dir.path().display()),
        ));
        sql::query(&pg, "postgres", "CREATE TABLE w (id int, v text)")?;
        for n in 0..count {
            sql::query(
                &pg,
                "postgres",
                &format!(
                    "INSERT INTO w SELECT g, md5(g::text) FROM generate_series(1, {}) g",
                    1000 * (n + 1)
                ),
            )?;
            sql::switch_wal_and_wait(&pg, Duration::from_secs(60))?;
        }
        let mut segments: Vec<String> = std::fs::read_dir(dir.path())?
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.len() == 24 && n.chars().all(|c| c.is_ascii_hexdigit()))
            .collect();
        segments.sort();
        anyhow::ensure!(
            segments.len() >= count,
            "only {} segments were staged",
            segments.len()
        );
        Ok(Staged {
            _pg: pg,
            dir,
            segments,
        })
    }

    pub fn path(&self, segment: &str) -> PathBuf {
        self.dir.path().join(segment)
    }
}

struct KillPush {
    staged: Rc<Staged>,
    backend: Backend,
}

pub fn make(ctx: &Ctx, backend: Backend) -> anyhow::Result<Box<dyn Scenario>> {
    Ok(Box::new(KillPush {
        staged: ctx.shared("wal:staged", || Staged::new(3))?,
        backend,
    }))
}

fn push(ctx: &Ctx, repo: &Repo, file: &Path) -> std::process::Command {
    let mut cmd = ctx.tool("wal-archive");
    repo.apply(&mut cmd)
        .arg("push")
        .arg(file)
        .args(["--backup-dir", &repo.url]);
    cmd
}

/// Fetches `segment` from the archive and fails unless it equals `original` byte for byte.
fn fetch_equals(ctx: &Ctx, repo: &Repo, segment: &str, original: &Path) -> anyhow::Result<()> {
    let scratch = db_tempdir("fc-fetch-");
    let dest = scratch.path().join(segment);
    let mut cmd = ctx.tool("wal-archive");
    repo.apply(&mut cmd)
        .args(["fetch", segment])
        .arg(&dest)
        .args(["--backup-dir", &repo.url]);
    process::run_ok(&mut cmd, &format!("wal-archive fetch {segment}"))?;
    let got = std::fs::read(&dest).with_context(|| format!("read {}", dest.display()))?;
    let want = std::fs::read(original)?;
    anyhow::ensure!(
        got == want,
        "{segment} fetched back differs from what was pushed ({} bytes, pushed {})",
        got.len(),
        want.len()
    );
    Ok(())
}

/// The names `wal-archive list` shows.
fn listed(ctx: &Ctx, repo: &Repo) -> anyhow::Result<Vec<String>> {
    let mut cmd = ctx.tool("wal-archive");
    repo.apply(&mut cmd)
        .args(["list", "--backup-dir", &repo.url, "--output", "json"]);
    let ended = process::run_ok(&mut cmd, "wal-archive list")?;
    Ok(ended
        .run
        .records("wal_file")
        .iter()
        .filter_map(|r| r["name"].as_str().map(str::to_string))
        .collect())
}

impl Scenario for KillPush {
    fn trial(&mut self, ctx: &Ctx, rng: &mut fastrand::Rng) -> anyhow::Result<String> {
        let repo = ctx.fresh_repo(self.backend, "wal")?;
        let [first, timed, third] = [0, 1, 2].map(|n| &self.staged.segments[n]);
        process::run_ok(
            &mut push(ctx, &repo, &self.staged.path(first)),
            "the first push",
        )?;
        // A push into an archive that already exists sets the length.
        let pushed = process::run_ok(
            &mut push(ctx, &repo, &self.staged.path(timed)),
            "the second push",
        )?;
        let at = checks::kill_moment(rng, pushed.elapsed);
        let killed = Running::spawn(
            &mut push(ctx, &repo, &self.staged.path(third)),
            "the killed push",
        )?
        .kill_at(at)?;
        let note = killed.kill_note();
        anyhow::ensure!(
            killed.orphans.is_empty(),
            "{note}: children outlived it: {}",
            killed.orphans.join("; ")
        );
        if killed.killed_at.is_none() {
            killed.ok("the push meant to be killed (it ended first)")?;
        }
        let names = listed(ctx, &repo).with_context(|| format!("after the kill ({note})"))?;
        anyhow::ensure!(
            names.contains(first) && names.contains(timed),
            "{note}: the segments pushed before, {first} and {timed}, are not both listed: {names:?}"
        );
        for name in &names {
            anyhow::ensure!(
                self.staged.segments.contains(name),
                "{note}: the archive lists {name}, which was never pushed"
            );
            fetch_equals(ctx, &repo, name, &self.staged.path(name))
                .with_context(|| format!("after the kill ({note})"))?;
        }
        checks::validate(ctx, &repo, Kind::Wal)
            .with_context(|| format!("after the kill ({note})"))?;
        process::run_ok(
            &mut push(ctx, &repo, &self.staged.path(third)),
            "the retried push",
        )
        .with_context(|| format!("after the kill ({note})"))?;
        fetch_equals(ctx, &repo, third, &self.staged.path(third))?;
        Ok(format!(
            "{note} of a {:.2}s push; {} listed file(s) fetched intact; retry ok",
            pushed.elapsed.as_secs_f64(),
            names.len()
        ))
    }
}

//! pitr-restore against real clusters: back up with pg-base-backup and wal-archive, restore,
//! start, and look at the data that came back.

mod chains;
mod delta;
mod encryption;
mod encryption_chains;
mod failures;
mod pgbench;
mod restore_points;
mod s3;
mod selection;
mod targets;

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Output;

use tempfile::TempDir;
use test_support::os_user::{as_db_user, db_tempdir};
use test_support::pg::{archiving_options, DataDirServer, PgCluster};
use test_support::tool_bin;

/// A source cluster archiving into its own repository.
pub struct Source {
    pub pg: PgCluster,
    pub backups: TempDir,
}

impl Source {
    pub fn start() -> Source {
        let backups = db_tempdir("pitr-repo-");
        let pg = PgCluster::start_with(archiving_options(backups.path()));
        Source { pg, backups }
    }

    /// Takes a base backup, returning its JSON summary.
    pub fn base_backup(&self, extra: &[&str]) -> serde_json::Value {
        let mut cmd = self.pg.command(tool_bin("pg-base-backup"));
        cmd.arg("--backup-dir")
            .arg(self.backups.path())
            .args(["--output", "json", "--no-retention"])
            .args(extra);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "pg-base-backup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        last_json(&out)
    }

    /// The server's clock, as RFC 3339.
    pub fn now(&self) -> String {
        self.pg
            .psql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
    }
}

pub fn last_json(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_else(|| {
        panic!(
            "no output; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    serde_json::from_str(line).expect("JSON line")
}

/// A restore target directory and, once started, its server.
pub struct Restore {
    pub dir: TempDir,
    pub pgdata: PathBuf,
    pub port: u16,
}

impl Restore {
    pub fn in_tempdir() -> Restore {
        let dir = db_tempdir("pitr-target-");
        let pgdata = dir.path().join("pgdata");
        Restore {
            pgdata,
            port: test_support::free_port(),
            dir,
        }
    }

    /// Runs pitr-restore as the database user with `--start`; on success returns the JSON
    /// summary and the running server.
    pub fn run(
        &self,
        backups: impl AsRef<OsStr>,
        args: &[&str],
    ) -> (Output, Option<DataDirServer>) {
        let out = self.run_only(backups, args, true);
        let server = || {
            DataDirServer::new(
                self.pgdata.clone(),
                self.port,
                self.dir.path().to_path_buf(),
            )
        };
        let running = out.status.success().then(server);
        if !out.status.success() {
            // A failed recovery may leave a server behind; make sure it is stopped.
            drop(server());
        }
        (out, running)
    }

    pub fn run_only(&self, backups: impl AsRef<OsStr>, args: &[&str], start: bool) -> Output {
        self.run_with(backups, args, start, &[])
    }

    /// Like [`Restore::run_only`] with extra environment (the S3 credentials).
    pub fn run_with(
        &self,
        backups: impl AsRef<OsStr>,
        args: &[&str],
        start: bool,
        env: &[(String, String)],
    ) -> Output {
        let mut cmd = std::process::Command::new(tool_bin("pitr-restore"));
        cmd.arg("--backup-dir")
            .arg(backups)
            .arg("--pgdata")
            .arg(&self.pgdata)
            .args(["--output", "json", "--yes", "--timeout", "120s"])
            .args(args)
            .envs(env.iter().cloned());
        if start {
            cmd.arg("--start")
                .args(["--port", &self.port.to_string()])
                .arg("--socket-dir")
                .arg(self.dir.path());
        }
        as_db_user(&mut cmd).output().unwrap()
    }

    /// Like [`Restore::run`], asserting success.
    pub fn ok(
        &self,
        backups: impl AsRef<OsStr>,
        args: &[&str],
    ) -> (serde_json::Value, DataDirServer) {
        let (out, server) = self.run(backups, args);
        assert!(
            out.status.success(),
            "pitr-restore {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (last_json(&out), server.expect("started"))
    }
}

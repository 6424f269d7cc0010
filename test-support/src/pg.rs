//! Throwaway PostgreSQL 15 clusters: initdb into a temp dir, a free port on 127.0.0.1, the
//! Unix socket in the temp dir, caller-chosen settings; stopped and removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

use crate::os_user::{as_db_user, db_tempdir};

/// Where the PostgreSQL 15 server binaries live (Debian's layout).
pub const PG_BIN: &str = common::pgbin::DEFAULT_PG_BIN_DIR;

/// Path of a PostgreSQL program.
pub fn pg_bin(program: &str) -> PathBuf {
    let path = Path::new(PG_BIN).join(program);
    assert!(
        path.exists(),
        "{} not found: install PostgreSQL 15 (scripts/install-deps.sh)",
        path.display()
    );
    path
}

/// Settings for a new cluster.
#[derive(Debug, Clone, Default)]
pub struct PgOptions {
    /// `postgresql.conf` lines, e.g. `("wal_level", "logical")`. Values are written as given,
    /// so quote strings: `("archive_command", "'/bin/true'")`.
    pub settings: Vec<(String, String)>,
    /// Password authentication for TCP connections (scram) with this superuser password.
    pub password: Option<String>,
    /// initdb --data-checksums.
    pub data_checksums: bool,
}

impl PgOptions {
    pub fn setting(mut self, key: &str, value: &str) -> Self {
        self.settings.push((key.to_string(), value.to_string()));
        self
    }
}

/// A running throwaway cluster.
#[derive(Debug)]
pub struct PgCluster {
    dir: TempDir,
    /// Port and socket directory (usable as PGHOST); psql and commands come from it.
    endpoint: Endpoint,
    pub data_dir: PathBuf,
    running: bool,
}

impl std::ops::Deref for PgCluster {
    type Target = Endpoint;
    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl PgCluster {
    /// initdb + start with the defaults (wal_level replica, trust auth on the socket).
    pub fn start() -> PgCluster {
        PgCluster::start_with(PgOptions::default())
    }

    pub fn start_with(options: PgOptions) -> PgCluster {
        let dir = db_tempdir("pgtest-");
        let data_dir = dir.path().join("data");
        let socket_dir = dir.path().to_path_buf();
        let mut initdb = Command::new(pg_bin("initdb"));
        initdb
            .arg("-D")
            .arg(&data_dir)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .args(["--locale=C"]);
        if let Some(password) = &options.password {
            let pwfile = dir.path().join("pwfile");
            std::fs::write(&pwfile, password).unwrap();
            crate::os_user::give_to_db_user(&pwfile);
            initdb
                .arg(format!("--pwfile={}", pwfile.display()))
                .arg("--auth-host=scram-sha-256")
                .arg("--auth-local=scram-sha-256");
        }
        if options.data_checksums {
            initdb.arg("--data-checksums");
        }
        run_checked(as_db_user(&mut initdb), "initdb");
        let port = crate::free_port();
        let mut conf = format!(
            "\n# test-support\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\nmax_wal_senders = 10\nmax_replication_slots = 10\nlogging_collector = off\n",
            socket_dir.display()
        );
        for (key, value) in &options.settings {
            conf.push_str(&format!("{key} = {value}\n"));
        }
        append(&data_dir.join("postgresql.conf"), &conf);
        // Replication connections over the socket and loopback, for pg_basebackup.
        let method = if options.password.is_some() {
            "scram-sha-256"
        } else {
            "trust"
        };
        append(
            &data_dir.join("pg_hba.conf"),
            &format!(
                "local replication all {method}\nhost replication all 127.0.0.1/32 {method}\n"
            ),
        );
        let mut cluster = PgCluster {
            dir,
            endpoint: Endpoint { socket_dir, port },
            data_dir,
            running: false,
        };
        cluster.pg_ctl_start();
        cluster
    }

    /// The temporary directory holding the cluster (data/, socket, log).
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn pg_ctl_start(&mut self) {
        let mut cmd = Command::new(pg_bin("pg_ctl"));
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(self.log_file())
            .args(["-w", "-t", "60", "start"]);
        let out = as_db_user(&mut cmd).output().expect("run pg_ctl start");
        if !out.status.success() {
            let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
            panic!(
                "pg_ctl start failed: {}\n{}\nserver log:\n{log}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.running = true;
    }

    /// Stops the server (fast shutdown), keeping its files.
    pub fn stop(&mut self) {
        if self.running {
            let mut cmd = Command::new(pg_bin("pg_ctl"));
            cmd.arg("-D")
                .arg(&self.data_dir)
                .args(["-w", "-t", "60", "-m", "fast", "stop"]);
            run_checked(as_db_user(&mut cmd), "pg_ctl stop");
            self.running = false;
        }
    }

    /// Starts it again after [`PgCluster::stop`].
    pub fn restart(&mut self) {
        self.stop();
        self.pg_ctl_start();
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            let mut cmd = Command::new(pg_bin("pg_ctl"));
            cmd.arg("-D")
                .arg(&self.data_dir)
                .args(["-w", "-t", "30", "-m", "immediate", "stop"]);
            let _ = as_db_user(&mut cmd).output();
        }
    }
}

/// Runs a command, panicking with its output when it fails.
pub fn run_checked(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    file.write_all(text.as_bytes()).unwrap();
}

/// Settings that archive WAL with the workspace's `wal-archive push` into `backup_dir`
/// (which the database user must be able to write: see [`crate::os_user::db_tempdir`]).
pub fn archiving_options(backup_dir: &Path) -> PgOptions {
    archiving_to(&backup_dir.display().to_string(), None)
}

/// Settings that archive WAL with `wal-archive push` into the repository `backup_dir` (a path
/// or an s3:// URL), with `--config FILE` when the server needs settings of its own (the S3
/// credentials: see [`crate::s3::S3Env::config_file`]).
pub fn archiving_to(backup_dir: &str, config: Option<&Path>) -> PgOptions {
    let word = |text: &str| common::pgconf::command_word(text).expect("a path without NUL");
    let wal_archive = word(&crate::tool_bin("wal-archive").display().to_string());
    let config = config
        .map(|c| format!(" --config {}", word(&c.display().to_string())))
        .unwrap_or_default();
    let command = format!(
        "{wal_archive} push %p --backup-dir {}{config} -q",
        word(backup_dir)
    );
    PgOptions::default()
        .setting("archive_mode", "on")
        .setting("archive_command", &common::pgconf::quote_value(&command))
        .setting("archive_timeout", "0")
}

impl PgCluster {
    /// Switches to a new WAL segment and waits until the one that held everything so far is
    /// archived (by archive_command) — so a restore can replay up to now.
    pub fn switch_wal_and_wait_archived(&self) {
        let current = self.psql("SELECT pg_walfile_name(pg_current_wal_lsn())");
        self.psql("SELECT pg_switch_wal()");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let archived =
                self.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver");
            if archived.len() >= 24 && archived[..24] >= *current {
                return;
            }
            let failed = self.psql("SELECT coalesce(last_failed_wal, '') FROM pg_stat_archiver");
            assert!(
                std::time::Instant::now() < deadline,
                "{current} not archived within 60s (last archived '{archived}', last failed '{failed}')"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// A server started by someone else on a data directory (a restored cluster): queried over
/// its socket, stopped on drop.
#[derive(Debug)]
pub struct DataDirServer {
    pub data_dir: PathBuf,
    endpoint: Endpoint,
}

impl DataDirServer {
    pub fn new(data_dir: PathBuf, port: u16, socket_dir: PathBuf) -> DataDirServer {
        DataDirServer {
            data_dir,
            endpoint: Endpoint { socket_dir, port },
        }
    }
}

impl std::ops::Deref for DataDirServer {
    type Target = Endpoint;
    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

/// SQL that psql could not run, with what it said.
#[derive(Debug, Clone)]
pub struct PsqlError {
    pub stderr: String,
}

impl std::fmt::Display for PsqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "psql failed: {}", self.stderr.trim_end())
    }
}

impl std::error::Error for PsqlError {}

/// A server's Unix socket and port: how clients and tools reach it as `postgres`.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub socket_dir: PathBuf,
    pub port: u16,
}

impl Endpoint {
    /// PGHOST (socket dir), PGPORT, PGUSER, PGDATABASE.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("PGHOST".into(), self.socket_dir.display().to_string()),
            ("PGPORT".into(), self.port.to_string()),
            ("PGUSER".into(), "postgres".into()),
            ("PGDATABASE".into(), "postgres".into()),
        ]
    }

    /// A command with this libpq environment, run as the database user.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.envs(self.env());
        as_db_user(&mut cmd);
        cmd
    }

    fn psql_command(&self, db: &str, sql: &str) -> Command {
        let mut cmd = self.command(pg_bin("psql"));
        cmd.args(["-X", "-v", "ON_ERROR_STOP=1", "-At", "-d", db, "-c", sql]);
        cmd
    }

    /// Runs SQL with psql in database `db`, returning unaligned tuples-only output; panics
    /// on error with psql's message.
    pub fn psql_db(&self, db: &str, sql: &str) -> String {
        let out = run_checked(&mut self.psql_command(db, sql), "psql");
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }

    /// [`Endpoint::psql_db`] on the `postgres` database.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_db("postgres", sql)
    }

    /// Creates a database and returns its name.
    pub fn create_database(&self, name: &str) -> String {
        self.psql(&format!("CREATE DATABASE \"{name}\""));
        name.to_string()
    }

    /// Runs SQL that may fail, returning psql's stderr on failure.
    pub fn try_psql(&self, sql: &str) -> Result<String, PsqlError> {
        let out = self
            .psql_command("postgres", sql)
            .output()
            .expect("run psql");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
        } else {
            Err(PsqlError {
                stderr: String::from_utf8_lossy(&out.stderr).to_string(),
            })
        }
    }
}

impl Drop for DataDirServer {
    fn drop(&mut self) {
        let mut cmd = Command::new(pg_bin("pg_ctl"));
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-w", "-t", "30", "-m", "immediate", "stop"]);
        let _ = as_db_user(&mut cmd).output();
    }
}

//! Shared set-up: a logical-decoding cluster with an application database, a publication,
//! a pgoutput and a test_decoding slot, and a way to run the tool against it with the
//! repository in a local directory or on the test S3 service.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tempfile::TempDir;
use test_support::os_user::db_tempdir;
use test_support::pg::{PgCluster, PgOptions};
use test_support::s3::S3Env;
use test_support::unique_name;

/// The tool under test.
pub fn tool() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cdc-slot-tool"))
}

pub use test_support::run::Run;

/// Runs `cmd` to completion with stdin closed.
pub fn run(cmd: &mut Command) -> Run {
    Run::of(cmd)
}

/// A logical-decoding cluster with one application database and a backup directory.
pub struct Lab {
    pub cluster: PgCluster,
    pub db: String,
    pub backup_dir: TempDir,
    /// Where [`Lab::tool`] points BACKUP_DIR.
    pub repo: Repo,
}

/// The repository the lab's tool runs use.
pub enum Repo {
    /// [`Lab::backup_dir`].
    Local,
    /// A fresh prefix on the test S3 service; the credentials go into the tool's environment.
    S3 { url: String, s3: S3Env },
}

/// Names used by [`Lab::with_cdc`].
pub const PGOUTPUT_SLOT: &str = "orders_pgoutput";
pub const DECODING_SLOT: &str = "orders_decoding";
pub const PUBLICATION: &str = "orders_pub";
pub const FILTERED_PUBLICATION: &str = "orders_big";

impl Lab {
    /// A fresh cluster (wal_level = logical) and an empty application database.
    pub fn new() -> Lab {
        Lab::on(PgCluster::start_with(
            PgOptions::default().setting("wal_level", "logical"),
        ))
    }

    /// An application database on an existing cluster.
    pub fn on(cluster: PgCluster) -> Lab {
        Lab::with_parts(cluster, db_tempdir("slots-backup-"))
    }

    /// An application database on `cluster`, backing up into `backup_dir` (which may be
    /// the cluster's WAL archive repository too).
    pub fn with_parts(cluster: PgCluster, backup_dir: TempDir) -> Lab {
        let db = cluster.create_database(&unique_name("app"));
        Lab {
            cluster,
            db,
            backup_dir,
            repo: Repo::Local,
        }
    }

    /// The same lab with its repository on the test S3 service (a fresh `s3://` prefix).
    pub fn on_s3(mut self, name: &str) -> Lab {
        let s3 = test_support::s3::env();
        self.repo = Repo::S3 {
            url: s3.url(name),
            s3,
        };
        self
    }

    /// BACKUP_DIR of the lab's tool runs: the local directory or the S3 URL.
    pub fn repo_arg(&self) -> String {
        match &self.repo {
            Repo::Local => self.backup_dir.path().display().to_string(),
            Repo::S3 { url, .. } => url.clone(),
        }
    }

    /// Adds the S3 credentials and endpoint to `cmd` when the repository is on S3.
    pub fn apply_s3<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        if let Repo::S3 { s3, .. } = &self.repo {
            s3.apply(cmd);
        }
        cmd
    }

    /// A file of the set a backup summary names (its `path`: a directory or an S3 URL).
    pub fn set_file(&self, backup: &Value, file: &str) -> Vec<u8> {
        let set = backup["path"].as_str().expect("the summary names the set");
        match &self.repo {
            Repo::Local => std::fs::read(Path::new(set).join(file))
                .unwrap_or_else(|e| panic!("read {file} of {set}: {e}")),
            Repo::S3 { url, s3 } => {
                let prefix = set
                    .strip_prefix(&format!("{url}/"))
                    .unwrap_or_else(|| panic!("set {set} is not under {url}"));
                s3.store(url)
                    .read(&format!("{prefix}/{file}"))
                    .unwrap_or_else(|e| panic!("read {file} of {set}: {e}"))
            }
        }
    }

    /// The `slots.json` of the set a backup summary names.
    pub fn saved_inventory(&self, backup: &Value) -> Value {
        serde_json::from_slice(&self.set_file(backup, "slots.json")).expect("slots.json is JSON")
    }

    /// Table `orders`, publication for it and a filtered one (column list, row filter), a
    /// pgoutput slot and a test_decoding slot; some changes consumed by both slots.
    pub fn with_cdc() -> Lab {
        let lab = Lab::new();
        lab.setup_cdc();
        lab
    }

    /// Returns where the test_decoding slot was created.
    pub fn setup_cdc(&self) -> String {
        self.sql(&format!(
            "CREATE TABLE orders (id int PRIMARY KEY, item text, total numeric);
             CREATE PUBLICATION {PUBLICATION} FOR TABLE orders;
             CREATE PUBLICATION {FILTERED_PUBLICATION} FOR TABLE orders (id, total)
                 WHERE (total > 100) WITH (publish = 'insert, update');"
        ));
        self.sql(&format!(
            "SELECT pg_create_logical_replication_slot('{PGOUTPUT_SLOT}', 'pgoutput')"
        ));
        let created = self.sql(&format!(
            "SELECT lsn FROM pg_create_logical_replication_slot('{DECODING_SLOT}', 'test_decoding')"
        ));
        self.insert_orders(1, 20);
        assert_eq!(
            self.consume_decoding(DECODING_SLOT).len(),
            22,
            "BEGIN, 20 rows, COMMIT"
        );
        assert!(self.consume_pgoutput(PGOUTPUT_SLOT) > 0);
        created
    }

    /// Runs SQL in the application database.
    pub fn sql(&self, sql: &str) -> String {
        self.cluster.psql_db(&self.db, sql)
    }

    pub fn insert_orders(&self, from: i32, to: i32) {
        self.sql(&format!(
            "INSERT INTO orders SELECT g, 'item ' || g, g * 10 FROM generate_series({from}, {to}) g"
        ));
    }

    /// Consumes everything pending on a test_decoding slot; returns the change lines.
    pub fn consume_decoding(&self, slot: &str) -> Vec<String> {
        let out = self.sql(&format!(
            "SELECT data FROM pg_logical_slot_get_changes('{slot}', NULL, NULL)"
        ));
        out.lines().map(str::to_string).collect()
    }

    /// Consumes everything pending on a pgoutput slot; returns how many messages it got.
    pub fn consume_pgoutput(&self, slot: &str) -> usize {
        self.sql(&format!(
            "SELECT count(*) FROM pg_logical_slot_get_binary_changes('{slot}', NULL, NULL,
                 'proto_version', '1', 'publication_names', '{PUBLICATION}')"
        ))
        .parse()
        .unwrap()
    }

    /// `confirmed_flush_lsn` of a slot as text, or "" when the slot does not exist.
    pub fn confirmed_flush(&self, slot: &str) -> String {
        self.cluster.psql(&format!(
            "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"
        ))
    }

    /// `plugin` of a slot, or "" when it does not exist.
    pub fn plugin(&self, slot: &str) -> String {
        self.cluster.psql(&format!(
            "SELECT plugin FROM pg_replication_slots WHERE slot_name = '{slot}'"
        ))
    }

    pub fn publication_exists(&self, name: &str) -> bool {
        self.sql(&format!(
            "SELECT count(*) FROM pg_publication WHERE pubname = '{name}'"
        )) == "1"
    }

    /// Runs the tool as the database OS user against this cluster and repository.
    pub fn tool(&self, args: &[&str]) -> Run {
        self.tool_on(&self.cluster, args)
    }

    /// Runs the tool against another cluster, with this lab's repository.
    pub fn tool_on(&self, cluster: &PgCluster, args: &[&str]) -> Run {
        self.tool_env(cluster.env(), args)
    }

    /// Runs the tool as the database OS user with a libpq environment (`PG*`) and this
    /// lab's repository (with the S3 credentials when it is on S3).
    pub fn tool_env(&self, env: Vec<(String, String)>, args: &[&str]) -> Run {
        let mut cmd = Command::new(tool());
        test_support::os_user::as_db_user(&mut cmd);
        cmd.envs(env)
            .env("BACKUP_DIR", self.repo_arg())
            .env_remove("RUST_LOG")
            .args(args);
        self.apply_s3(&mut cmd);
        run(&mut cmd)
    }

    /// Takes a slot backup and returns its JSON summary.
    pub fn backup(&self) -> Value {
        let run = self.tool(&["backup", "--output", "json"]);
        run.assert_code(0);
        eprintln!("backup stderr: {}", run.stderr);
        run.summary()
    }
}

/// Parses `X/Y` LSN text into a number, for comparisons.
pub fn lsn(text: &str) -> u64 {
    let (high, low) = text
        .split_once('/')
        .unwrap_or_else(|| panic!("not an LSN: '{text}'"));
    (u64::from_str_radix(high, 16).unwrap() << 32) | u64::from_str_radix(low, 16).unwrap()
}

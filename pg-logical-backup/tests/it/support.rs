//! Shared fixtures: a cluster with a test database, a repository (a local directory, or a
//! prefix of the S3 test service), and running the tool.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tempfile::TempDir;
use test_support::os_user::db_tempdir;
use test_support::pg::{PgCluster, PgOptions};
use test_support::s3::S3Env;

/// A cluster, a database on it, and an empty backup repository.
pub struct Env {
    pub pg: PgCluster,
    pub db: String,
    /// The repository, unless it is on S3.
    pub backup_dir: TempDir,
    /// The S3 test service and the repository's URL on it, when the repository is there.
    pub s3: Option<(S3Env, String)>,
}

impl Env {
    pub fn new() -> Env {
        let pg = PgCluster::start_with(PgOptions::default());
        let backup_dir = db_tempdir("pglb-repo-");
        let db = test_support::unique_name("app");
        pg.create_database(&db);
        Env {
            pg,
            db,
            backup_dir,
            s3: None,
        }
    }

    /// Like [`Env::new`], with the repository under a fresh prefix of the S3 test service.
    pub fn on_s3() -> Env {
        let s3 = test_support::s3::env();
        let url = s3.url("pglb");
        Env {
            s3: Some((s3, url)),
            ..Env::new()
        }
    }

    /// Runs SQL in the test database.
    pub fn sql(&self, sql: &str) -> String {
        self.pg.psql_db(&self.db, sql)
    }

    /// The tool, as the database user, pointed at the cluster, the test database and the
    /// backup directory.
    pub fn tool(&self) -> Command {
        let mut cmd = self.pg.command(env!("CARGO_BIN_EXE_pg-logical-backup"));
        cmd.env("PGDATABASE", &self.db)
            .env("BACKUP_NO_PROGRESS", "1")
            .env_remove("PGPASSWORD")
            .env_remove("RETENTION_DAYS");
        match &self.s3 {
            Some((s3, url)) => s3.apply(cmd.env("BACKUP_DIR", url)),
            None => cmd.env("BACKUP_DIR", self.backup_dir.path()),
        };
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(
            self.tool()
                .args(args)
                .output()
                .expect("run pg-logical-backup"),
        )
    }

    /// Takes a backup and returns its summary.
    pub fn backup(&self, args: &[&str]) -> Value {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        let run = self.run(&all);
        run.assert_code(0);
        run.summary()
    }

    /// Directory of a set.
    pub fn set_dir(&self, id: &str) -> PathBuf {
        self.backup_dir.path().join("logical").join(id)
    }

    pub fn manifest(&self, id: &str) -> Value {
        read_json(&self.set_dir(id).join("manifest.json"))
    }

    /// The whole-database dump of a set's (first) database.
    pub fn full_dump(&self, id: &str) -> PathBuf {
        let manifest = self.manifest(id);
        let path = manifest["details"]["databases"][0]["full_dump"]
            .as_str()
            .unwrap();
        self.set_dir(id).join(path)
    }

    /// `restore --target-db <the test's database>`, then `args`.
    pub fn restore_here(&self, args: &[&str]) -> Run {
        let mut all = vec!["restore", "--target-db", self.db.as_str()];
        all.extend_from_slice(args);
        self.run(&all)
    }

    pub fn database_exists(&self, name: &str) -> bool {
        self.pg.psql(&format!(
            "SELECT count(*) FROM pg_database WHERE datname = '{name}'"
        )) == "1"
    }

    /// Set directories present (complete or not).
    pub fn set_dirs(&self) -> Vec<PathBuf> {
        let dir = self.backup_dir.path().join("logical");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .collect()
    }

    pub fn count(&self, db: &str, table: &str) -> u64 {
        self.pg
            .psql_db(db, &format!("SELECT count(*) FROM {table}"))
            .parse()
            .unwrap()
    }
}

pub fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The row count the manifest recorded for `schema.table` of the set's first database.
pub fn manifest_rows(manifest: &Value, schema: &str, table: &str) -> u64 {
    table_entry(manifest, schema, table)["rows"]
        .as_u64()
        .unwrap()
}

pub fn table_entry<'a>(manifest: &'a Value, schema: &str, table: &str) -> &'a Value {
    manifest["details"]["databases"][0]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["schema"] == schema && t["name"] == table)
        .unwrap_or_else(|| panic!("{schema}.{table} not in the manifest"))
}

/// A finished run of the tool.
pub use test_support::run::Run;

/// A few related tables: customers, orders (foreign key to customers, serial id, index),
/// and notes with text that needs escaping.
pub fn create_shop(env: &Env) {
    env.sql(
        r"CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL);
          CREATE TABLE orders (id serial PRIMARY KEY, customer_id int NOT NULL REFERENCES customers(id),
                               amount numeric(10,2) CHECK (amount >= 0));
          CREATE INDEX orders_customer_idx ON orders (customer_id);
          CREATE TABLE notes (id int PRIMARY KEY, body text);
          INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 50) g;
          INSERT INTO orders (customer_id, amount) SELECT 1 + g % 50, g FROM generate_series(1, 300) g;
          INSERT INTO notes VALUES (1, E'line one\nline two\ttab'), (2, 'back\\slash'), (3, NULL);",
    );
}

//! Helpers: a real repository (base backup with archived WAL, logical dump, slot set and topic
//! archive, all taken by the real tools from a real cluster and broker), copied per test so
//! each test can damage its own copy; running validate-backups and reading its JSON.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;
use tempfile::TempDir;
use test_support::os_user::{as_db_user, db_tempdir, give_to_db_user};
use test_support::pg::{archiving_options, run_checked, PgCluster, PgOptions};

pub const BIN: &str = env!("CARGO_BIN_EXE_validate-backups");

/// Records produced into the fixture's topic.
pub const TOPIC_RECORDS: u64 = 300;

pub use test_support::run::Run;

/// What the tests read from validate-backups' check lines.
pub trait Checks {
    /// The `type: check` lines.
    fn checks(&self) -> Vec<Value>;
    /// The aggregate status of a check: fail if any result failed, else pass if any passed,
    /// else skip; panics when the check did not run.
    fn status(&self, check: &str) -> String;
    /// Every message of a check, joined.
    fn message(&self, check: &str) -> String;
    /// Names of the failed checks.
    fn failed(&self) -> Vec<String>;
    /// Asserts that the run failed exactly because of `check` (exit 1, the check failed and
    /// its message mentions `why`).
    fn assert_fails(&self, check: &str, why: &str);
}

impl Checks for Run {
    /// The `type: check` lines.
    fn checks(&self) -> Vec<Value> {
        self.records("check")
    }

    /// The aggregate status of a check: fail if any result failed, else pass if any passed,
    /// else skip; panics when the check did not run.
    fn status(&self, check: &str) -> String {
        let statuses: Vec<String> = self
            .checks()
            .iter()
            .filter(|c| c["check"] == check)
            .map(|c| c["status"].as_str().unwrap().to_string())
            .collect();
        assert!(
            !statuses.is_empty(),
            "check {check} did not run:\n{}",
            self.stdout
        );
        for s in ["fail", "pass", "skip"] {
            if statuses.iter().any(|x| x == s) {
                return s.to_string();
            }
        }
        unreachable!()
    }

    /// Every message of a check, joined.
    fn message(&self, check: &str) -> String {
        self.checks()
            .iter()
            .filter(|c| c["check"] == check)
            .map(|c| c["message"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
            .join(" | ")
    }

    /// Names of the failed checks.
    fn failed(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .checks()
            .iter()
            .filter(|c| c["status"] == "fail")
            .map(|c| c["check"].as_str().unwrap().to_string())
            .collect();
        names.dedup();
        names
    }

    /// Asserts that the run failed exactly because of `check` (exit 1, the check failed and
    /// its message mentions `why`).
    fn assert_fails(&self, check: &str, why: &str) {
        assert_eq!(
            self.code, 1,
            "expected exit 1\n{}\n{}",
            self.stdout, self.stderr
        );
        assert_eq!(self.status(check), "fail", "{}", self.stdout);
        let message = self.message(check);
        assert!(
            message.contains(why),
            "{check} failed, but not because of '{why}': {message}"
        );
    }
}

/// A validate-backups command with a clean environment (no server or repository configured
/// by the caller's environment).
pub fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    for var in [
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGDATABASE",
        "PGPASSWORD",
        "BACKUP_DIR",
        "KAFKA_BOOTSTRAP_SERVERS",
        "KAFKA_CLIENT_CONFIG",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.args(args);
    cmd
}

pub fn finish(out: Output) -> Run {
    Run::from(out)
}

/// validate-backups on `dir` with JSON output and extra arguments.
pub fn validate(dir: &Path, extra: &[&str]) -> Run {
    let mut cmd = command(&["--output", "json"]);
    cmd.arg("--backup-dir").arg(dir).args(extra);
    finish(cmd.output().expect("run validate-backups"))
}

/// Runs a workspace tool as the database user with the cluster's environment and `env`,
/// asserting success.
pub fn tool(pg: &PgCluster, name: &str, args: &[&str], env: &[(String, String)]) -> Output {
    let mut cmd = pg.command(test_support::tool_bin(name));
    cmd.args(args).envs(env.iter().cloned());
    run_checked(&mut cmd, name)
}

/// A cluster that archives into `dir` with wal_level logical (for slots).
pub fn archiving_cluster(dir: &Path) -> PgCluster {
    PgCluster::start_with(archiving_options(dir).setting("wal_level", "logical"))
}

/// Where a fixture repository is built: a local directory or an S3 URL.
pub struct Destination {
    /// The tools' `--backup-dir`.
    pub backup_dir: String,
    /// Extra environment of the tools (the S3 service's settings).
    pub env: Vec<(String, String)>,
    /// Settings of a cluster whose archive_command pushes into the repository.
    pub archiving: PgOptions,
}

impl Destination {
    /// A local directory.
    pub fn local(dir: &Path) -> Destination {
        Destination {
            backup_dir: dir.to_str().unwrap().to_string(),
            env: Vec::new(),
            archiving: archiving_options(dir),
        }
    }
}

/// Builds the good repository: every kind, taken by the real tools.
pub fn build_fixture(dest: &Destination) {
    let env = dest.env.as_slice();
    let mut pg = PgCluster::start_with(dest.archiving.clone().setting("wal_level", "logical"));
    pg.psql(
        "CREATE TABLE items (id int PRIMARY KEY, v text);
         INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 2000) g;",
    );
    pg.switch_wal_and_wait_archived();
    let d = dest.backup_dir.as_str();
    tool(&pg, "pg-base-backup", &["--backup-dir", d, "-q"], env);
    pg.psql("INSERT INTO items SELECT g, 'after' FROM generate_series(2001, 3000) g");
    pg.switch_wal_and_wait_archived();
    pg.psql("INSERT INTO items SELECT g, 'later' FROM generate_series(3001, 3500) g");
    pg.switch_wal_and_wait_archived();
    tool(
        &pg,
        "pg-logical-backup",
        &["--backup-dir", d, "--dbname", "postgres", "-q"],
        env,
    );
    pg.psql("SELECT pg_create_logical_replication_slot('fixture_slot', 'pgoutput')");
    pg.psql("CREATE PUBLICATION fixture_pub FOR TABLE items");
    tool(
        &pg,
        "cdc-slot-tool",
        &["backup", "--backup-dir", d, "-q"],
        env,
    );
    pg.stop();

    let topic = test_support::unique_name("validate_fixture");
    test_support::kafka::block_on(test_support::kafka::create_topic(&topic, 2));
    test_support::kafka::produce_numbered(&topic, &[0, 1], 0, TOPIC_RECORDS / 2);
    let mut cmd = Command::new(test_support::tool_bin("kafka-topic-backup"));
    cmd.args(["--backup-dir", d, "--topic", &topic, "-q"])
        .args(["--bootstrap-servers", &test_support::kafka::bootstrap()])
        .envs(env.iter().cloned());
    run_checked(as_db_user(&mut cmd), "kafka-topic-backup");
}

/// The good repository, built once per test run.
fn fixture() -> &'static Path {
    static FIXTURE: OnceLock<PathBuf> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        // Fixtures of earlier runs.
        if let Ok(entries) = std::fs::read_dir(&root) {
            for e in entries.flatten() {
                if e.file_name()
                    .to_string_lossy()
                    .starts_with("validate-fixture-")
                {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = root.join(format!("validate-fixture-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        give_to_db_user(&dir);
        build_fixture(&Destination::local(&dir));
        dir
    })
}

/// A private copy of the good repository (owned by the database user, like the original).
pub fn good_repo() -> (TempDir, PathBuf) {
    let holder = db_tempdir("validate-repo-");
    let copy = holder.path().join("backups");
    let out = Command::new("cp")
        .arg("-a")
        .arg(fixture())
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cp -a: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (holder, copy)
}

/// An empty repository folder (mode 0700).
pub fn empty_repo() -> (TempDir, PathBuf) {
    let holder = db_tempdir("validate-empty-");
    let dir = holder.path().join("backups");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    (holder, dir)
}

/// The single complete set folder of a kind in a repository.
pub fn only_set(repo: &Path, kind: &str) -> PathBuf {
    let mut sets: Vec<PathBuf> = std::fs::read_dir(repo.join(kind))
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("manifest.json").exists())
        .map(|e| e.path())
        .collect();
    assert_eq!(sets.len(), 1, "{kind} sets: {sets:?}");
    sets.pop().unwrap()
}

/// Flips one byte in the middle of a file.
pub fn flip_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

/// Rewrites a set's manifest.json through a closure.
pub fn edit_manifest(set: &Path, f: impl FnOnce(&mut Value)) {
    let path = set.join("manifest.json");
    let mut value: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    f(&mut value);
    std::fs::write(&path, serde_json::to_vec_pretty(&value).unwrap()).unwrap();
}

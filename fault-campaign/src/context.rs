//! What every scenario works with: the tools beside this binary, the running test services,
//! fresh repositories (a local directory or an S3 prefix), and fixtures shared across
//! scenarios (one source cluster or topic per tool, reused by its local and S3 runs).

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;

use anyhow::Context as _;
use common::repo::{Kind, Repository, SetInfo};
use common::storage::{Location, Store};
use tempfile::TempDir;
use test_support::os_user::{as_db_user, db_tempdir};
use test_support::s3::S3Env;

/// How many trials a scenario runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// For CI: a few trials of each scenario.
    Quick,
    /// The whole campaign: every trial of every scenario.
    Full,
}

impl Tier {
    pub fn name(self) -> &'static str {
        match self {
            Tier::Quick => "quick",
            Tier::Full => "full",
        }
    }

    /// Kill trials per tool and repository kind: 50, or 5 in the quick tier.
    pub fn kill_trials(self) -> usize {
        match self {
            Tier::Quick => 5,
            Tier::Full => 50,
        }
    }

    /// Kill trials of `pg-base-backup --pgdata --type incr` into a local repository: 50, or 2
    /// in the quick tier.
    pub fn pgdata_incr_local_trials(self) -> usize {
        match self {
            Tier::Quick => 2,
            Tier::Full => 50,
        }
    }

    /// Kill trials of the other `--pgdata` scenarios (full backups, S3): 50, or 1 in the quick
    /// tier, as each trial takes three or four base backups and a restore.
    pub fn pgdata_kill_trials(self) -> usize {
        match self {
            Tier::Quick => 1,
            Tier::Full => 50,
        }
    }
}

/// The workspace tools this campaign runs.
pub const TOOLS: [&str; 9] = [
    "pg-base-backup",
    "wal-archive",
    "pitr-restore",
    "pg-logical-backup",
    "kafka-topic-backup",
    "kafka-replay",
    "cdc-slot-tool",
    "validate-backups",
    "fault-campaign",
];

/// Where a scenario's repository lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Local,
    S3,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Local => "local",
            Backend::S3 => "s3",
        }
    }
}

/// A killed run's S3 lock lives this long; the next run waits for it to expire.
pub const S3_LOCK_TTL_S: u64 = 3;

/// The campaign's shared state.
pub struct Ctx {
    pub tier: Tier,
    /// How long the load scenario runs pgbench.
    pub load_duration: std::time::Duration,
    bin_dir: PathBuf,
    s3: S3Env,
    pub kafka: String,
    fixtures: RefCell<HashMap<String, Rc<dyn Any>>>,
}

impl Ctx {
    /// Finds the tools beside this binary and the services in the environment.
    pub fn new(tier: Tier, load_duration: std::time::Duration) -> anyhow::Result<Ctx> {
        let exe = std::env::current_exe().context("cannot find this program's path")?;
        let bin_dir = exe
            .parent()
            .context("this program has no directory")?
            .to_path_buf();
        for tool in TOOLS {
            anyhow::ensure!(
                bin_dir.join(tool).exists(),
                "{} is not built: run `cargo build --workspace --all-features --bins` (scripts/fault-campaign.sh does)",
                bin_dir.join(tool).display()
            );
        }
        for var in [
            "PIPELINE_BACKUP_TEST_S3_ENDPOINT",
            "PIPELINE_BACKUP_TEST_S3_BUCKET",
            "PIPELINE_BACKUP_TEST_S3_ACCESS_KEY",
            "PIPELINE_BACKUP_TEST_S3_SECRET_KEY",
            test_support::kafka::BROKER_ENV,
        ] {
            anyhow::ensure!(
                std::env::var_os(var).is_some(),
                "{var} is not set: start the services (eval \"$(scripts/services.sh start)\") or use scripts/fault-campaign.sh"
            );
        }
        anyhow::ensure!(
            rustix::process::geteuid().is_root(),
            "run as root: PostgreSQL runs as the postgres user and disk-full scenarios mount tmpfs"
        );
        Ok(Ctx {
            tier,
            load_duration,
            bin_dir,
            s3: test_support::s3::env(),
            kafka: test_support::kafka::bootstrap(),
            fixtures: RefCell::new(HashMap::new()),
        })
    }

    pub fn tool_path(&self, tool: &str) -> PathBuf {
        self.bin_dir.join(tool)
    }

    /// A command for one of the tools, run as the database user, quiet and without progress
    /// bars, with none of the caller's backup settings.
    pub fn tool(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.tool_path(tool));
        as_db_user(&mut cmd);
        cmd.env("BACKUP_NO_PROGRESS", "1")
            .env("NO_COLOR", "1")
            .env_remove("BACKUP_DIR")
            .env_remove("RETENTION_DAYS")
            .env_remove("KAFKA_CLIENT_CONFIG")
            .env_remove("RUST_LOG");
        cmd
    }

    /// A new, empty repository.
    pub fn fresh_repo(&self, backend: Backend, name: &str) -> anyhow::Result<Repo> {
        Ok(match backend {
            Backend::Local => {
                let dir = db_tempdir(&format!("fc-{name}-"));
                Repo {
                    url: dir.path().join("repo").display().to_string(),
                    env: Vec::new(),
                    _dir: Some(dir),
                }
            }
            Backend::S3 => {
                let mut env = self.s3.vars();
                env.push(("BACKUP_S3_LOCK_TTL".into(), format!("{S3_LOCK_TTL_S}s")));
                Repo {
                    url: self.s3.url(&format!("fc-{name}")),
                    env,
                    _dir: None,
                }
            }
        })
    }

    /// A fixture shared by every scenario that asks for `key` (made by the first).
    pub fn shared<T: 'static>(
        &self,
        key: &str,
        make: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<Rc<T>> {
        if let Some(found) = self.fixtures.borrow().get(key) {
            return Rc::clone(found)
                .downcast::<T>()
                .map_err(|_| anyhow::anyhow!("fixture {key} has another type"));
        }
        let made: Rc<T> = Rc::new(make().with_context(|| format!("cannot set up {key}"))?);
        self.fixtures
            .borrow_mut()
            .insert(key.to_string(), Rc::clone(&made) as Rc<dyn Any>);
        Ok(made)
    }
}

/// A repository a scenario writes to or reads from: `--backup-dir` and its environment.
/// Removed when dropped (a local one with its temporary directory, an S3 prefix object by
/// object), so a campaign leaves nothing in the shared bucket.
pub struct Repo {
    pub url: String,
    env: Vec<(String, String)>,
    _dir: Option<TempDir>,
}

impl Repo {
    /// A local repository at `path` (which the caller owns).
    pub fn at_local(path: &str) -> Repo {
        Repo {
            url: path.to_string(),
            env: Vec::new(),
            _dir: None,
        }
    }

    /// A repository at `url` on another S3 server (a private one a scenario kills), with the
    /// environment that reaches it; removed object by object when dropped, as any S3 one.
    pub fn on_s3(url: String, env: Vec<(String, String)>) -> Repo {
        Repo {
            url,
            env,
            _dir: None,
        }
    }

    /// Points `cmd` at this repository (`--backup-dir` is given by the caller where the
    /// tool's syntax wants it; the environment here).
    pub fn apply<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env("BACKUP_DIR", &self.url)
            .envs(self.env.iter().cloned())
    }

    pub fn is_s3(&self) -> bool {
        self.url.starts_with("s3://")
    }

    /// `--config FILE` arguments for commands that run in PostgreSQL's environment
    /// (archive_command, restore_command): the repository's settings in a 0600 file in `dir`
    /// owned by the database user; none for a local repository.
    pub fn config_args(&self, dir: &Path) -> anyhow::Result<Vec<String>> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if self.env.is_empty() {
            return Ok(Vec::new());
        }
        let path = dir.join("pipeline-backup.env");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        for (k, v) in &self.env {
            writeln!(file, "{k}={v}")?;
        }
        test_support::os_user::give_to_db_user(&path);
        Ok(vec!["--config".into(), path.display().to_string()])
    }

    /// The local directory, when the repository is one.
    pub fn local_path(&self) -> Option<&Path> {
        (!self.is_s3()).then(|| Path::new(&self.url))
    }

    pub fn store(&self) -> anyhow::Result<Store> {
        let location: Location = self.url.parse()?;
        Store::open_with(&location, &self.env)
    }

    /// Every set of a kind (none when the kind's folder does not exist yet).
    pub fn sets(&self, kind: Kind) -> anyhow::Result<Vec<SetInfo>> {
        if let Some(root) = self.local_path() {
            if !root.join(kind.name()).is_dir() {
                return Ok(Vec::new());
            }
        }
        Repository::with_store(self.store()?).list(kind)
    }

    /// The complete sets of a kind, oldest first.
    pub fn complete_sets(&self, kind: Kind) -> anyhow::Result<Vec<SetInfo>> {
        Ok(self
            .sets(kind)?
            .into_iter()
            .filter(SetInfo::is_complete)
            .collect())
    }
}

impl Drop for Repo {
    fn drop(&mut self) {
        if self.is_s3() {
            if let Ok(store) = self.store() {
                let _ = store.delete_prefix("");
            }
        }
    }
}

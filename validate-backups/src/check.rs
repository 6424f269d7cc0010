//! The check framework: the catalogue of stable check names, the result of one check run, and
//! the settings every check reads.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::cli::PgArgs;
use common::encryption::Identities;
use common::storage::Location;
use common::Kind;
use serde::Serialize;

/// Verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    Skip,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "SKIP",
        }
    }
}

/// What a check is about, for `--only` and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The repository as a whole; always checked.
    Repository,
    /// One backup kind.
    Kind(Kind),
}

/// One entry of the catalogue: a stable name and what it checks.
#[derive(Debug, Clone, Copy)]
pub struct CheckDef {
    pub name: &'static str,
    pub scope: Scope,
    /// Only run with `--deep`.
    pub deep: bool,
    /// Needs a configured server (PostgreSQL or Kafka).
    pub needs_server: bool,
    pub description: &'static str,
}

const fn def(name: &'static str, scope: Scope, description: &'static str) -> CheckDef {
    CheckDef {
        name,
        scope,
        deep: false,
        needs_server: false,
        description,
    }
}

const fn deep(name: &'static str, scope: Scope, description: &'static str) -> CheckDef {
    CheckDef {
        name,
        scope,
        deep: true,
        needs_server: false,
        description,
    }
}

const fn server(name: &'static str, scope: Scope, description: &'static str) -> CheckDef {
    CheckDef {
        name,
        scope,
        deep: false,
        needs_server: true,
        description,
    }
}

use Scope::{Kind as K, Repository as R};

/// Every check, in the order they run. Names are a contract (alert rules, dashboards).
pub const CATALOG: &[CheckDef] = &[
    def("repo.layout", R, "the backup directory holds only kind folders, each a directory"),
    def("repo.writable", R, "a file can be created, synced and removed in the backup directory"),
    def("repo.free-space", R, "free space on the backup file system is above --min-free-space"),
    def("repo.permissions", R, "no file or folder of the repository is readable or writable by others"),
    def("repo.locks", R, "no kind's lock has been held longer than --max-lock-age (a hung run)"),
    def("repo.incomplete-sets", R, "no set folder lacks its manifest (a crashed or failed run), except one being written"),
    def("repo.temp-files", R, "no temporary files of interrupted writes are left over"),
    def("base.manifest", K(Kind::Base), "every base set's manifest.json parses and names its set and kind"),
    def("base.files", K(Kind::Base), "every file of every base set is present with the recorded size and SHA-256"),
    def("base.decompress", K(Kind::Base), "every compressed file of every base set decompresses completely"),
    def("base.encryption", K(Kind::Base), "every encrypted base set's files are age files to the recipients its manifest records (and to --expect-recipients only)"),
    def("base.details", K(Kind::Base), "base set details (LSNs, timeline, system id) and PostgreSQL's backup_manifest (files.json for sets read from the data directory) are valid"),
    def("base.chain", K(Kind::Base), "every diff and incr base set's chain (the full and the sets it is restored on top of) is present, complete and consistent"),
    def("base.wal-present", K(Kind::Base), "the WAL each base set needs to become consistent is in the archive"),
    deep("base.verifybackup", K(Kind::Base), "--deep: the newest base set extracts and passes pg_verifybackup"),
    deep("base.test-restore", K(Kind::Base), "--deep: point-in-time restore of the newest base set into a scratch directory starts and answers"),
    def("base.freshness", K(Kind::Base), "the newest complete base set is younger than --max-age base=..."),
    def("base.count", K(Kind::Base), "at least --min-sets base=N complete base sets are kept"),
    def("base.size-change", K(Kind::Base), "the newest full base set's size is within --max-size-change of the previous full one"),
    def("wal.continuity", K(Kind::Wal), "the WAL archive is continuous and intact from the oldest base backup on (wal-archive verify)"),
    def("wal.freshness", K(Kind::Wal), "the newest archived WAL file is younger than --max-age wal=..."),
    def("logical.manifest", K(Kind::Logical), "every logical set's manifest.json parses and names its set and kind"),
    def("logical.files", K(Kind::Logical), "every file of every logical set is present with the recorded size and SHA-256"),
    def("logical.decompress", K(Kind::Logical), "every compressed file of every logical set decompresses completely"),
    def("logical.encryption", K(Kind::Logical), "every encrypted logical set's files are age files to the recipients its manifest records (and to --expect-recipients only)"),
    def("logical.dump-list", K(Kind::Logical), "every dump of every logical set is readable by pg_restore --list"),
    deep("logical.test-restore", K(Kind::Logical), "--deep: pg-logical-backup verify --level standard restores the newest set and compares row counts"),
    def("logical.freshness", K(Kind::Logical), "the newest complete logical set is younger than --max-age logical=..."),
    def("logical.count", K(Kind::Logical), "at least --min-sets logical=N complete logical sets are kept"),
    def("logical.size-change", K(Kind::Logical), "the newest logical set's size is within --max-size-change of the previous one"),
    def("kafka.manifest", K(Kind::Kafka), "every Kafka set's manifest.json parses and names its set and kind"),
    def("kafka.files", K(Kind::Kafka), "every file of every Kafka set is present with the recorded size and SHA-256"),
    def("kafka.decompress", K(Kind::Kafka), "every compressed file of every Kafka set decompresses completely"),
    def("kafka.encryption", K(Kind::Kafka), "every encrypted Kafka set's files are age files to the recipients its manifest records (and to --expect-recipients only)"),
    def("kafka.archive", K(Kind::Kafka), "every topic archive decodes with valid chunk checksums and the record counts of the manifest"),
    deep("kafka.test-replay", K(Kind::Kafka), "--deep: the newest Kafka set replays into a scratch topic with every record (kafka-replay)"),
    def("kafka.freshness", K(Kind::Kafka), "the newest complete Kafka set is younger than --max-age kafka=..."),
    def("kafka.count", K(Kind::Kafka), "at least --min-sets kafka=N complete Kafka sets are kept"),
    def("kafka.size-change", K(Kind::Kafka), "the newest full Kafka set's size is within --max-size-change of the previous full one"),
    def("slots.manifest", K(Kind::Slots), "every slot set's manifest.json parses and names its set and kind"),
    def("slots.files", K(Kind::Slots), "every file of every slot set is present with the recorded size and SHA-256"),
    def("slots.decompress", K(Kind::Slots), "every compressed file of every slot set decompresses completely"),
    def("slots.encryption", K(Kind::Slots), "every encrypted slot set's files are age files to the recipients its manifest records (and to --expect-recipients only)"),
    def("slots.inventory", K(Kind::Slots), "every slot set's slots.json parses and matches its manifest"),
    def("slots.freshness", K(Kind::Slots), "the newest complete slot set is younger than --max-age slots=..."),
    def("slots.count", K(Kind::Slots), "at least --min-sets slots=N complete slot sets are kept"),
    def("slots.size-change", K(Kind::Slots), "the newest slot set's size is within --max-size-change of the previous one"),
    server("pg.reachable", K(Kind::Base), "PostgreSQL answers a query (when --host/PGHOST is set)"),
    server("pg.archiver", K(Kind::Wal), "pg_stat_archiver shows archiving on and no failure since the last success"),
    server("kafka.reachable", K(Kind::Kafka), "the Kafka cluster returns metadata (when --bootstrap-servers/KAFKA_BOOTSTRAP_SERVERS is set)"),
    server("slots.healthy", K(Kind::Slots), "every replication slot is healthy (cdc-slot-tool status)"),
];

/// The catalogue entry of a name.
pub fn lookup(name: &str) -> &'static CheckDef {
    CATALOG
        .iter()
        .find(|d| d.name == name)
        .unwrap_or_else(|| panic!("check {name} is not in the catalogue"))
}

/// The result of running one check (on one subject, e.g. one set).
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub check: &'static str,
    /// The backup kind, when the check is about one.
    pub kind: Option<&'static str>,
    /// What exactly was checked, e.g. a set id.
    pub subject: Option<String>,
    pub status: Verdict,
    pub message: String,
    pub duration_s: f64,
}

impl CheckResult {
    pub fn new(check: &'static str, status: Verdict, message: impl Into<String>) -> CheckResult {
        let kind = match lookup(check).scope {
            Scope::Repository => None,
            Scope::Kind(kind) => Some(kind.name()),
        };
        CheckResult {
            check,
            kind,
            subject: None,
            status,
            message: message.into(),
            duration_s: 0.0,
        }
    }

    pub fn pass(check: &'static str, message: impl Into<String>) -> CheckResult {
        CheckResult::new(check, Verdict::Pass, message)
    }

    pub fn fail(check: &'static str, message: impl Into<String>) -> CheckResult {
        CheckResult::new(check, Verdict::Fail, message)
    }

    pub fn skip(check: &'static str, message: impl Into<String>) -> CheckResult {
        CheckResult::new(check, Verdict::Skip, message)
    }

    /// Pass when `problems` is empty, else fail listing them.
    pub fn from_problems(
        check: &'static str,
        ok_message: impl Into<String>,
        problems: &[String],
    ) -> CheckResult {
        if problems.is_empty() {
            CheckResult::pass(check, ok_message)
        } else {
            CheckResult::fail(check, problems.join("; "))
        }
    }

    pub fn on(mut self, subject: impl Into<String>) -> CheckResult {
        self.subject = Some(subject.into());
        self
    }
}

/// Settings every check reads, parsed from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The repository: a local directory or an S3 bucket prefix.
    pub backup_dir: Location,
    /// Kinds to check; empty means all.
    pub only: Vec<Kind>,
    /// Kinds that must have sets (otherwise their checks are skipped when empty).
    pub require: Vec<Kind>,
    pub max_age: BTreeMap<&'static str, Duration>,
    pub min_sets: BTreeMap<&'static str, usize>,
    /// Largest allowed relative size change between the two newest sets (0.5 = 50%).
    pub max_size_change: f64,
    pub min_free_space: u64,
    pub max_lock_age: Duration,
    /// Largest consumer lag of a healthy slot, in bytes.
    pub max_slot_lag: Option<u64>,
    pub deep: bool,
    /// PostgreSQL connection, when one is configured.
    pub pg: Option<PgArgs>,
    /// Kafka bootstrap servers and client properties, when configured.
    pub kafka: Option<(String, Vec<(String, String)>)>,
    pub bin_dir: Option<PathBuf>,
    /// Scratch space for --deep restores.
    pub scratch_dir: Option<PathBuf>,
    /// Keys to decrypt encrypted sets with (BACKUP_ENCRYPTION_IDENTITY_FILE or
    /// BACKUP_ENCRYPTION_PASSPHRASE_FILE); without them an encrypted file's stored bytes and
    /// age header are checked, not its content.
    pub identities: Option<std::sync::Arc<Identities>>,
    /// `--expect-recipients`: encrypted sets must be encrypted to these keys only.
    pub expect_recipients: Option<Vec<String>>,
}

impl Settings {
    pub fn wants(&self, kind: Kind) -> bool {
        self.only.is_empty() || self.only.contains(&kind)
    }

    pub fn requires(&self, kind: Kind) -> bool {
        self.require.contains(&kind)
    }
}

/// Collects results in order, timing each check.
#[derive(Debug, Default)]
pub struct Run {
    pub results: Vec<CheckResult>,
    /// `pg_stat_archiver.failed_count`, when pg.archiver read it (for the metrics).
    pub archiver_failed_count: Option<i64>,
}

impl Run {
    /// Runs one check function (returning one or more results) unless `--only` excludes it.
    pub fn check(
        &mut self,
        settings: &Settings,
        name: &'static str,
        f: impl FnOnce() -> Vec<CheckResult>,
    ) {
        let def = lookup(name);
        if let Scope::Kind(kind) = def.scope {
            if !settings.wants(kind) {
                return;
            }
        }
        if def.deep && !settings.deep {
            self.results
                .push(CheckResult::skip(name, "only with --deep"));
            return;
        }
        let started = Instant::now();
        let mut results = f();
        let elapsed = started.elapsed().as_secs_f64();
        let share = elapsed / results.len().max(1) as f64;
        for r in &mut results {
            debug_assert_eq!(r.check, name, "a check reported under another name");
            r.duration_s = share;
            match r.status {
                Verdict::Fail => tracing::warn!(
                    "{name}{}: {}",
                    r.subject
                        .as_deref()
                        .map(|s| format!(" {s}"))
                        .unwrap_or_default(),
                    r.message
                ),
                _ => tracing::debug!("{name}: {}", r.message),
            }
        }
        self.results.extend(results);
    }

    pub fn failed(&self) -> usize {
        self.count(Verdict::Fail)
    }

    pub fn count(&self, verdict: Verdict) -> usize {
        self.results.iter().filter(|r| r.status == verdict).count()
    }

    /// The aggregate verdict of a check name: fail if any result failed, pass if any passed,
    /// else skip (or None when it did not run at all).
    pub fn verdict_of(&self, name: &str) -> Option<Verdict> {
        let mut verdict = None;
        for r in self.results.iter().filter(|r| r.check == name) {
            verdict = Some(match (verdict, r.status) {
                (_, Verdict::Fail) | (Some(Verdict::Fail), _) => Verdict::Fail,
                (_, Verdict::Pass) | (Some(Verdict::Pass), _) => Verdict::Pass,
                _ => Verdict::Skip,
            });
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_names_are_unique_and_many() {
        let mut names: Vec<_> = CATALOG.iter().map(|d| d.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CATALOG.len());
        assert!(CATALOG.len() >= 20);
        for d in CATALOG {
            if let Scope::Kind(kind) = d.scope {
                let prefix = d.name.split('.').next().unwrap();
                assert!(
                    prefix == kind.name() || prefix == "pg" || prefix == "kafka",
                    "{} has scope {kind}",
                    d.name
                );
            }
        }
    }
}

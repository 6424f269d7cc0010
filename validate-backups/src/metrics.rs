//! Prometheus textfile-collector metrics (`--metrics-file`), written atomically so the node
//! exporter never reads half a file. The metric names are a contract with the alert rules.

use std::path::Path;
use std::time::SystemTime;

use common::metrics::{labels, write_gauge};
use common::wal::WalArchive;
use common::{Kind, Manifest, Repository};

use crate::check::{Run, Scope, Settings, Verdict, CATALOG};
use crate::health;

/// Metric text builder: the families that have samples (one without is left out whole).
#[derive(Debug, Default)]
pub(crate) struct Families {
    pub(crate) text: String,
}

impl Families {
    pub(crate) fn family(&mut self, name: &str, help: &str, samples: &[(String, f64)]) {
        if !samples.is_empty() {
            write_gauge(&mut self.text, name, help, samples);
        }
    }
}

/// The label set of one label.
pub(crate) fn label(key: &str, value: &str) -> String {
    labels(&[(key, value)])
}

/// Per-kind facts read from the repository.
#[derive(Debug, Default)]
struct KindFacts {
    last_success: Option<f64>,
    size: Option<f64>,
    duration: Option<f64>,
    sets: f64,
    change: Option<f64>,
}

fn facts(repo: &Repository, kind: Kind) -> KindFacts {
    if kind == Kind::Wal {
        let files = WalArchive::new(repo).list().unwrap_or_default();
        let newest = crate::walcheck::newest(repo, &files)
            .map(|(t, _)| t.unix_timestamp_nanos() as f64 / 1e9);
        return KindFacts {
            last_success: newest,
            size: Some(files.iter().map(|f| f.size).sum::<u64>() as f64),
            duration: None,
            sets: files.len() as f64,
            change: None,
        };
    }
    let sets = repo.complete_sets(kind).unwrap_or_default();
    let manifests: Vec<&Manifest> = sets.iter().filter_map(|s| s.manifest()).collect();
    let newest = manifests.last();
    KindFacts {
        last_success: newest.map(|m| m.finished_at.unix_timestamp_nanos() as f64 / 1e9),
        size: newest.map(|m| m.total_size() as f64),
        duration: newest.map(|m| (m.finished_at - m.started_at).as_seconds_f64()),
        sets: manifests.len() as f64,
        change: health::size_change(kind, &manifests).map(|(_, _, c)| c),
    }
}

/// The metrics text for a run.
pub fn render(settings: &Settings, repo: &Repository, run: &Run) -> anyhow::Result<String> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let kinds: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|k| settings.wants(*k))
        .collect();
    let mut m = Families::default();
    repository_families(&mut m, repo, &kinds, now);
    verification_families(&mut m, run, &kinds);
    wal_families(&mut m, run);
    m.family(
        "pipeline_backup_validation_timestamp_seconds",
        "Unix time of this validation run.",
        &[(String::new(), now.floor())],
    );
    Ok(m.text)
}

/// What the repository holds of each kind: age, size, duration, set count, size change.
fn repository_families(m: &mut Families, repo: &Repository, kinds: &[Kind], now: f64) {
    let all: Vec<(Kind, KindFacts)> = kinds.iter().map(|&k| (k, facts(repo, k))).collect();
    let per = |f: &dyn Fn(&KindFacts) -> Option<f64>| -> Vec<(String, f64)> {
        all.iter()
            .filter_map(|(k, facts)| f(facts).map(|v| (label("kind", k.name()), v)))
            .collect()
    };
    m.family(
        "pipeline_backup_last_success_timestamp_seconds",
        "Unix time the newest complete backup of the kind finished (WAL: newest archived file).",
        &per(&|f| f.last_success),
    );
    m.family(
        "pipeline_backup_age_seconds",
        "Seconds since the newest complete backup of the kind finished.",
        &per(&|f| f.last_success.map(|t| (now - t).max(0.0))),
    );
    m.family(
        "pipeline_backup_size_bytes",
        "Stored bytes of the newest complete backup of the kind (WAL: the whole archive).",
        &per(&|f| f.size),
    );
    m.family(
        "pipeline_backup_duration_seconds",
        "Wall time of the newest complete backup of the kind.",
        &per(&|f| f.duration),
    );
    m.family(
        "pipeline_backup_sets",
        "Complete backup sets of the kind (WAL: archived files).",
        &per(&|f| Some(f.sets)),
    );
    m.family(
        "pipeline_backup_size_change_ratio",
        "Size of the newest set relative to the previous comparable one, minus 1.",
        &per(&|f| f.change),
    );
}

/// The run's verdicts: per kind (every check of it that ran passed) and per check.
fn verification_families(m: &mut Families, run: &Run, kinds: &[Kind]) {
    let verification: Vec<(String, f64)> = kinds
        .iter()
        .filter_map(|&kind| {
            let ok = kind_verified(run, kind)?;
            Some((label("kind", kind.name()), if ok { 1.0 } else { 0.0 }))
        })
        .collect();
    m.family(
        "pipeline_backup_verification_ok",
        "1 when every check of the kind that ran passed, 0 when one failed.",
        &verification,
    );
    let checks: Vec<(String, f64)> = CATALOG
        .iter()
        .filter_map(|d| match run.verdict_of(d.name)? {
            Verdict::Pass => Some((label("check", d.name), 1.0)),
            Verdict::Fail => Some((label("check", d.name), 0.0)),
            Verdict::Skip => None,
        })
        .collect();
    m.family(
        "pipeline_backup_check_ok",
        "1 when the named check passed, 0 when it failed; skipped checks are absent.",
        &checks,
    );
}

/// Whether no check of `kind` failed; None when none of them ran.
fn kind_verified(run: &Run, kind: Kind) -> Option<bool> {
    let verdicts: Vec<Verdict> = run
        .results
        .iter()
        .filter(|r| {
            CATALOG
                .iter()
                .any(|d| d.name == r.check && d.scope == Scope::Kind(kind))
        })
        .map(|r| r.status)
        .filter(|v| *v != Verdict::Skip)
        .collect();
    (!verdicts.is_empty()).then(|| !verdicts.contains(&Verdict::Fail))
}

/// The WAL archive: continuity (when checked) and the server's archiver failures (when read).
fn wal_families(m: &mut Families, run: &Run) {
    if let Some(v) = run
        .verdict_of("wal.continuity")
        .filter(|v| *v != Verdict::Skip)
    {
        m.family(
            "pipeline_backup_wal_archive_ok",
            "1 when the WAL archive is continuous from the oldest base backup, 0 on a gap or damage.",
            &[(String::new(), if v == Verdict::Pass { 1.0 } else { 0.0 })],
        );
    }
    if let Some(failed) = run.archiver_failed_count {
        m.family(
            "pipeline_backup_wal_archive_failures",
            "pg_stat_archiver.failed_count of the configured server.",
            &[(String::new(), failed as f64)],
        );
    }
}

/// Writes the metrics: a temporary file in the same directory, readable by the exporter
/// (0644: metrics hold no data), synced, renamed over the target, directory synced.
pub fn write(path: &Path, settings: &Settings, repo: &Repository, run: &Run) -> anyhow::Result<()> {
    write_text(path, &render(settings, repo, run)?)
}

/// Replaces a textfile-collector file atomically with `text`.
pub fn write_text(path: &Path, text: &str) -> anyhow::Result<()> {
    common::metrics::write_file(path, text)
}

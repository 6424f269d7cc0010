//! Health of a kind over time: the newest set is fresh, enough sets are kept,
//! and the newest set's size is not far off the previous one's.

use std::time::Duration;

use common::repo::SetInfo;
use common::{Kind, Manifest};
use time::OffsetDateTime;

use crate::check::{CheckResult, Run, Settings};
use crate::repository::bytes;
use crate::thresholds::human;

fn names(kind: Kind) -> (&'static str, &'static str, &'static str) {
    match kind {
        Kind::Base => ("base.freshness", "base.count", "base.size-change"),
        Kind::Logical => ("logical.freshness", "logical.count", "logical.size-change"),
        Kind::Kafka => ("kafka.freshness", "kafka.count", "kafka.size-change"),
        Kind::Slots | Kind::Wal => ("slots.freshness", "slots.count", "slots.size-change"),
    }
}

/// Age of a time, zero when it lies in the future.
pub fn age(t: OffsetDateTime) -> Duration {
    let secs = (common::timefmt::now() - t).whole_seconds();
    Duration::from_secs(secs.max(0) as u64)
}

/// True for a Kafka set exported incrementally (its size says nothing about the topic's).
pub fn is_incremental(manifest: &Manifest) -> bool {
    manifest
        .details
        .get("topics")
        .and_then(|t| t.as_array())
        .is_some_and(|topics| {
            topics
                .iter()
                .any(|t| t.get("incremental_from").is_some_and(|v| !v.is_null()))
        })
}

/// True for a base set of type diff or incr (it holds what changed, not the database).
pub fn is_partial_base(manifest: &Manifest) -> bool {
    common::physical::PhysicalDetails::from_manifest(manifest)
        .is_ok_and(|d| d.backup_type != common::physical::BackupType::Full)
}

/// The sets whose sizes are comparable (full ones: incremental sets hold only changes),
/// oldest first.
pub fn comparable(kind: Kind, complete: &[&Manifest]) -> Vec<u64> {
    complete
        .iter()
        .filter(|m| match kind {
            Kind::Kafka => !is_incremental(m),
            Kind::Base => !is_partial_base(m),
            _ => true,
        })
        .map(|m| m.total_size())
        .collect()
}

/// Relative change of the newest comparable set against the previous one.
pub fn size_change(kind: Kind, complete: &[&Manifest]) -> Option<(u64, u64, f64)> {
    let sizes = comparable(kind, complete);
    let [.., previous, newest] = sizes.as_slice() else {
        return None;
    };
    if *previous == 0 {
        return None;
    }
    Some((*previous, *newest, *newest as f64 / *previous as f64 - 1.0))
}

pub fn run(run: &mut Run, settings: &Settings, kind: Kind, sets: &[SetInfo]) {
    let (fresh_name, count_name, size_name) = names(kind);
    let complete: Vec<&Manifest> = sets.iter().filter_map(SetInfo::manifest).collect();
    run.check(settings, fresh_name, || {
        vec![freshness(fresh_name, settings, kind, &complete)]
    });
    run.check(settings, count_name, || {
        vec![count(count_name, settings, kind, &complete)]
    });
    run.check(settings, size_name, || {
        vec![size(size_name, settings, kind, &complete)]
    });
}

/// The result of a check that has no complete set to look at: a failure when `--require`
/// names the kind, else a skip.
fn no_sets(name: &'static str, settings: &Settings, kind: Kind) -> CheckResult {
    if settings.requires(kind) {
        CheckResult::fail(
            name,
            format!("no complete {kind} set, and --require {kind} asks for one"),
        )
    } else {
        CheckResult::skip(
            name,
            format!("no {kind} sets (use --require {kind} to fail)"),
        )
    }
}

/// The newest complete set finished within `--max-age`.
fn freshness(
    name: &'static str,
    settings: &Settings,
    kind: Kind,
    complete: &[&Manifest],
) -> CheckResult {
    let Some(newest) = complete.last() else {
        return no_sets(name, settings, kind);
    };
    let max = settings.max_age[kind.name()];
    let age = age(newest.finished_at);
    let text = format!(
        "newest set {} finished {} ago (maximum {})",
        newest.id,
        human(age),
        human(max)
    );
    verdict(
        name,
        age <= max,
        text,
        format_args!("{kind} backups are not running"),
    )
}

/// At least `--min-sets` complete sets are kept.
fn count(
    name: &'static str,
    settings: &Settings,
    kind: Kind,
    complete: &[&Manifest],
) -> CheckResult {
    if complete.is_empty() {
        return no_sets(name, settings, kind);
    }
    let min = settings.min_sets[kind.name()];
    let text = format!("{} complete sets (minimum {min})", complete.len());
    verdict(
        name,
        complete.len() >= min,
        text,
        "retention keeps too few, or backups fail",
    )
}

/// The newest comparable set's size is within `--max-size-change` of the previous one's.
fn size(
    name: &'static str,
    settings: &Settings,
    kind: Kind,
    complete: &[&Manifest],
) -> CheckResult {
    if complete.is_empty() {
        return no_sets(name, settings, kind);
    }
    let Some((previous, newest, change)) = size_change(kind, complete) else {
        return CheckResult::skip(name, "fewer than two comparable sets");
    };
    let text = format!(
        "newest {} vs previous {}: {:+.1}% (limit ±{:.0}%)",
        bytes(newest),
        bytes(previous),
        change * 100.0,
        settings.max_size_change * 100.0
    );
    verdict(
        name,
        change.abs() <= settings.max_size_change,
        text,
        "investigate (lost data, a failed dump, or bloat)",
    )
}

/// A pass saying `text`, or a failure saying `text` and what it means.
fn verdict(
    name: &'static str,
    passed: bool,
    text: String,
    meaning: impl std::fmt::Display,
) -> CheckResult {
    if passed {
        CheckResult::pass(name, text)
    } else {
        CheckResult::fail(name, format!("{text}: {meaning}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(size: u64, incremental: bool) -> Manifest {
        let now = common::timefmt::now();
        Manifest {
            format_version: 1,
            kind: common::Kind::Kafka,
            id: common::timefmt::id_string(now),
            tool: "test".into(),
            tool_version: "0".into(),
            started_at: now,
            finished_at: now,
            status: common::manifest::SetStatus::Complete,
            source: serde_json::json!({}),
            files: vec![common::FileEntry {
                path: "t.kta".into(),
                size,
                sha256: "0".repeat(64),
                compression: common::stream::Compression::None,
                raw_size: None,
                xxh3: None,
            }],
            details: serde_json::json!({"topics": [{
                "topic": "t",
                "incremental_from": if incremental { serde_json::json!("20261120T000000Z") } else { serde_json::Value::Null },
            }]}),
        }
    }

    fn base_manifest(size: u64, backup_type: &str) -> Manifest {
        let mut m = manifest(size, false);
        m.kind = common::Kind::Base;
        m.details = serde_json::json!({
            "start_lsn": "0/2000028", "stop_lsn": "0/2000100", "timeline": 1,
            "start_time": "2020-01-01T00:00:00Z", "stop_time": "2020-01-01T00:00:01Z",
            "system_identifier": "7000000000000000001", "server_version_num": 150000,
            "server_version": "15.0", "wal_segment_size": 16777216, "wal_method": "archive",
            "compression": "zstd", "raw_bytes": 1, "stored_bytes": 1, "duration_s": 1.0,
            "file_count": 1, "backup_type": backup_type,
        });
        m
    }

    #[test]
    fn diff_and_incr_base_sets_are_not_compared() {
        let full_a = base_manifest(1000, "full");
        let diff = base_manifest(50, "diff");
        let full_b = base_manifest(1200, "full");
        let incr = base_manifest(10, "incr");
        let sets = [&full_a, &diff, &full_b, &incr];
        let (previous, newest, change) = size_change(Kind::Base, &sets).unwrap();
        assert_eq!((previous, newest), (1000, 1200));
        assert!((change - 0.2).abs() < 1e-9);
        // Sets written before backup types existed are full.
        let mut old = base_manifest(900, "full");
        old.details.as_object_mut().unwrap().remove("backup_type");
        let (previous, _, _) = size_change(Kind::Base, &[&old, &incr, &full_a]).unwrap();
        assert_eq!(previous, 900);
        assert!(size_change(Kind::Base, &[&full_a, &incr]).is_none());
    }

    #[test]
    fn incremental_kafka_sets_are_not_compared() {
        let full_a = manifest(1000, false);
        let incr = manifest(10, true);
        let full_b = manifest(1100, false);
        let sets = [&full_a, &incr, &full_b];
        let (previous, newest, change) = size_change(Kind::Kafka, &sets).unwrap();
        assert_eq!((previous, newest), (1000, 1100));
        assert!((change - 0.1).abs() < 1e-9);
        // Other kinds compare the two newest sets whatever their details say.
        let (previous, _, _) = size_change(Kind::Logical, &sets).unwrap();
        assert_eq!(previous, 10);
        assert!(size_change(Kind::Kafka, &[&full_a, &incr]).is_none());
    }
}

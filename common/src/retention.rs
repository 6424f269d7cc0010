//! Retention of backup sets: by age, by count and grandfather-father-son.
//!
//! A complete set is deleted only when no rule keeps it and no kept set depends on it (an
//! incremental set keeps the sets it is restored on top of); the newest complete set is always
//! kept, whatever the rules say. Incomplete sets (no manifest) older than a grace period are
//! leftovers of crashed runs and are removed; younger ones may still be running.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use time::OffsetDateTime;

use crate::repo::{Kind, Repository, SetInfo};

/// Maps a time to its calendar period (day, ISO week, month, year).
type PeriodOf = fn(OffsetDateTime) -> (i32, u32);

/// Grandfather-father-son counts: keep the newest set in each of the last N periods.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gfs {
    pub daily: usize,
    pub weekly: usize,
    pub monthly: usize,
    pub yearly: usize,
}

/// Which sets to keep.
#[derive(Debug, Clone)]
pub struct RetentionPolicy {
    /// Keep complete sets younger than this many days.
    pub max_age_days: Option<u32>,
    /// Keep the newest N complete sets.
    pub keep_count: Option<usize>,
    pub gfs: Gfs,
    /// Incomplete sets younger than this are left alone.
    pub incomplete_grace: Duration,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            max_age_days: None,
            keep_count: None,
            gfs: Gfs::default(),
            incomplete_grace: Duration::from_secs(6 * 3600),
        }
    }
}

/// The outcome of retention run after the new set `id` was committed. A failure leaves that
/// set complete, and the error says so: the run still fails (sets nobody expires pile up until
/// someone looks), but nobody should take the backup for lost.
pub fn after_commit<T>(kind: Kind, id: &str, applied: anyhow::Result<T>) -> anyhow::Result<T> {
    applied.with_context(|| format!("{kind} backup {id} is complete, but retention failed"))
}

/// The verdict on one set.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Decision {
    pub id: String,
    pub keep: bool,
    pub reason: String,
}

/// When a set was taken: manifest start time, else the time in its id.
fn set_time(set: &SetInfo) -> Option<OffsetDateTime> {
    set.manifest().map(|m| m.started_at).or(set.started)
}

impl RetentionPolicy {
    /// Decides for every set (oldest first in, same order out).
    pub fn plan(&self, sets: &[SetInfo], now: OffsetDateTime) -> Vec<Decision> {
        let complete: Vec<&SetInfo> = sets.iter().filter(|s| s.is_complete()).collect();
        let newest: Vec<&SetInfo> = complete.iter().rev().copied().collect();
        let mut reasons: Vec<(String, String)> = Vec::new();
        if let Some(latest) = newest.first() {
            reasons.push((latest.id.clone(), "newest complete set".into()));
        }
        if let Some(n) = self.keep_count {
            for set in newest.iter().take(n) {
                reasons.push((set.id.clone(), format!("among the newest {n}")));
            }
        }
        if let Some(days) = self.max_age_days {
            let limit = time::Duration::days(i64::from(days));
            for set in &newest {
                if set_time(set).is_some_and(|t| now - t < limit) {
                    reasons.push((set.id.clone(), format!("younger than {days} days")));
                }
            }
        }
        let periods: [(usize, &str, PeriodOf); 4] = [
            (self.gfs.daily, "daily", |t| (t.year(), t.ordinal() as u32)),
            (self.gfs.weekly, "weekly", |t| {
                let (y, w, _) = t.to_iso_week_date();
                (y, w as u32)
            }),
            (self.gfs.monthly, "monthly", |t| {
                (t.year(), t.month() as u32)
            }),
            (self.gfs.yearly, "yearly", |t| (t.year(), 0)),
        ];
        for (count, label, period_of) in periods {
            let mut seen = HashSet::new();
            for set in &newest {
                let Some(t) = set_time(set) else { continue };
                if seen.len() >= count {
                    break;
                }
                if seen.insert(period_of(t)) {
                    reasons.push((set.id.clone(), format!("{label} keeper")));
                }
            }
        }
        sets.iter()
            .map(|set| {
                if !set.is_complete() {
                    let old = set_time(set).is_none_or(|t| {
                        now - t
                            > time::Duration::try_from(self.incomplete_grace).unwrap_or_default()
                    });
                    return Decision {
                        id: set.id.clone(),
                        keep: !old,
                        reason: if old {
                            "incomplete, older than the grace period".into()
                        } else {
                            "incomplete, may still be running".into()
                        },
                    };
                }
                let why: Vec<&str> = reasons
                    .iter()
                    .filter(|(id, _)| *id == set.id)
                    .map(|(_, r)| r.as_str())
                    .collect();
                Decision {
                    id: set.id.clone(),
                    keep: !why.is_empty(),
                    reason: if why.is_empty() {
                        "no retention rule keeps it".into()
                    } else {
                        why.join(", ")
                    },
                }
            })
            .collect()
    }

    /// [`plan`](Self::plan), then every set a kept set depends on is kept too: `depends_on`
    /// names the sets (by id) a set cannot be restored without, e.g. the full and diff an
    /// incremental base backup applies on, or the Kafka set an incremental export continues.
    /// A set that is not kept takes nothing with it: its dependencies stay only when something
    /// else keeps them.
    pub fn plan_keeping(
        &self,
        sets: &[SetInfo],
        now: OffsetDateTime,
        depends_on: impl Fn(&SetInfo) -> Vec<String>,
    ) -> Vec<Decision> {
        let mut decisions = self.plan(sets, now);
        keep_dependencies(sets, &mut decisions, depends_on);
        decisions
    }

    /// Plans and, unless `dry_run`, deletes. Returns every decision; logs each deletion.
    pub fn apply(
        &self,
        repo: &Repository,
        kind: Kind,
        dry_run: bool,
    ) -> anyhow::Result<Vec<Decision>> {
        self.apply_keeping(repo, kind, dry_run, |_| Vec::new())
    }

    /// [`apply`](Self::apply) that keeps what kept sets depend on (see
    /// [`plan_keeping`](Self::plan_keeping)). Sets are deleted newest first, so a run that
    /// stops half-way never leaves a set whose dependencies are gone.
    pub fn apply_keeping(
        &self,
        repo: &Repository,
        kind: Kind,
        dry_run: bool,
        depends_on: impl Fn(&SetInfo) -> Vec<String>,
    ) -> anyhow::Result<Vec<Decision>> {
        let sets = repo.list(kind)?;
        let decisions = self.plan_keeping(&sets, crate::timefmt::now(), depends_on);
        for (set, decision) in sets.iter().zip(&decisions).rev() {
            if decision.keep {
                continue;
            }
            if dry_run {
                tracing::info!(
                    "retention would delete {kind} set {} ({})",
                    set.id,
                    decision.reason
                );
            } else {
                tracing::info!(
                    "retention deletes {kind} set {} ({})",
                    set.id,
                    decision.reason
                );
                repo.delete_set(set).with_context(|| {
                    format!("cannot delete {kind} set {}", repo.describe(&set.prefix))
                })?;
            }
        }
        Ok(decisions)
    }
}

/// Marks kept every set that a kept set depends on, transitively (`decisions` in the order of
/// `sets`). Dependencies not in `sets` are ignored: a chain already broken stays broken.
fn keep_dependencies(
    sets: &[SetInfo],
    decisions: &mut [Decision],
    depends_on: impl Fn(&SetInfo) -> Vec<String>,
) {
    let index: HashMap<&str, usize> = sets
        .iter()
        .enumerate()
        .map(|(at, set)| (set.id.as_str(), at))
        .collect();
    let mut pending: Vec<usize> = (0..sets.len()).filter(|&at| decisions[at].keep).collect();
    while let Some(at) = pending.pop() {
        for id in depends_on(&sets[at]) {
            let Some(&needed) = index.get(id.as_str()) else {
                continue;
            };
            if !decisions[needed].keep {
                decisions[needed].keep = true;
                decisions[needed].reason = format!("needed by incremental set {}", sets[at].id);
                pending.push(needed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Manifest, SetStatus, MANIFEST_VERSION};
    use crate::physical::chain::dependencies;

    #[test]
    fn a_retention_failure_after_the_commit_says_the_set_is_complete() {
        let failed: anyhow::Result<()> = Err(anyhow::anyhow!("cannot list s3://b/base: refused"));
        let line = format!(
            "{:#}",
            after_commit(Kind::Base, "20261204T103735Z", failed).unwrap_err()
        );
        assert_eq!(
            line,
            "base backup 20261204T103735Z is complete, but retention failed: cannot list s3://b/base: refused"
        );
        assert_eq!(after_commit(Kind::Base, "x", Ok(3)).unwrap(), 3);
    }

    /// A complete base set of type `kind` restored on top of `chain` (full first).
    fn base_set(id: &str, kind: &str, chain: &[&str]) -> SetInfo {
        let started = crate::timefmt::parse_id_time(id).unwrap();
        let details = serde_json::json!({
            "start_lsn": "0/2000028", "stop_lsn": "0/2000100", "timeline": 1,
            "start_time": "2020-01-01T00:00:00Z", "stop_time": "2020-01-01T00:00:01Z",
            "system_identifier": "7000000000000000001", "server_version_num": 150000,
            "server_version": "15.0", "wal_segment_size": 16777216, "wal_method": "archive",
            "compression": "zstd", "raw_bytes": 1, "stored_bytes": 1, "duration_s": 1.0,
            "file_count": 1, "backup_type": kind, "method": "data_dir",
            "reference": chain.last(), "chain": chain,
        });
        SetInfo {
            id: id.into(),
            prefix: format!("base/{id}"),
            started: Some(started),
            manifest: Some(Manifest {
                format_version: MANIFEST_VERSION,
                kind: crate::Kind::Base,
                id: id.into(),
                tool: "pg-base-backup".into(),
                tool_version: "0".into(),
                started_at: started,
                finished_at: started,
                status: SetStatus::Complete,
                source: serde_json::Value::Null,
                files: vec![],
                details,
            }),
            manifest_error: None,
        }
    }

    const F1: &str = "20200101T000000Z";
    const I1: &str = "20200102T000000Z";
    const D1: &str = "20200103T000000Z";
    const I2: &str = "20200104T000000Z";
    const F2: &str = "20200105T000000Z";
    const I3: &str = "20200106T000000Z";

    /// Two chains: F1 <- I1, F1 <- D1 <- I2 (I2 on F1, D1), then F2 <- I3.
    fn chains() -> Vec<SetInfo> {
        vec![
            base_set(F1, "full", &[]),
            base_set(I1, "incr", &[F1]),
            base_set(D1, "diff", &[F1]),
            base_set(I2, "incr", &[F1, D1]),
            base_set(F2, "full", &[]),
            base_set(I3, "incr", &[F2]),
        ]
    }

    fn kept(decisions: &[Decision]) -> Vec<&str> {
        decisions
            .iter()
            .filter(|d| d.keep)
            .map(|d| d.id.as_str())
            .collect()
    }

    fn count(n: usize) -> RetentionPolicy {
        RetentionPolicy {
            keep_count: Some(n),
            ..RetentionPolicy::default()
        }
    }

    #[test]
    fn a_kept_incremental_set_keeps_its_whole_chain() {
        let sets = chains();
        let now = crate::timefmt::now();
        // The newest set is an incr: its full comes with it, the older chain goes.
        let decisions = count(1).plan_keeping(&sets, now, dependencies);
        assert_eq!(kept(&decisions), [F2, I3]);
        assert_eq!(
            decisions[4].reason,
            format!("needed by incremental set {I3}")
        );
        assert_eq!(decisions[0].reason, "no retention rule keeps it");
        // Keeping the 3 newest keeps I2 and through it D1 and F1, but not I1, which nothing
        // kept depends on.
        let decisions = count(3).plan_keeping(&sets, now, dependencies);
        assert_eq!(kept(&decisions), [F1, D1, I2, F2, I3]);
        assert_eq!(
            decisions[0].reason,
            format!("needed by incremental set {I2}")
        );
        assert_eq!(
            decisions[2].reason,
            format!("needed by incremental set {I2}")
        );
        assert_eq!(decisions[1].reason, "no retention rule keeps it");
        // Kept by a rule, a set keeps its own reason.
        let decisions = count(4).plan_keeping(&sets, now, dependencies);
        assert_eq!(kept(&decisions), [F1, D1, I2, F2, I3]);
        assert_eq!(decisions[2].reason, "among the newest 4");
        // Without dependencies, the plan would break the chains.
        assert_eq!(kept(&count(1).plan(&sets, now)), [I3]);
    }

    #[test]
    fn a_full_that_is_not_kept_takes_its_dependents_with_it() {
        let sets = chains();
        let now = crate::timefmt::now();
        // Only the newest full chain survives an age limit every set is past.
        let policy = RetentionPolicy {
            max_age_days: Some(1),
            ..RetentionPolicy::default()
        };
        let decisions = policy.plan_keeping(&sets, now, dependencies);
        assert_eq!(kept(&decisions), [F2, I3]);
        // A dependency that is not in the listing (a chain already broken) is ignored.
        let broken = vec![base_set(I2, "incr", &[F1, D1]), base_set(I3, "incr", &[I2])];
        let decisions = count(1).plan_keeping(&broken, now, dependencies);
        assert_eq!(kept(&decisions), [I2, I3]);
    }

    #[test]
    fn dependencies_are_followed_transitively() {
        // Kafka-style: each set names only the one it continues.
        let sets = chains();
        let previous = |set: &SetInfo| -> Vec<String> {
            match set.id.as_str() {
                I1 => vec![F1.into()],
                D1 => vec![I1.into()],
                I2 => vec![D1.into()],
                _ => vec![],
            }
        };
        let decisions = count(3).plan_keeping(&sets, crate::timefmt::now(), previous);
        assert_eq!(kept(&decisions), [F1, I1, D1, I2, F2, I3]);
        assert_eq!(
            decisions[0].reason,
            format!("needed by incremental set {I1}")
        );
    }

    #[test]
    fn apply_deletes_whole_chains_and_keeps_kept_ones() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::create(&crate::storage::Location::Local(dir.path().into())).unwrap();
        for set in chains() {
            set.manifest
                .unwrap()
                .save(repo.store(), &set.prefix)
                .unwrap();
        }
        let ids = |repo: &Repository| -> Vec<String> {
            repo.list(Kind::Base)
                .unwrap()
                .into_iter()
                .map(|s| s.id)
                .collect()
        };
        let planned = count(3)
            .apply_keeping(&repo, Kind::Base, true, dependencies)
            .unwrap();
        assert_eq!(kept(&planned), [F1, D1, I2, F2, I3]);
        assert_eq!(ids(&repo).len(), 6, "a dry run deletes nothing");
        count(3)
            .apply_keeping(&repo, Kind::Base, false, dependencies)
            .unwrap();
        assert_eq!(ids(&repo), [F1, D1, I2, F2, I3]);
        count(1)
            .apply_keeping(&repo, Kind::Base, false, dependencies)
            .unwrap();
        assert_eq!(ids(&repo), [F2, I3]);
    }
}

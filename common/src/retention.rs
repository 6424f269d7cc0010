//! Retention of backup sets: by age, by count and grandfather-father-son.
//!
//! A complete set is deleted only when no rule keeps it; the newest complete set is always
//! kept, whatever the rules say. Incomplete sets (no manifest) older than a grace period are
//! leftovers of crashed runs and are removed; younger ones may still be running.

use std::collections::HashSet;
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

/// The verdict on one set.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Decision {
    pub id: String,
    pub keep: bool,
    pub reason: String,
}

/// When a set was taken: manifest start time, else the time in its id.
fn set_time(set: &SetInfo) -> Option<OffsetDateTime> {
    set.manifest.as_ref().map(|m| m.started_at).or(set.started)
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

    /// Plans and, unless `dry_run`, deletes. Returns every decision; logs each deletion.
    pub fn apply(
        &self,
        repo: &Repository,
        kind: Kind,
        dry_run: bool,
    ) -> anyhow::Result<Vec<Decision>> {
        let sets = repo.list(kind)?;
        let decisions = self.plan(&sets, crate::timefmt::now());
        for (set, decision) in sets.iter().zip(&decisions) {
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

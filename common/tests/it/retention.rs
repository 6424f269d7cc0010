//! Retention decisions on real set directories: age, count, GFS, never the last good set,
//! incomplete leftovers.

use common::manifest::{Manifest, SetStatus, MANIFEST_VERSION};
use common::repo::{Kind, Repository};
use common::retention::{Gfs, RetentionPolicy};
use common::timefmt;
use time::OffsetDateTime;

/// Writes a complete set started `days_ago` days before `now` (empty, but a valid manifest).
fn complete_set(repo: &Repository, now: OffsetDateTime, hours_ago: i64) -> String {
    let started = now - time::Duration::hours(hours_ago);
    let id = timefmt::id_string(started);
    let prefix = format!("base/{id}");
    Manifest {
        format_version: MANIFEST_VERSION,
        kind: common::Kind::Base,
        id: id.clone(),
        tool: "test".into(),
        tool_version: "0".into(),
        started_at: started,
        finished_at: started,
        status: SetStatus::Complete,
        source: serde_json::Value::Null,
        files: vec![],
        details: serde_json::Value::Null,
    }
    .save(repo.store(), &prefix)
    .unwrap();
    id
}

fn incomplete_set(repo: &Repository, now: OffsetDateTime, hours_ago: i64) -> String {
    let id = timefmt::id_string(now - time::Duration::hours(hours_ago));
    std::fs::create_dir_all(repo.local_root().unwrap().join(Kind::Base.name()).join(&id)).unwrap();
    id
}

fn remaining(repo: &Repository) -> Vec<String> {
    repo.list(Kind::Base)
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect()
}

#[test]
fn age_rule_deletes_old_sets_and_old_leftovers_only() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::create(&common::storage::Location::Local(dir.path().into())).unwrap();
    let now = timefmt::now();
    let old = complete_set(&repo, now, 24 * 10);
    let recent = complete_set(&repo, now, 24 * 3);
    let newest = complete_set(&repo, now, 1);
    let stale_leftover = incomplete_set(&repo, now, 24);
    let running = incomplete_set(&repo, now, 0);
    let policy = RetentionPolicy {
        max_age_days: Some(7),
        ..RetentionPolicy::default()
    };

    let planned = policy.apply(&repo, Kind::Base, true).unwrap();
    assert_eq!(planned.iter().filter(|d| !d.keep).count(), 2);
    assert_eq!(remaining(&repo).len(), 5, "dry run deletes nothing");

    policy.apply(&repo, Kind::Base, false).unwrap();
    let left = remaining(&repo);
    assert!(!left.contains(&old));
    assert!(!left.contains(&stale_leftover));
    for id in [&recent, &newest, &running] {
        assert!(left.contains(id), "{id} should be kept: {left:?}");
    }
}

#[test]
fn newest_complete_set_survives_any_policy() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::create(&common::storage::Location::Local(dir.path().into())).unwrap();
    let now = timefmt::now();
    complete_set(&repo, now, 24 * 40);
    let last_good = complete_set(&repo, now, 24 * 30);
    // A newer crashed run must not count as the last good set.
    incomplete_set(&repo, now, 24 * 2);
    let policy = RetentionPolicy {
        max_age_days: Some(7),
        keep_count: Some(0),
        ..RetentionPolicy::default()
    };
    policy.apply(&repo, Kind::Base, false).unwrap();
    assert_eq!(remaining(&repo), vec![last_good]);
}

#[test]
fn count_rule_keeps_the_newest_n() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::create(&common::storage::Location::Local(dir.path().into())).unwrap();
    let now = timefmt::now();
    let ids: Vec<String> = (0..6)
        .map(|i| complete_set(&repo, now, 24 * (20 - i)))
        .collect();
    let policy = RetentionPolicy {
        max_age_days: None,
        keep_count: Some(3),
        ..RetentionPolicy::default()
    };
    policy.apply(&repo, Kind::Base, false).unwrap();
    assert_eq!(remaining(&repo), ids[3..].to_vec());
}

#[test]
fn gfs_keeps_one_per_period() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::create(&common::storage::Location::Local(dir.path().into())).unwrap();
    // A fixed "now" so calendar buckets are predictable: Saturday 2026-11-21 12:00 UTC.
    let now = timefmt::parse_timestamp("2026-11-21T12:00:00Z").unwrap();
    // Two sets a day for 70 days.
    let mut all = Vec::new();
    for day in 0..70 {
        for hour in [1, 7] {
            all.push(complete_set(&repo, now, day * 24 + hour));
        }
    }
    let policy = RetentionPolicy {
        gfs: Gfs {
            daily: 3,
            weekly: 2,
            monthly: 3,
            yearly: 0,
        },
        ..RetentionPolicy::default()
    };
    let sets = repo.list(Kind::Base).unwrap();
    let decisions = policy.plan(&sets, now);
    let kept: Vec<&str> = decisions
        .iter()
        .filter(|d| d.keep)
        .map(|d| d.id.as_str())
        .collect();
    // Daily: newest of 21, 20, 19 Nov (11:00 on each day). Weekly: newest of this ISO week
    // (21 Nov) and the previous (15 Nov). Monthly: newest of Nov, Oct, Sep.
    let expected = [
        "20260930T110000Z", // September's newest (Sep 30 11:00)
        "20261031T110000Z", // October's newest
        "20261115T110000Z", // previous ISO week (Mon 9 - Sun 15 Nov)
        "20261119T110000Z",
        "20261120T110000Z",
        "20261121T110000Z", // newest overall: daily, weekly, monthly
    ];
    assert_eq!(kept, expected);
    assert_eq!(all.len(), 140);
}

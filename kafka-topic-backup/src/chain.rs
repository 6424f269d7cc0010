//! Incremental chains and retention: an incremental set is useless without the sets it
//! continues, so retention keeps every predecessor of a set it keeps.

use common::repo::{Kind, Repository, SetInfo};
use common::retention::{Decision, RetentionPolicy};

use crate::backup::details_of;

/// Applies `policy` to the Kafka sets, keeping the predecessors of kept incremental sets.
/// Returns the ids deleted (or that would be, with `dry_run`).
pub fn apply_retention(
    repo: &Repository,
    policy: &RetentionPolicy,
    dry_run: bool,
) -> anyhow::Result<Vec<String>> {
    let sets = repo.list(Kind::Kafka)?;
    let mut decisions = policy.plan(&sets, common::timefmt::now());
    keep_predecessors(&sets, &mut decisions);
    let mut deleted = Vec::new();
    for (set, decision) in sets.iter().zip(&decisions) {
        if decision.keep {
            continue;
        }
        if dry_run {
            tracing::info!(
                "retention would delete kafka set {} ({})",
                set.id,
                decision.reason
            );
        } else {
            tracing::info!(
                "retention deletes kafka set {} ({})",
                set.id,
                decision.reason
            );
            repo.delete_set(set).map_err(|e| {
                anyhow::anyhow!(
                    "cannot delete kafka set {}: {e}",
                    repo.describe(&set.prefix)
                )
            })?;
        }
        deleted.push(set.id.clone());
    }
    Ok(deleted)
}

fn keep_predecessors(sets: &[SetInfo], decisions: &mut [Decision]) {
    loop {
        let mut changed = false;
        for index in 0..sets.len() {
            if !decisions[index].keep {
                continue;
            }
            let Some(details) = details_of(&sets[index]) else {
                continue;
            };
            // The cut is in clear: retention needs no key, encrypted sets or not.
            for topic in &details.cuts() {
                let Some(previous) = &topic.incremental_from else {
                    continue;
                };
                if let Some(at) = sets.iter().position(|s| &s.id == previous) {
                    if !decisions[at].keep {
                        decisions[at].keep = true;
                        decisions[at].reason =
                            format!("continued by incremental set {}", sets[index].id);
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::manifest::{Manifest, SetStatus, MANIFEST_VERSION};
    use common::topic_archive::{KafkaSetDetails, SetTopic, TopicCut};

    /// A set of topic `t`; an encrypted set's manifest holds only the cut in clear.
    fn set_of(id: &str, incremental_from: Option<&str>, encrypted: bool) -> SetInfo {
        let mut details = KafkaSetDetails {
            archive_version: 1,
            topics: vec![SetTopic {
                topic: "t".into(),
                file: "t.kta".into(),
                partition_count: 1,
                replication_factor: 1,
                incremental_from: incremental_from.map(str::to_string),
                records: 0,
                partitions: vec![],
                groups: vec![],
            }],
            cut: vec![],
        };
        if encrypted {
            details.cut = details.topics.iter().map(TopicCut::from).collect();
            details.topics.clear();
        }
        let started = common::timefmt::parse_id_time(id).unwrap();
        SetInfo {
            id: id.into(),
            prefix: format!("kafka/{id}"),
            started: Some(started),
            manifest: Some(Manifest {
                format_version: MANIFEST_VERSION,
                kind: "kafka".into(),
                id: id.into(),
                tool: "kafka-topic-backup".into(),
                tool_version: "0".into(),
                started_at: started,
                finished_at: started,
                status: SetStatus::Complete,
                source: serde_json::Value::Null,
                files: vec![],
                details: serde_json::to_value(details).unwrap(),
            }),
            manifest_error: None,
        }
    }

    fn set(id: &str, incremental_from: Option<&str>) -> SetInfo {
        set_of(id, incremental_from, false)
    }

    #[test]
    fn kept_incremental_sets_keep_their_predecessors() {
        let sets = vec![
            set("20200101T000000Z", None),
            set("20200102T000000Z", Some("20200101T000000Z")),
            // Encrypted: its chain is read from the cut, without a key.
            set_of("20200103T000000Z", Some("20200102T000000Z"), true),
            set("20200104T000000Z", None),
        ];
        let policy = RetentionPolicy {
            keep_count: Some(2),
            ..RetentionPolicy::default()
        };
        let mut decisions = policy.plan(&sets, common::timefmt::now());
        assert!(!decisions[0].keep && !decisions[1].keep);
        keep_predecessors(&sets, &mut decisions);
        let kept: Vec<bool> = decisions.iter().map(|d| d.keep).collect();
        assert_eq!(kept, vec![true, true, true, true]);
        assert!(decisions[0].reason.contains("20200102T000000Z"));

        let policy = RetentionPolicy {
            keep_count: Some(1),
            ..RetentionPolicy::default()
        };
        let mut decisions = policy.plan(&sets, common::timefmt::now());
        keep_predecessors(&sets, &mut decisions);
        let kept: Vec<bool> = decisions.iter().map(|d| d.keep).collect();
        assert_eq!(kept, vec![false, false, false, true]);
    }
}

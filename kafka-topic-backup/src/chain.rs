//! Incremental chains and retention: an incremental set is useless without the sets it
//! continues, so retention keeps every predecessor of a set it keeps.

use common::repo::{Kind, Repository, SetInfo};
use common::retention::RetentionPolicy;

use crate::backup::details_of;

/// Applies `policy` to the Kafka sets, keeping the predecessors of kept incremental sets.
/// Returns the ids deleted (or that would be, with `dry_run`).
pub fn apply_retention(
    repo: &Repository,
    policy: &RetentionPolicy,
    dry_run: bool,
) -> anyhow::Result<Vec<String>> {
    let decisions = policy.apply_keeping(repo, Kind::Kafka, dry_run, predecessors)?;
    Ok(decisions
        .into_iter()
        .filter(|d| !d.keep)
        .map(|d| d.id)
        .collect())
}

/// The sets an incremental set continues (one per topic exported incrementally).
fn predecessors(set: &SetInfo) -> Vec<String> {
    // The cut is in clear: retention needs no key, encrypted sets or not.
    let Some(details) = details_of(set) else {
        return Vec::new();
    };
    let mut previous: Vec<String> = details
        .cuts()
        .into_iter()
        .filter_map(|topic| topic.incremental_from)
        .collect();
    previous.sort();
    previous.dedup();
    previous
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
                kind: common::Kind::Kafka,
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
        let plain = policy.plan(&sets, common::timefmt::now());
        assert!(!plain[0].keep && !plain[1].keep);
        let decisions = policy.plan_keeping(&sets, common::timefmt::now(), predecessors);
        let kept: Vec<bool> = decisions.iter().map(|d| d.keep).collect();
        assert_eq!(kept, vec![true, true, true, true]);
        assert!(decisions[0].reason.contains("20200102T000000Z"));

        let policy = RetentionPolicy {
            keep_count: Some(1),
            ..RetentionPolicy::default()
        };
        let decisions = policy.plan_keeping(&sets, common::timefmt::now(), predecessors);
        let kept: Vec<bool> = decisions.iter().map(|d| d.keep).collect();
        assert_eq!(kept, vec![false, false, false, true]);
    }
}

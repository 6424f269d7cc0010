//! The JSON parts of an archive (META and END chunks) and the `details` of a Kafka backup
//! set's manifest.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// File name suffix of an archive in a backup set: `<topic>.kta`.
pub const ARCHIVE_EXTENSION: &str = ".kta";

/// What the META chunk says about the topic, captured before its records were read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub topic: String,
    /// Partition count of the source topic.
    pub partitions: i32,
    /// Replicas per partition on the source cluster.
    pub replication_factor: i32,
    /// Every config DescribeConfigs returned; sensitive values are null.
    pub configs: Vec<ConfigEntry>,
    /// The cut: which offsets of which partition this archive holds.
    pub ranges: Vec<PartitionRange>,
    /// Committed offsets of every consumer group with an offset on this topic.
    pub groups: Vec<GroupOffsets>,
    /// Id of the backup set this archive continues (incremental backups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental_from: Option<String>,
    /// When the cut was taken.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub captured_at: Option<OffsetDateTime>,
    /// Name and version of the writing tool.
    #[serde(default)]
    pub writer: String,
}

impl TopicMeta {
    /// Configs a user or operator set on the topic (not defaults, not read-only), which a
    /// restore should apply when it creates the topic.
    pub fn overrides(&self) -> impl Iterator<Item = &ConfigEntry> {
        self.configs
            .iter()
            .filter(|c| !c.is_default && !c.read_only && !c.sensitive && c.value.is_some())
    }

    /// The range of a partition.
    pub fn range(&self, partition: i32) -> Option<&PartitionRange> {
        self.ranges.iter().find(|r| r.partition == partition)
    }
}

/// One topic config as DescribeConfigs reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigEntry {
    pub name: String,
    /// None when the broker hides it (sensitive) or has no value.
    pub value: Option<String>,
    /// True when the value is the broker's default, false when set on the topic or broker.
    pub is_default: bool,
    /// Where the value comes from (`dynamic_topic`, `default`, ...).
    pub source: String,
    pub read_only: bool,
    pub sensitive: bool,
}

/// The offsets of one partition in this archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRange {
    pub partition: i32,
    /// Watermarks when the cut was taken.
    pub low_watermark: i64,
    pub high_watermark: i64,
    /// First offset exported (inclusive).
    pub start_offset: i64,
    /// Offset the export stops before (exclusive); the next incremental starts here.
    pub end_offset: i64,
    /// Records that existed between the previous set and this one but were deleted before
    /// they could be read (retention).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap: Option<OffsetGap>,
}

/// A range of offsets that was lost, kept in the record rather than hidden.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetGap {
    /// First missing offset (inclusive).
    pub from: i64,
    /// End of the missing range (exclusive).
    pub to: i64,
}

/// Committed offsets of one consumer group on this topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupOffsets {
    pub group: String,
    pub offsets: Vec<GroupPartitionOffset>,
}

/// A group's committed offset (the next record it will read) on one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupPartitionOffset {
    pub partition: i32,
    pub offset: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
}

/// The END chunk: totals a reader checks against what it read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamEnd {
    /// RECORDS chunks in the stream.
    pub chunks: u64,
    /// Records in the stream.
    pub records: u64,
    pub partitions: Vec<PartitionEnd>,
}

/// What was actually exported from one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionEnd {
    pub partition: i32,
    pub records: u64,
    pub first_offset: Option<i64>,
    pub last_offset: Option<i64>,
    /// Where the next incremental backup of this partition starts.
    pub next_offset: i64,
    /// Offsets of the cut that retention deleted while the export ran, before they could be
    /// read: lost, and said so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost: Option<OffsetGap>,
}

/// The `details` of a Kafka backup set's manifest.
///
/// A plain set has `topics` in `manifest.json`. An encrypted set keeps `topics` (record
/// counts, consumer groups) in its encrypted private part ([`PRIVATE_DETAILS`], see
/// `common::repo::Repository::reveal`) and `cut` in clear: what incremental runs, retention
/// and choosing the sets to replay need without a key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KafkaSetDetails {
    /// Archive format version of the set's files.
    pub archive_version: u16,
    /// Empty in an encrypted set's manifest until revealed.
    #[serde(default)]
    pub topics: Vec<SetTopic>,
    /// Written by encrypted sets only; plain sets derive it from `topics` ([`Self::cuts`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cut: Vec<TopicCut>,
}

/// The keys of a Kafka set's `details` stored in the encrypted private part of an encrypted
/// set.
pub const PRIVATE_DETAILS: &[&str] = &["topics"];

/// Where one topic's export stopped, in clear in every set: which file, which set it
/// continues, and the offsets of each partition (positions, like LSNs, not content).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicCut {
    pub topic: String,
    /// The archive file, relative to the set.
    pub file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental_from: Option<String>,
    pub partitions: Vec<PartitionCut>,
}

/// One partition's offsets in a set: `start_offset..end_offset` (end exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionCut {
    pub partition: i32,
    pub start_offset: i64,
    pub end_offset: i64,
}

impl TopicCut {
    pub fn partition(&self, partition: i32) -> Option<&PartitionCut> {
        self.partitions.iter().find(|p| p.partition == partition)
    }
}

impl From<&SetTopic> for TopicCut {
    fn from(topic: &SetTopic) -> TopicCut {
        TopicCut {
            topic: topic.topic.clone(),
            file: topic.file.clone(),
            incremental_from: topic.incremental_from.clone(),
            partitions: topic
                .partitions
                .iter()
                .map(|p| PartitionCut {
                    partition: p.partition,
                    start_offset: p.start_offset,
                    end_offset: p.end_offset,
                })
                .collect(),
        }
    }
}

/// One topic of a Kafka backup set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetTopic {
    pub topic: String,
    /// The archive file, relative to the set.
    pub file: String,
    pub partition_count: i32,
    pub replication_factor: i32,
    /// Set id this topic's export continues from, when incremental.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental_from: Option<String>,
    pub records: u64,
    pub partitions: Vec<SetPartition>,
    /// Consumer groups whose offsets were saved.
    pub groups: Vec<String>,
}

impl SetTopic {
    pub fn partition(&self, partition: i32) -> Option<&SetPartition> {
        self.partitions.iter().find(|p| p.partition == partition)
    }
}

/// One partition of a topic in a backup set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetPartition {
    pub partition: i32,
    pub start_offset: i64,
    pub end_offset: i64,
    pub records: u64,
    pub first_offset: Option<i64>,
    pub last_offset: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap: Option<OffsetGap>,
}

impl KafkaSetDetails {
    pub fn topic(&self, name: &str) -> Option<&SetTopic> {
        self.topics.iter().find(|t| t.topic == name)
    }

    /// The cut of every topic, readable without a key: `cut` when the set wrote one (an
    /// encrypted set), else taken from `topics` (plain sets, old and new).
    pub fn cuts(&self) -> Vec<TopicCut> {
        if self.cut.is_empty() {
            self.topics.iter().map(TopicCut::from).collect()
        } else {
            self.cut.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_come_from_topics_in_plain_sets_and_from_cut_in_encrypted_ones() {
        // A plain set's details as written before encryption existed.
        let plain: KafkaSetDetails = serde_json::from_value(serde_json::json!({
            "archive_version": 1,
            "topics": [{"topic": "t", "file": "t.kta", "partition_count": 1,
                "replication_factor": 1, "incremental_from": "A", "records": 3,
                "partitions": [{"partition": 0, "start_offset": 2, "end_offset": 5,
                    "records": 3, "first_offset": 2, "last_offset": 4}],
                "groups": ["g"]}]
        }))
        .unwrap();
        let expected = vec![TopicCut {
            topic: "t".into(),
            file: "t.kta".into(),
            incremental_from: Some("A".into()),
            partitions: vec![PartitionCut {
                partition: 0,
                start_offset: 2,
                end_offset: 5,
            }],
        }];
        assert_eq!(plain.cuts(), expected);
        assert!(!serde_json::to_string(&plain).unwrap().contains("\"cut\""));

        // An encrypted set's clear details: the cut only.
        let clear = KafkaSetDetails {
            archive_version: 1,
            topics: Vec::new(),
            cut: expected.clone(),
        };
        let text = serde_json::to_value(&clear).unwrap();
        let mut without_topics = text.clone();
        without_topics.as_object_mut().unwrap().remove("topics");
        let back: KafkaSetDetails = serde_json::from_value(without_topics).unwrap();
        assert_eq!(back.cuts(), expected);
        assert!(back.topic("t").is_none());
    }
}

//! The run's summary on stdout: text for people, one JSON line for programs.

use common::output::{self, OutputFormat};
use common::topic_archive::{OffsetGap, SetTopic};
use serde::Serialize;

/// What one topic yielded.
#[derive(Debug, Serialize)]
pub struct TopicReport {
    pub topic: String,
    pub file: String,
    pub records: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incremental_from: Option<String>,
    pub partitions: Vec<PartitionReport>,
    /// Consumer groups whose committed offsets were saved.
    pub groups: Vec<String>,
}

/// What one partition yielded: `start_offset..end_offset` is the cut (end exclusive).
#[derive(Debug, Serialize)]
pub struct PartitionReport {
    pub partition: i32,
    pub records: u64,
    pub start_offset: i64,
    pub end_offset: i64,
    pub first_offset: Option<i64>,
    pub last_offset: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gap: Option<OffsetGap>,
}

impl TopicReport {
    pub fn new(topic: &SetTopic) -> TopicReport {
        TopicReport {
            topic: topic.topic.clone(),
            file: topic.file.clone(),
            records: topic.records,
            incremental_from: topic.incremental_from.clone(),
            partitions: topic
                .partitions
                .iter()
                .map(|p| PartitionReport {
                    partition: p.partition,
                    records: p.records,
                    start_offset: p.start_offset,
                    end_offset: p.end_offset,
                    first_offset: p.first_offset,
                    last_offset: p.last_offset,
                    gap: p.gap,
                })
                .collect(),
            groups: topic.groups.clone(),
        }
    }
}

/// The whole run.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// The backup set id.
    pub id: Option<String>,
    pub dir: Option<String>,
    pub incremental: bool,
    /// Whether the set's files are encrypted (age).
    pub encrypted: bool,
    pub records: u64,
    /// Stored bytes of the set.
    pub bytes: u64,
    pub topics: Vec<TopicReport>,
    /// Sets retention deleted (or would delete, with --dry-run-retention).
    pub retention_deleted: Vec<String>,
    pub retention_dry_run: bool,
}

/// Prints the summary: per topic a line, then the set line (text), or one JSON line.
pub fn print(format: OutputFormat, summary: &Summary) -> anyhow::Result<()> {
    if format == OutputFormat::Text {
        for topic in &summary.topics {
            let ranges: Vec<String> = topic
                .partitions
                .iter()
                .map(|p| {
                    let gap = p
                        .gap
                        .map(|g| format!(" (gap {}..{})", g.from, g.to))
                        .unwrap_or_default();
                    format!("{}:{}..{}{gap}", p.partition, p.start_offset, p.end_offset)
                })
                .collect();
            output::text_line(&format!(
                "{}: {} records [{}], {} consumer group(s)",
                topic.topic,
                topic.records,
                ranges.join(" "),
                topic.groups.len()
            ))?;
        }
    }
    output::summary(format, summary, || {
        let mut line = format!(
            "kafka backup set {} complete: {} records, {} bytes",
            summary.id.as_deref().unwrap_or("-"),
            summary.records,
            summary.bytes
        );
        if !summary.retention_deleted.is_empty() {
            let verb = if summary.retention_dry_run {
                "would delete"
            } else {
                "deleted"
            };
            line.push_str(&format!(
                "; retention {verb} {}",
                summary.retention_deleted.join(", ")
            ));
        }
        line
    })
}

//! What the backups can give before anything is restored: the CDC topics (and others) in the
//! newest Kafka backup, a slot set to recreate the connector's slots from, and the target.
//! What is missing is said with the window it leaves inconsistent.

use anyhow::Context;
use common::repo::{Kind, Repository};
use common::topic_archive::KafkaSetDetails;
use time::OffsetDateTime;

use super::CutArgs;

/// The restore plan.
pub struct Plan {
    /// CDC topics in the newest Kafka backup.
    pub cdc_topics: Vec<String>,
    /// Other topics to replay by time.
    pub other_topics: Vec<String>,
    /// When the newest Kafka backup was taken.
    pub kafka_backup_time: Option<OffsetDateTime>,
    /// The pitr-restore target flags.
    pub target_flags: Vec<String>,
    /// A time target, for the topics replayed by time.
    pub target_time: Option<String>,
    pub missing: Vec<String>,
}

impl Plan {
    pub fn prepare(args: &CutArgs) -> anyhow::Result<Plan> {
        let repo = Repository::open(&args.repo.backup_dir)?;
        let cdc = whole_name(&args.cdc_topic_regex)
            .with_context(|| format!("invalid --cdc-topic-regex '{}'", args.cdc_topic_regex))?;
        let other = args
            .other_topic_regex
            .as_deref()
            .map(whole_name)
            .transpose()
            .context("invalid --other-topic-regex")?;
        let (topics, kafka_backup_time) = newest_kafka_topics(&repo)?;
        let (target_flags, target_time) = target_flags(args);
        let mut plan = Plan {
            cdc_topics: topics.iter().filter(|t| cdc.is_match(t)).cloned().collect(),
            other_topics: topics
                .iter()
                .filter(|t| !cdc.is_match(t) && other.as_ref().is_some_and(|o| o.is_match(t)))
                .cloned()
                .collect(),
            kafka_backup_time,
            target_flags,
            target_time,
            missing: Vec::new(),
        };
        if plan.cdc_topics.is_empty() {
            plan.missing.push(format!(
                "no backup of a CDC topic matching '{}' in {} (its topics: {}): every change up to the target has no event to restore",
                args.cdc_topic_regex,
                repo.describe(Kind::Kafka.name()),
                if topics.is_empty() { "none".to_string() } else { topics.join(", ") }
            ));
        }
        if repo.complete_sets(Kind::Slots)?.is_empty() {
            plan.missing.push(format!(
                "no slot set in {}: the connector's replication slots cannot be recreated, so changes after the restore would not stream",
                repo.describe(Kind::Slots.name())
            ));
        }
        Ok(plan)
    }

    pub fn target_description(&self) -> String {
        if self.target_flags.is_empty() {
            "latest".into()
        } else {
            self.target_flags.join(" ")
        }
    }
}

/// A topic-name expression matching whole names, as kafka-topic-backup's --topic-regex.
fn whole_name(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::Regex::new(&format!("^(?:{pattern})$"))
}

/// The topics of the newest complete Kafka set (the cut is in clear in every set) and when it
/// was taken.
fn newest_kafka_topics(repo: &Repository) -> anyhow::Result<(Vec<String>, Option<OffsetDateTime>)> {
    let Some(set) = repo.complete_sets(Kind::Kafka)?.pop() else {
        return Ok((Vec::new(), None));
    };
    let manifest = set
        .manifest()
        .with_context(|| format!("Kafka set {} has no valid manifest", set.id))?;
    let details: KafkaSetDetails = serde_json::from_value(manifest.details.clone())
        .with_context(|| format!("Kafka set {} has unreadable details", manifest.id))?;
    let mut topics: Vec<String> = details.cuts().into_iter().map(|c| c.topic).collect();
    topics.sort();
    Ok((topics, Some(manifest.started_at)))
}

/// The pitr-restore flags of the target, and the time of a time target.
fn target_flags(args: &CutArgs) -> (Vec<String>, Option<String>) {
    let flag = |name: &str, value: &Option<String>| {
        value.as_ref().map(|v| vec![format!("--{name}"), v.clone()])
    };
    let flags = flag("target-time", &args.target_time)
        .or_else(|| flag("target-lsn", &args.target_lsn))
        .or_else(|| flag("target-name", &args.target_name))
        .or_else(|| flag("target", &args.target))
        .unwrap_or_default();
    (flags, args.target_time.clone())
}

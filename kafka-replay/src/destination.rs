//! The target topic as one replay sees it: the cluster, the topic's partition count, where
//! each record goes, and creating the topic when it does not exist.

use common::topic_archive::TopicMeta;
use rdkafka::ClientConfig;

use crate::partitioner::murmur2_partition;
use crate::target::{Target, TopicShape};
use crate::Args;

/// Where the records go: the target cluster, the topic, and how partitions map onto it.
pub struct Destination {
    pub target: Target,
    pub topic: String,
    /// The topic as the target knew it before the replay; None when it is to be created.
    pub existing: Option<TopicShape>,
    /// The target topic's partition count (existing, asked for, or the source's).
    pub partitions: i32,
    /// Keyed records go where murmur2 sends them, not to the same partition number.
    pub repartition: bool,
}

impl Destination {
    /// Connects to the target cluster and learns what it holds of `topic`.
    pub fn connect(
        args: &Args,
        config: &ClientConfig,
        topic: String,
        meta: &TopicMeta,
    ) -> anyhow::Result<Destination> {
        let (target, existing) = Target::connect(config, &args.kafka.bootstrap_servers, &topic)?;
        tracing::debug!("target cluster answered");
        let partitions = existing
            .map(|t| t.partitions)
            .or(args.partitions.map(|p| p.get()))
            .unwrap_or(meta.partitions)
            .max(1);
        Ok(Destination {
            target,
            topic,
            existing,
            partitions,
            repartition: args.repartition,
        })
    }

    /// The target partition of a record read from source `partition`.
    pub fn partition_of(&self, partition: i32, key: Option<&[u8]>) -> i32 {
        if !self.repartition {
            return partition;
        }
        match key {
            Some(key) => murmur2_partition(key, self.partitions),
            None => partition % self.partitions,
        }
    }

    /// With --repartition a resume cannot be checked: the target must hold nothing yet.
    pub fn check_empty(&self) -> anyhow::Result<()> {
        if self.existing.is_none() {
            return Ok(());
        }
        for partition in 0..self.partitions {
            let (low, high) = self.target.watermarks(&self.topic, partition)?;
            if high > low {
                anyhow::bail!(
                    "--repartition cannot resume: target {}[{partition}] already holds records; replay into an empty topic, or pass --append",
                    self.topic
                );
            }
        }
        Ok(())
    }

    /// Creates the target topic with the source's partition count (or the one asked for), its
    /// replication factor as far as the brokers allow, and its saved configs.
    pub fn create(&self, args: &Args, meta: &TopicMeta) -> anyhow::Result<()> {
        let (target, topic, partitions) = (&self.target, self.topic.as_str(), self.partitions);
        let brokers = target.brokers().max(1) as i32;
        let replication = match args.replication_factor {
            Some(rf) => rf.get(),
            None => {
                let saved = meta.replication_factor.max(1);
                if saved > brokers {
                    tracing::warn!(
                        "the source had replication factor {saved}, the target has {brokers} broker(s): creating {topic} with {brokers}"
                    );
                }
                saved.min(brokers)
            }
        };
        let mut configs: Vec<(String, String)> = Vec::new();
        if !args.no_topic_configs {
            for entry in meta.overrides() {
                let value = entry.value.clone().unwrap_or_default();
                if entry.name == "message.timestamp.type" && value == "LogAppendTime" {
                    tracing::warn!(
                        "the source topic stamps records at append time; {topic} is created with CreateTime so the saved timestamps are kept"
                    );
                    continue;
                }
                configs.push((entry.name.clone(), value));
            }
        }
        tracing::info!(
            "creating topic {topic} with {partitions} partition(s), replication factor {replication}{}",
            if configs.is_empty() {
                String::new()
            } else {
                format!(
                    ", configs {}",
                    configs
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            }
        );
        target.create_topic(topic, partitions, replication, &configs)
    }
}

//! Talking to the source cluster: client settings, topic metadata and watermarks, topic
//! configs (DescribeConfigs) and the committed offsets of every consumer group.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use common::kafka::Admin;
use common::topic_archive::{ConfigEntry, GroupOffsets, GroupPartitionOffset};
use rdkafka::admin::{AdminOptions, ConfigSource, ResourceSpecifier};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// How long a metadata or admin request may take before the cluster counts as unreachable.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// A group's committed offsets, by topic.
type Committed = BTreeMap<String, Vec<GroupPartitionOffset>>;

/// Consumer groups whose offsets are fetched at the same time.
const GROUP_FETCHERS: usize = 16;

pub use common::kafka::client_config;

/// Whether librdkafka knows `key` as a consumer-only property (it warns when a producer-type
/// client such as the admin client is given one).
fn consumer_only(key: &str) -> bool {
    key.starts_with("fetch.")
        || key.starts_with("queued.")
        || key.starts_with("enable.auto.")
        || key.starts_with("auto.")
        || [
            "isolation.level",
            "enable.partition.eof",
            "check.crcs",
            "session.timeout.ms",
            "heartbeat.interval.ms",
            "max.poll.interval.ms",
            "group.instance.id",
            "partition.assignment.strategy",
            "group.protocol",
            "group.remote.assignor",
        ]
        .contains(&key)
}

/// One topic as the metadata describes it.
#[derive(Debug, Clone)]
pub struct TopicInfo {
    pub name: String,
    pub partitions: Vec<i32>,
    pub replication_factor: i32,
}

/// A connection to the source cluster for everything but reading records.
pub struct Cluster {
    config: ClientConfig,
    consumer: BaseConsumer,
    admin: Admin,
    bootstrap: String,
}

impl Cluster {
    /// Connects and reads the metadata of the `named` topics, or of every topic when none is
    /// named (a `--topic-regex` run): a large cluster's full metadata is not asked for without
    /// need.
    pub fn connect(
        config: &ClientConfig,
        bootstrap: &str,
        named: &[String],
    ) -> anyhow::Result<(Cluster, Vec<TopicInfo>)> {
        let consumer: BaseConsumer = config
            .create()
            .context("invalid Kafka client settings (check -X and KAFKA_CLIENT_CONFIG)")?;
        let mut admin_config = config.clone();
        let consumer_keys: Vec<String> = admin_config
            .config_map()
            .keys()
            .filter(|k| consumer_only(k))
            .cloned()
            .collect();
        for key in &consumer_keys {
            admin_config.remove(key);
        }
        let admin = Admin::new(&admin_config)?;
        let cluster = Cluster {
            config: config.clone(),
            consumer,
            admin,
            bootstrap: bootstrap.to_string(),
        };
        let topics = if named.is_empty() {
            cluster.topics(None)?
        } else {
            let mut found = Vec::new();
            for name in named {
                found.extend(cluster.topics(Some(name))?);
            }
            found
        };
        Ok((cluster, topics))
    }

    /// Every topic of the cluster, or the one named (none when it does not exist; auto-creation
    /// is off, see `common::kafka::client_config`).
    fn topics(&self, name: Option<&str>) -> anyhow::Result<Vec<TopicInfo>> {
        let metadata = self
            .consumer
            .fetch_metadata(name, REQUEST_TIMEOUT)
            // KafkaError repeats its code as its source; one mention is enough.
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| {
                format!(
                    "cannot reach Kafka at {} (check --bootstrap-servers / KAFKA_BOOTSTRAP_SERVERS and the client settings)",
                    self.bootstrap
                )
            })?;
        Ok(metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none() && name.is_none_or(|n| t.name() == n))
            .map(|t| TopicInfo {
                name: t.name().to_string(),
                partitions: t.partitions().iter().map(|p| p.id()).collect(),
                replication_factor: t
                    .partitions()
                    .iter()
                    .map(|p| p.replicas().len() as i32)
                    .max()
                    .unwrap_or(0),
            })
            .collect())
    }

    /// Low and high watermark of a partition.
    pub fn watermarks(&self, topic: &str, partition: i32) -> anyhow::Result<(i64, i64)> {
        self.consumer
            .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)
            .with_context(|| format!("cannot fetch the watermarks of {topic}[{partition}]"))
    }

    /// The topic's configs, every entry with where its value comes from.
    pub fn configs(&self, topic: &str) -> anyhow::Result<Vec<ConfigEntry>> {
        let options = AdminOptions::new().request_timeout(Some(REQUEST_TIMEOUT));
        let resource = ResourceSpecifier::Topic(topic);
        let results = self
            .admin
            .block_on(self.admin.client.describe_configs([&resource], &options))
            .with_context(|| format!("DescribeConfigs of topic {topic} failed"))?;
        let mut entries = Vec::new();
        for result in results {
            let resource = result.map_err(|code| {
                anyhow::anyhow!("DescribeConfigs of topic {topic} failed: {code}")
            })?;
            for entry in resource.entries {
                entries.push(ConfigEntry {
                    source: source_name(&entry.source).to_string(),
                    is_default: entry.is_default || entry.source == ConfigSource::Default,
                    value: if entry.is_sensitive {
                        None
                    } else {
                        entry.value
                    },
                    name: entry.name,
                    read_only: entry.is_read_only,
                    sensitive: entry.is_sensitive,
                });
            }
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// The committed offsets of every consumer group on the given topics, by topic.
    ///
    /// Groups come from ListGroups; each group's offsets are read with a consumer that has
    /// that `group.id` (OffsetFetch), which neither joins the group nor changes it.
    pub fn group_offsets(
        &self,
        topics: &[TopicInfo],
    ) -> anyhow::Result<BTreeMap<String, Vec<GroupOffsets>>> {
        let list = self
            .consumer
            .fetch_group_list(None, REQUEST_TIMEOUT)
            .context(
                "cannot list consumer groups (ListGroups); --no-group-offsets skips saving them",
            )?;
        let mut names: Vec<String> = list
            .groups()
            .iter()
            .filter(|g| g.protocol_type().is_empty() || g.protocol_type() == "consumer")
            .map(|g| g.name().to_string())
            .collect();
        names.sort();
        names.dedup();
        drop(list);
        // One client per group (OffsetFetch is per group); a few at a time, since a cluster
        // may have hundreds of groups.
        let workers = names.len().clamp(1, GROUP_FETCHERS);
        let per_worker = names.len().div_ceil(workers);
        let results: Vec<anyhow::Result<Vec<(String, Committed)>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = names
                .chunks(per_worker.max(1))
                .map(|batch| {
                    scope.spawn(move || {
                        batch
                            .iter()
                            .map(|group| Ok((group.clone(), self.committed(group, topics)?)))
                            .collect()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a group-offset fetcher panicked")))
                })
                .collect()
        });
        let mut by_topic: BTreeMap<String, Vec<GroupOffsets>> = BTreeMap::new();
        for batch in results {
            for (group, found) in batch? {
                for (topic, offsets) in found {
                    by_topic.entry(topic).or_default().push(GroupOffsets {
                        group: group.clone(),
                        offsets,
                    });
                }
            }
        }
        for groups in by_topic.values_mut() {
            groups.sort_by(|a, b| a.group.cmp(&b.group));
        }
        Ok(by_topic)
    }

    fn committed(&self, group: &str, topics: &[TopicInfo]) -> anyhow::Result<Committed> {
        let consumer: BaseConsumer = self
            .config
            .clone()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .context("cannot create a consumer to read group offsets")?;
        let mut request = TopicPartitionList::new();
        for topic in topics {
            for &partition in &topic.partitions {
                request.add_partition(&topic.name, partition);
            }
        }
        let mut found: BTreeMap<String, Vec<GroupPartitionOffset>> = BTreeMap::new();
        {
            let committed = consumer
                .committed_offsets(request, REQUEST_TIMEOUT)
                .with_context(|| {
                    format!("cannot read the committed offsets of group {group} (--no-group-offsets skips them)")
                })?;
            for element in committed.elements() {
                if let Offset::Offset(offset) = element.offset() {
                    let metadata = element.metadata();
                    found.entry(element.topic().to_string()).or_default().push(
                        GroupPartitionOffset {
                            partition: element.partition(),
                            offset,
                            metadata: (!metadata.is_empty()).then(|| metadata.to_string()),
                        },
                    );
                }
            }
            // The list must go before its consumer, or dropping the consumer hangs.
            drop(committed);
        }
        drop(consumer);
        Ok(found)
    }
}

fn source_name(source: &ConfigSource) -> &'static str {
    match source {
        ConfigSource::Unknown => "unknown",
        ConfigSource::DynamicTopic => "dynamic_topic",
        ConfigSource::DynamicBroker => "dynamic_broker",
        ConfigSource::DynamicDefaultBroker => "dynamic_default_broker",
        ConfigSource::StaticBroker => "static_broker",
        ConfigSource::Default => "default",
    }
}

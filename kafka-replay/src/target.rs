//! The target cluster: topic metadata and creation, watermarks, reading back a record to
//! check a resume, and committing consumer-group offsets.

use std::time::{Duration, Instant};

use anyhow::Context;
use common::kafka::Admin;
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message, Timestamp};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::plan::Fingerprint;

/// How long a metadata or admin request may take before the cluster counts as unreachable.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

pub use common::kafka::client_config;

/// Producer-only properties, left out of the consumer and admin clients so librdkafka does
/// not warn that it ignores them.
const PRODUCER_ONLY: &[&str] = &[
    "acks",
    "request.required.acks",
    "enable.idempotence",
    "enable.gapless.guarantee",
    "linger.ms",
    "queue.buffering.max.ms",
    "queue.buffering.max.kbytes",
    "queue.buffering.max.messages",
    "batch.num.messages",
    "batch.size",
    "compression.type",
    "compression.codec",
    "compression.level",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "request.timeout.ms",
    "transactional.id",
    "transaction.timeout.ms",
    "partitioner",
    "sticky.partitioning.linger.ms",
    "retries",
    "message.send.max.retries",
];

/// The settings without producer-only properties.
fn without_producer_properties(config: &ClientConfig) -> ClientConfig {
    let mut config = config.clone();
    for key in PRODUCER_ONLY {
        config.remove(key);
    }
    config
}

/// A connection to the target cluster for everything but producing.
pub struct Target {
    config: ClientConfig,
    /// Made when a record must be read back (a resume check): a consumer's drop waits for
    /// its group to close, which a plain replay should not pay for.
    consumer: std::cell::OnceCell<BaseConsumer>,
    /// Metadata and watermarks. A producer that never produces: unlike a consumer or an
    /// admin client, it closes without waiting for a group or a polling thread.
    client: BaseProducer,
    /// Made when a topic must be created.
    admin: std::cell::OnceCell<Admin>,
    bootstrap: String,
    brokers: usize,
}

/// What the target knows about a topic.
#[derive(Debug, Clone, Copy)]
pub struct TopicShape {
    pub partitions: i32,
}

impl Target {
    /// Connects, checks that the cluster answers, and returns what it knows of `topic`.
    pub fn connect(
        config: &ClientConfig,
        bootstrap: &str,
        topic: &str,
    ) -> anyhow::Result<(Target, Option<TopicShape>)> {
        let hint = "invalid Kafka client settings (check -X and KAFKA_CLIENT_CONFIG)";
        let config = &without_producer_properties(config);
        let mut target = Target {
            config: config.clone(),
            consumer: std::cell::OnceCell::new(),
            client: config.create().context(hint)?,
            admin: std::cell::OnceCell::new(),
            bootstrap: bootstrap.to_string(),
            brokers: 0,
        };
        let (brokers, shape) = target.metadata(topic)?;
        target.brokers = brokers;
        Ok((target, shape))
    }

    /// Number of brokers in the cluster (when connected).
    pub fn brokers(&self) -> usize {
        self.brokers
    }

    fn unreachable(&self) -> String {
        format!(
            "cannot reach Kafka at {} (check --bootstrap-servers / KAFKA_BOOTSTRAP_SERVERS and the client settings)",
            self.bootstrap
        )
    }

    /// The topic's shape, or None when it does not exist.
    pub fn topic(&self, name: &str) -> anyhow::Result<Option<TopicShape>> {
        Ok(self.metadata(name)?.1)
    }

    /// The broker count and the shape of one topic. Only that topic is asked for (a cluster's
    /// full metadata can be large); `allow.auto.create.topics=false` (see [`client_config`])
    /// keeps the question from creating it.
    fn metadata(&self, name: &str) -> anyhow::Result<(usize, Option<TopicShape>)> {
        let metadata = self
            .client
            .client()
            .fetch_metadata(Some(name), REQUEST_TIMEOUT)
            // KafkaError repeats its code as its source; one mention is enough.
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| self.unreachable())?;
        let shape = metadata
            .topics()
            .iter()
            .find(|t| t.name() == name && t.error().is_none())
            .map(|t| TopicShape {
                partitions: t.partitions().len() as i32,
            });
        Ok((metadata.brokers().len(), shape))
    }

    /// Creates a topic and waits until its metadata shows every partition.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication: i32,
        configs: &[(String, String)],
    ) -> anyhow::Result<()> {
        let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(replication));
        for (key, value) in configs {
            topic = topic.set(key, value);
        }
        let options = AdminOptions::new()
            .operation_timeout(Some(REQUEST_TIMEOUT))
            .request_timeout(Some(REQUEST_TIMEOUT));
        let admin = self.admin()?;
        let results = admin
            .block_on(admin.client.create_topics([&topic], &options))
            .with_context(|| format!("CreateTopics {name} failed"))?;
        for result in results {
            result.map_err(|(topic, code)| {
                anyhow::anyhow!(
                    "cannot create topic {topic}: {code} (configs tried: {}; --no-topic-configs creates it with the broker's defaults)",
                    configs
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self
                .topic(name)?
                .is_some_and(|t| t.partitions >= partitions)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "topic {name} was created but its metadata did not appear within 30s"
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Low and high watermark of a partition.
    pub fn watermarks(&self, topic: &str, partition: i32) -> anyhow::Result<(i64, i64)> {
        self.client
            .client()
            .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)
            .with_context(|| format!("cannot fetch the watermarks of {topic}[{partition}]"))
    }

    /// The admin client, made on first use.
    fn admin(&self) -> anyhow::Result<&Admin> {
        if let Some(admin) = self.admin.get() {
            return Ok(admin);
        }
        let admin = Admin::new(&self.config)?;
        Ok(self.admin.get_or_init(|| admin))
    }

    /// The consumer that reads records back, made on first use.
    fn consumer(&self) -> anyhow::Result<&BaseConsumer> {
        if let Some(consumer) = self.consumer.get() {
            return Ok(consumer);
        }
        let mut config = self.config.clone();
        config
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true");
        if config.get("group.id").is_none() {
            // Never joined or committed (partitions are assigned); librdkafka wants one.
            config.set("group.id", "kafka-replay");
        }
        let consumer: BaseConsumer = config
            .create()
            .context("invalid Kafka client settings (check -X and KAFKA_CLIENT_CONFIG)")?;
        Ok(self.consumer.get_or_init(|| consumer))
    }

    /// Reads the record at exactly `offset` of a partition.
    pub fn read_record(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> anyhow::Result<Fingerprint> {
        let consumer = self.consumer()?;
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, partition, Offset::Offset(offset))
            .context("invalid offset")?;
        consumer
            .assign(&assignment)
            .with_context(|| format!("cannot assign {topic}[{partition}]"))?;
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let found = loop {
            if Instant::now() > deadline {
                break Err(anyhow::anyhow!(
                    "cannot read {topic}[{partition}] at offset {offset} within {}s",
                    REQUEST_TIMEOUT.as_secs()
                ));
            }
            match consumer.poll(Duration::from_millis(200)) {
                None => continue,
                Some(Err(KafkaError::PartitionEOF(p))) if p != partition => continue,
                Some(Err(KafkaError::PartitionEOF(_))) => {
                    break Err(anyhow::anyhow!(
                        "{topic}[{partition}] has no record at offset {offset} (a transaction marker or compacted away); replay into an empty topic, or pass --append"
                    ))
                }
                Some(Err(e)) => break Err(e).context(format!("reading {topic}[{partition}]")),
                Some(Ok(message)) if message.partition() != partition => continue,
                Some(Ok(message)) if message.offset() != offset => {
                    break Err(anyhow::anyhow!(
                        "{topic}[{partition}] has no record at offset {offset} (next is {}); replay into an empty topic, or pass --append",
                        message.offset()
                    ))
                }
                Some(Ok(message)) => {
                    break Ok(Fingerprint {
                        offset,
                        key: message.key().map(<[u8]>::to_vec),
                        value: message.payload().map(<[u8]>::to_vec),
                        headers: message
                            .headers()
                            .map(|h| {
                                h.iter()
                                    .map(|h| (h.key.as_bytes().to_vec(), h.value.map(<[u8]>::to_vec)))
                                    .collect()
                            })
                            .unwrap_or_default(),
                        timestamp: match message.timestamp() {
                            Timestamp::CreateTime(t) => Some(t),
                            _ => None,
                        },
                    })
                }
            }
        };
        consumer
            .unassign()
            .with_context(|| format!("cannot unassign {topic}[{partition}]"))?;
        found
    }

    /// Commits `offsets` (partition, next offset to read) for `group` on `topic`.
    pub fn commit_group(
        &self,
        group: &str,
        topic: &str,
        offsets: &[(i32, i64)],
    ) -> anyhow::Result<()> {
        let consumer: BaseConsumer = self
            .config
            .clone()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .context("cannot create a consumer to commit group offsets")?;
        let mut list = TopicPartitionList::new();
        for &(partition, offset) in offsets {
            list.add_partition_offset(topic, partition, Offset::Offset(offset))
                .context("invalid offset")?;
        }
        let result = consumer.commit(&list, CommitMode::Sync).with_context(|| {
            format!("cannot commit the offsets of group {group} on {topic} (is the group active on the target? stop its consumers first)")
        });
        drop(list);
        drop(consumer);
        result
    }
}

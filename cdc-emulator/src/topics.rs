//! Kafka for the CDC producer: topic creation, a producer that reports every failed
//! delivery, and reading a whole topic back (for the offsets and for test assertions).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;

use super::CdcError;

const TIMEOUT: Duration = Duration::from_secs(60);

fn kafka_error(what: impl Into<String>) -> impl FnOnce(KafkaError) -> CdcError {
    let what = what.into();
    move |error| CdcError::Kafka {
        what,
        message: error.to_string(),
    }
}

/// Creates `name` unless it exists. Runs on a thread of its own, so callers may be inside an
/// async runtime or not.
pub(crate) fn ensure_topic(
    bootstrap: &str,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<(), CdcError> {
    let what = format!("create topic {name}");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(kafka_error(&what))?;
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (key, value) in configs {
        topic = topic.set(key, value);
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| CdcError::Kafka {
                        what: what.clone(),
                        message: format!("cannot start a runtime: {e}"),
                    })?;
                runtime
                    .block_on(admin.create_topics([&topic], &options))
                    .map_err(kafka_error(&what))
            })
            .join()
            .expect("the admin thread does not panic")
    })?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => {
                return Err(CdcError::Kafka {
                    what,
                    message: code.to_string(),
                })
            }
        }
    }
    Ok(())
}

/// Collects failed deliveries.
#[derive(Default)]
pub(crate) struct Deliveries {
    failures: Mutex<Vec<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, message)) = result {
            if let Ok(mut failures) = self.failures.lock() {
                failures.push(format!("{}: {error}", message.topic()));
            }
        }
    }
}

/// A producer whose records land where Java's default partitioner puts them (murmur2 of the
/// key), in order (idempotence), acknowledged by all replicas.
pub(crate) struct Sender {
    producer: BaseProducer<Deliveries>,
}

impl Sender {
    pub fn new(bootstrap: &str) -> Result<Sender, CdcError> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("partitioner", "murmur2_random")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create_with_context(Deliveries::default())
            .map_err(kafka_error("create the CDC producer"))?;
        Ok(Sender { producer })
    }

    /// Queues one record (a `None` value is a tombstone).
    pub fn send(
        &self,
        topic: &str,
        key: Option<&str>,
        value: Option<&str>,
        headers: Option<OwnedHeaders>,
    ) -> Result<(), CdcError> {
        let mut record: BaseRecord<'_, str, str> = BaseRecord::to(topic);
        record.key = key;
        record.payload = value;
        record.headers = headers;
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    self.producer.poll(Duration::from_millis(20));
                }
                Err((error, _)) => return Err(kafka_error(format!("produce to {topic}"))(error)),
            }
        }
    }

    /// Waits until every queued record is acknowledged; any failed delivery is an error.
    pub fn flush(&self) -> Result<(), CdcError> {
        self.producer
            .flush(TIMEOUT)
            .map_err(kafka_error("flush the CDC producer"))?;
        let mut failures = self
            .producer
            .context()
            .failures
            .lock()
            .expect("delivery callbacks do not panic");
        if failures.is_empty() {
            return Ok(());
        }
        let message = format!(
            "{} record(s) not delivered, first: {}",
            failures.len(),
            failures[0]
        );
        failures.clear();
        Err(CdcError::Kafka {
            what: "deliver CDC records".into(),
            message,
        })
    }
}

/// One record read back.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, String)>,
}

/// Every record of `topic`, partition by partition in offset order; `None` when the topic
/// does not exist.
pub(crate) fn read_all(bootstrap: &str, topic: &str) -> Result<Option<Vec<Record>>, CdcError> {
    let what = format!("read topic {topic}");
    let consumer = reader(bootstrap, &what)?;
    let Some(partitions) = partitions(&consumer, topic, &what)? else {
        return Ok(None);
    };
    let ends = assign_non_empty(&consumer, topic, &partitions, &what)?;
    if ends.is_empty() {
        return Ok(Some(Vec::new()));
    }
    let mut records = consume_to(&consumer, &ends, &what)?;
    records.sort_by_key(|r| (r.partition, r.offset));
    Ok(Some(records))
}

/// A consumer of its own group that commits nothing and creates no topic.
fn reader(bootstrap: &str, what: &str) -> Result<BaseConsumer, CdcError> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", reader_group())
        .set("enable.auto.commit", "false")
        .set("allow.auto.create.topics", "false")
        .create()
        .map_err(kafka_error(what))
}

/// A consumer group name of its own: `cdc-reader-<pid>-<n>-<nanos>`.
fn reader_group() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "cdc-reader-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The partition ids of `topic`; `None` when it does not exist.
fn partitions(
    consumer: &BaseConsumer,
    topic: &str,
    what: &str,
) -> Result<Option<Vec<i32>>, CdcError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), TIMEOUT)
        .map_err(kafka_error(what))?;
    let Some(meta) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    match meta.error() {
        Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => Ok(None),
        Some(error) => Err(CdcError::Kafka {
            what: what.to_string(),
            message: format!("{error:?}"),
        }),
        None => Ok(Some(meta.partitions().iter().map(|p| p.id()).collect())),
    }
}

/// Assigns every partition that holds records from its low watermark; each one's high
/// watermark, where reading it ends.
fn assign_non_empty(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
    what: &str,
) -> Result<Vec<(i32, i64)>, CdcError> {
    let mut ends = Vec::new();
    let mut assignment = TopicPartitionList::new();
    for &id in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, id, TIMEOUT)
            .map_err(kafka_error(what))?;
        if high > low {
            ends.push((id, high));
            assignment
                .add_partition_offset(topic, id, Offset::Offset(low))
                .map_err(kafka_error(what))?;
        }
    }
    if !ends.is_empty() {
        consumer.assign(&assignment).map_err(kafka_error(what))?;
    }
    Ok(ends)
}

/// Polls until every partition is read up to its end in `ends`, within [`TIMEOUT`].
fn consume_to(
    consumer: &BaseConsumer,
    ends: &[(i32, i64)],
    what: &str,
) -> Result<Vec<Record>, CdcError> {
    let mut records = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    let mut next: Vec<(i32, i64)> = ends.iter().map(|&(p, _)| (p, 0)).collect();
    while next.iter().zip(ends).any(|(&(_, n), &(_, end))| n < end) {
        if Instant::now() > deadline {
            return Err(CdcError::Kafka {
                what: what.to_string(),
                message: format!("not all records read within {TIMEOUT:?}"),
            });
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.map_err(kafka_error(what))?;
        if let Some(slot) = next.iter_mut().find(|(p, _)| *p == message.partition()) {
            slot.1 = message.offset() + 1;
        }
        records.push(Record::from_message(&message));
    }
    Ok(records)
}

impl Record {
    fn from_message(message: &impl Message) -> Record {
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Record {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            headers,
        }
    }
}

/// A record's bytes as JSON, naming the record when they are not.
pub(crate) fn json(
    bytes: Option<&[u8]>,
    topic: &str,
    record: &Record,
    part: &str,
) -> Result<Option<Value>, CdcError> {
    bytes
        .map(|bytes| {
            serde_json::from_slice(bytes).map_err(|e| CdcError::Json {
                what: format!(
                    "{part} of {topic} partition {} offset {}",
                    record.partition, record.offset
                ),
                message: e.to_string(),
            })
        })
        .transpose()
}

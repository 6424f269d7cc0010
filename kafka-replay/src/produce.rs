//! Producing archived records with idempotent producers: same partition, key, value,
//! headers and timestamp; failed deliveries collected.
//!
//! Several producers work in parallel, each on its own thread, each owning the target
//! partitions `p` with `p % count == its index`: a partition has one producer, so its order is
//! kept, while the partitions travel over several connections at once. This matters because
//! an idempotent producer allows only five requests in flight per connection, and because
//! the archive holds runs of one partition's records: fed by one thread, a single producer
//! would mostly send one partition per request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use common::topic_archive::{ConfigEntry, RecordView, RecordsChunk};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext};

/// Collects the failed deliveries. librdkafka reports only failures
/// (`delivery.report.only.error`): a record it does not report as failed by the time its
/// queue is empty was delivered. This spares the producing threads a report per record; the
/// replay is verified against the target's watermarks afterwards.
#[derive(Default)]
pub struct Deliveries {
    state: Mutex<Failures>,
}

/// The records that could not be delivered.
#[derive(Default, Debug, Clone)]
pub struct Failures {
    pub count: u64,
    pub first_error: Option<String>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let Err((error, message)) = result else {
            return;
        };
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        state.count += 1;
        if state.first_error.is_none() {
            state.first_error = Some(format!(
                "delivery to partition {} failed: {error}",
                message.partition()
            ));
        }
    }
}

/// What the producers' local queues may hold, all producers together (librdkafka's default is
/// 1 GiB and 100,000 records per producer); the queues also hold the records in flight. Each
/// queued record costs about twice its size, so the record count is the tighter bound.
const QUEUE_KBYTES: usize = 24 * 1024;
const QUEUE_MESSAGES: usize = 30_000;
/// Chunks (about 1 MiB each) waiting for each producer thread.
const CHUNKS_AHEAD: usize = 2;

/// What the source topic's saved configs tell the producers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicHints {
    /// The largest record the topic allows, so big records are not refused by the producer's
    /// default limit (1 MB).
    pub max_message_bytes: Option<u64>,
    /// The codec batches are sent in (see [`TopicHints::from_configs`]).
    pub compression: &'static str,
}

impl TopicHints {
    /// Reads `max.message.bytes` and `compression.type`. Batches go in the topic's own codec
    /// when it names one, so a broker stores them as they come rather than recompressing every
    /// batch of the restore; uncompressed for an `uncompressed` topic; otherwise (`producer`,
    /// the default, or unknown) lz4: the broker then receives, checks and stores a fraction of
    /// the bytes. At an idempotent producer's five requests in flight per connection, that is
    /// what bounds a replay (1M bench records: 0.82 s against 1.44 s uncompressed).
    pub fn from_configs(configs: &[ConfigEntry]) -> TopicHints {
        let value = |name: &str| {
            configs
                .iter()
                .find(|c| c.name == name)
                .and_then(|c| c.value.as_deref())
        };
        TopicHints {
            max_message_bytes: value("max.message.bytes").and_then(|v| v.parse().ok()),
            compression: match value("compression.type") {
                Some("gzip") => "gzip",
                Some("snappy") => "snappy",
                Some("zstd") => "zstd",
                Some("uncompressed") => "none",
                _ => "lz4",
            },
        }
    }
}

/// Records of one chunk for one producer: (index in the chunk, target partition), ascending.
struct Batch {
    chunk: Arc<RecordsChunk>,
    picks: Vec<(u32, i32)>,
}

/// The producer threads of one replay.
pub struct Replayer {
    senders: Vec<SyncSender<Batch>>,
    workers: Vec<JoinHandle<anyhow::Result<Failures>>>,
}

impl Replayer {
    /// Starts `count` producer threads into `topic`, set up by the source topic's `hints`;
    /// `timeout` bounds the wait for the last deliveries.
    pub fn start(
        config: &ClientConfig,
        topic: &str,
        hints: &TopicHints,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let count = count.max(1);
        let config = producer_config(config, hints, count);
        let mut replayer = Replayer {
            senders: Vec::new(),
            workers: Vec::new(),
        };
        for index in 0..count {
            let producer: BaseProducer<Deliveries> = config
                .create_with_context(Deliveries::default())
                .context("cannot create the Kafka producer (check -X and KAFKA_CLIENT_CONFIG)")?;
            let (sender, receiver) = sync_channel(CHUNKS_AHEAD);
            let topic = topic.to_string();
            let worker = std::thread::Builder::new()
                .name(format!("producer-{index}"))
                .spawn(move || {
                    // The warm-up runs beside the producing: records queue meanwhile.
                    let done = AtomicBool::new(false);
                    std::thread::scope(|scope| {
                        scope.spawn(|| warm_up(&producer, &topic, &done));
                        let result = produce(&producer, &topic, &receiver, timeout);
                        done.store(true, Ordering::Relaxed);
                        result
                    })
                })
                .context("cannot start a producer thread")?;
            replayer.senders.push(sender);
            replayer.workers.push(worker);
        }
        Ok(replayer)
    }

    /// Hands the picked records of `chunk` (index in the chunk, target partition; ascending)
    /// to the producers of their partitions. Waits while those producers are busy.
    pub fn dispatch(&mut self, chunk: RecordsChunk, picks: &[(u32, i32)]) -> anyhow::Result<()> {
        if picks.is_empty() {
            return Ok(());
        }
        let count = self.senders.len();
        let chunk = Arc::new(chunk);
        let mut shares: Vec<Vec<(u32, i32)>> = vec![Vec::new(); count];
        for &(index, partition) in picks {
            shares[partition.unsigned_abs() as usize % count].push((index, partition));
        }
        for (producer, picks) in shares.into_iter().enumerate() {
            if picks.is_empty() {
                continue;
            }
            let batch = Batch {
                chunk: Arc::clone(&chunk),
                picks,
            };
            if self.senders[producer].send(batch).is_err() {
                // That producer stopped on an error: report it.
                return Err(self.stop().err().unwrap_or_else(|| {
                    anyhow::anyhow!("a producer thread stopped before the replay ended")
                }));
            }
        }
        Ok(())
    }

    /// Waits until every record handed over is delivered or failed; returns the failures.
    pub fn finish(mut self) -> anyhow::Result<Failures> {
        let mut total = Failures::default();
        for failures in self.stop()? {
            total.count += failures.count;
            if total.first_error.is_none() {
                total.first_error = failures.first_error;
            }
        }
        Ok(total)
    }

    /// Closes the queues and joins every producer thread; the first error if any failed.
    fn stop(&mut self) -> anyhow::Result<Vec<Failures>> {
        self.senders.clear();
        let mut all = Vec::new();
        let mut first_error = None;
        for worker in self.workers.drain(..) {
            match worker.join() {
                Ok(Ok(failures)) => all.push(failures),
                Ok(Err(error)) => {
                    first_error.get_or_insert(error);
                }
                Err(_) => {
                    first_error.get_or_insert(anyhow::anyhow!("a producer thread panicked"));
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(all),
        }
    }
}

fn producer_config(config: &ClientConfig, hints: &TopicHints, count: usize) -> ClientConfig {
    let mut config = config.clone();
    // Idempotence keeps per-partition order and never duplicates on retries; it also means
    // acks=all. Only failures are reported (see Deliveries).
    config.set("enable.idempotence", "true");
    config.set("delivery.report.only.error", "true");
    // The queue budget is shared, so memory stays under 100 MB whatever the count; each queue
    // stays deep enough for a few full batches in flight. Compressed batches hold the same
    // records (consumers decompress); the codec follows the topic (TopicHints).
    let queue_kbytes = (QUEUE_KBYTES / count).max(4 * 1024).to_string();
    let queue_messages = (QUEUE_MESSAGES / count).max(5_000).to_string();
    for (key, value) in [
        ("compression.type", hints.compression),
        ("linger.ms", "5"),
        ("batch.num.messages", "10000"),
        ("batch.size", "1000000"),
        ("queue.buffering.max.kbytes", queue_kbytes.as_str()),
        ("queue.buffering.max.messages", queue_messages.as_str()),
    ] {
        if config.get(key).is_none() {
            config.set(key, value);
        }
    }
    if let Some(max) = hints.max_message_bytes.filter(|&m| m > 1_000_000) {
        if config.get("message.max.bytes").is_none() {
            config.set("message.max.bytes", (max + 1024).to_string());
        }
    }
    config
}

/// Gets the idempotent producer its producer id before the first record. librdkafka asks
/// for the id when the producer starts, before any broker connection is up, and then only
/// retries after 500 ms, unless a metadata response comes in: a few metadata requests while
/// the connection to the leader comes up save most of that wait. They ask for the target
/// topic alone (a cluster's full metadata can be large), and stop once the producing is done.
fn warm_up(producer: &BaseProducer<Deliveries>, topic: &str, done: &AtomicBool) {
    for _ in 0..4 {
        if done.load(Ordering::Relaxed)
            || producer
                .client()
                .fetch_metadata(Some(topic), Duration::from_secs(5))
                .is_err()
        {
            return;
        }
        for _ in 0..5 {
            if done.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// One producer thread: produces every batch it is handed, then waits for the deliveries.
fn produce(
    producer: &BaseProducer<Deliveries>,
    topic: &str,
    batches: &Receiver<Batch>,
    timeout: Duration,
) -> anyhow::Result<Failures> {
    let mut sent = 0u64;
    for batch in batches.iter() {
        let mut picks = batch.picks.iter().peekable();
        for (index, record) in batch.chunk.iter().enumerate() {
            let Some(&&(pick, partition)) = picks.peek() else {
                break;
            };
            if pick != index as u32 {
                continue;
            }
            picks.next();
            send(producer, topic, partition, &record, timeout)?;
            sent += 1;
            if sent.is_multiple_of(1024) {
                producer.poll(Duration::ZERO);
            }
        }
    }
    // Not Producer::flush: it waits in steps of 100 ms.
    let deadline = Instant::now() + timeout;
    while producer.in_flight_count() > 0 {
        if Instant::now() > deadline {
            anyhow::bail!(
                "records were still undelivered when the timeout ran out (is the broker down? raise --timeout); re-run the same replay to resume"
            );
        }
        producer.poll(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(1));
    }
    producer.poll(Duration::ZERO);
    let failures = producer
        .context()
        .state
        .lock()
        .map_err(|_| anyhow::anyhow!("delivery counter poisoned"))?
        .clone();
    Ok(failures)
}

/// Queues one record for `partition`, waiting while the local queue is full, but not longer
/// than `timeout` without the broker acknowledging anything.
fn send(
    producer: &BaseProducer<Deliveries>,
    topic: &str,
    partition: i32,
    record: &RecordView<'_>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut headers = None;
    if record.header_count() > 0 {
        let mut owned = OwnedHeaders::new_with_capacity(record.header_count() as usize);
        for header in record.headers() {
            let key = std::str::from_utf8(header.key).with_context(|| {
                format!(
                    "record at source offset {}: a header key is not UTF-8",
                    record.offset
                )
            })?;
            owned = owned.insert(Header {
                key,
                value: header.value,
            });
        }
        headers = Some(owned);
    }
    let mut message: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).partition(partition);
    if let Some(key) = record.key {
        message = message.key(key);
    }
    if let Some(value) = record.value {
        message = message.payload(value);
    }
    if record.timestamp >= 0 {
        message = message.timestamp(record.timestamp);
    }
    if let Some(headers) = headers {
        message = message.headers(headers);
    }
    let mut waiting: Option<Acks> = None;
    loop {
        match producer.send(message) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                message = back;
                let acks = waiting.get_or_insert_with(|| Acks::new(timeout, Instant::now()));
                if !acks.progressing(Instant::now(), producer.in_flight_count()) {
                    anyhow::bail!(
                        "the broker acknowledged no record for {} while the producer's queue was full (is it down?); re-run the same replay to resume (raise --timeout)",
                        humantime::format_duration(timeout)
                    );
                }
                // The queue has room again as soon as a batch is acked. Not a poll with a
                // timeout: BaseProducer::poll spins through its last millisecond.
                producer.poll(Duration::ZERO);
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((error, _)) => {
                return Err(error).with_context(|| {
                    format!(
                        "cannot produce the record of source offset {}",
                        record.offset
                    )
                })
            }
        }
    }
}

/// Whether a full queue drains. A dead broker acknowledges nothing: librdkafka keeps the
/// records until their `message.timeout.ms` (5 min by default), then the queue fills again
/// with the next ones, once per queue's worth of the archive, so without this a replay into
/// a dead broker would wait for hours. A pure decision, tested on its own.
///
/// The count looked at is librdkafka's out queue, which also holds events waiting for a
/// poll: a dead broker's connection errors come and go there every second or so. Only a new
/// low counts as an acknowledgement.
#[derive(Debug)]
struct Acks {
    limit: Duration,
    /// The fewest records (and events) queued or in flight seen in this wait.
    lowest: Option<i32>,
    /// When that low was reached (or the wait began).
    since: Instant,
}

impl Acks {
    fn new(limit: Duration, now: Instant) -> Acks {
        Acks {
            limit,
            lowest: None,
            since: now,
        }
    }

    /// Notes `queued` (queued and in flight) at `now`; false once no record has been
    /// acknowledged for the limit.
    fn progressing(&mut self, now: Instant, queued: i32) -> bool {
        match self.lowest {
            Some(lowest) if queued < lowest => {
                self.lowest = Some(queued);
                self.since = now;
            }
            Some(_) => {}
            None => self.lowest = Some(queued),
        }
        now.duration_since(self.since) < self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_that_never_drains_gives_up_after_the_limit() {
        let start = Instant::now();
        let secs = |s: u64| start + Duration::from_secs(s);
        let mut acks = Acks::new(Duration::from_secs(10), start);
        // Draining, however slowly, keeps it going.
        assert!(acks.progressing(secs(0), 100));
        assert!(acks.progressing(secs(9), 99));
        assert!(acks.progressing(secs(18), 98));
        // Stuck: an error event that comes and goes is no acknowledgement; false once the
        // limit has passed since the last one.
        assert!(acks.progressing(secs(20), 99));
        assert!(acks.progressing(secs(24), 98));
        assert!(acks.progressing(secs(27), 98));
        assert!(!acks.progressing(secs(28), 98));
        // A wait that starts stuck gives up after the limit too.
        let mut stuck = Acks::new(Duration::from_secs(10), start);
        assert!(stuck.progressing(secs(9), 50));
        assert!(!stuck.progressing(secs(10), 50));
    }

    fn entry(name: &str, value: &str) -> ConfigEntry {
        ConfigEntry {
            name: name.to_string(),
            value: Some(value.to_string()),
            is_default: false,
            source: "dynamic_topic".to_string(),
            read_only: false,
            sensitive: false,
        }
    }

    #[test]
    fn batches_follow_the_topics_codec_and_size_limit() {
        let hints = |configs: &[ConfigEntry]| TopicHints::from_configs(configs);
        assert_eq!(
            hints(&[]),
            TopicHints {
                max_message_bytes: None,
                compression: "lz4"
            }
        );
        for (topic, sent) in [
            ("producer", "lz4"),
            ("lz4", "lz4"),
            ("zstd", "zstd"),
            ("gzip", "gzip"),
            ("snappy", "snappy"),
            ("uncompressed", "none"),
        ] {
            assert_eq!(hints(&[entry("compression.type", topic)]).compression, sent);
        }
        let big = hints(&[entry("max.message.bytes", "5000000")]);
        assert_eq!(big.max_message_bytes, Some(5_000_000));
        // The user's -X wins over both.
        let mut user = ClientConfig::new();
        user.set("compression.type", "none");
        let config = producer_config(&user, &hints(&[entry("compression.type", "zstd")]), 3);
        assert_eq!(config.get("compression.type"), Some("none"));
        let config = producer_config(&ClientConfig::new(), &big, 3);
        assert_eq!(config.get("compression.type"), Some("lz4"));
        assert_eq!(config.get("message.max.bytes"), Some("5001024"));
    }
}

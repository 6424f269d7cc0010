//! Reading the records of the cut: worker threads each take one partition at a time, read it
//! with an assigned consumer, build and compress chunks, and hand them to the single writer.
//!
//! Memory stays bounded whatever the topic size: each worker holds one chunk under
//! construction plus librdkafka's prefetch queue (capped below), and the channel to the
//! writer holds at most two finished chunks per worker.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use common::kafka::Complaints;
use common::topic_archive::{
    ArchiveWriter, Codec, EncodedChunk, OffsetGap, PartitionEnd, PartitionRange,
    RecordsChunkBuilder, TimestampType,
};
use indicatif::ProgressBar;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message, Timestamp};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// A worker's consumer: it keeps librdkafka's last complaint for the error line.
type ExportConsumer = BaseConsumer<Complaints>;

/// How the export runs.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub parallelism: usize,
    pub chunk_bytes: usize,
    pub level: i32,
    /// Give up on a partition that yields nothing for this long.
    pub idle_timeout: Duration,
}

enum Event {
    Chunk(EncodedChunk, u64),
    Done(PartitionEnd),
}

/// Exports the ranges of `topic` into `writer`; returns what each partition yielded.
pub fn export_topic<W: Write>(
    config: &ClientConfig,
    topic: &str,
    ranges: &[PartitionRange],
    options: &ExportOptions,
    writer: &mut ArchiveWriter<W>,
    progress: &ProgressBar,
) -> anyhow::Result<Vec<PartitionEnd>> {
    let queue: Mutex<VecDeque<PartitionRange>> = Mutex::new(ranges.iter().copied().collect());
    let workers = options.parallelism.clamp(1, ranges.len().max(1));
    let cancel = AtomicBool::new(false);
    let (sender, receiver) = sync_channel::<anyhow::Result<Event>>(workers * 2);
    let mut ends = Vec::new();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        for _ in 0..workers {
            let sender = sender.clone();
            let (queue, cancel) = (&queue, &cancel);
            scope.spawn(move || {
                let result = worker(config, topic, queue, options, &sender, cancel);
                if let Err(error) = result {
                    let _ = sender.send(Err(error));
                }
            });
        }
        drop(sender);
        let outcome = (|| -> anyhow::Result<()> {
            for event in receiver.iter() {
                match event? {
                    Event::Chunk(chunk, records) => {
                        // Interrupted, the watcher removes the set (and aborts its upload):
                        // nothing more is written into it meanwhile.
                        common::interrupt::checkpoint();
                        writer
                            .write_chunk(&chunk)
                            .context("cannot write the archive")?;
                        progress.inc(records);
                    }
                    Event::Done(end) => ends.push(end),
                }
            }
            Ok(())
        })();
        if outcome.is_err() {
            // Stop the workers; they notice at their next poll or send.
            cancel.store(true, Ordering::Relaxed);
            drop(receiver);
        }
        outcome
    })?;
    ends.sort_by_key(|e| e.partition);
    Ok(ends)
}

fn consumer_config(config: &ClientConfig) -> ClientConfig {
    let mut config = config.clone();
    config
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest");
    // Bounds librdkafka's prefetch (by default up to 64 MiB of records plus the fetch
    // buffers they point into, per consumer): the largest memory user. A -X setting wins.
    for (key, value) in [
        ("queued.max.messages.kbytes", "4096"),
        ("queued.min.messages", "20000"),
        ("fetch.max.bytes", "2097152"),
        // With a small queue, librdkafka's default 1 s pause after "queue full" would idle
        // the fetcher most of the time.
        ("fetch.queue.backoff.ms", "10"),
    ] {
        if config.get(key).is_none() {
            config.set(key, value);
        }
    }
    if config.get("group.id").is_none() {
        // Never used to join or commit (partitions are assigned); librdkafka wants one.
        config.set("group.id", "kafka-topic-backup");
    }
    config
}

fn worker(
    config: &ClientConfig,
    topic: &str,
    queue: &Mutex<VecDeque<PartitionRange>>,
    options: &ExportOptions,
    sender: &SyncSender<anyhow::Result<Event>>,
    cancel: &AtomicBool,
) -> anyhow::Result<()> {
    let consumer: ExportConsumer = consumer_config(config)
        .create_with_context(Complaints::default())
        .context("cannot create the Kafka consumer")?;
    let reader = PartitionReader {
        consumer: &consumer,
        topic,
        options,
        sender,
        cancel,
    };
    let result = (|| loop {
        let next = queue.lock().map(|mut q| q.pop_front()).unwrap_or(None);
        let Some(range) = next else { return Ok(()) };
        match reader.read_partition(&range)? {
            Some(end) => {
                if sender.send(Ok(Event::Done(end))).is_err() {
                    return Ok(());
                }
            }
            None => return Ok(()),
        }
    })();
    // Its close waits up to 100 ms for librdkafka's threads: the export need not.
    common::kafka::close_in_background(consumer);
    result
}

/// One worker's means of reading partitions: its consumer, how chunks are built, the channel
/// to the writer, and the flag that cancels the export.
struct PartitionReader<'a> {
    consumer: &'a ExportConsumer,
    topic: &'a str,
    options: &'a ExportOptions,
    sender: &'a SyncSender<anyhow::Result<Event>>,
    cancel: &'a AtomicBool,
}

/// Why reading a partition's records stopped.
enum Stop {
    /// The cut or the end of the log was reached.
    Done,
    /// The export was cancelled, or the writer is gone.
    Cancelled,
}

impl PartitionReader<'_> {
    /// Reads one partition's range; None when cancelled.
    fn read_partition(&self, range: &PartitionRange) -> anyhow::Result<Option<PartitionEnd>> {
        let mut end = PartitionEnd {
            partition: range.partition,
            records: 0,
            first_offset: None,
            last_offset: None,
            next_offset: range.end_offset,
            lost: None,
        };
        if range.start_offset >= range.end_offset {
            return Ok(Some(end));
        }
        self.assign(range)?;
        let mut builder = RecordsChunkBuilder::new(range.partition, self.options.chunk_bytes);
        if let Stop::Cancelled = self.read_records(range, &mut end, &mut builder)? {
            return Ok(None);
        }
        if !builder.is_empty() && !self.send(&mut builder)? {
            return Ok(None);
        }
        if end
            .first_offset
            .is_none_or(|first| first > range.start_offset)
        {
            end.lost = lost_while_reading(self.consumer, self.topic, range, end.first_offset);
        }
        self.consumer
            .unassign()
            .with_context(|| format!("cannot unassign {}[{}]", self.topic, range.partition))?;
        Ok(Some(end))
    }

    /// Points the consumer at the range's start.
    fn assign(&self, range: &PartitionRange) -> anyhow::Result<()> {
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(
                self.topic,
                range.partition,
                Offset::Offset(range.start_offset),
            )
            .context("invalid start offset")?;
        self.consumer
            .assign(&assignment)
            .with_context(|| format!("cannot assign {}[{}]", self.topic, range.partition))
    }

    /// Reads the range's records into chunks, sending each full one to the writer.
    fn read_records(
        &self,
        range: &PartitionRange,
        end: &mut PartitionEnd,
        builder: &mut RecordsChunkBuilder,
    ) -> anyhow::Result<Stop> {
        let (topic, partition) = (self.topic, range.partition);
        let mut idle = IdleClock::new();
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                return Ok(Stop::Cancelled);
            }
            let message = match self.consumer.poll(Duration::from_millis(200)) {
                None => {
                    if idle.after_empty_poll() > self.options.idle_timeout {
                        return Err(self.stalled(range, end));
                    }
                    continue;
                }
                // The end of the log: what is left below the cut are control records
                // (transaction markers) or compacted offsets, which hold no data.
                Some(Err(KafkaError::PartitionEOF(p))) if p == partition => {
                    self.at_log_end(range, end);
                    return Ok(Stop::Done);
                }
                Some(Err(KafkaError::PartitionEOF(_))) => continue,
                // librdkafka reconnects by itself (a broker restarting, a connection the
                // broker closed): wait as for an empty poll, up to the idle timeout.
                Some(Err(KafkaError::MessageConsumption(code))) if reconnects(code) => {
                    tracing::warn!("reading {topic}[{partition}]: {code}; waiting for the broker");
                    if idle.after_empty_poll() > self.options.idle_timeout {
                        return Err(self.stalled(range, end));
                    }
                    continue;
                }
                Some(Err(error)) => {
                    let said = self.librdkafka_said();
                    return Err(error)
                        .with_context(|| format!("reading {topic}[{partition}] failed{said}"));
                }
                Some(Ok(message)) => message,
            };
            idle.record_read();
            if message.partition() != partition {
                continue;
            }
            let offset = message.offset();
            if offset >= range.end_offset {
                return Ok(Stop::Done);
            }
            push_record(builder, &message);
            end.records += 1;
            end.first_offset.get_or_insert(offset);
            end.last_offset = Some(offset);
            if builder.is_full() && !self.send(builder)? {
                return Ok(Stop::Cancelled);
            }
            if offset + 1 >= range.end_offset {
                return Ok(Stop::Done);
            }
        }
    }

    /// The log ended below the cut. Under read_committed it "ends" at the last stable offset:
    /// an open transaction's records must be read by the next incremental run, so the range
    /// ends at the consumer's position.
    fn at_log_end(&self, range: &PartitionRange, end: &mut PartitionEnd) {
        let position = self.consumer.position().ok().and_then(|list| {
            list.find_partition(self.topic, range.partition)
                .and_then(|element| element.offset().to_raw())
        });
        let read_up_to = end.last_offset.map_or(range.start_offset, |o| o + 1);
        if let Some(position) = position.filter(|&p| p >= read_up_to) {
            end.next_offset = position.min(range.end_offset);
        }
    }

    /// The error for a partition that yielded nothing for the idle timeout.
    fn stalled(&self, range: &PartitionRange, end: &PartitionEnd) -> anyhow::Error {
        anyhow::anyhow!(
            "{}[{}]: no record for {} while offsets {}..{} remain to be read (broker unreachable? raise --timeout){}",
            self.topic,
            range.partition,
            humantime::format_duration(self.options.idle_timeout),
            end.last_offset.map_or(range.start_offset, |o| o + 1),
            range.end_offset,
            self.librdkafka_said()
        )
    }

    /// librdkafka's last complaint, to add to an error: its error codes alone (`BadMessage`)
    /// often do not say what went wrong.
    fn librdkafka_said(&self) -> String {
        self.consumer
            .context()
            .last()
            .map(|said| format!("; librdkafka said: {said}"))
            .unwrap_or_default()
    }

    /// Seals the chunk under construction and hands it to the writer; false when the writer
    /// is gone.
    fn send(&self, builder: &mut RecordsChunkBuilder) -> anyhow::Result<bool> {
        let records = u64::from(builder.len());
        let chunk = builder
            .seal(Codec::Zstd, self.options.level)
            .context("cannot compress a chunk")?;
        Ok(self.sender.send(Ok(Event::Chunk(chunk, records))).is_ok())
    }
}

/// How long a partition has yielded nothing. The clock is read only when a poll comes back
/// empty, not per record.
/// Consumer errors after which librdkafka reconnects on its own.
fn reconnects(code: rdkafka::types::RDKafkaErrorCode) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(code, Code::AllBrokersDown | Code::BrokerTransportFailure)
}

struct IdleClock {
    last_progress: Instant,
    read_since_idle: bool,
}

impl IdleClock {
    fn new() -> IdleClock {
        IdleClock {
            last_progress: Instant::now(),
            read_since_idle: false,
        }
    }

    fn record_read(&mut self) {
        self.read_since_idle = true;
    }

    /// Time since the last poll that brought a record.
    fn after_empty_poll(&mut self) -> Duration {
        if self.read_since_idle {
            self.read_since_idle = false;
            self.last_progress = Instant::now();
        }
        self.last_progress.elapsed()
    }
}

/// Adds one consumed record to the chunk under construction.
fn push_record(builder: &mut RecordsChunkBuilder, message: &BorrowedMessage<'_>) {
    let (timestamp_type, timestamp) = match message.timestamp() {
        Timestamp::NotAvailable => (TimestampType::NotAvailable, -1),
        Timestamp::CreateTime(t) => (TimestampType::CreateTime, t),
        Timestamp::LogAppendTime(t) => (TimestampType::LogAppendTime, t),
    };
    let headers = message.headers();
    builder.push(
        message.offset(),
        timestamp_type,
        timestamp,
        message.key(),
        message.payload(),
        headers
            .into_iter()
            .flat_map(|h| h.iter())
            .map(|h| (h.key.as_bytes(), h.value)),
    );
}

/// When the first record read is past the cut's start, tells whether retention deleted the
/// records in between during the export (the low watermark moved past them) rather than
/// compaction or transaction markers leaving offsets without records.
fn lost_while_reading(
    consumer: &ExportConsumer,
    topic: &str,
    range: &PartitionRange,
    first_read: Option<i64>,
) -> Option<OffsetGap> {
    let (low, _) = consumer
        .fetch_watermarks(topic, range.partition, Duration::from_secs(15))
        .ok()?;
    let to = low
        .min(first_read.unwrap_or(range.end_offset))
        .min(range.end_offset);
    (to > range.start_offset).then(|| {
        tracing::warn!(
            "{topic}[{}]: offsets {}..{to} were deleted (retention) while the backup ran; recorded as lost",
            range.partition,
            range.start_offset
        );
        OffsetGap {
            from: range.start_offset,
            to,
        }
    })
}

//! Producing archived records with an idempotent producer: same partition, key, value,
//! headers and timestamp; delivery reports counted per partition.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use common::topic_archive::RecordView;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext};

/// Counts delivery reports.
#[derive(Default)]
pub struct Deliveries {
    state: Mutex<DeliveryState>,
}

#[derive(Default, Debug, Clone)]
pub struct DeliveryState {
    /// Delivered records per target partition.
    pub delivered: BTreeMap<i32, u64>,
    pub failed: u64,
    pub first_error: Option<String>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        match result {
            Ok(message) => *state.delivered.entry(message.partition()).or_default() += 1,
            Err((error, message)) => {
                state.failed += 1;
                if state.first_error.is_none() {
                    state.first_error = Some(format!(
                        "delivery to partition {} failed: {error}",
                        message.partition()
                    ));
                }
            }
        }
    }
}

/// An idempotent producer into one topic.
pub struct Replayer {
    producer: BaseProducer<Deliveries>,
    topic: String,
    sent: u64,
}

impl Replayer {
    /// `max_message_bytes` is the largest record the source topic allows, so big records
    /// are not refused by the producer's default limit.
    pub fn new(
        config: &ClientConfig,
        topic: &str,
        max_message_bytes: Option<u64>,
    ) -> anyhow::Result<Self> {
        let mut config = config.clone();
        // Idempotence keeps per-partition order and never duplicates on retries; it also
        // means acks=all.
        config.set("enable.idempotence", "true");
        for (key, value) in [
            ("linger.ms", "10"),
            ("batch.num.messages", "10000"),
            ("batch.size", "1000000"),
            // Bounds the producer's queue (default 1 GiB) so memory stays under 100 MB; the
            // queue also holds the records in flight, so it must stay deep enough for five
            // full batches.
            ("queue.buffering.max.kbytes", "32768"),
            ("queue.buffering.max.messages", "100000"),
        ] {
            if config.get(key).is_none() {
                config.set(key, value);
            }
        }
        if let Some(max) = max_message_bytes.filter(|&m| m > 1_000_000) {
            if config.get("message.max.bytes").is_none() {
                config.set("message.max.bytes", (max + 1024).to_string());
            }
        }
        let producer = config
            .create_with_context(Deliveries::default())
            .context("cannot create the Kafka producer (check -X and KAFKA_CLIENT_CONFIG)")?;
        Ok(Replayer {
            producer,
            topic: topic.to_string(),
            sent: 0,
        })
    }

    /// Queues one record for `partition`, waiting while the local queue is full.
    pub fn send(&mut self, partition: i32, record: &RecordView<'_>) -> anyhow::Result<()> {
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
        let mut message: BaseRecord<'_, [u8], [u8]> =
            BaseRecord::to(&self.topic).partition(partition);
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
        loop {
            match self.producer.send(message) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    message = back;
                    // BaseProducer::poll serves delivery reports until the timeout is over,
                    // so keep it short: the queue has room again as soon as a batch is acked.
                    self.producer.poll(Duration::from_millis(2));
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
        self.sent += 1;
        if self.sent.is_multiple_of(1024) {
            self.producer.poll(Duration::ZERO);
        }
        Ok(())
    }

    /// Waits until every queued record is delivered or failed; returns the counts.
    pub fn finish(self, timeout: Duration) -> anyhow::Result<DeliveryState> {
        self.producer
            .flush(timeout)
            .context("records were still undelivered when the timeout ran out (raise --timeout)")?;
        self.producer.poll(Duration::ZERO);
        let state = self
            .producer
            .context()
            .state
            .lock()
            .map(|s| s.clone())
            .map_err(|_| anyhow::anyhow!("delivery counter poisoned"))?;
        Ok(state)
    }
}

/// Kafka's default partitioner for keyed records (murmur2, as the Java client), for
/// `--repartition`.
pub fn murmur2_partition(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) as i32 % partitions
}

fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        // Values from Kafka's own partitioner tests (Utils.murmur2).
        assert_eq!(murmur2(b"21") as i32, -973_932_308);
        assert_eq!(murmur2(b"foobar") as i32, -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985_981_536);
        assert_eq!(
            murmur2(b"a-little-bit-longer-string") as i32,
            -1_486_304_829
        );
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58_897_971
        );
        assert_eq!(murmur2(b"abc") as i32, 479_470_107);
        assert!((0..3).contains(&murmur2_partition(b"key", 3)));
    }
}

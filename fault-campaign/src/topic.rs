//! Reading a whole topic back from the test broker (every partition from its low to its high
//! watermark, in order) so a replayed topic can be compared record for record with its source,
//! and deleting the scratch topics a campaign makes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

/// Per partition, the (key, value) of every record in offset order.
pub type Contents = BTreeMap<i32, Vec<(Option<Vec<u8>>, Option<Vec<u8>>)>>;

const LIMIT: Duration = Duration::from_secs(60);

/// Every record of `topic`; an error when the topic does not exist.
pub fn read(topic: &str) -> anyhow::Result<Contents> {
    read_from(&test_support::kafka::bootstrap(), topic)
}

/// Every record of `topic` on the broker at `bootstrap` (a private one).
pub fn read_from(bootstrap: &str, topic: &str) -> anyhow::Result<Contents> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", test_support::unique_name("fc-read"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .context("cannot create a consumer")?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .with_context(|| format!("cannot read the metadata of {topic}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    anyhow::ensure!(!partitions.is_empty(), "topic {topic} does not exist");
    let mut contents = Contents::new();
    let mut assignment = TopicPartitionList::new();
    let mut remaining = 0i64;
    let mut high_of = BTreeMap::new();
    for &p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .with_context(|| format!("cannot read the watermarks of {topic}/{p}"))?;
        contents.insert(p, Vec::new());
        high_of.insert(p, high);
        if high > low {
            remaining += high - low;
            assignment.add_partition_offset(topic, p, Offset::Offset(low))?;
        }
    }
    if remaining == 0 {
        return Ok(contents);
    }
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + LIMIT;
    let mut done: BTreeMap<i32, bool> = partitions.iter().map(|&p| (p, false)).collect();
    for (&p, &high) in &high_of {
        if high == 0 || assignment.find_partition(topic, p).is_none() {
            done.insert(p, true);
        }
    }
    while done.values().any(|d| !d) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "reading {topic} took over {}s",
            LIMIT.as_secs()
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.with_context(|| format!("cannot read {topic}"))?;
        let p = message.partition();
        contents.entry(p).or_default().push((
            message.key().map(<[u8]>::to_vec),
            message.payload().map(<[u8]>::to_vec),
        ));
        if message.offset() + 1 >= high_of[&p] {
            done.insert(p, true);
        }
    }
    Ok(contents)
}

/// Each partition of `got` holds the first records of the same partition of `source` (a
/// replay stopped part-way, before a re-run completes it).
pub fn expect_prefix(got: &Contents, source: &Contents) -> anyhow::Result<()> {
    for (p, records) in got {
        let first = source.get(p).map(Vec::as_slice).unwrap_or_default();
        anyhow::ensure!(
            first.starts_with(records),
            "partition {p} of the target holds {} records that are not the source's first {0}",
            records.len()
        );
    }
    Ok(())
}

/// Total records.
pub fn count(contents: &Contents) -> usize {
    contents.values().map(Vec::len).sum()
}

/// Fails unless `got` holds exactly `want`'s records, partition by partition, in order.
pub fn expect_same(got: &Contents, want: &Contents, what: &str) -> anyhow::Result<()> {
    for (p, records) in want {
        let have = got.get(p).map(Vec::as_slice).unwrap_or_default();
        if have == records.as_slice() {
            continue;
        }
        let mut seen = std::collections::HashSet::new();
        let duplicates = have.iter().filter(|r| !seen.insert(*r)).count();
        anyhow::bail!(
            "{what}: partition {p} holds {} records ({duplicates} duplicated), the source {}",
            have.len(),
            records.len()
        );
    }
    let extra: Vec<&i32> = got.keys().filter(|p| !want.contains_key(p)).collect();
    anyhow::ensure!(
        extra.iter().all(|p| got[p].is_empty()),
        "{what}: records in partitions the source does not have: {extra:?}"
    );
    Ok(())
}

/// Deletes topics (best effort: a scratch topic left behind costs nothing but space).
pub fn delete(topics: &[String]) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    if topics.is_empty() {
        return;
    }
    let Ok(admin) =
        test_support::kafka::client_config().create::<AdminClient<DefaultClientContext>>()
    else {
        return;
    };
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let _ = test_support::kafka::block_on(admin.delete_topics(&names, &options));
}

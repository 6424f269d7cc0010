//! The test broker accepts a produce and gives the record back on fetch, with its key,
//! headers and timestamp.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use test_support::kafka::{client_config, create_topic};
use test_support::unique_name;

#[tokio::test]
async fn broker_accepts_produce_and_fetch() {
    let topic = create_topic(&unique_name("smoke"), 2).await;
    let producer: FutureProducer = client_config().create().unwrap();
    let headers = OwnedHeaders::new().insert(Header {
        key: "h",
        value: Some("v"),
    });
    let delivery = producer
        .send(
            FutureRecord::to(&topic)
                .partition(1)
                .key("k")
                .payload("hello")
                .timestamp(1_600_000_000_000)
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .expect("produce");
    assert_eq!(delivery.partition, 1);
    let offset = delivery.offset;

    let consumer: BaseConsumer = client_config()
        .set("group.id", unique_name("smoke-group"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 1, Offset::Offset(offset))
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let message = loop {
        assert!(std::time::Instant::now() < deadline, "no record fetched");
        if let Some(result) = consumer.poll(Duration::from_millis(500)) {
            break result.expect("fetch").detach();
        }
    };
    assert_eq!(message.key(), Some(b"k".as_slice()));
    assert_eq!(message.payload(), Some(b"hello".as_slice()));
    assert_eq!(message.timestamp().to_millis(), Some(1_600_000_000_000));
    let header = message.headers().unwrap().get(0);
    assert_eq!(header.key, "h");
    assert_eq!(header.value, Some(b"v".as_slice()));
}

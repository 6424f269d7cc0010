//! The Kafka-protocol broker the tests talk to.
//!
//! `scripts/services.sh start` starts one (noida-db on 127.0.0.1) and `scripts/test.sh`
//! exports its address in [`BROKER_ENV`]. Each test creates its own topics with
//! `retention.ms=-1`, because the test broker expires old CreateTime records quickly.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;

/// Environment variable holding the test broker's `host:port`.
pub const BROKER_ENV: &str = "PIPELINE_BACKUP_TEST_KAFKA";

/// The test broker's bootstrap address; panics with a hint when no broker was started.
pub fn bootstrap() -> String {
    std::env::var(BROKER_ENV).unwrap_or_else(|_| {
        panic!("{BROKER_ENV} is not set: run the tests with scripts/test.sh, which starts the broker (or scripts/services.sh start and export the address it prints)")
    })
}

/// A client configuration pointing at the test broker.
pub fn client_config() -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap());
    config
}

/// Creates a topic that never expires records; returns its name.
pub async fn create_topic(name: &str, partitions: i32) -> String {
    let admin: AdminClient<DefaultClientContext> = client_config().create().expect("admin client");
    let topic =
        NewTopic::new(name, partitions, TopicReplication::Fixed(1)).set("retention.ms", "-1");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&[topic], &options)
        .await
        .expect("CreateTopics request");
    for result in results {
        result.unwrap_or_else(|(topic, e)| panic!("create topic {topic}: {e}"));
    }
    name.to_string()
}

//! rdkafka client settings from [`KafkaArgs`], shared by the Kafka tools.

use rdkafka::ClientConfig;

use crate::cli::{is_secret_property, KafkaArgs};

/// The client settings from the flags and `KAFKA_CLIENT_CONFIG`, logged without secrets.
/// Topic auto-creation is off unless asked for: the tools ask for topics' metadata by name,
/// and the replay creates its target itself (partitions, configs).
pub fn client_config(kafka: &KafkaArgs, client_id: &str) -> anyhow::Result<ClientConfig> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &kafka.bootstrap_servers);
    config.set("client.id", client_id);
    config.set("allow.auto.create.topics", "false");
    for (key, value) in kafka.properties()? {
        let shown = if is_secret_property(&key) {
            "<hidden>"
        } else {
            value.as_str()
        };
        tracing::debug!("client property {key}={shown}");
        config.set(key, value);
    }
    Ok(config)
}

/// Drops a Kafka client on a thread of its own. Closing an admin client (or a consumer with a
/// group) waits up to 100 ms for its polling thread, which a tool about to report and exit
/// need not sit through; the thread finishes on its own when the process lives on.
pub fn close_in_background<T: Send + 'static>(client: T) {
    let spawned = std::thread::Builder::new()
        .name("kafka-close".into())
        .spawn(move || drop(client));
    if let Err(error) = spawned {
        tracing::debug!("cannot close a Kafka client in the background: {error}");
    }
}

/// An admin client with the single-threaded runtime its requests are awaited on, for tools
/// that are otherwise synchronous.
pub struct Admin {
    pub client: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext>,
    runtime: tokio::runtime::Runtime,
}

impl Admin {
    pub fn new(config: &ClientConfig) -> anyhow::Result<Admin> {
        use anyhow::Context;
        Ok(Admin {
            client: config
                .create()
                .context("invalid Kafka client settings (check -X and KAFKA_CLIENT_CONFIG)")?,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?,
        })
    }

    /// Waits for an admin request.
    pub fn block_on<F: std::future::Future>(&self, request: F) -> F::Output {
        self.runtime.block_on(request)
    }
}

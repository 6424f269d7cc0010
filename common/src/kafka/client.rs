//! rdkafka client settings from [`KafkaArgs`], shared by the Kafka tools.

use std::sync::Mutex;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, ClientContext};

use super::is_secret_property;
use crate::cli::KafkaArgs;

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
    check_settings(&config)?;
    Ok(config)
}

/// Checks every property with librdkafka (no client is made). Its message for a bad property
/// repeats the value, which may be a secret: a mistyped `sasl.passwrod` is not known to be
/// one, so the value of an unknown or secret property is never shown.
pub fn check_settings(config: &ClientConfig) -> anyhow::Result<()> {
    use rdkafka::types::RDKafkaConfRes;
    match config.create_native_config() {
        Ok(_) => Ok(()),
        Err(KafkaError::ClientConfig(result, description, key, value)) => {
            let hide = result == RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN || is_secret_property(&key);
            let (setting, description) = if hide {
                // librdkafka quotes a value it repeats; a bare mention is not risked either.
                let quoted = description.replace(&format!("\"{value}\""), "\"<hidden>\"");
                let description = if value.len() >= 4 && quoted.contains(value.as_str()) {
                    "not accepted".to_string()
                } else {
                    quoted
                };
                (key, description)
            } else {
                (format!("{key}={value}"), description)
            };
            Err(anyhow::anyhow!(
                "invalid Kafka client setting '{setting}': {description} (check -X and KAFKA_CLIENT_CONFIG)"
            ))
        }
        Err(error) => Err(anyhow::anyhow!(
            "invalid Kafka client settings (check -X and KAFKA_CLIENT_CONFIG): {error}"
        )),
    }
}

/// A client context that keeps librdkafka's last complaint (an error event, or a log line at
/// warning level or worse), which the errors it hands the application do not carry: a
/// consume failing with a bare `BadMessage` was, say, a fetch response over
/// `receive.message.max.bytes`. Log lines go to the debug log, as before.
#[derive(Default)]
pub struct Complaints {
    last: Mutex<Option<String>>,
}

impl Complaints {
    /// librdkafka's last complaint, if it made one.
    pub fn last(&self) -> Option<String> {
        self.last.lock().ok()?.clone()
    }

    fn keep(&self, complaint: &str) {
        if let Ok(mut last) = self.last.lock() {
            *last = Some(complaint.to_string());
        }
    }
}

impl ClientContext for Complaints {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        use RDKafkaLogLevel::{Alert, Critical, Emerg, Error, Warning};
        tracing::debug!(target: "librdkafka", "{facility} {message}");
        if matches!(level, Emerg | Alert | Critical | Error | Warning) {
            self.keep(message);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(target: "librdkafka", "{error}: {reason}");
        self.keep(reason);
    }
}

impl ConsumerContext for Complaints {}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::KafkaArgs;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        kafka: KafkaArgs,
    }

    fn settings(extra: &[&str]) -> anyhow::Result<ClientConfig> {
        let mut args = vec!["tool", "--bootstrap-servers", "127.0.0.1:9"];
        args.extend(extra);
        client_config(&Cli::parse_from(args).kafka, "test")
    }

    #[test]
    fn bad_settings_are_refused_without_showing_a_secret() {
        assert!(settings(&["-X", "linger.ms=7"]).is_ok());
        // A mistyped secret property is unknown, so its value may be a secret.
        let typo = settings(&["-X", "sasl.passwrod=hunter2"])
            .unwrap_err()
            .to_string();
        assert!(typo.contains("'sasl.passwrod'"), "{typo}");
        assert!(!typo.contains("hunter2"), "{typo}");
        // A short value is not hunted for inside the message (it would mangle the key).
        let short = settings(&["-X", "foo=o"]).unwrap_err().to_string();
        assert!(short.contains("\"foo\""), "{short}");
        // A bad value of an ordinary property is shown: it helps and is no secret.
        let bad = settings(&["-X", "acks=several"]).unwrap_err().to_string();
        assert!(bad.contains("'acks=several'"), "{bad}");
    }
}

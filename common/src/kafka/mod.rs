//! Kafka client properties, from `KAFKA_CLIENT_CONFIG` and the `-X KEY=VALUE` flags of
//! [`KafkaArgs`], and which of them are secret; with the `kafka` feature, the rdkafka client
//! settings built from them.

use anyhow::Context;

use crate::cli::KafkaArgs;
use crate::env;

#[cfg(feature = "kafka")]
mod client;

#[cfg(feature = "kafka")]
pub use client::{check_settings, client_config, close_in_background, Admin};

impl KafkaArgs {
    /// All client properties: `KAFKA_CLIENT_CONFIG` first, then `-X` flags.
    pub fn properties(&self) -> anyhow::Result<Vec<(String, String)>> {
        kafka_properties(&self.client_config)
    }
}

/// Kafka client properties: `KAFKA_CLIENT_CONFIG` first, then the `-X` flags given.
pub fn kafka_properties(flags: &[(String, String)]) -> anyhow::Result<Vec<(String, String)>> {
    let mut props = Vec::new();
    if let Ok(text) = std::env::var(env::KAFKA_CLIENT_CONFIG) {
        for item in text
            .split(['\n', ';'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            props.push(parse_key_value(item).context(env::KAFKA_CLIENT_CONFIG)?);
        }
    }
    props.extend(flags.iter().cloned());
    Ok(props)
}

/// True for property names whose values must never be logged.
pub fn is_secret_property(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "token", "key.pem", "sasl.jaas"]
        .iter()
        .any(|s| key.contains(s))
}

/// A client property that is not `KEY=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected KEY=VALUE, got '{0}'")]
pub struct KeyValueError(String);

/// Parses one `KEY=VALUE` client property (clap value parser).
pub fn parse_key_value(s: &str) -> Result<(String, String), KeyValueError> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(KeyValueError(s.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_parsing() {
        assert_eq!(
            parse_key_value("sasl.password=a=b").unwrap(),
            ("sasl.password".to_string(), "a=b".to_string())
        );
        assert_eq!(
            parse_key_value("novalue").unwrap_err().to_string(),
            "expected KEY=VALUE, got 'novalue'"
        );
        assert!(is_secret_property("sasl.password"));
        assert!(!is_secret_property("bootstrap.servers"));
    }
}

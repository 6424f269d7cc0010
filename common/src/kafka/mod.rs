//! Kafka client properties, from `KAFKA_CLIENT_CONFIG` and the `-X KEY=VALUE` flags of
//! [`KafkaArgs`], and which of them are secret; with the `kafka` feature, the rdkafka client
//! settings built from them.

use anyhow::Context;

use crate::cli::KafkaArgs;
use crate::env;

#[cfg(feature = "kafka")]
mod client;

#[cfg(feature = "kafka")]
pub use client::{check_settings, client_config, close_in_background, Admin, Complaints};

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

/// Hands client properties (all of them: [`kafka_properties`]) to a child tool in its
/// environment, as `KAFKA_CLIENT_CONFIG` with one `key=value` per line, never in its argv,
/// where any user could read a password.
pub fn pass_to_child(cmd: &mut std::process::Command, properties: &[(String, String)]) {
    if properties.is_empty() {
        return;
    }
    let lines: Vec<String> = properties.iter().map(|(k, v)| format!("{k}={v}")).collect();
    cmd.env(env::KAFKA_CLIENT_CONFIG, lines.join("\n"));
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
    fn a_child_gets_the_client_properties_in_its_environment_not_its_arguments() {
        let mut cmd = std::process::Command::new("kafka-replay");
        cmd.arg("--topic").arg("t");
        let properties = [
            ("security.protocol".to_string(), "SASL_SSL".to_string()),
            ("sasl.password".to_string(), "s3cret".to_string()),
        ];
        pass_to_child(&mut cmd, &properties);
        assert!(cmd
            .get_args()
            .all(|a| !a.to_string_lossy().contains("s3cret")));
        let (_, value) = cmd
            .get_envs()
            .find(|(k, _)| *k == env::KAFKA_CLIENT_CONFIG)
            .expect("KAFKA_CLIENT_CONFIG set");
        let value = value.unwrap().to_str().unwrap();
        assert_eq!(value, "security.protocol=SASL_SSL\nsasl.password=s3cret");
        // Parsed back by the child exactly as given.
        let parsed: Vec<_> = value
            .split('\n')
            .map(|l| parse_key_value(l).unwrap())
            .collect();
        assert_eq!(parsed, properties);
    }

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

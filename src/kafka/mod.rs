//! Kafka adapter: client configuration, topics, a producer that awaits delivery reports,
//! consumers, the Avro wire format, and dead letters. Knows nothing about Postgres.

pub mod admin;
pub mod codec;
pub mod consumer;
pub mod dlq;
pub mod position;
pub mod producer;

use std::time::Duration;

use rdkafka::ClientConfig;

/// How to reach the cluster. `properties` pass librdkafka settings through unchanged
/// (`security.protocol`, `sasl.*`, `ssl.*`, ...), so TLS and SASL need no code of ours.
#[derive(Clone)]
pub struct KafkaSettings {
    pub brokers: String,
    pub properties: Vec<(String, String)>,
    /// How long to wait for the cluster before calling it unreachable.
    pub timeout: Duration,
}

/// Prints secret properties (`sasl.password`, ...) as `***`.
impl std::fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let properties: Vec<(&str, &str)> = self
            .properties
            .iter()
            .map(|(k, v)| {
                let shown = if crate::config::is_secret_property(k) {
                    "***"
                } else {
                    v.as_str()
                };
                (k.as_str(), shown)
            })
            .collect();
        f.debug_struct("KafkaSettings")
            .field("brokers", &self.brokers)
            .field("properties", &properties)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl KafkaSettings {
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }
}

/// The topics recq reads and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub requests: String,
    pub jobs: String,
    pub recommendations: String,
    pub requests_dlq: String,
    pub jobs_dlq: String,
    /// User erasures (compacted, key = user id).
    pub erasures: String,
}

impl Topics {
    /// The default names, each with `prefix` in front (tests use a random prefix).
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            requests: format!("{prefix}recq.requests"),
            jobs: format!("{prefix}recq.jobs"),
            recommendations: format!("{prefix}recq.recommendations"),
            requests_dlq: format!("{prefix}recq.requests.dlq"),
            jobs_dlq: format!("{prefix}recq.jobs.dlq"),
            erasures: format!("{prefix}recq.erasures"),
        }
    }
}

/// The offset to store or commit after processing the record at `offset`: Kafka positions
/// name the next record to read.
pub fn next_offset(offset: i64) -> i64 {
    offset + 1
}

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error(
        "cannot reach Kafka at {brokers} ({source}); start the broker (`make up`) or set RECQ_BROKERS"
    )]
    Unreachable {
        brokers: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("Kafka client error: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("creating topic {topic} failed: {reason}")]
    CreateTopic { topic: String, reason: String },
    #[error("background Kafka task failed: {0}")]
    Task(String),
    #[error("delivery to {topic} failed: {source}")]
    Delivery {
        topic: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_properties(properties: &[(&str, &str)]) -> KafkaSettings {
        KafkaSettings {
            brokers: "127.0.0.1:1".into(),
            properties: properties
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            timeout: Duration::from_secs(1),
        }
    }

    /// The local brokers speak neither TLS nor SASL, so this checks what can be checked
    /// without one: librdkafka is built with TLS and SASL (PLAIN, SCRAM) and accepts the
    /// settings an operator passes with `--kafka-property`; no connection is attempted.
    #[tokio::test]
    async fn tls_and_sasl_settings_are_accepted_by_the_kafka_clients() {
        let cases: [&[(&str, &str)]; 3] = [
            &[
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "SCRAM-SHA-256"),
                ("sasl.username", "recq"),
                ("sasl.password", "s3cret"),
            ],
            &[
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "PLAIN"),
                ("sasl.username", "recq"),
                ("sasl.password", "s3cret"),
                ("ssl.endpoint.identification.algorithm", "https"),
            ],
            &[("security.protocol", "SSL")],
        ];
        for properties in cases {
            let settings = with_properties(properties);
            producer::Producer::new(&settings)
                .unwrap_or_else(|e| panic!("producer with {properties:?}: {e}"));
            let consumer =
                consumer::group_consumer(&settings, "g", consumer::RebalanceContext::default());
            assert!(consumer.is_ok(), "consumer with {properties:?}");
            assert!(!format!("{settings:?}").contains("s3cret"));
        }
    }

    #[test]
    fn an_invalid_security_setting_is_an_error_not_a_panic() {
        let settings = with_properties(&[("security.protocol", "CARRIER_PIGEON")]);
        let error = producer::Producer::new(&settings)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("security.protocol"), "{error}");
    }

    #[test]
    fn the_stored_offset_names_the_record_after_the_processed_one() {
        assert_eq!(next_offset(0), 1);
        assert_eq!(next_offset(41), 42);
    }
}

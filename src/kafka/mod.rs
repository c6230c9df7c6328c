//! Kafka adapter: client configuration, topics, a producer that awaits delivery reports,
//! consumers, the Avro wire format, and dead letters. Knows nothing about Postgres.

pub mod admin;
pub mod codec;
pub mod consumer;
pub mod dlq;
pub mod producer;

use std::time::Duration;

use rdkafka::ClientConfig;

/// How to reach the cluster. `properties` pass librdkafka settings through unchanged
/// (`security.protocol`, `sasl.*`, `ssl.*`, ...), so TLS and SASL need no code of ours.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub brokers: String,
    pub properties: Vec<(String, String)>,
    /// How long to wait for the cluster before calling it unreachable.
    pub timeout: Duration,
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

    #[test]
    fn the_stored_offset_names_the_record_after_the_processed_one() {
        assert_eq!(next_offset(0), 1);
        assert_eq!(next_offset(41), 42);
    }
}

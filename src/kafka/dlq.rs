//! Dead letters: a record that can never be processed is re-published, bytes unchanged, to a
//! dead-letter topic with headers saying why, so it is neither lost nor blocking its partition.

use chrono::Utc;
use rdkafka::Message;
use rdkafka::message::{Headers, OwnedMessage};

use super::KafkaError;
use super::producer::{Outgoing, Producer};

pub const REASON: &str = "recq.dlq.reason";
pub const ERROR: &str = "recq.dlq.error";
pub const TOPIC: &str = "recq.dlq.topic";
pub const PARTITION: &str = "recq.dlq.partition";
pub const OFFSET: &str = "recq.dlq.offset";
pub const FIRST_FAILURE_AT: &str = "recq.dlq.first_failure_at";
pub const ATTEMPT: &str = "recq.dlq.attempt";

/// Publishes `message` to `dlq_topic` with the reason (a stable code) and the error text, and
/// waits for the broker's acknowledgement. Original headers are kept.
pub async fn dead_letter(
    producer: &Producer,
    dlq_topic: &str,
    message: &OwnedMessage,
    reason: &str,
    error: &str,
) -> Result<(), KafkaError> {
    let mut headers: Vec<(&str, Vec<u8>)> = message
        .headers()
        .map(|h| {
            h.iter()
                .filter(|h| !h.key.starts_with("recq.dlq."))
                .map(|h| (h.key, h.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default();
    let first_failure =
        header(message, FIRST_FAILURE_AT).unwrap_or_else(|| Utc::now().to_rfc3339());
    let attempt = header(message, ATTEMPT)
        .and_then(|a| a.parse::<u32>().ok())
        .map_or(1, |a| a + 1);
    headers.extend([
        (REASON, reason.as_bytes().to_vec()),
        (ERROR, error.as_bytes().to_vec()),
        (TOPIC, message.topic().as_bytes().to_vec()),
        (PARTITION, message.partition().to_string().into_bytes()),
        (OFFSET, message.offset().to_string().into_bytes()),
        (FIRST_FAILURE_AT, first_failure.into_bytes()),
        (ATTEMPT, attempt.to_string().into_bytes()),
    ]);
    producer
        .send(Outgoing {
            topic: dlq_topic,
            key: message.key().unwrap_or_default(),
            value: message.payload(),
            headers,
        })
        .await
        .map(|_| ())
}

/// The value of header `key` as text, if present.
pub fn header(message: &OwnedMessage, key: &str) -> Option<String> {
    message.headers().and_then(|h| {
        h.iter()
            .find(|h| h.key == key)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    })
}

//! Dead letters: a record that can never be processed is re-published, bytes unchanged, to a
//! dead-letter topic with headers saying why, so it is neither lost nor blocking its partition.
//! Dead letters are read back (`recq dlq list`) and re-published to their original topic
//! (`recq dlq redrive`) keeping their first-failure time and attempt count, so a record that
//! fails again is dead-lettered with `attempt` incremented.
//!
//! Kafka keys are bytes; a record without a key is dead-lettered with an empty key.

use std::time::Duration;

use chrono::Utc;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::{Message, Offset, TopicPartitionList};

use super::producer::{Outgoing, Producer};
use super::{KafkaError, KafkaSettings, consumer};

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

/// A dead letter read back from a dead-letter topic, headers parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Where the dead letter itself sits.
    pub partition: i32,
    pub offset: i64,
    pub reason: String,
    pub error: String,
    /// Where the original record was read from (absent if the headers are missing).
    pub original_topic: Option<String>,
    pub original_partition: Option<i32>,
    pub original_offset: Option<i64>,
    pub first_failure_at: Option<String>,
    pub attempt: Option<u32>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// Every header, the `recq.dlq.*` ones included, in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl DeadLetter {
    pub fn from_message(message: &OwnedMessage) -> Self {
        let text = |key| header(message, key);
        Self {
            partition: message.partition(),
            offset: message.offset(),
            reason: text(REASON).unwrap_or_else(|| "unknown".to_owned()),
            error: text(ERROR).unwrap_or_default(),
            original_topic: text(TOPIC),
            original_partition: text(PARTITION).and_then(|p| p.parse().ok()),
            original_offset: text(OFFSET).and_then(|o| o.parse().ok()),
            first_failure_at: text(FIRST_FAILURE_AT),
            attempt: text(ATTEMPT).and_then(|a| a.parse().ok()),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            headers: message
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// The headers to send with a redriven record: the original ones plus the first-failure
    /// time and attempt (so a second failure counts on), without the stale reason and origin.
    pub fn redrive_headers(&self) -> Vec<(&str, Vec<u8>)> {
        self.headers
            .iter()
            .filter(|(k, _)| !k.starts_with("recq.dlq.") || k == FIRST_FAILURE_AT || k == ATTEMPT)
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect()
    }
}

/// Re-publishes `letter`'s key, value and headers to `topic`, waiting for the ack.
pub async fn redrive(
    producer: &Producer,
    letter: &DeadLetter,
    topic: &str,
) -> Result<(i32, i64), KafkaError> {
    producer
        .send(Outgoing {
            topic,
            key: letter.key.as_deref().unwrap_or_default(),
            value: letter.value.as_deref(),
            headers: letter.redrive_headers(),
        })
        .await
}

/// The partitions of `topic`; empty if it does not exist.
async fn partitions(settings: &KafkaSettings, topic: &str) -> Result<Vec<i32>, KafkaError> {
    let (settings, topic) = (settings.clone(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = settings.client_config().create()?;
        let metadata = client.fetch_metadata(Some(&topic), settings.timeout)?;
        Ok(metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect())
    })
    .await
    .map_err(|e| KafkaError::Task(e.to_string()))?
}

/// Reads `topic` from the beginning of every partition, outside any consumer group, until no
/// record arrived for `idle` or `limit` dead letters were read. Deliberately not bounded by
/// the high watermark, which some brokers report wrongly. Sorted by (partition, offset).
pub async fn read_all(
    settings: &KafkaSettings,
    topic: &str,
    idle: Duration,
    limit: Option<usize>,
) -> Result<Vec<DeadLetter>, KafkaError> {
    let partitions = partitions(settings, topic).await?;
    if partitions.is_empty() || limit == Some(0) {
        return Ok(Vec::new());
    }
    let reader = consumer::reader(settings)?;
    let mut assignment = TopicPartitionList::new();
    for partition in partitions {
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    reader.assign(&assignment)?;
    let mut letters = Vec::new();
    while limit.is_none_or(|limit| letters.len() < limit) {
        match tokio::time::timeout(idle, reader.recv()).await {
            Ok(Ok(message)) => letters.push(DeadLetter::from_message(&message.detach())),
            Ok(Err(e)) => return Err(KafkaError::Client(e)),
            Err(_) => break,
        }
    }
    letters.sort_by_key(|l| (l.partition, l.offset));
    Ok(letters)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{Header, OwnedHeaders};

    #[test]
    fn a_redriven_record_keeps_its_first_failure_and_attempt_but_not_the_stale_reason() {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "traceparent",
                value: Some("00-abc".as_bytes()),
            })
            .insert(Header {
                key: REASON,
                value: Some("bad-key".as_bytes()),
            })
            .insert(Header {
                key: TOPIC,
                value: Some("recq.requests".as_bytes()),
            })
            .insert(Header {
                key: OFFSET,
                value: Some("17".as_bytes()),
            })
            .insert(Header {
                key: FIRST_FAILURE_AT,
                value: Some("2024-01-01T00:00:00+00:00".as_bytes()),
            })
            .insert(Header {
                key: ATTEMPT,
                value: Some("2".as_bytes()),
            });
        let message = OwnedMessage::new(
            Some(b"value".to_vec()),
            Some(b"7".to_vec()),
            "recq.requests.dlq".into(),
            rdkafka::Timestamp::NotAvailable,
            3,
            41,
            Some(headers),
        );
        let letter = DeadLetter::from_message(&message);
        assert_eq!((letter.partition, letter.offset), (3, 41));
        assert_eq!(letter.reason, "bad-key");
        assert_eq!(letter.original_topic.as_deref(), Some("recq.requests"));
        assert_eq!(letter.original_offset, Some(17));
        assert_eq!(letter.attempt, Some(2));
        let keys: Vec<&str> = letter.redrive_headers().iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["traceparent", FIRST_FAILURE_AT, ATTEMPT]);
    }
}

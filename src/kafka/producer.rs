//! A producer whose `send` returns only once the broker acknowledged the record, so callers
//! can store a consumed offset knowing its output is durable.

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::{KafkaError, KafkaSettings};

/// A record to produce. `value: None` is a tombstone.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub topic: &'a str,
    pub key: &'a [u8],
    pub value: Option<&'a [u8]>,
    pub headers: Vec<(&'a str, Vec<u8>)>,
}

#[derive(Clone)]
pub struct Producer {
    inner: FutureProducer,
    timeout: Duration,
}

impl Producer {
    /// Idempotent producer (`enable.idempotence`), waiting for all in-sync replicas.
    pub fn new(settings: &KafkaSettings) -> Result<Self, KafkaError> {
        let inner: FutureProducer = settings
            .client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .set(
                "message.timeout.ms",
                settings.timeout.as_millis().to_string(),
            )
            .create()?;
        Ok(Self {
            inner,
            timeout: settings.timeout,
        })
    }

    /// Produces `record` and waits for the broker's acknowledgement. Returns (partition, offset).
    pub async fn send(&self, record: Outgoing<'_>) -> Result<(i32, i64), KafkaError> {
        let headers = record
            .headers
            .iter()
            .fold(OwnedHeaders::new(), |headers, (key, value)| {
                headers.insert(Header {
                    key,
                    value: Some(value.as_slice()),
                })
            });
        let mut future = FutureRecord::<[u8], [u8]>::to(record.topic)
            .key(record.key)
            .headers(headers);
        if let Some(value) = record.value {
            future = future.payload(value);
        }
        self.inner
            .send(future, self.timeout)
            .await
            .map(|delivery| (delivery.partition, delivery.offset))
            .map_err(|(source, _)| KafkaError::Delivery {
                topic: record.topic.to_owned(),
                source,
            })
    }

    /// Waits for everything in flight to be delivered.
    pub fn flush(&self) -> Result<(), KafkaError> {
        use rdkafka::producer::Producer as _;
        self.inner.flush(self.timeout).map_err(KafkaError::Client)
    }
}

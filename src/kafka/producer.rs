//! A producer whose `send` returns only once the broker acknowledged the record, so callers
//! can store a consumed offset knowing its output is durable.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::{KafkaError, KafkaSettings};
use crate::retry::{Backoff, Outage};

/// A record to produce. `value: None` is a tombstone.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub topic: &'a str,
    pub key: &'a [u8],
    pub value: Option<&'a [u8]>,
    pub headers: Vec<(&'a str, Vec<u8>)>,
}

/// Cheap to clone; clones share one client.
#[derive(Clone)]
pub struct Producer {
    /// Replaced after a fatal error (see `send`); the lock is never held across an await.
    inner: Arc<RwLock<FutureProducer>>,
    settings: KafkaSettings,
    timeout: Duration,
    outage: Outage,
}

impl Producer {
    /// Idempotent producer (`enable.idempotence`), waiting for all in-sync replicas.
    pub fn new(settings: &KafkaSettings) -> Result<Self, KafkaError> {
        Ok(Self {
            inner: Arc::new(RwLock::new(Self::client(settings)?)),
            settings: settings.clone(),
            timeout: settings.timeout,
            outage: Outage::default(),
        })
    }

    fn client(settings: &KafkaSettings) -> Result<FutureProducer, KafkaError> {
        settings
            .client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .set("compression.type", "lz4")
            .set(
                "message.timeout.ms",
                settings.timeout.as_millis().to_string(),
            )
            .create()
            .map_err(KafkaError::Client)
    }

    fn current(&self) -> FutureProducer {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// An idempotent producer whose messages timed out (a broker paused or restarted) can end
    /// up with a producer id the broker no longer accepts: a fatal error (a sequence gap the
    /// broker cannot resolve), or — seen with Tansu after a 20 s SIGSTOP — every record
    /// refused with `ProducerFenced`, for as long as the client lives. The records were never
    /// acknowledged, so their callers retry them; a new client (a new producer id) lets those
    /// retries succeed instead of failing forever.
    fn replace_if_broken(&self, failed: &FutureProducer, error: &rdkafka::error::KafkaError) {
        use rdkafka::producer::Producer as _;
        let reason = match failed.client().fatal_error() {
            Some((code, reason)) => format!("fatal error {code:?}: {reason}"),
            None if refuses_producer_id(error) => {
                format!("the broker refuses its producer id: {error}")
            }
            None => return,
        };
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if !std::ptr::eq(inner.client().native_ptr(), failed.client().native_ptr()) {
            return; // another task replaced it already
        }
        match Self::client(&self.settings) {
            Ok(fresh) => {
                tracing::warn!(%reason, "Kafka producer replaced with a new one");
                *inner = fresh;
            }
            Err(e) => {
                tracing::warn!(%reason, error = %e, "Kafka producer is broken and could not be recreated")
            }
        }
    }

    /// A backoff for waiting out a broker outage; every clone of this producer shares the
    /// outage, so it is logged once however many tasks wait.
    pub fn backoff(&self) -> Backoff {
        Backoff::shared("Kafka", self.outage.clone())
    }

    /// Produces `record` and waits for the broker's acknowledgement. Returns (partition, offset).
    pub async fn send(&self, record: Outgoing<'_>) -> Result<(i32, i64), KafkaError> {
        let producer = self.current();
        let result = producer.send(future_record(&record), self.timeout).await;
        match result {
            Ok(delivery) => Ok((delivery.partition, delivery.offset)),
            Err((source, _)) => {
                self.replace_if_broken(&producer, &source);
                Err(KafkaError::Delivery {
                    topic: record.topic.to_owned(),
                    source,
                })
            }
        }
    }

    /// Hands `record` to the client now and returns a future of the broker's acknowledgement
    /// (partition, offset). Records handed over one after another keep that order within a
    /// partition (the producer is idempotent), whether or not the earlier ones were
    /// acknowledged yet. Fails at once if the client cannot take it (its queue is full).
    pub fn enqueue(
        &self,
        record: Outgoing<'_>,
    ) -> Result<impl Future<Output = Result<(i32, i64), KafkaError>> + use<>, KafkaError> {
        let producer = self.current();
        let topic = record.topic.to_owned();
        let delivery = match producer.send_result(future_record(&record)) {
            Ok(delivery) => delivery,
            Err((source, _)) => return Err(KafkaError::Delivery { topic, source }),
        };
        let this = self.clone();
        Ok(async move {
            let source = match delivery.await {
                Ok(Ok(delivery)) => return Ok((delivery.partition, delivery.offset)),
                Ok(Err((source, _))) => source,
                Err(_) => rdkafka::error::KafkaError::Canceled,
            };
            this.replace_if_broken(&producer, &source);
            Err(KafkaError::Delivery { topic, source })
        })
    }

    /// Waits for everything in flight to be delivered.
    pub fn flush(&self) -> Result<(), KafkaError> {
        use rdkafka::producer::Producer as _;
        self.current()
            .flush(self.timeout)
            .map_err(KafkaError::Client)
    }
}

fn future_record<'a>(record: &Outgoing<'a>) -> FutureRecord<'a, [u8], [u8]> {
    let headers = record
        .headers
        .iter()
        .fold(OwnedHeaders::new(), |headers, (key, value)| {
            headers.insert(Header {
                key,
                value: Some(value.as_slice()),
            })
        });
    let future = FutureRecord::<[u8], [u8]>::to(record.topic)
        .key(record.key)
        .headers(headers);
    match record.value {
        Some(value) => future.payload(value),
        None => future,
    }
}

/// Errors after which this client's producer id will not be accepted again: retrying with
/// the same client cannot succeed.
fn refuses_producer_id(error: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(
        error.rdkafka_error_code(),
        Some(
            Code::ProducerFenced
                | Code::InvalidProducerEpoch
                | Code::UnknownProducerId
                | Code::OutOfOrderSequenceNumber
        )
    )
}

#[cfg(test)]
mod tests {
    use rdkafka::error::KafkaError as RdError;
    use rdkafka::types::RDKafkaErrorCode as Code;

    use super::refuses_producer_id;

    #[test]
    fn a_fenced_or_unknown_producer_id_needs_a_new_client_and_a_timeout_does_not() {
        for code in [
            Code::ProducerFenced,
            Code::InvalidProducerEpoch,
            Code::UnknownProducerId,
            Code::OutOfOrderSequenceNumber,
        ] {
            assert!(
                refuses_producer_id(&RdError::MessageProduction(code)),
                "{code:?}"
            );
        }
        for code in [
            Code::MessageTimedOut,
            Code::BrokerTransportFailure,
            Code::MessageSizeTooLarge,
        ] {
            assert!(
                !refuses_producer_id(&RdError::MessageProduction(code)),
                "{code:?}"
            );
        }
    }
}

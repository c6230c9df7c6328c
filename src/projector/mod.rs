//! The projector: jobs and recommendations events → Postgres.
//!
//! Invariant: rows and the stored position of every partition change in one transaction, and
//! only events at or past the stored position are applied, so each event takes effect exactly
//! once whatever crashes, redeliveries or rebalances happen. Kafka's committed offsets are only
//! a hint for where to start fetching; the position stored in Postgres decides.

mod batch;

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::message::OwnedMessage;
use sqlx::PgPool;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::db::{self, DbError};
use crate::kafka::codec::{Codec, CodecError};
use crate::kafka::consumer::{self, AssignmentChange, Partition, RebalanceContext, RecqConsumer};
use crate::kafka::position::{Position, Verdict, is_recent};
use crate::kafka::producer::Producer;
use crate::kafka::{KafkaError, KafkaSettings, Topics, dlq};
use crate::retry::Backoff;
pub use batch::{Batch, Event, Target};

#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    pub group: String,
    /// Flush when this many records are buffered...
    pub batch_size: usize,
    /// ...or when the oldest buffered record is this old.
    pub flush_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("cancelled while a dependency was unavailable")]
    Cancelled,
}

/// Runs until `cancel` fires; flushes what it buffered before returning.
pub async fn run(
    config: ProjectorConfig,
    kafka: KafkaSettings,
    topics: Topics,
    pool: PgPool,
    codec: Codec,
    producer: Producer,
    cancel: CancellationToken,
) -> Result<(), ProjectorError> {
    let context = RebalanceContext::default();
    let consumer = consumer::group_consumer(&kafka, &config.group, context.clone())?;
    consumer
        .subscribe(&[&topics.jobs, &topics.recommendations, &topics.erasures])
        .map_err(KafkaError::Client)?;
    let mut projector = Projector {
        consumer,
        context,
        topics,
        pool,
        codec,
        producer,
        positions: HashMap::new(),
        batch: Batch::default(),
        cancel: cancel.clone(),
    };
    tracing::info!(group = %config.group, "projector started");
    let mut deadline = Instant::now() + config.flush_interval;
    let mut dead_letters = crate::metrics::Reporter::new(Duration::from_secs(30));
    loop {
        projector.handle_rebalances().await?;
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep_until(deadline) => {
                projector.flush().await?;
                dead_letters.tick("projector");
                deadline = Instant::now() + config.flush_interval;
            }
            received = projector.consumer.recv() => {
                let message = match received {
                    Ok(message) => message.detach(),
                    Err(e) => {
                        tracing::warn!(error = %e, "consumer error");
                        continue;
                    }
                };
                if projector.batch.is_empty() {
                    deadline = Instant::now() + config.flush_interval;
                }
                projector.accept(message).await?;
                if projector.batch.len() >= config.batch_size {
                    projector.flush().await?;
                    deadline = Instant::now() + config.flush_interval;
                }
            }
        }
    }
    projector.flush().await?;
    projector.commit();
    dead_letters.final_report("projector");
    tracing::info!("projector stopped");
    Ok(())
}

/// Decodes a record of one of the projector's topics.
pub async fn decode_event(
    codec: &Codec,
    topics: &Topics,
    message: &OwnedMessage,
) -> Result<batch::Event, CodecError> {
    let (key, payload) = (message.key(), message.payload());
    if message.topic() == topics.jobs {
        codec
            .decode_job_event(key, payload)
            .await
            .map(batch::Event::Job)
    } else if message.topic() == topics.erasures {
        codec
            .decode_erasure(payload)
            .await
            .map(batch::Event::Erasure)
    } else {
        codec
            .decode_recommendations_event(key, payload)
            .await
            .map(batch::Event::Recommendations)
    }
}

/// Decodes a record of the jobs or recommendations topic, waiting out registry outages.
/// Poison is returned as (reason code, detail). Shared with `recq rebuild`.
pub async fn decode_with_retry(
    codec: &Codec,
    topics: &Topics,
    message: &OwnedMessage,
    cancel: &CancellationToken,
) -> Result<Result<batch::Event, (&'static str, String)>, ProjectorError> {
    let mut backoff = codec.backoff();
    loop {
        match decode_event(codec, topics, message).await {
            Ok(event) => {
                backoff.recovered();
                return Ok(Ok(event));
            }
            Err(CodecError::Poison { kind, detail }) => return Ok(Err((kind.code(), detail))),
            Err(CodecError::Transient(e)) => {
                if !backoff.wait(&e, cancel).await {
                    return Err(ProjectorError::Cancelled);
                }
            }
        }
    }
}

struct Projector {
    consumer: RecqConsumer,
    context: RebalanceContext,
    topics: Topics,
    pool: PgPool,
    codec: Codec,
    producer: Producer,
    /// Per assigned partition: where the next record to accept is. Loaded from Postgres when
    /// a partition is first seen.
    positions: HashMap<Partition, Position>,
    batch: Batch,
    cancel: CancellationToken,
}

impl Projector {
    /// On revocation, flushes what is buffered (safe even if another member already took the
    /// partition: the flush re-checks positions under a lock) and forgets the positions, which
    /// are read again from Postgres when the partition comes back.
    async fn handle_rebalances(&mut self) -> Result<(), ProjectorError> {
        for change in self.context.take_changes() {
            if let AssignmentChange::Revoked(partitions) = change {
                self.flush().await?;
                for partition in partitions {
                    self.positions.remove(&partition);
                }
            }
        }
        Ok(())
    }

    /// Decides whether `message` is next in its partition, then decodes it into the batch.
    async fn accept(&mut self, message: OwnedMessage) -> Result<(), ProjectorError> {
        // A rebalance may have happened while this record was being received.
        self.handle_rebalances().await?;
        let partition: Partition = (message.topic().to_owned(), message.partition());
        let (position, verdict) = match self.positions.get(&partition) {
            Some(position) => (
                *position,
                position.judge(message.offset(), is_recent(&message)),
            ),
            None => {
                // The first record shows where the consumer fetches from; anywhere but the
                // stored position needs a seek.
                let position = Position::at(self.stored_position(&partition).await?);
                let verdict = if message.offset() == position.next {
                    Verdict::Accept
                } else {
                    Verdict::Seek
                };
                (position, verdict)
            }
        };
        match verdict {
            Verdict::Skip => {
                self.positions.insert(partition, position);
                return Ok(());
            }
            Verdict::Seek => {
                let sought = position
                    .seek_back(
                        &self.consumer,
                        (&partition.0, partition.1),
                        message.offset(),
                        &self.cancel,
                    )
                    .await?
                    .ok_or(ProjectorError::Cancelled)?;
                self.positions.insert(partition, sought);
                return Ok(());
            }
            Verdict::Accept => {}
        }
        self.positions
            .insert(partition.clone(), Position::accepted(message.offset()));
        let decoded = self.decode(&message).await?;
        match decoded {
            Ok(event) => self.batch.push(partition, message.offset(), event),
            Err((kind, detail)) => {
                let dlq_topic = self.topics.jobs_dlq.clone();
                tracing::warn!(topic = %partition.0, partition = partition.1, offset = message.offset(), reason = kind, error = %detail, "dead-lettering an event");
                self.retry_kafka(|| {
                    dlq::dead_letter(&self.producer, &dlq_topic, &message, kind, &detail)
                })
                .await?;
                crate::metrics::dead_lettered(crate::metrics::Stream::Jobs, kind);
                self.batch.skip(partition, message.offset());
            }
        }
        Ok(())
    }

    async fn decode(
        &self,
        message: &OwnedMessage,
    ) -> Result<Result<batch::Event, (&'static str, String)>, ProjectorError> {
        decode_with_retry(&self.codec, &self.topics, message, &self.cancel).await
    }

    async fn retry_kafka<F, Fut>(&self, send: F) -> Result<(), ProjectorError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), KafkaError>>,
    {
        crate::retry::until_ok(self.producer.backoff(), &self.cancel, send)
            .await
            .map_err(ProjectorError::from)
    }

    async fn stored_position(&self, partition: &Partition) -> Result<i64, ProjectorError> {
        let mut backoff = Backoff::new("Postgres");
        loop {
            let result = async {
                let mut conn = self.pool.acquire().await?;
                db::offsets::read(&mut conn, &[partition.0.as_str()]).await
            }
            .await;
            match result {
                Ok(positions) => {
                    backoff.recovered();
                    return Ok(positions.get(partition).copied().unwrap_or(0));
                }
                Err(e) if e.is_transient() && backoff.wait(&e.to_string(), &self.cancel).await => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Applies the batch in one transaction, retrying while Postgres is unreachable, then
    /// tells Kafka the new positions (a hint for the next start).
    async fn flush(&mut self) -> Result<(), ProjectorError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let mut backoff = Backoff::new("Postgres");
        let positions = loop {
            match self.batch.apply(&self.pool, Target::Live).await {
                Ok(positions) => break positions,
                Err(e) if e.is_transient() && backoff.wait(&e.to_string(), &self.cancel).await => {}
                Err(e) => return Err(e.into()),
            }
        };
        backoff.recovered();
        for ((topic, partition), next) in &positions {
            if let Err(e) = consumer::store(&self.consumer, topic, *partition, *next) {
                tracing::debug!(%topic, partition, error = %e, "could not store the offset hint (partition no longer assigned)");
            }
        }
        self.batch = Batch::default();
        Ok(())
    }

    fn commit(&self) {
        if let Err(e) = self
            .consumer
            .commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
        {
            tracing::debug!(error = %e, "final offset commit skipped");
        }
    }
}

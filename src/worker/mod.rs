//! The worker: recommendation requests → status events and recommendation lists.
//!
//! Invariant: a request's offset is stored only after every event it produced was
//! acknowledged by the broker, and offsets are stored in the order they were received, so a
//! crash at any point loses no request. A request redelivered after its job finished is
//! skipped; one whose job was left in `process` (the worker died) runs as the next attempt.

mod guard;
mod job;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use tokio_util::sync::CancellationToken;

use crate::kafka::codec::Codec;
use crate::kafka::consumer::{self, RebalanceContext};
use crate::kafka::producer::Producer;
use crate::kafka::{KafkaError, KafkaSettings, Topics, next_offset};
use crate::recommend::Recommend;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub group: String,
    /// Requests processed at once. Offsets are still stored in order.
    pub concurrency: usize,
    /// How many movies to recommend per job.
    pub top_n: usize,
    /// How long shutdown waits for jobs in flight before giving up on them (they are
    /// redelivered to the next worker).
    pub drain_timeout: Duration,
    /// Requests with a larger value are dead-lettered as `too-large`.
    pub max_message_bytes: usize,
}

/// How many recent job ids a worker remembers to skip duplicate requests.
const RECENT_JOBS: usize = 100_000;
/// How long every slot may stay busy with nothing finishing before the worker holds its
/// partitions and polls again (well under any sane max.poll.interval.ms).
const HOLD_AFTER: Duration = Duration::from_secs(1);

/// Whether the worker should hold (pause) its partitions: only while every slot is busy,
/// and only once that has lasted [`HOLD_AFTER`] without progress (or it holds already).
fn should_hold(held: bool, saturated: bool, stalled_for: Duration) -> bool {
    saturated && (held || stalled_for >= HOLD_AFTER)
}

/// What a worker needs besides its configuration; cheap to clone.
#[derive(Clone)]
pub struct WorkerDeps {
    pub topics: Topics,
    pub codec: Codec,
    pub producer: Producer,
    pub recommender: Arc<dyn Recommend>,
    /// The projection, read (never written) to number retries of a job left in `process` by a
    /// worker that died, and to skip requests whose job already finished. Without it every
    /// run is attempt 1 and the sequence guard alone keeps redeliveries invisible.
    pub projection: Option<sqlx::PgPool>,
}

/// Runs until `cancel` fires, then finishes the jobs in flight (up to the drain timeout),
/// stores their offsets and commits.
pub async fn run(
    config: WorkerConfig,
    kafka: KafkaSettings,
    deps: WorkerDeps,
    cancel: CancellationToken,
) -> Result<(), KafkaError> {
    let context = RebalanceContext::default();
    let consumer = consumer::group_consumer(&kafka, &config.group, context.clone())?;
    consumer.subscribe(&[&deps.topics.requests])?;
    tracing::info!(group = %config.group, concurrency = config.concurrency, "worker started");
    let mut in_flight = FuturesOrdered::new();
    let mut offsets = OffsetStore::default();
    let job_context = Arc::new(job::JobContext {
        top_n: config.top_n,
        max_message_bytes: config.max_message_bytes,
        recent: guard::RecentJobs::new(RECENT_JOBS),
    });
    // With every slot busy the worker stops taking requests; librdkafka keeps prefetching.
    // If the slots stay busy (a slow job), it holds its partitions (pauses fetching) and
    // polls again: a member that stops polling for max.poll.interval.ms is thrown out of the
    // group, and its slow job would start over on another worker, again and again. Holding
    // only after a stall matters: a pause drops the prefetched requests, and pausing at every
    // full house cut a worker working off a backlog to ~35 jobs/s.
    let mut held = false;
    let mut last_progress = Instant::now();
    loop {
        // The assignment changes are only logged here (the callback applies `hold`).
        context.take_changes();
        let saturated = in_flight.len() >= config.concurrency;
        let hold = should_hold(held, saturated, last_progress.elapsed());
        if hold != held {
            match context.hold(&consumer, hold) {
                Ok(()) => held = hold,
                Err(e) => tracing::warn!(error = %e, "could not pause or resume the requests"),
            }
        }
        let stall_deadline = tokio::time::Instant::from_std(last_progress + HOLD_AFTER);
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            Some(finished) = in_flight.next(), if !in_flight.is_empty() => {
                last_progress = Instant::now();
                offsets.finished(&consumer, finished);
            }
            _ = tokio::time::sleep_until(stall_deadline), if saturated && !held => {}
            // While held this yields only what was fetched before the pause took effect;
            // it is taken on anyway (briefly above the concurrency) rather than dropped.
            received = consumer.recv(), if !saturated || held => {
                last_progress = Instant::now();
                match received {
                    Ok(message) => {
                        let message = message.detach();
                        let deps = deps.clone();
                        let cancel = cancel.clone();
                        let job_context = job_context.clone();
                        in_flight.push_back(async move {
                            let done = job::handle(&deps, &message, &job_context, &cancel).await;
                            (message.topic().to_owned(), message.partition(), message.offset(), done)
                        });
                    }
                    Err(e) => tracing::warn!(error = %e, "consumer error"),
                }
            }
        }
    }
    let drained = tokio::time::timeout(config.drain_timeout, async {
        while let Some(finished) = in_flight.next().await {
            offsets.finished(&consumer, finished);
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("jobs still running at shutdown; they will be redelivered");
    }
    if let Err(e) = consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync) {
        tracing::debug!(error = %e, "final offset commit skipped");
    }
    tracing::info!(counts = %crate::metrics::snapshot(), "worker stopped");
    Ok(())
}

type Finished = (String, i32, i64, bool);

/// Stores offsets of finished requests. Once a request of a partition could not be finished
/// (cancelled mid-job), no later offset of that partition is stored, so it is redelivered.
#[derive(Default)]
struct OffsetStore {
    blocked: std::collections::HashSet<(String, i32)>,
}

impl OffsetStore {
    fn finished(
        &mut self,
        consumer: &consumer::RecqConsumer,
        (topic, partition, offset, done): Finished,
    ) {
        let key = (topic, partition);
        if !done {
            self.blocked.insert(key);
            return;
        }
        if self.blocked.contains(&key) {
            return;
        }
        if let Err(e) = consumer::store(consumer, &key.0, partition, next_offset(offset)) {
            tracing::debug!(topic = %key.0, partition, offset, error = %e, "offset not stored (partition revoked); the request will be redelivered");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_holds_its_partitions_only_after_its_slots_stay_busy() {
        let quick = Duration::from_millis(5);
        // A free slot: never hold, and a held worker resumes.
        assert!(!should_hold(false, false, HOLD_AFTER * 10));
        assert!(!should_hold(true, false, quick));
        // Busy but progressing (a backlog): keep prefetching.
        assert!(!should_hold(false, true, quick));
        // Busy with nothing finishing for HOLD_AFTER (a slow job): hold, and stay held.
        assert!(should_hold(false, true, HOLD_AFTER));
        assert!(should_hold(true, true, quick));
    }
}

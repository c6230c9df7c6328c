//! One request, start to finish: decode, emit `queue` and `process`, compute the top-N list,
//! emit it and `done` (or `failed`). Requests that fail a check or do not decode go to the
//! dead-letter topic; a duplicate of a job this worker ran recently is skipped.

use chrono::{DateTime, Utc};
use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use tokio_util::sync::CancellationToken;

use super::WorkerDeps;
use super::guard::{self, Claim, RecentJobs, Rejection};
use crate::domain::events::now;
use crate::domain::{
    JobRun, JobStatusChanged, RecommendationRequested, RecommendationsReady, RecommendedMovie,
};
use crate::kafka::KafkaError;
use crate::kafka::codec::{CodecError, Poison};
use crate::kafka::dlq;
use crate::kafka::producer::Outgoing;
use crate::metrics::{self, Stream};
use crate::retry::{Backoff, until_ok};

/// Why a step did not finish.
enum Interrupted {
    Cancelled,
}

/// Per-request settings and the worker's memory of recent jobs.
pub struct JobContext {
    pub top_n: usize,
    pub max_message_bytes: usize,
    pub recent: RecentJobs,
}

/// Handles one request. Returns true once its outcome is durable in Kafka (events
/// acknowledged, or the record dead-lettered, or recognised as a duplicate of a job this
/// worker ran); false only if cancelled first.
#[tracing::instrument(skip_all, fields(topic = message.topic(), partition = message.partition(), offset = message.offset(), job_id))]
pub async fn handle(
    deps: &WorkerDeps,
    message: &OwnedMessage,
    context: &JobContext,
    cancel: &CancellationToken,
) -> bool {
    let result = async {
        if let Err(rejection) = guard::check_envelope(message, context.max_message_bytes) {
            return dead_letter(deps, message, rejection, cancel).await;
        }
        let request = match decode(deps, message, cancel).await? {
            Ok(request) => request,
            Err(rejection) => return dead_letter(deps, message, rejection, cancel).await,
        };
        if let Err(rejection) = guard::check_key(message, &request) {
            return dead_letter(deps, message, rejection, cancel).await;
        }
        tracing::Span::current().record("job_id", tracing::field::display(request.job_id));
        match context.recent.claim(request.job_id, request.user_id) {
            Claim::Run => {}
            Claim::Duplicate => {
                tracing::info!(user_id = %request.user_id, "skipping a duplicate request: this worker already ran the job");
                return Ok(());
            }
            Claim::Conflict(owner) => {
                let detail = format!(
                    "job id {} was already used for user {owner}; this request names user {}",
                    request.job_id, request.user_id
                );
                return dead_letter(deps, message, (Poison::DuplicateJobId, detail), cancel)
                    .await;
            }
        }
        let outcome = run(deps, &request, context.top_n, cancel).await;
        if outcome.is_err() {
            context.recent.release(request.job_id);
        }
        outcome
    }
    .await;
    result.is_ok()
}

/// Publishes `message` to the requests dead-letter topic (retrying while Kafka is down) and
/// counts it once acknowledged.
async fn dead_letter(
    deps: &WorkerDeps,
    message: &OwnedMessage,
    (kind, detail): Rejection,
    cancel: &CancellationToken,
) -> Result<(), Interrupted> {
    let reason = kind.code();
    tracing::warn!(reason, error = %detail, "dead-lettering a request");
    let dlq_topic = &deps.topics.requests_dlq;
    retry(deps.producer.backoff(), cancel, || {
        dlq::dead_letter(&deps.producer, dlq_topic, message, reason, &detail)
    })
    .await?;
    metrics::dead_lettered(Stream::Requests, reason);
    Ok(())
}

async fn decode(
    deps: &WorkerDeps,
    message: &OwnedMessage,
    cancel: &CancellationToken,
) -> Result<Result<RecommendationRequested, Rejection>, Interrupted> {
    let mut backoff = deps.codec.backoff();
    loop {
        match deps.codec.decode_request(message.payload()).await {
            Ok(request) => {
                backoff.recovered();
                return Ok(Ok(request));
            }
            Err(CodecError::Poison { kind, detail }) => return Ok(Err((kind, detail))),
            Err(CodecError::Transient(e)) => {
                if !backoff.wait(&e, cancel).await {
                    return Err(Interrupted::Cancelled);
                }
            }
        }
    }
}

/// What the projection says about a job before this run.
enum Previous {
    Unknown,
    Started { attempt: i32 },
    Finished(crate::domain::JobStatus),
}

/// Reads the job's row. The projection may lag behind the log: a row not yet updated only
/// means this run's events repeat sequences already in the log, which the projector ignores.
async fn previous_state(deps: &WorkerDeps, request: &RecommendationRequested) -> Previous {
    let Some(pool) = &deps.projection else {
        return Previous::Unknown;
    };
    match crate::db::jobs::job(pool, request.job_id).await {
        Ok(Some(row)) if row.status.is_terminal() => Previous::Finished(row.status),
        Ok(Some(row)) if row.status == crate::domain::JobStatus::Process => Previous::Started {
            attempt: row.attempt,
        },
        Ok(_) => Previous::Unknown,
        Err(e) => {
            tracing::debug!(error = %e, "projection unavailable; running as attempt 1");
            Previous::Unknown
        }
    }
}

async fn run(
    deps: &WorkerDeps,
    request: &RecommendationRequested,
    top_n: usize,
    cancel: &CancellationToken,
) -> Result<(), Interrupted> {
    let attempt = match previous_state(deps, request).await {
        Previous::Finished(status) => {
            tracing::info!(%status, "skipping a request whose job already finished");
            return Ok(());
        }
        Previous::Started { attempt } => {
            tracing::info!(
                attempt = attempt + 1,
                "retrying a job left in process by a worker that stopped"
            );
            attempt + 1
        }
        Previous::Unknown => 1,
    };
    let run = JobRun {
        attempt,
        ..JobRun::first_attempt(request)
    };
    let started_at = now();
    let queued = run.queued(started_at);
    let started = run.started(started_at);
    // `queue` and `process` are handed to the producer before the model runs, and the list
    // and `done` right after it, without waiting in between for acknowledgements: the one
    // idempotent producer keeps a partition's records in the order they were handed over.
    // The request's offset is still stored only once every record was acknowledged.
    let first = [&queued, &started];
    let first_acks = enqueue_statuses(deps, &first, cancel).await?;
    let recommender = deps.recommender.clone();
    let user = request.user_id;
    let computed = tokio::task::spawn_blocking(move || recommender.recommend(user, top_n)).await;
    let finished_at = now();
    let outcome = match computed {
        Ok(Ok(movies)) => {
            let ready = RecommendationsReady {
                job_id: run.job_id,
                user_id: run.user_id,
                generated_at: finished_at,
                items: movies
                    .into_iter()
                    .zip(1..)
                    .map(|(m, rank)| RecommendedMovie {
                        rank,
                        movie_id: m.movie_id,
                        title: m.title,
                        score: m.score,
                    })
                    .collect(),
            };
            // The list and `done` go to different topics; neither waits for the other's ack.
            let list_ack = enqueue_recommendations(deps, &ready, cancel).await?;
            emit_statuses(deps, &[&run.done(started_at, finished_at)], cancel).await?;
            if let Some(ack) = list_ack
                && let Err(e) = acknowledged(ack, cancel).await?
            {
                tracing::debug!(error = %e, "recommendations not delivered; sending them again");
                emit_recommendations(deps, &ready, cancel).await?;
            }
            Ok(())
        }
        Ok(Err(e)) => fail(deps, &run, started_at, finished_at, e.to_string(), cancel).await,
        Err(e) => {
            fail(
                deps,
                &run,
                started_at,
                finished_at,
                format!("recommender crashed: {e}"),
                cancel,
            )
            .await
        }
    };
    outcome?;
    settle(first_acks, cancel).await
}

async fn fail(
    deps: &WorkerDeps,
    run: &JobRun,
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    error: String,
    cancel: &CancellationToken,
) -> Result<(), Interrupted> {
    tracing::info!(%error, "job failed");
    emit_statuses(deps, &[&run.failed(started_at, finished_at, error)], cancel).await
}

/// Encodes `events` and hands them to the producer in order, returning their
/// acknowledgements to wait for later. If the producer cannot take them now (its queue is
/// full, it is being replaced), they are sent the slow way, waiting for the acks.
async fn enqueue_statuses(
    deps: &WorkerDeps,
    events: &[&JobStatusChanged],
    cancel: &CancellationToken,
) -> Result<Vec<Ack>, Interrupted> {
    let topic = &deps.topics.jobs;
    let mut acks: Vec<Ack> = Vec::with_capacity(events.len());
    for event in events {
        let value = encode(deps.codec.backoff(), cancel, || {
            deps.codec.encode_status(topic, event)
        })
        .await?;
        let key = event.job_id.to_string();
        let handed = deps.producer.enqueue(Outgoing {
            topic,
            key: key.as_bytes(),
            value: Some(&value),
            headers: Vec::new(),
        });
        match handed {
            Ok(ack) => acks.push(Box::pin(ack)),
            Err(e) => {
                tracing::debug!(error = %e, "producer busy; sending the status events one by one");
                drop(acks);
                emit_statuses(deps, events, cancel).await?;
                return Ok(Vec::new());
            }
        }
    }
    Ok(acks)
}

type Ack = std::pin::Pin<Box<dyn Future<Output = Result<(i32, i64), KafkaError>> + Send>>;

/// Waits for the acknowledgements of `queue` and `process`. One that failed is not sent
/// again: `done` (or `failed`), acknowledged by now, carries the job's whole state, and a
/// late copy of a superseded event would be the job's newest record in a compacted log.
async fn settle(acks: Vec<Ack>, cancel: &CancellationToken) -> Result<(), Interrupted> {
    for ack in acks {
        if let Err(e) = acknowledged(ack, cancel).await? {
            tracing::warn!(error = %e, "an intermediate status event was not delivered; the final one was");
        }
    }
    Ok(())
}

/// Produces status events in order (same key, same partition) and waits for all acks.
async fn emit_statuses(
    deps: &WorkerDeps,
    events: &[&JobStatusChanged],
    cancel: &CancellationToken,
) -> Result<(), Interrupted> {
    let topic = &deps.topics.jobs;
    let mut encoded = Vec::with_capacity(events.len());
    for event in events {
        encoded.push((
            event.job_id.to_string(),
            encode(deps.codec.backoff(), cancel, || {
                deps.codec.encode_status(topic, event)
            })
            .await?,
        ));
    }
    retry(deps.producer.backoff(), cancel, || async {
        let sends = encoded.iter().map(|(key, value)| {
            deps.producer.send(Outgoing {
                topic,
                key: key.as_bytes(),
                value: Some(value),
                headers: Vec::new(),
            })
        });
        futures::future::try_join_all(sends).await.map(|_| ())
    })
    .await
}

/// Encodes the list and hands it to the producer; `None` if it had to be sent the slow way
/// (waiting for the ack) because the producer could not take it at once.
async fn enqueue_recommendations(
    deps: &WorkerDeps,
    ready: &RecommendationsReady,
    cancel: &CancellationToken,
) -> Result<Option<Ack>, Interrupted> {
    let topic = &deps.topics.recommendations;
    let value = encode(deps.codec.backoff(), cancel, || {
        deps.codec.encode_recommendations(topic, ready)
    })
    .await?;
    let key = ready.job_id.to_string();
    let handed = deps.producer.enqueue(Outgoing {
        topic,
        key: key.as_bytes(),
        value: Some(&value),
        headers: Vec::new(),
    });
    match handed {
        Ok(ack) => Ok(Some(Box::pin(ack))),
        Err(_) => emit_recommendations(deps, ready, cancel)
            .await
            .map(|()| None),
    }
}

/// Waits for one acknowledgement, unless cancelled first.
async fn acknowledged(
    ack: Ack,
    cancel: &CancellationToken,
) -> Result<Result<(i32, i64), KafkaError>, Interrupted> {
    tokio::select! {
        _ = cancel.cancelled() => Err(Interrupted::Cancelled),
        result = ack => Ok(result),
    }
}

async fn emit_recommendations(
    deps: &WorkerDeps,
    ready: &RecommendationsReady,
    cancel: &CancellationToken,
) -> Result<(), Interrupted> {
    let topic = &deps.topics.recommendations;
    let value = encode(deps.codec.backoff(), cancel, || {
        deps.codec.encode_recommendations(topic, ready)
    })
    .await?;
    let key = ready.job_id.to_string();
    retry(deps.producer.backoff(), cancel, || async {
        deps.producer
            .send(Outgoing {
                topic,
                key: key.as_bytes(),
                value: Some(&value),
                headers: Vec::new(),
            })
            .await
            .map(|_| ())
    })
    .await
}

async fn encode<F, Fut>(
    backoff: Backoff,
    cancel: &CancellationToken,
    encode: F,
) -> Result<Vec<u8>, Interrupted>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Vec<u8>, CodecError>>,
{
    until_ok(backoff, cancel, encode)
        .await
        .map_err(|_| Interrupted::Cancelled)
}

async fn retry<F, Fut>(
    backoff: Backoff,
    cancel: &CancellationToken,
    send: F,
) -> Result<(), Interrupted>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), KafkaError>>,
{
    until_ok(backoff, cancel, send)
        .await
        .map_err(|_| Interrupted::Cancelled)
}

//! One request, start to finish: decode, emit `queue` and `process`, compute the top-N list,
//! emit it and `done` (or `failed`). Undecodable requests go to the dead-letter topic.

use chrono::{DateTime, Utc};
use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use tokio_util::sync::CancellationToken;

use super::WorkerDeps;
use crate::domain::events::now;
use crate::domain::{
    JobRun, JobStatusChanged, RecommendationRequested, RecommendationsReady, RecommendedMovie,
};
use crate::kafka::KafkaError;
use crate::kafka::codec::CodecError;
use crate::kafka::dlq;
use crate::kafka::producer::Outgoing;
use crate::retry::Backoff;

/// Why a step did not finish.
enum Interrupted {
    Cancelled,
}

/// Handles one request. Returns true once its outcome is durable in Kafka (events
/// acknowledged, or the record dead-lettered); false only if cancelled first.
#[tracing::instrument(skip_all, fields(topic = message.topic(), partition = message.partition(), offset = message.offset(), job_id))]
pub async fn handle(
    deps: &WorkerDeps,
    message: &OwnedMessage,
    top_n: usize,
    cancel: &CancellationToken,
) -> bool {
    let result = async {
        let request = match decode(deps, message, cancel).await? {
            Ok(request) => request,
            Err((reason, detail)) => {
                tracing::warn!(reason, error = %detail, "dead-lettering a request");
                let dlq_topic = &deps.topics.requests_dlq;
                return retry(cancel, || {
                    dlq::dead_letter(&deps.producer, dlq_topic, message, reason, &detail)
                })
                .await;
            }
        };
        tracing::Span::current().record("job_id", tracing::field::display(request.job_id));
        run(deps, &request, top_n, cancel).await
    }
    .await;
    result.is_ok()
}

async fn decode(
    deps: &WorkerDeps,
    message: &OwnedMessage,
    cancel: &CancellationToken,
) -> Result<Result<RecommendationRequested, (&'static str, String)>, Interrupted> {
    let mut backoff = Backoff::new("schema registry");
    loop {
        match deps.codec.decode_request(message.payload()).await {
            Ok(request) => return Ok(Ok(request)),
            Err(CodecError::Poison { kind, detail }) => return Ok(Err((kind.code(), detail))),
            Err(CodecError::Transient(e)) => {
                if !backoff.wait(&e, cancel).await {
                    return Err(Interrupted::Cancelled);
                }
            }
        }
    }
}

async fn run(
    deps: &WorkerDeps,
    request: &RecommendationRequested,
    top_n: usize,
    cancel: &CancellationToken,
) -> Result<(), Interrupted> {
    let run = JobRun::first_attempt(request);
    let started_at = now();
    let queued = run.queued(started_at);
    let started = run.started(started_at);
    emit_statuses(deps, &[&queued, &started], cancel).await?;

    let recommender = deps.recommender.clone();
    let user = request.user_id;
    let computed = tokio::task::spawn_blocking(move || recommender.recommend(user, top_n)).await;
    let finished_at = now();
    match computed {
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
            emit_recommendations(deps, &ready, cancel).await?;
            emit_statuses(deps, &[&run.done(started_at, finished_at)], cancel).await
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
    }
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
            encode(cancel, || deps.codec.encode_status(topic, event)).await?,
        ));
    }
    retry(cancel, || async {
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

async fn emit_recommendations(
    deps: &WorkerDeps,
    ready: &RecommendationsReady,
    cancel: &CancellationToken,
) -> Result<(), Interrupted> {
    let topic = &deps.topics.recommendations;
    let value = encode(cancel, || deps.codec.encode_recommendations(topic, ready)).await?;
    let key = ready.job_id.to_string();
    retry(cancel, || async {
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

async fn encode<F, Fut>(cancel: &CancellationToken, mut encode: F) -> Result<Vec<u8>, Interrupted>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Vec<u8>, CodecError>>,
{
    let mut backoff = Backoff::new("schema registry");
    loop {
        match encode().await {
            Ok(bytes) => return Ok(bytes),
            Err(e) => {
                if !backoff.wait(&e.to_string(), cancel).await {
                    return Err(Interrupted::Cancelled);
                }
            }
        }
    }
}

async fn retry<F, Fut>(cancel: &CancellationToken, mut send: F) -> Result<(), Interrupted>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), KafkaError>>,
{
    let mut backoff = Backoff::new("Kafka");
    loop {
        match send().await {
            Ok(()) => return Ok(()),
            Err(e) => {
                if !backoff.wait(&e.to_string(), cancel).await {
                    return Err(Interrupted::Cancelled);
                }
            }
        }
    }
}

//! Figure 6 (and the worker's part of 8): requests offered at a fixed rate (open loop) through
//! `recq worker` and `recq projector` child processes with the real recommender; latency is
//! from producing a request to the bench first seeing its row `done`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

use super::apply::fresh_db;
use super::broker::fresh_topics;
use super::events::USERS;
use super::{BenchError, Ctx, percentile, random_suffix};
use crate::db;
use crate::domain::events::now;
use crate::domain::{JobId, RecommendationRequested, UserId};
use crate::harness::role::Role;
use crate::kafka::Topics;
use crate::kafka::producer::Outgoing;

/// How often the bench looks for finished rows: the latency's resolution.
pub const POLL: Duration = Duration::from_millis(20);
/// Requests sent (and awaited) before the clock starts, so that group joins are over.
const WARM_UP: usize = 20;

pub struct E2eRun {
    pub offered: usize,
    pub done: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub jobs_per_s: f64,
    /// p50 of the rows' `finished_at − started_at` (the worker's time per job), ms.
    pub processing_p50_ms: f64,
    /// Worker CPU time during the load divided by jobs, ms.
    pub worker_cpu_ms_per_job: f64,
    pub worker_peak_mb: f64,
    pub projector_peak_mb: f64,
    /// Where the time of the median job went.
    pub median_stages: Stages,
    /// Where the time of the slowest 1% of jobs went (mean of each stage over them).
    pub tail_stages: Stages,
}

/// One job's latency split at the timestamps its row carries. The three add up to the
/// latency; wall clocks of the bench and the roles are the same machine's.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stages {
    /// Request produced → worker starts the job (`started_at`): producer, broker, the worker's
    /// fetch and its queue.
    pub to_worker_ms: f64,
    /// `started_at` → `finished_at`: the worker's own time.
    pub in_worker_ms: f64,
    /// `finished_at` → the bench sees the row `done`: `done` produced, the projector's fetch,
    /// batch and commit, and the bench's poll interval.
    pub to_table_ms: f64,
}

impl Stages {
    fn of(seen: &Seen) -> Self {
        let ms = |d: chrono::TimeDelta| d.num_microseconds().unwrap_or(i64::MAX) as f64 / 1e3;
        Self {
            to_worker_ms: ms(seen.started_at - seen.sent_at),
            in_worker_ms: ms(seen.finished_at - seen.started_at),
            to_table_ms: ms(seen.seen_at - seen.finished_at),
        }
    }

    /// The median of each stage on its own.
    fn medians(all: &[Stages]) -> Self {
        let of = |f: fn(&Stages) -> f64| percentile(&all.iter().map(f).collect::<Vec<_>>(), 0.5);
        Self {
            to_worker_ms: of(|s| s.to_worker_ms),
            in_worker_ms: of(|s| s.in_worker_ms),
            to_table_ms: of(|s| s.to_table_ms),
        }
    }

    /// The mean of each stage over the jobs whose latency is at or above the 99th percentile.
    fn tail(seen: &[Seen], p99_ms: f64) -> Self {
        let slow: Vec<Stages> = seen
            .iter()
            .filter(|s| s.latency_ms >= p99_ms)
            .map(Stages::of)
            .collect();
        let n = slow.len().max(1) as f64;
        let mean = |f: fn(&Stages) -> f64| slow.iter().map(f).sum::<f64>() / n;
        Self {
            to_worker_ms: mean(|s| s.to_worker_ms),
            in_worker_ms: mean(|s| s.in_worker_ms),
            to_table_ms: mean(|s| s.to_table_ms),
        }
    }
}

pub async fn run(ctx: &Ctx) -> Result<E2eRun, BenchError> {
    let (prefix, topics) = fresh_topics(ctx).await?;
    let pool = fresh_db(&ctx.args.pg_server, "e2e", 4).await?;
    let suffix = random_suffix();
    let mut env = ctx.role_env(&prefix, "e2e");
    env.push(("RECQ_WORKER_GROUP", format!("bench-worker-{suffix}")));
    env.push(("RECQ_PROJECTOR_GROUP", format!("bench-projector-{suffix}")));
    let mut worker = Role::spawn(&ctx.recq, "worker-6", &["worker"], &env)?;
    let mut projector = Role::spawn(&ctx.recq, "projector-6", &["projector"], &env)?;
    let result = measure(ctx, &topics, &pool, &mut worker, &mut projector).await;
    let worker_peak_mb = worker.peak_rss_mb().unwrap_or(f64::NAN);
    let projector_peak_mb = projector.peak_rss_mb().unwrap_or(f64::NAN);
    worker.stop().await;
    projector.stop().await;
    let mut run = result?;
    run.worker_peak_mb = worker_peak_mb;
    run.projector_peak_mb = projector_peak_mb;
    pool.close().await;
    Ok(run)
}

async fn measure(
    ctx: &Ctx,
    topics: &Topics,
    pool: &PgPool,
    worker: &mut Role,
    projector: &mut Role,
) -> Result<E2eRun, BenchError> {
    // Warm-up: both roles have joined their groups once these are done.
    let (tx, rx) = mpsc::unbounded_channel();
    for i in 0..WARM_UP {
        send(ctx, topics, i, &tx);
    }
    drop(tx);
    poll_done(pool, rx, Duration::from_secs(120), worker, projector).await?;

    let offered = (u64::from(ctx.args.rate) * ctx.args.duration_secs) as usize;
    let cpu_before = worker.cpu_seconds();
    let (tx, rx) = mpsc::unbounded_channel();
    let generator = async {
        let mut ticks =
            tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(ctx.args.rate)));
        ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
        for i in 0..offered {
            ticks.tick().await;
            send(ctx, topics, WARM_UP + i, &tx);
        }
        drop(tx);
    };
    let timeout = Duration::from_secs(ctx.args.duration_secs + 120);
    let ((), seen) = tokio::join!(generator, poll_done(pool, rx, timeout, worker, projector));
    let seen = seen?;
    let cpu_after = worker.cpu_seconds();

    let latencies: Vec<f64> = seen.iter().map(|s| s.latency_ms).collect();
    let first_sent = seen.iter().map(|s| s.sent).min();
    let last_seen = seen.iter().map(|s| s.seen).max();
    let jobs_per_s = match (first_sent, last_seen) {
        (Some(a), Some(b)) => seen.len() as f64 / (b - a).as_secs_f64().max(1e-3),
        _ => 0.0,
    };
    let jobs: Vec<JobId> = seen.iter().map(|s| s.job).collect();
    let processing_p50_ms = db::jobs::processing_percentiles_ms(pool, &jobs)
        .await?
        .map_or(f64::NAN, |(p50, _)| p50);
    let worker_cpu_ms_per_job = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) => (b - a) * 1e3 / seen.len().max(1) as f64,
        _ => f64::NAN,
    };
    let p99_ms = percentile(&latencies, 0.99);
    let stages: Vec<Stages> = seen.iter().map(Stages::of).collect();
    Ok(E2eRun {
        offered,
        done: seen.len(),
        p50_ms: percentile(&latencies, 0.5),
        p95_ms: percentile(&latencies, 0.95),
        p99_ms,
        jobs_per_s,
        processing_p50_ms,
        worker_cpu_ms_per_job,
        worker_peak_mb: f64::NAN,
        projector_peak_mb: f64::NAN,
        median_stages: Stages::medians(&stages),
        tail_stages: Stages::tail(&seen, p99_ms),
    })
}

/// When a request was produced, by the bench's monotonic clock and by the wall clock the
/// roles' timestamps use.
type Sent = (JobId, Instant, DateTime<Utc>);

/// Produces request number `i` in a task of its own (the generator never waits for the
/// broker) and tells the poller the job id and the instant it was produced.
fn send(ctx: &Ctx, topics: &Topics, i: usize, sent: &mpsc::UnboundedSender<Sent>) {
    let Ok(user_id) = UserId::new(i as i64 % i64::from(USERS) + 1) else {
        return;
    };
    let request = RecommendationRequested {
        job_id: JobId::new_random(),
        user_id,
        requested_at: now(),
    };
    let _ = sent.send((request.job_id, Instant::now(), now()));
    let (codec, producer, topic) = (
        ctx.codec.clone(),
        ctx.producer.clone(),
        topics.requests.clone(),
    );
    tokio::spawn(async move {
        let sent = async {
            let value = codec.encode_request(&topic, &request).await?;
            let key = request.user_id.to_string();
            producer
                .send(Outgoing {
                    topic: &topic,
                    key: key.as_bytes(),
                    value: Some(&value),
                    headers: Vec::new(),
                })
                .await?;
            Ok::<_, BenchError>(())
        };
        if let Err(e) = sent.await {
            tracing::warn!(error = %e, "a bench request was not produced");
        }
    });
}

struct Seen {
    job: JobId,
    sent: Instant,
    seen: Instant,
    latency_ms: f64,
    sent_at: DateTime<Utc>,
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    seen_at: DateTime<Utc>,
}

/// Polls the table until every job announced on `announced` is `done` (the channel closing
/// means no more jobs will come), or `timeout` passes.
async fn poll_done(
    pool: &PgPool,
    mut announced: mpsc::UnboundedReceiver<Sent>,
    timeout: Duration,
    worker: &mut Role,
    projector: &mut Role,
) -> Result<Vec<Seen>, BenchError> {
    let deadline = Instant::now() + timeout;
    let mut pending: HashMap<uuid::Uuid, (Instant, DateTime<Utc>)> = HashMap::new();
    let mut seen = Vec::new();
    let mut open = true;
    let mut ticks = tokio::time::interval(POLL);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        worker.check_running()?;
        projector.check_running()?;
        loop {
            match announced.try_recv() {
                Ok((job, at, wall)) => {
                    pending.insert(job.as_uuid(), (at, wall));
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if !pending.is_empty() {
            let ids: Vec<uuid::Uuid> = pending.keys().copied().collect();
            let done = sqlx::query(
                "SELECT job_id, started_at, finished_at FROM recommendation_queues \
                 WHERE status = 'done' AND job_id = ANY($1)",
            )
            .bind(&ids)
            .fetch_all(pool)
            .await?;
            let (at, wall) = (Instant::now(), now());
            for row in done {
                let id: uuid::Uuid = row.try_get("job_id")?;
                let started_at: Option<DateTime<Utc>> = row.try_get("started_at")?;
                let finished_at: Option<DateTime<Utc>> = row.try_get("finished_at")?;
                if let Some((sent, sent_at)) = pending.remove(&id) {
                    seen.push(Seen {
                        job: JobId::from_uuid(id),
                        sent,
                        seen: at,
                        latency_ms: (at - sent).as_secs_f64() * 1e3,
                        sent_at,
                        started_at: started_at.unwrap_or(sent_at),
                        finished_at: finished_at.unwrap_or(wall),
                        seen_at: wall,
                    });
                }
            }
        }
        if !open && pending.is_empty() {
            return Ok(seen);
        }
        if Instant::now() > deadline {
            return Err(BenchError::Failed(format!(
                "{} jobs were not done within {timeout:?} ({} were)",
                pending.len(),
                seen.len()
            )));
        }
    }
}

//! Figures 4 and 5 through the broker: the stream produced to the jobs topic, then consumed by
//! a `recq projector` child process (4) and replayed by the rebuild (5).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio_util::sync::CancellationToken;

use super::apply::fresh_db;
use super::events::StreamEvent;
use super::{BenchError, Ctx, random_suffix};
use crate::db;
use crate::harness::role::Role;
use crate::kafka::producer::Outgoing;
use crate::kafka::{KafkaError, Topics, admin};
use crate::rebuild::{RebuildOptions, rebuild};

/// Sends in flight at once while producing.
const PRODUCE_WINDOW: usize = 4096;
/// How often the bench reads the projector's stored positions.
const POLL: Duration = Duration::from_millis(20);
/// The rebuild's wait for a quiet log once it reached the end; excluded from its time.
const REBUILD_IDLE: Duration = Duration::from_millis(500);

/// A record ready to produce: key (job id) and Avro value.
pub struct Encoded {
    pub key: String,
    pub value: Vec<u8>,
}

/// Encodes the stream once (the schema id is global, so the bytes fit every bench topic).
pub async fn encode_all(
    ctx: &Ctx,
    topic: &str,
    events: &[StreamEvent],
) -> Result<Vec<Encoded>, BenchError> {
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        out.push(Encoded {
            key: e.event.job_id.to_string(),
            value: ctx.codec.encode_status(topic, &e.event).await?,
        });
    }
    Ok(out)
}

/// Fresh random topics, created and with schemas registered.
pub async fn fresh_topics(ctx: &Ctx) -> Result<(String, Topics), BenchError> {
    let prefix = format!("bench-{}.", random_suffix());
    let topics = Topics::with_prefix(&prefix);
    admin::ensure_topics(&ctx.kafka, &topics, ctx.args.partitions).await?;
    ctx.codec.register_all(&topics).await?;
    Ok((prefix, topics))
}

pub struct BrokerRun {
    pub topics: Topics,
    /// Records acknowledged per second while producing the stream.
    pub produce_rate: f64,
    /// Events per second from the projector's first stored batch to the last.
    pub consume_rate: f64,
    /// Events per second from starting the projector process (start-up and group join
    /// included) to the last stored batch.
    pub consume_wall_rate: f64,
    pub projector_peak_mb: f64,
}

/// Figure 4 (and the projector's part of 8).
pub async fn through_broker(ctx: &Ctx, encoded: &[Encoded]) -> Result<BrokerRun, BenchError> {
    let (prefix, topics) = fresh_topics(ctx).await?;
    let pool = fresh_db(&ctx.args.pg_server, "broker", 2).await?;

    let started = Instant::now();
    let ends = produce(ctx, &topics.jobs, encoded).await?;
    let produce_rate = encoded.len() as f64 / started.elapsed().as_secs_f64();

    let mut env = ctx.role_env(&prefix, "broker");
    env.push((
        "RECQ_PROJECTOR_GROUP",
        format!("bench-projector-{}", random_suffix()),
    ));
    env.push(("RECQ_PROJECTOR_BATCH_SIZE", ctx.args.batch_size.to_string()));
    let spawned = Instant::now();
    let mut projector = Role::spawn(&ctx.recq, "projector-4", &["projector"], &env)?;
    let deadline = spawned + Duration::from_secs(900);
    let mut first: Option<(Instant, i64)> = None;
    let total = encoded.len() as i64;
    loop {
        projector.check_running()?;
        let mut conn = pool.acquire().await?;
        let stored = db::offsets::read(&mut conn, &[topics.jobs.as_str()]).await?;
        drop(conn);
        let now = Instant::now();
        let applied: i64 = stored.values().sum();
        if first.is_none() && applied > 0 {
            first = Some((now, applied));
        }
        let caught_up = ends
            .iter()
            .all(|(p, end)| stored.get(&(topics.jobs.clone(), *p)).copied().unwrap_or(0) >= *end);
        if caught_up {
            let (t0, applied0) = first.unwrap_or((spawned, 0));
            let consume_rate = (total - applied0) as f64 / (now - t0).as_secs_f64().max(1e-3);
            let consume_wall_rate = total as f64 / (now - spawned).as_secs_f64();
            let projector_peak_mb = projector.peak_rss_mb().unwrap_or(f64::NAN);
            projector.stop().await;
            return Ok(BrokerRun {
                topics,
                produce_rate,
                consume_rate,
                consume_wall_rate,
                projector_peak_mb,
            });
        }
        if now > deadline {
            projector.stop().await;
            return Err(BenchError::Failed(format!(
                "the projector stored {applied} of {total} positions within 15 minutes"
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Produces `encoded` to `topic` with a window of sends in flight; returns, per partition,
/// the offset after the last record.
async fn produce(
    ctx: &Ctx,
    topic: &str,
    encoded: &[Encoded],
) -> Result<BTreeMap<i32, i64>, BenchError> {
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    let mut record = |acked: Result<(i32, i64), KafkaError>| -> Result<(), BenchError> {
        let (partition, offset) = acked?;
        let end = ends.entry(partition).or_insert(0);
        *end = (*end).max(offset + 1);
        Ok(())
    };
    let mut in_flight = FuturesUnordered::new();
    for e in encoded {
        if in_flight.len() >= PRODUCE_WINDOW
            && let Some(acked) = in_flight.next().await
        {
            record(acked)?;
        }
        in_flight.push(ctx.producer.send(Outgoing {
            topic,
            key: e.key.as_bytes(),
            value: Some(&e.value),
            headers: Vec::new(),
        }));
    }
    while let Some(acked) = in_flight.next().await {
        record(acked)?;
    }
    Ok(ends)
}

/// Figure 5 through the broker: `recq rebuild`'s library entry point over `topics` into an
/// empty database. Returns events/s (its final wait for a quiet log excluded).
pub async fn rebuild_through_broker(
    ctx: &Ctx,
    topics: &Topics,
    events: usize,
) -> Result<f64, BenchError> {
    let pool = fresh_db(&ctx.args.pg_server, "rebuild", 4).await?;
    let options = RebuildOptions {
        restart: true,
        batch_size: ctx.args.rebuild_batch_size,
        idle: REBUILD_IDLE,
        progress: false,
    };
    let started = Instant::now();
    let report = rebuild(
        &ctx.kafka,
        topics,
        &ctx.codec,
        &pool,
        &options,
        &CancellationToken::new(),
    )
    .await
    .map_err(|e| BenchError::Failed(format!("rebuild failed: {e}")))?;
    let elapsed = started.elapsed().saturating_sub(REBUILD_IDLE);
    if report.events as usize != events {
        return Err(BenchError::Failed(format!(
            "the rebuild read {} events, {events} were produced",
            report.events
        )));
    }
    pool.close().await;
    Ok(events as f64 / elapsed.as_secs_f64().max(1e-3))
}

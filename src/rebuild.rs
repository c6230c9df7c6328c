//! `recq rebuild`: replays the jobs and recommendations topics from the beginning into shadow
//! tables with the very fold and apply path the live projector uses, then swaps them in within
//! one transaction. Progress is stored with the shadow rows, so an interrupted rebuild resumes
//! where it stopped. The live projector keeps serving until the swap, and after it continues
//! from the rebuilt positions (the swap happens only once the rebuild is at or past it).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rdkafka::consumer::Consumer;
use rdkafka::{Message, Offset, TopicPartitionList};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::db::rebuild::Swap;
use crate::db::{self, DbError};
use crate::kafka::codec::Codec;
use crate::kafka::consumer::{self, Partition};
use crate::kafka::position::{Position, Verdict, is_recent};
use crate::kafka::{KafkaError, KafkaSettings, Topics, admin, next_offset};
use crate::projector::{Batch, ProjectorError, Target, decode_with_retry};
use crate::retry::Backoff;

/// Events per shadow-table transaction unless told otherwise (`recq rebuild --batch-size`).
/// Larger than the projector's: a rebuild has no latency to keep.
pub const DEFAULT_BATCH_SIZE: u32 = 20_000;

#[derive(Debug, Clone)]
pub struct RebuildOptions {
    /// Discard an interrupted rebuild's progress instead of resuming it.
    pub restart: bool,
    pub batch_size: usize,
    /// How long the log may stay silent, once every partition reached its goal, before the
    /// rebuild considers itself caught up.
    pub idle: Duration,
    /// Draw a progress bar on a terminal (log lines otherwise).
    pub progress: bool,
}

#[derive(Debug)]
pub struct RebuildReport {
    pub resumed: bool,
    pub events: u64,
    pub rows: u64,
    pub elapsed: Duration,
    pub positions: BTreeMap<Partition, i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Projector(#[from] ProjectorError),
    #[error("rebuild interrupted after {events} events; run `recq rebuild` again to resume")]
    Interrupted { events: u64 },
    #[error(
        "{topic}[{partition}] yielded nothing for {idle:?} at offset {at}, before its goal {goal}; is the broker reachable?"
    )]
    Stalled {
        topic: String,
        partition: i32,
        at: i64,
        goal: i64,
        idle: Duration,
    },
}

/// Runs a rebuild to completion (or until cancelled, keeping its progress).
pub async fn rebuild(
    kafka: &KafkaSettings,
    topics: &Topics,
    codec: &Codec,
    pool: &PgPool,
    options: &RebuildOptions,
    cancel: &CancellationToken,
) -> Result<RebuildReport, RebuildError> {
    let started = Instant::now();
    let names = [
        topics.jobs.as_str(),
        topics.recommendations.as_str(),
        topics.erasures.as_str(),
    ];
    let resumed = db::rebuild::prepare(pool, options.restart).await?;
    let mut positions = db::rebuild::shadow_positions(pool, &names).await?;
    let reader = consumer::reader(kafka)?;
    let mut assignment = TopicPartitionList::new();
    for topic in names {
        for partition in admin::partitions(kafka, topic).await? {
            let at = *positions.entry((topic.to_owned(), partition)).or_insert(0);
            assignment
                .add_partition_offset(topic, partition, Offset::Offset(at))
                .map_err(KafkaError::Client)?;
        }
    }
    reader.assign(&assignment).map_err(KafkaError::Client)?;

    let mut goals = goals(&reader, kafka, &positions, pool, &names).await?;
    let remaining: i64 = goals.iter().map(|(p, g)| (g - positions[p]).max(0)).sum();
    let bar = progress_bar(
        options.progress,
        u64::try_from(remaining).unwrap_or_default(),
    );
    if resumed {
        tracing::info!(?positions, "resuming an interrupted rebuild");
    }
    let mut events = 0u64;
    let mut last_log = Instant::now();
    let mut batch = Batch::default();
    // Jumps past a position are sought back before they count as gaps (`kafka::position`);
    // the seeks not yet confirmed by a record, per partition.
    let mut unconfirmed: BTreeMap<Partition, u8> = BTreeMap::new();
    loop {
        // Consume until every partition reached its goal and the log has gone quiet.
        loop {
            let all_reached = goals
                .iter()
                .all(|(p, g)| positions.get(p).copied().unwrap_or(0) >= *g);
            let wait = if all_reached {
                options.idle
            } else {
                options.idle.max(Duration::from_secs(30))
            };
            let received = tokio::select! {
                _ = cancel.cancelled() => {
                    flush(pool, &mut batch, cancel).await?;
                    bar.abandon();
                    return Err(RebuildError::Interrupted { events });
                }
                received = tokio::time::timeout(wait, reader.recv()) => received,
            };
            let message = match received {
                Ok(Ok(message)) => message.detach(),
                Ok(Err(e)) => return Err(KafkaError::Client(e).into()),
                Err(_) if all_reached => break,
                Err(_) => {
                    let ((topic, partition), goal) = goals
                        .iter()
                        .find(|(p, g)| positions.get(*p).copied().unwrap_or(0) < **g)
                        .map(|(p, g)| (p.clone(), *g))
                        .unwrap_or_default();
                    let at = positions
                        .get(&(topic.clone(), partition))
                        .copied()
                        .unwrap_or(0);
                    return Err(RebuildError::Stalled {
                        topic,
                        partition,
                        at,
                        goal,
                        idle: wait,
                    });
                }
            };
            let partition: Partition = (message.topic().to_owned(), message.partition());
            let cursor = Position {
                next: positions.get(&partition).copied().unwrap_or(0),
                unconfirmed_seeks: unconfirmed.get(&partition).copied().unwrap_or(0),
            };
            match cursor.judge(message.offset(), is_recent(&message)) {
                Verdict::Skip => continue,
                Verdict::Seek => {
                    let at = (partition.0.as_str(), partition.1);
                    // `None`: cancelled while waiting; the loop's next turn returns.
                    if let Some(sought) = cursor
                        .seek_back(&reader, at, message.offset(), cancel)
                        .await?
                    {
                        unconfirmed.insert(partition, sought.unconfirmed_seeks);
                    }
                    continue;
                }
                Verdict::Accept => {
                    unconfirmed.remove(&partition);
                }
            }
            positions.insert(partition.clone(), next_offset(message.offset()));
            match decode_with_retry(codec, topics, &message, cancel).await? {
                Ok(event) => batch.push(partition, message.offset(), event),
                // Dead-lettered by the live projector already; a no-op in the fold.
                Err(_) => batch.skip(partition, message.offset()),
            }
            events += 1;
            bar.inc(1);
            if bar.is_hidden() && last_log.elapsed() >= Duration::from_secs(10) {
                last_log = Instant::now();
                let rate = events as f64 / started.elapsed().as_secs_f64().max(0.001);
                tracing::info!(
                    events,
                    total = bar.length().unwrap_or(0),
                    rate = rate as u64,
                    "rebuild progress"
                );
            }
            if batch.len() >= options.batch_size {
                flush(pool, &mut batch, cancel).await?;
            }
        }
        flush(pool, &mut batch, cancel).await?;
        match db::rebuild::swap(pool, &names).await? {
            Swap::Done { rows } => {
                bar.finish_and_clear();
                return Ok(RebuildReport {
                    resumed,
                    events,
                    rows,
                    elapsed: started.elapsed(),
                    positions,
                });
            }
            Swap::Behind(live) => {
                tracing::info!(
                    ?live,
                    "the live projector moved on; catching up before the swap"
                );
                for (partition, next) in live {
                    let goal = goals.entry(partition).or_insert(0);
                    *goal = (*goal).max(next);
                }
            }
        }
    }
}

/// Per partition, how far the rebuild must read before it may try to swap: the live
/// projector's position, and the end of the log as far as the broker knows. Watermarks only
/// size the progress bar and the first goal; the swap itself checks live positions under a lock.
async fn goals(
    reader: &rdkafka::consumer::StreamConsumer,
    kafka: &KafkaSettings,
    positions: &BTreeMap<Partition, i64>,
    pool: &PgPool,
    topics: &[&str],
) -> Result<BTreeMap<Partition, i64>, RebuildError> {
    let mut conn = pool.acquire().await.map_err(DbError::from)?;
    let live = db::offsets::read(&mut conn, topics).await?;
    let mut goals = BTreeMap::new();
    for partition in positions.keys() {
        let (_, high) = tokio::task::block_in_place(|| {
            reader.fetch_watermarks(&partition.0, partition.1, kafka.timeout)
        })
        .map_err(KafkaError::Client)?;
        let live = live.get(partition).copied().unwrap_or(0);
        goals.insert(partition.clone(), high.max(live));
    }
    Ok(goals)
}

async fn flush(
    pool: &PgPool,
    batch: &mut Batch,
    cancel: &CancellationToken,
) -> Result<(), RebuildError> {
    if batch.is_empty() {
        return Ok(());
    }
    let mut backoff = Backoff::new("Postgres");
    loop {
        match batch.apply(pool, Target::Shadow).await {
            Ok(_) => break,
            Err(e) if e.is_transient() && backoff.wait(&e.to_string(), cancel).await => {}
            Err(e) => return Err(e.into()),
        }
    }
    *batch = Batch::default();
    Ok(())
}

fn progress_bar(enabled: bool, total: u64) -> ProgressBar {
    if !enabled || !std::io::stderr().is_terminal() {
        return ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("rebuild {bar:40} {pos}/{len} events  {per_sec}  ETA {eta}")
    {
        bar.set_style(style);
    }
    bar
}

//! Figures 1–3, fed from memory into an empty database: recq's projector apply path, the
//! seed's one-statement-per-transaction way, and `COPY` of the final rows (the ceiling).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use sqlx::{PgPool, Row};

use super::events::{StreamEvent, USERS};
use super::{BenchError, CONNECT_TIMEOUT};
use crate::db;
use crate::domain::{JobEvent, JobRow, JobStatus, Projection};
use crate::projector::{Batch, Event, Target};

/// Recreates `recq_bench_<name>` on `pg_server`, migrates it, returns a pool of `connections`.
pub async fn fresh_db(pg_server: &str, name: &str, connections: u32) -> Result<PgPool, BenchError> {
    let url = db_url(pg_server, name);
    db::recreate_database(&url, CONNECT_TIMEOUT).await?;
    let pool = db::connect(&url, connections, CONNECT_TIMEOUT).await?;
    db::migrate(&pool).await?;
    Ok(pool)
}

pub fn db_url(pg_server: &str, name: &str) -> String {
    format!("{}/recq_bench_{name}", pg_server.trim_end_matches('/'))
}

/// Drops the bench databases `names` (best effort; they are recreated by the next run anyway).
pub async fn drop_dbs(pg_server: &str, names: &[&str]) {
    let Ok(admin) = db::connect(&format!("{pg_server}/postgres"), 1, CONNECT_TIMEOUT).await else {
        return;
    };
    for name in names {
        let sql = format!("DROP DATABASE IF EXISTS recq_bench_{name} WITH (FORCE)");
        if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&admin)
            .await
        {
            tracing::warn!(database = name, error = %e, "could not drop a bench database");
        }
    }
    admin.close().await;
}

fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// Figure 1: every event through `Batch::apply` (lock positions, coalesce, guarded UNNEST
/// upsert, store positions, commit), `batch_size` records per transaction, as the projector
/// does after decoding. Returns events/s; fails if the table is not the expected fold.
pub async fn projector_apply(
    pool: &PgPool,
    events: &[StreamEvent],
    batch_size: usize,
    topic: &str,
) -> Result<f64, BenchError> {
    let elapsed = apply_all(pool, events, batch_size, topic, Target::Live).await?;
    check_all_done(pool, &final_rows(events)).await?;
    Ok(rate(events.len(), elapsed))
}

/// Figure 5 from memory: the rebuild's path without the broker — fresh shadow tables, the
/// same `Batch::apply` into them, then the swap. Returns events/s.
pub async fn rebuild_from_memory(
    pool: &PgPool,
    events: &[StreamEvent],
    batch_size: usize,
    topics: &crate::kafka::Topics,
) -> Result<f64, BenchError> {
    let started = Instant::now();
    db::rebuild::prepare(pool, true).await?;
    apply_all(pool, events, batch_size, &topics.jobs, Target::Shadow).await?;
    let names = [topics.jobs.as_str(), topics.recommendations.as_str()];
    match db::rebuild::swap(pool, &names).await? {
        db::rebuild::Swap::Done { .. } => {}
        db::rebuild::Swap::Behind(_) => {
            return Err(BenchError::Failed(
                "the rebuild's swap found a live projector ahead".into(),
            ));
        }
    }
    let elapsed = started.elapsed();
    check_all_done(pool, &final_rows(events)).await?;
    Ok(rate(events.len(), elapsed))
}

async fn apply_all(
    pool: &PgPool,
    events: &[StreamEvent],
    batch_size: usize,
    topic: &str,
    target: Target,
) -> Result<Duration, BenchError> {
    let started = Instant::now();
    for chunk in events.chunks(batch_size.max(1)) {
        let mut batch = Batch::default();
        for e in chunk {
            batch.push(
                (topic.to_owned(), e.partition),
                e.offset,
                Event::Job(JobEvent::Status(e.event.clone())),
            );
        }
        batch.apply(pool, target).await?;
    }
    Ok(started.elapsed())
}

/// The rows the stream folds to (what every path must leave in the table).
pub fn final_rows(events: &[StreamEvent]) -> Vec<JobRow> {
    let mut projection = Projection::default();
    for e in events {
        projection.apply_job(&JobEvent::Status(e.event.clone()));
    }
    projection.jobs.into_values().collect()
}

async fn check_all_done(pool: &PgPool, expected: &[JobRow]) -> Result<(), BenchError> {
    let row = sqlx::query(
        "SELECT count(*) AS n, count(*) FILTER (WHERE status = 'done') AS done \
         FROM recommendation_queues",
    )
    .fetch_one(pool)
    .await?;
    let (n, done): (i64, i64) = (row.try_get("n")?, row.try_get("done")?);
    let want = expected
        .iter()
        .filter(|r| r.status == JobStatus::Done)
        .count() as i64;
    if n != expected.len() as i64 || done != want {
        return Err(BenchError::Failed(format!(
            "the projected table has {n} rows ({done} done); the fold has {} ({want} done)",
            expected.len()
        )));
    }
    Ok(())
}

/// The seed's users table already held every user; neither yardstick pays for creating them.
async fn insert_users(pool: &PgPool) -> Result<(), BenchError> {
    sqlx::query("INSERT INTO users (id) SELECT generate_series(1, $1) ON CONFLICT DO NOTHING")
        .bind(USERS)
        .execute(pool)
        .await?;
    Ok(())
}

/// Figure 2: the Node design's way — one INSERT or UPDATE per state change, each its own
/// (autocommit) transaction, one connection, no batching, no guard. Returns events/s.
pub async fn seed_way(pool: &PgPool, events: &[StreamEvent]) -> Result<f64, BenchError> {
    insert_users(pool).await?;
    let mut conn = pool.acquire().await?;
    let started = Instant::now();
    for StreamEvent { event: e, .. } in events {
        let query = match e.status {
            JobStatus::Queue => sqlx::query(
                "INSERT INTO recommendation_queues \
                     (job_id, user_id, status, created_at, updated_at, attempt, seq) \
                 VALUES ($1, $2, 'queue', $3, $4, $5, $6) ON CONFLICT (job_id) DO NOTHING",
            )
            .bind(e.job_id.as_uuid())
            .bind(e.user_id.get())
            .bind(e.queued_at)
            .bind(e.occurred_at)
            .bind(e.attempt)
            .bind(e.seq),
            JobStatus::Process => sqlx::query(
                "UPDATE recommendation_queues SET status = 'process', started_at = $2, \
                     updated_at = $3, seq = $4 WHERE job_id = $1",
            )
            .bind(e.job_id.as_uuid())
            .bind(e.started_at)
            .bind(e.occurred_at)
            .bind(e.seq),
            JobStatus::Done | JobStatus::Failed => sqlx::query(
                "UPDATE recommendation_queues SET status = $2::job_status, \
                     processing_time = $3, finished_at = $4, updated_at = $5, last_error = $6, \
                     seq = $7 WHERE job_id = $1",
            )
            .bind(e.job_id.as_uuid())
            .bind(e.status.as_str())
            .bind(e.processing_time)
            .bind(e.finished_at)
            .bind(e.occurred_at)
            .bind(e.error.clone())
            .bind(e.seq),
        };
        query.execute(&mut *conn).await?;
    }
    Ok(rate(events.len(), started.elapsed()))
}

/// Figure 3: `COPY` of the final rows into the (identical, empty) table. The CSV is built
/// before the clock starts. Returns rows/s.
pub async fn copy_ceiling(pool: &PgPool, rows: &[JobRow]) -> Result<f64, BenchError> {
    insert_users(pool).await?;
    let csv = to_csv(rows);
    let mut conn = pool.acquire().await?;
    let started = Instant::now();
    let mut copy = conn
        .copy_in_raw(
            "COPY recommendation_queues (job_id, user_id, status, processing_time, created_at, \
             updated_at, started_at, finished_at, attempt, last_error, seq) \
             FROM STDIN (FORMAT csv)",
        )
        .await?;
    for chunk in csv.as_bytes().chunks(1 << 20) {
        copy.send(chunk).await?;
    }
    let copied = copy.finish().await?;
    let elapsed = started.elapsed();
    if copied != rows.len() as u64 {
        return Err(BenchError::Failed(format!(
            "COPY wrote {copied} rows, expected {}",
            rows.len()
        )));
    }
    Ok(rate(rows.len(), elapsed))
}

fn to_csv(rows: &[JobRow]) -> String {
    let ts =
        |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_default();
    let mut out = String::with_capacity(rows.len() * 160);
    for r in rows {
        // recq's own events never carry an error with quotes or commas; quote anyway.
        let error = r
            .last_error
            .as_ref()
            .map(|e| format!("\"{}\"", e.replace('"', "\"\"")))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{}",
            r.job_id,
            r.user_id,
            r.status.as_str(),
            r.processing_time,
            r.created_at.to_rfc3339(),
            r.updated_at.to_rfc3339(),
            ts(r.started_at),
            ts(r.finished_at),
            r.attempt,
            error,
            r.seq
        );
    }
    out
}

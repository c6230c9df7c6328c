//! The projection tables: `recommendation_queues`, `recommendations`, `users`. Writes take a
//! transaction so that rows and stored positions commit together; every upsert carries the
//! sequence guard (a row never moves backwards).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};

use super::DbError;
use crate::domain::fold::Pending;
use crate::domain::{
    JobId, JobRow, JobStatus, MovieId, RecommendationsReady, RecommendedMovie, UserErased, UserId,
};

/// The columns `job_row` reads; a macro so that queries stay static strings.
macro_rules! job_columns {
    () => {
        "job_id, user_id, status::text AS status, processing_time, created_at, updated_at, \
         started_at, finished_at, attempt, last_error, seq"
    };
}

/// Makes sure every user referenced by the batch exists (the foreign-key target).
async fn ensure_users(
    conn: &mut PgConnection,
    users: impl Iterator<Item = UserId>,
) -> Result<(), DbError> {
    let mut ids: Vec<i32> = users.map(|u| u.get()).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query("INSERT INTO users (id) SELECT * FROM UNNEST($1::int4[]) ON CONFLICT DO NOTHING")
        .bind(ids)
        .execute(conn)
        .await?;
    Ok(())
}

/// Which of `users` are erased.
async fn erased_among(
    conn: &mut PgConnection,
    users: impl Iterator<Item = UserId>,
) -> Result<std::collections::BTreeSet<UserId>, DbError> {
    let ids: Vec<i32> = users.map(|u| u.get()).collect();
    if ids.is_empty() {
        return Ok(Default::default());
    }
    let erased: Vec<i32> =
        sqlx::query_scalar("SELECT user_id FROM erased_users WHERE user_id = ANY($1)")
            .bind(ids)
            .fetch_all(conn)
            .await?;
    Ok(erased
        .into_iter()
        .filter_map(|id| UserId::new(id.into()).ok())
        .collect())
}

/// The first half of applying coalesced changes: runs `delete` (a statement on one table with
/// the job ids as `$1`) for the jobs whose changes start with a tombstone, then splits the new
/// values into those to write and the number dropped because their user was erased.
async fn reset_then_keep<'a, T>(
    conn: &mut PgConnection,
    delete: &'static str,
    pending: &'a BTreeMap<JobId, Pending<T>>,
    user_of: impl Fn(&T) -> UserId,
) -> Result<(Vec<&'a T>, usize), DbError> {
    let reset: Vec<uuid::Uuid> = pending
        .iter()
        .filter(|(_, p)| p.reset)
        .map(|(job, _)| job.as_uuid())
        .collect();
    if !reset.is_empty() {
        sqlx::query(delete).bind(reset).execute(&mut *conn).await?;
    }
    let values: Vec<&T> = pending.values().filter_map(|p| p.value.as_ref()).collect();
    let erased = erased_among(&mut *conn, values.iter().map(|v| user_of(v))).await?;
    let (kept, dropped): (Vec<&T>, Vec<&T>) = values
        .into_iter()
        .partition(|v| !erased.contains(&user_of(v)));
    Ok((kept, dropped.len()))
}

/// Records erasures and removes the users' rows. On the live tables the user row goes too
/// (its foreign keys cascade); a rebuild's shadow tables only lose their own rows.
pub async fn apply_erasures(
    conn: &mut PgConnection,
    erasures: &[UserErased],
    delete_user_rows: bool,
) -> Result<(), DbError> {
    if erasures.is_empty() {
        return Ok(());
    }
    let ids: Vec<i32> = erasures.iter().map(|e| e.user_id.get()).collect();
    let times: Vec<DateTime<Utc>> = erasures.iter().map(|e| e.erased_at).collect();
    sqlx::query(
        "INSERT INTO erased_users (user_id, erased_at) \
         SELECT * FROM UNNEST($1::int4[], $2::timestamptz[]) ON CONFLICT DO NOTHING",
    )
    .bind(&ids)
    .bind(&times)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM recommendation_queues WHERE user_id = ANY($1)")
        .bind(&ids)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM recommendations WHERE user_id = ANY($1)")
        .bind(&ids)
        .execute(&mut *conn)
        .await?;
    if delete_user_rows {
        sqlx::query("DELETE FROM users WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// What applying job changes did besides writing rows.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JobsApplied {
    /// Changes dropped because their user was erased.
    pub erased: usize,
    /// Changes that lost to a newer stored row (stale events; a duplicate rewrites the same state).
    pub stale: u64,
}

/// Applies coalesced job changes: deletes where a tombstone was seen, then one guarded upsert.
/// Equivalent to `Pending::apply_to` for every job.
pub async fn apply_jobs(
    conn: &mut PgConnection,
    pending: &BTreeMap<JobId, Pending<JobRow>>,
) -> Result<JobsApplied, DbError> {
    let (rows, dropped) = reset_then_keep(
        conn,
        "DELETE FROM recommendation_queues WHERE job_id = ANY($1)",
        pending,
        |r| r.user_id,
    )
    .await?;
    if rows.is_empty() {
        return Ok(JobsApplied {
            erased: dropped,
            stale: 0,
        });
    }
    ensure_users(&mut *conn, rows.iter().map(|r| r.user_id)).await?;
    let written = sqlx::query(
        "INSERT INTO recommendation_queues (job_id, user_id, status, processing_time, created_at, \
             updated_at, started_at, finished_at, attempt, last_error, seq) \
         SELECT job_id, user_id, status::job_status, processing_time, created_at, updated_at, \
             started_at, finished_at, attempt, last_error, seq \
         FROM UNNEST($1::uuid[], $2::int4[], $3::text[], $4::int4[], $5::timestamptz[], \
             $6::timestamptz[], $7::timestamptz[], $8::timestamptz[], $9::int4[], $10::text[], \
             $11::int8[]) \
             AS t(job_id, user_id, status, processing_time, created_at, updated_at, started_at, \
                  finished_at, attempt, last_error, seq) \
         ON CONFLICT (job_id) DO UPDATE SET \
             user_id = EXCLUDED.user_id, status = EXCLUDED.status, \
             processing_time = EXCLUDED.processing_time, created_at = EXCLUDED.created_at, \
             updated_at = EXCLUDED.updated_at, started_at = EXCLUDED.started_at, \
             finished_at = EXCLUDED.finished_at, attempt = EXCLUDED.attempt, \
             last_error = EXCLUDED.last_error, seq = EXCLUDED.seq \
         WHERE recommendation_queues.seq <= EXCLUDED.seq",
    )
    .bind(rows.iter().map(|r| r.job_id.as_uuid()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.user_id.get()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.status.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.processing_time).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.created_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.updated_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.started_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.finished_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.attempt).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|r| r.last_error.clone())
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|r| r.seq).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(JobsApplied {
        erased: dropped,
        stale: (rows.len() as u64).saturating_sub(written),
    })
}

/// Applies coalesced recommendation lists: delete where a tombstone was seen, then insert;
/// a job that already has a list keeps it (the first list wins).
pub async fn apply_recommendations(
    conn: &mut PgConnection,
    pending: &BTreeMap<JobId, Pending<RecommendationsReady>>,
) -> Result<usize, DbError> {
    let (lists, dropped) = reset_then_keep(
        conn,
        "DELETE FROM recommendations WHERE job_id = ANY($1)",
        pending,
        |l| l.user_id,
    )
    .await?;
    if lists.is_empty() {
        return Ok(dropped);
    }
    ensure_users(&mut *conn, lists.iter().map(|l| l.user_id)).await?;
    let items = || {
        lists
            .iter()
            .flat_map(|l| l.items.iter().map(move |item| (*l, item)))
    };
    // A job that already has rows keeps them; ranks of one list are inserted together.
    sqlx::query(
        "INSERT INTO recommendations (job_id, rank, user_id, movie_id, title, score) \
         SELECT t.* FROM UNNEST($1::uuid[], $2::int2[], $3::int4[], $4::int4[], $5::text[], \
             $6::float8[]) AS t(job_id, rank, user_id, movie_id, title, score) \
         WHERE NOT EXISTS (SELECT 1 FROM recommendations r WHERE r.job_id = t.job_id) \
         ON CONFLICT (job_id, rank) DO NOTHING",
    )
    .bind(items().map(|(l, _)| l.job_id.as_uuid()).collect::<Vec<_>>())
    .bind(items().map(|(_, i)| i.rank).collect::<Vec<_>>())
    .bind(items().map(|(l, _)| l.user_id.get()).collect::<Vec<_>>())
    .bind(items().map(|(_, i)| i.movie_id.get()).collect::<Vec<_>>())
    .bind(items().map(|(_, i)| i.title.clone()).collect::<Vec<_>>())
    .bind(items().map(|(_, i)| i.score).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    Ok(dropped)
}

fn job_row(row: &PgRow) -> Result<JobRow, DbError> {
    let status: String = row.try_get("status")?;
    let invalid = |what: String| DbError::Query(sqlx::Error::Decode(what.into()));
    Ok(JobRow {
        job_id: JobId::from_uuid(row.try_get("job_id")?),
        user_id: UserId::new(row.try_get::<i32, _>("user_id")?.into())
            .map_err(|e| invalid(e.to_string()))?,
        status: status
            .parse()
            .map_err(|e: crate::domain::status::UnknownStatus| invalid(e.to_string()))?,
        processing_time: row.try_get("processing_time")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        attempt: row.try_get("attempt")?,
        last_error: row.try_get("last_error")?,
        seq: row.try_get("seq")?,
    })
}

pub async fn job(pool: &PgPool, job: JobId) -> Result<Option<JobRow>, DbError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        job_columns!(),
        " FROM recommendation_queues WHERE job_id = $1"
    ))
    .bind(job.as_uuid())
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(job_row).transpose()
}

pub async fn jobs_of_user(pool: &PgPool, user: UserId) -> Result<Vec<JobRow>, DbError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        job_columns!(),
        " FROM recommendation_queues WHERE user_id = $1 ORDER BY created_at"
    ))
    .bind(user.get())
    .fetch_all(pool)
    .await?;
    rows.iter().map(job_row).collect()
}

/// Every job row, ordered by job id (used by `recq verify` inside its snapshot).
pub async fn all_jobs(conn: &mut PgConnection) -> Result<Vec<JobRow>, DbError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        job_columns!(),
        " FROM recommendation_queues ORDER BY job_id"
    ))
    .fetch_all(conn)
    .await?;
    rows.iter().map(job_row).collect()
}

/// A job's top-N list, best first.
pub async fn recommendations(pool: &PgPool, job: JobId) -> Result<Vec<RecommendedMovie>, DbError> {
    let rows = sqlx::query(
        "SELECT rank, movie_id, title, score FROM recommendations WHERE job_id = $1 ORDER BY rank",
    )
    .bind(job.as_uuid())
    .fetch_all(pool)
    .await?;
    rows.iter().map(recommended_movie).collect()
}

fn recommended_movie(row: &PgRow) -> Result<RecommendedMovie, DbError> {
    Ok(RecommendedMovie {
        rank: row.try_get("rank")?,
        movie_id: MovieId::new(row.try_get::<i32, _>("movie_id")?.into())
            .map_err(|e| DbError::Query(sqlx::Error::Decode(e.to_string().into())))?,
        title: row.try_get("title")?,
        score: row.try_get("score")?,
    })
}

/// Every stored list as (job, user, items), ordered by job id (for `recq verify`).
pub async fn all_recommendations(
    conn: &mut PgConnection,
) -> Result<BTreeMap<JobId, (UserId, Vec<RecommendedMovie>)>, DbError> {
    let rows = sqlx::query(
        "SELECT job_id, user_id, rank, movie_id, title, score FROM recommendations \
         ORDER BY job_id, rank",
    )
    .fetch_all(conn)
    .await?;
    let mut out: BTreeMap<JobId, (UserId, Vec<RecommendedMovie>)> = BTreeMap::new();
    for row in &rows {
        let job = JobId::from_uuid(row.try_get("job_id")?);
        let user = UserId::new(row.try_get::<i32, _>("user_id")?.into())
            .map_err(|e| DbError::Query(sqlx::Error::Decode(e.to_string().into())))?;
        out.entry(job)
            .or_insert_with(|| (user, Vec::new()))
            .1
            .push(recommended_movie(row)?);
    }
    Ok(out)
}

/// Counts per status among `jobs`.
pub async fn status_counts_of(
    pool: &PgPool,
    jobs: &[JobId],
) -> Result<BTreeMap<JobStatus, i64>, DbError> {
    let rows = sqlx::query(
        "SELECT status::text AS status, count(*) AS n FROM recommendation_queues \
         WHERE job_id = ANY($1) GROUP BY status",
    )
    .bind(jobs.iter().map(JobId::as_uuid).collect::<Vec<_>>())
    .fetch_all(pool)
    .await?;
    let mut out = BTreeMap::new();
    for row in rows {
        let status: String = row.try_get("status")?;
        if let Ok(status) = status.parse() {
            out.insert(status, row.try_get("n")?);
        }
    }
    Ok(out)
}

/// (p50, p95) of `finished_at - started_at` in milliseconds over finished jobs among `jobs`.
pub async fn processing_percentiles_ms(
    pool: &PgPool,
    jobs: &[JobId],
) -> Result<Option<(f64, f64)>, DbError> {
    let row = sqlx::query(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50, \
                percentile_cont(0.95) WITHIN GROUP (ORDER BY ms) AS p95 \
         FROM (SELECT extract(epoch FROM finished_at - started_at) * 1000 AS ms \
               FROM recommendation_queues \
               WHERE job_id = ANY($1) AND finished_at IS NOT NULL AND started_at IS NOT NULL) t",
    )
    .bind(jobs.iter().map(JobId::as_uuid).collect::<Vec<_>>())
    .fetch_one(pool)
    .await?;
    let p50: Option<f64> = row.try_get("p50")?;
    let p95: Option<f64> = row.try_get("p95")?;
    Ok(p50.zip(p95))
}

/// Jobs in `process` whose attempt started before `before`.
pub async fn stalled(pool: &PgPool, before: DateTime<Utc>) -> Result<Vec<JobRow>, DbError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        job_columns!(),
        " FROM recommendation_queues \
         WHERE status = 'process' AND started_at < $1 ORDER BY started_at"
    ))
    .bind(before)
    .fetch_all(pool)
    .await?;
    rows.iter().map(job_row).collect()
}

/// Finished (done or failed) jobs whose last change happened before `before`.
pub async fn finished_before(pool: &PgPool, before: DateTime<Utc>) -> Result<Vec<JobId>, DbError> {
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT job_id FROM recommendation_queues \
         WHERE status IN ('done', 'failed') AND updated_at < $1 ORDER BY job_id",
    )
    .bind(before)
    .fetch_all(pool)
    .await?;
    Ok(ids.into_iter().map(JobId::from_uuid).collect())
}

//! Operator tools: submit requests, show job status.

use sqlx::PgPool;

use super::AppError;
use crate::db;
use crate::domain::events::now;
use crate::domain::{JobId, JobRow, RecommendationRequested, UserId};
use crate::kafka::Topics;
use crate::kafka::codec::Codec;
use crate::kafka::producer::{Outgoing, Producer};

/// Produces one request per user (key = user id) and returns the job ids, in order.
pub async fn submit(
    codec: &Codec,
    producer: &Producer,
    topics: &Topics,
    users: &[UserId],
) -> Result<Vec<JobId>, AppError> {
    let requests: Vec<RecommendationRequested> = users
        .iter()
        .map(|user| RecommendationRequested {
            job_id: JobId::new_random(),
            user_id: *user,
            requested_at: now(),
        })
        .collect();
    send_requests(codec, producer, topics, &requests).await?;
    Ok(requests.iter().map(|r| r.job_id).collect())
}

/// Produces `requests` (keyed by user) and waits until the broker acknowledged all of them.
/// Sending the same requests again after a failure is safe: a job id runs once.
pub async fn send_requests(
    codec: &Codec,
    producer: &Producer,
    topics: &Topics,
    requests: &[RecommendationRequested],
) -> Result<(), AppError> {
    let mut encoded = Vec::with_capacity(requests.len());
    for request in requests {
        let value = codec
            .encode_request(&topics.requests, request)
            .await
            .map_err(|e| AppError::Failed(format!("cannot encode a request: {e}")))?;
        encoded.push((request.user_id.to_string(), value));
    }
    let sends = encoded.iter().map(|(key, value)| {
        producer.send(Outgoing {
            topic: &topics.requests,
            key: key.as_bytes(),
            value: Some(value),
            headers: Vec::new(),
        })
    });
    futures::future::try_join_all(sends).await?;
    Ok(())
}

/// Parses user ids given on the command line.
pub fn parse_users(users: &[i64]) -> Result<Vec<UserId>, AppError> {
    users
        .iter()
        .map(|u| UserId::new(*u).map_err(|e| AppError::Invalid(format!("--user: {e}"))))
        .collect()
}

/// Prints a job with its recommendations; an error if it does not exist (yet).
pub async fn print_job(pool: &PgPool, job: &str) -> Result<(), AppError> {
    let job: JobId = job
        .parse()
        .map_err(|e: crate::domain::IdError| AppError::Invalid(e.to_string()))?;
    let Some(row) = db::jobs::job(pool, job).await? else {
        return Err(AppError::Failed(format!(
            "job {job} is not in the table (yet): the projector may not have applied it"
        )));
    };
    println!("{}", describe(&row));
    for movie in db::jobs::recommendations(pool, job).await? {
        println!(
            "  {:>2}. {} (movie {}, score {:.3})",
            movie.rank, movie.title, movie.movie_id, movie.score
        );
    }
    Ok(())
}

/// Prints every job of a user, oldest first.
pub async fn print_user(pool: &PgPool, user: i64) -> Result<(), AppError> {
    let user = UserId::new(user).map_err(|e| AppError::Invalid(format!("--user: {e}")))?;
    let rows = db::jobs::jobs_of_user(pool, user).await?;
    if rows.is_empty() {
        println!("user {user} has no jobs");
    }
    for row in rows {
        println!("{}", describe(&row));
    }
    Ok(())
}

/// Prints jobs in `process` whose attempt started more than `after` ago.
pub async fn print_stalled(pool: &PgPool, after: std::time::Duration) -> Result<(), AppError> {
    let after = chrono::Duration::from_std(after)
        .map_err(|_| AppError::Invalid("--stalled-after-secs is too large".into()))?;
    let rows = db::jobs::stalled(pool, now() - after).await?;
    println!(
        "{} jobs in process for more than {}s",
        rows.len(),
        after.num_seconds()
    );
    for row in rows {
        println!("{}", describe(&row));
    }
    Ok(())
}

/// One line per job: id, user, status, attempt, times.
pub fn describe(row: &JobRow) -> String {
    let mut line = format!(
        "{} user={} status={} attempt={} processing_time={}s created_at={}",
        row.job_id,
        row.user_id,
        row.status,
        row.attempt,
        row.processing_time,
        row.created_at.to_rfc3339()
    );
    if let Some(t) = row.started_at {
        line.push_str(&format!(" started_at={}", t.to_rfc3339()));
    }
    if let Some(t) = row.finished_at {
        line.push_str(&format!(" finished_at={}", t.to_rfc3339()));
    }
    if let Some(e) = &row.last_error {
        line.push_str(&format!(" error={e:?}"));
    }
    line
}

/// Publishes tombstones (jobs and recommendations topics) for every finished job whose last
/// change is older than `older_than`; the projector removes them, and a rebuild cannot bring
/// them back. Returns how many jobs were pruned.
pub async fn prune(
    pool: &PgPool,
    producer: &Producer,
    topics: &Topics,
    older_than: chrono::Duration,
) -> Result<usize, AppError> {
    let cutoff = now() - older_than;
    let jobs = db::jobs::finished_before(pool, cutoff).await?;
    let keys: Vec<String> = jobs.iter().map(JobId::to_string).collect();
    tombstone(producer, topics, &keys).await?;
    Ok(jobs.len())
}

/// Erases a user through the log: publishes `UserErased` (the projector removes the user's
/// rows and drops their later events), then tombstones for each of their jobs so compaction
/// removes the jobs' events from the log too. Returns how many jobs were tombstoned.
pub async fn erase_user(
    pool: &PgPool,
    codec: &Codec,
    producer: &Producer,
    topics: &Topics,
    user: UserId,
) -> Result<usize, AppError> {
    let erasure = crate::domain::UserErased {
        user_id: user,
        erased_at: now(),
    };
    let value = codec
        .encode_erasure(&topics.erasures, &erasure)
        .await
        .map_err(|e| AppError::Failed(format!("cannot encode the erasure: {e}")))?;
    let key = user.to_string();
    producer
        .send(Outgoing {
            topic: &topics.erasures,
            key: key.as_bytes(),
            value: Some(&value),
            headers: Vec::new(),
        })
        .await?;
    let jobs: Vec<String> = db::jobs::jobs_of_user(pool, user)
        .await?
        .iter()
        .map(|row| row.job_id.to_string())
        .collect();
    tombstone(producer, topics, &jobs).await?;
    Ok(jobs.len())
}

/// Publishes tombstones for `jobs` on the jobs and recommendations topics.
async fn tombstone(producer: &Producer, topics: &Topics, jobs: &[String]) -> Result<(), AppError> {
    let sends = jobs.iter().flat_map(|key| {
        [&topics.jobs, &topics.recommendations].map(|topic| {
            producer.send(Outgoing {
                topic,
                key: key.as_bytes(),
                value: None,
                headers: Vec::new(),
            })
        })
    });
    futures::future::try_join_all(sends).await?;
    Ok(())
}

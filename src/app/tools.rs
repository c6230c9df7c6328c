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
    let mut encoded = Vec::with_capacity(requests.len());
    for request in &requests {
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
    Ok(requests.iter().map(|r| r.job_id).collect())
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

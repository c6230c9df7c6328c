//! Poison on the jobs topic: the projector dead-letters it to the jobs dead-letter topic,
//! counts it, and projects the next event of the partition.

use std::time::Duration;

use recq::db;
use recq::domain::events::now;
use recq::domain::{JobId, JobRow, JobRun, JobStatus, UserId};
use recq::kafka::codec::STATUS_SCHEMA;
use recq::metrics::{self, Stream};

use super::*;
use crate::common::env::TestEnv;

fn run(user: i64) -> JobRun {
    JobRun {
        job_id: JobId::new_random(),
        user_id: UserId::new(user).unwrap(),
        attempt: 1,
        queued_at: now(),
    }
}

/// Emits a good event for a new job and waits until its row is there.
async fn next_good_event_is_projected(env: &TestEnv) -> JobRow {
    let job = run(3);
    env.emit(&job.queued(now())).await;
    eventually(
        "the next event to be projected",
        Duration::from_secs(60),
        || async { db::jobs::job(&env.db.pool, job.job_id).await.unwrap() },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_event_that_is_not_avro_is_dead_lettered_and_counted() {
    let env = TestEnv::new(1).await;
    let before = metrics::dead_letters(Stream::Jobs);
    let projector = env.start_projector();
    let key = JobId::new_random().to_string();
    let offset = produce(
        &env,
        &env.topics.jobs,
        Some(key.as_bytes()),
        Some(b"garbage"),
    )
    .await;
    next_good_event_is_projected(&env).await;
    let letter = dead_letter_of(&env, &env.topics.jobs_dlq, &env.topics.jobs, offset).await;
    assert_eq!(letter.reason, "not-confluent-framed");
    assert_eq!(letter.value.as_deref(), Some(&b"garbage"[..]));
    assert!(metrics::dead_letters(Stream::Jobs) > before);
    projector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_status_value_is_dead_lettered() {
    let env = TestEnv::new(1).await;
    // A newer producer's schema with a status recq does not know. Adding an enum symbol is
    // backward compatible, so the jobs subject accepts it; fall back to a subject of its own
    // if a stricter registry refuses.
    let schema = STATUS_SCHEMA.replace(r#""done", "failed"]"#, r#""done", "failed", "paused"]"#);
    assert_ne!(schema, STATUS_SCHEMA);
    let id = match register(&env, &format!("{}-value", env.topics.jobs), &schema).await {
        Ok(id) => id,
        Err(_) => register(&env, &format!("{}-next-value", env.topics.jobs), &schema)
            .await
            .unwrap(),
    };
    let job = run(7);
    let done = job.done(now(), now());
    let encoded = env
        .codec
        .encode_status(&env.topics.jobs, &done)
        .await
        .unwrap();
    let mut body = encoded[5..].to_vec();
    // event_id and job_id are 36-character strings (1 length byte each), user 7 is 1 byte;
    // then the status enum index, zigzag-encoded: done (2) is 4, "paused" (4) is 8.
    assert_eq!(body[75], 4);
    body[75] = 8;
    let value = framed(id.to_be_bytes(), &body);

    let projector = env.start_projector();
    let key = job.job_id.to_string();
    let offset = produce(&env, &env.topics.jobs, Some(key.as_bytes()), Some(&value)).await;
    next_good_event_is_projected(&env).await;
    let letter = dead_letter_of(&env, &env.topics.jobs_dlq, &env.topics.jobs, offset).await;
    assert_eq!(letter.reason, "invalid-field");
    assert!(letter.error.contains("paused"), "{}", letter.error);
    assert!(
        db::jobs::job(&env.db.pool, job.job_id)
            .await
            .unwrap()
            .is_none()
    );
    projector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_for_a_job_never_seen_creates_the_row_from_the_events_state() {
    let env = TestEnv::new(1).await;
    let projector = env.start_projector();
    let job = run(9);
    let started_at = now();
    let done = job.done(started_at, now());
    env.emit(&done).await;
    next_good_event_is_projected(&env).await;
    let row = db::jobs::job(&env.db.pool, job.job_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, JobStatus::Done);
    assert_eq!(row.user_id, job.user_id);
    assert_eq!(row.created_at, job.queued_at);
    assert_eq!(row.started_at, Some(started_at));
    assert_eq!(row.finished_at, done.finished_at);
    assert_eq!(row.seq, done.seq);
    // A late `queue` of the same job is older (lower seq) and changes nothing.
    env.emit(&job.queued(now())).await;
    next_good_event_is_projected(&env).await;
    let again = db::jobs::job(&env.db.pool, job.job_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again, row);
    projector.stop().await;
    assert!(env.verify().await.is_consistent());
}

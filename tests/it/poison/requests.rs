//! Poison on the requests topic: the worker dead-letters it (or fails the job) and carries on.

use std::time::Duration;

use recq::db;
use recq::domain::events::now;
use recq::domain::{JobEvent, JobId, JobStatus, RecommendationRequested, UserId};
use recq::domain::{JobRun, JobStatusChanged};
use recq::kafka::dlq;

use super::*;
use crate::common::env::TestEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_are_not_confluent_framed_are_dead_lettered() {
    poison_request_is_dead_lettered(
        Some(b"7"),
        Some(b"{\"user_id\": 7}".to_vec()),
        "not-confluent-framed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_magic_byte_is_dead_lettered() {
    let mut value = vec![1, 0, 0, 0, 1];
    value.extend(request_body(JobId::new_random().to_string().as_bytes(), 7));
    poison_request_is_dead_lettered(Some(b"7"), Some(value), "not-confluent-framed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_schema_id_is_dead_lettered() {
    let body = request_body(JobId::new_random().to_string().as_bytes(), 7);
    let value = framed([0x7f, 0xff, 0xff, 0xff], &body);
    poison_request_is_dead_lettered(Some(b"7"), Some(value), "unknown-schema-id").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_id_of_another_record_type_is_dead_lettered() {
    let env = TestEnv::new(1).await;
    let run = JobRun {
        job_id: JobId::new_random(),
        user_id: UserId::new(7).unwrap(),
        attempt: 1,
        queued_at: now(),
    };
    let status: JobStatusChanged = run.queued(now());
    let value = env
        .codec
        .encode_status(&env.topics.jobs, &status)
        .await
        .unwrap();
    poison_request_in(
        &env,
        env.worker_config(),
        Some(b"7"),
        Some(value),
        "wrong-record-type",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_missing_a_required_field_is_dead_lettered() {
    let env = TestEnv::new(1).await;
    // An older producer's schema, registered under its own subject: no user_id.
    let schema = r#"{"type": "record", "name": "RecommendationRequested", "namespace": "recq.v1",
        "fields": [{"name": "job_id", "type": "string"},
                   {"name": "requested_at", "type": {"type": "long", "logicalType": "timestamp-micros"}}]}"#;
    let subject = format!("{}-without-user-value", env.topics.requests);
    let id = register(&env, &subject, schema).await.unwrap();
    let mut body = avro_string(JobId::new_random().to_string().as_bytes());
    body.extend(avro_long(now().timestamp_micros()));
    let value = framed(id.to_be_bytes(), &body);
    let letter = poison_request_in(
        &env,
        env.worker_config(),
        Some(b"7"),
        Some(value),
        "invalid-field",
    )
    .await;
    assert!(letter.error.contains("user_id"), "{}", letter.error);
}

async fn user_id_is_dead_lettered(user_id: i64) {
    let env = TestEnv::new(1).await;
    let id = request_schema_id(&env).await;
    let value = framed(
        id,
        &request_body(JobId::new_random().to_string().as_bytes(), user_id),
    );
    let key = user_id.to_string();
    let letter = poison_request_in(
        &env,
        env.worker_config(),
        Some(key.as_bytes()),
        Some(value),
        "invalid-field",
    )
    .await;
    assert!(letter.error.contains(&key), "{}", letter.error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_id_zero_is_dead_lettered() {
    user_id_is_dead_lettered(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_negative_user_id_is_dead_lettered() {
    user_id_is_dead_lettered(-5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_id_beyond_the_32_bit_range_is_dead_lettered() {
    user_id_is_dead_lettered(1 << 31).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_an_unknown_user_ends_as_a_failed_job_and_the_next_request_runs() {
    let env = TestEnv::new(1).await;
    let worker = env.start_worker(super::small_recommender());
    let projector = env.start_projector();
    let stranger = UserId::new(999_999).unwrap();
    let job = recq::app::tools::submit(&env.codec, &env.producer, &env.topics, &[stranger])
        .await
        .unwrap()[0];
    good_request_is_done(&env).await;
    let row = job_reaches(&env, job, JobStatus::Failed).await;
    let error = row.last_error.unwrap_or_default();
    assert!(
        error.contains("999999") && error.contains("unknown"),
        "{error}"
    );
    worker.stop().await;
    projector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_a_null_key_is_dead_lettered() {
    let env = TestEnv::new(1).await;
    let id = request_schema_id(&env).await;
    let value = framed(
        id,
        &request_body(JobId::new_random().to_string().as_bytes(), 7),
    );
    poison_request_in(&env, env.worker_config(), None, Some(value), "bad-key").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_keyed_by_another_user_is_dead_lettered() {
    let env = TestEnv::new(1).await;
    let id = request_schema_id(&env).await;
    let value = framed(
        id,
        &request_body(JobId::new_random().to_string().as_bytes(), 7),
    );
    poison_request_in(
        &env,
        env.worker_config(),
        Some(b"8"),
        Some(value),
        "bad-key",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_value_is_dead_lettered() {
    poison_request_is_dead_lettered(Some(b"7"), Some(Vec::new()), "empty-value").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_size_limit_is_dead_lettered() {
    let env = TestEnv::new(1).await;
    let config = recq::worker::WorkerConfig {
        max_message_bytes: 256,
        ..env.worker_config()
    };
    let id = request_schema_id(&env).await;
    let mut value = framed(
        id,
        &request_body(JobId::new_random().to_string().as_bytes(), 7),
    );
    value.resize(257, 0);
    let letter = poison_request_in(&env, config, Some(b"7"), Some(value), "too-large").await;
    assert!(
        letter.error.contains("257") && letter.error.contains("256"),
        "{}",
        letter.error
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_a_string_is_dead_lettered() {
    let env = TestEnv::new(1).await;
    let id = request_schema_id(&env).await;
    let value = framed(id, &request_body(&[0xff, 0xfe, 0xc3, 0x28], 7));
    poison_request_in(
        &env,
        env.worker_config(),
        Some(b"7"),
        Some(value),
        "undecodable-avro",
    )
    .await;
}

/// Produces the same request (same job id) `copies` times.
async fn produce_copies(env: &TestEnv, request: &RecommendationRequested, copies: usize) {
    let value = env
        .codec
        .encode_request(&env.topics.requests, request)
        .await
        .unwrap();
    let key = request.user_id.to_string();
    for _ in 0..copies {
        env.produce_raw(&env.topics.requests, key.as_bytes(), Some(&value))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_request_id_runs_the_job_once() {
    let env = TestEnv::new(1).await;
    let worker = env.start_worker(super::small_recommender());
    let projector = env.start_projector();
    let request = RecommendationRequested {
        job_id: JobId::new_random(),
        user_id: UserId::new(5).unwrap(),
        requested_at: now(),
    };
    produce_copies(&env, &request, 2).await;
    good_request_is_done(&env).await;
    let row = job_reaches(&env, request.job_id, JobStatus::Done).await;
    assert_eq!(row.attempt, 1);

    // The jobs topic holds one queue → process → done run of the job, not two.
    let records = dlq::read_all(&env.kafka, &env.topics.jobs, Duration::from_secs(2), None)
        .await
        .unwrap();
    let mut statuses = Vec::new();
    for record in records {
        let event = env
            .codec
            .decode_job_event(record.key.as_deref(), record.value.as_deref())
            .await
            .unwrap();
        if let JobEvent::Status(e) = event
            && e.job_id == request.job_id
        {
            statuses.push(e.status);
        }
    }
    assert_eq!(
        statuses,
        [JobStatus::Queue, JobStatus::Process, JobStatus::Done]
    );
    worker.stop().await;
    projector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_id_reused_for_another_user_is_dead_lettered() {
    let env = TestEnv::new(1).await;
    let worker = env.start_worker(super::small_recommender());
    let projector = env.start_projector();
    let first = RecommendationRequested {
        job_id: JobId::new_random(),
        user_id: UserId::new(5).unwrap(),
        requested_at: now(),
    };
    produce_copies(&env, &first, 1).await;
    job_reaches(&env, first.job_id, JobStatus::Done).await;

    let id = request_schema_id(&env).await;
    let reuse = framed(id, &request_body(first.job_id.to_string().as_bytes(), 6));
    let offset = produce(&env, &env.topics.requests, Some(b"6"), Some(&reuse)).await;
    good_request_is_done(&env).await;
    let letter = dead_letter_of(&env, &env.topics.requests_dlq, &env.topics.requests, offset).await;
    assert_eq!(letter.reason, "duplicate-job-id");
    assert!(
        letter.error.contains(&first.job_id.to_string()),
        "{}",
        letter.error
    );
    let row = db::jobs::job(&env.db.pool, first.job_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.user_id, first.user_id);
    worker.stop().await;
    projector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_a_deleted_user_runs_and_recreates_the_user() {
    let env = TestEnv::new(1).await;
    let worker = env.start_worker(super::small_recommender());
    let projector = env.start_projector();
    let user = UserId::new(7).unwrap();
    let before = good_request_is_done(&env).await;
    sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(user.get())
        .execute(&env.db.pool)
        .await
        .unwrap();
    assert!(
        db::jobs::job(&env.db.pool, before.job_id)
            .await
            .unwrap()
            .is_none(),
        "cascade"
    );

    // The projector neither wedges on the foreign key nor drops the event: the user row is
    // created again in the batch's transaction.
    let after = good_request_is_done(&env).await;
    assert_eq!(after.user_id, user);
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE id = $1")
        .bind(user.get())
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(users, 1);
    let rows = db::jobs::jobs_of_user(&env.db.pool, user).await.unwrap();
    assert_eq!(
        rows.iter().map(|r| r.job_id).collect::<Vec<_>>(),
        [after.job_id]
    );
    worker.stop().await;
    projector.stop().await;
}

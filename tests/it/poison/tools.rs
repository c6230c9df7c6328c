//! `recq dlq list` and `recq dlq redrive` against the real broker.

use std::time::Duration;

use recq::app::dlq::{self, Selection};
use recq::cli::DlqTopic;
use recq::domain::{JobStatus, UserId};

use super::*;
use crate::common::env::TestEnv;

const IDLE: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redriven_dead_letter_counts_its_attempts_and_runs_once_the_cause_is_fixed() {
    let env = TestEnv::new(1).await;
    // Misconfigured: every request is "too large".
    let tight = recq::worker::WorkerConfig {
        max_message_bytes: 8,
        ..env.worker_config()
    };
    let worker = start_worker_with(&env, tight);
    let projector = env.start_projector();
    let user = UserId::new(7).unwrap();
    let job = recq::app::tools::submit(&env.codec, &env.producer, &env.topics, &[user])
        .await
        .unwrap()[0];
    let first = dead_letter_of(&env, &env.topics.requests_dlq, &env.topics.requests, 0).await;
    assert_eq!(first.reason, "too-large");

    let listed = dlq::list(&env.kafka, &env.topics, DlqTopic::Requests, None, IDLE)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    let line = dlq::describe(&listed[0]);
    assert!(line.starts_with("0:0 reason=too-large from="), "{line}");
    assert!(line.contains("attempt=1 key=\"7\""), "{line}");

    // Redriven while still misconfigured: dead-lettered again, attempt 2, same first failure.
    let redriven = dlq::redrive(
        &env.kafka,
        &env.producer,
        &env.topics,
        DlqTopic::Requests,
        &Selection::Reason("too-large".into()),
        IDLE,
    )
    .await
    .unwrap();
    assert_eq!(redriven.len(), 1);
    assert_eq!(redriven[0].topic, env.topics.requests);
    let again = eventually(
        "the second dead letter",
        Duration::from_secs(60),
        || async {
            dlq::list(&env.kafka, &env.topics, DlqTopic::Requests, None, IDLE)
                .await
                .unwrap()
                .into_iter()
                .find(|l| l.offset == 1)
        },
    )
    .await;
    assert_eq!(again.attempt, Some(2));
    assert_eq!(again.first_failure_at, first.first_failure_at);
    assert_eq!(again.original_offset, Some(redriven[0].offset));
    assert_eq!(again.value, first.value);
    worker.stop().await;

    // Fixed: the redriven request runs.
    let worker = env.start_worker(small_recommender());
    let selection = Selection::Offsets(vec![(Some(0), 1)]);
    let redriven = dlq::redrive(
        &env.kafka,
        &env.producer,
        &env.topics,
        DlqTopic::Requests,
        &selection,
        IDLE,
    )
    .await
    .unwrap();
    assert_eq!(redriven.len(), 1);
    let row = job_reaches(&env, job, JobStatus::Done).await;
    assert_eq!(row.user_id, user);
    worker.stop().await;
    projector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_refuses_a_selection_that_names_no_dead_letter() {
    let env = TestEnv::new(1).await;
    let selection = Selection::Offsets(vec![(None, 42)]);
    let result = dlq::redrive(
        &env.kafka,
        &env.producer,
        &env.topics,
        DlqTopic::Jobs,
        &selection,
        IDLE,
    )
    .await;
    let error = result.unwrap_err().to_string();
    assert!(error.contains("no dead letter at 42"), "{error}");
}

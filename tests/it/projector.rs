//! The projector against hand-made event streams.

use std::time::Duration;

use chrono::Duration as Span;
use recq::db;
use recq::domain::events::now;
use recq::domain::{JobId, JobRun, JobStatus, JobStatusChanged, UserId};

use crate::common::env::{TestEnv, eventually};

fn run(user: i64) -> JobRun {
    JobRun {
        job_id: JobId::new_random(),
        user_id: UserId::new(user).unwrap(),
        attempt: 1,
        queued_at: now(),
    }
}

fn lifecycle(run: &JobRun) -> [JobStatusChanged; 3] {
    let t = run.queued_at;
    [
        run.queued(t),
        run.started(t + Span::milliseconds(3)),
        run.done(t + Span::milliseconds(3), t + Span::milliseconds(2100)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_status_event_changes_nothing() {
    let env = TestEnv::new(1).await;
    let projector = env.start_projector();
    let job = run(3);
    let [queued, started, done] = lifecycle(&job);
    for event in [&queued, &started, &done] {
        env.emit(event).await;
    }
    // The same `process` event again, later, as a redelivery would produce it.
    let mut again = started.clone();
    again.occurred_at = now() + Span::seconds(5);
    let last = env.emit(&again).await;
    let last = last.max(env.emit(&done).await);
    env.applied_through(last).await;

    let row = db::jobs::job(&env.db.pool, job.job_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, JobStatus::Done);
    assert_eq!(row.seq, done.seq);
    assert_eq!(row.updated_at, done.occurred_at);
    assert_eq!(row.processing_time, 2);
    projector.stop().await;
    assert!(env.verify().await.is_consistent());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_delivered_out_of_order_leave_the_row_at_its_latest_state() {
    let env = TestEnv::new(1).await;
    let projector = env.start_projector();
    let job = run(4);
    let [queued, started, done] = lifecycle(&job);
    env.emit(&done).await;
    env.emit(&queued).await;
    let last = env.emit(&started).await;
    env.applied_through(last).await;

    let row = db::jobs::job(&env.db.pool, job.job_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, JobStatus::Done);
    assert_eq!(row.finished_at, done.finished_at);
    assert_eq!(row.created_at, job.queued_at);
    projector.stop().await;
    assert!(env.verify().await.is_consistent());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_the_projector_mid_stream_leaves_the_table_equal_to_the_fold_of_the_log() {
    let env = TestEnv::new(3).await;
    let jobs: Vec<JobRun> = (1..=300).map(|u| run(u % 40 + 1)).collect();
    let mut events: Vec<JobStatusChanged> = Vec::new();
    for job in &jobs {
        events.extend(lifecycle(job));
    }
    let producer = {
        let env_events = events.clone();
        let (codec, producer, topic) = (
            env.codec.clone(),
            env.producer.clone(),
            env.topics.jobs.clone(),
        );
        tokio::spawn(async move {
            for chunk in env_events.chunks(50) {
                let mut sends = Vec::new();
                for event in chunk {
                    let value = codec.encode_status(&topic, event).await.unwrap();
                    sends.push((event.job_id.to_string(), value));
                }
                futures::future::join_all(sends.iter().map(|(k, v)| {
                    producer.send(recq::kafka::producer::Outgoing {
                        topic: &topic,
                        key: k.as_bytes(),
                        value: Some(v),
                        headers: Vec::new(),
                    })
                }))
                .await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // Let the first projector apply part of the stream, then stop it mid-way.
    let first = env.start_projector();
    eventually(
        "some rows to be projected",
        Duration::from_secs(60),
        || async {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM recommendation_queues")
                .fetch_one(&env.db.pool)
                .await
                .unwrap();
            (n > 0).then_some(())
        },
    )
    .await;
    first.stop().await;
    let mid = env.verify().await;
    assert!(
        mid.is_consistent(),
        "after the first projector stopped: {mid}"
    );

    producer.await.unwrap();
    let second = env.start_projector();
    eventually("every job to be done", Duration::from_secs(90), || async {
        let done: i64 =
            sqlx::query_scalar("SELECT count(*) FROM recommendation_queues WHERE status = 'done'")
                .fetch_one(&env.db.pool)
                .await
                .unwrap();
        (done == jobs.len() as i64).then_some(())
    })
    .await;
    second.stop().await;
    let report = env.verify().await;
    assert!(report.is_consistent(), "{report}");
    assert_eq!(report.events_read, events.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_a_row_changed_behind_the_projectors_back() {
    let env = TestEnv::new(1).await;
    let projector = env.start_projector();
    let job = run(9);
    let mut last = 0;
    for event in lifecycle(&job) {
        last = env.emit(&event).await;
    }
    env.applied_through(last).await;
    projector.stop().await;
    assert!(env.verify().await.is_consistent());

    sqlx::query("UPDATE recommendation_queues SET status = 'failed' WHERE job_id = $1")
        .bind(job.job_id.as_uuid())
        .execute(&env.db.pool)
        .await
        .unwrap();
    let report = env.verify().await;
    assert!(!report.is_consistent());
    assert_eq!(report.different.len(), 1);
    assert_eq!(report.different[0].fields, vec!["status"]);
}

//! Rebuild and prune: the table stays a function of the log.

use std::time::Duration;

use chrono::Duration as Span;
use recq::db;
use recq::domain::events::now;
use recq::domain::{JobId, JobRun, JobStatusChanged, UserId};
use recq::rebuild::{RebuildOptions, rebuild};
use tokio_util::sync::CancellationToken;

use crate::common::env::{TestEnv, eventually};

fn finished_job(user: i64, days_ago: i64) -> Vec<JobStatusChanged> {
    let t = now() - Span::days(days_ago);
    let run = JobRun {
        job_id: JobId::new_random(),
        user_id: UserId::new(user).unwrap(),
        attempt: 1,
        queued_at: t,
    };
    vec![
        run.queued(t),
        run.started(t + Span::milliseconds(2)),
        run.done(t + Span::milliseconds(2), t + Span::milliseconds(1500)),
    ]
}

fn options(batch_size: usize) -> RebuildOptions {
    RebuildOptions {
        restart: false,
        batch_size,
        idle: Duration::from_millis(1500),
        progress: false,
    }
}

async fn wait_for_rows(env: &TestEnv, n: i64) {
    eventually(&format!("{n} rows"), Duration::from_secs(60), || async {
        (env.row_count().await == n).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruned_jobs_leave_through_the_log_and_a_rebuild_does_not_bring_them_back() {
    let env = TestEnv::new(2).await;
    let projector = env.start_projector();
    let old: Vec<Vec<JobStatusChanged>> = (1..=10).map(|u| finished_job(u, 40)).collect();
    let recent: Vec<Vec<JobStatusChanged>> = (1..=10).map(|u| finished_job(u, 1)).collect();
    for event in old.iter().chain(&recent).flatten() {
        env.emit(event).await;
    }
    wait_for_rows(&env, 20).await;

    let pruned = recq::app::tools::prune(&env.db.pool, &env.producer, &env.topics, Span::days(30))
        .await
        .unwrap();
    assert_eq!(pruned, 10);
    wait_for_rows(&env, 10).await;
    projector.stop().await;
    let report = env.verify().await;
    assert!(report.is_consistent(), "{report}");

    let rebuilt = rebuild(
        &env.kafka,
        &env.topics,
        &env.codec,
        &env.db.pool,
        &options(1000),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(rebuilt.rows, 10);
    for job in &old {
        assert!(
            db::jobs::job(&env.db.pool, job[0].job_id)
                .await
                .unwrap()
                .is_none()
        );
    }
    for job in &recent {
        assert!(
            db::jobs::job(&env.db.pool, job[0].job_id)
                .await
                .unwrap()
                .is_some()
        );
    }
    let report = env.verify().await;
    assert!(report.is_consistent(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_while_the_projector_runs_swaps_in_the_same_table() {
    let env = TestEnv::new(3).await;
    let projector = env.start_projector();
    let jobs: Vec<Vec<JobStatusChanged>> = (1..=200).map(|u| finished_job(u % 30 + 1, 0)).collect();
    for event in jobs[..100].iter().flatten() {
        env.emit(event).await;
    }
    wait_for_rows(&env, 100).await;
    let before: Vec<_> = db::jobs::jobs_of_user(&env.db.pool, UserId::new(2).unwrap())
        .await
        .unwrap();

    // More events keep arriving while the rebuild runs; the live projector keeps applying them.
    let rest = {
        let env_jobs: Vec<JobStatusChanged> = jobs[100..].iter().flatten().cloned().collect();
        let (codec, producer, topic) = (
            env.codec.clone(),
            env.producer.clone(),
            env.topics.jobs.clone(),
        );
        tokio::spawn(async move {
            for event in env_jobs {
                let value = codec.encode_status(&topic, &event).await.unwrap();
                producer
                    .send(recq::kafka::producer::Outgoing {
                        topic: &topic,
                        key: event.job_id.to_string().as_bytes(),
                        value: Some(&value),
                        headers: Vec::new(),
                    })
                    .await
                    .unwrap();
            }
        })
    };
    let rebuilt = rebuild(
        &env.kafka,
        &env.topics,
        &env.codec,
        &env.db.pool,
        &options(50),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(rebuilt.rows >= 100, "{rebuilt:?}");
    rest.await.unwrap();
    wait_for_rows(&env, 200).await;
    projector.stop().await;

    let after: Vec<_> = db::jobs::jobs_of_user(&env.db.pool, UserId::new(2).unwrap())
        .await
        .unwrap();
    assert_eq!(before, after[..before.len()]);
    let report = env.verify().await;
    assert!(report.is_consistent(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_rebuild_resumes_where_it_stopped() {
    let env = TestEnv::new(2).await;
    let projector = env.start_projector();
    let jobs: Vec<Vec<JobStatusChanged>> = (1..=300).map(|u| finished_job(u % 50 + 1, 0)).collect();
    for event in jobs.iter().flatten() {
        env.emit(event).await;
    }
    wait_for_rows(&env, 300).await;
    projector.stop().await;

    // Interrupt the first run as soon as it stored some progress.
    let cancel = CancellationToken::new();
    let watcher = {
        let (pool, cancel, names) = (
            env.db.pool.clone(),
            cancel.clone(),
            [env.topics.jobs.clone(), env.topics.recommendations.clone()],
        );
        tokio::spawn(async move {
            loop {
                let names = [names[0].as_str(), names[1].as_str()];
                if let Ok(p) = db::rebuild::shadow_positions(&pool, &names).await
                    && p.values().sum::<i64>() > 0
                {
                    cancel.cancel();
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let first = rebuild(
        &env.kafka,
        &env.topics,
        &env.codec,
        &env.db.pool,
        &options(20),
        &cancel,
    )
    .await;
    watcher.await.unwrap();
    let interrupted_after = match first {
        Err(recq::rebuild::RebuildError::Interrupted { events }) => events,
        other => panic!("expected an interrupted rebuild, got {other:?}"),
    };
    assert!(
        interrupted_after < 900,
        "interrupted only after {interrupted_after} events"
    );

    let second = rebuild(
        &env.kafka,
        &env.topics,
        &env.codec,
        &env.db.pool,
        &options(200),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(second.resumed);
    // Nothing read twice, nothing skipped: the first run stored all it read when interrupted.
    assert_eq!(second.events + interrupted_after, 900);
    assert_eq!(second.rows, 300);
    let report = env.verify().await;
    assert!(report.is_consistent(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_user_disappears_stays_gone_after_a_rebuild_and_late_events_are_dropped() {
    let env = TestEnv::new(2).await;
    let projector = env.start_projector();
    let erased = UserId::new(21).unwrap();
    let theirs: Vec<Vec<JobStatusChanged>> = (0..3).map(|_| finished_job(21, 0)).collect();
    let others: Vec<Vec<JobStatusChanged>> = (0..3).map(|_| finished_job(22, 0)).collect();
    for event in theirs.iter().chain(&others).flatten() {
        env.emit(event).await;
    }
    wait_for_rows(&env, 6).await;

    let tombstoned =
        recq::app::tools::erase_user(&env.db.pool, &env.codec, &env.producer, &env.topics, erased)
            .await
            .unwrap();
    assert_eq!(tombstoned, 3);
    wait_for_rows(&env, 3).await;

    // A late event for the erased user (a worker that was still running) is dropped, and a
    // later event on the same partitions is applied right after it: nothing wedges.
    let late = finished_job(21, 0);
    for event in &late {
        env.emit(event).await;
    }
    let after = finished_job(23, 0);
    for event in &after {
        env.emit(event).await;
    }
    wait_for_rows(&env, 4).await;
    assert!(
        db::jobs::job(&env.db.pool, late[0].job_id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        db::jobs::jobs_of_user(&env.db.pool, erased)
            .await
            .unwrap()
            .is_empty()
    );
    let user_row: Option<i32> = sqlx::query_scalar("SELECT id FROM users WHERE id = 21")
        .fetch_optional(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(user_row, None);
    projector.stop().await;
    // Counted per job change after coalescing: the late job's three events are one change.
    assert!(recq::metrics::erased_user_events() >= 1);
    let report = env.verify().await;
    assert!(report.is_consistent(), "{report}");

    rebuild(
        &env.kafka,
        &env.topics,
        &env.codec,
        &env.db.pool,
        &options(100),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(
        db::jobs::jobs_of_user(&env.db.pool, erased)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(env.row_count().await, 4);
    let report = env.verify().await;
    assert!(report.is_consistent(), "{report}");
}

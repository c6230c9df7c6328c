//! Scenarios from public bug reports against similar systems, each reproduced here.

use std::time::Instant;

use chrono::Duration as Span;
use recq::db;
use recq::domain::events::now;
use recq::domain::{JobEvent, JobId, JobRun, JobStatus, UserId};
use recq::projector::{Batch, Event, Target};

use crate::common::TestDb;
use crate::common::env::{TestEnv, eventually};

fn run(user: i64) -> JobRun {
    JobRun {
        job_id: JobId::new_random(),
        user_id: UserId::new(user).unwrap(),
        attempt: 1,
        queued_at: now(),
    }
}

fn partition(p: i32) -> (String, i32) {
    ("recq.jobs".to_owned(), p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_batch_with_a_whole_lifecycle_and_a_duplicate_done_among_a_thousand_jobs_applies_in_one_go()
 {
    let db = TestDb::new().await;
    let focus = run(1);
    let t = focus.queued_at;
    let done = focus.done(t, t + Span::seconds(3));
    let mut batch = Batch::default();
    let mut offset = 0;
    let mut push = |batch: &mut Batch, event: JobEvent| {
        batch.push(partition(0), offset, Event::Job(event));
        offset += 1;
    };
    for i in 0..1000 {
        let other = run(i % 50 + 2);
        push(&mut batch, JobEvent::Status(other.queued(other.queued_at)));
        if i == 500 {
            push(&mut batch, JobEvent::Status(focus.queued(t)));
            push(&mut batch, JobEvent::Status(focus.started(t)));
            push(&mut batch, JobEvent::Status(done.clone()));
            push(&mut batch, JobEvent::Status(done.clone()));
        }
    }
    let positions = batch.apply(&db.pool, Target::Live).await.unwrap();
    assert_eq!(positions[&partition(0)], 1004);

    let row = db::jobs::job(&db.pool, focus.job_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, JobStatus::Done);
    assert_eq!(row.seq, done.seq);
    assert_eq!(row.processing_time, 3);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM recommendation_queues")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(rows, 1001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_then_a_prune_tombstone_then_queue_again_in_one_batch_leaves_the_job_queued() {
    let db = TestDb::new().await;
    let job = run(3);
    // The job existed and finished before this batch.
    let mut earlier = Batch::default();
    earlier.push(
        partition(0),
        0,
        Event::Job(JobEvent::Status(job.done(job.queued_at, job.queued_at))),
    );
    earlier.apply(&db.pool, Target::Live).await.unwrap();

    let again = JobRun {
        queued_at: now() + Span::seconds(1),
        ..job
    };
    let mut batch = Batch::default();
    batch.push(
        partition(0),
        1,
        Event::Job(JobEvent::Status(job.queued(job.queued_at))),
    );
    batch.push(partition(0), 2, Event::Job(JobEvent::Tombstone(job.job_id)));
    batch.push(
        partition(0),
        3,
        Event::Job(JobEvent::Status(again.queued(again.queued_at))),
    );
    batch.apply(&db.pool, Target::Live).await.unwrap();

    let row = db::jobs::job(&db.pool, job.job_id).await.unwrap().unwrap();
    assert_eq!(row.status, JobStatus::Queue);
    assert_eq!(row.created_at, again.queued_at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_process_event_after_done_leaves_the_row_untouched_and_is_counted() {
    let env = TestEnv::new(1).await;
    let projector = env.start_projector();
    let job = run(4);
    let t = job.queued_at;
    let done = job.done(t, t + Span::seconds(2));
    env.emit(&job.queued(t)).await;
    let at = env.emit(&done).await;
    env.applied_through(at).await;
    let before = recq::metrics::stale_updates();

    let stale = env.emit(&job.started(t + Span::seconds(1))).await;
    env.applied_through(stale).await;
    let row = db::jobs::job(&env.db.pool, job.job_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, JobStatus::Done);
    assert_eq!(row.updated_at, done.occurred_at);
    assert!(recq::metrics::stale_updates() > before);
    projector.stop().await;
    assert!(env.verify().await.is_consistent());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_done_event_for_a_deleted_user_does_not_stop_the_projector() {
    let env = TestEnv::new(1).await;
    let projector = env.start_projector();
    let job = run(5);
    let t = job.queued_at;
    let at = env.emit(&job.started(t)).await;
    env.applied_through(at).await;
    sqlx::query("DELETE FROM users WHERE id = 5")
        .execute(&env.db.pool)
        .await
        .unwrap();
    assert!(
        db::jobs::job(&env.db.pool, job.job_id)
            .await
            .unwrap()
            .is_none()
    );

    env.emit(&job.done(t, t + Span::seconds(1))).await;
    let next = run(6);
    let next_at = env.emit(&next.queued(next.queued_at)).await;
    let started = Instant::now();
    env.applied_through(next_at).await;
    let waited = started.elapsed();
    assert!(
        db::jobs::job(&env.db.pool, next.job_id)
            .await
            .unwrap()
            .is_some()
    );
    // The deleted user's late `done` recreates the user row (the projector never fails on
    // the foreign key); erasure proper goes through `recq erase-user`.
    let row = db::jobs::job(&env.db.pool, job.job_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, JobStatus::Done);
    eprintln!("later event applied {waited:?} after it was produced");
    // `stop` fails the test if the projector had exited with an error meanwhile.
    projector.stop().await;
}

/// Produces the whole lifecycle of `jobs`, many sends in flight at once.
async fn produce_lifecycles(env: &TestEnv, jobs: &[JobRun]) {
    use futures::StreamExt;
    let mut encoded = Vec::with_capacity(jobs.len() * 3);
    for job in jobs {
        let t = job.queued_at;
        for event in [
            job.queued(t),
            job.started(t),
            job.done(t, t + Span::milliseconds(5)),
        ] {
            let value = env
                .codec
                .encode_status(&env.topics.jobs, &event)
                .await
                .unwrap();
            encoded.push((job.job_id.to_string(), value));
        }
    }
    futures::stream::iter(encoded.iter())
        .map(|(key, value)| {
            env.producer.send(recq::kafka::producer::Outgoing {
                topic: &env.topics.jobs,
                key: key.as_bytes(),
                value: Some(value),
                headers: Vec::new(),
            })
        })
        .buffered(2000)
        .for_each(|sent| async move {
            sent.unwrap();
        })
        .await;
}

/// An analytics consumer: its own group on the jobs topic, counting distinct `done` jobs.
/// Returns once `target` distinct jobs were seen (or after `stop_after` of them), committing
/// what it consumed.
async fn count_done_outcomes(
    env: &TestEnv,
    group: &str,
    seen: &mut std::collections::HashSet<JobId>,
    stop_after: usize,
) {
    use rdkafka::Message;
    use rdkafka::consumer::{CommitMode, Consumer};
    let context = recq::kafka::consumer::RebalanceContext::default();
    let consumer = recq::kafka::consumer::group_consumer(&env.kafka, group, context).unwrap();
    consumer.subscribe(&[&env.topics.jobs]).unwrap();
    let deadline = Instant::now() + std::time::Duration::from_secs(180);
    while seen.len() < stop_after {
        assert!(
            Instant::now() < deadline,
            "analytics consumer saw only {} done jobs",
            seen.len()
        );
        let message =
            match tokio::time::timeout(std::time::Duration::from_secs(5), consumer.recv()).await {
                Ok(message) => message.unwrap().detach(),
                Err(_) => continue,
            };
        if let Ok(JobEvent::Status(e)) = env
            .codec
            .decode_job_event(message.key(), message.payload())
            .await
            && e.status == JobStatus::Done
        {
            seen.insert(e.job_id);
        }
        recq::kafka::consumer::store(
            &consumer,
            message.topic(),
            message.partition(),
            message.offset() + 1,
        )
        .unwrap();
    }
    consumer.commit_consumer_state(CommitMode::Sync).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analytics_consumer_restarted_later_counts_exactly_one_done_per_job_matching_the_table()
{
    const JOBS: usize = 20_000;
    let env = TestEnv::new(3).await;
    let projector = env.start_projector();
    let jobs: Vec<JobRun> = (0..JOBS).map(|i| run(i as i64 % 900 + 1)).collect();
    let group = format!("analytics-{}", env.suffix);
    let mut seen = std::collections::HashSet::new();

    produce_lifecycles(&env, &jobs[..JOBS / 2]).await;
    // The analytics consumer reads part of the stream, then stops.
    count_done_outcomes(&env, &group, &mut seen, JOBS / 4).await;
    let seen_before_stop = seen.len();
    // Meanwhile the rest of the jobs finish.
    produce_lifecycles(&env, &jobs[JOBS / 2..]).await;
    eventually(
        "every job to be done in the table",
        std::time::Duration::from_secs(180),
        || async {
            let done: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM recommendation_queues WHERE status = 'done'",
            )
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
            (done == JOBS as i64).then_some(())
        },
    )
    .await;
    // Restarted with the same group, it resumes and ends with exactly one outcome per job.
    count_done_outcomes(&env, &group, &mut seen, JOBS).await;
    projector.stop().await;

    assert!((JOBS / 4..JOBS).contains(&seen_before_stop));
    assert_eq!(seen.len(), JOBS);
    let expected: std::collections::HashSet<JobId> = jobs.iter().map(|j| j.job_id).collect();
    assert_eq!(seen, expected);
    let report = env.verify().await;
    assert!(report.is_consistent(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_constant_rebalancing_stored_offsets_never_decrease_and_the_table_equals_the_fold() {
    const JOBS: usize = 16_667; // 50,001 events
    let env = TestEnv::new(6).await;
    let jobs: Vec<JobRun> = (0..JOBS).map(|i| run(i as i64 % 900 + 1)).collect();

    // Samples every stored position; any decrease is recorded.
    let sampling = tokio_util::sync::CancellationToken::new();
    let sampler = {
        let (pool, stop) = (env.db.pool.clone(), sampling.clone());
        let topics = [env.topics.jobs.clone(), env.topics.recommendations.clone()];
        tokio::spawn(async move {
            let mut last: std::collections::BTreeMap<(String, i32), i64> = Default::default();
            let (mut samples, mut decreases) = (0u64, Vec::new());
            while !stop.is_cancelled() {
                let mut conn = pool.acquire().await.unwrap();
                let names = [topics[0].as_str(), topics[1].as_str()];
                for (partition, next) in db::offsets::read(&mut conn, &names).await.unwrap() {
                    let previous = last.insert(partition.clone(), next).unwrap_or(0);
                    if next < previous {
                        decreases.push((partition, previous, next));
                    }
                }
                samples += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            (samples, decreases)
        })
    };

    let base = env.start_projector();
    // The events stream in over ~30 s, so that the membership changes happen while they flow.
    let producing = {
        let env_jobs = jobs.clone();
        let env = &env;
        async move {
            for chunk in env_jobs.chunks(JOBS / 30 + 1) {
                produce_lifecycles(env, chunk).await;
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    };
    let churn = async {
        // The churn starts once the base projector holds every partition: Tansu wedges a group
        // for good when a member leaves while the group is still forming (docs/chaos.md), and
        // its first join takes ~5 s; a CI run lost half the partitions that way.
        let joined = std::time::Instant::now();
        loop {
            let positions: i64 =
                sqlx::query_scalar("SELECT count(*) FROM projector_offsets WHERE topic = $1")
                    .bind(&env.topics.jobs)
                    .fetch_one(&env.db.pool)
                    .await
                    .unwrap();
            if positions == 6 {
                break;
            }
            assert!(
                joined.elapsed() < std::time::Duration::from_secs(60),
                "the base projector did not take all partitions within 60 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        // Then another projector joins, and five seconds later leaves, until the table is
        // complete: a membership change every few seconds.
        let mut changes = 0;
        loop {
            let done: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM recommendation_queues WHERE status = 'done'",
            )
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
            eprintln!("{changes} membership changes, {done} of {JOBS} jobs done");
            if done == JOBS as i64 {
                return changes;
            }
            let second = env.start_projector();
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            second.stop().await;
            tokio::time::sleep(std::time::Duration::from_secs(3)).await;
            changes += 2;
            assert!(changes < 100, "the table never completed under rebalancing");
        }
    };
    let ((), changes) = tokio::join!(producing, churn);
    base.stop().await;
    sampling.cancel();
    let (samples, decreases) = sampler.await.unwrap();

    eprintln!("{changes} membership changes, {samples} position samples");
    assert!(changes >= 2);
    assert!(
        decreases.is_empty(),
        "stored positions went backwards: {decreases:?}"
    );
    let report = env.verify().await;
    assert!(report.is_consistent(), "{report}");
    assert_eq!(report.rows, JOBS);
}

//! Workers that die mid-job: nothing is lost, retried jobs count their attempts, and the
//! processing time is the final attempt's. A worker "killed" here is a task aborted without
//! draining or committing (`Running::kill`) or, where the kill must fall between two exact
//! steps, a group member that does those steps itself and disappears. A job that outlasts the
//! consumer's max.poll.interval.ms runs on a recommender slowed down for one user.

use std::sync::Arc;
use std::time::Duration;

use chrono::Duration as Span;
use rdkafka::consumer::Consumer;
use recq::db;
use recq::domain::events::{now, whole_seconds};
use recq::domain::{
    JobEvent, JobId, JobRun, JobStatus, JobStatusChanged, RecommendationRequested, UserId,
};
use recq::recommend::{Recommend, RecommendError, Recommendation, Recommender};

use crate::common::env::{TestEnv, eventually, small_recommender};

async fn terminal_count(env: &TestEnv) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM recommendation_queues WHERE status IN ('done', 'failed')",
    )
    .fetch_one(&env.db.pool)
    .await
    .unwrap()
}

/// The number of finished jobs once it has not changed for a second.
async fn settled_terminal_count(env: &TestEnv) -> i64 {
    let mut last = terminal_count(env).await;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = terminal_count(env).await;
        if now == last {
            return now;
        }
        last = now;
    }
}

async fn wait_for_terminal(env: &TestEnv, n: i64, timeout: Duration) {
    eventually(&format!("{n} finished jobs"), timeout, || async {
        (terminal_count(env).await == n).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_jobs_in_process_when_the_only_worker_dies_finish_after_it_restarts_timed_by_the_final_attempt()
 {
    let env = TestEnv::new(2).await;
    let projector = env.start_projector();
    let users: Vec<UserId> = (1..=10).map(|u| UserId::new(u).unwrap()).collect();
    let jobs = recq::app::tools::submit(&env.codec, &env.producer, &env.topics, &users)
        .await
        .unwrap();
    // The worker that died: it emitted `queue` and `process` two minutes ago, then nothing,
    // and never stored the requests' offsets.
    let died_at = now() - Span::minutes(2);
    for (job, user) in jobs.iter().zip(&users) {
        let request = RecommendationRequested {
            job_id: *job,
            user_id: *user,
            requested_at: died_at,
        };
        let run = JobRun::first_attempt(&request);
        env.emit(&run.queued(died_at)).await;
        env.emit(&run.started(died_at)).await;
    }
    eventually("ten jobs in process", Duration::from_secs(60), || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM recommendation_queues WHERE status = 'process'",
        )
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
        (n == 10).then_some(())
    })
    .await;

    let worker = env.start_worker(small_recommender());
    wait_for_terminal(&env, 10, Duration::from_secs(90)).await;
    worker.stop().await;
    projector.stop().await;

    for job in &jobs {
        let row = db::jobs::job(&env.db.pool, *job).await.unwrap().unwrap();
        assert_eq!(row.status, JobStatus::Done);
        assert_eq!(row.attempt, 2, "the restart is the job's second attempt");
        let (started, finished) = (row.started_at.unwrap(), row.finished_at.unwrap());
        assert!(
            started > died_at + Span::minutes(1),
            "started_at is the final attempt's"
        );
        assert_eq!(row.processing_time, whole_seconds(started, finished));
        assert!(
            row.processing_time < 60,
            "the dead attempt's two minutes are not counted"
        );
    }
    let report = env.verify().await;
    assert!(report.is_consistent(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_right_after_polling_a_request_does_not_lose_it() {
    let env = TestEnv::new(1).await;
    let projector = env.start_projector();
    let job = recq::app::tools::submit(
        &env.codec,
        &env.producer,
        &env.topics,
        &[UserId::new(3).unwrap()],
    )
    .await
    .unwrap()[0];

    // A member of the worker group polls the request and dies before emitting anything or
    // storing its offset.
    {
        let group = env.worker_config().group;
        let context = recq::kafka::consumer::RebalanceContext::default();
        let doomed = recq::kafka::consumer::group_consumer(&env.kafka, &group, context).unwrap();
        doomed.subscribe(&[&env.topics.requests]).unwrap();
        tokio::time::timeout(Duration::from_secs(60), doomed.recv())
            .await
            .expect("the doomed worker polls the request")
            .unwrap();
    }

    let worker = env.start_worker(small_recommender());
    let row = eventually(
        "the request to be processed after all",
        Duration::from_secs(90),
        || async {
            db::jobs::job(&env.db.pool, job)
                .await
                .unwrap()
                .filter(|r| r.status == JobStatus::Done)
        },
    )
    .await;
    assert_eq!(row.attempt, 1);
    worker.stop().await;
    projector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_more_concurrency_than_partitions_and_ten_worker_restarts_every_job_finishes_once() {
    const JOBS: i64 = 800;
    let env = TestEnv::new(2).await;
    let projector = env.start_projector();
    // Enough jobs that every one of the ten workers is killed with work left (each gets
    // through 15-65 jobs before it is seen finishing one).
    let users: Vec<UserId> = (0..JOBS)
        .map(|i| UserId::new(i % 60 + 1).unwrap())
        .collect();
    recq::app::tools::submit(&env.codec, &env.producer, &env.topics, &users)
        .await
        .unwrap();
    // Each answer takes 50 ms, so that a worker is seen finishing a job long before it
    // finished them all (at full speed one got through 800 before the check saw it).
    let recommender: Arc<dyn Recommend> = Arc::new(SlowFor {
        inner: small_recommender(),
        user: None,
        delay: Duration::from_millis(50),
    });
    let mut config = env.worker_config();
    config.concurrency = 16;
    for restart in 0..10 {
        // Kill each worker mid-run: once it finished a job (it holds its partitions then).
        // Not while it is still joining the group: the task's consumer leaves the group as
        // it is dropped, and a LeaveGroup during a pending join wedges Tansu's group for good
        // (seen here: no member of the group got partitions again within 400 s). A SIGKILL
        // sends no LeaveGroup; that case is make chaos's. The count is taken once the
        // projector caught up with the previous worker, so that only this one's jobs move it.
        let before = settled_terminal_count(&env).await;
        let worker = env.start_worker_using(config.clone(), recommender.clone(), env.codec.clone());
        eventually(
            "the worker to finish a job",
            Duration::from_secs(90),
            || async {
                let now = terminal_count(&env).await;
                (now > before || now == JOBS).then_some(())
            },
        )
        .await;
        worker.kill().await;
        eprintln!(
            "restart {restart}: {} of {JOBS} finished",
            terminal_count(&env).await
        );
    }
    let worker = env.start_worker_using(config, recommender, env.codec.clone());
    wait_for_terminal(&env, JOBS, Duration::from_secs(120)).await;
    worker.stop().await;
    projector.stop().await;

    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM recommendation_queues")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(rows, JOBS);
    let report = env.verify().await;
    assert!(report.is_consistent(), "{report}");
}

/// The real (small) recommender, slowed down for one user (`None`: for everyone), e.g. so
/// that a job outlasts the consumer's max.poll.interval.ms. Not a fake: it answers with the
/// real model.
struct SlowFor {
    inner: Arc<Recommender>,
    user: Option<UserId>,
    delay: Duration,
}

impl Recommend for SlowFor {
    fn recommend(&self, user: UserId, n: usize) -> Result<Vec<Recommendation>, RecommendError> {
        if self.user.is_none_or(|slow| slow == user) {
            std::thread::sleep(self.delay);
        }
        self.inner.recommend(user, n)
    }
}

/// Every status event of `job` in the jobs topic, read from the beginning until the topic
/// stays quiet for three seconds.
async fn status_events_of(env: &TestEnv, job: JobId) -> Vec<JobStatusChanged> {
    use rdkafka::Message;
    let reader = recq::kafka::consumer::reader(&env.kafka).unwrap();
    let mut list = rdkafka::TopicPartitionList::new();
    list.add_partition_offset(&env.topics.jobs, 0, rdkafka::Offset::Beginning)
        .unwrap();
    reader.assign(&list).unwrap();
    let mut events = Vec::new();
    while let Ok(message) = tokio::time::timeout(Duration::from_secs(3), reader.recv()).await {
        let message = message.unwrap().detach();
        if let Ok(JobEvent::Status(event)) = env
            .codec
            .decode_job_event(message.key(), message.payload())
            .await
            && event.job_id == job
        {
            events.push(event);
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_outlasting_the_max_poll_interval_ends_with_one_done_instead_of_moving_between_workers()
 {
    const POLL_INTERVAL: Duration = Duration::from_secs(6);
    let env = TestEnv::new(1).await;
    let projector = env.start_projector();
    let slow_user = UserId::new(7).unwrap();
    let recommender: Arc<dyn Recommend> = Arc::new(SlowFor {
        inner: small_recommender(),
        user: Some(slow_user),
        delay: POLL_INTERVAL * 5 / 2,
    });
    // Two workers, one slot each, that leave the group after 6 s without polling.
    let mut kafka = env.kafka.clone();
    for (key, value) in [
        ("session.timeout.ms", "6000"),
        ("max.poll.interval.ms", "6000"),
    ] {
        kafka.properties.push((key.to_owned(), value.to_owned()));
    }
    let mut config = env.worker_config();
    config.concurrency = 1;
    let workers = [
        env.start_worker_on(
            kafka.clone(),
            config.clone(),
            recommender.clone(),
            env.codec.clone(),
        ),
        env.start_worker_on(kafka, config, recommender, env.codec.clone()),
    ];
    // The slow job first; the fast ones behind it on the same partition.
    let users: Vec<UserId> = [7, 3, 4, 5].map(|u| UserId::new(u).unwrap()).to_vec();
    let jobs = recq::app::tools::submit(&env.codec, &env.producer, &env.topics, &users)
        .await
        .unwrap();
    wait_for_terminal(&env, 4, Duration::from_secs(120)).await;
    // Give a job moving between workers time to show a further attempt.
    tokio::time::sleep(POLL_INTERVAL * 2).await;
    for worker in workers {
        worker.stop().await;
    }
    projector.stop().await;

    let slow = jobs[0];
    let events = status_events_of(&env, slow).await;
    let statuses: Vec<(JobStatus, i32)> = events.iter().map(|e| (e.status, e.attempt)).collect();
    assert_eq!(
        statuses,
        [
            (JobStatus::Queue, 1),
            (JobStatus::Process, 1),
            (JobStatus::Done, 1)
        ],
        "the slow job ran once, on one worker"
    );
    let row = db::jobs::job(&env.db.pool, slow).await.unwrap().unwrap();
    assert_eq!((row.status, row.attempt), (JobStatus::Done, 1));
    assert!(
        row.processing_time >= 15,
        "processing time {} s covers the whole slow run",
        row.processing_time
    );
    for job in &jobs[1..] {
        let row = db::jobs::job(&env.db.pool, *job).await.unwrap().unwrap();
        assert_eq!((row.status, row.attempt), (JobStatus::Done, 1));
    }
    let report = env.verify().await;
    assert!(report.is_consistent(), "{report}");
}

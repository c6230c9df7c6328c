//! Transient failures: Postgres, the schema registry or the broker going away pauses the
//! pipeline (bounded backoff, no offset advanced, one log line per state change) and it
//! resumes by itself. Afterwards every request is done and `recq verify` passes.
//!
//! Postgres and the registry are cut through a TCP proxy the test owns (the machine's Postgres
//! is shared and never stopped); the broker tests run their own private broker process.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use recq::db;
use recq::domain::{JobId, JobStatus, UserId};
use recq::kafka::codec::Codec;
use recq::projector;
use recq::worker;
use tokio_util::sync::CancellationToken;
use tracing::instrument::WithSubscriber;
use tracing_subscriber::fmt::MakeWriter;

use crate::common::env::{Running, TestEnv, eventually, small_recommender};
use crate::common::proxy::Proxy;
use recq::harness::broker::{Kind, LocalBroker};

/// Log lines of one role, captured by running its future under its own subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    fn lines_containing(&self, needles: &[&str]) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_owned)
            .collect()
    }
}

/// Runs `role` as a task whose log lines go to the returned buffer.
fn logged<F>(cancel: CancellationToken, role: F) -> (Running, Captured)
where
    F: Future<Output = Result<(), String>> + Send + 'static,
{
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let running = Running::spawn(cancel, role.with_subscriber(subscriber));
    (running, logs)
}

/// A projector on `pool` and `codec` whose log lines are captured.
fn start_logged_projector(env: &TestEnv, pool: sqlx::PgPool, codec: Codec) -> (Running, Captured) {
    let cancel = CancellationToken::new();
    let role = projector::run(
        env.projector_config(),
        env.kafka.clone(),
        env.topics.clone(),
        pool,
        codec,
        env.producer.clone(),
        cancel.clone(),
    );
    logged(cancel, async move { role.await.map_err(|e| e.to_string()) })
}

/// A worker using `codec` whose log lines are captured.
fn start_logged_worker(env: &TestEnv, codec: Codec) -> (Running, Captured) {
    let cancel = CancellationToken::new();
    let deps = env.worker_deps(small_recommender(), codec);
    let role = worker::run(env.worker_config(), env.kafka.clone(), deps, cancel.clone());
    logged(cancel, async move { role.await.map_err(|e| e.to_string()) })
}

fn users(from: i64, count: i64) -> Vec<UserId> {
    (from..from + count)
        .map(|u| UserId::new(u % 60 + 1).unwrap())
        .collect()
}

async fn submit(env: &TestEnv, users: &[UserId]) -> Vec<JobId> {
    recq::app::tools::submit(&env.codec, &env.producer, &env.topics, users)
        .await
        .unwrap()
}

async fn done_count(env: &TestEnv, jobs: &[JobId]) -> i64 {
    db::jobs::status_counts_of(&env.db.pool, jobs)
        .await
        .unwrap()
        .get(&JobStatus::Done)
        .copied()
        .unwrap_or(0)
}

/// Waits until every job in `jobs` is done; returns how long that took.
async fn all_done(env: &TestEnv, jobs: &[JobId], timeout: Duration) -> Duration {
    let started = Instant::now();
    let want = jobs.len() as i64;
    eventually("every job to be done", timeout, || async {
        (done_count(env, jobs).await == want).then_some(())
    })
    .await;
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thirty_second_postgres_outage_pauses_the_projector_which_then_resumes_and_loses_nothing()
{
    let env = TestEnv::new(3).await;
    let (proxy, proxied_url) = Proxy::for_url(&env.db.url).await;
    let pool = db::connect(&proxied_url, 5, Duration::from_secs(3))
        .await
        .unwrap();
    let worker = env.start_worker(small_recommender());
    let (projector, logs) = start_logged_projector(&env, pool, env.codec.clone());

    let mut jobs = submit(&env, &users(0, 20)).await;
    all_done(&env, &jobs, Duration::from_secs(60)).await;

    proxy.cut();
    let cut_at = Instant::now();
    let during = submit(&env, &users(20, 20)).await;
    jobs.extend(&during);
    // The outage lasts 30 s whatever happens; meanwhile nothing may reach the table.
    while cut_at.elapsed() < Duration::from_secs(30) {
        assert!(
            projector.is_running(),
            "the projector exited during the outage"
        );
        assert_eq!(
            done_count(&env, &during).await,
            0,
            "rows written while cut off"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    proxy.restore();
    let resumed = all_done(&env, &jobs, Duration::from_secs(60)).await;
    eprintln!("Postgres outage: 30 s cut, every job done {resumed:?} after restore");

    let after = submit(&env, &users(40, 10)).await;
    jobs.extend(&after);
    all_done(&env, &jobs, Duration::from_secs(60)).await;
    worker.stop().await;
    projector.stop().await;

    let down = logs.lines_containing(&["dependency unavailable", "Postgres"]);
    let up = logs.lines_containing(&["dependency available again", "Postgres"]);
    assert_eq!(down.len(), 1, "outage logged once: {down:#?}");
    assert_eq!(up.len(), 1, "recovery logged once: {up:#?}");
    let report = env.verify().await;
    assert!(report.is_consistent(), "{report}");
}

/// Watches for `window`: no row of `jobs` may appear and every role keeps running.
async fn no_rows_for(env: &TestEnv, jobs: &[JobId], roles: &[&Running], window: Duration) {
    let since = Instant::now();
    while since.elapsed() < window {
        assert!(roles.iter().all(|r| r.is_running()), "a role exited");
        let rows = db::jobs::status_counts_of(&env.db.pool, jobs)
            .await
            .unwrap();
        assert!(rows.is_empty(), "rows appeared while cut off: {rows:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_schema_registry_outage_pauses_worker_and_projector_and_dead_letters_nothing() {
    let env = TestEnv::new(2).await;
    // One proxy per role, so the projector can still be cut off once the worker has resumed.
    let (worker_proxy, worker_url) = Proxy::for_url(&env.registry_url).await;
    let (projector_proxy, projector_url) = Proxy::for_url(&env.registry_url).await;
    worker_proxy.cut();
    projector_proxy.cut();
    // Fresh codecs: nothing cached, so every schema lookup needs the registry.
    let (worker, worker_logs) = start_logged_worker(&env, Codec::new(&worker_url));
    let (projector, logs) =
        start_logged_projector(&env, env.db.pool.clone(), Codec::new(&projector_url));

    let jobs = submit(&env, &users(0, 15)).await;
    no_rows_for(&env, &jobs, &[&worker, &projector], Duration::from_secs(15)).await;
    // The worker resumes and emits events; the projector, still cut off, must wait.
    worker_proxy.restore();
    no_rows_for(&env, &jobs, &[&worker, &projector], Duration::from_secs(10)).await;
    projector_proxy.restore();
    let resumed = all_done(&env, &jobs, Duration::from_secs(60)).await;
    eprintln!(
        "registry outage: worker cut 15 s, projector 25 s; all done {resumed:?} after restore"
    );
    worker.stop().await;
    projector.stop().await;

    // A dead-lettered request never becomes a row, so all done means none was dead-lettered.
    for (role, logs) in [("worker", &worker_logs), ("projector", &logs)] {
        assert!(
            logs.lines_containing(&["dead-lettering"]).is_empty(),
            "the {role} dead-lettered during a registry outage"
        );
        // Many records wait out the same outage: it is logged once, not per message.
        let down = logs.lines_containing(&["dependency unavailable", "schema registry"]);
        let up = logs.lines_containing(&["dependency available again", "schema registry"]);
        assert_eq!(down.len(), 1, "{role} logged the outage once: {down:#?}");
        assert_eq!(up.len(), 1, "{role} logged the recovery once: {up:#?}");
    }
    let report = env.verify().await;
    assert!(report.is_consistent(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_broker_pauses_the_pipeline_which_resumes_after_sigcont_and_loses_nothing() {
    let broker = LocalBroker::start(Kind::Tansu).await.unwrap();
    let env = TestEnv::with_brokers(broker.brokers(), 3).await;
    let worker = env.start_worker(small_recommender());
    let projector = env.start_projector();

    let mut jobs = submit(&env, &users(0, 10)).await;
    eventually("the pipeline to run", Duration::from_secs(60), || async {
        (done_count(&env, &jobs).await > 0).then_some(())
    })
    .await;
    jobs.extend(submit(&env, &users(10, 30)).await);
    // Paused at once, with the worker and projector in the middle of these jobs.
    broker.pause().unwrap();
    let done_at_pause = done_count(&env, &jobs).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(done_count(&env, &jobs).await, done_at_pause);
    broker.resume().unwrap();
    eprintln!(
        "broker SIGSTOP: {done_at_pause} of {} jobs done when paused",
        jobs.len()
    );
    assert!(worker.is_running() && projector.is_running());
    let resumed = all_done(&env, &jobs, Duration::from_secs(240)).await;
    eprintln!("broker SIGSTOP 20 s: every job done {resumed:?} after SIGCONT");

    let after = submit(&env, &users(40, 10)).await;
    jobs.extend(&after);
    all_done(&env, &jobs, Duration::from_secs(60)).await;
    worker.stop().await;
    projector.stop().await;
    let report = env.verify().await;
    assert!(report.is_consistent(), "{report}");
    drop(broker);
}

/// Needs nisshi, the persistent broker (`BROKER=nisshi deploy/local/broker.sh install`);
/// fails rather than skips without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_persistent_broker_loses_no_request_and_verify_passes() {
    let mut broker = LocalBroker::start(Kind::Nisshi).await.unwrap();
    let env = TestEnv::with_brokers(broker.brokers(), 3).await;
    let worker = env.start_worker(small_recommender());
    let projector = env.start_projector();

    let mut jobs = submit(&env, &users(0, 30)).await;
    eventually("some jobs to be done", Duration::from_secs(60), || async {
        (done_count(&env, &jobs).await > 0).then_some(())
    })
    .await;

    let restarted_at = Instant::now();
    broker.restart().await.unwrap();
    eprintln!("nisshi restarted in {:?}", restarted_at.elapsed());
    let after = submit(&env, &users(30, 20)).await;
    jobs.extend(&after);
    let resumed = all_done(&env, &jobs, Duration::from_secs(240)).await;
    eprintln!("broker restart: every job done {resumed:?} after it listened again");
    assert!(worker.is_running() && projector.is_running());
    worker.stop().await;
    projector.stop().await;
    let report = env.verify().await;
    assert!(report.is_consistent(), "{report}");
}

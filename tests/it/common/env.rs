//! A per-test environment: its own database, schema registry, topics and groups, on the
//! shared local broker (`RECQ_TEST_BROKERS`, started by `make test`).

use std::sync::Arc;
use std::time::Duration;

use recq::kafka::codec::Codec;
use recq::kafka::producer::{Outgoing, Producer};
use recq::kafka::{KafkaSettings, Topics};
use recq::projector::{self, ProjectorConfig};
use recq::recommend::{Ratings, Recommend, Recommender};
use recq::worker::{self, WorkerConfig, WorkerDeps};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{TestDb, random_suffix};

pub fn brokers() -> String {
    std::env::var("RECQ_TEST_BROKERS").expect(
        "RECQ_TEST_BROKERS is not set: run the tests with `make test`, which starts the local broker",
    )
}

pub struct TestEnv {
    pub db: TestDb,
    pub kafka: KafkaSettings,
    pub topics: Topics,
    pub codec: Codec,
    pub producer: Producer,
    pub suffix: String,
    /// The in-process schema registry of this test.
    pub registry_url: String,
    registry: CancellationToken,
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.registry.cancel();
    }
}

/// A role running in the test, stopped by cancelling its token.
pub struct Running {
    pub cancel: CancellationToken,
    handle: JoinHandle<Result<(), String>>,
}

impl Running {
    /// Runs `role` (which must stop when `cancel` fires) as a task.
    pub fn spawn<F>(cancel: CancellationToken, role: F) -> Running
    where
        F: Future<Output = Result<(), String>> + Send + 'static,
    {
        Running {
            cancel,
            handle: tokio::spawn(role),
        }
    }

    /// False once the role returned (or panicked) on its own.
    pub fn is_running(&self) -> bool {
        !self.handle.is_finished()
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        let result = tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("role did not stop within 30 s of cancellation")
            .expect("role task panicked");
        result.expect("role returned an error");
    }

    /// Stops the role the way SIGKILL would: no draining, no final commit. Its task is
    /// dropped wherever it was; what it had not stored or committed is redelivered.
    pub async fn kill(self) {
        self.handle.abort();
        let _ = self.handle.await;
    }
}

impl TestEnv {
    pub async fn new(partitions: i32) -> TestEnv {
        TestEnv::with_brokers(brokers(), partitions).await
    }

    /// Like `new`, on the broker(s) at `brokers` (a private broker for tests that stop it).
    pub async fn with_brokers(brokers: String, partitions: i32) -> TestEnv {
        let db = TestDb::new().await;
        let registry = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let registry_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(recq::registry::serve(
            db.pool.clone(),
            listener,
            registry.clone(),
        ));
        let suffix = random_suffix();
        let kafka = KafkaSettings {
            brokers,
            properties: Vec::new(),
            timeout: Duration::from_secs(10),
        };
        let topics = Topics::with_prefix(&format!("t-{suffix}."));
        recq::kafka::admin::ensure_topics(&kafka, &topics, partitions)
            .await
            .expect("create topics on the test broker");
        let codec = Codec::new(&registry_url);
        codec.register_all(&topics).await.expect("register schemas");
        let producer = Producer::new(&kafka).unwrap();
        TestEnv {
            db,
            kafka,
            topics,
            codec,
            producer,
            suffix,
            registry_url,
            registry,
        }
    }

    pub fn worker_config(&self) -> WorkerConfig {
        WorkerConfig {
            group: format!("worker-{}", self.suffix),
            concurrency: 8,
            top_n: 10,
            drain_timeout: Duration::from_secs(10),
            max_message_bytes: 1024 * 1024,
        }
    }

    pub fn projector_config(&self) -> ProjectorConfig {
        ProjectorConfig {
            group: format!("projector-{}", self.suffix),
            batch_size: 500,
            flush_interval: Duration::from_millis(50),
        }
    }

    pub fn start_worker(&self, recommender: Arc<dyn Recommend>) -> Running {
        self.start_worker_with(recommender, self.codec.clone())
    }

    /// What a worker of this environment needs, decoding and encoding with `codec`.
    pub fn worker_deps(&self, recommender: Arc<dyn Recommend>, codec: Codec) -> WorkerDeps {
        WorkerDeps {
            topics: self.topics.clone(),
            codec,
            producer: self.producer.clone(),
            recommender,
            projection: Some(self.db.pool.clone()),
        }
    }

    /// A worker decoding and encoding with `codec` (e.g. a registry behind a proxy).
    pub fn start_worker_with(&self, recommender: Arc<dyn Recommend>, codec: Codec) -> Running {
        self.start_worker_using(self.worker_config(), recommender, codec)
    }

    /// A worker with its own `config` (concurrency, size limit, ...).
    pub fn start_worker_using(
        &self,
        config: WorkerConfig,
        recommender: Arc<dyn Recommend>,
        codec: Codec,
    ) -> Running {
        self.start_worker_on(self.kafka.clone(), config, recommender, codec)
    }

    /// A worker with its own Kafka client settings (e.g. a short max.poll.interval.ms).
    pub fn start_worker_on(
        &self,
        kafka: KafkaSettings,
        config: WorkerConfig,
        recommender: Arc<dyn Recommend>,
        codec: Codec,
    ) -> Running {
        let cancel = CancellationToken::new();
        let deps = self.worker_deps(recommender, codec);
        let handle = tokio::spawn({
            let cancel = cancel.clone();
            async move {
                worker::run(config, kafka, deps, cancel)
                    .await
                    .map_err(|e| e.to_string())
            }
        });
        Running { cancel, handle }
    }

    pub fn start_projector(&self) -> Running {
        self.start_projector_with(self.db.pool.clone(), self.codec.clone())
    }

    /// A projector writing through `pool` and decoding with `codec` (e.g. through a proxy).
    pub fn start_projector_with(&self, pool: sqlx::PgPool, codec: Codec) -> Running {
        let cancel = CancellationToken::new();
        let handle = tokio::spawn({
            let config = self.projector_config();
            let (kafka, topics) = (self.kafka.clone(), self.topics.clone());
            let producer = self.producer.clone();
            let cancel = cancel.clone();
            async move {
                projector::run(config, kafka, topics, pool, codec, producer, cancel)
                    .await
                    .map_err(|e| e.to_string())
            }
        });
        Running { cancel, handle }
    }

    /// Produces raw bytes to `topic` with `key` and waits for the ack.
    pub async fn produce_raw(&self, topic: &str, key: &[u8], value: Option<&[u8]>) -> (i32, i64) {
        self.producer
            .send(Outgoing {
                topic,
                key,
                value,
                headers: Vec::new(),
            })
            .await
            .expect("produce to the test broker")
    }

    /// Produces a status event (key = job id) and returns its offset.
    pub async fn emit(&self, event: &recq::domain::JobStatusChanged) -> i64 {
        let value = self
            .codec
            .encode_status(&self.topics.jobs, event)
            .await
            .unwrap();
        self.produce_raw(
            &self.topics.jobs,
            event.job_id.to_string().as_bytes(),
            Some(&value),
        )
        .await
        .1
    }

    /// Waits until the projector stored a position past `offset` in some jobs partition.
    pub async fn applied_through(&self, offset: i64) {
        eventually(
            "the projector to reach the offset",
            Duration::from_secs(60),
            || async {
                let mut conn = self.db.pool.acquire().await.unwrap();
                let positions = recq::db::offsets::read(&mut conn, &[&self.topics.jobs])
                    .await
                    .unwrap();
                (positions.values().max().copied().unwrap_or(0) > offset).then_some(())
            },
        )
        .await;
    }

    /// Rows in `recommendation_queues`.
    pub async fn row_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM recommendation_queues")
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    pub async fn verify(&self) -> recq::verify::VerifyReport {
        recq::verify::verify(
            &self.kafka,
            &self.topics,
            &self.codec,
            &self.db.pool,
            Duration::from_secs(20),
        )
        .await
        .expect("verify ran")
    }
}

/// A small generated ratings set: tests must not depend on the real data.
pub fn small_recommender() -> Arc<Recommender> {
    Arc::new(Recommender::build(&Ratings::generated(60, 120, 25, 7)))
}

/// Polls `check` every 100 ms until it returns Some, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

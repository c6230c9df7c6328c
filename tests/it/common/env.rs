//! A per-test environment: its own database, schema registry, topics and groups, on the
//! shared local broker (`RECQ_TEST_BROKERS`, started by `make test`).

use std::sync::Arc;
use std::time::Duration;

use recq::kafka::codec::Codec;
use recq::kafka::producer::{Outgoing, Producer};
use recq::kafka::{KafkaSettings, Topics};
use recq::projector::{self, ProjectorConfig};
use recq::recommend::{Ratings, Recommender};
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
    pub async fn stop(self) {
        self.cancel.cancel();
        let result = tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("role did not stop within 30 s of cancellation")
            .expect("role task panicked");
        result.expect("role returned an error");
    }
}

impl TestEnv {
    pub async fn new(partitions: i32) -> TestEnv {
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
            brokers: brokers(),
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
            registry,
        }
    }

    pub fn worker_config(&self) -> WorkerConfig {
        WorkerConfig {
            group: format!("worker-{}", self.suffix),
            concurrency: 8,
            top_n: 10,
            drain_timeout: Duration::from_secs(10),
        }
    }

    pub fn projector_config(&self) -> ProjectorConfig {
        ProjectorConfig {
            group: format!("projector-{}", self.suffix),
            batch_size: 500,
            flush_interval: Duration::from_millis(50),
        }
    }

    pub fn start_worker(&self, recommender: Arc<Recommender>) -> Running {
        let cancel = CancellationToken::new();
        let deps = WorkerDeps {
            topics: self.topics.clone(),
            codec: self.codec.clone(),
            producer: self.producer.clone(),
            recommender,
        };
        let handle = tokio::spawn({
            let (config, kafka, cancel) =
                (self.worker_config(), self.kafka.clone(), cancel.clone());
            async move {
                worker::run(config, kafka, deps, cancel)
                    .await
                    .map_err(|e| e.to_string())
            }
        });
        Running { cancel, handle }
    }

    pub fn start_projector(&self) -> Running {
        let cancel = CancellationToken::new();
        let handle = tokio::spawn({
            let config = self.projector_config();
            let (kafka, topics) = (self.kafka.clone(), self.topics.clone());
            let (pool, codec, producer) = (
                self.db.pool.clone(),
                self.codec.clone(),
                self.producer.clone(),
            );
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

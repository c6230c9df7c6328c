//! Poison inputs: every kind ends in a dead-letter topic (or a `failed` job when the job id is
//! known) while the next good message on the same partition is processed. Payloads are built
//! by hand, byte by byte, on one-partition topics so "next" is well defined.

mod jobs;
mod requests;
mod tools;

use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use recq::db;
use recq::domain::events::now;
use recq::domain::{JobId, JobRow, JobStatus, RecommendationRequested, UserId};
use recq::kafka::dlq::{self, DeadLetter};
use recq::worker::WorkerConfig;

use crate::common::env::{Running, TestEnv, eventually, small_recommender};

/// A worker with `config` (e.g. a small size limit) on the generated ratings.
pub fn start_worker_with(env: &TestEnv, config: WorkerConfig) -> Running {
    env.start_worker_using(config, small_recommender(), env.codec.clone())
}

/// Produces to `topic`; unlike `TestEnv::produce_raw` the key may be absent (null).
pub async fn produce(env: &TestEnv, topic: &str, key: Option<&[u8]>, value: Option<&[u8]>) -> i64 {
    let producer: FutureProducer = env.kafka.client_config().create().unwrap();
    let mut record = FutureRecord::<[u8], [u8]>::to(topic);
    if let Some(key) = key {
        record = record.key(key);
    }
    if let Some(value) = value {
        record = record.payload(value);
    }
    let delivery = producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    delivery.offset
}

/// The registry id of recq's request schema, as the codec frames it.
pub async fn request_schema_id(env: &TestEnv) -> [u8; 4] {
    let request = RecommendationRequested {
        job_id: JobId::new_random(),
        user_id: UserId::new(1).unwrap(),
        requested_at: now(),
    };
    let bytes = env
        .codec
        .encode_request(&env.topics.requests, &request)
        .await
        .unwrap();
    [bytes[1], bytes[2], bytes[3], bytes[4]]
}

/// Registers `schema` under `subject` in the test's registry and returns its id.
pub async fn register(env: &TestEnv, subject: &str, schema: &str) -> Result<u32, u16> {
    let response = reqwest::Client::new()
        .post(format!("{}/subjects/{subject}/versions", env.registry_url))
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .json(&serde_json::json!({ "schema": schema }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    if !status.is_success() {
        return Err(status.as_u16());
    }
    let body: serde_json::Value = response.json().await.unwrap();
    Ok(u32::try_from(body["id"].as_u64().unwrap()).unwrap())
}

/// Confluent framing: magic byte 0, big-endian schema id, Avro body.
pub fn framed(schema_id: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0];
    bytes.extend_from_slice(&schema_id);
    bytes.extend_from_slice(body);
    bytes
}

/// Avro `long`/`int`: zigzag, then little-endian base-128 varint.
pub fn avro_long(n: i64) -> Vec<u8> {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    let mut out = Vec::new();
    loop {
        let byte = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// Avro `string`: length, then the bytes (which we do not check to be UTF-8).
pub fn avro_string(bytes: &[u8]) -> Vec<u8> {
    let mut out = avro_long(bytes.len() as i64);
    out.extend_from_slice(bytes);
    out
}

/// A RecommendationRequested body with any job id bytes and any user id.
pub fn request_body(job_id: &[u8], user_id: i64) -> Vec<u8> {
    let mut body = avro_string(job_id);
    body.extend(avro_long(user_id));
    body.extend(avro_long(now().timestamp_micros()));
    body
}

/// Submits a good request for user 7 and waits for its job to be done.
pub async fn good_request_is_done(env: &TestEnv) -> JobRow {
    let user = UserId::new(7).unwrap();
    let job = recq::app::tools::submit(&env.codec, &env.producer, &env.topics, &[user])
        .await
        .unwrap()[0];
    job_reaches(env, job, JobStatus::Done).await
}

/// Waits for `job`'s row to be terminal and checks it has `status`.
pub async fn job_reaches(env: &TestEnv, job: JobId, status: JobStatus) -> JobRow {
    let row = eventually("the job to finish", Duration::from_secs(60), || async {
        db::jobs::job(&env.db.pool, job)
            .await
            .unwrap()
            .filter(|r| r.status.is_terminal())
    })
    .await;
    assert_eq!(row.status, status, "{row:?}");
    row
}

/// Waits for the dead letter of the record at `offset` of `source` in `dlq_topic` and checks
/// the headers every dead letter carries.
pub async fn dead_letter_of(
    env: &TestEnv,
    dlq_topic: &str,
    source: &str,
    offset: i64,
) -> DeadLetter {
    let letter = eventually("the dead letter", Duration::from_secs(60), || async {
        dlq::read_all(&env.kafka, dlq_topic, Duration::from_secs(1), None)
            .await
            .unwrap()
            .into_iter()
            .find(|l| {
                l.original_topic.as_deref() == Some(source) && l.original_offset == Some(offset)
            })
    })
    .await;
    assert_eq!(letter.original_partition, Some(0));
    assert!(!letter.error.is_empty(), "{letter:?}");
    let first = letter.first_failure_at.as_deref().unwrap_or_default();
    assert!(
        chrono::DateTime::parse_from_rfc3339(first).is_ok(),
        "{first:?}"
    );
    assert_eq!(letter.attempt, Some(1));
    letter
}

/// The common shape of a request-side poison test: the bad record, then a good request on
/// the same (only) partition; the good one is done and the bad one dead-lettered with
/// `reason` and its original bytes.
pub async fn poison_request_is_dead_lettered(
    key: Option<&[u8]>,
    value: Option<Vec<u8>>,
    reason: &str,
) -> DeadLetter {
    let env = TestEnv::new(1).await;
    poison_request_in(&env, env.worker_config(), key, value, reason).await
}

pub async fn poison_request_in(
    env: &TestEnv,
    config: WorkerConfig,
    key: Option<&[u8]>,
    value: Option<Vec<u8>>,
    reason: &str,
) -> DeadLetter {
    let worker = start_worker_with(env, config);
    let projector = env.start_projector();
    let offset = produce(env, &env.topics.requests, key, value.as_deref()).await;
    good_request_is_done(env).await;
    let letter = dead_letter_of(env, &env.topics.requests_dlq, &env.topics.requests, offset).await;
    assert_eq!(letter.reason, reason, "{letter:?}");
    assert_eq!(
        letter.value.as_deref().unwrap_or_default(),
        value.as_deref().unwrap_or_default()
    );
    assert_eq!(
        letter.key.as_deref().unwrap_or_default(),
        key.unwrap_or_default()
    );
    worker.stop().await;
    projector.stop().await;
    letter
}

//! `recq registry` against real Postgres, over HTTP, the way Confluent clients talk to it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use apache_avro::types::Value;
use reqwest::StatusCode;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};
use serde_json::{Value as Json, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::common::TestDb;

const MOVIE_V1: &str = r#"{"type":"record","name":"Movie","namespace":"recq.test","fields":[
    {"name":"movie_id","type":"int"},{"name":"title","type":"string"}]}"#;
const MOVIE_V2_WITH_DEFAULT: &str = r#"{"type":"record","name":"Movie","namespace":"recq.test","fields":[
    {"name":"movie_id","type":"int"},{"name":"title","type":"string"},
    {"name":"year","type":"int","default":0}]}"#;
const MOVIE_V2_WITHOUT_DEFAULT: &str = r#"{"type":"record","name":"Movie","namespace":"recq.test","fields":[
    {"name":"movie_id","type":"int"},{"name":"title","type":"string"},{"name":"year","type":"int"}]}"#;

/// A registry served in-process on a random port, on its own database; stopped on drop.
struct Registry {
    url: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
    server: Option<JoinHandle<std::io::Result<()>>>,
    _db: TestDb,
}

impl Registry {
    async fn start() -> Result<Registry> {
        let db = TestDb::new().await;
        // More connections than the concurrency test has tasks, so they really overlap.
        let pool = recq::db::connect(&db.url, 12, Duration::from_secs(10)).await?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(recq::registry::serve(pool, listener, shutdown.clone()));
        Ok(Registry {
            url,
            http: reqwest::Client::new(),
            shutdown,
            server: Some(server),
            _db: db,
        })
    }

    /// Sends a request and returns the status and the JSON body, checking the media type.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<(StatusCode, Json)> {
        let response = request.send().await?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        ensure!(
            content_type == "application/vnd.schemaregistry.v1+json",
            "unexpected content type {content_type:?}"
        );
        let body = response.json::<Json>().await?;
        Ok((status, body))
    }

    async fn get(&self, path: &str) -> Result<(StatusCode, Json)> {
        self.send(self.http.get(format!("{}{path}", self.url)))
            .await
    }

    async fn post(&self, path: &str, body: &Json) -> Result<(StatusCode, Json)> {
        let request = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/vnd.schemaregistry.v1+json")
            .body(serde_json::to_vec(body)?);
        self.send(request).await
    }

    async fn register(&self, subject: &str, schema: &str) -> Result<(StatusCode, Json)> {
        self.post(
            &format!("/subjects/{subject}/versions"),
            &json!({ "schema": schema }),
        )
        .await
    }

    /// Registers a schema that must be accepted, returning its id.
    async fn register_ok(&self, subject: &str, schema: &str) -> Result<i64> {
        let (status, body) = self.register(subject, schema).await?;
        ensure!(status == StatusCode::OK, "register failed: {status} {body}");
        body["id"].as_i64().context("no id in the response")
    }

    /// Stops the server and checks it shut down cleanly.
    async fn stop(mut self) -> Result<()> {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(10), server).await???;
        }
        Ok(())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn error_code(body: &Json) -> Option<i64> {
    body["error_code"].as_i64()
}

#[tokio::test]
async fn schema_registry_converter_round_trips_a_record_through_the_registry() -> Result<()> {
    let registry = Registry::start().await?;
    // A '/' in the topic exercises the %2F escaping the converter does in subject paths.
    let topic = "recq/movies";
    let settings = SrSettings::new(registry.url.clone());
    let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema(
        topic.to_owned(),
        false,
        SuppliedSchema::new(
            Some("recq.test.Movie".to_owned()),
            SchemaType::Avro,
            MOVIE_V1.to_owned(),
        ),
    );
    let record = vec![
        ("movie_id", Value::Int(1)),
        ("title", Value::String("Toy Story (1995)".to_owned())),
    ];
    let bytes = AvroEncoder::new(settings.clone())
        .encode(record.clone(), strategy)
        .await?;

    let (status, latest) = registry
        .get("/subjects/recq%2Fmovies-value/versions/latest")
        .await?;
    assert_eq!(status, StatusCode::OK, "{latest}");
    assert_eq!(latest["subject"], "recq/movies-value");
    assert_eq!(latest["version"], 1);
    let id = latest["id"].as_i64().context("no id")?;
    ensure!(bytes.len() > 5, "message too short: {bytes:?}");
    assert_eq!(bytes[0], 0, "magic byte");
    assert_eq!(
        i64::from(u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]])),
        id
    );

    let decoded = AvroDecoder::new(settings).decode(Some(&bytes)).await?;
    let expected = Value::Record(
        record
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect(),
    );
    assert_eq!(decoded.value, expected);
    assert_eq!(
        registry.get("/subjects").await?.1,
        json!(["recq/movies-value"])
    );
    registry.stop().await
}

#[tokio::test]
async fn re_registering_a_schema_returns_the_same_id_and_no_new_version() -> Result<()> {
    let registry = Registry::start().await?;
    let first = registry.register_ok("movies-value", MOVIE_V1).await?;
    // Same schema, different whitespace and attribute order: still the same schema.
    let reformatted = r#"{ "namespace": "recq.test", "name": "Movie", "type": "record",
        "fields": [ {"type": "int", "name": "movie_id"}, {"type": "string", "name": "title"} ] }"#;
    assert_eq!(
        registry.register_ok("movies-value", reformatted).await?,
        first
    );
    assert_eq!(registry.register_ok("movies-value", MOVIE_V1).await?, first);
    assert_eq!(
        registry.get("/subjects/movies-value/versions").await?,
        (StatusCode::OK, json!([1]))
    );

    let (status, found) = registry
        .post("/subjects/movies-value", &json!({ "schema": reformatted }))
        .await?;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(
        (found["id"].as_i64(), found["version"].as_i64()),
        (Some(first), Some(1))
    );
    registry.stop().await
}

#[tokio::test]
async fn the_same_schema_under_two_subjects_has_one_global_id() -> Result<()> {
    let registry = Registry::start().await?;
    let a = registry.register_ok("movies-value", MOVIE_V1).await?;
    let b = registry.register_ok("films-value", MOVIE_V1).await?;
    assert_eq!(a, b);
    assert_eq!(
        registry.get("/subjects").await?.1,
        json!(["films-value", "movies-value"])
    );
    let (status, by_id) = registry
        .get(&format!("/schemas/ids/{a}?deleted=true"))
        .await?;
    assert_eq!(status, StatusCode::OK);
    ensure!(
        by_id.get("schemaType").is_none(),
        "AVRO has no schemaType: {by_id}"
    );
    let text = by_id["schema"].as_str().context("no schema")?;
    assert_eq!(
        apache_avro::Schema::parse_str(text)?,
        apache_avro::Schema::parse_str(MOVIE_V1)?
    );
    registry.stop().await
}

#[tokio::test]
async fn an_incompatible_change_is_refused_and_a_compatible_one_becomes_version_2() -> Result<()> {
    let registry = Registry::start().await?;
    let v1 = registry.register_ok("movies-value", MOVIE_V1).await?;

    let (status, body) = registry
        .post(
            "/compatibility/subjects/movies-value/versions/latest",
            &json!({ "schema": MOVIE_V2_WITHOUT_DEFAULT }),
        )
        .await?;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({ "is_compatible": false }))
    );
    let (status, body) = registry
        .register("movies-value", MOVIE_V2_WITHOUT_DEFAULT)
        .await?;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(error_code(&body), Some(409));

    let (status, body) = registry
        .post(
            "/compatibility/subjects/movies-value/versions/1",
            &json!({ "schema": MOVIE_V2_WITH_DEFAULT }),
        )
        .await?;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({ "is_compatible": true }))
    );
    let v2 = registry
        .register_ok("movies-value", MOVIE_V2_WITH_DEFAULT)
        .await?;
    assert_ne!(v1, v2);
    assert_eq!(
        registry.get("/subjects/movies-value/versions").await?.1,
        json!([1, 2])
    );
    let (status, latest) = registry
        .get("/subjects/movies-value/versions/latest")
        .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (latest["version"].as_i64(), latest["id"].as_i64()),
        (Some(2), Some(v2))
    );
    assert_eq!(
        registry.get("/config").await?.1,
        json!({ "compatibilityLevel": "BACKWARD" })
    );
    registry.stop().await
}

#[tokio::test]
async fn unknown_ids_subjects_versions_and_invalid_schemas_get_confluent_error_codes() -> Result<()>
{
    let registry = Registry::start().await?;
    registry.register_ok("movies-value", MOVIE_V1).await?;

    let cases = [
        (
            registry.get("/schemas/ids/999999").await?,
            StatusCode::NOT_FOUND,
            40403,
        ),
        (
            registry.get("/subjects/nope/versions").await?,
            StatusCode::NOT_FOUND,
            40401,
        ),
        (
            registry.get("/subjects/nope/versions/latest").await?,
            StatusCode::NOT_FOUND,
            40401,
        ),
        (
            registry.get("/subjects/movies-value/versions/7").await?,
            StatusCode::NOT_FOUND,
            40402,
        ),
        (
            registry.get("/subjects/movies-value/versions/0").await?,
            StatusCode::UNPROCESSABLE_ENTITY,
            42202,
        ),
        (
            registry
                .register("movies-value", r#"{"type":"record"}"#)
                .await?,
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
        ),
        (
            registry.register("movies-value", "{not json").await?,
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
        ),
        (
            registry
                .post("/subjects/nope", &json!({ "schema": MOVIE_V1 }))
                .await?,
            StatusCode::NOT_FOUND,
            40401,
        ),
        (
            registry
                .post(
                    "/subjects/movies-value",
                    &json!({ "schema": MOVIE_V2_WITH_DEFAULT }),
                )
                .await?,
            StatusCode::NOT_FOUND,
            40403,
        ),
        (
            registry
                .post(
                    "/subjects/movies-value/versions",
                    &json!({ "schema": {"type": "int"} }),
                )
                .await?,
            StatusCode::BAD_REQUEST,
            400,
        ),
    ];
    for (i, ((status, body), want_status, want_code)) in cases.into_iter().enumerate() {
        assert_eq!(status, want_status, "case {i}: {body}");
        assert_eq!(error_code(&body), Some(want_code), "case {i}: {body}");
        ensure!(
            body["message"].is_string(),
            "case {i}: no message in {body}"
        );
    }

    let malformed = registry
        .http
        .post(format!("{}/subjects/movies-value/versions", registry.url))
        .header("content-type", "application/json")
        .body("{\"schema\": ");
    let (status, body) = registry.send(malformed).await?;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, Some(400))
    );
    let form = registry
        .http
        .post(format!("{}/subjects/movies-value/versions", registry.url))
        .header("content-type", "text/plain")
        .body("{}");
    let (status, body) = registry.send(form).await?;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, Some(415))
    );
    let (status, body) = registry.get("/no/such/endpoint").await?;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, Some(404))
    );
    registry.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_registrations_of_one_new_schema_get_one_id() -> Result<()> {
    let registry = Arc::new(Registry::start().await?);
    let tasks = 8;
    let start = Arc::new(tokio::sync::Barrier::new(tasks));
    let mut handles = Vec::new();
    for i in 0..tasks {
        let registry = Arc::clone(&registry);
        let start = Arc::clone(&start);
        // Half the tasks race within one subject, half across two subjects.
        let subject = ["movies-value", "films-value", "movies-value", "shows-value"][i % 4];
        handles.push(tokio::spawn(async move {
            start.wait().await;
            registry.register_ok(subject, MOVIE_V1).await
        }));
    }
    let mut ids = Vec::new();
    for handle in handles {
        ids.push(handle.await??);
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 1, "ids: {ids:?}");
    for subject in ["movies-value", "films-value", "shows-value"] {
        assert_eq!(
            registry
                .get(&format!("/subjects/{subject}/versions"))
                .await?
                .1,
            json!([1]),
            "{subject}"
        );
    }
    let registry = Arc::try_unwrap(registry)
        .map_err(|_| anyhow::anyhow!("a task still holds the registry"))?;
    registry.stop().await
}

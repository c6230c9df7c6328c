//! Security basics that need a server: Postgres over TLS when the URL asks for it, and the
//! HTTP endpoint (the schema registry) treating hostile input as data.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::common::TestDb;
use crate::common::env::TestEnv;

#[tokio::test]
async fn postgres_connections_use_tls_when_the_url_asks_for_it() {
    let db = TestDb::new().await;
    let separator = if db.url.contains('?') { '&' } else { '?' };
    let url = format!("{}{separator}sslmode=require", db.url);
    let pool = recq::db::connect(&url, 1, Duration::from_secs(5))
        .await
        .expect("the machine's Postgres has ssl = on; recq must be able to use it");
    let tls: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(tls, "sslmode=require connected without TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_stores_hostile_subject_names_literally_and_refuses_huge_bodies() {
    let env = TestEnv::new(1).await;
    let client = reqwest::Client::new();
    let subject = "x'); DROP TABLE registry_schemas; --";
    let path = format!(
        "{}/subjects/{}/versions",
        env.registry_url,
        subject
            .replace('/', "%2F")
            .replace(' ', "%20")
            .replace('\'', "%27")
    );
    let schema = r#"{"type":"record","name":"T","fields":[{"name":"a","type":"int"}]}"#;
    let response = client
        .post(&path)
        .header("content-type", "application/vnd.schemaregistry.v1+json")
        .json(&json!({ "schema": schema }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let subjects: Vec<String> = client
        .get(format!("{}/subjects", env.registry_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(subjects.iter().any(|s| s == subject), "{subjects:?}");

    let huge = "x".repeat(8 * 1024 * 1024);
    let sent = client
        .post(&path)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await;
    match sent {
        Ok(response) => assert!(
            response.status().is_client_error(),
            "an 8 MiB body got {}",
            response.status()
        ),
        // The server may answer 413 and close the connection before the client finished
        // writing the body; the client then sees a broken pipe instead of the answer.
        Err(e) => assert!(e.is_request() || e.is_body(), "an 8 MiB body: {e:?}"),
    }
    let after = client
        .get(format!("{}/subjects", env.registry_url))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::OK, "the registry still serves");
}

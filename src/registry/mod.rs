//! `recq registry`: a small Confluent-compatible schema registry backed by Postgres, for local
//! runs and tests (production points at a real Confluent, Redpanda or Karapace registry).
//!
//! Invariant: on the endpoints it implements it answers like Confluent's registry — one global
//! id per distinct schema, re-registering returns the same id without a new version, a new version
//! must be BACKWARD compatible with the subject's latest, and failures carry Confluent's HTTP
//! status and error code. The Postgres store (`crate::db::registry`) makes this hold under
//! concurrent registrations.

mod avro;
mod error;
mod request;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::db::registry::{self as store, Registration, SubjectVersion, VersionSelector};
pub use error::{CONTENT_TYPE, RegistryError};
use request::{Params, SchemaRequest, parse_schema_id, parse_version};

/// The only compatibility level this registry enforces (Confluent's default).
pub const COMPATIBILITY_LEVEL: &str = "BACKWARD";

type Reply = Result<Response, RegistryError>;

/// The registry's HTTP routes over `pool` (migrated with recq's migrations).
pub fn router(pool: PgPool) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/config", get(config))
        .route("/schemas/types", get(schema_types))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/subjects", get(subjects_of_schema))
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}", post(lookup))
        .route(
            "/subjects/{subject}/versions",
            get(list_versions).post(register),
        )
        .route("/subjects/{subject}/versions/{version}", get(get_version))
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(get_version_schema),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(check_against_latest),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(check_against_version),
        )
        .fallback(no_such_endpoint)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(trace_request))
        .with_state(pool)
}

/// One span per request around routing, the handler and the error conversion, so an error is
/// logged inside the span of the request that caused it.
async fn trace_request(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let span = tracing::info_span!(
        "registry.request",
        method = %request.method(),
        path = %request.uri().path(),
    );
    let response = next.run(request).instrument(span.clone()).await;
    span.in_scope(|| tracing::debug!(status = response.status().as_u16(), "registry request done"));
    response
}

/// Serves the registry on `listener` until `shutdown` is cancelled, then finishes the requests
/// in flight.
pub async fn serve(
    pool: PgPool,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "schema registry listening");
    axum::serve(listener, router(pool))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    tracing::info!(%addr, "schema registry stopped");
    Ok(())
}

fn ok<T: serde::Serialize>(body: &T) -> Reply {
    Ok(error::json_response(StatusCode::OK, body))
}

/// `{"subject", "id", "version", "schema"}`, plus `schemaType` only when it is not AVRO, as
/// Confluent does.
fn version_body(v: &SubjectVersion) -> serde_json::Value {
    let mut body = json!({
        "subject": v.subject,
        "id": v.id,
        "version": v.version,
        "schema": v.schema,
    });
    if v.schema_type != "AVRO" {
        body["schemaType"] = json!(v.schema_type);
    }
    body
}

#[tracing::instrument(name = "registry.root", skip_all)]
async fn root() -> Reply {
    ok(&json!({}))
}

#[tracing::instrument(name = "registry.config", skip_all)]
async fn config() -> Reply {
    ok(&json!({ "compatibilityLevel": COMPATIBILITY_LEVEL }))
}

#[tracing::instrument(name = "registry.schema_types", skip_all)]
async fn schema_types() -> Reply {
    ok(&["AVRO"])
}

/// `GET /schemas/ids/{id}`; query parameters such as `?deleted=true` are accepted and ignored
/// (nothing is ever deleted here).
#[tracing::instrument(name = "registry.schema_by_id", skip_all, fields(id = %path.0))]
async fn schema_by_id(State(pool): State<PgPool>, path: Params<String>) -> Reply {
    let id = parse_schema_id(&path.0)?;
    let stored = store::schema_by_id(&pool, id)
        .await?
        .ok_or_else(|| RegistryError::SchemaIdNotFound(path.0.clone()))?;
    let mut body = json!({ "schema": stored.schema });
    if stored.schema_type != "AVRO" {
        body["schemaType"] = json!(stored.schema_type);
    }
    ok(&body)
}

#[tracing::instrument(name = "registry.subjects_of_schema", skip_all, fields(id = %path.0))]
async fn subjects_of_schema(State(pool): State<PgPool>, path: Params<String>) -> Reply {
    let id = parse_schema_id(&path.0)?;
    let subjects = store::subjects_of_schema(&pool, id).await?;
    if subjects.is_empty() {
        return Err(RegistryError::SchemaIdNotFound(path.0));
    }
    ok(&subjects)
}

#[tracing::instrument(name = "registry.subjects", skip_all)]
async fn list_subjects(State(pool): State<PgPool>) -> Reply {
    ok(&store::subjects(&pool).await?)
}

#[tracing::instrument(name = "registry.versions", skip_all, fields(subject = %path.0))]
async fn list_versions(State(pool): State<PgPool>, path: Params<String>) -> Reply {
    let versions = store::versions(&pool, &path.0).await?;
    if versions.is_empty() {
        return Err(RegistryError::SubjectNotFound(path.0));
    }
    ok(&versions)
}

/// The stored version, or the Confluent error saying which part is missing.
async fn find_version(
    pool: &PgPool,
    subject: &str,
    version: &str,
) -> Result<SubjectVersion, RegistryError> {
    let selector = parse_version(version)?;
    if let Some(found) = store::version(pool, subject, selector).await? {
        return Ok(found);
    }
    match selector {
        VersionSelector::Number(version) if !store::versions(pool, subject).await?.is_empty() => {
            Err(RegistryError::VersionNotFound {
                subject: subject.to_owned(),
                version,
            })
        }
        _ => Err(RegistryError::SubjectNotFound(subject.to_owned())),
    }
}

#[tracing::instrument(name = "registry.version", skip_all, fields(subject = %path.0.0, version = %path.0.1))]
async fn get_version(State(pool): State<PgPool>, path: Params<(String, String)>) -> Reply {
    let (subject, version) = &path.0;
    ok(&version_body(&find_version(&pool, subject, version).await?))
}

/// `GET /subjects/{subject}/versions/{version}/schema`: the schema itself, unwrapped.
#[tracing::instrument(name = "registry.version_schema", skip_all, fields(subject = %path.0.0, version = %path.0.1))]
async fn get_version_schema(State(pool): State<PgPool>, path: Params<(String, String)>) -> Reply {
    let (subject, version) = &path.0;
    let found = find_version(&pool, subject, version).await?;
    Ok((
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
        found.schema,
    )
        .into_response())
}

/// `POST /subjects/{subject}/versions` -> `{"id": N}`.
#[tracing::instrument(name = "registry.register", skip_all, fields(subject = %path.0))]
async fn register(
    State(pool): State<PgPool>,
    path: Params<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let subject = &path.0;
    let new = SchemaRequest::parse(&headers, &body)?.normalize()?;
    let outcome = store::register(&pool, subject, new.schema_type, &new.avro.text, |latest| {
        avro::check_backward_against_text(latest, &new.avro.schema)
    })
    .await?;
    match outcome {
        Registration::Existing { id, version } => {
            tracing::debug!(id, version, "schema already registered under the subject");
            ok(&json!({ "id": id }))
        }
        Registration::Created { id, version } => {
            tracing::info!(id, version, "schema registered");
            ok(&json!({ "id": id }))
        }
        Registration::Incompatible { reason } => Err(RegistryError::Incompatible {
            subject: subject.clone(),
            reason,
        }),
    }
}

/// `POST /subjects/{subject}`: is this schema registered under the subject?
#[tracing::instrument(name = "registry.lookup", skip_all, fields(subject = %path.0))]
async fn lookup(
    State(pool): State<PgPool>,
    path: Params<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let subject = &path.0;
    let request = SchemaRequest::parse(&headers, &body)?;
    if store::versions(&pool, subject).await?.is_empty() {
        return Err(RegistryError::SubjectNotFound(subject.clone()));
    }
    let new = request.normalize()?;
    let found = store::find_in_subject(&pool, subject, new.schema_type, &new.avro.text)
        .await?
        .ok_or_else(|| RegistryError::SchemaNotFound(subject.clone()))?;
    ok(&version_body(&found))
}

/// `POST /compatibility/subjects/{subject}/versions`: with BACKWARD (not transitive), checking
/// against "all versions" means checking against the latest, as Confluent does.
#[tracing::instrument(name = "registry.compatibility", skip_all, fields(subject = %path.0))]
async fn check_against_latest(
    State(pool): State<PgPool>,
    path: Params<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    check_compatibility(&pool, &path.0, "latest", query, &headers, &body).await
}

#[tracing::instrument(name = "registry.compatibility", skip_all, fields(subject = %path.0.0, version = %path.0.1))]
async fn check_against_version(
    State(pool): State<PgPool>,
    path: Params<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let (subject, version) = &path.0;
    check_compatibility(&pool, subject, version, query, &headers, &body).await
}

async fn check_compatibility(
    pool: &PgPool,
    subject: &str,
    version: &str,
    query: Option<String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Reply {
    let new = SchemaRequest::parse(headers, body)?.normalize()?;
    let selector = parse_version(version)?;
    let previous = match find_version(pool, subject, version).await {
        Ok(found) => found,
        // Confluent: nothing to be incompatible with when the subject has no versions yet.
        Err(RegistryError::SubjectNotFound(_)) if selector == VersionSelector::Latest => {
            return ok(&json!({ "is_compatible": true }));
        }
        Err(e) => return Err(e),
    };
    let verdict = avro::check_backward_against_text(&previous.schema, &new.avro.schema);
    let verbose = query
        .as_deref()
        .is_some_and(|q| q.split('&').any(|p| p.eq_ignore_ascii_case("verbose=true")));
    let mut body = json!({ "is_compatible": verdict.is_ok() });
    if verbose {
        body["messages"] = json!(verdict.err().into_iter().collect::<Vec<_>>());
    }
    ok(&body)
}

async fn no_such_endpoint() -> RegistryError {
    RegistryError::NoSuchEndpoint
}

async fn method_not_allowed() -> RegistryError {
    RegistryError::MethodNotAllowed
}

//! The registry's errors and their Confluent wire form.
//!
//! Invariant: every failure leaves the server as `{"error_code": N, "message": "..."}` with the
//! HTTP status and error code Confluent's Schema Registry uses for the same condition, so clients
//! written against Confluent (schema_registry_converter, the Java serializers) react the same way.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::db::DbError;

/// The media type Confluent answers with.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// Everything a registry request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    #[error("Version {version} not found for subject '{subject}'.")]
    VersionNotFound { subject: String, version: i32 },
    #[error("Schema {0} not found")]
    SchemaIdNotFound(String),
    #[error("Schema not found under subject '{0}'")]
    SchemaNotFound(String),
    #[error("Invalid schema: {0}")]
    InvalidSchema(String),
    #[error(
        "The specified version '{0}' is not a valid version id. Allowed values are between \
         [1, 2^31-1] and the string \"latest\""
    )]
    InvalidVersion(String),
    #[error(
        "Schema being registered is incompatible with an earlier schema for subject \
         \"{subject}\", details: [{reason}]"
    )]
    Incompatible { subject: String, reason: String },
    /// The request body is not JSON, or not the JSON this endpoint takes.
    #[error("{0}")]
    BadRequest(String),
    #[error("HTTP 415 Unsupported Media Type: {0}")]
    UnsupportedMediaType(String),
    #[error("HTTP 404 Not Found")]
    NoSuchEndpoint,
    #[error("HTTP 405 Method Not Allowed")]
    MethodNotAllowed,
    #[error("Error in the backend data store: {0}")]
    Store(#[from] DbError),
}

impl RegistryError {
    /// The HTTP status and Confluent error code.
    ///
    /// Codes from Confluent's `Errors` class (io.confluent.kafka.schemaregistry.rest.exceptions)
    /// and rest-utils: a body that is not JSON, or JSON of the wrong shape, is 400 with error code
    /// 400 (rest-utils `JsonParseExceptionMapper` / `JsonMappingExceptionMapper`). The 50005 that
    /// clients sometimes report is the Java *client's* code for an unparsable response, never
    /// sent by the server.
    pub fn status_and_code(&self) -> (StatusCode, u32) {
        match self {
            Self::SubjectNotFound(_) => (StatusCode::NOT_FOUND, 40401),
            Self::VersionNotFound { .. } => (StatusCode::NOT_FOUND, 40402),
            Self::SchemaIdNotFound(_) | Self::SchemaNotFound(_) => (StatusCode::NOT_FOUND, 40403),
            Self::InvalidSchema(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42201),
            Self::InvalidVersion(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42202),
            Self::Incompatible { .. } => (StatusCode::CONFLICT, 409),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, 400),
            Self::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, 415),
            Self::NoSuchEndpoint => (StatusCode::NOT_FOUND, 404),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, 405),
            Self::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, 50001),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody {
    error_code: u32,
    message: String,
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let (status, error_code) = self.status_and_code();
        // Handled here, so logged here (once); client mistakes are not server errors.
        if status.is_server_error() {
            tracing::error!(error_code, error = %self, "registry request failed");
        } else {
            tracing::debug!(error_code, error = %self, "registry request refused");
        }
        json_response(
            status,
            &ErrorBody {
                error_code,
                message: self.to_string(),
            },
        )
    }
}

/// `body` as JSON with Confluent's media type.
pub fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            status,
            [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
            bytes,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot serialize a registry response");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
                r#"{"error_code":50000,"message":"cannot serialize the response"}"#,
            )
                .into_response()
        }
    }
}

//! Reading registry requests: path parameters, media types and schema bodies.
//!
//! Invariant: a malformed request is refused with Confluent's error code before anything touches
//! the store; only a parsed, normalized AVRO schema without references reaches it.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::avro::{self, NormalizedSchema};
use super::error::RegistryError;
use crate::db::registry::VersionSelector;

/// Path parameters, percent-decoded (a subject's `/` arrives as `%2F`), whose rejection is a
/// Confluent-style error body rather than axum's plain text.
pub struct Params<T>(pub T);

impl<S, T> FromRequestParts<S> for Params<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = RegistryError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| Params(t))
            .map_err(|e| RegistryError::BadRequest(e.body_text()))
    }
}

/// Media types Confluent's registry accepts for request bodies.
const ACCEPTED_MEDIA_TYPES: [&str; 4] = [
    "application/vnd.schemaregistry.v1+json",
    "application/vnd.schemaregistry+json",
    "application/json",
    "application/octet-stream",
];

/// The body of register, lookup and compatibility requests. Other fields Confluent knows
/// (`metadata`, `ruleSet`, `normalize`) are accepted and ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaRequest {
    schema: Option<String>,
    schema_type: Option<String>,
    references: Option<Vec<serde_json::Value>>,
}

/// A request's schema, ready for the store.
pub struct ValidSchema {
    pub schema_type: &'static str,
    pub avro: NormalizedSchema,
}

impl SchemaRequest {
    /// Checks the media type and parses the JSON body. The body is read as bytes because axum's
    /// `Json` extractor refuses `application/vnd.schemaregistry.v1+json`.
    pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Self, RegistryError> {
        check_media_type(headers)?;
        serde_json::from_slice(body)
            .map_err(|e| RegistryError::BadRequest(format!("Invalid request body: {e}")))
    }

    /// Validates the schema and normalizes it.
    pub fn normalize(self) -> Result<ValidSchema, RegistryError> {
        match self.schema_type.as_deref() {
            None | Some("AVRO") => {}
            Some(other) => {
                return Err(RegistryError::InvalidSchema(format!(
                    "schema type {other} is not supported; this registry supports AVRO only"
                )));
            }
        }
        if self.references.is_some_and(|r| !r.is_empty()) {
            return Err(RegistryError::InvalidSchema(
                "schema references are not supported by this registry".to_owned(),
            ));
        }
        let text = self
            .schema
            .ok_or_else(|| RegistryError::InvalidSchema("the request has no schema".to_owned()))?;
        let avro =
            avro::normalize(&text).map_err(|e| RegistryError::InvalidSchema(e.to_string()))?;
        Ok(ValidSchema {
            schema_type: "AVRO",
            avro,
        })
    }
}

fn check_media_type(headers: &HeaderMap) -> Result<(), RegistryError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or_default();
    let media = text.split(';').next().unwrap_or_default().trim();
    if ACCEPTED_MEDIA_TYPES
        .iter()
        .any(|accepted| media.eq_ignore_ascii_case(accepted))
    {
        Ok(())
    } else {
        Err(RegistryError::UnsupportedMediaType(format!(
            "content type '{text}' is not one of {}",
            ACCEPTED_MEDIA_TYPES.join(", ")
        )))
    }
}

/// `latest` (or `-1`, as Confluent also accepts) or a version in 1..=2^31-1.
pub fn parse_version(text: &str) -> Result<VersionSelector, RegistryError> {
    if text.eq_ignore_ascii_case("latest") || text == "-1" {
        return Ok(VersionSelector::Latest);
    }
    match text.parse::<i32>() {
        Ok(n) if n >= 1 => Ok(VersionSelector::Number(n)),
        _ => Err(RegistryError::InvalidVersion(text.to_owned())),
    }
}

/// A schema id; anything that is not one cannot name a schema, so it is "not found".
pub fn parse_schema_id(text: &str) -> Result<i32, RegistryError> {
    text.parse::<i32>()
        .map_err(|_| RegistryError::SchemaIdNotFound(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn versions_are_latest_or_positive_integers() {
        assert_eq!(parse_version("latest").ok(), Some(VersionSelector::Latest));
        assert_eq!(parse_version("-1").ok(), Some(VersionSelector::Latest));
        assert_eq!(parse_version("3").ok(), Some(VersionSelector::Number(3)));
        for bad in ["0", "-2", "x", "2147483648", ""] {
            assert!(
                matches!(parse_version(bad), Err(RegistryError::InvalidVersion(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn confluent_and_json_media_types_are_accepted_and_others_refused() {
        let mut headers = HeaderMap::new();
        assert!(check_media_type(&headers).is_ok());
        for ok in [
            "application/vnd.schemaregistry.v1+json",
            "application/json; charset=utf-8",
        ] {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(ok));
            assert!(check_media_type(&headers).is_ok(), "{ok}");
        }
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(matches!(
            check_media_type(&headers),
            Err(RegistryError::UnsupportedMediaType(_))
        ));
    }

    #[test]
    fn references_and_other_schema_types_are_refused_as_invalid_schemas() {
        let with_refs =
            br#"{"schema":"\"int\"","references":[{"name":"a","subject":"b","version":1}]}"#;
        let protobuf = br#"{"schema":"syntax = \"proto3\";","schemaType":"PROTOBUF"}"#;
        for body in [&with_refs[..], &protobuf[..]] {
            let parsed = SchemaRequest::parse(&HeaderMap::new(), body);
            assert!(matches!(
                parsed.and_then(SchemaRequest::normalize),
                Err(RegistryError::InvalidSchema(_))
            ));
        }
    }
}

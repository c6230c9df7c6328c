//! The wire format: Avro in Confluent framing (magic byte, 4-byte schema id, Avro body), with
//! schemas registered under `<topic>-value`. Decoding classifies failures: a record that can
//! never be decoded is *poison* (dead-letter it); an unreachable registry is *transient*
//! (retry, do not advance).

use apache_avro::types::Value;
use chrono::{DateTime, Utc};
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};
use uuid::Uuid;

use super::Topics;
use crate::domain::{
    JobEvent, JobId, JobStatus, JobStatusChanged, MovieId, RecommendationRequested,
    RecommendationsEvent, RecommendationsReady, RecommendedMovie, UserErased, UserId,
};
use crate::retry::{Backoff, Outage};

pub const REQUESTED_SCHEMA: &str = include_str!("../../schemas/recommendation_requested.avsc");
pub const STATUS_SCHEMA: &str = include_str!("../../schemas/job_status_changed.avsc");
pub const READY_SCHEMA: &str = include_str!("../../schemas/recommendations_ready.avsc");

const REQUESTED_NAME: &str = "recq.v1.RecommendationRequested";
const STATUS_NAME: &str = "recq.v1.JobStatusChanged";
const READY_NAME: &str = "recq.v1.RecommendationsReady";
pub const ERASED_SCHEMA: &str = include_str!("../../schemas/user_erased.avsc");
const ERASED_NAME: &str = "recq.v1.UserErased";

/// Why a record can never be decoded. `code()` is the stable reason put on dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poison {
    /// Null or empty value where a record was expected.
    Empty,
    /// Not Confluent-framed (too short or wrong magic byte).
    NotFramed,
    /// The schema id is unknown to the registry.
    UnknownSchema,
    /// Framed and decodable, but with another record type's schema.
    WrongType,
    /// Avro body does not match its schema (truncated, bad UTF-8, ...).
    Undecodable,
    /// Decoded, but a field is missing or out of range.
    InvalidField,
    /// The record key is missing or not what the topic requires.
    BadKey,
    /// The value is larger than the configured limit.
    TooLarge,
    /// A job id already used for another user (a job id names exactly one request).
    DuplicateJobId,
}

impl Poison {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Empty => "empty-value",
            Self::NotFramed => "not-confluent-framed",
            Self::UnknownSchema => "unknown-schema-id",
            Self::WrongType => "wrong-record-type",
            Self::Undecodable => "undecodable-avro",
            Self::InvalidField => "invalid-field",
            Self::BadKey => "bad-key",
            Self::TooLarge => "too-large",
            Self::DuplicateJobId => "duplicate-job-id",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("{}: {detail}", .kind.code())]
    Poison { kind: Poison, detail: String },
    #[error("schema registry unavailable: {0}")]
    Transient(String),
}

fn poison(kind: Poison, detail: impl Into<String>) -> CodecError {
    CodecError::Poison {
        kind,
        detail: detail.into(),
    }
}

/// Encodes and decodes recq's events. Cheap to clone; schema lookups are cached.
#[derive(Clone)]
pub struct Codec {
    encoder: std::sync::Arc<AvroEncoder>,
    decoder: std::sync::Arc<AvroDecoder>,
    registry_outage: Outage,
}

impl Codec {
    pub fn new(registry_url: &str) -> Self {
        Self {
            encoder: std::sync::Arc::new(AvroEncoder::new(SrSettings::new(
                registry_url.to_owned(),
            ))),
            decoder: std::sync::Arc::new(AvroDecoder::new(SrSettings::new(
                registry_url.to_owned(),
            ))),
            registry_outage: Outage::default(),
        }
    }

    /// A backoff for waiting out a registry outage; every clone of this codec shares the
    /// outage, so it is logged once however many tasks wait.
    pub fn backoff(&self) -> Backoff {
        Backoff::shared("schema registry", self.registry_outage.clone())
    }

    /// Registers recq's schemas under the topic-name strategy (idempotent).
    pub async fn register_all(&self, topics: &Topics) -> Result<(), CodecError> {
        for (topic, schema, name) in [
            (&topics.requests, REQUESTED_SCHEMA, REQUESTED_NAME),
            (&topics.jobs, STATUS_SCHEMA, STATUS_NAME),
            (&topics.recommendations, READY_SCHEMA, READY_NAME),
            (&topics.erasures, ERASED_SCHEMA, ERASED_NAME),
        ] {
            let strategy = strategy(topic, schema, name);
            let subject = strategy.get_subject().map_err(|e| self.encode_error(e))?;
            self.encoder
                .get_schema_and_id(&subject, strategy)
                .await
                .map_err(|e| self.encode_error(e))?;
        }
        Ok(())
    }

    /// Encoding fails only when the registry cannot be used; the encoder caches failed
    /// registrations, which must not outlive an outage.
    fn encode_error(&self, e: SRCError) -> CodecError {
        self.encoder.remove_errors_from_cache();
        CodecError::Transient(describe(&e))
    }

    pub async fn encode_request(
        &self,
        topic: &str,
        r: &RecommendationRequested,
    ) -> Result<Vec<u8>, CodecError> {
        let value = Value::Record(vec![
            ("job_id".into(), Value::String(r.job_id.to_string())),
            ("user_id".into(), Value::Long(r.user_id.get().into())),
            ("requested_at".into(), timestamp(r.requested_at)),
        ]);
        self.encode(topic, REQUESTED_SCHEMA, REQUESTED_NAME, value)
            .await
    }

    pub async fn encode_status(
        &self,
        topic: &str,
        e: &JobStatusChanged,
    ) -> Result<Vec<u8>, CodecError> {
        let status_index = JobStatus::ALL
            .iter()
            .position(|s| *s == e.status)
            .unwrap_or(0);
        let value = Value::Record(vec![
            ("event_id".into(), Value::String(e.event_id.to_string())),
            ("job_id".into(), Value::String(e.job_id.to_string())),
            ("user_id".into(), Value::Long(e.user_id.get().into())),
            (
                "status".into(),
                Value::Enum(status_index as u32, e.status.as_str().to_owned()),
            ),
            ("seq".into(), Value::Long(e.seq)),
            ("attempt".into(), Value::Int(e.attempt)),
            ("occurred_at".into(), timestamp(e.occurred_at)),
            ("queued_at".into(), timestamp(e.queued_at)),
            ("started_at".into(), optional(e.started_at.map(timestamp))),
            ("finished_at".into(), optional(e.finished_at.map(timestamp))),
            ("processing_time".into(), Value::Int(e.processing_time)),
            ("error".into(), optional(e.error.clone().map(Value::String))),
        ]);
        self.encode(topic, STATUS_SCHEMA, STATUS_NAME, value).await
    }

    pub async fn encode_recommendations(
        &self,
        topic: &str,
        e: &RecommendationsReady,
    ) -> Result<Vec<u8>, CodecError> {
        let items = e
            .items
            .iter()
            .map(|item| {
                Value::Record(vec![
                    ("rank".into(), Value::Int(item.rank.into())),
                    ("movie_id".into(), Value::Long(item.movie_id.get().into())),
                    ("title".into(), Value::String(item.title.clone())),
                    ("score".into(), Value::Double(item.score)),
                ])
            })
            .collect();
        let value = Value::Record(vec![
            ("job_id".into(), Value::String(e.job_id.to_string())),
            ("user_id".into(), Value::Long(e.user_id.get().into())),
            ("generated_at".into(), timestamp(e.generated_at)),
            ("items".into(), Value::Array(items)),
        ]);
        self.encode(topic, READY_SCHEMA, READY_NAME, value).await
    }

    async fn encode(
        &self,
        topic: &str,
        schema: &str,
        name: &str,
        value: Value,
    ) -> Result<Vec<u8>, CodecError> {
        self.encoder
            .encode_value(value, &strategy(topic, schema, name))
            .await
            .map_err(|e| self.encode_error(e))
    }

    pub async fn decode_request(
        &self,
        payload: Option<&[u8]>,
    ) -> Result<RecommendationRequested, CodecError> {
        let f = self.decode(payload, REQUESTED_NAME).await?;
        Ok(RecommendationRequested {
            job_id: f.job_id("job_id")?,
            user_id: f.user_id("user_id")?,
            requested_at: f.timestamp("requested_at")?,
        })
    }

    /// Decodes a record of the jobs topic; a null value is a tombstone for the job in `key`.
    pub async fn decode_job_event(
        &self,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
    ) -> Result<JobEvent, CodecError> {
        if payload.is_none() {
            return tombstone_key(key).map(JobEvent::Tombstone);
        }
        let f = self.decode(payload, STATUS_NAME).await?;
        let status = f.string("status")?;
        let status: JobStatus =
            status
                .parse()
                .map_err(|e: crate::domain::status::UnknownStatus| {
                    poison(Poison::InvalidField, e.to_string())
                })?;
        let event_id = Uuid::parse_str(&f.string("event_id")?)
            .map_err(|_| poison(Poison::InvalidField, "event_id is not a UUID"))?;
        Ok(JobEvent::Status(JobStatusChanged {
            event_id,
            job_id: f.job_id("job_id")?,
            user_id: f.user_id("user_id")?,
            status,
            seq: f.long("seq")?,
            attempt: f.int("attempt")?,
            occurred_at: f.timestamp("occurred_at")?,
            queued_at: f.timestamp("queued_at")?,
            started_at: f.optional_timestamp("started_at")?,
            finished_at: f.optional_timestamp("finished_at")?,
            processing_time: f.int("processing_time")?,
            error: f.optional_string("error")?,
        }))
    }

    /// Decodes a record of the recommendations topic; a null value is a tombstone.
    pub async fn encode_erasure(&self, topic: &str, e: &UserErased) -> Result<Vec<u8>, CodecError> {
        let value = Value::Record(vec![
            ("user_id".into(), Value::Long(e.user_id.get().into())),
            ("erased_at".into(), timestamp(e.erased_at)),
        ]);
        self.encode(topic, ERASED_SCHEMA, ERASED_NAME, value).await
    }

    pub async fn decode_erasure(&self, payload: Option<&[u8]>) -> Result<UserErased, CodecError> {
        let f = self.decode(payload, ERASED_NAME).await?;
        Ok(UserErased {
            user_id: f.user_id("user_id")?,
            erased_at: f.timestamp("erased_at")?,
        })
    }

    pub async fn decode_recommendations_event(
        &self,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
    ) -> Result<RecommendationsEvent, CodecError> {
        if payload.is_none() {
            return tombstone_key(key).map(RecommendationsEvent::Tombstone);
        }
        let f = self.decode(payload, READY_NAME).await?;
        let items = match f.get("items")? {
            Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    Value::Record(fields) => {
                        let f = Fields(fields);
                        Ok(RecommendedMovie {
                            rank: i16::try_from(f.int("rank")?)
                                .map_err(|_| poison(Poison::InvalidField, "rank out of range"))?,
                            movie_id: MovieId::new(f.long("movie_id")?)
                                .map_err(|e| poison(Poison::InvalidField, e.to_string()))?,
                            title: f.string("title")?,
                            score: f.double("score")?,
                        })
                    }
                    _ => Err(poison(Poison::InvalidField, "items must hold records")),
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => return Err(poison(Poison::InvalidField, "items is not an array")),
        };
        Ok(RecommendationsEvent::Ready(RecommendationsReady {
            job_id: f.job_id("job_id")?,
            user_id: f.user_id("user_id")?,
            generated_at: f.timestamp("generated_at")?,
            items,
        }))
    }

    async fn decode(
        &self,
        payload: Option<&[u8]>,
        expected: &str,
    ) -> Result<OwnedFields, CodecError> {
        let bytes = match payload {
            None | Some([]) => return Err(poison(Poison::Empty, "the record has no value")),
            Some(bytes) => bytes,
        };
        if bytes.len() < 5 || bytes[0] != 0 {
            return Err(poison(
                Poison::NotFramed,
                format!(
                    "expected magic byte 0 and a 4-byte schema id, got {} bytes starting {:?}",
                    bytes.len(),
                    &bytes[..bytes.len().min(5)]
                ),
            ));
        }
        let decoded = match self.decoder.decode(Some(bytes)).await {
            Ok(decoded) => decoded,
            Err(e) => {
                // The decoder caches failed schema lookups. Whatever the failure, the next
                // record must ask again: an outage must not stick, and one bad lookup must not
                // turn every later record with that schema id into a dead letter.
                self.decoder.remove_errors_from_cache();
                return Err(classify_decode_error(&e));
            }
        };
        let name = decoded.name.map(|n| n.fullname(None)).unwrap_or_default();
        if name != expected {
            return Err(poison(
                Poison::WrongType,
                format!("expected a {expected}, got a {name:?}"),
            ));
        }
        match decoded.value {
            Value::Record(fields) => Ok(OwnedFields(fields)),
            other => Err(poison(
                Poison::WrongType,
                format!("expected a record, got {other:?}"),
            )),
        }
    }
}

fn strategy(topic: &str, schema: &str, name: &str) -> SubjectNameStrategy {
    SubjectNameStrategy::TopicNameStrategyWithSchema(
        topic.to_owned(),
        false,
        SuppliedSchema::new(Some(name.to_owned()), SchemaType::Avro, schema.to_owned()),
    )
}

/// What schema_registry_converter says when the record or the schema its id names cannot be
/// used: the same record fails the same way every time.
const RECORD_FAILURES: [&str; 5] = [
    "Could not transform bytes using schema",
    "Could not resolve Avro schema",
    "failed to parse Avro schema",
    "cant be turned into a Schema",
    "is not supported",
];

/// A 404 for the schema id is poison (ids are never reused), and so is a record or schema that
/// does not decode. Every other failure is in talking to the registry — refused, timed out, a
/// 5xx or auth status, a response cut off or unreadable — and is treated as an outage, not as
/// bad input: the record waits instead of being dead-lettered.
fn classify_decode_error(e: &SRCError) -> CodecError {
    if e.error.contains("status 404") {
        poison(Poison::UnknownSchema, describe(e))
    } else if RECORD_FAILURES.iter().any(|f| e.error.contains(f)) {
        poison(Poison::Undecodable, describe(e))
    } else {
        CodecError::Transient(describe(e))
    }
}

/// The error text, with any credentials in URLs it quotes masked (a registry URL may carry
/// basic-auth credentials).
fn describe(e: &SRCError) -> String {
    let text = match &e.cause {
        Some(cause) => format!("{} ({cause})", e.error),
        None => e.error.clone(),
    };
    crate::config::redact_urls_in(&text)
}

fn tombstone_key(key: Option<&[u8]>) -> Result<JobId, CodecError> {
    let key = key.ok_or_else(|| poison(Poison::BadKey, "a tombstone needs the job id as key"))?;
    std::str::from_utf8(key)
        .ok()
        .and_then(|k| k.parse().ok())
        .ok_or_else(|| poison(Poison::BadKey, "tombstone key is not a job id"))
}

fn timestamp(t: DateTime<Utc>) -> Value {
    Value::TimestampMicros(t.timestamp_micros())
}

fn optional(v: Option<Value>) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(v) => Value::Union(1, Box::new(v)),
    }
}

struct OwnedFields(Vec<(String, Value)>);

/// Typed access to a decoded record's fields; a missing or mistyped field is poison.
trait FieldAccess {
    fn fields(&self) -> &[(String, Value)];

    fn get(&self, name: &str) -> Result<&Value, CodecError> {
        self.fields()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| match v {
                Value::Union(_, inner) => inner.as_ref(),
                v => v,
            })
            .ok_or_else(|| poison(Poison::InvalidField, format!("missing field {name}")))
    }

    fn mistyped(&self, name: &str, want: &str) -> CodecError {
        poison(Poison::InvalidField, format!("field {name} is not {want}"))
    }

    fn string(&self, name: &str) -> Result<String, CodecError> {
        match self.get(name)? {
            Value::String(s) | Value::Enum(_, s) => Ok(s.clone()),
            _ => Err(self.mistyped(name, "a string")),
        }
    }

    fn optional_string(&self, name: &str) -> Result<Option<String>, CodecError> {
        match self.get(name)? {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s.clone())),
            _ => Err(self.mistyped(name, "a string or null")),
        }
    }

    fn long(&self, name: &str) -> Result<i64, CodecError> {
        match self.get(name)? {
            Value::Long(n) => Ok(*n),
            Value::Int(n) => Ok((*n).into()),
            _ => Err(self.mistyped(name, "an integer")),
        }
    }

    fn int(&self, name: &str) -> Result<i32, CodecError> {
        i32::try_from(self.long(name)?).map_err(|_| self.mistyped(name, "a 32-bit integer"))
    }

    fn double(&self, name: &str) -> Result<f64, CodecError> {
        match self.get(name)? {
            Value::Double(n) => Ok(*n),
            Value::Float(n) => Ok((*n).into()),
            _ => Err(self.mistyped(name, "a number")),
        }
    }

    fn timestamp(&self, name: &str) -> Result<DateTime<Utc>, CodecError> {
        self.optional_timestamp(name)?
            .ok_or_else(|| self.mistyped(name, "a timestamp"))
    }

    fn optional_timestamp(&self, name: &str) -> Result<Option<DateTime<Utc>>, CodecError> {
        let micros = match self.get(name)? {
            Value::Null => return Ok(None),
            Value::TimestampMicros(n) | Value::Long(n) => *n,
            _ => return Err(self.mistyped(name, "a timestamp")),
        };
        DateTime::from_timestamp_micros(micros)
            .map(Some)
            .ok_or_else(|| self.mistyped(name, "a representable timestamp"))
    }

    fn job_id(&self, name: &str) -> Result<JobId, CodecError> {
        self.string(name)?
            .parse()
            .map_err(|e: crate::domain::IdError| poison(Poison::InvalidField, e.to_string()))
    }

    fn user_id(&self, name: &str) -> Result<UserId, CodecError> {
        UserId::new(self.long(name)?).map_err(|e| poison(Poison::InvalidField, e.to_string()))
    }
}

impl FieldAccess for OwnedFields {
    fn fields(&self) -> &[(String, Value)] {
        &self.0
    }
}

struct Fields<'a>(&'a [(String, Value)]);

impl FieldAccess for Fields<'_> {
    fn fields(&self) -> &[(String, Value)] {
        self.0
    }
}

#[cfg(test)]
mod classify_tests {
    use super::*;

    fn error(text: &str, retriable: bool) -> SRCError {
        SRCError::new(text, Some("cause".to_owned()), retriable)
    }

    #[test]
    fn only_unknown_ids_and_undecodable_records_are_poison() {
        let kind = |e: SRCError| match classify_decode_error(&e) {
            CodecError::Poison { kind, .. } => Some(kind),
            CodecError::Transient(_) => None,
        };
        assert_eq!(
            kind(error(
                "HTTP request to schema registry failed with status 404 Not Found",
                false
            )),
            Some(Poison::UnknownSchema)
        );
        assert_eq!(
            kind(error("Could not transform bytes using schema", false)),
            Some(Poison::Undecodable)
        );
        for transient in [
            error("http call to schema registry failed", true),
            error(
                "HTTP request to schema registry failed with status 503 Service Unavailable",
                true,
            ),
            error(
                "HTTP request to schema registry failed with status 500 Internal Server Error",
                false,
            ),
            error(
                "HTTP request to schema registry failed with status 401 Unauthorized",
                false,
            ),
            // A 200 whose body was cut off or is not the registry's JSON.
            error("could not parse to RawRegisteredSchema", false),
            error("Could not get raw schema from response", false),
        ] {
            assert_eq!(kind(transient.clone()), None, "{transient:?}");
        }
    }
}

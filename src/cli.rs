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
    #[arg(long = "kafka-property", env = "RECQ_KAFKA_PROPERTIES", value_delimiter = ',', value_parser = parse_property, hide_env_values = true, global = true)]
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
        hide_env_values = true,
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
    /// Requests whose value is larger than this many bytes are dead-lettered as `too-large`.
    #[arg(long, env = "RECQ_MAX_MESSAGE_BYTES", default_value_t = 1_048_576, value_parser = clap::value_parser!(u64).range(1..=1_073_741_824))]
    pub max_message_bytes: u64,
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
    #[arg(long, env = "RECQ_PROJECTOR_FLUSH_MS", default_value_t = 25, value_parser = clap::value_parser!(u64).range(1..=60_000))]
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
        #[arg(required_unless_present_any = ["user", "stalled"], conflicts_with_all = ["user", "stalled"])]
        job_id: Option<String>,
        /// Show the jobs of this user instead.
        #[arg(long, conflicts_with = "stalled")]
        user: Option<i64>,
        /// List jobs in `process` for longer than --stalled-after-secs instead.
        #[arg(long)]
        stalled: bool,
        /// How long a job may stay in `process` before it counts as stalled.
        #[arg(long, env = "RECQ_STALLED_AFTER_SECS", default_value_t = 300)]
        stalled_after_secs: u64,
    },
    /// Inspect dead letters, or re-publish them to their original topic after a fix.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Check that the table equals the fold of the log up to the stored positions.
    Verify {
        /// Give up if a partition yields nothing for this many seconds before its position.
        #[arg(long, default_value_t = 30)]
        idle_secs: u64,
    },
    /// Replay the log into shadow tables, then swap them in (resumes if interrupted).
    Rebuild {
        /// Discard an interrupted rebuild's progress and start from offset 0.
        #[arg(long)]
        restart: bool,
        /// Events per shadow-table transaction.
        #[arg(long, default_value_t = crate::rebuild::DEFAULT_BATCH_SIZE, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        batch_size: u32,
        /// Consider the log caught up after this many milliseconds without new events.
        #[arg(long, default_value_t = 2_000)]
        idle_ms: u64,
        /// Do not draw a progress bar.
        #[arg(long)]
        no_progress: bool,
    },
    /// Remove finished jobs older than a given age, through the log (tombstones).
    Prune {
        /// Age of the last status change, e.g. 30d, 12h, 45m, 90s.
        #[arg(long, value_parser = parse_age)]
        older_than: chrono::Duration,
    },
    /// Erase a user through the log: their jobs and recommendations leave the table, stay
    /// gone after a rebuild, and later events for them are dropped.
    EraseUser {
        /// The user id.
        user: i64,
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

/// Parses an age such as `30d`, `12h`, `45m` or `90s`.
pub fn parse_age(s: &str) -> Result<chrono::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: i64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not an age like 30d, 12h, 45m or 90s"))?;
    match unit {
        "d" => Ok(chrono::Duration::days(n)),
        "h" => Ok(chrono::Duration::hours(n)),
        "m" => Ok(chrono::Duration::minutes(n)),
        "s" | "" => Ok(chrono::Duration::seconds(n)),
        _ => Err(format!("{s:?}: unknown unit {unit:?} (use d, h, m or s)")),
    }
}

/// A dead-letter topic: of the requests (worker) or of the jobs events (projector).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DlqTopic {
    Requests,
    Jobs,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Print every dead letter, one line each (position, reason, origin, first failure,
    /// attempt, key, value preview, error), reading from the beginning.
    List {
        /// Only this dead-letter topic (default: both).
        #[arg(long, value_enum)]
        topic: Option<DlqTopic>,
        /// Stop after this many dead letters per topic.
        #[arg(long)]
        limit: Option<usize>,
        /// Stop reading when nothing arrived for this many seconds.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=600))]
        idle_secs: u64,
    },
    /// Re-publish selected dead letters (key, value, headers) to the topic they came from.
    #[command(group(clap::ArgGroup::new("selection").required(true).args(["offsets", "reason", "all"])))]
    Redrive {
        /// The dead-letter topic to redrive from.
        #[arg(long, value_enum)]
        topic: DlqTopic,
        /// Dead letters by position, as shown by `recq dlq list`: PARTITION:OFFSET, or OFFSET
        /// when only one partition has it. Repeatable.
        #[arg(long = "offset", value_name = "[PARTITION:]OFFSET", num_args = 1..)]
        offsets: Vec<String>,
        /// Every dead letter with this reason code (e.g. too-large).
        #[arg(long)]
        reason: Option<String>,
        /// Every dead letter of the topic.
        #[arg(long)]
        all: bool,
        /// Stop reading the dead-letter topic when nothing arrived for this many seconds.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=600))]
        idle_secs: u64,
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
    fn ages_take_days_hours_minutes_or_seconds() {
        assert_eq!(parse_age("30d"), Ok(chrono::Duration::days(30)));
        assert_eq!(parse_age("12h"), Ok(chrono::Duration::hours(12)));
        assert_eq!(parse_age("0s"), Ok(chrono::Duration::zero()));
        assert!(parse_age("3w").is_err());
        assert!(parse_age("d").is_err());
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

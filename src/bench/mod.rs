//! `recq-bench`: recq's performance figures, measured side by side in one run against the
//! real code paths (`Batch::apply`, the `recq projector` and `recq worker` binaries, the
//! recommender), with the seed's way and Postgres's `COPY` as yardsticks. Every figure is the
//! median of several repetitions, each on a fresh database (`recq_bench_*`) and, where a
//! broker is involved, fresh random topics. `bench/README.md` explains each figure.
//!
//! Nothing here asserts a time: the bench measures, prints and records; the targets are
//! reported as met or not, never enforced.

pub mod apply;
pub mod broker;
pub mod e2e;
pub mod events;
pub mod recommender;
pub mod report;
mod run;
mod targets;

use std::path::PathBuf;
use std::time::Duration;

pub use report::{Figure, Results, Target};
pub use run::run;

/// How long to wait for Postgres or Kafka before calling them unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The bench's command line.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "recq-bench",
    about = "Measures recq's projector, rebuild, end-to-end latency and recommender (see bench/README.md)"
)]
pub struct BenchArgs {
    /// Kafka bootstrap servers of the bench's own broker.
    #[arg(long, env = "RECQ_BROKERS", default_value = "127.0.0.1:39092")]
    pub brokers: String,
    /// Postgres server URL without a database; the bench creates recq_bench_* databases.
    #[arg(
        long,
        env = "RECQ_BENCH_PG",
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    pub pg_server: String,
    /// MovieLens 100k directory (`make data`).
    #[arg(long, env = "RECQ_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The `recq` binary run as worker and projector child processes (default: next to this
    /// binary).
    #[arg(long)]
    pub recq_bin: Option<PathBuf>,
    /// Repetitions per figure (the median is reported).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=99))]
    pub reps: u32,
    /// Jobs in the status-event stream (four events each).
    #[arg(long, default_value_t = 250_000)]
    pub jobs: usize,
    /// Jobs in flight at once in the generated stream.
    #[arg(long, default_value_t = 10_000)]
    pub window: usize,
    /// Events of the stream's prefix applied the seed's way (one statement per transaction).
    #[arg(long, default_value_t = 100_000)]
    pub seed_events: usize,
    /// Projector batch size (the `recq projector` default).
    #[arg(long, default_value_t = 5000)]
    pub batch_size: usize,
    /// Rebuild batch size, figure 5 (the `recq rebuild` default).
    #[arg(long, default_value_t = crate::rebuild::DEFAULT_BATCH_SIZE as usize)]
    pub rebuild_batch_size: usize,
    /// Partitions of the bench topics.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// End-to-end figure: requests per second offered...
    #[arg(long, default_value_t = 200)]
    pub rate: u32,
    /// ...for this many seconds.
    #[arg(long, default_value_t = 60)]
    pub duration_secs: u64,
    /// Figures to measure (1-8; 8 comes with 4 and 6).
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4,5,6,7")]
    pub only: Vec<u8>,
    /// Where to write the results.
    #[arg(long, default_value = "bench/results.json")]
    pub out: PathBuf,
}

impl BenchArgs {
    pub fn wants(&self, figure: u8) -> bool {
        self.only.contains(&figure)
    }
}

/// What the figures share: the bench's broker, registry, codec and producer.
pub struct Ctx {
    pub args: BenchArgs,
    pub kafka: crate::kafka::KafkaSettings,
    pub registry_url: String,
    pub codec: crate::kafka::codec::Codec,
    pub producer: crate::kafka::producer::Producer,
    /// The `recq` binary for child roles.
    pub recq: PathBuf,
    pub data_dir: PathBuf,
}

impl Ctx {
    /// Environment for a `recq` child role on `topics_prefix`, writing `database`.
    pub fn role_env(&self, topics_prefix: &str, database: &str) -> Vec<(&'static str, String)> {
        vec![
            ("RECQ_BROKERS", self.kafka.brokers.clone()),
            ("RECQ_REGISTRY_URL", self.registry_url.clone()),
            ("RECQ_TOPIC_PREFIX", topics_prefix.to_owned()),
            ("RECQ_PARTITIONS", self.args.partitions.to_string()),
            (
                "DATABASE_URL",
                apply::db_url(&self.args.pg_server, database),
            ),
            ("RECQ_DATA_DIR", self.data_dir.display().to_string()),
            ("RECQ_LOG", "warn".to_owned()),
        ]
    }
}

/// Why the bench could not produce a figure.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Kafka(#[from] crate::kafka::KafkaError),
    #[error(transparent)]
    Codec(#[from] crate::kafka::codec::CodecError),
    #[error(transparent)]
    App(#[from] crate::app::AppError),
    #[error(transparent)]
    Recommend(#[from] crate::recommend::RecommendError),
    #[error(transparent)]
    Harness(#[from] crate::harness::HarnessError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Failed(String),
}

impl BenchError {
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
        let what = what.into();
        move |source| BenchError::Io { what, source }
    }
}

/// The median of `values` (the mean of the middle two for an even count); NaN when empty.
pub fn median(values: &[f64]) -> f64 {
    percentile(values, 0.5)
}

/// The `q` quantile (0..=1) of `values` by linear interpolation between closest ranks; NaN
/// when empty.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted.sort_by(f64::total_cmp);
    let rank = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (low, high) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[low] + (sorted[high] - sorted[low]) * (rank - low as f64)
}

/// A short random suffix for database-independent names (topics, groups).
pub use crate::harness::random_suffix;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_the_middle_value_or_the_mean_of_the_middle_two() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[7.0]), 7.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let values: Vec<f64> = (1..=101).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.0), 1.0);
        assert_eq!(percentile(&values, 0.99), 100.0);
        assert_eq!(percentile(&values, 1.0), 101.0);
        assert_eq!(percentile(&[10.0, 20.0], 0.5), 15.0);
    }
}

//! Wiring shared by the subcommands: connecting to Postgres, Kafka and the registry with
//! errors that name the problem and the fix.

pub mod demo;
pub mod dlq;
pub mod tools;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use sqlx::PgPool;

use crate::config::{Settings, redact_url};
use crate::db::{self, DbError};
use crate::kafka::codec::{Codec, CodecError};
use crate::kafka::producer::Producer;
use crate::kafka::{KafkaError, admin};
use crate::recommend::{DataError, Ratings, Recommender};

/// Errors that end a command. Each message says what failed and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot use Postgres at {url}: {source}{}", postgres_fix(.source))]
    Postgres {
        url: String,
        #[source]
        source: DbError,
    },
    #[error("{0}")]
    Db(#[from] DbError),
    #[error("{0}")]
    Kafka(#[from] KafkaError),
    #[error(
        "cannot use the schema registry at {url}: {reason}; start it (`recq registry`) or set RECQ_REGISTRY_URL"
    )]
    Registry { url: String, reason: String },
    #[error("cannot load MovieLens data: {0}")]
    Data(#[from] DataError),
    #[error("cannot listen on {addr}: {source}; pick another address")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Verify(#[from] crate::verify::VerifyError),
    #[error(transparent)]
    Rebuild(#[from] crate::rebuild::RebuildError),
    #[error(transparent)]
    Projector(#[from] crate::projector::ProjectorError),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Failed(String),
}

/// The fix to suggest after a Postgres error, unless the error already names it.
fn postgres_fix(error: &DbError) -> &'static str {
    match error {
        DbError::BadUrl { .. } => {
            "; set DATABASE_URL to postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=require]"
        }
        DbError::NewerSchema { .. } => "",
        _ => "; check DATABASE_URL and that the server is running",
    }
}

/// Connects to `url` and brings the schema up to date.
pub async fn database(settings: &Settings, url: &str) -> Result<PgPool, AppError> {
    let wrap = |source| AppError::Postgres {
        url: redact_url(url),
        source,
    };
    let pool = db::connect(url, 10, settings.connect_timeout)
        .await
        .map_err(wrap)?;
    db::migrate(&pool).await.map_err(wrap)?;
    Ok(pool)
}

/// Kafka topics exist and recq's schemas are registered.
pub async fn kafka(settings: &Settings) -> Result<(Codec, Producer), AppError> {
    admin::ensure_topics(&settings.kafka, &settings.topics, settings.partitions).await?;
    let codec = Codec::new(&settings.registry_url);
    codec
        .register_all(&settings.topics)
        .await
        .map_err(|e| AppError::Registry {
            url: redact_url(&settings.registry_url),
            reason: match e {
                CodecError::Transient(reason) => reason,
                other => other.to_string(),
            },
        })?;
    let producer = Producer::new(&settings.kafka)?;
    Ok((codec, producer))
}

/// Loads MovieLens from `dir` and builds the model, logging how long it took.
pub fn recommender(dir: &Path) -> Result<Arc<Recommender>, AppError> {
    let started = Instant::now();
    let ratings = Ratings::load_movielens(dir)?;
    let loaded = started.elapsed();
    let model = Recommender::build(&ratings);
    tracing::info!(
        ratings = ratings.len(),
        users = model.user_count(),
        movies = model.movie_count(),
        load_ms = loaded.as_millis() as u64,
        build_ms = (started.elapsed() - loaded).as_millis() as u64,
        "recommender ready"
    );
    Ok(Arc::new(model))
}

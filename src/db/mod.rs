//! Postgres access: the pool, migrations, and every SQL statement recq runs.

pub mod jobs;
pub mod offsets;
pub mod pool;
pub mod rebuild;
pub mod registry;

pub use pool::{MIGRATOR, connect, migrate, recreate_database};

/// What can go wrong talking to Postgres.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("DATABASE_URL is not a valid Postgres URL: {reason}")]
    BadUrl { reason: String },
    #[error("cannot reach Postgres: {source}")]
    Unreachable {
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "the database has migration {version} that this recq binary does not know; run a newer recq"
    )]
    NewerSchema { version: i64 },
    #[error("migration failed: {0}")]
    Migrate(sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
}

impl From<sqlx::migrate::MigrateError> for DbError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        match e {
            sqlx::migrate::MigrateError::VersionMissing(version) => Self::NewerSchema { version },
            other => Self::Migrate(other),
        }
    }
}

impl DbError {
    /// Whether retrying later may succeed (the database is down or restarting), as opposed
    /// to an error that will repeat forever.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Query(sqlx::Error::Database(e)) => {
                e.code().is_some_and(|c| is_transient_state(&c))
            }
            Self::Query(e) => matches!(
                e,
                sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::Protocol(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
            ),
            _ => false,
        }
    }
}

/// SQLSTATEs that a retry can outlive: connection failures (class 08), the server shutting
/// down or starting (57P01-57P03), too many connections (53300), serialization failures and
/// deadlocks (40001, 40P01).
fn is_transient_state(code: &str) -> bool {
    code.starts_with("08")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01"
        )
}

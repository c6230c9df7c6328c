//! Connecting to Postgres and bringing its schema up to date.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::DbError;

/// The migrations compiled into this binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Connects to `url` and checks the connection works, within `timeout`.
pub async fn connect(
    url: &str,
    max_connections: u32,
    timeout: Duration,
) -> Result<PgPool, DbError> {
    let options: PgConnectOptions = url.parse().map_err(|e: sqlx::Error| DbError::BadUrl {
        reason: e.to_string(),
    })?;
    // One direct connection first: a pool only reports "timed out", this reports the cause
    // (refused, unknown database, bad password).
    use sqlx::Connection;
    match tokio::time::timeout(timeout, sqlx::PgConnection::connect_with(&options)).await {
        Ok(Ok(conn)) => drop(conn.close().await),
        Ok(Err(source)) => return Err(DbError::Unreachable { source }),
        Err(_) => {
            return Err(DbError::Unreachable {
                source: sqlx::Error::PoolTimedOut,
            });
        }
    }
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(timeout)
        .connect_with(options)
        .await
        .map_err(|source| DbError::Unreachable { source })
}

/// Applies the migrations this binary knows. Fails if the database has migrations this binary
/// does not know (it is older than the schema).
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    MIGRATOR.run(pool).await.map_err(DbError::from)
}

/// Drops and recreates the database named in `url` (used by `recq demo` for a clean run).
/// Only plain lowercase names are accepted, as they are interpolated into DDL.
pub async fn recreate_database(url: &str, timeout: Duration) -> Result<(), DbError> {
    let options: PgConnectOptions = url.parse().map_err(|e: sqlx::Error| DbError::BadUrl {
        reason: e.to_string(),
    })?;
    let name = options.get_database().unwrap_or_default().to_owned();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(DbError::BadUrl {
            reason: format!("database name {name:?} must be lowercase letters, digits and _"),
        });
    }
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(timeout)
        .connect_with(options.database("postgres"))
        .await
        .map_err(|source| DbError::Unreachable { source })?;
    let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    let create = format!("CREATE DATABASE {name}");
    sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
        .execute(&admin)
        .await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(create))
        .execute(&admin)
        .await?;
    admin.close().await;
    Ok(())
}

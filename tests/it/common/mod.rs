//! Shared test helpers: every test gets its own database and its own random names.

pub mod env;
pub mod proxy;

use std::time::Duration;

use rand::Rng;
use sqlx::PgPool;

/// Postgres server used by the tests (`DATABASE_URL`, default: the machine's local server).
pub fn server_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A random lowercase suffix for database, topic and group names.
pub fn random_suffix() -> String {
    let mut rng = rand::rng();
    (0..10)
        .map(|_| char::from(b'a' + rng.random_range(0..26)))
        .collect()
}

/// Logs of the roles running in tests, off unless `RECQ_TEST_LOG` holds a filter (e.g.
/// `RECQ_TEST_LOG=recq=debug cargo test ... -- --nocapture`). Once per test binary.
pub fn init_test_logging() {
    if let Ok(filter) = std::env::var("RECQ_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// A fresh database with recq's migrations applied. Dropped databases are not cleaned up
/// on purpose: a failed test leaves its data behind to inspect.
pub struct TestDb {
    pub url: String,
    pub pool: PgPool,
}

impl TestDb {
    pub async fn new() -> TestDb {
        init_test_logging();
        let server = server_url();
        let name = format!("recq_test_{}", random_suffix());
        let admin = recq::db::connect(&server, 1, Duration::from_secs(5))
            .await
            .expect("connect to the Postgres server (set DATABASE_URL)");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("create test database");
        admin.close().await;
        let url = with_database(&server, &name);
        let pool = recq::db::connect(&url, 5, Duration::from_secs(5))
            .await
            .expect("connect to the test database");
        recq::db::migrate(&pool)
            .await
            .expect("migrate test database");
        TestDb { url, pool }
    }
}

/// `url` with its database name replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

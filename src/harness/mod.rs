//! recq's roles, a local broker and a schema registry run the way they run in production —
//! as processes that can be measured and signalled (SIGKILL, SIGSTOP) — for `recq-bench`,
//! `recq-chaos` and the integration tests.

pub mod broker;
pub mod role;

use std::path::PathBuf;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Why a process of the harness could not be started or watched.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Failed(String),
}

impl HarnessError {
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
        let what = what.into();
        move |source| HarnessError::Io { what, source }
    }
}

/// Ten random lowercase hex digits, for database, topic and group names.
pub fn random_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_owned()
}

pub use crate::config::cache_dir;

/// A loopback port nobody listens on right now.
pub fn free_port() -> Result<u16, HarnessError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(HarnessError::io("finding a free loopback port"))?;
    Ok(listener
        .local_addr()
        .map_err(HarnessError::io("finding a free loopback port"))?
        .port())
}

/// The binary `name` next to the running executable (`recq` next to `recq-bench`).
pub fn sibling_binary(name: &str) -> Result<PathBuf, HarnessError> {
    let exe = std::env::current_exe().map_err(HarnessError::io("locating this executable"))?;
    let path = exe.with_file_name(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(HarnessError::Failed(format!(
            "no {} next to {}; build it (`cargo build --release`) or pass --recq-bin",
            path.display(),
            exe.display()
        )))
    }
}

/// A schema registry served in-process on a free loopback port, stored in `pool`'s database;
/// returns its URL. It stops when `cancel` fires.
pub async fn serve_registry(
    pool: sqlx::PgPool,
    cancel: CancellationToken,
) -> Result<(String, JoinHandle<Result<(), std::io::Error>>), HarnessError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(HarnessError::io("binding a schema registry"))?;
    let url = format!(
        "http://{}",
        listener
            .local_addr()
            .map_err(HarnessError::io("registry address"))?
    );
    Ok((
        url,
        tokio::spawn(crate::registry::serve(pool, listener, cancel)),
    ))
}

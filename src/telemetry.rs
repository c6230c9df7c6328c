//! Logging: human-readable lines with fields, filtered by `--log` / `RECQ_LOG`.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Errors in the filter fall back to `info`.
pub fn init(filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .try_init();
}

//! Bounded exponential backoff for transient failures (a dependency is down). Logs once when
//! the outage starts and once when it ends, not on every attempt — and, through a shared
//! [`Outage`], not once per task when many tasks wait out the same outage.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Whether a dependency is known to be down, shared by every task that uses it (the adapters
/// hold one: the codec for the registry, the producer for Kafka).
#[derive(Debug, Clone, Default)]
pub struct Outage(Arc<AtomicBool>);

impl Outage {
    /// Marks the dependency down; true if it was up (the caller logs the change).
    fn begin(&self) -> bool {
        !self.0.swap(true, Ordering::SeqCst)
    }

    /// Marks the dependency up; true if it was down (the caller logs the change).
    fn end(&self) -> bool {
        self.0.swap(false, Ordering::SeqCst)
    }
}

pub struct Backoff {
    what: &'static str,
    delay: Duration,
    max: Duration,
    failing: bool,
    outage: Outage,
}

impl Backoff {
    /// A backoff whose outage is logged by itself (one task waits for the dependency).
    pub fn new(what: &'static str) -> Self {
        Self::shared(what, Outage::default())
    }

    /// A backoff for one of many tasks waiting for the same dependency: only the first task
    /// to fail logs the outage and only the first to succeed afterwards logs the recovery.
    pub fn shared(what: &'static str, outage: Outage) -> Self {
        Self {
            what,
            delay: Duration::from_millis(100),
            max: Duration::from_secs(5),
            failing: false,
            outage,
        }
    }

    /// Sleeps before the next attempt. Returns false if cancelled meanwhile.
    pub async fn wait(&mut self, error: &str, cancel: &CancellationToken) -> bool {
        if !self.failing {
            self.failing = true;
            if self.outage.begin() {
                tracing::warn!(dependency = self.what, %error, "dependency unavailable; pausing and retrying with backoff");
            }
        }
        let delay = self.delay;
        self.delay = (self.delay * 2).min(self.max);
        tokio::select! {
            _ = cancel.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }

    /// Call after a success: logs the recovery if there was an outage.
    pub fn recovered(&mut self) {
        if self.failing {
            if self.outage.end() {
                tracing::info!(
                    dependency = self.what,
                    "dependency available again; resuming"
                );
            }
            self.failing = false;
            self.delay = Duration::from_millis(100);
        }
    }

    /// The delay the next `wait` will sleep.
    pub fn next_delay(&self) -> Duration {
        self.delay
    }
}

/// Runs `op` until it succeeds, waiting with `backoff` after each failure. Returns the last
/// error if `cancel` fires first.
pub async fn until_ok<T, E, F, Fut>(
    mut backoff: Backoff,
    cancel: &CancellationToken,
    mut op: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    loop {
        match op().await {
            Ok(value) => {
                backoff.recovered();
                return Ok(value);
            }
            Err(e) => {
                if !backoff.wait(&e.to_string(), cancel).await {
                    return Err(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_up_to_its_cap_and_resets_after_recovery() {
        let cancel = CancellationToken::new();
        let mut backoff = Backoff::new("test");
        let mut delays = Vec::new();
        for _ in 0..8 {
            delays.push(backoff.next_delay().as_millis());
            assert!(backoff.wait("down", &cancel).await);
        }
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        backoff.recovered();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
        cancel.cancel();
        assert!(!backoff.wait("down", &cancel).await);
    }

    #[tokio::test(start_paused = true)]
    async fn tasks_sharing_an_outage_mark_it_once_and_clear_it_once() {
        let cancel = CancellationToken::new();
        let outage = Outage::default();
        let mut a = Backoff::shared("test", outage.clone());
        let mut b = Backoff::shared("test", outage.clone());
        assert!(a.wait("down", &cancel).await);
        assert!(!outage.begin(), "a marked the outage");
        assert!(b.wait("down", &cancel).await);
        a.recovered();
        assert!(!outage.end(), "a cleared the outage");
        b.recovered();
        assert!(!outage.0.load(Ordering::SeqCst));
    }
}

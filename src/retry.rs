//! Bounded exponential backoff for transient failures (a dependency is down). Logs once when
//! the outage starts and once when it ends, not on every attempt.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub struct Backoff {
    what: &'static str,
    delay: Duration,
    max: Duration,
    failing: bool,
}

impl Backoff {
    pub fn new(what: &'static str) -> Self {
        Self {
            what,
            delay: Duration::from_millis(100),
            max: Duration::from_secs(5),
            failing: false,
        }
    }

    /// Sleeps before the next attempt. Returns false if cancelled meanwhile.
    pub async fn wait(&mut self, error: &str, cancel: &CancellationToken) -> bool {
        if !self.failing {
            tracing::warn!(dependency = self.what, %error, "dependency unavailable; pausing and retrying with backoff");
            self.failing = true;
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
            tracing::info!(
                dependency = self.what,
                "dependency available again; resuming"
            );
            self.failing = false;
            self.delay = Duration::from_millis(100);
        }
    }

    /// The delay the next `wait` will sleep.
    pub fn next_delay(&self) -> Duration {
        self.delay
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
}

//! Process-wide counters for things an operator must see, starting with dead letters.
//!
//! Invariant: a record is counted here exactly when its dead letter was acknowledged by the
//! broker, so a dead-lettered record never advances a position without being counted.
//! Labels are low-cardinality (the stream and the stable reason code), never ids.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Which input stream a dead letter came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stream {
    /// The requests topic, dead-lettered by the worker.
    Requests,
    /// The jobs and recommendations topics, dead-lettered by the projector.
    Jobs,
}

impl Stream {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::Jobs => "jobs",
        }
    }
}

static REQUESTS: AtomicU64 = AtomicU64::new(0);
static JOBS: AtomicU64 = AtomicU64::new(0);
static BY_REASON: Mutex<BTreeMap<(Stream, &'static str), u64>> = Mutex::new(BTreeMap::new());

fn counter(stream: Stream) -> &'static AtomicU64 {
    match stream {
        Stream::Requests => &REQUESTS,
        Stream::Jobs => &JOBS,
    }
}

/// Counts one acknowledged dead letter.
pub fn dead_lettered(stream: Stream, reason: &'static str) {
    counter(stream).fetch_add(1, Ordering::Relaxed);
    *BY_REASON
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry((stream, reason))
        .or_default() += 1;
}

/// Dead letters produced by this process for `stream` so far.
pub fn dead_letters(stream: Stream) -> u64 {
    counter(stream).load(Ordering::Relaxed)
}

/// A copy of the dead-letter counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterCounts {
    pub requests: u64,
    pub jobs: u64,
    pub by_reason: BTreeMap<(Stream, &'static str), u64>,
}

pub fn snapshot() -> DeadLetterCounts {
    DeadLetterCounts {
        requests: dead_letters(Stream::Requests),
        jobs: dead_letters(Stream::Jobs),
        by_reason: BY_REASON
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone(),
    }
}

impl fmt::Display for DeadLetterCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "dead letters: requests={} jobs={}",
            self.requests, self.jobs
        )?;
        for ((stream, reason), n) in &self.by_reason {
            write!(f, " {}/{reason}={n}", stream.as_str())?;
        }
        Ok(())
    }
}

/// Logs the dead-letter counts when they changed, at most once per `every`, and always on
/// `final_report` (so a role's stop line says how much it dead-lettered).
pub struct Reporter {
    every: Duration,
    last_at: Option<Instant>,
    last: DeadLetterCounts,
}

impl Reporter {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last_at: None,
            last: DeadLetterCounts::default(),
        }
    }

    /// Call often (e.g. after each flush); logs only if something changed and `every` passed.
    pub fn tick(&mut self, role: &'static str) {
        if self.last_at.is_some_and(|at| at.elapsed() < self.every) {
            return;
        }
        let now = snapshot();
        if now != self.last {
            tracing::warn!(role, counts = %now, "dead letters so far (see `recq dlq list`)");
            self.last = now;
            self.last_at = Some(Instant::now());
        }
    }

    pub fn final_report(&self, role: &'static str) {
        tracing::info!(role, counts = %snapshot(), "dead-letter summary");
    }
}

static ERASED_DROPPED: AtomicU64 = AtomicU64::new(0);

/// Counts job changes (events coalesced per job within a batch) the projector dropped
/// because their user was erased.
pub fn erased_user_events_dropped(n: u64) {
    ERASED_DROPPED.fetch_add(n, Ordering::Relaxed);
}

/// Job changes dropped for erased users by this process so far.
pub fn erased_user_events() -> u64 {
    ERASED_DROPPED.load(Ordering::Relaxed)
}

static STALE: AtomicU64 = AtomicU64::new(0);

/// Counts job changes that met a newer stored row and so changed nothing (stale events,
/// or duplicates arriving after the row moved on). Changes superseded within one batch are
/// coalesced away before they reach the table and are not counted here.
pub fn stale_updates_ignored(n: u64) {
    STALE.fetch_add(n, Ordering::Relaxed);
}

/// Stale job changes ignored by this process so far.
pub fn stale_updates() -> u64 {
    STALE.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letters_are_counted_per_stream_and_reason() {
        let before = snapshot();
        dead_lettered(Stream::Jobs, "invalid-field");
        dead_lettered(Stream::Jobs, "invalid-field");
        let after = snapshot();
        assert!(after.jobs >= before.jobs + 2);
        let reason = |c: &DeadLetterCounts| {
            c.by_reason
                .get(&(Stream::Jobs, "invalid-field"))
                .copied()
                .unwrap_or(0)
        };
        assert!(reason(&after) >= reason(&before) + 2);
        assert!(after.to_string().contains("jobs/invalid-field="));
    }
}

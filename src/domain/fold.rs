//! The fold: how events become rows. The live projector, `recq verify` and rebuilds all use
//! these functions, so the table is the same however the events arrive.
//!
//! A row is the state carried by the job's newest event: the highest `seq`, and on a tie the
//! later one in the log. Stale events are no-ops, and so are duplicates, which carry the same
//! state. Ties go to the later event because that is the one log compaction keeps: a job
//! re-run as the same attempt (its worker died before the projection showed it finished)
//! emits the same `seq` again with new times, and a compacted log holds only the re-run. A tombstone removes the row;
//! events after it start from nothing. An erased user's rows are removed and every event for
//! them is dropped, before or after the erasure, so the result does not depend on how the
//! erasures topic interleaves with the others.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use super::events::{JobStatusChanged, RecommendationsReady, UserErased};
use super::ids::{JobId, UserId};
use super::status::JobStatus;

/// A row of `recommendation_queues`.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    pub job_id: JobId,
    pub user_id: UserId,
    pub status: JobStatus,
    pub processing_time: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub attempt: i32,
    pub last_error: Option<String>,
    pub seq: i64,
}

impl JobRow {
    pub fn from_event(e: &JobStatusChanged) -> Self {
        Self {
            job_id: e.job_id,
            user_id: e.user_id,
            status: e.status,
            processing_time: e.processing_time,
            created_at: e.queued_at,
            updated_at: e.occurred_at,
            started_at: e.started_at,
            finished_at: e.finished_at,
            attempt: e.attempt,
            last_error: e.error.clone(),
            seq: e.seq,
        }
    }
}

/// A record on the jobs topic: a status change, or a tombstone (null value) removing the job.
#[derive(Debug, Clone, PartialEq)]
pub enum JobEvent {
    Status(JobStatusChanged),
    Tombstone(JobId),
}

impl JobEvent {
    pub fn job_id(&self) -> JobId {
        match self {
            Self::Status(e) => e.job_id,
            Self::Tombstone(id) => *id,
        }
    }
}

/// A record on the recommendations topic: a top-N list, or a tombstone removing it.
#[derive(Debug, Clone, PartialEq)]
pub enum RecommendationsEvent {
    Ready(RecommendationsReady),
    Tombstone(JobId),
}

impl RecommendationsEvent {
    pub fn job_id(&self) -> JobId {
        match self {
            Self::Ready(e) => e.job_id,
            Self::Tombstone(id) => *id,
        }
    }
}

/// Applies one status event to a job's current row.
pub fn apply(row: Option<JobRow>, event: &JobEvent) -> Option<JobRow> {
    match (row, event) {
        (_, JobEvent::Tombstone(_)) => None,
        (Some(row), JobEvent::Status(e)) if row.seq > e.seq => Some(row),
        (_, JobEvent::Status(e)) => Some(JobRow::from_event(e)),
    }
}

/// Applies one recommendations event: the first list of a job wins (a redelivered job computes
/// the same list), a tombstone removes it.
pub fn apply_recommendations(
    current: Option<RecommendationsReady>,
    event: &RecommendationsEvent,
) -> Option<RecommendationsReady> {
    match (current, event) {
        (_, RecommendationsEvent::Tombstone(_)) => None,
        (Some(current), RecommendationsEvent::Ready(_)) => Some(current),
        (None, RecommendationsEvent::Ready(e)) => Some(e.clone()),
    }
}

/// What a batch of events does to one key, relative to whatever the table already holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending<T> {
    /// A tombstone was seen: the stored value must be removed before `value` is applied.
    pub reset: bool,
    /// The value the batch leaves behind; applied to the stored value with the same guard.
    pub value: Option<T>,
}

impl Pending<JobRow> {
    /// What the database does with this: delete if reset, then upsert unless the stored row
    /// is newer. The SQL in `db::jobs` implements exactly this.
    pub fn apply_to(self, stored: Option<JobRow>) -> Option<JobRow> {
        let stored = if self.reset { None } else { stored };
        match (stored, self.value) {
            (Some(stored), Some(new)) if stored.seq > new.seq => Some(stored),
            (stored, None) => stored,
            (_, Some(new)) => Some(new),
        }
    }
}

/// Coalesces a batch of events per job, in batch order, so that applying the result to the
/// table in one statement per kind gives the same rows as applying the events one by one.
pub fn coalesce_jobs<'a>(
    events: impl IntoIterator<Item = &'a JobEvent>,
) -> BTreeMap<JobId, Pending<JobRow>> {
    coalesce(
        events,
        JobEvent::job_id,
        |e| matches!(e, JobEvent::Tombstone(_)),
        apply,
    )
}

/// Coalesces a batch of recommendations events per job; see [`coalesce_jobs`].
pub fn coalesce_recommendations<'a>(
    events: impl IntoIterator<Item = &'a RecommendationsEvent>,
) -> BTreeMap<JobId, Pending<RecommendationsReady>> {
    coalesce(
        events,
        RecommendationsEvent::job_id,
        |e| matches!(e, RecommendationsEvent::Tombstone(_)),
        apply_recommendations,
    )
}

fn coalesce<'a, E: 'a, T>(
    events: impl IntoIterator<Item = &'a E>,
    key: impl Fn(&E) -> JobId,
    is_tombstone: impl Fn(&E) -> bool,
    step: impl Fn(Option<T>, &E) -> Option<T>,
) -> BTreeMap<JobId, Pending<T>> {
    let mut out: BTreeMap<JobId, Pending<T>> = BTreeMap::new();
    for event in events {
        let pending = out.entry(key(event)).or_insert(Pending {
            reset: false,
            value: None,
        });
        pending.reset |= is_tombstone(event);
        pending.value = step(pending.value.take(), event);
    }
    out
}

/// The whole projection as a fold of the log: what the tables must contain.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Projection {
    pub jobs: BTreeMap<JobId, JobRow>,
    pub recommendations: BTreeMap<JobId, RecommendationsReady>,
    pub erased: BTreeSet<UserId>,
    /// Events dropped because their user was erased.
    pub dropped: u64,
}

impl Projection {
    pub fn apply_job(&mut self, event: &JobEvent) {
        if let JobEvent::Status(e) = event
            && self.erased.contains(&e.user_id)
        {
            self.dropped += 1;
            return;
        }
        step_map(&mut self.jobs, event.job_id(), |row| apply(row, event));
    }

    pub fn apply_recommendations(&mut self, event: &RecommendationsEvent) {
        if let RecommendationsEvent::Ready(e) = event
            && self.erased.contains(&e.user_id)
        {
            self.dropped += 1;
            return;
        }
        step_map(&mut self.recommendations, event.job_id(), |current| {
            apply_recommendations(current, event)
        });
    }

    pub fn apply_erasure(&mut self, event: &UserErased) {
        let user = event.user_id;
        self.erased.insert(user);
        self.jobs.retain(|_, row| row.user_id != user);
        self.recommendations.retain(|_, list| list.user_id != user);
    }
}

fn step_map<T>(
    map: &mut BTreeMap<JobId, T>,
    key: JobId,
    step: impl FnOnce(Option<T>) -> Option<T>,
) {
    match map.entry(key) {
        Entry::Occupied(slot) => {
            let (key, current) = slot.remove_entry();
            if let Some(next) = step(Some(current)) {
                map.insert(key, next);
            }
        }
        Entry::Vacant(slot) => {
            if let Some(next) = step(None) {
                slot.insert(next);
            }
        }
    }
}

#[cfg(test)]
mod tests;

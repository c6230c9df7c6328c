//! The events recq reads and writes. Wire encoding lives in `kafka::codec`; these are the
//! validated, typed forms.

use chrono::{DateTime, SubsecRound, Utc};
use uuid::Uuid;

use super::ids::{JobId, MovieId, UserId};
use super::status::{JobStatus, sequence};

/// Current time at the precision the wire and Postgres keep (microseconds), so a value read
/// back compares equal to the value written.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// "Recommend movies for this user": the input of the worker, keyed by user id.
#[derive(Debug, Clone, PartialEq)]
pub struct RecommendationRequested {
    pub job_id: JobId,
    pub user_id: UserId,
    pub requested_at: DateTime<Utc>,
}

/// A job's status changed. Every event carries the whole state of the job, so the row is a
/// function of the newest event (highest `seq`), and compaction keeping only the newest event
/// per job loses nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct JobStatusChanged {
    /// Deterministic: `job_id.event_id(seq)`.
    pub event_id: Uuid,
    pub job_id: JobId,
    pub user_id: UserId,
    pub status: JobStatus,
    pub seq: i64,
    pub attempt: i32,
    pub occurred_at: DateTime<Utc>,
    /// When the request was made; becomes the row's `created_at`.
    pub queued_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Whole seconds between `started_at` and `finished_at` (0 until finished).
    pub processing_time: i32,
    pub error: Option<String>,
}

/// One entry of a job's top-N list.
#[derive(Debug, Clone, PartialEq)]
pub struct RecommendedMovie {
    pub rank: i16,
    pub movie_id: MovieId,
    pub title: String,
    pub score: f64,
}

/// The result of a finished job, keyed by job id on the recommendations topic.
#[derive(Debug, Clone, PartialEq)]
pub struct RecommendationsReady {
    pub job_id: JobId,
    pub user_id: UserId,
    pub generated_at: DateTime<Utc>,
    pub items: Vec<RecommendedMovie>,
}

/// A user's data must be erased; keyed by user id on the erasures topic.
#[derive(Debug, Clone, PartialEq)]
pub struct UserErased {
    pub user_id: UserId,
    pub erased_at: DateTime<Utc>,
}

/// One attempt at running a job: produces its status events in order.
#[derive(Debug, Clone, Copy)]
pub struct JobRun {
    pub job_id: JobId,
    pub user_id: UserId,
    pub attempt: i32,
    pub queued_at: DateTime<Utc>,
}

impl JobRun {
    pub fn first_attempt(request: &RecommendationRequested) -> Self {
        Self {
            job_id: request.job_id,
            user_id: request.user_id,
            attempt: 1,
            queued_at: request.requested_at,
        }
    }

    fn event(&self, status: JobStatus, at: DateTime<Utc>) -> JobStatusChanged {
        let seq = sequence(self.attempt, status);
        JobStatusChanged {
            event_id: self.job_id.event_id(seq),
            job_id: self.job_id,
            user_id: self.user_id,
            status,
            seq,
            attempt: self.attempt,
            occurred_at: at,
            queued_at: self.queued_at,
            started_at: None,
            finished_at: None,
            processing_time: 0,
            error: None,
        }
    }

    pub fn queued(&self, at: DateTime<Utc>) -> JobStatusChanged {
        self.event(JobStatus::Queue, at)
    }

    pub fn started(&self, at: DateTime<Utc>) -> JobStatusChanged {
        JobStatusChanged {
            started_at: Some(at),
            ..self.event(JobStatus::Process, at)
        }
    }

    pub fn done(&self, started_at: DateTime<Utc>, at: DateTime<Utc>) -> JobStatusChanged {
        self.finished(JobStatus::Done, started_at, at, None)
    }

    pub fn failed(
        &self,
        started_at: DateTime<Utc>,
        at: DateTime<Utc>,
        error: String,
    ) -> JobStatusChanged {
        self.finished(JobStatus::Failed, started_at, at, Some(error))
    }

    fn finished(
        &self,
        status: JobStatus,
        started_at: DateTime<Utc>,
        at: DateTime<Utc>,
        error: Option<String>,
    ) -> JobStatusChanged {
        JobStatusChanged {
            started_at: Some(started_at),
            finished_at: Some(at),
            processing_time: whole_seconds(started_at, at),
            error,
            ..self.event(status, at)
        }
    }
}

/// Whole seconds from `from` to `to`, rounded down, never negative.
pub fn whole_seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> i32 {
    i32::try_from((to - from).num_seconds().max(0)).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    fn run() -> JobRun {
        JobRun {
            job_id: JobId::new_random(),
            user_id: UserId::new(7).unwrap(),
            attempt: 1,
            queued_at: now(),
        }
    }

    #[test]
    fn a_run_emits_increasing_sequences_with_deterministic_ids() {
        let run = run();
        let t0 = now();
        let q = run.queued(t0);
        let p = run.started(t0);
        let d = run.done(t0, t0 + Duration::milliseconds(2500));
        assert!(q.seq < p.seq && p.seq < d.seq);
        assert_eq!(d.event_id, run.job_id.event_id(d.seq));
        assert_eq!(d.processing_time, 2);
        assert_eq!(d.status, JobStatus::Done);
        assert_eq!(p.started_at, Some(t0));
    }

    #[test]
    fn processing_time_is_never_negative() {
        let t = now();
        assert_eq!(whole_seconds(t, t - Duration::seconds(3)), 0);
        assert_eq!(whole_seconds(t, t + Duration::milliseconds(999)), 0);
        assert_eq!(whole_seconds(t, t + Duration::seconds(61)), 61);
    }
}

//! Job statuses and their order. A job moves `queue` → `process` → `done` | `failed`, and a
//! retried job may go back to `process` only with a higher attempt number.

use std::fmt;
use std::str::FromStr;

/// The status of a recommendation job, with the seed's values plus `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobStatus {
    Queue,
    Process,
    Done,
    Failed,
}

impl JobStatus {
    pub const ALL: [JobStatus; 4] = [Self::Queue, Self::Process, Self::Done, Self::Failed];

    /// The name used on the wire and in the database.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Queue => "queue",
            Self::Process => "process",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Done | Self::Failed)
    }

    /// Position of this status within one attempt: queue 1, process 2, done/failed 3.
    pub fn phase(&self) -> i64 {
        match self {
            Self::Queue => 1,
            Self::Process => 2,
            Self::Done | Self::Failed => 3,
        }
    }
}

/// The per-job event sequence of `status` within `attempt`: later statuses and later attempts
/// always carry higher numbers, so "newer" is a plain integer comparison.
pub fn sequence(attempt: i32, status: JobStatus) -> i64 {
    i64::from(attempt.max(1)) * 4 + status.phase()
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown job status {0:?} (expected queue, process, done or failed)")]
pub struct UnknownStatus(pub String);

impl FromStr for JobStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in JobStatus::ALL {
            assert_eq!(status.as_str().parse::<JobStatus>(), Ok(status));
        }
        assert!("queued".parse::<JobStatus>().is_err());
    }

    #[test]
    fn sequences_grow_with_status_and_attempt() {
        assert!(sequence(1, JobStatus::Queue) < sequence(1, JobStatus::Process));
        assert!(sequence(1, JobStatus::Process) < sequence(1, JobStatus::Done));
        assert_eq!(sequence(1, JobStatus::Done), sequence(1, JobStatus::Failed));
        assert!(sequence(1, JobStatus::Done) < sequence(2, JobStatus::Queue));
        assert!(sequence(2, JobStatus::Process) < sequence(2, JobStatus::Done));
    }
}

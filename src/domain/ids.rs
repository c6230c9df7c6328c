//! Identifiers. Parsed once at the edge; inside recq an id is always valid.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// A recommendation job. Chosen by whoever submits the request and carried by every event
/// about the job, so that redelivered work maps onto the same row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(Uuid);

impl JobId {
    pub fn new_random() -> Self {
        Self(Uuid::new_v4())
    }

    pub fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }

    /// Deterministic id of the event with sequence `seq` of this job: a redelivered job
    /// produces byte-identical event ids, so consumers can deduplicate on them.
    pub fn event_id(&self, seq: i64) -> Uuid {
        Uuid::new_v5(&self.0, format!("status/{seq}").as_bytes())
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for JobId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s.trim())
            .map(Self)
            .map_err(|_| IdError::JobId(s.to_owned()))
    }
}

/// A MovieLens user id: a positive 32-bit integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(i32);

impl UserId {
    pub fn new(id: i64) -> Result<Self, IdError> {
        i32::try_from(id)
            .ok()
            .filter(|id| *id > 0)
            .map(Self)
            .ok_or(IdError::UserId(id))
    }

    pub fn get(&self) -> i32 {
        self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for UserId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let n: i64 = s
            .trim()
            .parse()
            .map_err(|_| IdError::NotANumber(s.to_owned()))?;
        Self::new(n)
    }
}

/// A MovieLens movie (item) id: a positive 32-bit integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MovieId(i32);

impl MovieId {
    pub fn new(id: i64) -> Result<Self, IdError> {
        i32::try_from(id)
            .ok()
            .filter(|id| *id > 0)
            .map(Self)
            .ok_or(IdError::MovieId(id))
    }

    pub fn get(&self) -> i32 {
        self.0
    }
}

impl fmt::Display for MovieId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("job id {0:?} is not a UUID")]
    JobId(String),
    #[error("user id {0} is out of range (must be 1..=2147483647)")]
    UserId(i64),
    #[error("movie id {0} is out of range (must be 1..=2147483647)")]
    MovieId(i64),
    #[error("{0:?} is not a number")]
    NotANumber(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_must_be_positive_and_fit_in_32_bits() {
        assert!(UserId::new(1).is_ok());
        assert_eq!(UserId::new(0), Err(IdError::UserId(0)));
        assert_eq!(UserId::new(-5), Err(IdError::UserId(-5)));
        assert_eq!(
            UserId::new(i64::from(i32::MAX) + 1),
            Err(IdError::UserId(2_147_483_648))
        );
        assert_eq!("42".parse::<UserId>().map(|u| u.get()), Ok(42));
        assert!("4x".parse::<UserId>().is_err());
    }

    #[test]
    fn event_ids_are_deterministic_per_job_and_sequence() {
        let job = JobId::new_random();
        assert_eq!(job.event_id(2), job.event_id(2));
        assert_ne!(job.event_id(2), job.event_id(3));
        assert_ne!(job.event_id(2), JobId::new_random().event_id(2));
    }
}

//! Checks a request must pass before the worker runs it, beyond what the codec decodes:
//! a size limit, a key that names the request's user (requests are partitioned by user), and
//! a job id the worker has not run recently.
//!
//! Invariant: a failed check is poison with a stable code, never a silent drop; a duplicate of
//! a job this worker already ran (same job id, same user) is skipped because running it again
//! would only reproduce the same events (deterministic ids and sequences).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use rdkafka::Message;
use rdkafka::message::OwnedMessage;

use crate::domain::{JobId, RecommendationRequested, UserId};
use crate::kafka::codec::Poison;

/// Why a request is dead-lettered: the stable kind and a readable detail.
pub type Rejection = (Poison, String);

/// Checks done before decoding: the value's size and the presence of a key.
pub fn check_envelope(message: &OwnedMessage, max_bytes: usize) -> Result<(), Rejection> {
    let size = message.payload().map_or(0, <[u8]>::len);
    if size > max_bytes {
        return Err((
            Poison::TooLarge,
            format!("the value has {size} bytes, more than the limit of {max_bytes}"),
        ));
    }
    match message.key() {
        None | Some([]) => Err((
            Poison::BadKey,
            "the record has no key; requests must be keyed by their user id".to_owned(),
        )),
        Some(_) => Ok(()),
    }
}

/// The key must be the request's user id in decimal: partitioning by user is the contract
/// that keeps one user's requests in order.
pub fn check_key(
    message: &OwnedMessage,
    request: &RecommendationRequested,
) -> Result<(), Rejection> {
    let key = message.key().unwrap_or_default();
    let parsed = std::str::from_utf8(key)
        .ok()
        .and_then(|k| k.trim().parse::<i64>().ok());
    if parsed == Some(i64::from(request.user_id.get())) {
        Ok(())
    } else {
        Err((
            Poison::BadKey,
            format!(
                "the key {:?} is not the request's user id {}",
                String::from_utf8_lossy(key),
                request.user_id
            ),
        ))
    }
}

/// What to do with a request, given the jobs this worker ran recently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Not seen recently: run it.
    Run,
    /// Same job id and user as a job this worker ran or is running: skip it.
    Duplicate,
    /// Same job id as a recent job of another user: poison.
    Conflict(UserId),
}

/// A bounded memory of recently claimed job ids (oldest forgotten first). Across restarts the
/// "no second visible outcome" guarantee comes from deterministic events, not from this set.
pub struct RecentJobs {
    capacity: usize,
    inner: Mutex<(HashMap<JobId, UserId>, VecDeque<JobId>)>,
}

impl RecentJobs {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new((HashMap::new(), VecDeque::new())),
        }
    }

    /// Claims `job` for `user`; only a `Run` claim is recorded.
    pub fn claim(&self, job: JobId, user: UserId) -> Claim {
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let (users, order) = &mut *guard;
        match users.get(&job) {
            Some(owner) if *owner == user => return Claim::Duplicate,
            Some(owner) => return Claim::Conflict(*owner),
            None => {}
        }
        if order.len() >= self.capacity
            && let Some(oldest) = order.pop_front()
        {
            users.remove(&oldest);
        }
        users.insert(job, user);
        order.push_back(job);
        Claim::Run
    }

    /// Forgets a claim whose job did not finish (cancelled), so a redelivery runs it.
    pub fn release(&self, job: JobId) {
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let (users, order) = &mut *guard;
        if users.remove(&job).is_some() {
            order.retain(|j| *j != job);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: i64) -> UserId {
        UserId::new(id).unwrap()
    }

    #[test]
    fn a_job_id_is_run_once_and_a_reuse_for_another_user_is_a_conflict() {
        let recent = RecentJobs::new(10);
        let job = JobId::new_random();
        assert_eq!(recent.claim(job, user(1)), Claim::Run);
        assert_eq!(recent.claim(job, user(1)), Claim::Duplicate);
        assert_eq!(recent.claim(job, user(2)), Claim::Conflict(user(1)));
        recent.release(job);
        assert_eq!(recent.claim(job, user(2)), Claim::Run);
    }

    #[test]
    fn the_oldest_job_ids_are_forgotten_beyond_the_capacity() {
        let recent = RecentJobs::new(2);
        let jobs: Vec<JobId> = (0..3).map(|_| JobId::new_random()).collect();
        for job in &jobs {
            assert_eq!(recent.claim(*job, user(1)), Claim::Run);
        }
        assert_eq!(recent.claim(jobs[0], user(1)), Claim::Run);
        assert_eq!(recent.claim(jobs[2], user(1)), Claim::Duplicate);
    }

    fn message(key: Option<&[u8]>, value: &[u8]) -> OwnedMessage {
        OwnedMessage::new(
            Some(value.to_vec()),
            key.map(<[u8]>::to_vec),
            "t".into(),
            rdkafka::Timestamp::NotAvailable,
            0,
            0,
            None,
        )
    }

    #[test]
    fn oversized_values_and_missing_keys_are_rejected_before_decoding() {
        assert!(check_envelope(&message(Some(b"1"), &[0; 10]), 10).is_ok());
        let (kind, _) = check_envelope(&message(Some(b"1"), &[0; 11]), 10).unwrap_err();
        assert_eq!(kind, Poison::TooLarge);
        let (kind, _) = check_envelope(&message(None, &[0; 3]), 10).unwrap_err();
        assert_eq!(kind, Poison::BadKey);
        let (kind, _) = check_envelope(&message(Some(b""), &[0; 3]), 10).unwrap_err();
        assert_eq!(kind, Poison::BadKey);
    }

    #[test]
    fn the_key_must_be_the_requests_user_id() {
        let request = RecommendationRequested {
            job_id: JobId::new_random(),
            user_id: user(42),
            requested_at: crate::domain::events::now(),
        };
        assert!(check_key(&message(Some(b"42"), b"x"), &request).is_ok());
        assert!(check_key(&message(Some(b"43"), b"x"), &request).is_err());
        assert!(check_key(&message(Some(b"user-42"), b"x"), &request).is_err());
    }
}

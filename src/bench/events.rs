//! The benchmark's event stream: status events for many jobs, in the order a busy worker
//! group would emit them, with redeliveries. Deterministic for a given size, so every figure
//! of a run (and every run) sees the same events.

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use crate::domain::{JobId, JobRun, JobStatusChanged, UserId};

/// MovieLens 100k has users 1..=943; generated jobs cycle through them.
pub const USERS: i32 = 943;

/// One status event with the partition and offset it would have on the jobs topic.
#[derive(Debug, Clone)]
pub struct StreamEvent {
    pub partition: i32,
    pub offset: i64,
    pub event: JobStatusChanged,
}

/// How the stream is shaped.
#[derive(Debug, Clone, Copy)]
pub struct StreamShape {
    pub jobs: usize,
    /// Jobs in flight at once: a job's events are spread over about `4 × window` events, so
    /// with a window larger than the projector's batch almost every batch sees one event per
    /// job and coalescing saves nothing (the projector's least favourable case).
    pub window: usize,
    pub partitions: i32,
}

/// splitmix64: a fast, well-mixed bijection, for ids that look random but are reproducible.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn job_id(j: u64) -> JobId {
    let high = mix(j.wrapping_mul(2));
    let low = mix(j.wrapping_mul(2).wrapping_add(1));
    JobId::from_uuid(Uuid::from_u64_pair(high, low))
}

fn base_time() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default() // 2026-01-01T00:00:00Z
}

/// Four events per job: `queue`, `process`, `done`, and one redelivery — even jobs see their
/// `done` twice, odd jobs their `process` twice (a worker restarted mid-job re-emits it).
/// Redeliveries carry the same sequence, so they change no row.
pub fn generate(shape: StreamShape) -> Vec<StreamEvent> {
    let mut out = Vec::with_capacity(shape.jobs * 4);
    let mut offsets = vec![0i64; shape.partitions.max(1) as usize];
    let mut push = |out: &mut Vec<StreamEvent>, j: usize, event: JobStatusChanged| {
        let partition = (mix(j as u64 ^ 0x5EED) % offsets.len() as u64) as usize;
        out.push(StreamEvent {
            partition: partition as i32,
            offset: offsets[partition],
            event,
        });
        offsets[partition] += 1;
    };
    let t0 = base_time();
    let window = shape.window.max(1);
    let mut first = 0;
    while first < shape.jobs {
        let chunk = first..(first + window).min(shape.jobs);
        let mut runs = Vec::with_capacity(window);
        for j in chunk {
            // Cycles within 1..=USERS, always a valid user id.
            let Ok(user_id) = UserId::new(i64::from(j as i32 % USERS + 1)) else {
                continue;
            };
            let run = JobRun {
                job_id: job_id(j as u64),
                user_id,
                attempt: 1,
                queued_at: t0 + Duration::milliseconds(j as i64),
            };
            runs.push((j, run));
        }
        for (j, run) in &runs {
            push(&mut out, *j, run.queued(run.queued_at));
        }
        for (j, run) in &runs {
            let started = run.started(run.queued_at + Duration::milliseconds(1));
            if j % 2 == 1 {
                push(&mut out, *j, started.clone());
            }
            push(&mut out, *j, started);
        }
        for (j, run) in &runs {
            let started_at = run.queued_at + Duration::milliseconds(1);
            let done = run.done(started_at, started_at + Duration::milliseconds(1500));
            if j % 2 == 0 {
                push(&mut out, *j, done.clone());
            }
            push(&mut out, *j, done);
        }
        first += window;
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use super::*;
    use crate::domain::{JobEvent, JobStatus, Projection};

    #[test]
    fn a_million_events_cover_a_quarter_million_jobs_with_redeliveries() {
        let events = generate(StreamShape {
            jobs: 250_000,
            window: 10_000,
            partitions: 6,
        });
        assert_eq!(events.len(), 1_000_000);
        let jobs: HashSet<_> = events.iter().map(|e| e.event.job_id).collect();
        assert_eq!(jobs.len(), 250_000);
        let mut per_status: BTreeMap<JobStatus, usize> = BTreeMap::new();
        for e in &events {
            *per_status.entry(e.event.status).or_default() += 1;
        }
        assert_eq!(per_status[&JobStatus::Queue], 250_000);
        assert_eq!(per_status[&JobStatus::Process], 375_000);
        assert_eq!(per_status[&JobStatus::Done], 375_000);
        let distinct: HashSet<_> = events.iter().map(|e| e.event.event_id).collect();
        assert_eq!(distinct.len(), 750_000, "redeliveries repeat an event id");
    }

    #[test]
    fn offsets_are_consecutive_per_partition_and_every_job_ends_done() {
        let events = generate(StreamShape {
            jobs: 1_000,
            window: 64,
            partitions: 3,
        });
        let mut next = BTreeMap::new();
        let mut projection = Projection::default();
        for e in &events {
            let expected = next.entry(e.partition).or_insert(0);
            assert_eq!(e.offset, *expected);
            *expected += 1;
            projection.apply_job(&JobEvent::Status(e.event.clone()));
        }
        assert_eq!(next.len(), 3);
        assert_eq!(projection.jobs.len(), 1_000);
        assert!(
            projection
                .jobs
                .values()
                .all(|r| r.status == JobStatus::Done && r.attempt == 1)
        );
    }
}

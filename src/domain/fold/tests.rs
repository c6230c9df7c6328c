use chrono::Duration;

use super::*;
use crate::domain::events::{JobRun, now};

fn run(user: i64) -> JobRun {
    JobRun {
        job_id: JobId::new_random(),
        user_id: UserId::new(user).unwrap(),
        attempt: 1,
        queued_at: now(),
    }
}

fn lifecycle(run: &JobRun) -> Vec<JobEvent> {
    let t0 = run.queued_at;
    vec![
        JobEvent::Status(run.queued(t0)),
        JobEvent::Status(run.started(t0 + Duration::milliseconds(5))),
        JobEvent::Status(run.done(
            t0 + Duration::milliseconds(5),
            t0 + Duration::milliseconds(1500),
        )),
    ]
}

fn fold(events: &[JobEvent]) -> Option<JobRow> {
    events.iter().fold(None, apply)
}

#[test]
fn a_full_lifecycle_ends_done_with_its_processing_time() {
    let run = run(1);
    let row = fold(&lifecycle(&run)).unwrap();
    assert_eq!(row.status, JobStatus::Done);
    assert_eq!(row.created_at, run.queued_at);
    assert_eq!(row.processing_time, 1);
    assert!(row.started_at.is_some() && row.finished_at.is_some());
}

#[test]
fn a_redelivered_event_changes_nothing() {
    let run = run(1);
    let mut events = lifecycle(&run);
    let once = fold(&events);
    let mut redelivered = events[1].clone();
    if let JobEvent::Status(e) = &mut redelivered {
        e.occurred_at += Duration::seconds(30);
    }
    events.push(redelivered);
    events.push(events[2].clone());
    assert_eq!(fold(&events), once);
}

#[test]
fn events_out_of_order_leave_the_latest_state() {
    let run = run(1);
    let mut events = lifecycle(&run);
    events.reverse();
    assert_eq!(fold(&events).map(|r| r.status), Some(JobStatus::Done));
}

#[test]
fn a_tombstone_removes_the_row_and_later_events_start_over() {
    let run = run(1);
    let mut events = lifecycle(&run);
    events.push(JobEvent::Tombstone(run.job_id));
    assert_eq!(fold(&events), None);
    events.push(JobEvent::Status(run.queued(now())));
    assert_eq!(fold(&events).map(|r| r.status), Some(JobStatus::Queue));
}

#[test]
fn the_first_recommendations_list_of_a_job_wins() {
    let run = run(3);
    let list = |title: &str| RecommendationsReady {
        job_id: run.job_id,
        user_id: run.user_id,
        generated_at: now(),
        items: vec![crate::domain::events::RecommendedMovie {
            rank: 1,
            movie_id: crate::domain::MovieId::new(1).unwrap(),
            title: title.to_owned(),
            score: 4.5,
        }],
    };
    let mut p = Projection::default();
    p.apply_recommendations(&RecommendationsEvent::Ready(list("first")));
    p.apply_recommendations(&RecommendationsEvent::Ready(list("second")));
    assert_eq!(p.recommendations[&run.job_id].items[0].title, "first");
    p.apply_recommendations(&RecommendationsEvent::Tombstone(run.job_id));
    assert!(p.recommendations.is_empty());
}

/// A tiny deterministic generator, so the property below needs no extra crate.
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
}

#[test]
fn coalescing_a_batch_equals_applying_its_events_one_by_one() {
    let runs: Vec<JobRun> = (1..=5).map(run).collect();
    let pool: Vec<JobEvent> = runs
        .iter()
        .flat_map(|r| {
            let mut events = lifecycle(r);
            let retry = JobRun { attempt: 2, ..*r };
            events.push(JobEvent::Status(retry.started(now())));
            events.push(JobEvent::Tombstone(r.job_id));
            events
        })
        .collect();
    let mut rng = Lcg(42);
    for _ in 0..2_000 {
        let prefix: Vec<JobEvent> = (0..rng.below(8))
            .map(|_| pool[rng.below(pool.len())].clone())
            .collect();
        let batch: Vec<JobEvent> = (0..rng.below(12))
            .map(|_| pool[rng.below(pool.len())].clone())
            .collect();

        let mut sequential = Projection::default();
        prefix
            .iter()
            .chain(&batch)
            .for_each(|e| sequential.apply_job(e));

        let mut stored = Projection::default();
        prefix.iter().for_each(|e| stored.apply_job(e));
        let mut batched = stored.jobs.clone();
        for (job, pending) in coalesce_jobs(&batch) {
            match pending.apply_to(batched.remove(&job)) {
                Some(row) => batched.insert(job, row),
                None => None,
            };
        }
        assert_eq!(
            batched, sequential.jobs,
            "prefix {prefix:?}\nbatch {batch:?}"
        );
    }
}

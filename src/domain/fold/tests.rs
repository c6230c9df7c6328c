use chrono::Duration;

use super::*;
use crate::domain::events::{JobRun, UserErased, now};

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
fn a_job_re_run_as_the_same_attempt_shows_the_re_run_as_a_compacted_log_would() {
    let run = run(1);
    let mut events = lifecycle(&run);
    let t = run.queued_at + Duration::seconds(20);
    let again = [
        JobEvent::Status(run.queued(t)),
        JobEvent::Status(run.started(t)),
        JobEvent::Status(run.done(t, t + Duration::milliseconds(40))),
    ];
    events.extend(again.iter().cloned());
    let row = fold(&events).unwrap();
    assert_eq!(
        Some(row.clone()),
        fold(&again[2..]),
        "the newest event per job alone"
    );
    assert_eq!(row.started_at, Some(t));
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

/// A random event of a random job among `runs`: any phase of attempts 1-3, with random
/// times, or a tombstone; done and failed of one attempt share a `seq` (a tie).
fn random_event(rng: &mut Lcg, runs: &[JobRun]) -> JobEvent {
    let base = runs[rng.below(runs.len())];
    let run = JobRun {
        attempt: 1 + rng.below(3) as i32,
        ..base
    };
    let t = |rng: &mut Lcg| run.queued_at + Duration::milliseconds(rng.below(10_000) as i64);
    let (start, end) = (t(rng), t(rng));
    match rng.below(6) {
        0 => JobEvent::Status(run.queued(start)),
        1 => JobEvent::Status(run.started(start)),
        2 => JobEvent::Status(run.done(start, end)),
        3 => JobEvent::Status(run.failed(start, end, format!("error {}", rng.below(3)))),
        4 => JobEvent::Tombstone(run.job_id),
        _ => JobEvent::Status(run.done(end, start)), // finished before it started: still no panic
    }
}

/// The log as an at-least-once consumer sees it: reads forward and, now and then, is rewound
/// to an earlier offset (a crash before the commit, a rebalance) and reads again from there,
/// until it reaches the end. Every event is delivered at least once, in log order per run.
fn with_redeliveries(rng: &mut Lcg, log: &[JobEvent]) -> Vec<JobEvent> {
    let mut delivered = Vec::new();
    let mut position = 0;
    let mut rewinds = 0;
    while position < log.len() {
        delivered.push(log[position].clone());
        position += 1;
        if rewinds < 4 && rng.below(8) == 0 {
            position = rng.below(position + 1);
            rewinds += 1;
        }
    }
    delivered
}

/// Applies `events` the way the live projector does: split into batches at random points,
/// each coalesced and applied to the stored rows with the guard.
fn apply_in_batches(rng: &mut Lcg, events: &[JobEvent]) -> BTreeMap<JobId, JobRow> {
    let mut table = BTreeMap::new();
    let mut rest = events;
    while !rest.is_empty() {
        let (batch, tail) = rest.split_at(1 + rng.below(rest.len()));
        for (job, pending) in coalesce_jobs(batch) {
            if let Some(row) = pending.apply_to(table.remove(&job)) {
                table.insert(job, row);
            }
        }
        rest = tail;
    }
    table
}

#[test]
fn random_event_sequences_fold_to_the_same_table_whatever_is_redelivered() {
    let mut rng = Lcg(7);
    for case in 0..3_000 {
        let runs: Vec<JobRun> = (1..=1 + rng.below(4) as i64).map(run).collect();
        let log: Vec<JobEvent> = (0..rng.below(16))
            .map(|_| random_event(&mut rng, &runs))
            .collect();
        let mut once = Projection::default();
        log.iter().for_each(|e| once.apply_job(e));

        let delivered = with_redeliveries(&mut rng, &log);
        let mut again = Projection::default();
        delivered.iter().for_each(|e| again.apply_job(e));
        assert_eq!(
            again.jobs, once.jobs,
            "case {case}: log {log:#?}\ndelivered {delivered:#?}"
        );
        assert_eq!(
            apply_in_batches(&mut rng, &delivered),
            once.jobs,
            "case {case}: batched, log {log:#?}\ndelivered {delivered:#?}"
        );
    }
}

#[test]
fn random_recommendation_sequences_fold_to_the_same_lists_whatever_is_redelivered() {
    let mut rng = Lcg(11);
    for case in 0..2_000 {
        let runs: Vec<JobRun> = (1..=1 + rng.below(3) as i64).map(run).collect();
        let log: Vec<RecommendationsEvent> = (0..rng.below(12))
            .map(|_| {
                let run = runs[rng.below(runs.len())];
                if rng.below(4) == 0 {
                    return RecommendationsEvent::Tombstone(run.job_id);
                }
                RecommendationsEvent::Ready(RecommendationsReady {
                    job_id: run.job_id,
                    user_id: run.user_id,
                    generated_at: now(),
                    items: vec![crate::domain::events::RecommendedMovie {
                        rank: 1,
                        movie_id: crate::domain::MovieId::new(1 + rng.below(9) as i64).unwrap(),
                        title: format!("movie {}", rng.below(9)),
                        score: rng.below(50) as f64 / 10.0,
                    }],
                })
            })
            .collect();
        let mut once = Projection::default();
        log.iter().for_each(|e| once.apply_recommendations(e));
        let mut position = 0;
        let mut again = Projection::default();
        let mut rewinds = 0;
        while position < log.len() {
            again.apply_recommendations(&log[position]);
            position += 1;
            if rewinds < 4 && rng.below(6) == 0 {
                position = rng.below(position + 1);
                rewinds += 1;
            }
        }
        assert_eq!(
            again.recommendations, once.recommendations,
            "case {case}: {log:#?}"
        );
    }
}

#[test]
fn an_erased_users_rows_go_and_their_events_are_dropped_in_any_order() {
    let erased = run(11);
    let kept = run(12);
    let erasure = UserErased {
        user_id: erased.user_id,
        erased_at: now(),
    };
    let mut before = Projection::default();
    lifecycle(&erased)
        .iter()
        .chain(&lifecycle(&kept))
        .for_each(|e| before.apply_job(e));
    before.apply_erasure(&erasure);

    let mut after = Projection::default();
    after.apply_erasure(&erasure);
    lifecycle(&erased)
        .iter()
        .chain(&lifecycle(&kept))
        .for_each(|e| after.apply_job(e));

    assert_eq!(before.jobs, after.jobs);
    assert_eq!(before.jobs.keys().collect::<Vec<_>>(), vec![&kept.job_id]);
    assert_eq!(after.dropped, 3);
}

//! A projector batch: buffered records, and how they are applied in one transaction.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::PgPool;

use crate::db::{self, DbError};
use crate::domain::fold::{self, Pending};
use crate::domain::{
    JobEvent, JobId, JobRow, RecommendationsEvent, RecommendationsReady, UserErased, UserId,
};
use crate::kafka::consumer::Partition;
use crate::kafka::next_offset;

/// A decoded record of one of the projector's topics.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Job(JobEvent),
    Recommendations(RecommendationsEvent),
    Erasure(UserErased),
}

/// Where a batch is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The live tables in the `public` schema.
    Live,
    /// The shadow copies `recq rebuild` fills (schema `recq_rebuild`); `users` stays shared.
    Shadow,
}

/// Records in arrival order. `None` marks a dead-lettered record: it changes no row but
/// still moves its partition's position.
#[derive(Debug, Default)]
pub struct Batch {
    records: Vec<(Partition, i64, Option<Event>)>,
}

/// What one batch does, computed without touching the database.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub jobs: BTreeMap<JobId, Pending<JobRow>>,
    pub recommendations: BTreeMap<JobId, Pending<RecommendationsReady>>,
    pub erasures: Vec<UserErased>,
    pub positions: BTreeMap<Partition, i64>,
    /// Records skipped because the stored position was already past them.
    pub already_applied: usize,
    /// Partitions whose first new record lies beyond the stored position: (partition, stored
    /// position, first offset). Compaction removes records, so on a compacted log this is
    /// expected; on an uncompacted one it means records were skipped.
    pub gaps: Vec<(Partition, i64, i64)>,
}

impl Batch {
    pub fn push(&mut self, partition: Partition, offset: i64, event: Event) {
        self.records.push((partition, offset, Some(event)));
    }

    pub fn skip(&mut self, partition: Partition, offset: i64) {
        self.records.push((partition, offset, None));
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn partitions(&self) -> Vec<Partition> {
        let set: BTreeSet<&Partition> = self.records.iter().map(|(p, _, _)| p).collect();
        set.into_iter().cloned().collect()
    }

    /// Plans the batch against the stored positions: records before a partition's stored
    /// position were applied already (by this or another projector) and are dropped.
    pub fn plan(&self, stored: &BTreeMap<Partition, i64>) -> Plan {
        let mut plan = Plan {
            positions: stored.clone(),
            ..Plan::default()
        };
        let mut jobs = Vec::new();
        let mut recommendations = Vec::new();
        for (partition, offset, event) in &self.records {
            let stored_here = stored.get(partition).copied().unwrap_or(0);
            let position = plan.positions.entry(partition.clone()).or_insert(0);
            if *offset < *position {
                plan.already_applied += 1;
                continue;
            }
            if *position == stored_here && *offset > stored_here {
                plan.gaps.push((partition.clone(), stored_here, *offset));
            }
            *position = next_offset(*offset);
            match event {
                Some(Event::Job(e)) => jobs.push(e),
                Some(Event::Recommendations(e)) => recommendations.push(e),
                Some(Event::Erasure(e)) => plan.erasures.push(e.clone()),
                None => {}
            }
        }
        plan.jobs = fold::coalesce_jobs(jobs);
        plan.recommendations = fold::coalesce_recommendations(recommendations);
        plan
    }

    /// Applies the batch: locks the positions, applies what is new, stores the positions,
    /// commits. Returns the stored positions.
    pub async fn apply(
        &self,
        pool: &PgPool,
        target: Target,
    ) -> Result<BTreeMap<Partition, i64>, DbError> {
        let mut tx = pool.begin().await?;
        if target == Target::Shadow {
            db::rebuild::use_shadow_tables(&mut tx).await?;
        }
        let stored = db::offsets::lock(&mut tx, &self.partitions()).await?;
        let plan = self.plan(&stored);
        for ((topic, partition), stored, first) in &plan.gaps {
            tracing::info!(%topic, partition, stored, first, "the batch starts past the stored position (expected only where the log was compacted)");
        }
        if plan.already_applied > 0 {
            tracing::info!(
                records = plan.already_applied,
                "skipped records applied before"
            );
        }
        let erased: Vec<UserId> = plan.erasures.iter().map(|e| e.user_id).collect();
        db::jobs::apply_erasures(&mut tx, &plan.erasures, target == Target::Live).await?;
        let jobs = db::jobs::apply_jobs(&mut tx, &plan.jobs).await?;
        let dropped =
            jobs.erased + db::jobs::apply_recommendations(&mut tx, &plan.recommendations).await?;
        if dropped > 0 || !erased.is_empty() {
            crate::metrics::erased_user_events_dropped(dropped as u64);
            tracing::info!(dropped, erased = ?erased, "events for erased users dropped");
        }
        db::offsets::store(&mut tx, &plan.positions).await?;
        tx.commit().await?;
        if jobs.stale > 0 {
            crate::metrics::stale_updates_ignored(jobs.stale);
            tracing::debug!(stale = jobs.stale, "stale or duplicate job changes ignored");
        }
        tracing::debug!(
            records = self.records.len(),
            jobs = plan.jobs.len(),
            "batch applied"
        );
        Ok(plan.positions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::events::{JobRun, now};
    use crate::domain::{JobStatus, UserId};

    fn partition(p: i32) -> Partition {
        ("jobs".to_owned(), p)
    }

    #[test]
    fn records_before_the_stored_position_are_not_applied_again() {
        let run = JobRun {
            job_id: JobId::new_random(),
            user_id: UserId::new(1).unwrap(),
            attempt: 1,
            queued_at: now(),
        };
        let mut batch = Batch::default();
        batch.push(
            partition(0),
            10,
            Event::Job(JobEvent::Status(run.queued(now()))),
        );
        batch.push(
            partition(0),
            11,
            Event::Job(JobEvent::Status(run.started(now()))),
        );
        batch.push(
            partition(0),
            12,
            Event::Job(JobEvent::Tombstone(run.job_id)),
        );
        batch.skip(partition(1), 3);

        let stored = BTreeMap::from([(partition(0), 12), (partition(1), 0)]);
        let plan = batch.plan(&stored);
        assert_eq!(plan.already_applied, 2);
        assert_eq!(plan.positions[&partition(0)], 13);
        assert_eq!(plan.positions[&partition(1)], 4);
        let pending = &plan.jobs[&run.job_id];
        assert!(pending.reset && pending.value.is_none());

        assert_eq!(
            plan.gaps,
            vec![(partition(1), 0, 3)],
            "records 0..3 are not in the batch"
        );

        let fresh = batch.plan(&BTreeMap::new());
        assert_eq!(fresh.already_applied, 0);
        assert_eq!(
            fresh.gaps,
            vec![(partition(0), 0, 10), (partition(1), 0, 3)],
            "records 0..10 and 0..3 are not in the batch"
        );
        let pending = &fresh.jobs[&run.job_id];
        assert!(pending.reset && pending.value.is_none());
        let without_tombstone = {
            let mut b = Batch::default();
            b.push(
                partition(0),
                0,
                Event::Job(JobEvent::Status(run.started(now()))),
            );
            b.push(
                partition(0),
                1,
                Event::Job(JobEvent::Status(run.queued(now()))),
            );
            b.plan(&BTreeMap::new())
        };
        assert_eq!(
            without_tombstone.jobs[&run.job_id]
                .value
                .as_ref()
                .map(|r| r.status),
            Some(JobStatus::Process)
        );
    }
}

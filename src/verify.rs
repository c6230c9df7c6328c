//! `recq verify`: proves the table equals the fold of the log.
//!
//! Reads the projector's stored positions and all rows in one database snapshot, folds each
//! partition from offset 0 up to exactly its stored position, and compares. Exact even while
//! the projector runs, and independent of the broker's watermarks.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::{Message, Offset, TopicPartitionList};
use sqlx::PgPool;

use crate::db::{self, DbError};
use crate::domain::{JobId, JobRow, Projection, RecommendedMovie, UserId};
use crate::kafka::codec::{Codec, CodecError};
use crate::kafka::consumer::Partition;
use crate::kafka::{KafkaError, KafkaSettings, Topics, consumer};
use crate::projector::Event;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("schema registry unavailable while reading the log: {0}")]
    Registry(String),
    #[error(
        "no record arrived from {topic}[{partition}] for {idle:?} before reaching the stored position {stored} (last offset read: {last:?}); the log is shorter than the table says"
    )]
    LogEnded {
        topic: String,
        partition: i32,
        stored: i64,
        last: Option<i64>,
        idle: Duration,
    },
}

/// A row that differs, with the names of the fields that differ.
#[derive(Debug)]
pub struct Difference {
    pub expected: JobRow,
    pub actual: JobRow,
    pub fields: Vec<&'static str>,
}

#[derive(Debug, Default)]
pub struct VerifyReport {
    pub positions: BTreeMap<Partition, i64>,
    pub events_read: u64,
    pub undecodable: u64,
    pub rows: usize,
    pub missing: Vec<JobRow>,
    pub extra: Vec<JobRow>,
    pub different: Vec<Difference>,
    /// Jobs whose recommendation list in the table is missing, extra or different.
    pub recommendations_mismatched: Vec<ListMismatch>,
}

/// A job's recommendation list as the log has it and as the table has it (`None`: absent).
#[derive(Debug)]
pub struct ListMismatch {
    pub job_id: JobId,
    pub expected: Option<(UserId, Vec<RecommendedMovie>)>,
    pub actual: Option<(UserId, Vec<RecommendedMovie>)>,
}

impl fmt::Display for ListMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let job = self.job_id;
        match (&self.expected, &self.actual) {
            (Some((user, items)), None) => write!(
                f,
                "recommendations of {job} (user {user}, {} movies) missing from the table",
                items.len()
            ),
            (None, Some((user, items))) => write!(
                f,
                "recommendations of {job} (user {user}, {} movies) in the table but not in the log",
                items.len()
            ),
            (Some(expected), Some(actual)) => {
                write!(f, "recommendations of {job} differ:")?;
                write!(f, "\n    log:   {expected:?}\n    table: {actual:?}")
            }
            (None, None) => write!(f, "recommendations of {job}: absent on both sides"),
        }
    }
}

impl VerifyReport {
    pub fn is_consistent(&self) -> bool {
        self.missing.is_empty()
            && self.extra.is_empty()
            && self.different.is_empty()
            && self.recommendations_mismatched.is_empty()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "positions (next offset per partition):")?;
        for ((topic, partition), next) in &self.positions {
            writeln!(f, "  {topic}[{partition}] = {next}")?;
        }
        writeln!(
            f,
            "events folded: {} ({} undecodable, skipped as the projector does); rows in table: {}",
            self.events_read, self.undecodable, self.rows
        )?;
        writeln!(
            f,
            "rows missing: {}, rows extra: {}, rows different: {}, recommendation lists mismatched: {}",
            self.missing.len(),
            self.extra.len(),
            self.different.len(),
            self.recommendations_mismatched.len()
        )?;
        for row in self.missing.iter().take(20) {
            writeln!(
                f,
                "  missing  {} ({}, seq {})",
                row.job_id, row.status, row.seq
            )?;
        }
        for row in self.extra.iter().take(20) {
            writeln!(
                f,
                "  extra    {} ({}, seq {})",
                row.job_id, row.status, row.seq
            )?;
        }
        for d in self.different.iter().take(20) {
            writeln!(
                f,
                "  differs  {} in {}",
                d.expected.job_id,
                d.fields.join(", ")
            )?;
            writeln!(f, "    log:   {:?}", d.expected)?;
            writeln!(f, "    table: {:?}", d.actual)?;
        }
        for mismatch in self.recommendations_mismatched.iter().take(20) {
            writeln!(f, "  {mismatch}")?;
        }
        write!(
            f,
            "verify: {}",
            if self.is_consistent() {
                "OK — table equals the fold of the log"
            } else {
                "FAILED"
            }
        )
    }
}

/// Compares the table with the fold of the log up to the stored positions.
pub async fn verify(
    kafka: &KafkaSettings,
    topics: &Topics,
    codec: &Codec,
    pool: &PgPool,
    idle: Duration,
) -> Result<VerifyReport, VerifyError> {
    let mut tx = pool.begin().await.map_err(DbError::from)?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await
        .map_err(DbError::from)?;
    let positions = db::offsets::read(
        &mut tx,
        &[&topics.jobs, &topics.recommendations, &topics.erasures],
    )
    .await?;
    let rows = db::jobs::all_jobs(&mut tx).await?;
    let lists = db::jobs::all_recommendations(&mut tx).await?;
    tx.commit().await.map_err(DbError::from)?;

    let mut report = VerifyReport {
        rows: rows.len(),
        ..VerifyReport::default()
    };
    let projection = fold_log(kafka, topics, codec, &positions, idle, &mut report).await?;
    report.positions = positions;
    compare_jobs(&projection, rows, &mut report);
    compare_recommendations(&projection, &lists, &mut report);
    Ok(report)
}

/// Reads every partition from offset 0 to its stored position and folds it.
async fn fold_log(
    kafka: &KafkaSettings,
    topics: &Topics,
    codec: &Codec,
    positions: &BTreeMap<Partition, i64>,
    idle: Duration,
    report: &mut VerifyReport,
) -> Result<Projection, VerifyError> {
    let mut projection = Projection::default();
    let read = read_log(kafka, topics, codec, positions, idle, |event| match event {
        Event::Job(event) => projection.apply_job(&event),
        Event::Recommendations(event) => projection.apply_recommendations(&event),
        Event::Erasure(event) => projection.apply_erasure(&event),
    })
    .await?;
    report.events_read += read.events;
    report.undecodable += read.undecodable;
    Ok(projection)
}

/// What [`read_log`] read.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogRead {
    /// Records below the stored positions.
    pub events: u64,
    /// Of those, records that do not decode (the projector skipped them too).
    pub undecodable: u64,
}

/// Reads each partition of `positions` from offset 0 up to (not including) its stored
/// position and hands every decoded event to `visit`, in partition order. It never asks the
/// broker for watermarks: a partition that yields nothing for `idle` before its position is
/// an error.
pub async fn read_log(
    kafka: &KafkaSettings,
    topics: &Topics,
    codec: &Codec,
    positions: &BTreeMap<Partition, i64>,
    idle: Duration,
    mut visit: impl FnMut(Event),
) -> Result<LogRead, VerifyError> {
    let mut read = LogRead::default();
    let mut remaining: BTreeMap<Partition, i64> = positions
        .iter()
        .filter(|(_, next)| **next > 0)
        .map(|(p, n)| (p.clone(), *n))
        .collect();
    if remaining.is_empty() {
        return Ok(read);
    }
    let reader = consumer::reader(kafka)?;
    let mut assignment = TopicPartitionList::new();
    for (topic, partition) in remaining.keys() {
        assignment
            .add_partition_offset(topic, *partition, Offset::Beginning)
            .map_err(KafkaError::Client)?;
    }
    reader.assign(&assignment).map_err(KafkaError::Client)?;
    let mut last: BTreeMap<Partition, i64> = BTreeMap::new();
    while !remaining.is_empty() {
        let message = match tokio::time::timeout(idle, reader.recv()).await {
            Ok(Ok(message)) => message,
            Ok(Err(e)) => return Err(KafkaError::Client(e).into()),
            Err(_) => {
                let ((topic, partition), stored) = remaining
                    .iter()
                    .next()
                    .map(|(p, s)| (p.clone(), *s))
                    .unwrap_or_default();
                return Err(VerifyError::LogEnded {
                    last: last.get(&(topic.clone(), partition)).copied(),
                    topic,
                    partition,
                    stored,
                    idle,
                });
            }
        };
        let key: Partition = (message.topic().to_owned(), message.partition());
        let Some(stored) = remaining.get(&key).copied() else {
            continue;
        };
        last.insert(key.clone(), message.offset());
        if message.offset() >= stored {
            remaining.remove(&key);
            continue;
        }
        read.events += 1;
        let message = message.detach();
        match decode(|| crate::projector::decode_event(codec, topics, &message)).await? {
            Some(event) => visit(event),
            None => read.undecodable += 1,
        }
        if message.offset() + 1 >= stored {
            remaining.remove(&key);
        }
    }
    Ok(read)
}

/// Decodes with retries on registry outages; poison yields None (the projector skipped it).
async fn decode<T, F, Fut>(mut decode: F) -> Result<Option<T>, VerifyError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CodecError>>,
{
    for attempt in 0..10u32 {
        match decode().await {
            Ok(v) => return Ok(Some(v)),
            Err(CodecError::Poison { .. }) => return Ok(None),
            Err(CodecError::Transient(e)) if attempt == 9 => return Err(VerifyError::Registry(e)),
            Err(CodecError::Transient(_)) => {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt + 1))).await;
            }
        }
    }
    Ok(None)
}

fn compare_jobs(projection: &Projection, rows: Vec<JobRow>, report: &mut VerifyReport) {
    let mut table: BTreeMap<JobId, JobRow> = rows.into_iter().map(|r| (r.job_id, r)).collect();
    for (job, expected) in &projection.jobs {
        match table.remove(job) {
            None => report.missing.push(expected.clone()),
            Some(actual) if actual != *expected => report.different.push(Difference {
                fields: differing_fields(expected, &actual),
                expected: expected.clone(),
                actual,
            }),
            Some(_) => {}
        }
    }
    report.extra = table.into_values().collect();
}

fn differing_fields(a: &JobRow, b: &JobRow) -> Vec<&'static str> {
    let checks: [(&'static str, bool); 11] = [
        ("job_id", a.job_id != b.job_id),
        ("user_id", a.user_id != b.user_id),
        ("status", a.status != b.status),
        ("processing_time", a.processing_time != b.processing_time),
        ("created_at", a.created_at != b.created_at),
        ("updated_at", a.updated_at != b.updated_at),
        ("started_at", a.started_at != b.started_at),
        ("finished_at", a.finished_at != b.finished_at),
        ("attempt", a.attempt != b.attempt),
        ("last_error", a.last_error != b.last_error),
        ("seq", a.seq != b.seq),
    ];
    checks
        .into_iter()
        .filter(|(_, differs)| *differs)
        .map(|(name, _)| name)
        .collect()
}

fn compare_recommendations(
    projection: &Projection,
    table: &BTreeMap<JobId, (UserId, Vec<RecommendedMovie>)>,
    report: &mut VerifyReport,
) {
    let jobs: BTreeSet<&JobId> = projection
        .recommendations
        .keys()
        .chain(table.keys())
        .collect();
    for job in jobs {
        let expected = projection
            .recommendations
            .get(job)
            .map(|r| (r.user_id, r.items.clone()));
        let actual = table.get(job).cloned();
        if expected != actual {
            report.recommendations_mismatched.push(ListMismatch {
                job_id: *job,
                expected,
                actual,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::events::{JobRun, now};
    use crate::domain::{JobEvent, JobStatus};

    #[test]
    fn differences_name_the_fields_that_differ() {
        let run = JobRun {
            job_id: JobId::new_random(),
            user_id: UserId::new(4).unwrap(),
            attempt: 1,
            queued_at: now(),
        };
        let projection = {
            let mut p = Projection::default();
            p.apply_job(&JobEvent::Status(run.done(now(), now())));
            p
        };
        let mut stale = JobRow::from_event(&run.started(now()));
        stale.created_at = projection.jobs[&run.job_id].created_at;
        let other = JobRow::from_event(
            &JobRun {
                job_id: JobId::new_random(),
                ..run
            }
            .queued(now()),
        );
        let mut report = VerifyReport::default();
        compare_jobs(&projection, vec![stale, other.clone()], &mut report);
        assert!(!report.is_consistent());
        assert_eq!(report.extra, vec![other]);
        assert!(report.missing.is_empty());
        let fields = &report.different[0].fields;
        assert!(
            fields.contains(&"status") && fields.contains(&"seq"),
            "{fields:?}"
        );
        assert_eq!(report.different[0].expected.status, JobStatus::Done);
    }
}

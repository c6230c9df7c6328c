//! What a chaos run must show, judged from the final table, the log and the offsets watched
//! during the run — and the figures it prints.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::db;
use crate::domain::events::whole_seconds;
use crate::domain::{JobId, JobRow, JobStatus};
use crate::kafka::Topics;
use crate::kafka::consumer::Partition;
use crate::verify::VerifyReport;

/// Every job's outcomes in the jobs topic.
#[derive(Debug, Default)]
pub struct Outcomes {
    pub by_job: BTreeMap<JobId, HashSet<JobStatus>>,
    /// `done` and `failed` events, redeliveries and retries included.
    pub terminal_events: usize,
}

/// The projector's stored positions, sampled during the run.
#[derive(Debug, Default)]
pub struct OffsetWatch {
    pub samples: usize,
    pub partitions: usize,
    /// Each time a position was seen lower than before: (partition, before, after).
    pub decreases: Vec<(Partition, i64, i64)>,
}

impl OffsetWatch {
    /// Records one sample of every stored position.
    pub fn observe(&mut self, seen: &mut HashMap<Partition, i64>, now: BTreeMap<Partition, i64>) {
        self.samples += 1;
        for (partition, next) in now {
            if let Some(before) = seen.get(&partition)
                && next < *before
            {
                self.decreases.push((partition.clone(), *before, next));
            }
            let highest = seen.entry(partition).or_insert(next);
            *highest = (*highest).max(next);
        }
        self.partitions = seen.len();
    }
}

/// Samples the stored positions every 100 ms until `cancel` fires.
pub async fn watch_offsets(pool: PgPool, topics: Topics, cancel: CancellationToken) -> OffsetWatch {
    let mut watch = OffsetWatch::default();
    let mut seen = HashMap::new();
    let names = [
        topics.jobs.as_str(),
        topics.recommendations.as_str(),
        topics.erasures.as_str(),
    ];
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        let Ok(mut conn) = pool.acquire().await else {
            continue;
        };
        if let Ok(now) = db::offsets::read(&mut conn, &names).await {
            watch.observe(&mut seen, now);
        }
    }
    watch
}

/// The figures of a run and the verdict of each check.
#[derive(Debug, Default)]
pub struct Figures {
    pub broker: String,
    pub seed: u64,
    pub workers: u32,
    pub projectors: u32,
    pub partitions: i32,
    pub requests: usize,
    /// Requests the broker acknowledged (distinct job ids).
    pub acknowledged: usize,
    pub kills: u32,
    pub pauses: u32,
    pub pause: Duration,
    pub broker_restarts: u32,
    pub projectors_added: u32,
    pub projectors_removed: u32,
    /// Partition assignments logged by the roles.
    pub rebalances: usize,
    pub rows: usize,
    pub done: usize,
    pub failed: usize,
    /// Acknowledged requests without a row.
    pub lost: Vec<JobId>,
    /// Acknowledged requests whose row is not terminal.
    pub unfinished_rows: Vec<JobId>,
    /// Rows for job ids never requested.
    pub unexpected_rows: Vec<JobId>,
    /// Jobs with both a `done` and a `failed` event in the log.
    pub two_outcomes: Vec<JobId>,
    /// Terminal events beyond one per job (redeliveries and retries; harmless by design).
    pub repeated_terminal_events: usize,
    /// Jobs that finished on attempt 2 or later (a kill interrupted them).
    pub retried: usize,
    /// Terminal rows whose processing_time disagrees with started_at/finished_at.
    pub bad_processing_time: Vec<JobId>,
    pub offsets: OffsetWatch,
    pub verify_consistent: bool,
    pub verify_summary: String,
    /// `recq verify`'s full report, shown when it found differences.
    pub verify_report: String,
    /// Dead letters written during the run (every request is valid, so there should be none).
    pub dead_letters: Vec<String>,
    pub unexpected_exits: Vec<String>,
    /// Set when the jobs did not all finish in time.
    pub unfinished: Option<String>,
    pub requests_sent_in: Duration,
    /// From the last disturbance to every job finished.
    pub caught_up_in: Duration,
    pub total: Duration,
    pub log_dir: PathBuf,
}

impl Figures {
    /// The duplicates: rows nobody asked for plus jobs that show two outcomes.
    pub fn duplicated(&self) -> usize {
        self.unexpected_rows.len() + self.two_outcomes.len()
    }

    pub fn passed(&self) -> bool {
        self.acknowledged == self.requests
            && self.lost.is_empty()
            && self.unfinished_rows.is_empty()
            && self.duplicated() == 0
            && self.bad_processing_time.is_empty()
            && self.offsets.decreases.is_empty()
            && self.offsets.samples > 0
            && self.verify_consistent
            && self.dead_letters.is_empty()
            && self.unexpected_exits.is_empty()
            && self.unfinished.is_none()
    }
}

/// Judges the final state against the requests the broker acknowledged.
pub fn judge(
    submitted: &[JobId],
    rows: &[JobRow],
    outcomes: &Outcomes,
    offsets: &OffsetWatch,
    report: &VerifyReport,
) -> Figures {
    let requested: HashSet<JobId> = submitted.iter().copied().collect();
    let by_job: HashMap<JobId, &JobRow> = rows.iter().map(|r| (r.job_id, r)).collect();
    let mut lost: Vec<JobId> = requested
        .iter()
        .filter(|j| !by_job.contains_key(j))
        .copied()
        .collect();
    lost.sort();
    let terminal = |r: &&JobRow| r.status.is_terminal();
    Figures {
        acknowledged: requested.len(),
        rows: rows.len(),
        done: rows.iter().filter(|r| r.status == JobStatus::Done).count(),
        failed: rows
            .iter()
            .filter(|r| r.status == JobStatus::Failed)
            .count(),
        lost,
        unfinished_rows: rows
            .iter()
            .filter(|r| requested.contains(&r.job_id) && !r.status.is_terminal())
            .map(|r| r.job_id)
            .collect(),
        unexpected_rows: rows
            .iter()
            .filter(|r| !requested.contains(&r.job_id))
            .map(|r| r.job_id)
            .collect(),
        two_outcomes: outcomes
            .by_job
            .iter()
            .filter(|(_, statuses)| statuses.len() > 1)
            .map(|(job, _)| *job)
            .collect(),
        repeated_terminal_events: outcomes
            .terminal_events
            .saturating_sub(outcomes.by_job.len()),
        retried: rows
            .iter()
            .filter(terminal)
            .filter(|r| r.attempt > 1)
            .count(),
        bad_processing_time: rows
            .iter()
            .filter(terminal)
            .filter(|r| match (r.started_at, r.finished_at) {
                (Some(started), Some(finished)) => {
                    started > finished || r.processing_time != whole_seconds(started, finished)
                }
                _ => true,
            })
            .map(|r| r.job_id)
            .collect(),
        offsets: OffsetWatch {
            samples: offsets.samples,
            partitions: offsets.partitions,
            decreases: offsets.decreases.clone(),
        },
        verify_consistent: report.is_consistent(),
        verify_summary: format!(
            "{} events folded, {} rows, {} missing, {} extra, {} different, {} recommendation \
             lists differ",
            report.events_read,
            report.rows,
            report.missing.len(),
            report.extra.len(),
            report.different.len(),
            report.recommendations_mismatched.len()
        ),
        verify_report: report.to_string(),
        ..Figures::default()
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "ok" } else { "FAILED" }
}

fn first_ids(jobs: &[JobId]) -> String {
    let shown: Vec<String> = jobs.iter().take(5).map(ToString::to_string).collect();
    match jobs.len() {
        0 => String::new(),
        n if n > 5 => format!(" (e.g. {}, ...)", shown.join(", ")),
        _ => format!(" ({})", shown.join(", ")),
    }
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "recq chaos — broker {}, {} workers, {} projectors, {} partitions, seed {}",
            self.broker, self.workers, self.projectors, self.partitions, self.seed
        )?;
        let line = |f: &mut fmt::Formatter<'_>, name: &str, value: String| {
            writeln!(f, "  {name:<22} {value}")
        };
        line(
            f,
            "requests",
            format!(
                "{} sent, {} acknowledged by the broker",
                self.requests, self.acknowledged
            ),
        )?;
        line(
            f,
            "SIGKILLs",
            format!("{} (workers and projectors)", self.kills),
        )?;
        line(
            f,
            "broker pauses",
            format!("{} × {:?} (SIGSTOP … SIGCONT)", self.pauses, self.pause),
        )?;
        line(
            f,
            "broker restarts",
            if self.broker == "tansu" {
                "0 (Tansu keeps the log in memory; BROKER=nisshi restarts it)".to_owned()
            } else {
                self.broker_restarts.to_string()
            },
        )?;
        line(
            f,
            "projectors",
            format!(
                "+{} joined, -{} left",
                self.projectors_added, self.projectors_removed
            ),
        )?;
        line(
            f,
            "rebalances",
            format!(
                "{} partition assignments logged by the roles",
                self.rebalances
            ),
        )?;
        line(
            f,
            "rows",
            format!(
                "{} ({} done, {} failed; {} finished on a later attempt)",
                self.rows, self.done, self.failed, self.retried
            ),
        )?;
        line(
            f,
            "lost",
            format!(
                "{}{} {}",
                self.lost.len(),
                first_ids(&self.lost),
                verdict(self.lost.is_empty())
            ),
        )?;
        line(
            f,
            "not terminal",
            format!(
                "{}{} {}",
                self.unfinished_rows.len(),
                first_ids(&self.unfinished_rows),
                verdict(self.unfinished_rows.is_empty())
            ),
        )?;
        line(
            f,
            "duplicated",
            format!(
                "{} (rows never requested: {}; jobs with two outcomes: {}{}) {}",
                self.duplicated(),
                self.unexpected_rows.len(),
                self.two_outcomes.len(),
                first_ids(&self.two_outcomes),
                verdict(self.duplicated() == 0)
            ),
        )?;
        line(
            f,
            "repeated outcomes",
            format!(
                "{} redelivered or re-run terminal events, each repeating its job's one outcome",
                self.repeated_terminal_events
            ),
        )?;
        line(
            f,
            "processing_time",
            format!(
                "{} rows disagree with started_at/finished_at{} {}",
                self.bad_processing_time.len(),
                first_ids(&self.bad_processing_time),
                verdict(self.bad_processing_time.is_empty())
            ),
        )?;
        line(
            f,
            "stored offsets",
            format!(
                "{} decreases in {} samples of {} partitions {}",
                self.offsets.decreases.len(),
                self.offsets.samples,
                self.offsets.partitions,
                verdict(self.offsets.decreases.is_empty() && self.offsets.samples > 0)
            ),
        )?;
        for (partition, before, after) in self.offsets.decreases.iter().take(5) {
            writeln!(f, "    {partition:?}: {before} -> {after}")?;
        }
        line(
            f,
            "recq verify",
            format!(
                "{} {}",
                self.verify_summary,
                verdict(self.verify_consistent)
            ),
        )?;
        if !self.verify_consistent {
            for report_line in self.verify_report.lines() {
                writeln!(f, "    {report_line}")?;
            }
        }
        line(
            f,
            "dead letters",
            format!(
                "{} {}",
                self.dead_letters.len(),
                verdict(self.dead_letters.is_empty())
            ),
        )?;
        for letter in self.dead_letters.iter().take(5) {
            writeln!(f, "    {letter}")?;
        }
        line(
            f,
            "unexpected exits",
            format!(
                "{} {}",
                self.unexpected_exits.len(),
                verdict(self.unexpected_exits.is_empty())
            ),
        )?;
        for exit in &self.unexpected_exits {
            writeln!(f, "    {exit}")?;
        }
        if let Some(unfinished) = &self.unfinished {
            line(f, "finished in time", format!("{unfinished} FAILED"))?;
        }
        line(
            f,
            "time",
            format!(
                "{:.1} s in all; requests sent over {:.1} s; every job finished {:.1} s after \
                 the last disturbance",
                self.total.as_secs_f64(),
                self.requests_sent_in.as_secs_f64(),
                self.caught_up_in.as_secs_f64()
            ),
        )?;
        line(f, "logs", self.log_dir.display().to_string())?;
        write!(
            f,
            "chaos: {}",
            if self.passed() { "PASSED" } else { "FAILED" }
        )
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration as Span;

    use super::*;
    use crate::domain::events::now;
    use crate::domain::{JobRun, RecommendationRequested, UserId};

    fn done_row(job: JobId) -> JobRow {
        let request = RecommendationRequested {
            job_id: job,
            user_id: UserId::new(1).unwrap(),
            requested_at: now(),
        };
        let run = JobRun::first_attempt(&request);
        let t = now();
        JobRow::from_event(&run.done(t, t + Span::milliseconds(2500)))
    }

    fn outcomes(rows: &[JobRow]) -> Outcomes {
        Outcomes {
            by_job: rows
                .iter()
                .map(|r| (r.job_id, HashSet::from([r.status])))
                .collect(),
            terminal_events: rows.len(),
        }
    }

    fn watched() -> OffsetWatch {
        let mut watch = OffsetWatch::default();
        let mut seen = HashMap::new();
        watch.observe(&mut seen, BTreeMap::from([(("jobs".to_owned(), 0), 5)]));
        watch
    }

    fn judged(submitted: &[JobId], rows: &[JobRow], outcomes: &Outcomes) -> Figures {
        let mut figures = judge(
            submitted,
            rows,
            outcomes,
            &watched(),
            &VerifyReport::default(),
        );
        figures.requests = submitted.len();
        figures
    }

    #[test]
    fn a_clean_run_passes() {
        let jobs: Vec<JobId> = (0..3).map(|_| JobId::new_random()).collect();
        let rows: Vec<JobRow> = jobs.iter().map(|j| done_row(*j)).collect();
        let figures = judged(&jobs, &rows, &outcomes(&rows));
        assert!(figures.passed(), "{figures}");
        assert_eq!((figures.done, figures.retried), (3, 0));

        let mut dead_lettered = judged(&jobs, &rows, &outcomes(&rows));
        dead_lettered
            .dead_letters
            .push("recq.jobs.dlq: undecodable-avro".to_owned());
        assert!(
            !dead_lettered.passed(),
            "a dead letter in a run of valid requests is a failure"
        );
    }

    #[test]
    fn a_lost_request_a_foreign_row_two_outcomes_or_a_wrong_processing_time_fail_the_run() {
        let jobs: Vec<JobId> = (0..3).map(|_| JobId::new_random()).collect();
        let rows: Vec<JobRow> = jobs.iter().map(|j| done_row(*j)).collect();

        let lost = judged(&jobs, &rows[..2], &outcomes(&rows[..2]));
        assert_eq!(lost.lost, vec![jobs[2]]);
        assert!(!lost.passed());

        let mut foreign = rows.clone();
        foreign.push(done_row(JobId::new_random()));
        assert_eq!(judged(&jobs, &foreign, &outcomes(&foreign)).duplicated(), 1);

        let mut twice = outcomes(&rows);
        twice
            .by_job
            .entry(jobs[0])
            .or_default()
            .insert(JobStatus::Failed);
        let figures = judged(&jobs, &rows, &twice);
        assert_eq!(figures.two_outcomes, vec![jobs[0]]);
        assert!(!figures.passed());

        let mut slow = rows.clone();
        slow[1].processing_time = 7;
        let figures = judged(&jobs, &slow, &outcomes(&slow));
        assert_eq!(figures.bad_processing_time, vec![jobs[1]]);
        assert!(!figures.passed());
    }

    #[test]
    fn a_stored_position_seen_lower_than_before_is_recorded() {
        let mut watch = OffsetWatch::default();
        let mut seen = HashMap::new();
        let p = ("jobs".to_owned(), 2);
        for next in [10, 12, 11, 13] {
            watch.observe(&mut seen, BTreeMap::from([(p.clone(), next)]));
        }
        assert_eq!(watch.decreases, vec![(p, 12, 11)]);
        assert_eq!((watch.samples, watch.partitions), (4, 1));
    }
}

//! `recq demo`: the whole pipeline on real MovieLens data in one process — schema registry,
//! worker, projector — then requests for hundreds of real users, a summary, and `verify`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{AppError, tools};
use crate::config::Settings;
use crate::db;
use crate::domain::{JobId, JobStatus};
use crate::projector::{self, ProjectorConfig};
use crate::worker::{self, WorkerConfig, WorkerDeps};

pub struct DemoOptions {
    pub users: usize,
    pub timeout: Duration,
    /// Serve the registry in-process here; None to use `settings.registry_url`.
    pub registry_listen: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub worker: WorkerConfig,
    pub projector: ProjectorConfig,
}

/// What the demo saw; `passed()` decides the exit code.
pub struct DemoSummary {
    pub requested: usize,
    pub counts: BTreeMap<JobStatus, i64>,
    pub verified: bool,
}

impl DemoSummary {
    pub fn passed(&self) -> bool {
        self.verified && self.counts.get(&JobStatus::Done).copied() == Some(self.requested as i64)
    }
}

/// Runs the demo against a freshly created database and a fresh set of topics.
pub async fn run(
    mut settings: Settings,
    options: DemoOptions,
    cancel: CancellationToken,
) -> Result<DemoSummary, AppError> {
    let run_id = chrono::Utc::now().format("%Y%m%d%H%M%S").to_string();
    settings.topics = crate::kafka::Topics::with_prefix(&format!("demo-{run_id}."));
    println!("== recq demo (run {run_id}) ==");
    db::recreate_database(&settings.database_url, settings.connect_timeout)
        .await
        .map_err(|source| AppError::Postgres {
            url: crate::config::redact_url(&settings.database_url),
            source,
        })?;
    let pool = super::database(&settings, &settings.database_url).await?;
    println!(
        "database  {} (recreated, migrated)",
        crate::config::redact_url(&settings.database_url)
    );

    let services = CancellationToken::new();
    let registry = match options.registry_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| AppError::Listen { addr, source })?;
            settings.registry_url = format!("http://{addr}");
            println!(
                "registry  {} (in-process, Postgres-backed)",
                settings.registry_url
            );
            Some(tokio::spawn(crate::registry::serve(
                pool.clone(),
                listener,
                services.clone(),
            )))
        }
        None => None,
    };
    let (codec, producer) = super::kafka(&settings).await?;
    println!(
        "kafka     {} topics {}*",
        settings.kafka.brokers,
        settings.topics.requests.trim_end_matches("recq.requests")
    );

    let started = Instant::now();
    let recommender = {
        let dir = options.data_dir.clone();
        tokio::task::spawn_blocking(move || super::recommender(&dir))
            .await
            .map_err(|e| AppError::Failed(format!("loading the recommender crashed: {e}")))??
    };
    println!(
        "model     {} users, {} movies, item-based CF built in {} ms",
        recommender.user_count(),
        recommender.movie_count(),
        started.elapsed().as_millis()
    );

    let worker = tokio::spawn(worker::run(
        WorkerConfig {
            group: format!("{}-{run_id}", options.worker.group),
            ..options.worker.clone()
        },
        settings.kafka.clone(),
        WorkerDeps {
            topics: settings.topics.clone(),
            codec: codec.clone(),
            producer: producer.clone(),
            recommender: recommender.clone(),
            projection: Some(pool.clone()),
        },
        services.clone(),
    ));
    let projector = tokio::spawn(projector::run(
        ProjectorConfig {
            group: format!("{}-{run_id}", options.projector.group),
            ..options.projector.clone()
        },
        settings.kafka.clone(),
        settings.topics.clone(),
        pool.clone(),
        codec.clone(),
        producer.clone(),
        services.clone(),
    ));

    let users: Vec<_> = recommender
        .user_ids()
        .into_iter()
        .take(options.users)
        .collect();
    if users.len() < options.users {
        return Err(AppError::Invalid(format!(
            "--users {} but the data has only {} users",
            options.users,
            users.len()
        )));
    }
    let submitted_at = Instant::now();
    let jobs = tools::submit(&codec, &producer, &settings.topics, &users).await?;
    println!(
        "submitted {} requests for {} distinct users",
        jobs.len(),
        users.len()
    );

    let waited = wait_until_terminal(&pool, &jobs, options.timeout, &cancel).await;
    let elapsed = submitted_at.elapsed();
    services.cancel();
    join("worker", worker).await;
    join("projector", projector).await;

    let counts = db::jobs::status_counts_of(&pool, &jobs).await?;
    print_summary(&pool, &jobs, &users, &counts, elapsed).await?;
    waited?;

    let report = crate::verify::verify(
        &settings.kafka,
        &settings.topics,
        &codec,
        &pool,
        Duration::from_secs(30),
    )
    .await?;
    println!("{report}");
    if let Some(registry) = registry {
        let _ = registry.await;
    }
    Ok(DemoSummary {
        requested: jobs.len(),
        counts,
        verified: report.is_consistent(),
    })
}

async fn wait_until_terminal(
    pool: &PgPool,
    jobs: &[JobId],
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<(), AppError> {
    let deadline = Instant::now() + timeout;
    let mut last_report = Instant::now();
    loop {
        let counts = db::jobs::status_counts_of(pool, jobs).await?;
        let terminal: i64 = counts
            .iter()
            .filter(|(s, _)| s.is_terminal())
            .map(|(_, n)| n)
            .sum();
        if terminal as usize >= jobs.len() {
            return Ok(());
        }
        if last_report.elapsed() >= Duration::from_secs(2) {
            eprintln!("  waiting: {terminal}/{} jobs finished", jobs.len());
            last_report = Instant::now();
        }
        if Instant::now() >= deadline {
            return Err(AppError::Failed(format!(
                "only {terminal} of {} jobs finished within {timeout:?}",
                jobs.len()
            )));
        }
        tokio::select! {
            _ = cancel.cancelled() => return Err(AppError::Failed("interrupted".into())),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

async fn join<E: std::fmt::Display>(role: &str, handle: JoinHandle<Result<(), E>>) {
    match handle.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("{role} stopped with an error: {e}"),
        Err(e) => eprintln!("{role} crashed: {e}"),
    }
}

async fn print_summary(
    pool: &PgPool,
    jobs: &[JobId],
    users: &[crate::domain::UserId],
    counts: &BTreeMap<JobStatus, i64>,
    elapsed: Duration,
) -> Result<(), AppError> {
    println!();
    println!("== summary ==");
    println!(
        "jobs      {} requested, all terminal after {:.1} s ({:.0} jobs/s)",
        jobs.len(),
        elapsed.as_secs_f64(),
        jobs.len() as f64 / elapsed.as_secs_f64().max(0.001)
    );
    for status in JobStatus::ALL {
        println!(
            "  {:<8} {}",
            status.as_str(),
            counts.get(&status).copied().unwrap_or(0)
        );
    }
    match db::jobs::processing_percentiles_ms(pool, jobs).await? {
        Some((p50, p95)) => println!(
            "processing time (started_at → finished_at): p50 {p50:.2} ms, p95 {p95:.2} ms \
             (processing_time column, whole seconds: {}s)",
            (p95 / 1000.0).floor()
        ),
        None => println!("processing time: no finished jobs"),
    }
    for (job, user) in jobs.iter().zip(users).take(3) {
        println!();
        println!("top-10 for user {user} (job {job}):");
        for movie in db::jobs::recommendations(pool, *job).await? {
            println!(
                "  {:>2}. {}  (score {:.2})",
                movie.rank, movie.title, movie.score
            );
        }
    }
    println!();
    Ok(())
}

//! `recq-chaos` (`make chaos`): real requests through `recq worker` and `recq projector`
//! processes on a private broker while the run kills roles (SIGKILL), pauses the broker
//! (SIGSTOP/SIGCONT), adds and removes a projector and, with a persistent broker, restarts
//! it. Then it checks recq's promises (DESIGN.md, invariants 1–4) and prints the figures.
//!
//! Layout: [`plan`] decides what happens when (pure, seeded); [`fleet`] runs and signals the
//! processes; [`checks`] judges the final state (pure); this module wires them together.

mod checks;
mod fleet;
pub mod plan;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use checks::Figures;
use checks::Outcomes;
use fleet::Fleet;
use plan::{Action, PlanSpec, Step};

use crate::domain::events::now;
use crate::domain::{JobEvent, JobId, JobStatus, RecommendationRequested, UserId};
use crate::harness::broker::{Kind, LocalBroker};
use crate::harness::{HarnessError, random_suffix};
use crate::kafka::codec::Codec;
use crate::kafka::producer::Producer;
use crate::kafka::{KafkaSettings, Topics, dlq};
use crate::projector::Event;
use crate::{db, verify};

/// MovieLens 100k has users 1..=943; requests cycle through them.
const USERS: i64 = 943;
/// How often the run acts on its plan, checks its processes and sends a batch of requests.
const TICK: Duration = Duration::from_millis(50);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "recq-chaos",
    about = "Runs real requests through recq while killing its processes and pausing or \
             restarting the broker, then checks that nothing was lost or counted twice"
)]
pub struct ChaosArgs {
    /// Broker to run privately: tansu (in memory; cannot be restarted without losing the
    /// log, so no restart) or nisshi (persistent; restarted once).
    #[arg(long, value_enum, env = "BROKER", default_value = "tansu")]
    pub broker: Kind,
    /// Database to (re)create for the run.
    #[arg(
        long,
        env = "RECQ_CHAOS_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/recq_chaos",
        hide_env_values = true
    )]
    pub database_url: String,
    /// MovieLens 100k directory (`make data`).
    #[arg(long, env = "RECQ_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The `recq` binary run as workers and projectors (default: next to this binary).
    #[arg(long)]
    pub recq_bin: Option<PathBuf>,
    /// Requests to send.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub requests: u32,
    /// Requests per second (the disturbances are spread over the time this takes).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rate: u32,
    /// SIGKILLs, alternating workers and projectors.
    #[arg(long, default_value_t = 12)]
    pub kills: u32,
    /// Seconds the broker stays SIGSTOPped.
    #[arg(long, default_value_t = 20)]
    pub pause_secs: u64,
    /// Worker processes.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=32))]
    pub workers: u32,
    /// Projector processes (one more joins and leaves during the run).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=32))]
    pub projectors: u32,
    /// Partitions of the run's topics.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub partitions: i32,
    /// Seed of the disturbance plan (default: random; printed, so a run can be repeated).
    #[arg(long)]
    pub seed: Option<u64>,
    /// How long the jobs may take to finish after the last request was sent.
    #[arg(long, default_value_t = 600)]
    pub settle_secs: u64,
    /// Where the processes' logs go (default: a new directory under $TMPDIR).
    #[arg(long)]
    pub log_dir: Option<PathBuf>,
}

/// Why a chaos run could not be carried out (as opposed to a check that failed, which is in
/// the [`Figures`]).
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    #[error(transparent)]
    Harness(#[from] HarnessError),
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error(transparent)]
    Kafka(#[from] crate::kafka::KafkaError),
    #[error(transparent)]
    Codec(#[from] crate::kafka::codec::CodecError),
    #[error(transparent)]
    Verify(#[from] verify::VerifyError),
    #[error("{0}")]
    Failed(String),
}

/// Runs the whole chaos experiment and returns its figures (see [`Figures::passed`]).
pub async fn run(args: ChaosArgs) -> Result<Figures, ChaosError> {
    let started = Instant::now();
    let seed = args.seed.unwrap_or_else(rand::random);
    let window = Duration::from_secs_f64(f64::from(args.requests) / f64::from(args.rate));
    let steps = plan::plan(PlanSpec {
        window,
        kills: args.kills,
        pause: Duration::from_secs(args.pause_secs),
        restart_broker: args.broker.persistent(),
        seed,
    })
    .map_err(ChaosError::Failed)?;
    let log_dir = args
        .log_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("recq-chaos-{}", random_suffix())));
    std::fs::create_dir_all(&log_dir)
        .map_err(HarnessError::io(format!("creating {}", log_dir.display())))?;
    let recq = match &args.recq_bin {
        Some(path) => path.clone(),
        None => crate::harness::sibling_binary("recq")?,
    };

    let mut broker = LocalBroker::start_in(args.broker, log_dir.join("broker"), false).await?;
    db::recreate_database(&args.database_url, CONNECT_TIMEOUT).await?;
    let pool = db::connect(&args.database_url, 4, CONNECT_TIMEOUT).await?;
    db::migrate(&pool).await?;
    let services = CancellationToken::new();
    let (registry_url, registry) =
        crate::harness::serve_registry(pool.clone(), services.clone()).await?;
    let kafka = KafkaSettings {
        brokers: broker.brokers(),
        properties: Vec::new(),
        timeout: CONNECT_TIMEOUT,
    };
    let suffix = random_suffix();
    let prefix = format!("chaos-{suffix}.");
    let topics = Topics::with_prefix(&prefix);
    crate::kafka::admin::ensure_topics(&kafka, &topics, args.partitions).await?;
    let codec = Codec::new(&registry_url);
    codec.register_all(&topics).await?;
    let producer = Producer::new(&kafka)?;

    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(crate::config::default_data_dir);
    let env = vec![
        ("RECQ_BROKERS", broker.brokers()),
        ("DATABASE_URL", args.database_url.clone()),
        ("RECQ_REGISTRY_URL", registry_url.clone()),
        ("RECQ_TOPIC_PREFIX", prefix),
        ("RECQ_PARTITIONS", args.partitions.to_string()),
        ("RECQ_DATA_DIR", data_dir.display().to_string()),
        ("RECQ_WORKER_GROUP", format!("chaos-worker-{suffix}")),
        ("RECQ_PROJECTOR_GROUP", format!("chaos-projector-{suffix}")),
        ("RECQ_LOG", "info,sqlx=warn".to_owned()),
    ];
    let mut fleet = Fleet::start(recq, env, log_dir.clone(), args.workers, args.projectors)?;
    let watch_cancel = CancellationToken::new();
    let watch = tokio::spawn(checks::watch_offsets(
        pool.clone(),
        topics.clone(),
        watch_cancel.clone(),
    ));

    let submitter = Submitter {
        codec: &codec,
        producer: &producer,
        topics: &topics,
        requests: args.requests,
        rate: args.rate,
    };
    let (submitted, disturbed) = {
        let sending = submitter.send_all(&services);
        let disturbing = disturb(&steps, &mut fleet, &mut broker, started);
        tokio::join!(sending, disturbing)
    };
    let submitted = submitted?;
    let requests_sent = started.elapsed();
    let last_disturbance = disturbed?;
    let finished = wait_until_finished(
        &pool,
        &submitted,
        Duration::from_secs(args.settle_secs),
        &mut fleet,
    )
    .await;
    let caught_up = last_disturbance.elapsed();
    let stop_failures = fleet.stop_all().await;
    watch_cancel.cancel();
    let offsets = watch
        .await
        .map_err(|e| ChaosError::Failed(format!("the offset watch crashed: {e}")))?;

    let report = verify::verify(&kafka, &topics, &codec, &pool, Duration::from_secs(30)).await?;
    let outcomes = read_outcomes(&kafka, &topics, &codec, &pool).await?;
    // Every request of the run is valid, so any dead letter is a record recq failed to handle.
    let mut dead_letters = Vec::new();
    for topic in [&topics.requests_dlq, &topics.jobs_dlq] {
        for letter in dlq::read_all(&kafka, topic, Duration::from_secs(2), None).await? {
            dead_letters.push(format!(
                "{topic}: {} — {} (from {:?}[{:?}] offset {:?})",
                letter.reason,
                letter.error,
                letter.original_topic,
                letter.original_partition,
                letter.original_offset
            ));
        }
    }
    let mut conn = pool.acquire().await.map_err(db::DbError::from)?;
    let rows = db::jobs::all_jobs(&mut conn).await?;
    drop(conn);
    let mut figures = checks::judge(&submitted, &rows, &outcomes, &offsets, &report);
    figures.broker = format!("{:?}", args.broker).to_lowercase();
    figures.seed = seed;
    figures.workers = args.workers;
    figures.projectors = args.projectors;
    figures.partitions = args.partitions;
    figures.requests = args.requests as usize;
    figures.log_dir = log_dir;
    figures.kills = fleet.kills;
    figures.pauses = fleet.pauses;
    figures.pause = Duration::from_secs(args.pause_secs);
    figures.broker_restarts = fleet.broker_restarts;
    figures.projectors_added = fleet.projectors_added;
    figures.projectors_removed = fleet.projectors_removed;
    figures.rebalances = fleet.assignments_logged();
    figures.dead_letters = dead_letters;
    figures.unexpected_exits = fleet.unexpected_exits.clone();
    figures.unexpected_exits.extend(stop_failures);
    if let Err(e) = finished {
        figures.unfinished = Some(e);
    }
    figures.requests_sent_in = requests_sent;
    figures.caught_up_in = caught_up;
    figures.total = started.elapsed();

    services.cancel();
    let _ = registry.await;
    pool.close().await;
    // The run's own clients go before the broker, or they log its disappearance as errors.
    drop(producer);
    broker.stop().await;
    Ok(figures)
}

/// Sends the requests at a fixed rate, one batch per tick, and returns the job ids the broker
/// acknowledged. A batch that fails is sent again with the same job ids, as an upstream
/// service retrying would.
struct Submitter<'a> {
    codec: &'a Codec,
    producer: &'a Producer,
    topics: &'a Topics,
    requests: u32,
    rate: u32,
}

impl Submitter<'_> {
    async fn send_all(&self, cancel: &CancellationToken) -> Result<Vec<JobId>, ChaosError> {
        let mut batches = JoinSet::new();
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let started = Instant::now();
        let mut sent: u32 = 0;
        while sent < self.requests {
            ticks.tick().await;
            let due = ((started.elapsed().as_secs_f64() * f64::from(self.rate)).ceil() as u32)
                .min(self.requests);
            let batch: Vec<RecommendationRequested> = (sent..due)
                .filter_map(|i| UserId::new(i64::from(i) % USERS + 1).ok())
                .map(|user_id| RecommendationRequested {
                    job_id: JobId::new_random(),
                    user_id,
                    requested_at: now(),
                })
                .collect();
            sent = due;
            if batch.is_empty() {
                continue;
            }
            let (codec, producer, topics) = (
                self.codec.clone(),
                self.producer.clone(),
                self.topics.clone(),
            );
            let cancel = cancel.clone();
            batches.spawn(async move {
                crate::retry::until_ok(producer.backoff(), &cancel, || {
                    crate::app::tools::send_requests(&codec, &producer, &topics, &batch)
                })
                .await
                .map(|()| batch.iter().map(|r| r.job_id).collect::<Vec<_>>())
            });
        }
        let mut acknowledged = Vec::with_capacity(self.requests as usize);
        while let Some(batch) = batches.join_next().await {
            let jobs = batch
                .map_err(|e| ChaosError::Failed(format!("a sending task crashed: {e}")))?
                .map_err(|e| ChaosError::Failed(format!("requests could not be sent: {e}")))?;
            acknowledged.extend(jobs);
        }
        Ok(acknowledged)
    }
}

/// Carries out `steps` at their times, restarts killed roles and watches every process;
/// returns when the last disturbance (and the restart it caused) is over, with its instant.
async fn disturb(
    steps: &[Step],
    fleet: &mut Fleet,
    broker: &mut LocalBroker,
    started: Instant,
) -> Result<Instant, ChaosError> {
    let mut next = 0;
    let mut resume_broker_at: Option<Instant> = None;
    let mut last = Instant::now();
    let mut ticks = tokio::time::interval(TICK);
    loop {
        ticks.tick().await;
        let elapsed = started.elapsed();
        while next < steps.len() && steps[next].at <= elapsed {
            let action = steps[next].action;
            tracing::info!(at = ?steps[next].at, ?action, "chaos step");
            match action {
                Action::Kill {
                    target,
                    restart_after,
                } => fleet.kill(target, restart_after).await?,
                Action::PauseBroker(pause) => {
                    broker.pause()?;
                    fleet.pauses += 1;
                    resume_broker_at = Some(Instant::now() + pause);
                }
                Action::AddProjector => fleet.add_projector()?,
                Action::RemoveProjector => fleet.remove_projector().await,
                Action::RestartBroker => {
                    broker.restart().await?;
                    fleet.broker_restarts += 1;
                }
            }
            last = Instant::now();
            next += 1;
        }
        if let Some(at) = resume_broker_at
            && Instant::now() >= at
        {
            broker.resume()?;
            resume_broker_at = None;
            last = Instant::now();
        }
        if fleet.tick()? {
            last = Instant::now();
        }
        if next == steps.len() && resume_broker_at.is_none() && !fleet.restarts_pending() {
            return Ok(last);
        }
    }
}

/// Waits until every job of `jobs` is terminal, watching the processes meanwhile.
async fn wait_until_finished(
    pool: &sqlx::PgPool,
    jobs: &[JobId],
    timeout: Duration,
    fleet: &mut Fleet,
) -> Result<(), String> {
    let expected = jobs.iter().collect::<HashSet<_>>().len();
    let deadline = Instant::now() + timeout;
    let mut terminal = 0;
    while Instant::now() < deadline {
        fleet.tick().map_err(|e| e.to_string())?;
        let counts = db::jobs::status_counts_of(pool, jobs)
            .await
            .map_err(|e| e.to_string())?;
        terminal = counts
            .iter()
            .filter(|(status, _)| status.is_terminal())
            .map(|(_, n)| *n as usize)
            .sum();
        if terminal >= expected {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(format!(
        "only {terminal} of {expected} jobs finished within {timeout:?} after the last request"
    ))
}

/// Every job's outcomes (`done`/`failed`) in the jobs topic up to the projector's stored
/// positions, read the way `recq verify` reads the log.
async fn read_outcomes(
    kafka: &KafkaSettings,
    topics: &Topics,
    codec: &Codec,
    pool: &sqlx::PgPool,
) -> Result<Outcomes, ChaosError> {
    let mut conn = pool.acquire().await.map_err(db::DbError::from)?;
    let positions = db::offsets::read(&mut conn, &[&topics.jobs]).await?;
    drop(conn);
    let mut outcomes: BTreeMap<JobId, HashSet<JobStatus>> = BTreeMap::new();
    let mut terminal_events = 0;
    verify::read_log(
        kafka,
        topics,
        codec,
        &positions,
        Duration::from_secs(30),
        |event| {
            if let Event::Job(JobEvent::Status(e)) = event
                && e.status.is_terminal()
            {
                terminal_events += 1;
                outcomes.entry(e.job_id).or_default().insert(e.status);
            }
        },
    )
    .await?;
    Ok(Outcomes {
        by_job: outcomes,
        terminal_events,
    })
}

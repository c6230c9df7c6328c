//! The bench's order of work: recommender (7), then per repetition the from-memory figures
//! side by side (1, 2, 3, 5), then the broker figures (4, 5), then end to end (6).

use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::apply::{self, fresh_db};
use super::events::{StreamShape, generate};
use super::report::{Figures, Results, human};
use super::targets::{git_commit, targets};
use super::{BenchArgs, BenchError, CONNECT_TIMEOUT, Ctx, broker, e2e, recommender};
use crate::kafka::codec::Codec;
use crate::kafka::producer::Producer;
use crate::kafka::{KafkaSettings, Topics};

const DATABASES: [&str; 8] = [
    "apply",
    "seed",
    "copy",
    "rebuild_mem",
    "broker",
    "rebuild",
    "e2e",
    "registry",
];

/// Runs the figures `args.only` asks for and returns the results (not yet printed).
pub async fn run(args: BenchArgs) -> Result<Results, BenchError> {
    let started = Instant::now();
    let registry_pool = fresh_db(&args.pg_server, "registry", 4).await?;
    let services = CancellationToken::new();
    let (registry_url, registry) =
        crate::harness::serve_registry(registry_pool, services.clone()).await?;
    let kafka = KafkaSettings {
        brokers: args.brokers.clone(),
        properties: Vec::new(),
        timeout: CONNECT_TIMEOUT,
    };
    let ctx = Ctx {
        data_dir: args
            .data_dir
            .clone()
            .unwrap_or_else(crate::config::default_data_dir),
        recq: match &args.recq_bin {
            Some(path) => path.clone(),
            None => crate::harness::sibling_binary("recq")?,
        },
        codec: Codec::new(&registry_url),
        producer: Producer::new(&kafka)?,
        registry_url,
        kafka,
        args,
    };
    let result = figures(&ctx).await;
    services.cancel();
    let _ = registry.await;
    apply::drop_dbs(&ctx.args.pg_server, &DATABASES).await;
    let figures = result?;
    eprintln!(
        "[bench] finished in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(Results {
        generated_at: chrono::Utc::now().to_rfc3339(),
        commit: git_commit(),
        cores: std::thread::available_parallelism().map_or(0, usize::from),
        reps: ctx.args.reps,
        config: serde_json::json!({
            "jobs": ctx.args.jobs,
            "events": ctx.args.jobs * 4,
            "window": ctx.args.window,
            "seed_events": ctx.args.seed_events,
            "batch_size": ctx.args.batch_size,
            "rebuild_batch_size": ctx.args.rebuild_batch_size,
            "partitions": ctx.args.partitions,
            "rate": ctx.args.rate,
            "duration_secs": ctx.args.duration_secs,
            "poll_ms": e2e::POLL.as_millis() as u64,
        }),
        targets: targets(&figures),
        figures: figures.into_vec(),
    })
}

async fn figures(ctx: &Ctx) -> Result<Figures, BenchError> {
    let args = &ctx.args;
    let mut f = Figures::default();
    let reps = args.reps;
    if args.wants(7) {
        for rep in 1..=reps {
            let dir = ctx.data_dir.clone();
            let r = tokio::task::spawn_blocking(move || recommender::measure(&dir, 10))
                .await
                .map_err(|e| BenchError::Failed(format!("the recommender bench crashed: {e}")))??;
            let users = format!("top-10 for each of the {} users, in-process", r.users);
            f.add(
                "7a",
                "recommender_p50_ms",
                "recommender: per user, p50",
                "ms",
                &users,
                r.p50_ms,
            );
            f.add(
                "7b",
                "recommender_p99_ms",
                "recommender: per user, p99",
                "ms",
                "",
                r.p99_ms,
            );
            f.add(
                "7c",
                "recommender_mean_ms",
                "recommender: per user, mean",
                "ms",
                "",
                r.mean_ms,
            );
            f.add(
                "7d",
                "recommender_startup_ms",
                "recommender: start-up (load Parquet + build)",
                "ms",
                "",
                r.load_ms + r.build_ms,
            );
            f.add(
                "7e",
                "recommender_build_ms",
                "recommender: of which model build",
                "ms",
                "",
                r.build_ms,
            );
            eprintln!(
                "[bench] (7) rep {rep}/{reps}: p50 {:.2} ms, start-up {:.0} ms",
                r.p50_ms,
                r.load_ms + r.build_ms
            );
        }
    }
    let needs_stream = [1, 2, 3, 4, 5].iter().any(|n| args.wants(*n));
    let events = if needs_stream {
        generate(StreamShape {
            jobs: args.jobs,
            window: args.window,
            partitions: args.partitions,
        })
    } else {
        Vec::new()
    };
    let n = events.len();
    let memory_topics = Topics::with_prefix("bench-memory.");
    let final_rows = apply::final_rows(&events);
    let seed_prefix = &events[..args.seed_events.min(n)];
    for rep in 1..=reps {
        let tag = format!("[bench] rep {rep}/{reps}");
        if args.wants(1) {
            let pool = fresh_db(&args.pg_server, "apply", 4).await?;
            let v = apply::projector_apply(&pool, &events, args.batch_size, &memory_topics.jobs)
                .await?;
            pool.close().await;
            let note = format!(
                "{n} events, {} jobs, batches of {}, from memory into an empty database",
                final_rows.len(),
                args.batch_size
            );
            f.add(
                "1",
                "projector_apply",
                "projector apply path (Batch::apply)",
                "events/s",
                &note,
                v,
            );
            eprintln!("{tag} (1) projector apply: {} events/s", human(v));
        }
        if args.wants(2) {
            let pool = fresh_db(&args.pg_server, "seed", 2).await?;
            let v = apply::seed_way(&pool, seed_prefix).await?;
            pool.close().await;
            let note = format!(
                "SHORTENED: the first {} of the same {n} events; one statement per transaction",
                seed_prefix.len()
            );
            f.add(
                "2",
                "seed_way",
                "the seed's way (1 UPDATE/INSERT per event, autocommit)",
                "events/s",
                &note,
                v,
            );
            eprintln!("{tag} (2) seed's way: {} events/s", human(v));
        }
        if args.wants(3) {
            let pool = fresh_db(&args.pg_server, "copy", 2).await?;
            let v = apply::copy_ceiling(&pool, &final_rows).await?;
            pool.close().await;
            let note = format!(
                "COPY of the final {} rows into the same empty table",
                final_rows.len()
            );
            f.add(
                "3",
                "copy_ceiling",
                "ceiling: COPY of the final rows",
                "rows/s",
                &note,
                v,
            );
            eprintln!("{tag} (3) COPY: {} rows/s", human(v));
        }
        if args.wants(5) {
            let pool = fresh_db(&args.pg_server, "rebuild_mem", 4).await?;
            let v =
                apply::rebuild_from_memory(&pool, &events, args.rebuild_batch_size, &memory_topics)
                    .await?;
            pool.close().await;
            f.add(
                "5a",
                "rebuild_from_memory",
                "rebuild from memory (shadow tables + swap)",
                "events/s",
                "the rebuild's Batch::apply into shadow tables, then the swap",
                v,
            );
            eprintln!("{tag} (5) rebuild from memory: {} events/s", human(v));
        }
    }
    if args.wants(4) || args.wants(5) {
        let (_, topics) = broker::fresh_topics(ctx).await?;
        let encoded = broker::encode_all(ctx, &topics.jobs, &events).await?;
        for rep in 1..=reps {
            let tag = format!("[bench] rep {rep}/{reps}");
            let run = broker::through_broker(ctx, &encoded).await?;
            f.add(
                "4a",
                "broker_produce",
                "through the broker: producing the events",
                "events/s",
                "recq's Producer, 4,096 sends in flight (acks=all, lz4)",
                run.produce_rate,
            );
            f.add(
                "4b",
                "broker_projector",
                "through the broker: recq projector consuming",
                "events/s",
                "child process; from its first stored batch until its positions cover every offset",
                run.consume_rate,
            );
            f.add(
                "4c",
                "broker_projector_wall",
                "through the broker: the same, from process start",
                "events/s",
                "includes start-up and the broker's ~5 s first group join",
                run.consume_wall_rate,
            );
            f.add(
                "8a",
                "rss_projector_4",
                "peak RSS: projector during (4)",
                "MB",
                "VmHWM of the child process",
                run.projector_peak_mb,
            );
            eprintln!(
                "{tag} (4) produce {} events/s, projector {} events/s",
                human(run.produce_rate),
                human(run.consume_rate)
            );
            if args.wants(5) {
                let v = broker::rebuild_through_broker(ctx, &run.topics, encoded.len()).await?;
                f.add("5b", "rebuild_through_broker", "rebuild through the broker (recq::rebuild)", "events/s", "in-process library entry point of `recq rebuild`; its 0.5 s quiet-log wait excluded", v);
                eprintln!(
                    "{tag} (5) rebuild through the broker: {} events/s",
                    human(v)
                );
            }
        }
    }
    if args.wants(6) {
        for rep in 1..=reps {
            let r = e2e::run(ctx).await?;
            let offered = format!(
                "{} requests at {}/s for {} s, open loop; polled every {} ms",
                r.offered,
                args.rate,
                args.duration_secs,
                e2e::POLL.as_millis()
            );
            f.add(
                "6a",
                "e2e_p50_ms",
                "end to end: produced → row done, p50",
                "ms",
                &offered,
                r.p50_ms,
            );
            f.add("6b", "e2e_p95_ms", "end to end: p95", "ms", "", r.p95_ms);
            f.add("6c", "e2e_p99_ms", "end to end: p99", "ms", "", r.p99_ms);
            f.add(
                "6d",
                "e2e_jobs_per_s",
                "end to end: jobs/s sustained",
                "jobs/s",
                "",
                r.jobs_per_s,
            );
            f.add(
                "6e",
                "worker_processing_p50_ms",
                "worker: finished_at − started_at, p50",
                "ms",
                "encode + hand queue/process to the producer + model (acks awaited later)",
                r.processing_p50_ms,
            );
            f.add(
                "6f",
                "worker_cpu_ms_per_job",
                "worker: CPU time per job (recommender included)",
                "ms",
                "utime+stime of the worker process over the load / jobs",
                r.worker_cpu_ms_per_job,
            );
            for (ids, key, who, stages) in [
                (["6g", "6h", "6i"], "median", "median job", r.median_stages),
                (
                    ["6j", "6k", "6l"],
                    "p99",
                    "slowest 1% (mean)",
                    r.tail_stages,
                ),
            ] {
                f.add(
                    ids[0],
                    &format!("e2e_{key}_to_worker_ms"),
                    &format!("{who}: produced → worker started"),
                    "ms",
                    "producer, broker, the worker's fetch and queue",
                    stages.to_worker_ms,
                );
                f.add(
                    ids[1],
                    &format!("e2e_{key}_in_worker_ms"),
                    &format!("{who}: started → finished"),
                    "ms",
                    "the worker's own time",
                    stages.in_worker_ms,
                );
                f.add(
                    ids[2],
                    &format!("e2e_{key}_to_table_ms"),
                    &format!("{who}: finished → row seen done"),
                    "ms",
                    "done produced, projector fetch + batch + commit, bench poll",
                    stages.to_table_ms,
                );
            }
            f.add(
                "8b",
                "rss_worker_6",
                "peak RSS: worker during (6)",
                "MB",
                "VmHWM of the child process",
                r.worker_peak_mb,
            );
            f.add(
                "8c",
                "rss_projector_6",
                "peak RSS: projector during (6)",
                "MB",
                "VmHWM of the child process",
                r.projector_peak_mb,
            );
            eprintln!(
                "[bench] rep {rep}/{reps} (6) p50 {:.0} ms, p99 {:.0} ms, {:.0} jobs/s, {}/{} done",
                r.p50_ms, r.p99_ms, r.jobs_per_s, r.done, r.offered
            );
        }
    }
    Ok(f)
}

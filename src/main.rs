//! recq's entry point: parse the command line, set up logging, run one subcommand. The only
//! place that picks exit codes: 0 success, 1 failure (one line on stderr), 2 bad usage.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use recq::app::{self, AppError, demo, tools};
use recq::cli::{Cli, Command, ProjectorArgs, WorkerArgs};
use recq::config::{self, Settings};
use recq::projector::{self, ProjectorConfig};
use recq::worker::{self, WorkerConfig, WorkerDeps};

fn main() -> ExitCode {
    let cli = Cli::parse();
    recq::telemetry::init(&cli.global.log);
    let Some(runtime) = recq::shutdown::runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn worker_config(args: &WorkerArgs) -> WorkerConfig {
    WorkerConfig {
        group: args.worker_group.clone(),
        concurrency: args.concurrency as usize,
        top_n: args.top_n as usize,
        drain_timeout: Duration::from_secs(10),
        max_message_bytes: usize::try_from(args.max_message_bytes).unwrap_or(usize::MAX),
    }
}

fn projector_config(args: &ProjectorArgs) -> ProjectorConfig {
    ProjectorConfig {
        group: args.projector_group.clone(),
        batch_size: args.batch_size as usize,
        flush_interval: Duration::from_millis(args.flush_ms),
    }
}

async fn run(cli: Cli) -> Result<ExitCode, AppError> {
    let settings = Settings::from_args(&cli.global);
    let cancel = recq::shutdown::on_signals();
    match cli.command {
        Command::Worker(args) => {
            let recommender = app::recommender(&config::data_dir(&args.data))?;
            let projection = app::database(&settings, &settings.database_url).await?;
            let (codec, producer) = app::kafka(&settings).await?;
            let deps = WorkerDeps {
                topics: settings.topics.clone(),
                codec,
                producer,
                recommender,
                projection: Some(projection),
            };
            worker::run(worker_config(&args), settings.kafka.clone(), deps, cancel).await?;
        }
        Command::Projector(args) => {
            let pool = app::database(&settings, &settings.database_url).await?;
            let (codec, producer) = app::kafka(&settings).await?;
            projector::run(
                projector_config(&args),
                settings.kafka.clone(),
                settings.topics.clone(),
                pool,
                codec,
                producer,
                cancel,
            )
            .await?;
        }
        Command::Registry { listen } => {
            let pool = app::database(&settings, &settings.database_url).await?;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|source| AppError::Listen {
                    addr: listen,
                    source,
                })?;
            tracing::info!(%listen, "schema registry listening");
            recq::registry::serve(pool, listener, cancel)
                .await
                .map_err(|e| AppError::Failed(format!("registry stopped: {e}")))?;
        }
        Command::Setup => {
            app::database(&settings, &settings.database_url).await?;
            app::kafka(&settings).await?;
            println!("topics created, schemas registered, database migrated");
        }
        Command::Submit { users } => {
            let users = tools::parse_users(&users)?;
            let (codec, producer) = app::kafka(&settings).await?;
            for job in tools::submit(&codec, &producer, &settings.topics, &users).await? {
                println!("{job}");
            }
        }
        Command::Status {
            job_id,
            user,
            stalled,
            stalled_after_secs,
        } => {
            let pool = app::database(&settings, &settings.database_url).await?;
            match (job_id, user) {
                (Some(job), _) => tools::print_job(&pool, &job).await?,
                (None, Some(user)) => tools::print_user(&pool, user).await?,
                (None, None) if stalled => {
                    let after = Duration::from_secs(stalled_after_secs);
                    tools::print_stalled(&pool, after).await?;
                }
                (None, None) => {
                    return Err(AppError::Invalid(
                        "give a JOB_ID, --user or --stalled".into(),
                    ));
                }
            }
        }
        Command::Dlq(command) => app::dlq::run(&settings, command).await?,
        Command::Verify { idle_secs } => {
            let pool = app::database(&settings, &settings.database_url).await?;
            let (codec, _) = app::kafka(&settings).await?;
            let report = recq::verify::verify(
                &settings.kafka,
                &settings.topics,
                &codec,
                &pool,
                Duration::from_secs(idle_secs),
            )
            .await?;
            println!("{report}");
            if !report.is_consistent() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Rebuild {
            restart,
            batch_size,
            idle_ms,
            no_progress,
        } => {
            let pool = app::database(&settings, &settings.database_url).await?;
            let (codec, _) = app::kafka(&settings).await?;
            let options = recq::rebuild::RebuildOptions {
                restart,
                batch_size: batch_size as usize,
                idle: Duration::from_millis(idle_ms),
                progress: !no_progress,
            };
            let report = recq::rebuild::rebuild(
                &settings.kafka,
                &settings.topics,
                &codec,
                &pool,
                &options,
                &cancel,
            )
            .await?;
            println!(
                "rebuilt {} rows from {} events in {:.1} s ({:.0} events/s){}",
                report.rows,
                report.events,
                report.elapsed.as_secs_f64(),
                report.events as f64 / report.elapsed.as_secs_f64().max(0.001),
                if report.resumed { ", resumed" } else { "" }
            );
        }
        Command::Prune { older_than } => {
            let pool = app::database(&settings, &settings.database_url).await?;
            let (_, producer) = app::kafka(&settings).await?;
            let pruned = tools::prune(&pool, &producer, &settings.topics, older_than).await?;
            println!(
                "{pruned} finished jobs older than {older_than} pruned (tombstones published)"
            );
        }
        Command::EraseUser { user } => {
            let user = recq::domain::UserId::new(user)
                .map_err(|e| AppError::Invalid(format!("user: {e}")))?;
            let pool = app::database(&settings, &settings.database_url).await?;
            let (codec, producer) = app::kafka(&settings).await?;
            let jobs = tools::erase_user(&pool, &codec, &producer, &settings.topics, user).await?;
            println!("user {user} erased ({jobs} jobs tombstoned); the projector applies it");
        }
        Command::Demo {
            users,
            timeout_secs,
            registry_listen,
            no_registry,
            worker,
            projector,
        } => {
            let options = demo::DemoOptions {
                users: users as usize,
                timeout: Duration::from_secs(timeout_secs),
                registry_listen: (!no_registry).then_some(registry_listen),
                data_dir: config::data_dir(&worker.data),
                worker: worker_config(&worker),
                projector: projector_config(&projector),
            };
            let summary = demo::run(settings, options, cancel).await?;
            if !summary.passed() {
                eprintln!(
                    "demo FAILED: {} of {} jobs done, verify {}",
                    summary
                        .counts
                        .get(&recq::domain::JobStatus::Done)
                        .copied()
                        .unwrap_or(0),
                    summary.requested,
                    if summary.verified { "passed" } else { "failed" }
                );
                return Ok(ExitCode::FAILURE);
            }
            println!("demo passed");
        }
    }
    Ok(ExitCode::SUCCESS)
}

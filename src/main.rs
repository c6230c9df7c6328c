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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
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
            let (codec, producer) = app::kafka(&settings).await?;
            let deps = WorkerDeps {
                topics: settings.topics.clone(),
                codec,
                producer,
                recommender,
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
        Command::Status { job_id, user } => {
            let pool = app::database(&settings, &settings.database_url).await?;
            match (job_id, user) {
                (Some(job), _) => tools::print_job(&pool, &job).await?,
                (None, Some(user)) => tools::print_user(&pool, user).await?,
                (None, None) => return Err(AppError::Invalid("give a JOB_ID or --user".into())),
            }
        }
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

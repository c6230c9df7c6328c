//! `recq-chaos`: kills and pauses recq's processes and its broker under real load, then
//! checks that nothing was lost or counted twice. `make chaos` runs it (docs/chaos.md).

use std::process::ExitCode;

use clap::Parser;
use recq::chaos::{self, ChaosArgs};

fn main() -> ExitCode {
    let args = ChaosArgs::parse();
    recq::telemetry::init("warn,recq::chaos=info,sqlx=warn");
    let Some(runtime) = recq::shutdown::runtime() else {
        return ExitCode::FAILURE;
    };
    // Ctrl-C or SIGTERM drops the run: its processes are killed and its broker stopped
    // (they are killed on drop), so nothing it started outlives it.
    let outcome = runtime.block_on(async {
        let stop = recq::shutdown::on_signals();
        tokio::select! {
            outcome = chaos::run(args) => Some(outcome),
            _ = stop.cancelled() => None,
        }
    });
    let Some(outcome) = outcome else {
        eprintln!("error: interrupted; the run's processes and broker were stopped");
        return ExitCode::FAILURE;
    };
    match outcome {
        Ok(figures) => {
            println!("{figures}");
            if figures.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

//! `recq-chaos`: kills and pauses recq's processes and its broker under real load, then
//! checks that nothing was lost or counted twice. `make chaos` runs it (docs/chaos.md).

use std::process::ExitCode;

use clap::Parser;
use recq::chaos::{self, ChaosArgs};

fn main() -> ExitCode {
    let args = ChaosArgs::parse();
    recq::telemetry::init("warn,recq::chaos=info,sqlx=warn");
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
    match runtime.block_on(chaos::run(args)) {
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

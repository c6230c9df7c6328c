//! `recq-bench`: measures recq's performance figures and prints them (see bench/README.md).
//! `make bench` runs it against its own broker; it writes bench/results.json.

use std::process::ExitCode;

use clap::Parser;
use recq::bench::{self, BenchArgs};

fn main() -> ExitCode {
    let args = BenchArgs::parse();
    recq::telemetry::init("warn,sqlx=warn");
    let Some(runtime) = recq::shutdown::runtime() else {
        return ExitCode::FAILURE;
    };
    let out = args.out.clone();
    match runtime.block_on(bench::run(args)) {
        Ok(results) => {
            print!("{}", results.table());
            if let Err(e) = results.write_json(&out) {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
            println!("\nwritten: {}", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

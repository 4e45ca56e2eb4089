//! `boxyard-runner`: the Boxyard runner agent binary.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    let rt = tokio::runtime::Runtime::new().expect("cannot start the async runtime");
    let _telemetry = rt.block_on(async { boxyard_telemetry::init("boxyard-runner", "warn,boxyard_runner=info") });
    match rt.block_on(cli::run(args)) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("boxyard-runner: error: {e:#}");
            std::process::ExitCode::from(cli::EXIT_RUNNER_ERROR)
        }
    }
}

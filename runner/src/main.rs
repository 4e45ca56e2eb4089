//! `boxyard-runner`: the Boxyard runner agent binary.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,boxyard_runner=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Runtime::new().expect("cannot start the async runtime");
    match rt.block_on(cli::run(args)) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("boxyard-runner: error: {e:#}");
            std::process::ExitCode::from(cli::EXIT_RUNNER_ERROR)
        }
    }
}

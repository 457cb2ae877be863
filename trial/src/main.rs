//! The `trial` binary: parses flags and hands over to [`vitalsink_trial::cli::main`].

use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    vitalsink_trial::cli::main(vitalsink_trial::cli::Cli::parse()).await
}

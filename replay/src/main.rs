//! The `replay` binary: parses flags and hands over to [`vitalsink_replay::cli::main`].

use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    vitalsink_replay::cli::main(vitalsink_replay::cli::Cli::parse()).await
}

//! The `reshard` binary: parses flags and hands over to [`vitalsink_reshard::cli::main`].

use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    vitalsink_reshard::cli::main(vitalsink_reshard::cli::Cli::parse()).await
}

//! The `ingest` binary: parses flags and hands over to [`vitalsink_ingest::cli::main`].

use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    vitalsink_ingest::cli::main(vitalsink_ingest::cli::Cli::parse()).await
}

//! The `archiver` binary: parses flags and hands over to [`vitalsink_archiver::cli::main`].

use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    vitalsink_archiver::cli::main(vitalsink_archiver::cli::Cli::parse()).await
}

//! The `query` binary: parses flags and hands over to [`vitalsink_query::cli::main`].

use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    vitalsink_query::cli::main(vitalsink_query::cli::Cli::parse()).await
}

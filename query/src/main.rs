//! The `query` binary: parses flags and hands over to [`vitalsink_query::cli::main`].

use clap::Parser;
use std::process::ExitCode;

/// mimalloc returns freed pages to the system, so the memory guard's reading of RSS
/// (`flight::memory`) falls once a statement's memory is freed; glibc's malloc kept it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    vitalsink_query::cli::main(vitalsink_query::cli::Cli::parse()).await
}

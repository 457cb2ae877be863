//! Command line of the `ingest` binary.

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use vitalsink_common::cli::{self as common_cli, CommonArgs};
use vitalsink_common::Config;

use crate::error::Result;

/// Kafka → sharded TimescaleDB ingest worker.
#[derive(Debug, Parser)]
#[command(name = "ingest", version, about)]
pub struct Cli {
    /// Flags shared with the other binaries.
    #[command(flatten)]
    pub common: CommonArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume, validate, route and write until SIGTERM/SIGINT (the worker).
    Run,
    /// Apply the schema migrations on every shard (idempotent) and exit.
    Migrate,
    /// Load and validate the configuration, print the effective one as JSON and exit.
    CheckConfig,
}

/// Runs the command; returns the exit code (0 success, 1 failure, 2 bad configuration).
///
/// `allocator` is what [`crate::allocator::fix_mmap_threshold`] returned; its error is
/// logged once logging is up.
pub async fn main(cli: Cli, allocator: std::io::Result<()>) -> ExitCode {
    let cfg = match common_cli::start("ingest", &cli.common) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(e) = allocator {
        tracing::warn!(error = %e, "could not fix glibc's mmap threshold; the worker's RSS may exceed ingest.memory_cap_bytes");
    }
    common_cli::exit_code("ingest", run(cli.command, cfg).await)
}

async fn run(command: Command, cfg: Config) -> Result<()> {
    match command {
        Command::Run => {
            crate::worker::run(cfg, vitalsink_common::observe::shutdown_on_signals()).await?
        }
        Command::Migrate => common_cli::migrate(&cfg).await?,
        Command::CheckConfig => {
            #[allow(clippy::print_stdout)]
            {
                println!("{}", common_cli::config_json(&cfg));
            }
        }
    }
    Ok(())
}

//! The `archiver` binary: parses flags and hands over to [`vitalsink_archiver::cli::main`],
//! which loads the configuration and starts the async runtime.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    vitalsink_archiver::cli::main(vitalsink_archiver::cli::Cli::parse())
}

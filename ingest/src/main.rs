//! The `ingest` binary: fixes glibc's mmap threshold ([`vitalsink_ingest::allocator`]),
//! parses flags and hands over to [`vitalsink_ingest::cli::main`].

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Before the runtime's threads: the process may execute itself again here.
    let reexec = vitalsink_ingest::allocator::fix_mmap_threshold();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            // Before logging is set up: the one place that reports to stderr directly.
            eprintln!("ingest: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(vitalsink_ingest::cli::main(
        vitalsink_ingest::cli::Cli::parse(),
        reexec,
    ))
}

//! glibc malloc settings the memory cap depends on, applied before anything else runs.
//!
//! glibc serves allocations of at least `M_MMAP_THRESHOLD` bytes (128 KiB by default) with
//! their own mappings, given back to the system when freed. But by default the threshold
//! moves: each time such a block is freed, glibc raises it to that block's size, up to
//! 32 MiB (`mallopt(3)`, M_MMAP_THRESHOLD). After the first batch buffers were freed, later
//! ones came from the heap, whose freed space glibc keeps: the worker's RSS then went over
//! `ingest.memory_cap_bytes` by up to a quarter, from run to run (issue 27; 64.9–67.7 MiB
//! against 64 with the threshold moving, 51–56 MiB with it fixed, in
//! `tests/it/ingest/ingest_memory.rs`). Setting the threshold fixes it and turns the dynamic
//! adjustment off. The project forbids `unsafe`, so `mallopt` cannot be called; glibc reads
//! the same setting from the environment at start-up (`MALLOC_MMAP_THRESHOLD_`, mallopt(3)
//! "Environment variables"), so the process sets it and executes itself again, once, before
//! its first thread (same pid, same arguments). A value set by the operator is kept.

use std::os::unix::process::CommandExt;

/// The environment variable glibc reads M_MMAP_THRESHOLD from.
pub const MMAP_THRESHOLD_ENV: &str = "MALLOC_MMAP_THRESHOLD_";
/// The threshold set, bytes: glibc's own default, kept fixed.
pub const MMAP_THRESHOLD_BYTES: usize = 128 << 10;

/// Executes the process again with [`MMAP_THRESHOLD_ENV`] set, unless it is set already.
/// Returns only when it is set already, or when the re-execution failed: the process then
/// runs with glibc's moving threshold, and [`crate::cli::main`] logs the error once logging
/// is up.
///
/// # Errors
/// The `exec` error, when the binary could not be executed again.
pub fn fix_mmap_threshold() -> std::io::Result<()> {
    if std::env::var_os(MMAP_THRESHOLD_ENV).is_some() {
        return Ok(());
    }
    let exe = std::env::current_exe()?;
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(MMAP_THRESHOLD_ENV, MMAP_THRESHOLD_BYTES.to_string())
        .exec();
    Err(err)
}

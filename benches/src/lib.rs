//! Shared measuring helpers of the benchmarks: process CPU time and peak memory from `/proc`.

pub mod history;
pub mod placement;

/// Path of the release build of binary `name` (`target/release/NAME`), which `dev/bench`
/// builds before the benchmarks.
///
/// # Panics
/// When it is missing.
pub fn release_binary(name: &str) -> std::path::PathBuf {
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/release")
        .join(name);
    assert!(
        bin.exists(),
        "{} missing: run dev/bench (it builds the release binaries)",
        bin.display()
    );
    bin
}

/// User + system CPU time of process `pid`, seconds (`/proc/PID/stat` fields 14 and 15, in
/// clock ticks of `_SC_CLK_TCK` = 100 Hz on Linux).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces: count fields after its closing ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Prints one result line: `name: value unit (ratio × limit_name)`.
pub fn report(name: &str, value: f64, unit: &str, ratio_to: Option<(&str, f64)>) {
    let ratio = ratio_to
        .map(|(n, l)| format!("  = {:.2}× {n}", value / l))
        .unwrap_or_default();
    #[allow(clippy::print_stdout)]
    {
        println!("{name:<44} {value:>14.1} {unit}{ratio}");
    }
}

/// Busy CPU time of the whole machine so far, seconds over all cores: the `cpu` line of
/// `/proc/stat` (user, nice, system, irq, softirq, steal; clock ticks of 100 Hz).
pub fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let f: Vec<f64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| f.get(i))
        .sum::<f64>();
    Some(busy / 100.0)
}

/// Cores of the machine: the `cpuN` lines of `/proc/stat` (not this process's affinity,
/// which [`placement`] may have narrowed).
pub fn cores() -> f64 {
    let from_stat = std::fs::read_to_string("/proc/stat").ok().map(|s| {
        s.lines()
            .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
            .count()
    });
    match from_stat {
        Some(n) if n > 0 => n as f64,
        _ => std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64),
    }
}

/// Summed user + system CPU time, seconds, of the live processes whose command line (its
/// arguments joined by spaces) contains `needle` — e.g. a database name, as PostgreSQL titles
/// its backends `postgres: USER DB …`.
pub fn cpu_seconds_matching(needle: &str) -> f64 {
    pids_matching(needle)
        .into_iter()
        .filter_map(cpu_seconds)
        .sum()
}

/// The live processes (the numeric entries of `/proc`).
pub fn pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .collect()
}

/// The live processes whose command line (arguments joined by spaces) contains `needle`.
pub fn pids_matching(needle: &str) -> Vec<u32> {
    pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(needle)
                })
                .unwrap_or(false)
        })
        .collect()
}

/// The timestamp of the first line of a `tracing` log (RFC 3339 first, as the binaries write
/// it without a terminal) that contains `marker`.
pub fn log_time(log: &str, marker: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    log.lines()
        .find(|l| l.contains(marker))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
}

/// Runs a Python `script` (with `args`) that prints one JSON object with the keys `secs`,
/// `bytes` and `threads` as its last `{`-line (DuckDB may print progress before it):
/// (seconds, bytes), printed with `label`.
///
/// # Panics
/// When the script fails (`dev/setup` installs duckdb and duckdb-extension-postgres).
pub fn duckdb_timed(label: &str, script: &str, args: &[&std::ffi::OsStr]) -> (f64, u64) {
    let v = duckdb_json(label, script, args);
    (
        v["secs"].as_f64().unwrap_or(f64::NAN),
        v["bytes"].as_u64().unwrap_or(0),
    )
}

/// [`duckdb_timed`], returning the script's whole JSON line (for fields of its own, such as
/// `cpu`: the process's CPU-seconds, `time.process_time()`, printed when present).
///
/// # Panics
/// As [`duckdb_timed`].
pub fn duckdb_json(label: &str, script: &str, args: &[&std::ffi::OsStr]) -> serde_json::Value {
    let res = std::process::Command::new("python3")
        .args(["-c", script])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("python3: {e}"));
    assert!(
        res.status.success(),
        "{label} failed (dev/setup installs duckdb and duckdb-extension-postgres): {}",
        String::from_utf8_lossy(&res.stderr)
    );
    let stdout = String::from_utf8_lossy(&res.stdout);
    let last = stdout
        .lines()
        .rfind(|l| l.starts_with('{'))
        .unwrap_or_default();
    let v: serde_json::Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("{label}: {e}: {stdout}"));
    let secs = v["secs"].as_f64().unwrap_or(f64::NAN);
    let bytes = v["bytes"].as_u64().unwrap_or(0);
    let cpu = v["cpu"]
        .as_f64()
        .map(|c| format!(", {c:.1} CPU-s"))
        .unwrap_or_default();
    #[allow(clippy::print_stdout)]
    {
        println!(
            "{label}: {secs:.2} s, {bytes} bytes, {} threads{cpu}",
            v["threads"]
        );
    }
    v
}

/// One open connection per shard.
///
/// # Panics
/// When a shard cannot be reached.
pub async fn connect_all(
    shards: &[vitalsink_common::config::ShardConfig],
) -> Vec<tokio_postgres::Client> {
    let mut out = Vec::new();
    for s in shards {
        out.push(vitalsink_tests::connect(&s.url).await);
    }
    out
}

/// Rows the shards' `ingest_offsets` say were applied (every group and topic), summed: a few
/// rows read, not a scan of the growing hypertables.
pub async fn applied_rows(clients: &[tokio_postgres::Client]) -> i64 {
    let mut n = 0;
    for c in clients {
        n += c
            .query_one(
                "SELECT coalesce(sum(rows_applied), 0)::int8 FROM ingest_offsets",
                &[],
            )
            .await
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(0);
    }
    n
}

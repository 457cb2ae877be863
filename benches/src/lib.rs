//! Shared measuring helpers of the benchmarks: process CPU time and peak memory from `/proc`.

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

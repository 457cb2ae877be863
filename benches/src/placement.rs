//! Where the benchmark's processes run: all on every core (as the local stack starts them), or
//! the shards on one half of the cores and everything else on the other half — what a
//! deployment with its database nodes on their own machines looks like, on one machine.
//!
//! CPU affinity is set with util-linux's `taskset` (Debian: essential package). A shard's
//! postmaster is found as the parent of a backend (`pg_backend_pid()`); backends it forks
//! later inherit its affinity. [`CoreSplit`] restores every process to all cores when dropped
//! (also when a benchmark panics and unwinds). A benchmark killed by a signal leaves the
//! shards and the broker pinned until they restart (`dev/stack down && dev/stack up`), or
//! until `taskset -a -p -c 0-N PID` for each of them.

use std::process::Command;

/// An applied split of the cores; dropping it gives every process all cores back.
#[derive(Debug)]
pub struct CoreSplit {
    /// Cores of the shards, as a `taskset -c` list (e.g. `0` or `0-1`).
    pub shard_cores: String,
    /// Cores of everything else (broker, worker, this benchmark).
    pub other_cores: String,
    all_cores: String,
    postmasters: Vec<u32>,
    others: Vec<u32>,
}

impl CoreSplit {
    /// Pins the postmasters `postmasters` and their children to the first half of `cores`
    /// cores, and the processes `others` (all their threads) to the second half. `None` on a
    /// machine of fewer than 2 cores.
    ///
    /// # Panics
    /// When `taskset` fails (missing, or a process is gone).
    pub fn apply(cores: usize, postmasters: Vec<u32>, others: Vec<u32>) -> Option<Self> {
        if cores < 2 {
            return None;
        }
        let list = |a: usize, b: usize| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        };
        let half = cores / 2;
        let split = Self {
            shard_cores: list(0, half - 1),
            other_cores: list(half, cores - 1),
            all_cores: list(0, cores - 1),
            postmasters,
            others,
        };
        split.pin(&split.shard_cores, &split.other_cores);
        Some(split)
    }

    fn pin(&self, shard_cores: &str, other_cores: &str) {
        for &pm in &self.postmasters {
            for pid in std::iter::once(pm).chain(children(pm)) {
                taskset(shard_cores, pid);
            }
        }
        for &pid in &self.others {
            taskset(other_cores, pid);
        }
    }
}

impl Drop for CoreSplit {
    fn drop(&mut self) {
        let all = self.all_cores.clone();
        self.pin(&all, &all);
    }
}

/// The parent process of `pid` (`PPid:` of `/proc/PID/status`).
pub fn parent(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))?
        .trim()
        .parse()
        .ok()
}

/// Live processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    crate::pids()
        .into_iter()
        .filter(|&c| parent(c) == Some(pid))
        .collect()
}

/// Sets the affinity of every thread of `pid` to `cores`. A process that exited meanwhile (a
/// backend closing) is skipped.
fn taskset(cores: &str, pid: u32) {
    let out = Command::new("taskset")
        .args(["-a", "-p", "-c", cores, &pid.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("taskset: {e} (util-linux is needed for the benchmarks)"));
    let gone = !std::path::Path::new(&format!("/proc/{pid}")).exists();
    assert!(
        out.status.success() || gone,
        "taskset -c {cores} -p {pid}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

//! Progress of a move's copy: an indicatif bar on a terminal, a log line every 5 s otherwise.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Interval between log lines when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Rows copied against the move's total.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    done: u64,
    last_log: Instant,
}

impl Progress {
    /// Starts at `done` of `total` rows (a resumed move has copied some already).
    pub fn new(total: u64, done: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template(
                "{elapsed_precise} [{wide_bar}] {human_pos}/{human_len} rows copied {per_sec} ETA {eta}",
            ) {
                b.set_style(style);
            }
            b.set_position(done);
            b
        });
        Self {
            bar,
            total,
            done,
            last_log: Instant::now(),
        }
    }

    /// `n` more rows were copied.
    pub fn inc(&mut self, n: u64) {
        self.done += n;
        match &self.bar {
            Some(b) => b.inc(n),
            None if self.last_log.elapsed() >= LOG_EVERY => {
                self.last_log = Instant::now();
                tracing::info!(copied = self.done, total = self.total, "copying");
            }
            None => {}
        }
    }

    /// Ends the bar.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish();
        }
    }
}

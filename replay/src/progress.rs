//! Progress of a replay: an indicatif bar on a terminal, log lines (every 5 s) otherwise.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Counts published readings against an expected total (0: unknown).
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    done: u64,
    started: Instant,
    last_log: Instant,
}

/// Interval between log lines when stderr is not a terminal.
pub const LOG_EVERY: Duration = Duration::from_secs(5);

impl Progress {
    /// Starts counting towards `total` readings.
    pub fn new(total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template(
                "{elapsed_precise} [{wide_bar}] {human_pos}/{human_len} readings {per_sec} ETA {eta}",
            ) {
                b.set_style(style);
            }
            b
        });
        let now = Instant::now();
        Self {
            bar,
            total,
            done: 0,
            started: now,
            last_log: now,
        }
    }

    /// `n` more readings were published (delivered).
    pub fn inc(&mut self, n: u64) {
        self.done += n;
        match &self.bar {
            Some(b) => b.inc(n),
            None if self.last_log.elapsed() >= LOG_EVERY => {
                self.last_log = Instant::now();
                tracing::info!(
                    published = self.done,
                    total = self.total,
                    rate = self.rate(),
                    "replay progress"
                );
            }
            None => {}
        }
    }

    /// Readings per second so far.
    pub fn rate(&self) -> u64 {
        let s = self.started.elapsed().as_secs_f64();
        if s > 0.0 {
            (self.done as f64 / s) as u64
        } else {
            0
        }
    }

    /// Readings counted so far.
    pub fn done(&self) -> u64 {
        self.done
    }

    /// Ends the bar and logs the total.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        tracing::info!(
            published = self.done,
            seconds = self.started.elapsed().as_secs_f64(),
            rate = self.rate(),
            "replay done"
        );
    }
}

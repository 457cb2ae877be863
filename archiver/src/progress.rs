//! Progress of a run: an indicatif bar (rows) when stderr is a terminal, otherwise nothing
//! here: the per-chunk log lines say the same.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// A progress bar, or nothing when stderr is not a terminal.
#[derive(Debug, Clone)]
pub struct Progress(Option<ProgressBar>);

impl Progress {
    /// A bar over `total_rows` rows if stderr is a terminal.
    pub fn new(total_rows: u64, what: &str) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self(None);
        }
        let bar = ProgressBar::with_draw_target(Some(total_rows), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{msg} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} rows ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message(what.to_string());
        Self(Some(bar))
    }

    /// No bar.
    pub fn none() -> Self {
        Self(None)
    }

    /// `rows` more rows done.
    pub fn inc(&self, rows: u64) {
        if let Some(b) = &self.0 {
            b.inc(rows);
        }
    }

    /// Sets the label (e.g. the chunk being exported).
    pub fn label(&self, what: String) {
        if let Some(b) = &self.0 {
            b.set_message(what);
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

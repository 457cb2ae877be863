//! A parsed recording: one participant's time series, before it is rebased and published.

use crate::mapping::Metric;
use std::path::PathBuf;

/// One metric of one recording: samples in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Metric and unit.
    pub metric: Metric,
    /// `(timestamp, value)`: microseconds since the Unix epoch (UTC) and a finite value.
    /// Timestamps are the file's own (or, for files without a wall clock, offsets from
    /// 1970-01-01T00:00:00Z) until [`crate::rebase`] shifts them.
    pub samples: Vec<(i64, f64)>,
}

/// One source file, which becomes one participant.
///
/// Held in memory whole: the largest shipped recording has about 69k samples per metric
/// (heartpy `data3.csv`), a few MiB. Files are read line by line.
#[derive(Debug, Clone, PartialEq)]
pub struct Recording {
    /// Participant id (contract `$defs/id`), `<package>.<file stem>`, e.g.
    /// `pyactigraphy.example_01`.
    pub participant_id: String,
    /// Device identifier from the file, if it has one (AWD serial number).
    pub device_id: Option<String>,
    /// Study identifier: the package and version the file ships in, e.g. `heartpy-1.2.7`.
    pub study_id: Option<String>,
    /// The file, relative to the data directory.
    pub source: PathBuf,
    /// Short name of the format (`awd`, `bba`, `heartpy`).
    pub format: &'static str,
    /// Whether the timestamps are wall-clock times from the file (`false`: offsets from
    /// the Unix epoch, only meaningful after rebasing).
    pub wall_clock: bool,
    /// The metrics, each in file order.
    pub series: Vec<Series>,
    /// Cells without a finite value (empty, `nan`), which are not published.
    pub skipped_cells: u64,
}

impl Recording {
    /// Number of readings over all series.
    pub fn readings(&self) -> u64 {
        self.series.iter().map(|s| s.samples.len() as u64).sum()
    }

    /// Latest timestamp over all series, if any.
    pub fn last_ts(&self) -> Option<i64> {
        self.series
            .iter()
            .filter_map(|s| s.samples.iter().map(|x| x.0).max())
            .max()
    }
}

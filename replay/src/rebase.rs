//! Where a replayed recording lands in time.
//!
//! The contract rejects readings older than `validation.max_age` (default 20 years) or more
//! than `validation.max_future` (default 5 minutes) ahead of the time of ingest
//! (`schemas/README.md`). Several shipped recordings carry anonymised dates (the AWD
//! examples start in 1918), and some have no wall clock at all (heartpy `data.csv`,
//! `data2.csv`). So the default is to **rebase**: shift every timestamp of a recording by one
//! constant so that its last reading is at `end_at` (default: now). Spacing, order and
//! repeated timestamps within the file are kept exactly.
//!
//! With native timestamps, files that have a wall clock keep it (and the worker dead-letters
//! the ones outside the window, as it should); files without one are still rebased.

use crate::recording::Recording;

/// How timestamps are placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimePlan {
    /// Keep the file's own wall-clock timestamps where it has them.
    pub native: bool,
    /// Microseconds since the Unix epoch at which a rebased recording's last reading lies.
    pub end_at_micros: i64,
}

impl TimePlan {
    /// The shift, in microseconds, applied to `rec` (0 when it keeps native timestamps).
    pub fn shift_for(&self, rec: &Recording) -> i64 {
        if self.native && rec.wall_clock {
            return 0;
        }
        rec.last_ts().map_or(0, |last| self.end_at_micros - last)
    }

    /// Applies [`shift_for`](Self::shift_for) to every timestamp of `rec`; returns the shift.
    pub fn apply(&self, rec: &mut Recording) -> i64 {
        let shift = self.shift_for(rec);
        if shift != 0 {
            for s in &mut rec.series {
                for x in &mut s.samples {
                    x.0 += shift;
                }
            }
        }
        shift
    }
}

/// `micros` since the Unix epoch as RFC 3339 UTC with microseconds, e.g.
/// `2025-01-02T03:04:05.123456Z` (the contract's `ts`; exactly what the database stores).
pub fn format_ts(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::PPG;
    use crate::recording::Series;

    fn rec(wall_clock: bool) -> Recording {
        Recording {
            participant_id: "p".into(),
            device_id: None,
            study_id: None,
            source: "x".into(),
            format: "t",
            wall_clock,
            series: vec![Series {
                metric: PPG,
                samples: vec![(10, 1.0), (10, 2.0), (30, 3.0)],
            }],
            skipped_cells: 0,
        }
    }

    #[test]
    fn rebase_ends_at_end_at_and_keeps_spacing() {
        let plan = TimePlan {
            native: false,
            end_at_micros: 1_000,
        };
        let mut r = rec(true);
        assert_eq!(plan.apply(&mut r), 970);
        assert_eq!(
            r.series[0].samples,
            vec![(980, 1.0), (980, 2.0), (1_000, 3.0)]
        );
    }

    #[test]
    fn native_keeps_wall_clock_only() {
        let plan = TimePlan {
            native: true,
            end_at_micros: 1_000,
        };
        assert_eq!(plan.shift_for(&rec(true)), 0);
        assert_eq!(plan.shift_for(&rec(false)), 970);
    }

    #[test]
    fn formats_microseconds() {
        assert_eq!(
            format_ts(1_399_465_790_439_000),
            "2014-05-07T12:29:50.439000Z"
        );
        let parsed = chrono::DateTime::parse_from_rfc3339(&format_ts(-1)).unwrap();
        assert_eq!(parsed.timestamp_micros(), -1);
    }
}

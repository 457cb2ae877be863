//! The source-side truth the end-to-end checks compare the database (and archive) against:
//! per participant the number of readings and their exact sum, per metric the same, and per
//! participant, metric and UTC day the number of readings and their mean (the analysis
//! `dev/report` runs with DuckDB).
//!
//! Sums are [`ExactSum`] values (correctly rounded exact sums, equal to Python's
//! `math.fsum`), so they can be compared for equality whatever order the database adds in.
//! Written as JSON ([`Truth`]) by `replay real|synthetic --truth-out FILE` and `replay truth`.

use crate::exact::ExactSum;
use crate::mapping::Metric;
use crate::recording::Recording;
use serde::Serialize;
use std::collections::BTreeMap;

/// Microseconds in a day.
const DAY_MICROS: i64 = 86_400_000_000;

/// The truth document.
#[derive(Debug, Clone, Serialize)]
pub struct Truth {
    /// How timestamps were placed: `rebased` (last reading of each recording at `end_at`),
    /// `native`, or `synthetic`.
    pub timestamps: String,
    /// The `end_at` used, RFC 3339.
    pub end_at: String,
    /// Readings in all.
    pub rows: u64,
    /// Per participant, by id.
    pub participants: Vec<ParticipantTruth>,
    /// Per participant, metric and UTC day, sorted.
    pub daily: Vec<DailyTruth>,
    /// Files in the data directory that are not replayed, with the reason.
    pub skipped_files: Vec<SkippedFile>,
}

/// One participant's totals.
#[derive(Debug, Clone, Serialize)]
pub struct ParticipantTruth {
    /// Participant id.
    pub participant_id: String,
    /// Source file relative to the data directory (`synthetic` for generated load).
    pub source: String,
    /// Format of the source.
    pub format: String,
    /// Readings.
    pub rows: u64,
    /// Exact sum of the values (correctly rounded).
    pub sum: f64,
    /// Readings that share `(metric, ts)` with an earlier reading of this participant
    /// (rows − distinct `(metric, ts)`); the database must hold exactly as many.
    pub duplicate_ts: u64,
    /// Source cells without a finite value, not published.
    pub skipped_cells: u64,
    /// First and last timestamp, RFC 3339.
    pub first_ts: String,
    /// Last timestamp, RFC 3339.
    pub last_ts: String,
    /// Per metric.
    pub metrics: Vec<MetricTruth>,
}

/// One participant's totals of one metric.
#[derive(Debug, Clone, Serialize)]
pub struct MetricTruth {
    /// Metric name.
    pub metric: String,
    /// Unit.
    pub unit: String,
    /// Readings.
    pub rows: u64,
    /// Exact sum of the values.
    pub sum: f64,
}

/// Daily mean of one metric of one participant (UTC days).
#[derive(Debug, Clone, Serialize)]
pub struct DailyTruth {
    /// Participant id.
    pub participant_id: String,
    /// Metric name.
    pub metric: String,
    /// UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// Readings that day.
    pub rows: u64,
    /// Exact sum that day.
    pub sum: f64,
    /// `sum / rows`.
    pub mean: f64,
}

/// A file not replayed.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedFile {
    /// Path relative to the data directory.
    pub file: String,
    /// Why.
    pub reason: String,
}

#[derive(Debug, Default)]
struct Acc {
    rows: u64,
    sum: ExactSum,
}

impl Acc {
    fn add(&mut self, v: f64) {
        self.rows += 1;
        self.sum.add(v);
    }
}

#[derive(Debug, Default)]
struct Participant {
    source: String,
    format: String,
    duplicate_ts: u64,
    skipped_cells: u64,
    first: i64,
    last: i64,
    metrics: BTreeMap<(&'static str, &'static str), Acc>,
    daily: BTreeMap<(&'static str, i64), Acc>,
}

/// Builds a [`Truth`] from readings fed one at a time (bounded by participants × metrics ×
/// days, not by readings).
#[derive(Debug, Default)]
pub struct TruthBuilder {
    participants: BTreeMap<String, Participant>,
    skipped: Vec<SkippedFile>,
}

impl TruthBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a participant before its readings: its source, format and the number of
    /// repeated `(metric, ts)` pairs and unreadable cells in the source.
    pub fn participant(
        &mut self,
        pid: &str,
        source: &str,
        format: &str,
        duplicate_ts: u64,
        skipped_cells: u64,
    ) {
        let p = self
            .participants
            .entry(pid.to_string())
            .or_insert_with(|| Participant {
                first: i64::MAX,
                last: i64::MIN,
                ..Participant::default()
            });
        p.source = source.to_string();
        p.format = format.to_string();
        p.duplicate_ts += duplicate_ts;
        p.skipped_cells += skipped_cells;
    }

    /// Adds one reading (`ts` in UTC microseconds). A participant not registered with
    /// [`participant`](Self::participant) is registered with empty source.
    pub fn add(&mut self, pid: &str, metric: Metric, ts: i64, value: f64) {
        if !self.participants.contains_key(pid) {
            self.participant(pid, "", "", 0, 0);
        }
        let Some(p) = self.participants.get_mut(pid) else {
            return;
        };
        p.first = p.first.min(ts);
        p.last = p.last.max(ts);
        p.metrics
            .entry((metric.name, metric.unit))
            .or_default()
            .add(value);
        p.daily
            .entry((metric.name, ts.div_euclid(DAY_MICROS)))
            .or_default()
            .add(value);
    }

    /// Adds a whole (already rebased) recording.
    pub fn add_recording(&mut self, rec: &Recording) {
        let mut dups = 0;
        for s in &rec.series {
            let mut ts: Vec<i64> = s.samples.iter().map(|x| x.0).collect();
            ts.sort_unstable();
            dups += ts.windows(2).filter(|w| w[0] == w[1]).count() as u64;
        }
        self.participant(
            &rec.participant_id,
            &rec.source.to_string_lossy(),
            rec.format,
            dups,
            rec.skipped_cells,
        );
        for s in &rec.series {
            for &(ts, v) in &s.samples {
                self.add(&rec.participant_id, s.metric, ts, v);
            }
        }
    }

    /// Records a file that is not replayed.
    pub fn skipped_file(&mut self, file: &str, reason: &str) {
        self.skipped.push(SkippedFile {
            file: file.into(),
            reason: reason.into(),
        });
    }

    /// The finished document.
    pub fn finish(self, timestamps: &str, end_at_micros: i64) -> Truth {
        let fmt = crate::rebase::format_ts;
        let mut daily = Vec::new();
        let mut participants = Vec::new();
        let mut rows = 0;
        for (pid, p) in self.participants {
            let mut all = ExactSum::new();
            let mut n = 0;
            let metrics = p
                .metrics
                .iter()
                .map(|((metric, unit), a)| {
                    all.merge(&a.sum);
                    n += a.rows;
                    MetricTruth {
                        metric: metric.to_string(),
                        unit: unit.to_string(),
                        rows: a.rows,
                        sum: a.sum.value(),
                    }
                })
                .collect();
            for ((metric, day), a) in &p.daily {
                let sum = a.sum.value();
                daily.push(DailyTruth {
                    participant_id: pid.clone(),
                    metric: metric.to_string(),
                    day: fmt(day * DAY_MICROS)[..10].to_string(),
                    rows: a.rows,
                    sum,
                    mean: sum / a.rows as f64,
                });
            }
            rows += n;
            participants.push(ParticipantTruth {
                participant_id: pid,
                source: p.source,
                format: p.format,
                rows: n,
                sum: all.value(),
                duplicate_ts: p.duplicate_ts,
                skipped_cells: p.skipped_cells,
                first_ts: if n > 0 { fmt(p.first) } else { String::new() },
                last_ts: if n > 0 { fmt(p.last) } else { String::new() },
                metrics,
            });
        }
        Truth {
            timestamps: timestamps.into(),
            end_at: fmt(end_at_micros),
            rows,
            participants,
            daily,
            skipped_files: self.skipped,
        }
    }
}

impl Truth {
    /// Per participant `(rows, sum)`, the shape the end-to-end tests compare.
    pub fn totals(&self) -> BTreeMap<String, (i64, f64)> {
        self.participants
            .iter()
            .map(|p| (p.participant_id.clone(), (p.rows as i64, p.sum)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::{ACTIVITY_COUNT, LIGHT};

    #[test]
    fn totals_daily_means_and_duplicates() {
        let mut b = TruthBuilder::new();
        b.participant("a", "f", "awd", 1, 2);
        b.add("a", ACTIVITY_COUNT, 0, 1.0);
        b.add("a", ACTIVITY_COUNT, DAY_MICROS - 1, 3.0);
        b.add("a", ACTIVITY_COUNT, DAY_MICROS, 10.0);
        b.add("a", LIGHT, 5, 0.1);
        b.add("b", LIGHT, -1, 2.5);
        let t = b.finish("rebased", 0);
        assert_eq!(t.rows, 5);
        assert_eq!(t.participants[0].rows, 4);
        assert_eq!(t.participants[0].sum, 14.1);
        assert_eq!(t.participants[0].duplicate_ts, 1);
        assert_eq!(t.participants[0].metrics.len(), 2);
        let d: Vec<_> = t
            .daily
            .iter()
            .map(|d| {
                (
                    d.participant_id.as_str(),
                    d.metric.as_str(),
                    d.day.as_str(),
                    d.rows,
                    d.mean,
                )
            })
            .collect();
        assert_eq!(
            d,
            vec![
                ("a", "activity_count", "1970-01-01", 2, 2.0),
                ("a", "activity_count", "1970-01-02", 1, 10.0),
                ("a", "light", "1970-01-01", 1, 0.1),
                ("b", "light", "1969-12-31", 1, 2.5),
            ]
        );
        assert_eq!(t.totals()["b"], (1, 2.5));
    }
}

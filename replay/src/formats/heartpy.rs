//! heartpy 1.2.7 example data (`heartpy/data/`), photoplethysmogram (PPG) recordings, as
//! loaded by `heartpy.load_exampledata` (`heartpy/datautils.py`):
//!
//! | file | columns | timing |
//! |---|---|---|
//! | `data.csv` | one column, no header | 100 Hz (heartpy's documented sample rate for it) |
//! | `data2.csv` | `timer,hr` | `timer` in milliseconds from the start (about 117 Hz) |
//! | `data3.csv` | `datetime,hr` | wall clock `YYYY-MM-DD HH:MM:SS.ffffff`, no zone: taken as UTC |
//!
//! The `hr` column is the raw PPG signal (heartpy derives heart rate from it), so every file
//! maps to `ppg` in device units. `data3.csv` repeats timestamps (several samples stamped with
//! the same millisecond by the recording software); every sample is kept, so a participant
//! can have several rows with one `(metric, ts)`.

use super::{cell, lines, open, Ids};
use crate::error::{Error, Result};
use crate::mapping;
use crate::recording::{Recording, Series};
use chrono::NaiveDateTime;
use std::path::Path;

/// Sample period of a header-less single-column file, microseconds (100 Hz).
pub const SINGLE_COLUMN_PERIOD_MICROS: i64 = 10_000;

/// Parses one heartpy CSV file (the shape is told by its first line).
///
/// # Errors
/// [`Error::Parse`] for an unknown header, a bad timestamp or timer, or a non-numeric value.
pub fn parse(path: &Path, ids: Ids) -> Result<Recording> {
    let mut samples = Vec::new();
    let mut skipped = 0;
    let mut wall_clock = false;
    let mut header: Option<String> = None;
    let mut index: i64 = 0;
    for l in lines(path, open(path)?) {
        let (n, line) = l?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if n == 1 && line.starts_with(|c: char| c.is_ascii_alphabetic()) {
            match line {
                "timer,hr" => {}
                "datetime,hr" => wall_clock = true,
                _ => return Err(Error::parse(path, 1, format!("unknown header {line:?}"))),
            }
            header = Some(line.to_string());
            continue;
        }
        let (ts, v) = match header.as_deref() {
            None => {
                index += 1;
                ((index - 1) * SINGLE_COLUMN_PERIOD_MICROS, line)
            }
            Some(h) => {
                let (t, v) = line
                    .split_once(',')
                    .ok_or_else(|| Error::parse(path, n, format!("expected two columns ({h})")))?;
                let ts = if wall_clock {
                    NaiveDateTime::parse_from_str(t.trim(), "%Y-%m-%d %H:%M:%S%.f")
                        .map_err(|e| Error::parse(path, n, format!("datetime {t:?}: {e}")))?
                        .and_utc()
                        .timestamp_micros()
                } else {
                    let ms =
                        cell(path, n, t)?.ok_or_else(|| Error::parse(path, n, "empty timer"))?;
                    (ms * 1000.0).round() as i64
                };
                (ts, v)
            }
        };
        match cell(path, n, v)? {
            Some(v) => samples.push((ts, v)),
            None => skipped += 1,
        }
    }
    Ok(Recording {
        participant_id: ids.participant_id,
        device_id: None,
        study_id: ids.study_id,
        source: path.to_path_buf(),
        format: "heartpy",
        wall_clock,
        series: vec![Series {
            metric: mapping::PPG,
            samples,
        }],
        skipped_cells: skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::test_data;

    fn check(name: &str, header: bool, wall_clock: bool) -> Recording {
        let rel = format!("heartpy-1.2.7/heartpy/data/{name}");
        let lines = test_data::nonempty_lines(&rel);
        let rec = parse(&test_data::dir().join(&rel), Ids::for_file(Path::new(&rel))).unwrap();
        let data = &lines[usize::from(header)..];
        let s = &rec.series[0].samples;
        assert_eq!(s.len(), data.len(), "{name}");
        assert_eq!(rec.wall_clock, wall_clock);
        let last: f64 = data
            .last()
            .unwrap()
            .rsplit(',')
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(s.last().unwrap().1, last);
        assert!(
            s.windows(2).all(|w| w[1].0 >= w[0].0),
            "{name}: time never goes back"
        );
        rec
    }

    #[test]
    fn data_csv_is_100_hz() {
        let rec = check("data.csv", false, false);
        let s = &rec.series[0].samples;
        assert_eq!(s[1].0 - s[0].0, 10_000);
        assert_eq!(rec.participant_id, "heartpy.data");
        assert_eq!(rec.study_id.as_deref(), Some("heartpy-1.2.7"));
    }

    #[test]
    fn data2_csv_uses_the_timer() {
        let rec = check("data2.csv", true, false);
        // second row: 8.54790319355 ms
        assert_eq!(rec.series[0].samples[1].0, 8_548);
    }

    #[test]
    fn data3_csv_keeps_repeated_timestamps() {
        let rec = check("data3.csv", true, true);
        let s = &rec.series[0].samples;
        let distinct: std::collections::BTreeSet<i64> = s.iter().map(|x| x.0).collect();
        assert!(distinct.len() < s.len(), "data3.csv repeats timestamps");
        // 2016-11-24 13:58:58.081 UTC
        assert_eq!(s[0], (1_479_995_938_081_000, 326.0));
    }
}

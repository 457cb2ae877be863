//! Epoch time series written by biobankAccelerometerAnalysis (`<name>-timeSeries.csv.gz`,
//! gzip CSV), as read by pyActigraphy 1.2.2 (`pyActigraphy/io/bba/bba.py`).
//!
//! Header `time,acc,light,moderate-vigorous,sedentary,sleep,MET`; `time` like
//! `2014-05-07 13:29:50.439000+0100 [Europe/London]` (the bracketed zone name is dropped, the
//! offset kept); `acc` is the epoch's mean acceleration (ENMO) in milli-g; the four class
//! columns are the fraction of the epoch in each activity class; `MET` the metabolic
//! equivalent. Empty cells (epochs without valid wear data, the tool's imputation gaps) are
//! not published and are counted in [`Recording::skipped_cells`].

use super::{cell, lines, Ids};
use crate::error::{Error, Result};
use crate::mapping::{self, Metric};
use crate::recording::{Recording, Series};
use chrono::DateTime;
use std::path::Path;

/// The metric of a value column, by its header name; `None` for an unknown column.
pub fn column_metric(name: &str) -> Option<Metric> {
    Some(match name.trim() {
        "acc" => mapping::ACCELERATION,
        "light" => mapping::CLASS_LIGHT,
        "moderate-vigorous" => mapping::CLASS_MVPA,
        "sedentary" => mapping::CLASS_SEDENTARY,
        "sleep" => mapping::CLASS_SLEEP,
        "MET" => mapping::MET,
        _ => return None,
    })
}

/// Parses a `time` cell into UTC microseconds.
pub fn parse_time(s: &str) -> Option<i64> {
    let s = s.split(" [").next()?.trim();
    DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%z")
        .ok()
        .map(|t| t.timestamp_micros())
}

/// Parses a gzip-compressed BBA time series.
///
/// # Errors
/// [`Error::Parse`] for a missing `time` column, an unknown column, a bad timestamp or a
/// cell that is neither empty nor a number.
pub fn parse(path: &Path, ids: Ids) -> Result<Recording> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = std::io::BufReader::new(flate2::read::GzDecoder::new(file));
    let mut it = lines(path, reader);
    let header = it
        .next()
        .ok_or_else(|| Error::parse(path, 1, "empty file"))??
        .1;
    let cols: Vec<&str> = header.split(',').collect();
    if cols.first().map(|c| c.trim()) != Some("time") {
        return Err(Error::parse(
            path,
            1,
            format!("first column is not `time`: {header:?}"),
        ));
    }
    let mut series = cols[1..]
        .iter()
        .map(|c| {
            column_metric(c)
                .map(|metric| Series {
                    metric,
                    samples: Vec::new(),
                })
                .ok_or_else(|| Error::parse(path, 1, format!("unknown column {c:?}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut skipped = 0;
    for l in it {
        let (n, line) = l?;
        if line.trim().is_empty() {
            continue;
        }
        let mut cells = line.split(',');
        let t = cells.next().unwrap_or_default();
        let ts = parse_time(t).ok_or_else(|| Error::parse(path, n, format!("bad time {t:?}")))?;
        let mut k = 0;
        for c in cells {
            let s = series
                .get_mut(k)
                .ok_or_else(|| Error::parse(path, n, "more cells than columns"))?;
            match cell(path, n, c)? {
                Some(v) => s.samples.push((ts, v)),
                None => skipped += 1,
            }
            k += 1;
        }
        if k != series.len() {
            return Err(Error::parse(
                path,
                n,
                format!("{k} value cells, header has {}", series.len()),
            ));
        }
    }
    Ok(Recording {
        participant_id: ids.participant_id,
        device_id: None,
        study_id: ids.study_id,
        source: path.to_path_buf(),
        format: "bba",
        wall_clock: true,
        series,
        skipped_cells: skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::test_data;
    use std::io::Read;

    const REL: &str = "pyActigraphy-1.2.2/pyActigraphy/tests/data/sample-timeSeries.csv.gz";

    #[test]
    fn sample_time_series_parses_every_non_empty_cell() {
        let dir = test_data::dir();
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(dir.join(REL)).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        let rows: Vec<Vec<&str>> = text
            .lines()
            .skip(1)
            .map(|l| l.split(',').collect())
            .collect();
        let rec = parse(&dir.join(REL), Ids::for_file(Path::new(REL))).unwrap();
        assert_eq!(rec.series.len(), 6);
        for (k, s) in rec.series.iter().enumerate() {
            let want = rows.iter().filter(|r| !r[k + 1].is_empty()).count();
            assert_eq!(s.samples.len(), want, "{}", s.metric.name);
        }
        let empty: usize = rows
            .iter()
            .map(|r| r[1..].iter().filter(|c| c.is_empty()).count())
            .sum();
        assert_eq!(rec.skipped_cells as usize, empty);
        assert!(empty > 0, "the file has gaps");
        // 2014-05-07 13:29:50.439 +01:00
        assert_eq!(
            rec.series[0].samples[0],
            (1_399_465_790_439_000, 63.145999999999994)
        );
        let s = &rec.series[0].samples;
        assert!(s
            .windows(2)
            .all(|w| (w[1].0 - w[0].0) % 30_000_000 == 0 && w[1].0 > w[0].0));
    }
}

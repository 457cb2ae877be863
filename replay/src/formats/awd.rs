//! Actiwatch `.AWD` files (Cambridge Neurotechnology / Philips Respironics).
//!
//! Layout, as read by pyActigraphy 1.2.2 (`pyActigraphy/io/awd/awd.py`, `RawAWD`), the
//! reference for every rule here:
//!
//! | line | content |
//! |---|---|
//! | 1 | subject name |
//! | 2 | start date, `DD-Mon-YYYY` |
//! | 3 | start time, `HH:MM`, `HH:MM:SS` or `HH:MM:SS AM` |
//! | 4 | epoch code: `1` 15 s, `2` 30 s, `4` 60 s, `8` 2 min, `20` 5 min, `81` 2 s, `C1` 5 s, `C2` 10 s |
//! | 5 | age |
//! | 6 | serial number; its first letter is the device model |
//! | 7 | sex |
//! | 8… | one epoch a line: `count`, or `count , second-channel`, optionally followed by `M` (event marker) |
//!
//! The second channel depends on the model (pyActigraphy `device_additional_channel`):
//! `D` (Actiwatch-7), `L`, `P` light (lux); `I` pressure; `S` sound; `T` temperature (°C).
//! Epoch `i` (0-based) is at start + i × epoch. The file has no time zone: the start is taken
//! as UTC. Event markers are annotations, not measurements, and are not published.

use super::{cell, lines, open, Ids};
use crate::error::{Error, Result};
use crate::mapping::{self, Metric};
use crate::recording::{Recording, Series};
use chrono::{NaiveDate, NaiveTime};
use std::path::Path;

/// Header lines before the first epoch.
pub const HEADER_LINES: usize = 7;

/// Epoch length in seconds for an AWD epoch code (pyActigraphy `RawAWD.frequency_code`).
pub fn epoch_seconds(code: &str) -> Option<i64> {
    Some(match code.trim() {
        "1" => 15,
        "2" => 30,
        "4" => 60,
        "8" => 120,
        "20" => 300,
        "81" => 2,
        "C1" => 5,
        "C2" => 10,
        _ => return None,
    })
}

/// The metric of the second data column for a device model letter (first letter of the
/// serial number); `None` when the model records activity only.
pub fn second_channel(model: char) -> Option<Metric> {
    match model {
        'D' | 'L' | 'P' => Some(mapping::LIGHT),
        'I' => Some(mapping::PRESSURE),
        'S' => Some(mapping::SOUND),
        'T' => Some(mapping::SKIN_TEMPERATURE),
        _ => None,
    }
}

fn start_time(s: &str) -> Option<NaiveTime> {
    let s = s.trim();
    ["%H:%M", "%H:%M:%S", "%I:%M:%S %p", "%I:%M %p"]
        .iter()
        .find_map(|f| NaiveTime::parse_from_str(s, f).ok())
}

/// Parses an AWD file. Activity becomes `activity_count` (count per epoch); the second
/// column, when the model has one, the metric [`second_channel`] names.
///
/// # Errors
/// [`Error::Parse`] for a short or malformed header, an unknown epoch code, a data line that
/// is not `count[ , value][ M]`, or a second column on a model that has none.
pub fn parse(path: &Path, ids: Ids) -> Result<Recording> {
    let mut it = lines(path, open(path)?);
    let mut header = Vec::with_capacity(HEADER_LINES);
    for _ in 0..HEADER_LINES {
        match it.next() {
            Some(l) => header.push(l?.1),
            None => {
                return Err(Error::parse(
                    path,
                    header.len() + 1,
                    "header shorter than 7 lines",
                ))
            }
        }
    }
    let date = NaiveDate::parse_from_str(header[1].trim(), "%d-%b-%Y")
        .map_err(|e| Error::parse(path, 2, format!("start date {:?}: {e}", header[1])))?;
    let time = start_time(&header[2])
        .ok_or_else(|| Error::parse(path, 3, format!("start time {:?}", header[2])))?;
    let start = date.and_time(time).and_utc().timestamp_micros();
    let epoch = epoch_seconds(&header[3])
        .ok_or_else(|| Error::parse(path, 4, format!("unknown epoch code {:?}", header[3])))?
        * 1_000_000;
    let serial = header[5].trim();
    let model = serial.chars().next().unwrap_or(' ');
    let extra = second_channel(model);
    let mut activity = Vec::new();
    let mut second = Vec::new();
    let mut skipped = 0;
    for (i, l) in it.enumerate() {
        let (n, line) = l?;
        let ts = start + i as i64 * epoch;
        let body = line.trim();
        let body = body.strip_suffix('M').unwrap_or(body).trim_end();
        let mut cols = body.split(',');
        let count = cols.next().unwrap_or_default();
        match cell(path, n, count)? {
            Some(v) => activity.push((ts, v)),
            None => skipped += 1,
        }
        if let Some(v2) = cols.next() {
            if extra.is_none() {
                return Err(Error::parse(
                    path,
                    n,
                    format!("second column on model {model:?}, which records activity only"),
                ));
            }
            match cell(path, n, v2)? {
                Some(v) => second.push((ts, v)),
                None => skipped += 1,
            }
        }
        if cols.next().is_some() {
            return Err(Error::parse(
                path,
                n,
                format!("more than two columns: {line:?}"),
            ));
        }
    }
    let mut series = vec![Series {
        metric: mapping::ACTIVITY_COUNT,
        samples: activity,
    }];
    if let Some(m) = extra.filter(|_| !second.is_empty()) {
        series.push(Series {
            metric: m,
            samples: second,
        });
    }
    Ok(Recording {
        participant_id: ids.participant_id,
        device_id: mapping::to_id(serial),
        study_id: ids.study_id,
        source: path.to_path_buf(),
        format: "awd",
        wall_clock: true,
        series,
        skipped_cells: skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::{discover, test_data, Format};

    /// Every AWD file: one activity sample per non-empty line after the 7-line header, a
    /// second-channel sample for every line with a comma, timestamps one epoch apart.
    #[test]
    fn every_awd_file_parses_with_one_epoch_per_line() {
        let dir = test_data::dir();
        let files: Vec<_> = discover(&dir)
            .unwrap()
            .into_iter()
            .filter(|f| f.kind == Ok(Format::Awd))
            .collect();
        assert_eq!(files.len(), 15);
        let mut total = 0;
        for f in files {
            let rel = f.rel.to_str().unwrap();
            let lines = test_data::nonempty_lines(rel);
            let data = &lines[HEADER_LINES..];
            let with_comma = data.iter().filter(|l| l.contains(',')).count();
            let rec = parse(&dir.join(&f.rel), Ids::for_file(&f.rel)).unwrap();
            assert_eq!(rec.series[0].metric, mapping::ACTIVITY_COUNT);
            assert_eq!(rec.series[0].samples.len(), data.len(), "{rel}");
            assert_eq!(
                rec.series.get(1).map_or(0, |s| s.samples.len()),
                with_comma,
                "{rel}"
            );
            assert_eq!(rec.skipped_cells, 0, "{rel}");
            let s = &rec.series[0].samples;
            let epoch = epoch_seconds(&lines[3]).unwrap() * 1_000_000;
            assert!(s.windows(2).all(|w| w[1].0 - w[0].0 == epoch), "{rel}");
            let first: f64 = data[0]
                .split(',')
                .next()
                .unwrap()
                .trim()
                .trim_end_matches('M')
                .trim()
                .parse()
                .unwrap();
            assert_eq!(s[0].1, first, "{rel}");
            total += data.len();
        }
        // The "about 268k epochs in all".
        assert!((260_000..280_000).contains(&total), "{total}");
    }

    #[test]
    fn header_fields() {
        let dir = test_data::dir();
        let rel = Path::new("pyActigraphy-1.2.2/pyActigraphy/tests/data/test_sample_awlp.AWD");
        let rec = parse(&dir.join(rel), Ids::for_file(rel)).unwrap();
        assert_eq!(rec.series[1].metric, mapping::LIGHT);
        assert_eq!(rec.device_id.as_deref(), Some("P4012590327"));
        // 22-Apr-1997 09:38:00 AM
        assert_eq!(rec.series[0].samples[0].0, 861_701_880_000_000);
        assert_eq!(rec.series[1].samples[2].1, 345.10);
        let rel = Path::new("pyActigraphy-1.2.2/pyActigraphy/tests/data/test_sample_awt.AWD");
        let rec = parse(&dir.join(rel), Ids::for_file(rel)).unwrap();
        assert_eq!(rec.series[1].metric, mapping::SKIN_TEMPERATURE);
    }

    #[test]
    fn rejects_bad_header_and_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.AWD");
        let ids = Ids::for_file(Path::new("p-1/x.AWD"));
        std::fs::write(&p, "n\n01-Jan-2020\n10:00\n 9 \n0\nV1\nM\n1\n").unwrap();
        assert!(matches!(
            parse(&p, ids.clone()),
            Err(Error::Parse { line: 4, .. })
        ));
        std::fs::write(&p, "n\n01-Jan-2020\n10:00\n 4 \n0\nV1\nM\n1\n2 , 3\n").unwrap();
        assert!(matches!(
            parse(&p, ids.clone()),
            Err(Error::Parse { line: 9, .. })
        ));
        std::fs::write(&p, "n\n01-Jan-2020\n10:00\n 4 \n0\nV1\nM\n1\nabc\n").unwrap();
        assert!(matches!(parse(&p, ids), Err(Error::Parse { line: 9, .. })));
    }
}

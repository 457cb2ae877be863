//! Finding and parsing the real recordings in the data directory `dev/fetch-data` fills.
//!
//! Layout (see `dev/fetch-data`): `<DATA>/<package>-<version>/<folder of the wheel>/…`, e.g.
//! `<DATA>/pyActigraphy-1.2.2/pyActigraphy/tests/data/example_01.AWD`. Each parsed file becomes
//! one participant `<package lower-case>.<file stem>` with study id `<package>-<version>`.
//!
//! Parsed: `*.AWD` ([`awd`]), biobankAccelerometerAnalysis `*timeSeries.csv.gz` ([`bba`]),
//! heartpy `data*.csv` ([`heartpy`]). Every other file is listed by [`discover`] as skipped,
//! with the reason from [`skip_reason`].

pub mod awd;
pub mod bba;
pub mod heartpy;

use crate::error::{Error, Result};
use crate::mapping::to_id;
use crate::recording::Recording;
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// The format of a recognised file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Cambridge Neurotechnology / Philips Actiwatch `.AWD`.
    Awd,
    /// biobankAccelerometerAnalysis epoch time series (`*-timeSeries.csv.gz`).
    Bba,
    /// heartpy example PPG data (`heartpy/data/data*.csv`).
    Heartpy,
}

/// A file found in the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Path relative to the data directory.
    pub rel: PathBuf,
    /// `Ok(format)` when it is parsed, `Err(reason)` when it is skipped.
    pub kind: std::result::Result<Format, &'static str>,
}

/// Why a file that is not parsed is skipped (`None`: it is parsed).
pub fn skip_reason(rel: &Path) -> Option<&'static str> {
    let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let lower = name.to_ascii_lowercase();
    let in_heartpy = rel.to_string_lossy().contains("heartpy/data/");
    if lower.ends_with(".awd")
        || lower.ends_with("timeseries.csv.gz")
        || (in_heartpy && lower.ends_with(".csv"))
    {
        return None;
    }
    Some(if lower == ".complete" {
        "fetch marker"
    } else if in_heartpy && lower.ends_with(".log") {
        "byte-identical copy of the .csv of the same name"
    } else if lower.ends_with(".mat") {
        "MATLAB copy of the .csv of the same name"
    } else if lower.ends_with(".agd") {
        "ActiGraph .agd is an SQLite database; not parsed (no SQLite reader in the workspace)"
    } else if lower.ends_with(".mtn") {
        "MotionWare .mtn (XML with encoded channel blocks); not parsed yet"
    } else if lower.ends_with("_atr.txt") || lower.ends_with("_tal.txt") || lower.contains("_dqt") {
        "ActTrust / Tempatilumi / Daqtometer export of the same test subject; not parsed yet"
    } else if lower.contains("_rpx_") || lower == "test_sample.csv" {
        "Actiware (RPX) export, localised headers in 3 languages; not parsed yet"
    } else if lower.contains("_mesa") {
        "MESA stub of 4 rows with gaps, a parser fixture rather than a recording"
    } else if lower.contains("sleepdiary") || lower.contains("sstlog") || lower.contains("masklog")
    {
        "annotations (sleep diary, sleep/mask log), not measurements"
    } else if lower.ends_with(".json") {
        "summary statistics, not a time series"
    } else {
        "not a recognised recording format"
    })
}

/// Every file under `data_dir`, sorted by path, each either with its format or the reason it
/// is skipped.
///
/// # Errors
/// [`Error::Io`] when a directory cannot be listed.
pub fn discover(data_dir: &Path) -> Result<Vec<Found>> {
    let mut out = Vec::new();
    let mut stack = vec![data_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        for e in entries {
            let path = e.map_err(|e| Error::io(&dir, e))?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(data_dir).unwrap_or(&path).to_path_buf();
            let kind = match skip_reason(&rel) {
                Some(why) => Err(why),
                None => Ok(format_of(&rel)),
            };
            out.push(Found { rel, kind });
        }
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

fn format_of(rel: &Path) -> Format {
    let lower = rel.to_string_lossy().to_ascii_lowercase();
    if lower.ends_with(".awd") {
        Format::Awd
    } else if lower.ends_with("timeseries.csv.gz") {
        Format::Bba
    } else {
        Format::Heartpy
    }
}

/// Parses one found file (`data_dir` joined with `found.rel`); `None` for a skipped file.
///
/// # Errors
/// [`Error::Io`] or [`Error::Parse`] naming the file and line.
pub fn parse(data_dir: &Path, found: &Found) -> Result<Option<Recording>> {
    let Ok(format) = found.kind else {
        return Ok(None);
    };
    let path = data_dir.join(&found.rel);
    let ids = Ids::for_file(&found.rel);
    let rec = match format {
        Format::Awd => awd::parse(&path, ids)?,
        Format::Bba => bba::parse(&path, ids)?,
        Format::Heartpy => heartpy::parse(&path, ids)?,
    };
    Ok(Some(Recording {
        source: found.rel.clone(),
        ..rec
    }))
}

/// Every recording under `data_dir`, in path order, parsed one after the other (a callback
/// per recording, so only one is held at a time).
///
/// # Errors
/// [`Error::NoRecordings`] when nothing is parsed; the first parse error otherwise.
pub fn for_each_recording(
    data_dir: &Path,
    mut f: impl FnMut(Recording) -> Result<()>,
) -> Result<()> {
    let mut n = 0;
    for found in discover(data_dir)? {
        if let Some(rec) = parse(data_dir, &found)? {
            n += 1;
            f(rec)?;
        }
    }
    if n == 0 {
        return Err(Error::NoRecordings(data_dir.to_path_buf()));
    }
    Ok(())
}

/// Participant and study id derived from a file's place in the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    /// `<package lower-case>.<file stem>`, made a valid id.
    pub participant_id: String,
    /// `<package>-<version>` (the top folder), made a valid id.
    pub study_id: Option<String>,
}

impl Ids {
    /// Ids for `rel` (path relative to the data directory).
    pub fn for_file(rel: &Path) -> Self {
        let top = rel
            .components()
            .next()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .unwrap_or_default();
        let package = top
            .rsplit_once('-')
            .map_or(top.as_str(), |(p, _)| p)
            .to_ascii_lowercase();
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = name.split('.').next().unwrap_or_default();
        let pid = if package.is_empty() {
            stem.to_string()
        } else {
            format!("{package}.{stem}")
        };
        Self {
            participant_id: to_id(&pid).unwrap_or_else(|| "unnamed".into()),
            study_id: to_id(&top),
        }
    }
}

/// Lines of a text file without their line ending (`\n` or `\r\n`), with 1-based numbers.
pub(crate) fn lines<'a>(
    path: &'a Path,
    reader: impl BufRead + 'a,
) -> impl Iterator<Item = Result<(usize, String)>> + 'a {
    reader.lines().enumerate().map(move |(i, l)| {
        l.map(|mut s| {
            if s.ends_with('\r') {
                s.pop();
            }
            (i + 1, s)
        })
        .map_err(|e| Error::io(path, e))
    })
}

/// Opens `path` for buffered reading.
pub(crate) fn open(path: &Path) -> Result<std::io::BufReader<std::fs::File>> {
    std::fs::File::open(path)
        .map(std::io::BufReader::new)
        .map_err(|e| Error::io(path, e))
}

/// Parses a decimal cell into a finite value; `Ok(None)` for an empty or `nan` cell.
pub(crate) fn cell(path: &Path, line: usize, s: &str) -> Result<Option<f64>> {
    let s = s.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("nan") {
        return Ok(None);
    }
    let v: f64 = s
        .parse()
        .map_err(|_| Error::parse(path, line, format!("not a number: {s:?}")))?;
    Ok(v.is_finite().then_some(v))
}

#[cfg(test)]
pub(crate) mod test_data {
    //! The real files, fetched by `dev/fetch-data`. Tests fail (not skip) when they are
    //! missing.
    use std::path::PathBuf;

    /// The data directory (`REPLAY_DATA_DIR`, default `/var/cache/vitalsink/data`).
    pub fn dir() -> PathBuf {
        let d = PathBuf::from(
            std::env::var("REPLAY_DATA_DIR").unwrap_or_else(|_| "/var/cache/vitalsink/data".into()),
        );
        assert!(
            d.join("pyActigraphy-1.2.2/.complete").exists(),
            "{} lacks the recordings: run dev/fetch-data",
            d.display()
        );
        d
    }

    /// Lines of a file (any line ending) that are not empty.
    pub fn nonempty_lines(rel: &str) -> Vec<String> {
        let bytes = std::fs::read(dir().join(rel)).unwrap();
        String::from_utf8_lossy(&bytes)
            .split(['\n', '\r'])
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_file_is_parsed_or_skipped_with_a_reason() {
        let dir = test_data::dir();
        let found = discover(&dir).unwrap();
        let parsed: Vec<_> = found.iter().filter(|f| f.kind.is_ok()).collect();
        let awd = parsed.iter().filter(|f| f.kind == Ok(Format::Awd)).count();
        assert_eq!(awd, 15, "the 15 AWD recordings of pyActigraphy");
        assert_eq!(parsed.len(), 15 + 1 + 3);
        for f in &found {
            if let Err(why) = f.kind {
                assert_ne!(
                    why,
                    "not a recognised recording format",
                    "{}",
                    f.rel.display()
                );
            }
        }
        let ids: std::collections::BTreeSet<_> = parsed
            .iter()
            .map(|f| Ids::for_file(&f.rel).participant_id)
            .collect();
        assert_eq!(ids.len(), parsed.len(), "one participant per file");
        assert!(ids.contains("pyactigraphy.example_01"));
        assert!(ids.contains("heartpy.data3"));
    }
}

//! Output of the listing verbs: JSON lines (one object per row, the default) or CSV with a
//! header row (RFC 4180, through the `csv` crate), on standard output.

use std::io::Write;

use crate::error::{Error, Result};

/// How a listing is printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line.
    #[default]
    Json,
    /// CSV with a header row; list-valued fields are joined with `;`.
    Csv,
}

/// Prints `rows` as `format`: for JSON, `json` gives each row's object; for CSV, `header`
/// names the columns and `fields` gives each row's values in that order.
///
/// # Errors
/// [`Error::Output`] when standard output cannot be written (a closed pipe).
pub fn print<T>(
    format: Format,
    rows: &[T],
    header: &[&str],
    fields: impl Fn(&T) -> Vec<String>,
    json: impl Fn(&T) -> serde_json::Value,
) -> Result<()> {
    let out = std::io::stdout();
    let mut out = out.lock();
    let io = |e: std::io::Error| Error::Output(e.to_string());
    match format {
        Format::Json => {
            for r in rows {
                writeln!(out, "{}", json(r)).map_err(io)?;
            }
        }
        Format::Csv => {
            let mut w = csv::Writer::from_writer(out);
            let csv_err = |e: csv::Error| Error::Output(e.to_string());
            w.write_record(header).map_err(csv_err)?;
            for r in rows {
                w.write_record(fields(r)).map_err(csv_err)?;
            }
            w.flush().map_err(io)?;
        }
    }
    Ok(())
}

/// Prints one JSON value on a line of its own.
///
/// # Errors
/// [`Error::Output`] when standard output cannot be written.
pub fn json_line(v: &serde_json::Value) -> Result<()> {
    let out = std::io::stdout();
    let mut out = out.lock();
    writeln!(out, "{v}").map_err(|e| Error::Output(e.to_string()))
}

//! RFC 3339 timestamps of the wire contract: the UTC instant in microseconds and the UTC offset
//! the producer wrote (schemas/README.md, "Time as the device sent it").

use chrono::{DateTime, Utc};

use super::{reject, RejectReason, Rejection};

/// A parsed `ts`: the instant and the offset it was written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instant {
    /// Microseconds since the Unix epoch, UTC.
    pub micros: i64,
    /// The written UTC offset in minutes east of UTC (`+05:45` → 345, `Z` → 0); `None` for
    /// `-00:00`, which RFC 3339 section 4.3 reserves for "UTC known, local offset unknown".
    pub offset_min: Option<i16>,
}

/// Parses an RFC 3339 timestamp with an explicit offset into UTC microseconds.
///
/// The common shape `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` is parsed by [`fast_ts`]; any
/// other text (and leap seconds) goes to chrono, which gives the same result or the error.
pub(super) fn parse_ts(s: &str) -> Result<Instant, Rejection> {
    if let Some(t) = fast_ts(s.as_bytes()) {
        return Ok(t);
    }
    parse_ts_chrono(s)
}

pub(super) fn parse_ts_chrono(s: &str) -> Result<Instant, Rejection> {
    // chrono accepts 'T', 't' or ' ' as the separator and requires seconds and an offset.
    let t = DateTime::parse_from_rfc3339(s)
        .map_err(|e| reject(RejectReason::InvalidTs, format_args!("ts {s:?}: {e}")))?;
    let offset_min = (!s.ends_with("-00:00"))
        .then(|| i16::try_from(t.offset().local_minus_utc() / 60).ok())
        .flatten();
    Ok(Instant {
        micros: t.with_timezone(&Utc).timestamp_micros(),
        offset_min,
    })
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|z|±HH:MM)` (RFC 3339 section 5.6, `T`, `t` or space as the
/// separator, as chrono accepts) to UTC microseconds, truncating below a microsecond as
/// chrono's `timestamp_micros` does. `None` for anything else, including second 60.
pub(super) fn fast_ts(b: &[u8]) -> Option<Instant> {
    fn num(b: &[u8]) -> Option<i64> {
        b.iter().try_fold(0i64, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
        })
    }
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (year, month, day) = (num(&b[0..4])?, num(&b[5..7])?, num(&b[8..10])?);
    let (hour, minute, second) = (num(&b[11..13])?, num(&b[14..16])?, num(&b[17..19])?);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&month)
        || day < 1
        || day > month_days[usize::try_from(month - 1).ok()?]
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut i = 19;
    let mut micros = 0i64;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = i - start;
        if digits == 0 || digits > 9 {
            return None;
        }
        let frac = num(&b[start..i])?;
        micros = match digits {
            1..=6 => frac * 10i64.pow(u32::try_from(6 - digits).ok()?),
            _ => frac / 10i64.pow(u32::try_from(digits - 6).ok()?),
        };
    }
    let mut known = true;
    let offset_secs = match &b[i..] {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (h, m) = (num(&[*h1, *h2])?, num(&[*m1, *m2])?);
            if h > 23 || m > 59 {
                return None;
            }
            let o = h * 3600 + m * 60;
            known = !(o == 0 && *sign == b'-');
            if *sign == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    // Days from 1970-01-01 of a proleptic Gregorian date (H. Hinnant, "chrono-Compatible
    // Low-Level Date Algorithms", days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Some(Instant {
        micros: secs * 1_000_000 + micros,
        offset_min: known
            .then(|| i16::try_from(offset_secs / 60).ok())
            .flatten(),
    })
}

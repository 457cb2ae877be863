//! The metric names and units real recordings map to (contract `$defs/metric` and
//! `$defs/unit`; units are UCUM codes where one exists, as `schemas/measurement.schema.json`
//! asks, and `a.u.` for signals in arbitrary device units).

/// A metric of the contract with its unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Metric {
    /// Metric name, e.g. `activity_count`.
    pub name: &'static str,
    /// Unit, e.g. `count` (per epoch).
    pub unit: &'static str,
}

/// Wrist-actigraphy activity: counts per epoch (AWD first column, epoch length from the
/// header).
pub const ACTIVITY_COUNT: Metric = Metric {
    name: "activity_count",
    unit: "count",
};
/// Ambient (white) light, lux (Actiwatch-L/-L-Plus/-7 second AWD column).
pub const LIGHT: Metric = Metric {
    name: "light",
    unit: "lx",
};
/// Skin temperature, degrees Celsius (Actiwatch-T second AWD column).
pub const SKIN_TEMPERATURE: Metric = Metric {
    name: "skin_temperature",
    unit: "Cel",
};
/// Pressure sensor of the Actiwatch-Insomnia, device units.
pub const PRESSURE: Metric = Metric {
    name: "pressure",
    unit: "a.u.",
};
/// Environmental sound level of the Actiwatch-S, device units.
pub const SOUND: Metric = Metric {
    name: "sound",
    unit: "a.u.",
};
/// Photoplethysmogram, raw device units (heartpy example data).
pub const PPG: Metric = Metric {
    name: "ppg",
    unit: "a.u.",
};
/// Heart rate, beats per minute (UCUM `/min`), as wrist wearables report it once a second.
pub const HEART_RATE: Metric = Metric {
    name: "heart_rate",
    unit: "/min",
};
/// Mean acceleration per epoch (ENMO), milli-g (biobankAccelerometerAnalysis `acc`).
pub const ACCELERATION: Metric = Metric {
    name: "acceleration",
    unit: "mg",
};
/// Metabolic equivalent of task per epoch (biobankAccelerometerAnalysis `MET`).
pub const MET: Metric = Metric {
    name: "met",
    unit: "MET",
};
/// Fraction of the epoch classified as light activity (biobankAccelerometerAnalysis `light`;
/// an activity class, not illuminance).
pub const CLASS_LIGHT: Metric = Metric {
    name: "activity_class.light",
    unit: "1",
};
/// Fraction of the epoch classified as moderate-to-vigorous activity.
pub const CLASS_MVPA: Metric = Metric {
    name: "activity_class.moderate_vigorous",
    unit: "1",
};
/// Fraction of the epoch classified as sedentary.
pub const CLASS_SEDENTARY: Metric = Metric {
    name: "activity_class.sedentary",
    unit: "1",
};
/// Fraction of the epoch classified as sleep.
pub const CLASS_SLEEP: Metric = Metric {
    name: "activity_class.sleep",
    unit: "1",
};

/// `s` made into a contract identifier (`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`): other
/// characters become `_`, a leading non-alphanumeric gets an `x` in front, and the result is
/// cut to 64 characters. An empty input gives `None`.
pub fn to_id(s: &str) -> Option<String> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !out.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        out.insert(0, 'x');
    }
    out.truncate(64);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vitalsink_common::measurement::{is_valid_id, is_valid_metric};

    #[test]
    fn every_metric_name_is_valid() {
        for m in [
            ACTIVITY_COUNT,
            LIGHT,
            SKIN_TEMPERATURE,
            PRESSURE,
            SOUND,
            PPG,
            ACCELERATION,
            MET,
            CLASS_LIGHT,
            CLASS_MVPA,
            CLASS_SEDENTARY,
            CLASS_SLEEP,
        ] {
            assert!(is_valid_metric(m.name), "{}", m.name);
            assert!((1..=32).contains(&m.unit.len()));
        }
    }

    #[test]
    fn ids_are_valid() {
        for s in [
            "nrosnd1      ",
            "D0309360327",
            "_x y",
            "sample-timeSeries",
            &"a".repeat(80),
        ] {
            assert!(is_valid_id(&to_id(s).unwrap()), "{s}");
        }
        assert_eq!(to_id("  "), None);
    }
}

//! Synthetic load modelled on the real recordings, for scale tests and benchmarks:
//! `participants × metrics × days`, deterministic for a seed, generated lazily (memory does
//! not grow with the size of the load).
//!
//! Each metric has the sampling period and value range of the real recording it imitates,
//! with a day/night rhythm (awake 07:00–23:00 UTC):
//!
//! | metric | period | model (source recording) |
//! |---|---|---|
//! | `activity_count` (count) | 60 s | AWD 1-minute epochs: awake log-normal, median ≈ 150, 15 % zeros; asleep mostly 0; capped at 10,000 |
//! | `light` (lx) | 60 s | Actiwatch-L/-L-Plus: 10–3,000 lx in daylight hours, 0–5 lx at night; 2 decimals |
//! | `skin_temperature` (Cel) | 60 s | Actiwatch-T: 31–36 °C, higher at night; 2 decimals |
//! | `acceleration` (mg) | 30 s | biobankAccelerometerAnalysis `acc`: awake log-normal median ≈ 20 mg, asleep 0–5 mg; 3 decimals |
//! | `met` (MET) | 30 s | biobankAccelerometerAnalysis `MET`: 0.9–8; 3 decimals |
//! | `ppg` (a.u.) | 10 ms | heartpy PPG at 100 Hz: 500 ± 80 pulse wave at 50–100 /min plus noise; integers |
//! | `ppg` (a.u.), bursts | 10 ms for 60 s every 3 h | the same wave, recorded in 8 one-minute bursts a day (48,000 samples), as wrist devices take spot PPG readings |
//! | `heart_rate` (/min) | 1 s | the PPG model's resting pulse (50–100 /min for the day), +0–40 /min awake, ±2 noise; integers |
//!
//! Reproducibility: every (participant, metric, day) draws from its own generator seeded by
//! `(seed, participant, metric, day)` (`rand`'s `StdRng`, fixed by Cargo.lock), so the values
//! of one day do not depend on the number of days or metrics asked for.

use crate::mapping::{self, Metric};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Microseconds in a day.
pub const DAY_MICROS: i64 = 86_400_000_000;

/// A metric the generator can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SynthMetric {
    /// `activity_count`, 1-minute epochs.
    ActivityCount,
    /// `light`, 1-minute epochs.
    Light,
    /// `skin_temperature`, 1-minute epochs.
    SkinTemperature,
    /// `acceleration`, 30-second epochs.
    Acceleration,
    /// `met`, 30-second epochs.
    Met,
    /// `ppg`, 100 Hz.
    Ppg,
    /// `ppg`, 100 Hz in one-minute bursts every 3 hours ([`PPG_BURST_MICROS`],
    /// [`PPG_BURST_EVERY_MICROS`]).
    PpgBursts,
    /// `heart_rate`, 1 Hz.
    HeartRate,
}

/// Length of one PPG burst of [`SynthMetric::PpgBursts`], microseconds (60 s).
pub const PPG_BURST_MICROS: i64 = 60_000_000;
/// Start-to-start spacing of the PPG bursts, microseconds (3 h: 8 bursts a day).
pub const PPG_BURST_EVERY_MICROS: i64 = 3 * 3_600_000_000;

impl SynthMetric {
    /// Metric name and unit.
    pub fn metric(self) -> Metric {
        match self {
            Self::ActivityCount => mapping::ACTIVITY_COUNT,
            Self::Light => mapping::LIGHT,
            Self::SkinTemperature => mapping::SKIN_TEMPERATURE,
            Self::Acceleration => mapping::ACCELERATION,
            Self::Met => mapping::MET,
            Self::Ppg | Self::PpgBursts => mapping::PPG,
            Self::HeartRate => mapping::HEART_RATE,
        }
    }

    /// Sampling period, microseconds (within a burst, for [`SynthMetric::PpgBursts`]).
    pub fn period_micros(self) -> i64 {
        match self {
            Self::ActivityCount | Self::Light | Self::SkinTemperature => 60_000_000,
            Self::Acceleration | Self::Met => 30_000_000,
            Self::Ppg | Self::PpgBursts => 10_000,
            Self::HeartRate => 1_000_000,
        }
    }

    /// Readings per participant and day.
    pub fn per_day(self) -> u64 {
        match self {
            Self::PpgBursts => {
                ((DAY_MICROS / PPG_BURST_EVERY_MICROS) * (PPG_BURST_MICROS / self.period_micros()))
                    as u64
            }
            _ => (DAY_MICROS / self.period_micros()) as u64,
        }
    }

    /// Offset from the start of the day of reading `k` of a day, microseconds.
    fn offset_micros(self, k: i64) -> i64 {
        let period = self.period_micros();
        match self {
            Self::PpgBursts => {
                let per_burst = PPG_BURST_MICROS / period;
                (k / per_burst) * PPG_BURST_EVERY_MICROS + (k % per_burst) * period
            }
            _ => k * period,
        }
    }

    fn index(self) -> u64 {
        self as u64
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Number of participants, ids `<prefix>000000` …
    pub participants: u32,
    /// Whole days per participant, ending at `end_at_micros`.
    pub days: u32,
    /// Metrics per participant.
    pub metrics: Vec<SynthMetric>,
    /// Seed of all generators.
    pub seed: u64,
    /// End of the last day (exclusive), microseconds since the Unix epoch; it is rounded down
    /// to a whole minute.
    pub end_at_micros: i64,
    /// Participant id prefix (a valid id start, e.g. `syn-`).
    pub prefix: String,
}

impl Spec {
    /// Id of participant `i`.
    pub fn participant_id(&self, i: u32) -> String {
        format!("{}{i:06}", self.prefix)
    }

    /// Start of the first day, microseconds.
    pub fn start_micros(&self) -> i64 {
        self.end_at_micros
            - self.end_at_micros.rem_euclid(60_000_000)
            - i64::from(self.days) * DAY_MICROS
    }

    /// Readings in all.
    pub fn total_readings(&self) -> u64 {
        let per_day: u64 = self.metrics.iter().map(|m| m.per_day()).sum();
        u64::from(self.participants) * u64::from(self.days) * per_day
    }

    /// The readings of one participant, metric and day (0-based from the first day), in time
    /// order, generated lazily.
    pub fn series(
        &self,
        participant: u32,
        metric: SynthMetric,
        day: u32,
    ) -> impl Iterator<Item = (i64, f64)> {
        let mut rng = StdRng::seed_from_u64(mix(
            self.seed,
            u64::from(participant),
            metric.index(),
            u64::from(day),
        ));
        let day_start = self.start_micros() + i64::from(day) * DAY_MICROS;
        let per_day = metric.per_day() as i64;
        // Per-participant-day constants: resting pulse and temperature baseline.
        let pulse_hz = rng.random_range(50.0..100.0) / 60.0;
        let temp_base = rng.random_range(32.0..34.0);
        (0..per_day).map(move |k| {
            let ts = day_start + metric.offset_micros(k);
            let hour = ts.rem_euclid(DAY_MICROS) as f64 / 3.6e9;
            let awake = (7.0..23.0).contains(&hour);
            let v = match metric {
                SynthMetric::ActivityCount => {
                    let zero_p = if awake { 0.15 } else { 0.85 };
                    if rng.random_bool(zero_p) {
                        0.0
                    } else {
                        let mu = if awake { 5.0 } else { 2.5 };
                        (mu + 1.2 * normal(&mut rng)).exp().floor().min(10_000.0)
                    }
                }
                SynthMetric::Light => {
                    let x = if (8.0..20.0).contains(&hour) {
                        10f64.powf(rng.random_range(1.0..3.5))
                    } else {
                        rng.random_range(0.0..5.0)
                    };
                    round(x, 100.0)
                }
                SynthMetric::SkinTemperature => {
                    let night = if awake { 0.0 } else { 1.5 };
                    round(
                        (temp_base + night + 0.3 * normal(&mut rng)).clamp(31.0, 36.0),
                        100.0,
                    )
                }
                SynthMetric::Acceleration => {
                    let x = if awake {
                        (3.0 + 0.8 * normal(&mut rng)).exp().min(2_000.0)
                    } else {
                        rng.random_range(0.0..5.0)
                    };
                    round(x, 1000.0)
                }
                SynthMetric::Met => {
                    let x = if awake {
                        (1.5 + 0.8 * normal(&mut rng).abs()).min(8.0)
                    } else {
                        rng.random_range(0.9..1.1)
                    };
                    round(x, 1000.0)
                }
                SynthMetric::HeartRate => {
                    let effort = if awake {
                        40.0 * rng.random_range(0.0..1.0f64).powi(3)
                    } else {
                        0.0
                    };
                    (pulse_hz * 60.0 + effort + 2.0 * normal(&mut rng)).round()
                }
                SynthMetric::Ppg | SynthMetric::PpgBursts => {
                    let t = ts as f64 / 1e6;
                    (500.0
                        + 80.0 * (std::f64::consts::TAU * pulse_hz * t).sin()
                        + 5.0 * normal(&mut rng))
                    .round()
                }
            };
            (ts, v)
        })
    }
}

fn round(x: f64, scale: f64) -> f64 {
    (x * scale).round() / scale
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// SplitMix64 over the inputs: one well-mixed seed per generator.
fn mix(seed: u64, a: u64, b: u64, c: u64) -> u64 {
    let mut z = seed;
    for x in [a, b, c] {
        z = z.wrapping_add(x).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
    }
    z
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec {
            participants: 3,
            days: 2,
            metrics: vec![
                SynthMetric::ActivityCount,
                SynthMetric::Light,
                SynthMetric::SkinTemperature,
                SynthMetric::Acceleration,
                SynthMetric::Met,
                SynthMetric::Ppg,
                SynthMetric::PpgBursts,
                SynthMetric::HeartRate,
            ],
            seed: 7,
            end_at_micros: 1_700_000_000_000_000,
            prefix: "syn-".into(),
        }
    }

    #[test]
    fn deterministic_and_independent_of_the_rest_of_the_spec() {
        let a: Vec<_> = spec().series(1, SynthMetric::Light, 1).collect();
        let b: Vec<_> = Spec {
            days: 5,
            participants: 10,
            ..spec()
        }
        .series(1, SynthMetric::Light, 1)
        .collect();
        let c: Vec<_> = Spec { seed: 8, ..spec() }
            .series(1, SynthMetric::Light, 1)
            .collect();
        assert_eq!(
            a.iter().map(|x| x.1).collect::<Vec<_>>(),
            b.iter().map(|x| x.1).collect::<Vec<_>>()
        );
        assert_ne!(a, c);
    }

    #[test]
    fn rates_and_ranges_follow_the_real_recordings() {
        let s = spec();
        assert_eq!(
            s.total_readings(),
            3 * 2 * (1440 * 3 + 2880 * 2 + 8_640_000 + 8 * 6_000 + 86_400)
        );
        for m in s.metrics.clone() {
            let v: Vec<_> = s.series(0, m, 0).collect();
            assert_eq!(v.len() as u64, m.per_day());
            let gaps_ok = |w: &[(i64, f64)]| {
                let gap = w[1].0 - w[0].0;
                gap == m.period_micros()
                    || (m == SynthMetric::PpgBursts
                        && gap == PPG_BURST_EVERY_MICROS - PPG_BURST_MICROS + m.period_micros())
            };
            assert!(v.windows(2).all(gaps_ok));
            assert_eq!(v[0].0, s.start_micros());
            let (lo, hi) = v.iter().fold((f64::MAX, f64::MIN), |(lo, hi), x| {
                (lo.min(x.1), hi.max(x.1))
            });
            let (want_lo, want_hi) = match m {
                SynthMetric::ActivityCount => (0.0, 10_000.0),
                SynthMetric::Light => (0.0, 3_200.0),
                SynthMetric::SkinTemperature => (31.0, 36.0),
                SynthMetric::Acceleration => (0.0, 2_000.0),
                SynthMetric::Met => (0.9, 8.0),
                SynthMetric::Ppg | SynthMetric::PpgBursts => (350.0, 650.0),
                SynthMetric::HeartRate => (40.0, 150.0),
            };
            assert!(
                lo >= want_lo && hi <= want_hi && hi > lo,
                "{m:?}: {lo}..{hi}"
            );
            assert!(v.iter().all(|x| x.1.is_finite()));
        }
        // Day/night rhythm in activity: more at 12:00 than at 03:00 UTC.
        let act: Vec<_> = s.series(0, SynthMetric::ActivityCount, 0).collect();
        let at = |h: f64| {
            act.iter()
                .filter(|x| ((x.0.rem_euclid(DAY_MICROS) as f64 / 3.6e9) - h).abs() < 1.0)
                .map(|x| x.1)
                .sum::<f64>()
        };
        assert!(at(12.0) > at(3.0));
        assert!(s.start_micros() + 2 * DAY_MICROS <= s.end_at_micros);
    }
}

//! The three jobs of the `replay` binary as library functions (the end-to-end tests call
//! them directly): replay the real recordings, publish synthetic load, compute the truth.

use crate::error::{Error, Result};
use crate::formats;
use crate::progress::Progress;
use crate::publish::{BatchHeader, PublishOptions, Publisher};
use crate::rebase::TimePlan;
use crate::synthetic::Spec;
use crate::truth::{Truth, TruthBuilder};
use std::path::Path;
use vitalsink_common::config::KafkaConfig;

/// Parses every recording under `data_dir` and returns the truth with `plan` applied, without
/// publishing anything.
///
/// # Errors
/// [`Error::NoRecordings`], or a parse error naming file and line.
pub fn truth(data_dir: &Path, plan: TimePlan) -> Result<Truth> {
    let mut b = TruthBuilder::new();
    note_skipped(data_dir, &mut b)?;
    formats::for_each_recording(data_dir, |mut rec| {
        plan.apply(&mut rec);
        b.add_recording(&rec);
        Ok(())
    })?;
    Ok(b.finish(mode(plan), plan.end_at_micros))
}

fn mode(plan: TimePlan) -> &'static str {
    if plan.native {
        "native"
    } else {
        "rebased"
    }
}

fn note_skipped(data_dir: &Path, b: &mut TruthBuilder) -> Result<()> {
    for f in formats::discover(data_dir)? {
        if let Err(why) = f.kind {
            if why != "fetch marker" {
                b.skipped_file(&f.rel.to_string_lossy(), why);
            }
        }
    }
    Ok(())
}

/// Replays every real recording under `data_dir` to `opts.topic`, one recording after the
/// other, each metric as batch records keyed by participant id; returns the truth of what
/// was published.
///
/// # Errors
/// As [`truth`], plus [`Error::Kafka`] when a record is not delivered.
pub async fn real(
    data_dir: &Path,
    plan: TimePlan,
    kafka: &KafkaConfig,
    opts: PublishOptions,
) -> Result<Truth> {
    // First pass: the truth and the total for the progress bar (the files are small).
    let t = truth(data_dir, plan)?;
    let mut progress = Progress::new(t.rows);
    let mut publisher = Publisher::new(kafka, opts)?;
    let mut recs = Vec::new();
    for found in formats::discover(data_dir)? {
        if found.kind.is_ok() {
            recs.push(found);
        }
    }
    for found in recs {
        let Some(mut rec) = formats::parse(data_dir, &found)? else {
            continue;
        };
        let shift = plan.apply(&mut rec);
        tracing::info!(participant = %rec.participant_id, file = %found.rel.display(), readings = rec.readings(), shift_s = shift / 1_000_000, "replaying");
        for s in rec.series {
            let header = BatchHeader {
                participant_id: rec.participant_id.clone(),
                metric: s.metric,
                device_id: rec.device_id.clone(),
                study_id: rec.study_id.clone(),
            };
            publisher
                .send_series(&header, s.samples, &mut progress)
                .await?;
        }
    }
    publisher.flush(&mut progress).await?;
    progress.finish();
    if progress.done() != t.rows {
        return Err(Error::Argument {
            name: "data",
            detail: format!(
                "published {} readings, truth has {}",
                progress.done(),
                t.rows
            ),
        });
    }
    Ok(t)
}

/// Publishes the synthetic load `spec` (day by day, participant by participant); returns its
/// truth.
///
/// # Errors
/// [`Error::Kafka`] when a record is not delivered.
pub async fn synthetic(spec: &Spec, kafka: &KafkaConfig, opts: PublishOptions) -> Result<Truth> {
    if spec.participants == 0 || spec.days == 0 || spec.metrics.is_empty() {
        return Err(Error::Argument {
            name: "--participants/--days/--metrics",
            detail: "nothing to generate".into(),
        });
    }
    let mut progress = Progress::new(spec.total_readings());
    let mut publisher = Publisher::new(kafka, opts)?;
    let mut b = TruthBuilder::new();
    for day in 0..spec.days {
        for p in 0..spec.participants {
            let pid = spec.participant_id(p);
            if day == 0 {
                b.participant(&pid, "synthetic", "synthetic", 0, 0);
            }
            for &m in &spec.metrics {
                let header = BatchHeader {
                    participant_id: pid.clone(),
                    metric: m.metric(),
                    device_id: None,
                    study_id: Some("synthetic".into()),
                };
                let series = spec
                    .series(p, m, day)
                    .inspect(|&(ts, v)| b.add(&pid, m.metric(), ts, v));
                publisher
                    .send_series(&header, series, &mut progress)
                    .await?;
            }
        }
    }
    publisher.flush(&mut progress).await?;
    progress.finish();
    Ok(b.finish("synthetic", spec.end_at_micros))
}

/// Writes `truth` as pretty JSON to `path` (`-`: standard output).
///
/// # Errors
/// [`Error::Io`] or [`Error::Json`].
pub fn write_truth(truth: &Truth, path: &Path) -> Result<()> {
    let json = serde_json::to_string_pretty(truth)?;
    if path == Path::new("-") {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{json}").map_err(|e| Error::io("<stdout>", e))
    } else {
        std::fs::write(path, json + "\n").map_err(|e| Error::io(path, e))
    }
}

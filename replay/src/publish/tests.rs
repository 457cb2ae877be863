//! Tests of the batch record encoding: every reading of the bundled recordings survives the
//! contract's decoder exactly, one instant stays in one record, and both limits hold.

use super::*;
use crate::formats::{for_each_recording, test_data};
use crate::rebase::TimePlan;
use vitalsink_common::measurement::{decode, Limits};

/// Every real reading, encoded in batch records within a 64 KiB limit, decodes through the
/// ingest gate to exactly the same participant, metric, timestamp and value bits.
#[test]
fn every_real_reading_survives_the_contract_decoder_exactly() {
    let now = chrono::Utc::now().timestamp_micros();
    let plan = TimePlan {
        native: false,
        end_at_micros: now,
    };
    let limits = Limits {
        max_message_bytes: 65_536,
        ..Limits::default()
    };
    let (mut readings, mut records, mut mismatched) = (0u64, 0u64, Vec::new());
    for_each_recording(&test_data::dir(), |mut rec| {
        plan.apply(&mut rec);
        for s in &rec.series {
            let header = BatchHeader {
                participant_id: rec.participant_id.clone(),
                metric: s.metric,
                device_id: rec.device_id.clone(),
                study_id: rec.study_id.clone(),
            };
            let mut want = s.samples.iter();
            let mut last_ts = None;
            encode_batches(
                &header,
                s.samples.iter().copied(),
                1_000,
                limits.max_message_bytes,
                |json, n| {
                    assert!(json.len() <= limits.max_message_bytes && n <= MAX_BATCH_SAMPLES);
                    let got = decode(json.as_bytes(), &limits, now).expect("valid record");
                    assert_eq!(got.len(), n);
                    assert_ne!(
                        got.first().map(|r| r.ts_micros),
                        last_ts,
                        "an instant split between two records"
                    );
                    last_ts = got.last().map(|r| r.ts_micros);
                    for r in got {
                        let &(ts, v) = want.next().expect("no extra reading");
                        assert_eq!(
                            (r.participant_id.as_str(), r.metric.as_str(), r.ts_micros),
                            (rec.participant_id.as_str(), s.metric.name, ts)
                        );
                        assert_eq!(r.unit.as_deref(), Some(s.metric.unit));
                        if r.value.to_bits() != v.to_bits() {
                            mismatched.push((v, r.value));
                        }
                        readings += 1;
                    }
                    records += 1;
                    Ok(())
                },
            )
            .unwrap();
            assert!(want.next().is_none(), "every reading encoded");
        }
        Ok(())
    })
    .unwrap();
    assert!(readings > 400_000, "{readings}");
    assert!(records * 1_000 >= readings);
    assert!(
        mismatched.is_empty(),
        "{} values change through JSON, e.g. {:?}",
        mismatched.len(),
        &mismatched[..mismatched.len().min(5)]
    );
}

#[test]
fn one_instant_stays_in_one_record() {
    let header = BatchHeader {
        participant_id: "p1".into(),
        metric: crate::mapping::PPG,
        device_id: None,
        study_id: None,
    };
    // 10 samples per record asked; instants 0..=9 then six samples at instant 9.
    let samples: Vec<(i64, f64)> = (0..10)
        .map(|i| (i * 1_000, 1.0))
        .chain((0..6).map(|_| (9_000, 1.0)))
        .chain([(10_000, 2.0), (11_000, 2.0)])
        .collect();
    let mut sizes = Vec::new();
    encode_batches(&header, samples.clone(), 10, 65_536, |_, n| {
        sizes.push(n);
        Ok(())
    })
    .unwrap();
    assert_eq!(sizes, [16, 2]);
    // Full by bytes in the middle of the run at instant 9: the record ends before the run.
    let one = {
        let mut s = String::new();
        push_sample(&mut s, 9_000, 1.0);
        s.len()
    };
    let limit = header.prefix().len() + 11 * (one + 1) + 2;
    let mut records = Vec::new();
    encode_batches(&header, samples.clone(), 100, limit, |json, n| {
        assert!(json.len() <= limit);
        records.push((n, json.matches("\"ts\"").count()));
        Ok(())
    })
    .unwrap();
    assert_eq!(records.iter().map(|r| r.0).collect::<Vec<_>>(), [9, 9]);
    assert!(records.iter().all(|(n, ts)| n == ts));
}

#[test]
fn batches_respect_both_limits() {
    let header = BatchHeader {
        participant_id: "p1".into(),
        metric: crate::mapping::PPG,
        device_id: None,
        study_id: None,
    };
    let samples = (0..2_500).map(|i| (i64::from(i) * 10_000, f64::from(i) * 0.5));
    let mut sizes = Vec::new();
    encode_batches(
        &header,
        samples.clone(),
        1_000,
        DEFAULT_MAX_MESSAGE_BYTES,
        |_, n| {
            sizes.push(n);
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(sizes, vec![1_000, 1_000, 500]);
    sizes.clear();
    encode_batches(&header, samples, 10_000, 4_096, |json, n| {
        assert!(json.len() <= 4_096);
        sizes.push(n);
        Ok(())
    })
    .unwrap();
    assert_eq!(sizes.iter().sum::<usize>(), 2_500);
    assert!(sizes.len() > 2);
    let r = encode_batches(&header, [(0, 1.0)], 10, 40, |_, _| Ok(()));
    assert!(matches!(r, Err(Error::Argument { .. })));
}

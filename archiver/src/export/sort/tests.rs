//! Tests of the sort buffer: both sorts agree, runs written and read back, a buffer reused.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::export::pgcopy::tests::tuple_of;
use crate::export::pgcopy::{tuple_at, Next};
use crate::export::runfile::RunReader;

#[test]
fn counting_by_group_and_comparing_keys_agree() {
    // Rows partly in ts order, partly not, over 7 participants × 3 metrics.
    let (pr, mr) = (vec![3, 0, 6, 1, 5, 2, 4], vec![2, 0, 1]);
    let rows: Vec<Row> = (0..5_000u32)
        .map(|i| {
            let x = i.wrapping_mul(2_654_435_761);
            let ts = if i % 7 == 3 {
                i64::from(x % 1000)
            } else {
                i64::from(i)
            };
            Row {
                ts,
                value: u64::from(i),
                ids: [x % 7, (x >> 8) % 3, NULL, NULL, NULL, NULL],
                prov: Prov::default(),
            }
        })
        .collect();
    let key = |r: &Row| (pr[r.ids[0] as usize], mr[r.ids[1] as usize], r.ts);
    // Into vectors that held other rows before, as a buffer's do from the second run on.
    let stale = |n: usize| vec![rows[n % rows.len()]; n];
    let mut by_groups = stale(7);
    sort_by_groups(&rows, &pr, &mr, &mut by_groups);
    let mut by_keys = stale(9_000);
    sort_by_keys(&rows, &pr, &mr, &mut by_keys);
    let a: Vec<_> = by_groups.iter().map(key).collect();
    let b: Vec<_> = by_keys.iter().map(key).collect();
    assert_eq!(a.len(), rows.len());
    assert!(a.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(a, b);
    // The same rows, not only the same keys.
    let mut values: Vec<u64> = by_groups.iter().map(|r| r.value).collect();
    values.sort_unstable();
    assert_eq!(values, (0..5_000).collect::<Vec<u64>>());
}

#[test]
fn an_in_memory_run_holds_the_same_rows_as_an_encoded_one() {
    let mut b = RunBuffer::default();
    for (p, m, ts, unit) in [
        ("P2", "hr", 5, None),
        ("P1", "spo2", 1, Some("%")),
        ("P1", "hr", 9, Some("bpm")),
    ] {
        let t = tuple_of(p, m, ts, unit);
        let Next::Tuple(spans, _) = tuple_at(&t, "t").unwrap() else {
            panic!()
        };
        b.push_tuple(&t, &spans, "t").unwrap();
    }
    let sorted = b.take_sorted();
    assert!(b.is_empty());
    assert_eq!(sorted.len(), 3);
    let mut direct = Vec::new();
    let mut provs = Vec::new();
    sorted
        .for_each(|(s, ts, _, prov)| {
            provs.push((s[5].map(str::to_string), *prov));
            direct.push((
                s[0].unwrap().to_string(),
                s[1].unwrap().to_string(),
                ts - PG_EPOCH_MICROS,
                s[2].map(str::to_string),
            ));
            Ok(())
        })
        .unwrap();
    let bytes = sorted.write(Vec::new()).unwrap();
    let mut r = RunReader::new(bytes.as_slice(), "t");
    let mut encoded = Vec::new();
    let mut encoded_provs = Vec::new();
    while r.advance().unwrap() {
        encoded_provs.push((r.str(5).map(str::to_string), r.prov));
        encoded.push((
            r.str(0).unwrap().to_string(),
            r.str(1).unwrap().to_string(),
            r.ts - PG_EPOCH_MICROS,
            r.str(2).map(str::to_string),
        ));
    }
    assert_eq!(direct, encoded);
    assert_eq!(provs, encoded_provs);
    // The provenance of tuple_of: offset = ts, received 5 µs after ts, topic `vitals`.
    for ((_, _, ts, _), (topic, p)) in direct.iter().zip(&provs) {
        assert_eq!(topic.as_deref(), Some("vitals"));
        assert_eq!(p.src_offset(), Some(*ts));
        assert_eq!(p.received_at(), Some(ts + PG_EPOCH_MICROS + 5));
        assert_eq!((p.occurrence(), p.utc_offset_min()), (Some(0), Some(60)));
    }
    assert_eq!(
        direct,
        vec![
            ("P1".into(), "hr".into(), 9, Some("bpm".into())),
            ("P1".into(), "spo2".into(), 1, Some("%".into())),
            ("P2".into(), "hr".into(), 5, None),
        ]
    );
}

/// Pushes `rows` (participant_id, metric, ts; unit `bpm`) into `b`.
fn push_all(b: &mut RunBuffer, rows: &[(&str, &str, i64)]) {
    for (p, m, ts) in rows {
        let t = tuple_of(p, m, *ts, Some("bpm"));
        let Next::Tuple(spans, _) = tuple_at(&t, "t").unwrap() else {
            panic!()
        };
        b.push_tuple(&t, &spans, "t").unwrap();
    }
}

/// Writes `b` as a sorted run and reads it back: (participant_id, metric, ts) of each row.
fn written(b: &mut RunBuffer) -> Vec<(String, String, i64)> {
    let bytes = b.write_sorted(Vec::new()).unwrap();
    assert!(b.is_empty());
    let mut r = RunReader::new(bytes.as_slice(), "t");
    let mut got = Vec::new();
    while r.advance().unwrap() {
        got.push((
            r.str(0).unwrap().to_string(),
            r.str(1).unwrap().to_string(),
            r.ts - PG_EPOCH_MICROS,
        ));
        assert_eq!(r.str(2), Some("bpm"));
        assert_eq!(r.str(3), None);
    }
    got
}

/// `rows` in (participant_id, metric, ts) byte order.
fn sorted(rows: &[(&str, &str, i64)]) -> Vec<(String, String, i64)> {
    let mut want: Vec<_> = rows
        .iter()
        .map(|(p, m, t)| (p.to_string(), m.to_string(), *t))
        .collect();
    want.sort();
    want
}

#[test]
fn a_buffer_reused_for_several_runs_writes_each_run_alone() {
    let runs: [&[(&str, &str, i64)]; 3] = [
        &[("P2", "hr", 5), ("P1", "hr", 9), ("P1", "hr", 3)],
        &[("P9", "spo2", 1)],
        &[("P3", "hr", 2), ("P0", "hr", 7)],
    ];
    let mut b = RunBuffer::with_capacity(2);
    for rows in runs {
        push_all(&mut b, rows);
        assert_eq!(written(&mut b), sorted(rows));
    }
}

#[test]
fn sorts_by_participant_metric_ts_in_byte_order() {
    let input = [
        ("P2", "hr", 5),
        ("P10", "spo2", 1),
        ("P10", "heart_rate_variability_long", 9),
        ("P10", "heart_rate_variability_lone", 9),
        ("P1", "hr", 3),
        ("P1", "hr", 1),
        ("é", "hr", 0),
    ];
    let mut b = RunBuffer::default();
    push_all(&mut b, &input);
    assert_eq!(written(&mut b), sorted(&input));
}

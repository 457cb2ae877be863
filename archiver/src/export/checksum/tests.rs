//! Tests of the row checksum ([`super`]).

use super::*;
use arrow::array::{
    Float64Array, Int16Array, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use std::sync::Arc;

mod canonical;
mod columnar;
use columnar::{columnar_ref, columnar_reference};

/// Rows (participant_id, ts, value, unit) of metric `hr`, device_id NULL, study_id `S`.
type Rows = Vec<(String, i64, f64, Option<&'static str>)>;

fn rows(n: usize) -> Rows {
    (0..n)
        .map(|i| {
            let unit = if i % 3 == 0 { None } else { Some("bpm") };
            (format!("P{}", i / 7), i as i64, 60.0 + i as f64 / 8.0, unit)
        })
        .collect()
}

/// The provenance of the row at `ts`: (utc_offset_min, occurrence, received_at,
/// received_at_type, src_topic, src_partition, src_offset); every fifth row has none (a
/// row from before schema version 12).
#[allow(clippy::type_complexity)]
fn prov_of(
    ts: i64,
) -> (
    Option<i16>,
    Option<i16>,
    Option<i64>,
    Option<i16>,
    Option<&'static str>,
    Option<i32>,
    Option<i64>,
) {
    if ts % 5 == 4 {
        return (None, None, None, None, None, None, None);
    }
    let off = if ts % 2 == 0 { 60 } else { -210 };
    let occ = (ts % 3) as i16;
    (
        Some(off),
        Some(occ),
        Some(ts + 1_000),
        Some(0),
        Some("vitals"),
        Some((ts % 2) as i32),
        Some(ts / 2),
    )
}

/// A format version 1 batch (the seven columns) of `rows`.
fn batch_v1(rows: &[(String, i64, f64, Option<&'static str>)]) -> RecordBatch {
    let tz: Arc<str> = "UTC".into();
    let n = rows.len();
    RecordBatch::try_new(
        crate::export::format::schema_v1(),
        vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.0.as_str()),
            )),
            Arc::new(StringArray::from(vec!["hr"; n])),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1))
                    .with_timezone(tz),
            ),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2))),
            Arc::new(StringArray::from_iter(rows.iter().map(|r| r.3))),
            Arc::new(StringArray::from(vec![None::<&str>; n])),
            Arc::new(StringArray::from(vec![Some("S"); n])),
        ],
    )
    .unwrap()
}

/// A batch of the current format (14 columns) of `rows`, provenance from [`prov_of`].
fn batch_of(rows: &[(String, i64, f64, Option<&'static str>)]) -> RecordBatch {
    let p: Vec<_> = rows.iter().map(|r| prov_of(r.1)).collect();
    let mut cols = batch_v1(rows).columns().to_vec();
    cols.extend::<[arrow::array::ArrayRef; 7]>([
        Arc::new(Int16Array::from_iter(p.iter().map(|p| p.0))),
        Arc::new(Int16Array::from_iter(p.iter().map(|p| p.1))),
        Arc::new(TimestampMicrosecondArray::from_iter(p.iter().map(|p| p.2)).with_timezone("UTC")),
        Arc::new(Int16Array::from_iter(p.iter().map(|p| p.3))),
        Arc::new(StringArray::from_iter(p.iter().map(|p| p.4))),
        Arc::new(Int32Array::from_iter(p.iter().map(|p| p.5))),
        Arc::new(Int64Array::from_iter(p.iter().map(|p| p.6))),
    ]);
    RecordBatch::try_new(crate::export::format::schema(), cols).unwrap()
}

/// The canonical encoding of `rows`, written out by hand from the module's tables: of
/// format version 2 (with provenance) or 1.
fn canonical_of(rows: &[(String, i64, f64, Option<&'static str>)], v2: bool) -> Vec<u8> {
    let mut v = Vec::new();
    for (pid, ts, value, unit) in rows {
        v.extend_from_slice(&(pid.len() as u32).to_le_bytes());
        v.extend_from_slice(pid.as_bytes());
        v.extend_from_slice(&2u32.to_le_bytes());
        v.extend_from_slice(b"hr");
        v.extend_from_slice(&ts.to_le_bytes());
        v.extend_from_slice(&value.to_bits().to_le_bytes());
        match unit {
            Some(u) => {
                v.push(1);
                v.extend_from_slice(&(u.len() as u32).to_le_bytes());
                v.extend_from_slice(u.as_bytes());
            }
            None => v.push(0),
        }
        v.push(0);
        v.push(1);
        v.extend_from_slice(&1u32.to_le_bytes());
        v.extend_from_slice(b"S");
        if !v2 {
            continue;
        }
        let p = prov_of(*ts);
        let mut put = |b: Option<Vec<u8>>| match b {
            Some(b) => {
                v.push(1);
                v.extend_from_slice(&b);
            }
            None => v.push(0),
        };
        put(p.0.map(|x| x.to_le_bytes().to_vec()));
        put(p.1.map(|x| x.to_le_bytes().to_vec()));
        put(p.2.map(|x| x.to_le_bytes().to_vec()));
        put(p.3.map(|x| x.to_le_bytes().to_vec()));
        put(p
            .4
            .map(|t| [(t.len() as u32).to_le_bytes().as_slice(), t.as_bytes()].concat()));
        put(p.5.map(|x| x.to_le_bytes().to_vec()));
        put(p.6.map(|x| x.to_le_bytes().to_vec()));
    }
    v
}

fn canonical(rows: &[(String, i64, f64, Option<&'static str>)]) -> Vec<u8> {
    canonical_of(rows, true)
}

#[test]
fn both_row_algorithms_hash_the_documented_encoding() {
    let rows = rows(3);
    let mut d = Digester::new(Algorithm::Blake3);
    d.update(&batch_of(&rows)).unwrap();
    let s = d.finish();
    assert_eq!(s.rows, 3);
    assert_eq!((s.min_ts, s.max_ts), (Some(0), Some(2)));
    // Against the reference implementations of each hash, not against our own output.
    assert_eq!(
        s.checksum,
        format!("blake3:{}", blake3::hash(&canonical(&rows)).to_hex())
    );
    let mut d = Digester::new(Algorithm::Sha256);
    d.update(&batch_of(&rows)).unwrap();
    let want: String = Sha256::digest(canonical(&rows))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(d.finish().checksum, format!("sha256:{want}"));
}

#[test]
fn lineage_is_gathered_per_topic_partition() {
    // ts 0..10: partitions 0 and 1 alternate, offset ts / 2; ts 4 and 9 have none.
    for cut in [10, 3, 1] {
        let mut d = Digester::default();
        for part in rows(10).chunks(cut) {
            d.update(&batch_of(part)).unwrap();
        }
        assert_eq!(d.finish().source_ranges, "vitals/0:0-4,vitals/1:0-3");
    }
}

#[test]
fn a_version_1_object_hashes_with_the_old_encoding() {
    // Seven columns, no provenance: the encoding of the objects archived before schema
    // version 12, so the checksums recorded for them still verify.
    let rows = rows(1_000);
    for a in [Algorithm::Blake3, Algorithm::Sha256] {
        let mut d = Digester::new(a);
        d.update(&batch_v1(&rows)).unwrap();
        let s = d.finish();
        let old = canonical_of(&rows, false);
        let want = match a {
            Algorithm::Blake3 => format!("blake3:{}", blake3::hash(&old).to_hex()),
            Algorithm::Sha256 => format!(
                "sha256:{}",
                Sha256::digest(&old)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            ),
            Algorithm::Blake3Columns => unreachable!(),
        };
        assert_eq!(s.checksum, want);
        assert_eq!(s.source_ranges, "");
        let mut v2 = Digester::new(a);
        v2.update(&batch_of(&rows)).unwrap();
        assert_ne!(v2.finish().checksum, s.checksum);
    }
}

#[test]
fn the_checksum_does_not_depend_on_batch_or_piece_boundaries() {
    // 20,000 rows: many blocks of canonical::BLOCK_ROWS, and batches cut across them (and
    // across the runs of the columnar checksum: a participant every 7 rows).
    let rows = rows(20_000);
    for (a, want) in [
        (
            Algorithm::Blake3,
            format!("blake3:{}", blake3::hash(&canonical(&rows)).to_hex()),
        ),
        (Algorithm::Blake3Columns, columnar_reference(&rows, true)),
    ] {
        for cut in [20_000, 6_553, 1_000, 7, 1] {
            let mut d = Digester::new(a);
            for part in rows.chunks(cut) {
                d.update(&batch_of(part)).unwrap();
            }
            let s = d.finish();
            assert_eq!(s.checksum, want, "{a:?}, batches of {cut} rows");
            assert_eq!(
                (s.rows, s.min_ts, s.max_ts),
                (20_000, Some(0), Some(19_999))
            );
        }
    }
}

/// `batch`'s schema with `cols` and their types.
fn with_columns(batch: &RecordBatch, cols: Vec<arrow::array::ArrayRef>) -> RecordBatch {
    let fields: Vec<arrow::datatypes::Field> = batch
        .schema()
        .fields()
        .iter()
        .zip(&cols)
        .map(|(f, c)| f.as_ref().clone().with_data_type(c.data_type().clone()))
        .collect();
    RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), cols).unwrap()
}

#[test]
fn dictionary_string_columns_hash_as_plain_ones() {
    // What verification reads back: every Utf8 column as Dictionary(Int32, Utf8), NULLs
    // (unit) as null keys.
    let rows = rows(5_000);
    let plain = batch_of(&rows);
    let dict_type = arrow::datatypes::DataType::Dictionary(
        Box::new(arrow::datatypes::DataType::Int32),
        Box::new(arrow::datatypes::DataType::Utf8),
    );
    let cols: Vec<arrow::array::ArrayRef> = plain
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            arrow::datatypes::DataType::Utf8 => arrow::compute::cast(c, &dict_type).unwrap(),
            _ => c.clone(),
        })
        .collect();
    let dict = with_columns(&plain, cols);
    assert!(matches!(
        dict.column(4).data_type(),
        arrow::datatypes::DataType::Dictionary(..)
    ));
    assert!(dict.column(4).null_count() > 0);
    for (a, want) in [
        (
            Algorithm::Blake3,
            format!("blake3:{}", blake3::hash(&canonical(&rows)).to_hex()),
        ),
        (Algorithm::Blake3Columns, columnar_reference(&rows, true)),
    ] {
        let mut d = Digester::new(a);
        d.update(&dict).unwrap();
        let s = d.finish();
        assert_eq!(s.checksum, want, "{a:?}");
        assert_eq!((s.rows, s.min_ts, s.max_ts), (5_000, Some(0), Some(4_999)));
        // Cut into batches whose dictionaries differ.
        let mut d = Digester::new(a);
        for at in (0..5_000).step_by(1_237) {
            d.update(&dict.slice(at, 1_237.min(5_000 - at))).unwrap();
        }
        assert_eq!(d.finish().checksum, want, "{a:?}, sliced");
    }
    // A dictionary of another value type is refused, not hashed.
    let other = arrow::compute::cast(
        plain.column(0),
        &arrow::datatypes::DataType::Dictionary(
            Box::new(arrow::datatypes::DataType::Int32),
            Box::new(arrow::datatypes::DataType::LargeUtf8),
        ),
    )
    .unwrap();
    let mut cols = dict.columns().to_vec();
    cols[0] = other;
    let bad = with_columns(&dict, cols);
    assert!(Digester::default().update(&bad).is_err());
}

#[test]
fn the_recorded_checksum_names_the_algorithm() {
    assert_eq!(Algorithm::of(Some("sha256:00ff")), Algorithm::Sha256);
    assert_eq!(Algorithm::of(Some("blake3:00ff")), Algorithm::Blake3);
    assert_eq!(
        Algorithm::of(Some("blake3-col:00ff")),
        Algorithm::Blake3Columns
    );
    assert_eq!(Algorithm::of(None), Algorithm::Blake3Columns);
    assert_eq!(Algorithm::of(Some("md5:00")), Algorithm::Blake3Columns);
    for a in [
        Algorithm::Sha256,
        Algorithm::Blake3,
        Algorithm::Blake3Columns,
    ] {
        let mut d = Digester::new(a);
        d.update(&batch_of(&rows(3))).unwrap();
        assert_eq!(Algorithm::of(Some(&d.finish().checksum)), a);
    }
}

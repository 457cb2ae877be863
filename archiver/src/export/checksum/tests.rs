//! Tests of the row checksum ([`super`]).

use super::*;
use arrow::array::{
    Float64Array, Int16Array, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use std::sync::Arc;

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
fn both_algorithms_hash_the_documented_encoding() {
    let rows = rows(3);
    let mut d = Digester::default();
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
    let mut d = Digester::default();
    d.update(&batch_of(&rows(10))).unwrap();
    assert_eq!(d.finish().source_ranges, "vitals/0:0-4,vitals/1:0-3");
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
    // 20,000 rows: many blocks of canonical::BLOCK_ROWS, and batches cut across them.
    let rows = rows(20_000);
    let want = format!("blake3:{}", blake3::hash(&canonical(&rows)).to_hex());
    for cut in [20_000, 6_553, 1_000, 1] {
        let mut d = Digester::default();
        for part in rows.chunks(cut) {
            d.update(&batch_of(part)).unwrap();
        }
        let s = d.finish();
        assert_eq!(s.checksum, want, "batches of {cut} rows");
        assert_eq!(
            (s.rows, s.min_ts, s.max_ts),
            (20_000, Some(0), Some(19_999))
        );
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
    let want = format!("blake3:{}", blake3::hash(&canonical(&rows)).to_hex());
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
    let mut d = Digester::default();
    d.update(&dict).unwrap();
    let s = d.finish();
    assert_eq!(s.checksum, want);
    assert_eq!((s.rows, s.min_ts, s.max_ts), (5_000, Some(0), Some(4_999)));
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
    assert_eq!(Algorithm::of(None), Algorithm::Blake3);
    assert_eq!(Algorithm::of(Some("md5:00")), Algorithm::Blake3);
}

/// The canonical encoding of every row of `c`, row after row, written from the module's
/// tables: the reference the block encoder is checked against.
fn row_by_row<'a, S>(c: &Columns<'a, S>) -> Vec<u8>
where
    S: ArrayAccessor<Item = &'a str> + Array,
{
    fn s<'a, S: ArrayAccessor<Item = &'a str> + Array>(v: &mut Vec<u8>, col: &S, i: usize) {
        v.extend_from_slice(&(col.value(i).len() as u32).to_le_bytes());
        v.extend_from_slice(col.value(i).as_bytes());
    }
    fn opt(v: &mut Vec<u8>, present: bool, bytes: &[u8]) {
        v.push(u8::from(present));
        if present {
            v.extend_from_slice(bytes);
        }
    }
    let mut v = Vec::new();
    for i in 0..c.ts.len() {
        s(&mut v, &c.pid, i);
        s(&mut v, &c.metric, i);
        v.extend_from_slice(&c.ts.value(i).to_le_bytes());
        v.extend_from_slice(&c.value.value(i).to_bits().to_le_bytes());
        for col in &c.opt {
            v.push(u8::from(col.is_valid(i)));
            if col.is_valid(i) {
                s(&mut v, col, i);
            }
        }
        if let Some(p) = &c.prov {
            let u = p.utc_offset_min;
            opt(&mut v, u.is_valid(i), &u.value(i).to_le_bytes());
            let o = p.occurrence;
            opt(&mut v, o.is_valid(i), &o.value(i).to_le_bytes());
            let r = p.received_at;
            opt(&mut v, r.is_valid(i), &r.value(i).to_le_bytes());
            let t = p.received_at_type;
            opt(&mut v, t.is_valid(i), &t.value(i).to_le_bytes());
            v.push(u8::from(p.src_topic.is_valid(i)));
            if p.src_topic.is_valid(i) {
                s(&mut v, &p.src_topic, i);
            }
            let pa = p.src_partition;
            opt(&mut v, pa.is_valid(i), &pa.value(i).to_le_bytes());
            let so = p.src_offset;
            opt(&mut v, so.is_valid(i), &so.value(i).to_le_bytes());
        }
    }
    v
}

#[test]
fn the_block_encoding_is_the_row_by_row_one_for_any_nulls() {
    // Every nullable column NULL on its own pattern (not all together as in prov_of),
    // strings of many lengths (empty ones too), plain and dictionary, sliced batches
    // (offsets not 0) and both format versions.
    let n = 3_000;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    let mut strs = |null_in: u64| -> StringArray {
        (0..n)
            .map(|_| {
                let k = rnd(null_in);
                (k != 0).then(|| "é-x".repeat(rnd(5) as usize))
            })
            .collect()
    };
    let (pid, metric, unit, dev, study, topic) = (
        strs(u64::MAX),
        strs(u64::MAX),
        strs(3),
        strs(2),
        strs(7),
        strs(4),
    );
    let mut nums = |null_in: u64| -> Vec<Option<i64>> {
        (0..n)
            .map(|_| (rnd(null_in) != 0).then(|| rnd(1 << 40) as i64 - (1 << 39)))
            .collect()
    };
    let (off, occ, rec, typ, part, so) = (nums(3), nums(5), nums(2), nums(9), nums(4), nums(6));
    let i16s =
        |v: &[Option<i64>]| -> Int16Array { v.iter().map(|x| x.map(|x| x as i16)).collect() };
    let cols: Vec<arrow::array::ArrayRef> = vec![
        Arc::new(pid),
        Arc::new(metric),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(nums(u64::MAX).into_iter().flatten())
                .with_timezone("UTC"),
        ),
        Arc::new(Float64Array::from_iter_values(
            (0..n).map(|i| i as f64 / 3.0),
        )),
        Arc::new(unit),
        Arc::new(dev),
        Arc::new(study),
        Arc::new(i16s(&off)),
        Arc::new(i16s(&occ)),
        Arc::new(TimestampMicrosecondArray::from_iter(rec.iter().copied()).with_timezone("UTC")),
        Arc::new(i16s(&typ)),
        Arc::new(topic),
        Arc::new(
            part.iter()
                .map(|x| x.map(|x| x as i32))
                .collect::<Int32Array>(),
        ),
        Arc::new(Int64Array::from_iter(so.iter().copied())),
    ];
    let v2 = RecordBatch::try_new(crate::export::format::schema(), cols.clone()).unwrap();
    let v1 = RecordBatch::try_new(crate::export::format::schema_v1(), cols[..7].to_vec()).unwrap();
    let dict_type = arrow::datatypes::DataType::Dictionary(
        Box::new(arrow::datatypes::DataType::Int32),
        Box::new(arrow::datatypes::DataType::Utf8),
    );
    for batch in [v2, v1] {
        let dict_cols = batch
            .columns()
            .iter()
            .map(|c| match c.data_type() {
                DataType::Utf8 => arrow::compute::cast(c, &dict_type).unwrap(),
                _ => c.clone(),
            })
            .collect();
        let dict = with_columns(&batch, dict_cols);
        for (from, len) in [(0, n), (1, 1), (777, 2_000), (n - 3, 3)] {
            let plain = batch.slice(from, len);
            let want = row_by_row(&Columns::of(&plain, "t").unwrap());
            let mut d = Digester::default();
            d.update(&plain).unwrap();
            let got = d.finish().checksum;
            assert_eq!(got, format!("blake3:{}", blake3::hash(&want).to_hex()));
            let sliced = dict.slice(from, len);
            assert_eq!(row_by_row(&Columns::of_dict(&sliced, "t").unwrap()), want);
            let mut d = Digester::default();
            d.update(&sliced).unwrap();
            assert_eq!(
                d.finish().checksum,
                got,
                "dictionary strings, rows {from}+{len}"
            );
        }
        // One digester, a large block and then a smaller one: the block buffer is reused
        // without being cleared, so nothing of the first may show in the second.
        let (big, small) = (batch.slice(0, n), batch.slice(n - 3, 3));
        let mut want = row_by_row(&Columns::of(&big, "t").unwrap());
        want.extend(row_by_row(&Columns::of(&small, "t").unwrap()));
        let mut d = Digester::default();
        d.update(&big).unwrap();
        d.update(&small).unwrap();
        assert_eq!(
            d.finish().checksum,
            format!("blake3:{}", blake3::hash(&want).to_hex())
        );
    }
}

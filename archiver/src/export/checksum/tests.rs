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
            let mut d = Digester::new(Algorithm::Blake3);
            d.update(&plain).unwrap();
            let got = d.finish().checksum;
            assert_eq!(got, format!("blake3:{}", blake3::hash(&want).to_hex()));
            let sliced = dict.slice(from, len);
            assert_eq!(row_by_row(&Columns::of_dict(&sliced, "t").unwrap()), want);
            let mut d = Digester::new(Algorithm::Blake3);
            d.update(&sliced).unwrap();
            assert_eq!(
                d.finish().checksum,
                got,
                "dictionary strings, rows {from}+{len}"
            );
            // The columnar checksum, plain and dictionary, against its row-by-row reference.
            let want = columnar_ref(&[Columns::of(&plain, "t").unwrap()]);
            for b in [&plain, &sliced] {
                let mut d = Digester::new(Algorithm::Blake3Columns);
                d.update(b).unwrap();
                assert_eq!(d.finish().checksum, want, "blake3-col, rows {from}+{len}");
            }
        }
        // One digester, a large block and then a smaller one: the block buffer is reused
        // without being cleared, so nothing of the first may show in the second.
        let (big, small) = (batch.slice(0, n), batch.slice(n - 3, 3));
        let mut want = row_by_row(&Columns::of(&big, "t").unwrap());
        want.extend(row_by_row(&Columns::of(&small, "t").unwrap()));
        let mut d = Digester::new(Algorithm::Blake3);
        d.update(&big).unwrap();
        d.update(&small).unwrap();
        assert_eq!(
            d.finish().checksum,
            format!("blake3:{}", blake3::hash(&want).to_hex())
        );
        let mut d = Digester::new(Algorithm::Blake3Columns);
        d.update(&big).unwrap();
        d.update(&small).unwrap();
        let parts = [
            Columns::of(&big, "t").unwrap(),
            Columns::of(&small, "t").unwrap(),
        ];
        assert_eq!(d.finish().checksum, columnar_ref(&parts));
    }
}

/// The `blake3-col` checksum of one object's batches, written cell by cell from the
/// description in `columnar.rs`: the reference the columnar hasher is checked against.
fn columnar_ref<'a, S>(parts: &[Columns<'a, S>]) -> String
where
    S: ArrayAccessor<Item = &'a str> + Array,
{
    use arrow::datatypes::ArrowPrimitiveType;
    fn num<T: ArrowPrimitiveType, const N: usize>(
        a: &arrow::array::PrimitiveArray<T>,
        i: usize,
        le: fn(T::Native) -> [u8; N],
    ) -> Cell {
        a.is_valid(i).then(|| le(a.value(i)).to_vec())
    }
    type Cell = Option<Vec<u8>>;
    let width = if parts[0].prov.is_some() { 14 } else { 7 };
    let strings = [0, 1, 4, 5, 6, 11];
    let mut cols: Vec<Vec<Cell>> = vec![Vec::new(); width];
    let mut rows = 0u64;
    for c in parts {
        for i in 0..c.ts.len() {
            let s = |col: &S| col.is_valid(i).then(|| col.value(i).as_bytes().to_vec());
            let mut row = vec![
                s(&c.pid),
                s(&c.metric),
                num(c.ts, i, i64::to_le_bytes),
                num(c.value, i, |v: f64| v.to_bits().to_le_bytes()),
                s(&c.opt[0]),
                s(&c.opt[1]),
                s(&c.opt[2]),
            ];
            if let Some(p) = &c.prov {
                row.extend([
                    num(p.utc_offset_min, i, i16::to_le_bytes),
                    num(p.occurrence, i, i16::to_le_bytes),
                    num(p.received_at, i, i64::to_le_bytes),
                    num(p.received_at_type, i, i16::to_le_bytes),
                    s(&p.src_topic),
                    num(p.src_partition, i, i32::to_le_bytes),
                    num(p.src_offset, i, i64::to_le_bytes),
                ]);
            }
            for (col, cell) in cols.iter_mut().zip(row) {
                col.push(cell);
            }
            rows += 1;
        }
    }
    // Maximal runs of equal keys: (length, key).
    fn runs<K: PartialEq + Clone>(keys: impl Iterator<Item = K>) -> Vec<(u64, K)> {
        let mut out: Vec<(u64, K)> = Vec::new();
        for k in keys {
            match out.last_mut() {
                Some((n, last)) if *last == k => *n += 1,
                _ => out.push((1, k)),
            }
        }
        out
    }
    let mut out = blake3::Hasher::new();
    out.update(b"vitalsink blake3-col 1\0");
    out.update(&(width as u32).to_le_bytes());
    out.update(&rows.to_le_bytes());
    for (k, col) in cols.iter().enumerate() {
        if strings.contains(&k) {
            let mut stream = Vec::new();
            for (n, cell) in runs(col.iter().cloned()) {
                stream.extend(n.to_le_bytes());
                match cell {
                    None => stream.push(0),
                    Some(b) => {
                        stream.push(1);
                        stream.extend((b.len() as u32).to_le_bytes());
                        stream.extend(b);
                    }
                }
            }
            out.update(blake3::hash(&stream).as_bytes());
        } else {
            let mut presence = Vec::new();
            for (n, present) in runs(col.iter().map(Option::is_some)) {
                presence.extend(n.to_le_bytes());
                presence.push(u8::from(present));
            }
            let values: Vec<u8> = col.iter().flatten().flatten().copied().collect();
            out.update(blake3::hash(&presence).as_bytes());
            out.update(blake3::hash(&values).as_bytes());
        }
    }
    format!("blake3-col:{}", out.finalize().to_hex())
}

/// [`columnar_ref`] of `rows` in one batch, of format version 2 (with provenance) or 1.
fn columnar_reference(rows: &[(String, i64, f64, Option<&'static str>)], v2: bool) -> String {
    let batch = if v2 { batch_of(rows) } else { batch_v1(rows) };
    columnar_ref(&[Columns::of(&batch, "t").unwrap()])
}

#[test]
fn the_columnar_checksum_is_the_documented_one_and_sees_every_cell() {
    let rows = rows(2_000);
    let hash = |b: &RecordBatch| {
        let mut d = Digester::new(Algorithm::Blake3Columns);
        d.update(b).unwrap();
        d.finish().checksum
    };
    let v2 = batch_of(&rows);
    let want = columnar_reference(&rows, true);
    assert!(want.starts_with("blake3-col:") && want.len() == "blake3-col:".len() + 64);
    assert_eq!(hash(&v2), want);
    // A version 1 object's seven columns hash differently from the same rows' fourteen.
    let v1 = hash(&batch_v1(&rows));
    assert_eq!(v1, columnar_reference(&rows, false));
    assert_ne!(v1, want);
    // Any one cell changed, made NULL, or two rows swapped, changes the checksum.
    for k in 0..v2.num_columns() {
        let col = v2.column(k);
        let other = arrow::compute::concat(&[
            &col.slice(0, 1000),
            &col.slice(1001, 999),
            &col.slice(1000, 1),
        ])
        .unwrap();
        let nulled = arrow::compute::nullif(
            col,
            &arrow::array::BooleanArray::from_iter((0..2_000).map(|i| Some(i == 1_500))),
        )
        .unwrap();
        for (what, changed) in [("moved", other), ("nulled", nulled)] {
            if what == "nulled" && !v2.schema().field(k).is_nullable() {
                continue;
            }
            let mut cols = v2.columns().to_vec();
            cols[k] = changed;
            let b = with_columns(&v2, cols);
            if b.column(k).as_ref() == v2.column(k).as_ref() {
                continue;
            }
            assert_ne!(hash(&b), want, "column {k} {what}");
            assert_eq!(hash(&b), columnar_ref(&[Columns::of(&b, "t").unwrap()]));
        }
    }
    // One object is one format version.
    let mut d = Digester::new(Algorithm::Blake3Columns);
    d.update(&v2).unwrap();
    assert!(d.update(&batch_v1(&rows)).is_err());
    // Empty batches add nothing, and an object without rows hashes as no columns.
    let mut d = Digester::new(Algorithm::Blake3Columns);
    d.update(&v2.slice(0, 0)).unwrap();
    d.update(&v2).unwrap();
    d.update(&batch_v1(&rows).slice(0, 0)).unwrap();
    assert_eq!(d.finish().checksum, want);
    let mut d = Digester::new(Algorithm::Blake3Columns);
    d.update(&v2.slice(0, 0)).unwrap();
    let mut none = blake3::Hasher::new();
    none.update(b"vitalsink blake3-col 1\0");
    none.update(&0u32.to_le_bytes());
    none.update(&0u64.to_le_bytes());
    assert_eq!(
        d.finish().checksum,
        format!("blake3-col:{}", none.finalize().to_hex())
    );
}

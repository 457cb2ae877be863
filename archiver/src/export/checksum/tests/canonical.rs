//! The row encoding's blocks (`canonical.rs`) against a row-by-row reference.

use super::*;

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

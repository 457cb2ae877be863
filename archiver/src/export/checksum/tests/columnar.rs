//! `blake3-col` (`columnar.rs`) against a cell-by-cell reference written from its description.

use super::*;

/// The `blake3-col` checksum of one object's batches, written cell by cell from the
/// description in `columnar.rs`: the reference the columnar hasher is checked against.
pub(super) fn columnar_ref<'a, S>(parts: &[Columns<'a, S>]) -> String
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
pub(super) fn columnar_reference(
    rows: &[(String, i64, f64, Option<&'static str>)],
    v2: bool,
) -> String {
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

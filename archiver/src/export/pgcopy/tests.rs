//! Tests of the COPY decoder and the batch builder ([`super`]).

use super::*;
use arrow::array::AsArray;
use arrow::datatypes::TimestampMicrosecondType;

/// One binary COPY tuple of the archive's columns (value 61.5, no device or study), with
/// provenance: offset `ts_pg` of partition 0 of topic `vitals`, occurrence 0, UTC offset
/// +60, received 5 µs after `ts`, CreateTime.
pub(crate) fn tuple_of(pid: &str, metric: &str, ts_pg: i64, unit: Option<&str>) -> Vec<u8> {
    let mut v = tuple_v1(pid, metric, ts_pg, unit);
    v[..2].copy_from_slice(&(FIELDS as i16).to_be_bytes());
    let mut put = |b: &[u8]| {
        v.extend((b.len() as i32).to_be_bytes());
        v.extend(b);
    };
    put(&60i16.to_be_bytes());
    put(&0i16.to_be_bytes());
    put(&(ts_pg + 5).to_be_bytes());
    put(&0i16.to_be_bytes());
    put(b"vitals");
    put(&0i32.to_be_bytes());
    put(&ts_pg.to_be_bytes());
    v
}

/// The first seven fields of [`tuple_of`] (a count of 7): the columns of schema version 1.
fn tuple_v1(pid: &str, metric: &str, ts_pg: i64, unit: Option<&str>) -> Vec<u8> {
    let mut v = 7i16.to_be_bytes().to_vec();
    for f in [pid.as_bytes(), metric.as_bytes()] {
        v.extend((f.len() as i32).to_be_bytes());
        v.extend(f);
    }
    v.extend(8i32.to_be_bytes());
    v.extend(ts_pg.to_be_bytes());
    v.extend(8i32.to_be_bytes());
    v.extend(61.5f64.to_be_bytes());
    match unit {
        Some(u) => {
            v.extend((u.len() as i32).to_be_bytes());
            v.extend(u.as_bytes());
        }
        None => v.extend((-1i32).to_be_bytes()),
    }
    v.extend((-1i32).to_be_bytes());
    v.extend((-1i32).to_be_bytes());
    v
}

fn tuple(pid: &str, ts_pg: i64, unit: Option<&str>) -> Vec<u8> {
    tuple_of(pid, "hr", ts_pg, unit)
}

#[test]
fn decodes_tuples_split_anywhere() {
    let mut stream = SIGNATURE.to_vec();
    stream.extend(0u32.to_be_bytes());
    stream.extend(0u32.to_be_bytes());
    stream.extend(tuple("p1", 0, Some("bpm")));
    stream.extend(tuple("p2", 1_000_000, None));
    stream.extend((-1i16).to_be_bytes());
    for split in 1..stream.len() {
        let mut d = CopyDecoder::new("t");
        let mut b = BatchBuilder::new(4);
        d.push(&stream[..split]);
        d.decode(&mut b, 10).unwrap();
        d.push(&stream[split..]);
        d.decode(&mut b, 10).unwrap();
        assert!(d.ended());
        let batch = b.finish().unwrap();
        assert_eq!(batch.num_rows(), 2);
        let ts = batch.column(2).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(ts.value(0), PG_EPOCH_MICROS);
        assert_eq!(ts.value(1), PG_EPOCH_MICROS + 1_000_000);
        assert_eq!(batch.column(4).as_string::<i32>().value(0), "bpm");
        assert!(batch.column(4).is_null(1));
        let c = crate::export::format::Columns::of(&batch, "t").unwrap();
        let p = c.prov.unwrap();
        assert_eq!(p.src_offset.value(1), 1_000_000);
        assert_eq!(p.received_at.value(1), PG_EPOCH_MICROS + 1_000_005);
        assert_eq!(p.src_topic.value(0), "vitals");
        assert_eq!((p.utc_offset_min.value(0), p.occurrence.value(0)), (60, 0));
    }
}

#[test]
fn push_each_tuple_reads_blocks_split_anywhere_as_one_stream() {
    let mut stream = SIGNATURE.to_vec();
    stream.extend(0u32.to_be_bytes());
    stream.extend(0u32.to_be_bytes());
    let mut want = Vec::new();
    for (i, unit) in [Some("bpm"), None, Some("%"), None].into_iter().enumerate() {
        let t = tuple(&format!("p{i}"), i as i64 * 7, unit);
        want.push(t.clone());
        stream.extend(t);
    }
    stream.extend((-1i16).to_be_bytes());
    // Three blocks cut at every pair of places: whole tuples read in place, tuples cut
    // across blocks, the header and the end marker cut.
    for a in 0..stream.len() {
        for b in a..stream.len() {
            let mut d = CopyDecoder::new("t");
            let mut got = Vec::new();
            let mut n = 0;
            for block in [&stream[..a], &stream[a..b], &stream[b..]] {
                n += d
                    .push_each_tuple(block, |t, _| {
                        got.push(t.to_vec());
                        Ok(())
                    })
                    .unwrap();
            }
            assert!(d.ended(), "cut at {a}, {b}");
            assert_eq!((n, &got), (want.len(), &want), "cut at {a}, {b}");
        }
    }
}

#[test]
fn batch_builders_start_over_sized_for_a_whole_batch() {
    let mut b = BatchBuilder::new(1000);
    let strs = [
        Some("P1"),
        Some("hr"),
        Some("bpm"),
        None,
        None,
        Some("vitals"),
    ];
    for round in 0..2 {
        // Sized before the first row of every batch (8 bytes a string).
        assert!(b.ts.capacity() >= 1000, "round {round}");
        assert!(b.value.capacity() >= 1000, "round {round}");
        assert!(b.pid.values_capacity() >= 8000, "round {round}");
        for i in 0..1000 {
            b.append(strs, i, 1.0, &Prov::default());
        }
        assert_eq!(b.finish().unwrap().num_rows(), 1000);
        assert!(b.is_empty());
    }
}

#[test]
fn a_tuple_of_the_seven_old_columns_is_refused() {
    let e = tuple_at(&tuple_v1("p1", "hr", 0, None), "t").unwrap_err();
    assert!(e.to_string().contains("7 fields, expected 14"), "{e}");
}

//! Tests of the writer's pure parts: batch offsets, kept ranges, shard progress.

use super::*;

fn seg(partition: i32, offset: i64, start: usize, end: usize) -> Segment {
    Segment {
        partition,
        offset,
        start,
        end,
        rows: 1,
    }
}

fn batch(segments: Vec<Segment>, progress: BTreeMap<i32, i64>) -> Batch {
    let len = segments.iter().map(|s| s.end).max().unwrap_or(0);
    Batch {
        shard: 0,
        data: bytes::Bytes::from((0..len).map(|i| i as u8).collect::<Vec<_>>()),
        rows: segments.len(),
        segments,
        progress,
        permit: None,
        spares: None,
        label: Default::default(),
    }
}

#[test]
fn batch_offsets_cover_every_row() {
    let b = batch(
        vec![seg(0, 5, 0, 1), seg(1, 9, 1, 2), seg(0, 7, 2, 3)],
        [(0, 6), (2, 40)].into(),
    );
    assert_eq!(batch_offsets(&b), [(0, 8), (1, 10), (2, 40)].into());
}

#[test]
fn kept_parts_merge_adjacent_ranges_and_leave_out_skipped_records() {
    let b = batch(
        vec![
            seg(0, 5, 0, 2),
            seg(1, 9, 2, 4),
            seg(0, 6, 4, 5),
            seg(1, 10, 5, 8),
        ],
        BTreeMap::new(),
    );
    let all = kept_parts(&b, |_| true);
    assert_eq!(
        all,
        vec![b.data.clone()],
        "nothing skipped: one zero-copy slice"
    );
    let some = kept_parts(&b, |s| s.partition == 1);
    assert_eq!(some, vec![b.data.slice(2..4), b.data.slice(5..8)]);
    assert!(kept_parts(&b, |_| false).is_empty());
}

#[test]
fn safe_offsets_are_the_minimum_over_shards() {
    let p = ShardProgress::new(2);
    p.advance(0, &[(0, 10), (1, 5)].into());
    p.advance(1, &[(0, 7)].into());
    p.advance(1, &[(0, 3)].into());
    assert_eq!(
        p.safe_offsets(&[0, 1, 2]),
        [(0, 7)].into(),
        "never goes back; partition 1 unknown on shard 1"
    );
}

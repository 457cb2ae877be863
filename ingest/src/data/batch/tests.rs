//! Tests of the shard buffers and batches.

use super::*;
use std::borrow::Cow;

/// One spare buffer, with a budget that always covers it.
fn spares() -> Spares {
    Spares::new(1, Arc::new(Semaphore::new(1 << 24)))
}

fn msg(samples: usize) -> Message<'static> {
    Message {
        participant_id: Cow::Borrowed("a"),
        metric: Cow::Borrowed("hr"),
        unit: None,
        device_id: None,
        study_id: None,
        samples: vec![
            vitalsink_common::measurement::Sample {
                ts_micros: 0,
                value: 1.0,
                utc_offset_min: Some(0),
            };
            samples
        ],
    }
}

/// The source of the record at (`partition`, `offset`).
fn src(partition: i32, offset: i64) -> Source<'static> {
    Source {
        topic: "measurements",
        partition,
        offset,
        received_at_micros: None,
        received_at_type: None,
    }
}

fn limits(rows: usize, bytes: usize, age_ms: u64) -> BatchLimits {
    BatchLimits {
        max_rows: rows,
        max_bytes: bytes,
        max_age: Duration::from_millis(age_ms),
    }
}

#[test]
fn full_by_rows_then_take_empties_and_releases_memory() {
    let sem = Arc::new(Semaphore::new(100));
    let mut b = ShardBuffer::new(1, limits(3, usize::MAX, 60_000), spares());
    assert!(!b.push(
        &src(0, 10),
        &msg(1),
        sem.clone().try_acquire_many_owned(10).unwrap()
    ));
    assert!(b.push(
        &src(0, 11),
        &msg(2),
        sem.clone().try_acquire_many_owned(20).unwrap()
    ));
    assert_eq!(sem.available_permits(), 70);
    let batch = b.take([(0, 12)].into());
    assert_eq!((batch.shard, batch.rows), (1, 3));
    let one = message_len(&msg(1), &src(0, 0));
    assert_eq!(
        batch.segments,
        [
            Segment {
                partition: 0,
                offset: 10,
                start: 0,
                end: one,
                rows: 1
            },
            Segment {
                partition: 0,
                offset: 11,
                start: one,
                end: 3 * one,
                rows: 2
            },
        ]
    );
    assert_eq!(batch.data.len(), 3 * one);
    assert!(b.is_empty() && !b.is_due(Instant::now() + Duration::from_secs(3600)));
    drop(batch);
    assert_eq!(
        sem.available_permits(),
        100,
        "memory comes back when the batch is dropped"
    );
}

#[test]
fn full_by_bytes() {
    let sem = Arc::new(Semaphore::new(10));
    let one = message_len(&msg(1), &src(0, 0));
    let mut b = ShardBuffer::new(0, limits(1_000, one * 2, 60_000), spares());
    assert!(!b.push(
        &src(0, 0),
        &msg(1),
        sem.clone().try_acquire_owned().unwrap()
    ));
    assert!(b.push(
        &src(0, 1),
        &msg(1),
        sem.clone().try_acquire_owned().unwrap()
    ));
}

#[test]
fn due_by_age_of_oldest_row() {
    let sem = Arc::new(Semaphore::new(10));
    let mut b = ShardBuffer::new(0, limits(1_000, usize::MAX, 50), spares());
    let t0 = Instant::now();
    assert!(
        !b.is_due(t0 + Duration::from_secs(1)),
        "an empty buffer is never due"
    );
    b.push(
        &src(0, 0),
        &msg(1),
        sem.clone().try_acquire_owned().unwrap(),
    );
    assert!(!b.is_due(Instant::now()));
    assert!(b.is_due(Instant::now() + Duration::from_millis(60)));
}

#[test]
fn a_dropped_batch_gives_its_allocation_back_for_a_later_batch() {
    let sem = Arc::new(Semaphore::new(1_000));
    let mut b = ShardBuffer::new(0, limits(1, usize::MAX, 60_000), spares());
    let push = |b: &mut ShardBuffer| {
        b.push(
            &src(0, 0),
            &msg(3),
            sem.clone().try_acquire_owned().unwrap(),
        );
    };
    push(&mut b);
    let first = b.take(BTreeMap::new());
    let ptr = first.data.as_ptr();
    drop(first);
    push(&mut b);
    let second = b.take(BTreeMap::new());
    assert_ne!(
        second.data.as_ptr(),
        ptr,
        "the standing buffer was a new one"
    );
    push(&mut b);
    let third = b.take(BTreeMap::new());
    assert_eq!(
        third.data.as_ptr(),
        ptr,
        "the first batch's buffer came back"
    );
    assert_eq!(
        third.data.len(),
        message_len(&msg(3), &src(0, 0)),
        "and was emptied first"
    );
}

#[test]
fn a_spare_buffer_is_kept_only_when_the_budget_covers_its_capacity() {
    let rows = Arc::new(Semaphore::new(1_000));
    for (budget, kept) in [(0, 0), (1 << 20, 1)] {
        let memory = Arc::new(Semaphore::new(budget));
        let spares = Spares::new(4, memory.clone());
        let mut b = ShardBuffer::new(0, limits(1, usize::MAX, 60_000), spares.clone());
        b.push(
            &src(0, 0),
            &msg(3),
            rows.clone().try_acquire_owned().unwrap(),
        );
        let batch = b.take(BTreeMap::new());
        let capacity = batch.data.len(); // frozen exactly at its length here or more
        drop(batch);
        let list = spares.list.lock().unwrap();
        assert_eq!(list.len(), kept, "budget {budget}");
        if kept == 1 {
            assert!(list[0].0.capacity() >= capacity);
            assert_eq!(
                memory.available_permits(),
                budget - list[0].0.capacity(),
                "the spare holds permits for its capacity"
            );
        }
    }
}

#[test]
fn a_record_encoded_beforehand_joins_the_batch_even_with_no_rows() {
    let sem = Arc::new(Semaphore::new(1_000));
    let mut b = ShardBuffer::new(0, limits(3, usize::MAX, 60_000), spares());
    let mut held = BytesMut::new();
    encode_message(&mut held, &msg(2), &src(4, 7));
    assert!(!b.push_encoded(
        4,
        7,
        &held,
        2,
        sem.clone().try_acquire_many_owned(10).unwrap()
    ));
    assert!(
        !b.push_encoded(4, 8, &[], 0, sem.clone().try_acquire_owned().unwrap()),
        "a record whose readings were all refused adds no row"
    );
    assert!(!b.is_empty() && b.len() == 2);
    assert!(b.push_encoded(4, 9, &held, 2, sem.clone().try_acquire_owned().unwrap()));
    let batch = b.take(BTreeMap::new());
    assert_eq!(
        batch
            .segments
            .iter()
            .map(|s| (s.offset, s.rows, s.end - s.start))
            .collect::<Vec<_>>(),
        vec![(7, 2, held.len()), (8, 0, 0), (9, 2, held.len())]
    );
    assert_eq!(&batch.data[..held.len()], &held[..]);
    assert_eq!(
        crate::data::writer::batch_offsets(&batch),
        [(4, 10)].into(),
        "the shard's offset passes the refused record with the batch"
    );
    assert!(batch.label.is_empty(), "the pipeline labels it at the cut");

    let mut empty = ShardBuffer::new(0, limits(3, usize::MAX, 60_000), spares());
    empty.push_encoded(1, 0, &[], 0, sem.clone().try_acquire_owned().unwrap());
    assert!(
        !empty.is_empty(),
        "a buffer holding only a refused record is cut like any other"
    );
}

//! Refusing to resume a partition whose needed records Kafka has already deleted.
//!
//! A shard restored from a backup (pgBackRest point-in-time recovery, README "Backups") holds
//! the `ingest_offsets` of its restore point, so on assignment the worker resumes each
//! partition at the lowest stored `next_offset` over the shards
//! ([`crate::data::offsets::resume_offsets`]) and re-consumes what the restore took away.
//! That only works while Kafka still holds those records: retention (`retention.ms`,
//! `retention.bytes`) or `DeleteRecords` raise a partition's **low watermark** (its log-start
//! offset), and a resume offset below it names records that no longer exist. librdkafka would
//! then answer `OFFSET_OUT_OF_RANGE` and reset the partition by `auto.offset.reset`
//! (`earliest`, [`crate::worker`]): the rows in `[next_offset, low watermark)` would be
//! skipped without a trace.
//!
//! [`covered`] runs right after the resume offsets are set, before the partitions are
//! assigned: for every partition resumed at a stored offset it reads the low watermark
//! (`ListOffsets`, [`Consumer::fetch_watermarks`]) and, if `next_offset < low watermark`
//! (the last applied offset + 1 is below the first record still held), raises a permanent
//! error ([`crate::fatal`], stage `retention`, kind `OFFSET_OUT_OF_RANGE`) naming the topic,
//! the partition, the stored offset and the low watermark. The worker then takes no
//! partition and enters its failed state (`vitalsink_ingest_failed` = 1, `/readyz` 503),
//! as Kafka Connect does with `errors.tolerance=none`; it does not restart into the same gap.
//!
//! A partition resumed at its beginning (a shard with no stored offset for it) is not checked:
//! it reads from whatever the broker still holds, as a first start on an existing topic must.

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::Offset;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use vitalsink_common::retry::Backoff;

use crate::error::Error;
use crate::fatal::Fatal;

/// How long one `ListOffsets` request for a partition's watermarks may take.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(10);

/// The first partition of `resume` (partition → resume offset) whose stored offset is below
/// its low watermark (`low(partition)`, the broker's first offset still held), as the error
/// to raise; `None` when retention covers every partition. Partitions resumed at a logical
/// offset (`Beginning`) are not checked.
pub fn gap(topic: &str, resume: &[(i32, Offset)], low: impl Fn(i32) -> i64) -> Option<Error> {
    resume.iter().find_map(|&(partition, o)| match o {
        Offset::Offset(next_offset) => {
            let low_watermark = low(partition);
            (next_offset < low_watermark).then(|| Error::RetentionGap {
                topic: topic.to_string(),
                partition,
                next_offset,
                low_watermark,
            })
        }
        _ => None,
    })
}

/// Whether Kafka still holds every record the assignment `tpl` (positioned by the rebalance
/// callback at the shards' resume offsets) needs. Reads each partition's low watermark from
/// the broker, retrying with `backoff` while it cannot answer (until `shutdown`). A gap is
/// raised on `fatal` (stage `retention`) and answers `false`: then nothing may be assigned.
pub fn covered<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    tpl: &TopicPartitionList,
    backoff: Backoff,
    shutdown: &CancellationToken,
    fatal: &Fatal,
) -> bool {
    // The callback runs on a runtime worker thread (inside `recv`): the requests and the
    // retry sleeps happen in block_in_place so the writers keep running.
    tokio::task::block_in_place(|| check(consumer, tpl, backoff, shutdown, fatal))
}

fn check<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    tpl: &TopicPartitionList,
    backoff: Backoff,
    shutdown: &CancellationToken,
    fatal: &Fatal,
) -> bool {
    for e in tpl.elements() {
        let Offset::Offset(_) = e.offset() else {
            continue;
        };
        let (topic, partition) = (e.topic(), e.partition());
        let mut attempt = 0u32;
        let low = loop {
            match consumer.fetch_watermarks(topic, partition, WATERMARK_TIMEOUT) {
                Ok((low, _high)) => break low,
                Err(err) => {
                    if shutdown.is_cancelled() {
                        return false;
                    }
                    attempt += 1;
                    tracing::warn!(topic, partition, error = %err, attempt, "cannot read the partition's low watermark; retrying");
                    std::thread::sleep(backoff.delay(attempt));
                }
            }
        };
        if let Some(err) = gap(topic, &[(partition, e.offset())], |_| low) {
            fatal.raise("retention", "OFFSET_OUT_OF_RANGE", &err);
            return false;
        }
    }
    true
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_offset_below_the_low_watermark_is_a_gap_naming_the_partition() {
        let resume = [
            (0, Offset::Offset(500)),
            (1, Offset::Offset(99)),
            (2, Offset::Beginning),
        ];
        let low = |p: i32| if p == 1 { 100 } else { 500 };
        let e = gap("m", &resume, low).expect("partition 1 lost offset 99");
        let text = e.to_string();
        assert!(text.contains("m[1]"), "{text}");
        assert!(text.contains("99") && text.contains("100"), "{text}");
    }

    #[test]
    fn resuming_at_or_above_the_low_watermark_or_at_the_beginning_is_covered() {
        let resume = [(0, Offset::Offset(100)), (1, Offset::Beginning)];
        assert!(gap("m", &resume, |_| 100).is_none());
        assert!(gap("m", &[(0, Offset::Offset(0))], |_| 0).is_none());
    }
}

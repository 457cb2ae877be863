//! The watch for a worker that holds no partition while its topic has some.
//!
//! A consumer group can leave a member without partitions for good: one worker too many for
//! the topic's partitions, or a broker whose group coordinator is wedged (issue 27: the local
//! stack's Tansu 0.6 left two restarted workers without partitions for minutes). `/readyz`
//! already says "no partitions assigned"; this watch makes it loud. Every tick of the consume
//! loop it sets `vitalsink_ingest_partitions_assigned`, and while nothing is assigned it
//! reads the topic's partition count from the broker's metadata (every
//! [`METADATA_EVERY`], at most [`METADATA_TIMEOUT`] of the loop's time, only while the loop
//! has nothing to consume) and sets `vitalsink_ingest_unassigned_seconds`. Past
//! `ingest.unassigned_alarm` it logs at error level, then once a minute while it lasts.

use rdkafka::consumer::{Consumer, ConsumerContext};
use std::time::{Duration, Instant};

/// How often the topic's partition count is read while nothing is assigned.
pub(super) const METADATA_EVERY: Duration = Duration::from_secs(5);
/// How long one metadata request may take.
pub(super) const METADATA_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the error repeats while the worker stays without partitions.
const REPEAT: Duration = Duration::from_secs(60);

/// The watch's state, owned by the consume loop.
#[derive(Debug)]
pub(super) struct Starvation {
    topic: String,
    alarm: Duration,
    /// Since when nothing has been assigned (`None` while something is).
    since: Option<Instant>,
    /// When the metadata was last read, and the topic's partition count it gave.
    checked: Option<(Instant, usize)>,
    /// When the error was last logged.
    logged: Option<Instant>,
}

impl Starvation {
    /// A watch for `topic`, saying so after `alarm` (`ingest.unassigned_alarm`). The time
    /// without partitions counts from now: start-up's join counts too.
    pub(super) fn new(topic: &str, alarm: Duration) -> Self {
        Self {
            topic: topic.to_string(),
            alarm,
            since: Some(Instant::now()),
            checked: None,
            logged: None,
        }
    }

    /// One tick: `assigned` partitions are held now.
    pub(super) fn tick<C: ConsumerContext, K: Consumer<C>>(
        &mut self,
        assigned: usize,
        consumer: &K,
    ) {
        crate::metrics::partitions_assigned(assigned);
        if assigned > 0 {
            if self.logged.take().is_some() {
                tracing::info!(partitions = assigned, "partitions assigned again");
            }
            self.since = None;
            self.checked = None;
            crate::metrics::unassigned_seconds(0.0);
            return;
        }
        let now = Instant::now();
        let since = *self.since.get_or_insert(now);
        if self
            .checked
            .is_none_or(|(at, _)| now.duration_since(at) >= METADATA_EVERY)
        {
            // Nothing is assigned, so nothing waits on the loop but age flushes of batches
            // cut before the revocation: a short blocking read is harmless here.
            let count = tokio::task::block_in_place(|| topic_partitions(consumer, &self.topic));
            match count {
                Some(n) => self.checked = Some((now, n)),
                None => self.checked = Some((now, self.checked.map_or(0, |(_, n)| n))),
            }
        }
        let topic_partitions = self.checked.map_or(0, |(_, n)| n);
        if topic_partitions == 0 {
            // A topic without partitions (or not known yet) leaves nothing to hold.
            crate::metrics::unassigned_seconds(0.0);
            return;
        }
        let waited = now.duration_since(since);
        crate::metrics::unassigned_seconds(waited.as_secs_f64());
        if waited >= self.alarm
            && self
                .logged
                .is_none_or(|at| now.duration_since(at) >= REPEAT)
        {
            self.logged = Some(now);
            tracing::error!(
                topic = %self.topic,
                topic_partitions,
                unassigned_s = waited.as_secs(),
                alarm_s = self.alarm.as_secs(),
                "this worker has held no partition of its topic for longer than ingest.unassigned_alarm: one worker more than the topic has partitions, or the broker's consumer group is wedged (restarting does not help: stop the group's workers, delete the group, start them again; the offsets are in the shards; README, \"Alerts and dashboards\")"
            );
        }
    }
}

/// The number of partitions the broker's metadata gives `topic`; `None` when it cannot be
/// read within [`METADATA_TIMEOUT`].
fn topic_partitions<C: ConsumerContext, K: Consumer<C>>(
    consumer: &K,
    topic: &str,
) -> Option<usize> {
    match consumer.fetch_metadata(Some(topic), METADATA_TIMEOUT) {
        Ok(md) => Some(
            md.topics()
                .iter()
                .filter(|t| t.name() == topic && t.error().is_none())
                .map(|t| t.partitions().len())
                .sum(),
        ),
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the topic's metadata");
            None
        }
    }
}

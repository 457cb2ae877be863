//! Following the shard map while the worker runs: an online shard move
//! ([`crate::data::route`]) reaches a worker three ways, all applied by the consume loop
//! through [`Control`] — the map read at each assignment ([`crate::control::rebalance`]), a
//! cut-over record in a partition ([`Control::cut_over`]), and the map watch every 5 s
//! ([`spawn_map_watch`]), which starts the writers of an added shard before the first
//! cut-over record and retires a removed shard's writer after the move.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use vitalsink_common::retry::{Backoff, Class};
use vitalsink_common::shardmap::{self, Routing};

use crate::control::fleet::{snapshot, with_retry, Fleet, LiveShards, Resolver};
use crate::control::rebalance::{read_fresh, Assignment, Fresh};
use crate::data::pipeline::Pipeline;
use crate::data::route::Cutover;
use crate::fatal::Fatal;

/// What the consume loop needs to follow the shard map: the writers, and how to retry.
pub struct Control {
    /// The writers.
    pub fleet: Fleet,
    /// What the pipeline routes by, for the map watch.
    pub routed: tokio::sync::watch::Sender<Routing>,
    /// The measurements topic.
    pub topic: String,
    /// The consumer group (the key of the shards' offsets, read to rewind).
    pub group: String,
    /// Retry delays.
    pub backoff: Backoff,
    /// Stops retries.
    pub stop: CancellationToken,
    /// Where a permanent error is raised.
    pub fatal: Fatal,
}

impl Control {
    /// Applies the shard map as read at an assignment or by the map watch: grows or retires
    /// writers, routes by it, and takes its stored cut-overs.
    pub async fn apply(&mut self, fresh: Fresh, pipeline: &mut Pipeline) {
        let pending = fresh.routing.pending.as_ref().map(|m| m.to.epoch);
        let routing = fresh.routing.clone();
        if let Err(e) = self
            .fleet
            .apply(fresh.routing, fresh.shards, pipeline)
            .await
        {
            self.fatal.raise("shard_map", "list", &e);
            return;
        }
        self.routed.send_replace(routing);
        if let Some(epoch) = pending {
            pipeline.known_cutovers(epoch, &fresh.cutovers);
        }
    }

    /// Stores the consumed cut-over record `c` (insert-or-get on the map shard) and applies
    /// the stored offset, first reading the map when `c` names an epoch this worker does not
    /// route by yet. Returns without applying it when the worker stops meanwhile: the record
    /// is not counted consumed, so it is read again.
    pub async fn cut_over(&mut self, c: Cutover, pipeline: &mut Pipeline) {
        if c.epoch <= pipeline.epochs().base_epoch() {
            // A duplicate of a finished move's record: nothing to switch.
            pipeline.cut_over(c, c.offset);
            return;
        }
        if pipeline.epochs().pending_epoch() != Some(c.epoch) {
            let live = snapshot(&self.fleet.live);
            let resolver = self.fleet.resolver.clone();
            let topic = self.topic.clone();
            let Some(fresh) =
                with_retry("shard_map", self.backoff, &self.stop, &self.fatal, || {
                    read_fresh(&live, &resolver, &topic)
                })
                .await
            else {
                return;
            };
            self.apply(fresh, pipeline).await;
            if self.stop.is_cancelled() {
                return;
            }
            if pipeline.epochs().pending_epoch() != Some(c.epoch) {
                tracing::warn!(
                    partition = c.partition,
                    offset = c.offset,
                    epoch = c.epoch,
                    "cut-over record of an epoch no move in progress goes to; skipped"
                );
                pipeline.cut_over(c, c.offset);
                return;
            }
        }
        let map_shard = match snapshot(&self.fleet.live).first() {
            Some(s) => s.clone(),
            None => return,
        };
        let topic = self.topic.clone();
        let Some(stored) = with_retry("cutover", self.backoff, &self.stop, &self.fatal, || {
            vitalsink_common::cutover::record(&map_shard, &topic, c.partition, c.epoch, c.offset)
        })
        .await
        else {
            return;
        };
        tracing::info!(
            partition = c.partition,
            offset = stored,
            epoch = c.epoch,
            "partition cut over: later records route by the new epoch"
        );
        crate::metrics::cut_over(c.epoch);
        pipeline.cut_over(c, stored);
    }
}

/// How often a running worker re-reads the shard map.
const MAP_WATCH: Duration = Duration::from_secs(5);

/// Re-reads the shard map every `MAP_WATCH` and hands a changed one to the consume loop
/// ([`Assignment::Routing`]): an online move that starts (writers for an added shard start
/// before its first cut-over record arrives) or finishes (a removed shard's writer stops).
/// Any other change — a new epoch no move of this worker's routing leads to, or an offline
/// move started while this worker writes — stops the worker as a permanent error. Unreadable
/// maps are left to the shard probe (`/readyz`).
pub fn spawn_map_watch(
    live: LiveShards,
    resolver: Arc<Resolver>,
    topic: String,
    routed: tokio::sync::watch::Receiver<Routing>,
    events: mpsc::UnboundedSender<Assignment>,
    fatal: Fatal,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(MAP_WATCH) => {}
            }
            let fresh = match read_fresh(&snapshot(&live), &resolver, &topic).await {
                Ok(f) => f,
                Err(e) if e.class() == Class::Permanent => {
                    fatal.raise(
                        "shard_map",
                        &e.kind(),
                        &format!("{e} (while this worker writes)"),
                    );
                    return;
                }
                Err(_) => continue,
            };
            // What the consume loop routes by now (it also follows the map at assignments and
            // at cut-over records).
            let seen = routed.borrow().clone();
            let now = &fresh.routing;
            let follows = match step(&seen, now) {
                Step::Same => continue,
                Step::Follows => true,
                Step::IfMovesDone => match snapshot(&live).first() {
                    Some(map_shard) => {
                        shardmap::online_moves_done(map_shard, seen.base.epoch, now.base.epoch)
                            .await
                            .unwrap_or(false)
                    }
                    None => false,
                },
                Step::Unrelated => false,
            };
            if !follows {
                let why = format!(
                    "the shard map moved to epoch {} [{}] while this worker routes epoch {} [{}] \
                     and no shard move leads there",
                    now.latest_epoch(),
                    now.union().join(", "),
                    seen.latest_epoch(),
                    seen.union().join(", ")
                );
                fatal.raise("shard_map", "epoch", &why);
                return;
            }
            if events.send(Assignment::Routing(Box::new(fresh))).is_err() {
                return;
            }
        }
    });
}

/// How a freshly read routing `now` relates to the routing `seen` the consume loop routes by.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Nothing changed.
    Same,
    /// One step of an online move: it started from `seen`'s epoch, progressed, or finished
    /// where `seen`'s pending move goes.
    Follows,
    /// `now` has no move pending (at `seen`'s epoch or later), or an online move from its
    /// epoch, later than `seen`'s: it follows when every epoch in between was reached by a
    /// finished online move ([`shardmap::online_moves_done`]). So a move that finishes and the next that starts
    /// within one [`MAP_WATCH`] are followed, as the consume loop follows them at the next
    /// move's cut-over records.
    IfMovesDone,
    /// No online move leads from `seen` to `now` (an earlier epoch, or an unknown jump).
    Unrelated,
}

fn step(seen: &Routing, now: &Routing) -> Step {
    if now == seen {
        return Step::Same;
    }
    let started = now.base == seen.base && seen.pending.is_none();
    let finished = seen
        .pending
        .as_ref()
        .is_some_and(|m| now.base == m.to && now.pending.is_none());
    let progressed = now.base == seen.base
        && now.pending.as_ref().map(|m| m.id) == seen.pending.as_ref().map(|m| m.id);
    if started || finished || progressed {
        return Step::Follows;
    }
    let next_started = now
        .pending
        .as_ref()
        .is_some_and(|m| m.from.epoch == now.base.epoch && now.base.epoch > seen.base.epoch);
    let settled = now.pending.is_none() && now.base.epoch >= seen.base.epoch;
    if settled || next_started {
        Step::IfMovesDone
    } else {
        Step::Unrelated
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::data::route::tests::{map, online};

    fn moving(id: i64, from: (i32, usize), to: (i32, usize)) -> Routing {
        online(id, map(from.0, from.1), map(to.0, to.1))
    }

    fn settled(epoch: i32, n: usize) -> Routing {
        Routing {
            base: map(epoch, n),
            pending: None,
        }
    }

    #[test]
    fn one_step_of_a_move_is_followed() {
        let add = moving(1, (1, 2), (2, 3));
        assert_eq!(step(&settled(1, 2), &settled(1, 2)), Step::Same);
        assert_eq!(step(&settled(1, 2), &add), Step::Follows, "started");
        let mut copying = add.clone();
        if let Some(m) = copying.pending.as_mut() {
            m.phase = "copying".into();
        }
        assert_eq!(step(&add, &copying), Step::Follows, "progressed");
        assert_eq!(step(&add, &settled(2, 3)), Step::Follows, "finished");
    }

    /// The race behind a CI failure (issue 29): `reshard remove-shard` ran within 5 s of the
    /// add finishing, so the map watch saw the add done and the removal pending in one look,
    /// and stopped the worker; the removal then waited for cut-overs nobody consumed.
    #[test]
    fn a_move_finished_and_the_next_started_between_two_looks_is_followed_if_the_moves_are_done() {
        let add = moving(1, (1, 2), (2, 3));
        let remove = moving(2, (2, 3), (3, 2));
        assert_eq!(step(&add, &remove), Step::IfMovesDone);
        assert_eq!(step(&settled(1, 2), &remove), Step::IfMovesDone);
        assert_eq!(step(&settled(1, 2), &settled(3, 2)), Step::IfMovesDone);
    }

    #[test]
    fn an_earlier_epoch_or_a_move_from_elsewhere_is_not_followed() {
        let add = moving(1, (1, 2), (2, 3));
        assert_eq!(step(&settled(2, 3), &settled(1, 2)), Step::Unrelated);
        assert_eq!(step(&settled(2, 3), &add), Step::Unrelated);
        let mut odd = moving(2, (2, 3), (3, 2));
        if let Some(m) = odd.pending.as_mut() {
            m.from = map(1, 2);
        }
        assert_eq!(step(&settled(1, 2), &odd), Step::Unrelated);
    }
}

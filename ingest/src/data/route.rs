//! Which shard a record goes to while the shard set may be changing: routing is a pure
//! function of (participant, epoch), and a record's epoch is fixed by its position in its
//! partition (`schemas/ROUTING.md`, [`vitalsink_common::cutover`]).
//!
//! Without a move in progress every record routes by the current epoch. While an online move
//! runs, a record routes by the move's target epoch iff its offset is above its partition's
//! stored cut-over offset, else by the starting epoch. Partitions whose cut-over record has
//! not been consumed yet have no stored offset: all their records route by the starting
//! epoch.

use std::collections::BTreeMap;
use vitalsink_common::routing::ShardRouter;
use vitalsink_common::shardmap::Routing;

/// A consumed cut-over control record, for the worker to store and apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutover {
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// The epoch it switches to.
    pub epoch: i32,
}

/// The routing state of one worker.
#[derive(Debug, Clone)]
pub struct Epochs {
    routing: Routing,
    base: ShardRouter,
    pending: Option<ShardRouter>,
    /// Per partition, the stored cut-over offset to the pending epoch.
    cutovers: BTreeMap<i32, i64>,
}

impl Epochs {
    /// Routing by `routing`, no cut-over known yet.
    pub fn new(routing: Routing) -> Self {
        Self {
            base: ShardRouter::new(routing.base.shards.len()),
            pending: routing
                .pending
                .as_ref()
                .map(|m| ShardRouter::new(m.to.shards.len())),
            routing,
            cutovers: BTreeMap::new(),
        }
    }

    /// What this state routes by.
    pub fn routing(&self) -> &Routing {
        &self.routing
    }

    /// The epoch every record below its partition's cut-over routes by.
    pub fn base_epoch(&self) -> i32 {
        self.routing.base.epoch
    }

    /// The pending epoch of the online move in progress, if any.
    pub fn pending_epoch(&self) -> Option<i32> {
        self.routing.pending.as_ref().map(|m| m.to.epoch)
    }

    /// Replaces the routing (a move started, or finished). Stored cut-overs are kept while
    /// the pending epoch stays the same, and dropped otherwise: once a move has finished every
    /// partition is past its cut-over on every shard (`reshard` waits for that before it
    /// copies), so every record still to come routes by the new current epoch.
    pub fn update(&mut self, routing: Routing) {
        let keep = routing.pending.as_ref().map(|m| m.to.epoch) == self.pending_epoch();
        let cutovers = if keep {
            std::mem::take(&mut self.cutovers)
        } else {
            BTreeMap::new()
        };
        *self = Self::new(routing);
        self.cutovers = cutovers;
    }

    /// Partition `partition` cuts over to `epoch` at `offset`; ignored unless `epoch` is the
    /// pending one. The first stored offset stays.
    pub fn set_cutover(&mut self, partition: i32, epoch: i32, offset: i64) {
        if self.pending_epoch() == Some(epoch) {
            self.cutovers.entry(partition).or_insert(offset);
        }
    }

    /// The stored cut-over of `partition`, if any.
    pub fn cutover(&self, partition: i32) -> Option<i64> {
        self.cutovers.get(&partition).copied()
    }

    /// Index, in [`Routing::union`] order, of the shard the record at (`partition`,
    /// `offset`) of `participant_id` goes to.
    pub fn shard_for(&self, partition: i32, offset: i64, participant_id: &str) -> usize {
        match (&self.pending, self.cutovers.get(&partition)) {
            (Some(to), Some(&c)) if offset > c => to.shard_for(participant_id),
            _ => self.base.shard_for(participant_id),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;
    use vitalsink_common::config::ShardConfig;
    use vitalsink_common::shardmap::{OnlineMove, ShardMap};

    /// Epoch `epoch` over `n` shards named `shard0…`.
    pub(crate) fn map(epoch: i32, n: usize) -> ShardMap {
        ShardMap {
            epoch,
            shards: (0..n).map(|i| format!("shard{i}")).collect(),
        }
    }

    /// Online move `id` from `from` (the base) to `to`, at its cut-over phase.
    pub(crate) fn online(id: i64, from: ShardMap, to: ShardMap) -> Routing {
        Routing {
            base: from.clone(),
            pending: Some(OnlineMove {
                id,
                from,
                to,
                target: ShardConfig {
                    name: "shard2".into(),
                    url: String::new(),
                    replicas: Vec::new(),
                },
                phase: "cutover".into(),
            }),
        }
    }

    fn moving(from: usize, to: usize) -> Routing {
        online(1, map(1, from), map(2, to))
    }

    /// A participant jump hash moves from 2 to 3 shards.
    fn mover() -> String {
        (0..1000)
            .map(|i| format!("P{i:06}"))
            .find(|p| ShardRouter::new(3).shard_for(p) == 2)
            .unwrap()
    }

    #[test]
    fn records_route_by_the_target_epoch_only_above_their_partitions_cutover() {
        let p = mover();
        let mut e = Epochs::new(moving(2, 3));
        let old = ShardRouter::new(2).shard_for(&p);
        assert_eq!(e.shard_for(0, 100, &p), old, "no cut-over consumed yet");
        e.set_cutover(0, 2, 50);
        e.set_cutover(0, 2, 70);
        assert_eq!(e.cutover(0), Some(50), "the first stored cut-over stays");
        assert_eq!(e.shard_for(0, 50, &p), old, "the control record itself");
        assert_eq!(e.shard_for(0, 49, &p), old);
        assert_eq!(e.shard_for(0, 51, &p), 2);
        assert_eq!(e.shard_for(1, 51, &p), old, "partition 1 has not cut over");
        e.set_cutover(1, 3, 10);
        assert_eq!(e.cutover(1), None, "not the pending epoch");
    }

    #[test]
    fn a_finished_move_routes_everything_by_its_target() {
        let p = mover();
        let mut e = Epochs::new(moving(2, 3));
        e.set_cutover(0, 2, 50);
        e.update(moving(2, 3));
        assert_eq!(e.cutover(0), Some(50), "same pending epoch: kept");
        e.update(Routing {
            base: map(2, 3),
            pending: None,
        });
        assert_eq!(e.cutover(0), None);
        assert_eq!(e.shard_for(7, 0, &p), 2);
    }
}

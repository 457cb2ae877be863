//! Shard routing: `participant_id` → shard index.
//!
//! Every participant lives on exactly one shard. The rule is fixed and documented so that any
//! producer, operator script or analyst can reproduce it:
//!
//! 1. `k = fnv1a_64(participant_id as UTF-8 bytes)` — FNV-1a, 64-bit
//!    (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`, see
//!    <http://www.isthe.com/chongo/tech/comp/fnv/>);
//! 2. `shard = jump_consistent_hash(k, n)` — Lamping & Veach, "A Fast, Minimal Memory,
//!    Consistent Hash Algorithm" (2014, arXiv:1406.2294), over the **ordered** shard list of
//!    length `n`. Its linear-congruential step mixes the key, so FNV's weak low bits do not
//!    matter.
//!
//! Jump hash gives each shard `1/n` of the participants and, when a shard is appended to the
//! end of the list, moves only the `≈ 1/(n+1)` of participants that now belong to the new
//! shard. Shards may therefore only be **appended**; reordering or removing a shard from the
//! middle of the list re-routes most participants. A Python reference implementation is in
//! `schemas/ROUTING.md`.

/// FNV-1a 64-bit hash of `bytes`.
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Jump consistent hash of `key` into `0..buckets`.
///
/// Returns 0 when `buckets` is 0 or 1. The loop runs `O(ln buckets)` times.
pub fn jump_consistent_hash(mut key: u64, buckets: u32) -> u32 {
    let mut b: i64 = -1;
    let mut j: i64 = 0;
    while j < i64::from(buckets) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        // The paper's formula: j = (b + 1) * (2^31 / ((key >> 33) + 1)).
        j = ((b + 1) as f64 * ((1i64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b.max(0) as u32
}

/// The routing key of a participant: step 1 of the module rule.
pub fn participant_key(participant_id: &str) -> u64 {
    fnv1a_64(participant_id.as_bytes())
}

/// Routes participant ids over an ordered list of `n ≥ 1` shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardRouter {
    shards: u32,
}

impl ShardRouter {
    /// A router over `shards` shards. `shards` is clamped to at least 1.
    pub fn new(shards: usize) -> Self {
        Self {
            shards: u32::try_from(shards.max(1)).unwrap_or(u32::MAX),
        }
    }

    /// Number of shards routed over.
    pub fn shard_count(&self) -> usize {
        self.shards as usize
    }

    /// Index (`0..shard_count()`) of the shard that owns `participant_id`.
    pub fn shard_for(&self, participant_id: &str) -> usize {
        jump_consistent_hash(participant_key(participant_id), self.shards) as usize
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("P{i:06}")).collect()
    }

    /// Frozen vectors: a change here re-routes every stored participant, which must never
    /// happen silently. Computed with the Python reference in `schemas/ROUTING.md`.
    #[test]
    fn routing_is_stable() {
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
        let r4 = ShardRouter::new(4);
        let got: Vec<usize> = ["P000000", "P000001", "P000002", "alice", "bob"]
            .iter()
            .map(|p| r4.shard_for(p))
            .collect();
        assert_eq!(got, REFERENCE_4_SHARDS);
    }

    const REFERENCE_4_SHARDS: [usize; 5] = [3, 1, 3, 3, 2];

    fn assert_balanced(ids: &[String], shards: std::ops::RangeInclusive<usize>, tolerance: f64) {
        for n in shards {
            let router = ShardRouter::new(n);
            let mut counts = vec![0usize; n];
            for id in ids {
                counts[router.shard_for(id)] += 1;
            }
            let fair = ids.len() as f64 / n as f64;
            for (shard, &c) in counts.iter().enumerate() {
                let dev = (c as f64 - fair).abs() / fair;
                assert!(
                    dev <= tolerance,
                    "{n} shards: shard {shard} has {c} participants, fair share {fair:.0} (±{:.1}%)",
                    dev * 100.0
                );
            }
        }
    }

    /// The bar: 10,000 participants over 2..=16 shards within ±10% of a fair share.
    /// For any hash that behaves randomly the worst of these 135 shares sits around 2.5
    /// standard deviations (8–10%), so this is close to the best a stateless router can do.
    #[test]
    fn balance_within_ten_percent_for_2_to_16_shards() {
        assert_balanced(&ids(10_000), 2..=16, 0.10);
        let other: Vec<String> = (0..10_000)
            .map(|i| format!("S{:02}-P{i:04}", i % 7))
            .collect();
        assert_balanced(&other, 2..=16, 0.10);
    }

    /// With 200,000 participants, ±5% is more than 5 standard deviations: a biased router
    /// fails this, a fair one never does.
    #[test]
    fn balance_has_no_bias_at_scale() {
        assert_balanced(&ids(200_000), 2..=16, 0.05);
    }

    #[test]
    fn adding_a_shard_moves_about_one_over_n_plus_one() {
        let ids = ids(10_000);
        for n in 1..=15usize {
            let before = ShardRouter::new(n);
            let after = ShardRouter::new(n + 1);
            let mut moved = 0usize;
            for id in &ids {
                let (a, b) = (before.shard_for(id), after.shard_for(id));
                if a != b {
                    assert_eq!(b, n, "a participant may only move to the new shard");
                    moved += 1;
                }
            }
            // Binomial(ids, 1/(n+1)): allow 4 standard deviations of noise.
            let p = 1.0 / (n + 1) as f64;
            let expected = ids.len() as f64 * p;
            let sigma = (ids.len() as f64 * p * (1.0 - p)).sqrt();
            assert!(
                (moved as f64) <= expected + 4.0 * sigma,
                "{n}→{} shards moved {moved}, about {expected:.0} expected",
                n + 1
            );
            assert!(moved > 0, "some participants must move to the new shard");
        }
    }

    #[test]
    fn one_shard_takes_everything() {
        let r = ShardRouter::new(1);
        assert!(ids(100).iter().all(|p| r.shard_for(p) == 0));
        assert_eq!(ShardRouter::new(0).shard_count(), 1);
    }
}

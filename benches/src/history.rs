//! History for the shard move benchmarks: fresh, migrated shard databases holding
//! `per_participant` heart-rate rows (one a minute, or every `every_s` seconds with
//! [`load_spaced`], ending `ends_ago` before now) of participants `P00000…`, each on its
//! routed shard.

use vitalsink_common::config::DatabaseConfig;
use vitalsink_common::db::Shard;
use vitalsink_common::routing::ShardRouter;
use vitalsink_tests::{connect, ShardDbs, Stack};

/// Creates the databases (prefix `prefix`) and loads the rows; returns them and, per shard,
/// its participants.
///
/// # Panics
/// When the stack's databases cannot be created or written (a benchmark set-up failure).
pub async fn load(
    stack: &Stack,
    prefix: &str,
    participants: usize,
    per_participant: i64,
    ends_ago: &str,
) -> (ShardDbs, Vec<Vec<String>>) {
    load_spaced(stack, prefix, participants, per_participant, ends_ago, 60).await
}

/// As [`load`], a row every `every_s` seconds.
///
/// # Panics
/// As [`load`].
pub async fn load_spaced(
    stack: &Stack,
    prefix: &str,
    participants: usize,
    per_participant: i64,
    ends_ago: &str,
    every_s: i32,
) -> (ShardDbs, Vec<Vec<String>>) {
    let dbs = ShardDbs::create(stack, prefix).await;
    let db = DatabaseConfig::default();
    #[allow(clippy::unwrap_used)]
    let shards: Vec<Shard> = Shard::all(&dbs.shards, &db).unwrap();
    #[allow(clippy::unwrap_used)]
    vitalsink_common::migrate::migrate_all(&shards, &db)
        .await
        .unwrap();
    let router = ShardRouter::new(dbs.shards.len());
    let mut by_shard = vec![Vec::new(); dbs.shards.len()];
    for p in 0..participants {
        let pid = format!("P{p:05}");
        by_shard[router.shard_for(&pid)].push(pid);
    }
    for (s, pids) in dbs.shards.iter().zip(&by_shard) {
        #[allow(clippy::unwrap_used)]
        connect(&s.url)
            .await
            .execute(
                "INSERT INTO measurements (participant_id, metric, ts, value, unit, device_id)
                 SELECT p, 'heart_rate', now() - $3::text::interval - make_interval(secs => i * $4::float8), (i % 4000) * 0.25, '/min', 'dev-' || p
                   FROM unnest($1::text[]) p, generate_series(1, $2::bigint) i",
                &[pids, &per_participant, &ends_ago, &f64::from(every_s)],
            )
            .await
            .unwrap();
    }
    (dbs, by_shard)
}

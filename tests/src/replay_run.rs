//! Replaying the real recordings through the real ingest worker, and reading back from the
//! shards what the replay's truth ([`vitalsink_replay::truth::Truth`]) says must be there.

use futures::{pin_mut, TryStreamExt};
use std::collections::BTreeMap;
use std::path::PathBuf;
use vitalsink_common::config::ShardConfig;
use vitalsink_replay::exact::ExactSum;

use crate::connect;
use crate::ingest_run::log_tail;

/// Stops an ingest worker with SIGTERM and asserts it exits 0 (its graceful shutdown);
/// `log` is its log file, shown on failure.
pub async fn stop_gracefully(mut worker: std::process::Child, log: &std::path::Path) {
    let pid = worker.id().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    assert!(kill.unwrap().success(), "kill -TERM {pid}");
    let status = tokio::task::spawn_blocking(move || worker.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "exit status {status:?}\n{}",
        log_tail(log)
    );
}

/// Runs `dev/fetch-data` (idempotent: a no-op once the cache is complete) and returns the
/// data directory it prints. Panics, failing the test, when the fetch fails.
pub fn fetch_data() -> PathBuf {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dev/fetch-data");
    let out = std::process::Command::new(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
    assert!(
        out.status.success(),
        "dev/fetch-data failed: {:?}",
        out.status
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// What one participant has in one shard.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DbParticipant {
    /// Rows.
    pub rows: i64,
    /// Exact sum of the values (correctly rounded, as the truth's).
    pub sum: f64,
    /// Rows − distinct `(metric, ts)`.
    pub duplicate_ts: i64,
}

/// The database side of the comparison.
#[derive(Debug, Clone, Default)]
pub struct DbTruth {
    /// Per shard (routing order), per participant.
    pub shards: Vec<BTreeMap<String, DbParticipant>>,
    /// Per (participant, metric, UTC day `YYYY-MM-DD`): rows and exact sum, over all shards.
    pub daily: BTreeMap<(String, String, String), (i64, f64)>,
}

/// Reads every row of every shard (streamed) and sums exactly per participant and per
/// participant, metric and UTC day.
pub async fn db_truth(shards: &[ShardConfig]) -> DbTruth {
    let mut out = DbTruth::default();
    let mut daily: BTreeMap<(String, String, String), (i64, ExactSum)> = BTreeMap::new();
    for s in shards {
        let c = connect(&s.url).await;
        let mut per: BTreeMap<String, (i64, ExactSum)> = BTreeMap::new();
        let rows = c
            .query_raw(
                "SELECT participant_id, metric, to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD'), value FROM measurements",
                std::iter::empty::<i32>(),
            )
            .await
            .unwrap();
        pin_mut!(rows);
        while let Some(r) = rows.try_next().await.unwrap() {
            let (pid, metric, day, v): (String, String, String, f64) =
                (r.get(0), r.get(1), r.get(2), r.get(3));
            let p = per.entry(pid.clone()).or_default();
            p.0 += 1;
            p.1.add(v);
            let d = daily.entry((pid, metric, day)).or_default();
            d.0 += 1;
            d.1.add(v);
        }
        let dups: BTreeMap<String, i64> = c
            .query("SELECT participant_id, count(*) - count(DISTINCT (metric, ts)) FROM measurements GROUP BY 1", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        out.shards.push(
            per.into_iter()
                .map(|(pid, (rows, sum))| {
                    let duplicate_ts = dups.get(&pid).copied().unwrap_or(0);
                    (
                        pid,
                        DbParticipant {
                            rows,
                            sum: sum.value(),
                            duplicate_ts,
                        },
                    )
                })
                .collect(),
        );
    }
    out.daily = daily
        .into_iter()
        .map(|(k, (n, s))| (k, (n, s.value())))
        .collect();
    out
}

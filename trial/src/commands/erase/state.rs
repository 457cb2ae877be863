//! The erasure's progress, kept as JSON in its row of `erasures` on the map shard: each step
//! records what it did before the next begins, so that a killed run resumes ([`super`]).

use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use vitalsink_common::audit;
use vitalsink_common::db::Shard;

use crate::error::{Error, Result};

/// Environment variable naming a point where the command aborts the process, as if killed
/// there (tests only; like the archiver's `ARCHIVER_CRASH_AT`): `after-status`,
/// `after-hot-delete`, `after-object-write`, `after-swap`, `after-lock-revision`,
/// `before-delete`, `before-audit`.
pub const CRASH_ENV: &str = "TRIAL_CRASH_AT";

pub(super) fn crash(point: &str) {
    if std::env::var(CRASH_ENV).is_ok_and(|p| p == point) {
        tracing::error!(point, "fault injection: aborting the process");
        std::process::abort();
    }
}

/// One shard's hot rows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct Hot {
    /// Rows of the participant before the delete.
    pub(super) before: i64,
    /// Rows the delete removed (`None`: not yet deleted).
    pub(super) deleted: Option<i64>,
}

/// One archive object's rewrite.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Rewrite {
    pub(super) shard: String,
    pub(super) old: String,
    pub(super) new: String,
    pub(super) old_rows: i64,
    pub(super) old_checksum: String,
    pub(super) new_rows: Option<i64>,
    pub(super) new_checksum: Option<String>,
    pub(super) swapped: bool,
    /// The statistics said "maybe" but the object holds no row of the participant: left as it
    /// is, not swapped.
    #[serde(default)]
    pub(super) unchanged: bool,
}

/// Progress of one erasure, kept as JSON in `erasures.state`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct State {
    pub(super) status_seq: Option<i64>,
    pub(super) hot: BTreeMap<String, Hot>,
    pub(super) scanned: bool,
    pub(super) objects: Vec<Rewrite>,
    pub(super) locks: Vec<serde_json::Value>,
    pub(super) locks_done: bool,
    /// Objects to delete once the locks are revised.
    pub(super) delete: Vec<String>,
    pub(super) deleted: bool,
}

pub(super) async fn save(map: &Shard, id: i64, st: &State) -> Result<()> {
    let text = serde_json::to_string(st).map_err(|e| Error::Output(e.to_string()))?;
    let c = map.client().await?;
    c.execute(
        "UPDATE erasures SET state = $2 WHERE id = $1",
        &[&id, &text],
    )
    .await
    .map_err(|e| Error::pg(map, e))?;
    Ok(())
}

/// Finds the participant's unfinished erasure or starts one; a finished one returns its
/// report, unless some shard holds rows of the participant again (inserted by hand: ingest
/// refuses them), which starts a new erasure.
pub(super) async fn start(
    map: &Shard,
    shards: &[Shard],
    participant: &str,
    reason: &str,
) -> Result<(i64, State, Option<serde_json::Value>)> {
    let c = map.client().await?;
    let e = |x| Error::pg(map, x);
    if let Some(r) = c
        .query_opt(
            "SELECT id, state FROM erasures WHERE participant_id = $1 AND finished_at IS NULL",
            &[&participant],
        )
        .await
        .map_err(e)?
    {
        let state: String = r.get(1);
        let st = serde_json::from_str(&state).unwrap_or_default();
        tracing::info!(
            participant,
            erasure = r.get::<_, i64>(0),
            "resuming an unfinished erasure"
        );
        return Ok((r.get(0), st, None));
    }
    if let Some(r) = c
        .query_opt(
            "SELECT id, audit_seq FROM erasures WHERE participant_id = $1 ORDER BY id DESC LIMIT 1",
            &[&participant],
        )
        .await
        .map_err(e)?
    {
        let (id, seq): (i64, Option<i64>) = (r.get(0), r.get(1));
        let mut left = 0;
        for s in shards {
            left += remaining_hot(s, participant).await?;
        }
        if left == 0 {
            let details = match seq {
                Some(s) => audit::read(map, s, Some(s))
                    .await?
                    .first()
                    .and_then(|e| serde_json::from_str(&e.details).ok())
                    .unwrap_or_default(),
                None => json!({}),
            };
            return Ok((
                id,
                State::default(),
                Some(
                    json!({"participant": participant, "erasure": id, "already_erased": true,
                            "audit_seq": seq, "details": details}),
                ),
            ));
        }
    }
    let id: i64 = c
        .query_one(
            "INSERT INTO erasures (participant_id, reason) VALUES ($1, $2) RETURNING id",
            &[&participant, &reason],
        )
        .await
        .map_err(e)?
        .get(0);
    Ok((id, State::default(), None))
}

pub(super) async fn remaining_hot(s: &Shard, participant: &str) -> Result<i64> {
    let c = s.client().await?;
    Ok(c.query_one(
        "SELECT count(*) FROM measurements WHERE participant_id = $1",
        &[&participant],
    )
    .await
    .map_err(|e| Error::pg(s, e))?
    .get(0))
}

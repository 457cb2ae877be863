//! One file per verb of the `trial` binary.

pub mod audit_list;
pub mod audit_verify;
pub mod erase;
pub mod lock_create;
pub mod lock_verify;
pub mod participants_list;
pub mod status_change;

use chrono::{DateTime, Utc};
use vitalsink_common::db::Shard;

use crate::error::{Error, Result};

/// The map shard (the first configured shard), which holds the audit trail, the master copy of
/// participants' status and the locks (`vitalsink_common::shardmap`).
///
/// # Errors
/// [`Error::Refused`] when no shard is configured.
pub fn map_shard(shards: &[Shard]) -> Result<&Shard> {
    shards.first().ok_or_else(|| Error::Refused {
        action: "find the map shard".into(),
        message: "no shards configured".into(),
    })
}

/// The shards a status change must reach: the configured ones, plus the new shard of an
/// unfinished `reshard add-shard` when it is not configured yet (the mover copies the table to
/// it too, but only at its start and just before it finishes; readings routed to it in
/// between must be decided by the current table).
///
/// # Errors
/// [`Error::Common`] when the map shard cannot be read or the target's URL does not parse.
pub async fn status_shards(cfg: &vitalsink_common::Config, shards: &[Shard]) -> Result<Vec<Shard>> {
    let map = map_shard(shards)?;
    let c = map.client().await?;
    let target = c
        .query_opt(
            "SELECT shard, target_url FROM shard_moves
              WHERE phase <> 'done' AND kind = 'add' AND target_url IS NOT NULL
              ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await
        .map_err(|e| Error::pg(map, e))?;
    let mut out = Shard::all(&cfg.shards, &cfg.database)?;
    if let Some(r) = target {
        let (name, url): (String, String) = (r.get(0), r.get(1));
        if !out.iter().any(|s| s.name == name) {
            let sc = vitalsink_common::config::ShardConfig {
                name,
                url,
                replicas: Vec::new(),
            };
            out.push(Shard::new(out.len(), &sc, &cfg.database)?);
        }
    }
    Ok(out)
}

/// Advisory-lock key serialising the commands that change `participant_status` (so that two
/// of them never pick the same `seq`): "vstrialc" as a big-endian integer.
const COMMAND_LOCK_KEY: i64 = 0x7673_7472_6961_6c63;

/// Waits until no other status-changing command runs, and holds that until [`release`]: a
/// transaction on the map shard holding `COMMAND_LOCK_KEY` (ended by the server if the
/// process dies).
///
/// # Errors
/// [`Error::Common`] when the map shard cannot be reached.
pub async fn serialize(map: &Shard) -> Result<deadpool_postgres::Object> {
    let c = map.client().await?;
    c.batch_execute(&format!(
        "BEGIN; SELECT pg_advisory_xact_lock({COMMAND_LOCK_KEY})"
    ))
    .await
    .map_err(|e| Error::pg(map, e))?;
    Ok(c)
}

/// Ends what [`serialize`] holds.
pub async fn release(held: deadpool_postgres::Object) {
    if let Err(e) = held.batch_execute("ROLLBACK").await {
        tracing::warn!(error = %e, "ending the command lock's transaction failed; the pool drops it");
    }
}

/// An instant given as RFC 3339 (with its UTC offset) or `YYYY-MM-DD` (UTC midnight).
///
/// # Errors
/// [`Error::Arg`] naming `arg` when it is neither.
pub fn parse_time(arg: &'static str, s: &str) -> Result<DateTime<Utc>> {
    vitalsink_common::cli::parse_instant(s).ok_or_else(|| Error::Arg {
        arg,
        message: format!("{s:?} is neither RFC 3339 nor YYYY-MM-DD"),
    })
}

/// A required reason: non-blank, at most 1000 characters.
///
/// # Errors
/// [`Error::Arg`] (`--reason`) otherwise.
pub fn reason(r: &str) -> Result<String> {
    let t = r.trim();
    if t.is_empty() || t.chars().count() > 1000 {
        return Err(Error::Arg {
            arg: "reason",
            message: "a reason of 1 to 1000 characters is required".into(),
        });
    }
    Ok(t.to_string())
}

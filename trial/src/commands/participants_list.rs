//! `trial participants list`: every participant with a recorded status change, their status
//! now and the changes (from the map shard's `participant_status`).

use chrono::{SecondsFormat, Utc};
use serde_json::json;
use vitalsink_common::db::Shard;
use vitalsink_common::participants::{self, Statuses};

use crate::error::{Error, Result};
use crate::output::{self, Format};

/// Prints one row per status change, with the participant's status now.
///
/// # Errors
/// [`Error::Common`] when the map shard cannot be read; [`Error::Output`].
pub async fn run(map_shard: &Shard, format: Format) -> Result<()> {
    let c = map_shard.client().await?;
    let changes = participants::changes(&**c)
        .await
        .map_err(|e| Error::pg(map_shard, e))?;
    let statuses = Statuses::from_changes(&changes);
    let now = Utc::now().timestamp_micros();
    output::print(
        format,
        &changes,
        &[
            "participant_id",
            "status_now",
            "seq",
            "change",
            "effective_at",
            "recorded_at",
            "reason",
            "audit_seq",
        ],
        |ch| {
            vec![
                ch.participant_id.clone(),
                statuses.current(&ch.participant_id, now).as_str().into(),
                ch.seq.to_string(),
                ch.status.as_str().into(),
                ch.effective_at.to_rfc3339_opts(SecondsFormat::Micros, true),
                ch.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true),
                ch.reason.clone(),
                ch.audit_seq.map(|s| s.to_string()).unwrap_or_default(),
            ]
        },
        |ch| {
            json!({
                "participant_id": ch.participant_id,
                "status_now": statuses.current(&ch.participant_id, now),
                "seq": ch.seq,
                "change": ch.status,
                "effective_at": ch.effective_at,
                "recorded_at": ch.recorded_at,
                "reason": ch.reason,
                "audit_seq": ch.audit_seq,
            })
        },
    )
}

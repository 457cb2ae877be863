//! `trial participants withdraw|reinstate`: records a change of a participant's status on
//! every shard, then its audit entry (`vitalsink_common::participants` has the rule ingest
//! applies; FDA guidance "Data Retention When Subjects Withdraw from FDA-Regulated Clinical
//! Trials", 2008).
//!
//! Order: the change is inserted on every other shard first, then on the map shard together
//! with its audit entry (one transaction), each insert holding
//! [`participants::LOCK_KEY`] exclusively, so that no ingest transaction that decided by the
//! older table commits after it. The command returns once every shard has it: from then on no
//! shard stores a refused reading. A crash part-way leaves the change on some shards and no
//! audit entry; running the command again completes it (the duplicate change on the shards
//! that had it decides the same).

use chrono::{DateTime, Utc};
use serde_json::json;
use vitalsink_common::audit::{self, action, Record};
use vitalsink_common::db::Shard;
use vitalsink_common::participants::{self, Status};

use crate::commands::map_shard;
use crate::error::{Error, Result};

/// The change asked for.
#[derive(Debug, Clone)]
pub struct Change {
    /// The participant.
    pub participant: String,
    /// `Withdrawn` (withdraw) or `Active` (reinstate).
    pub status: Status,
    /// From when, by the readings' own time.
    pub effective_at: DateTime<Utc>,
    /// Why (required).
    pub reason: String,
}

/// Records `c` on every shard; returns the JSON report the command prints.
///
/// # Errors
/// [`Error::Refused`] for a reinstatement of a participant who is not withdrawn or was erased,
/// or a withdrawal of an erased one; [`Error::Common`] when a shard refuses (a role without
/// `INSERT` on `participant_status`, SQLSTATE 42501) or cannot be reached.
pub async fn run(shards: &[Shard], c: &Change) -> Result<serde_json::Value> {
    let map = map_shard(shards)?;
    let verb = match c.status {
        Status::Active => "reinstate",
        _ => "withdraw",
    };
    if c.participant.trim().is_empty() {
        return Err(Error::Arg {
            arg: "participant",
            message: "must not be empty".into(),
        });
    }
    let mc = map.client().await?;
    let statuses = participants::Statuses::load(&**mc)
        .await
        .map_err(|e| Error::pg(map, e))?;
    let now_us = Utc::now().timestamp_micros();
    let current = statuses.current(&c.participant, now_us);
    let refuse = |message: String| Error::Refused {
        action: format!("{verb} participant {}", c.participant),
        message,
    };
    match (c.status, current) {
        (_, Status::Erased) => return Err(refuse("the participant was erased".into())),
        (Status::Active, Status::Active)
            if statuses.decide(&c.participant, c.effective_at.timestamp_micros())
                == Status::Active =>
        {
            return Err(refuse(
                "the participant is not withdrawn at that time".into(),
            ))
        }
        _ => {}
    }
    drop(mc);
    // One seq for the change on every shard: above the highest anywhere.
    let seq = participants::next_seq(shards).await?;
    // Readings of the participant already stored at or after the effective time (a
    // withdrawal recorded late): counted for the audit entry; they stay (erase removes them).
    let mut stored_after = 0i64;
    for s in shards {
        let sc = s.client().await?;
        let n: i64 = sc
            .query_one(
                "SELECT count(*) FROM measurements WHERE participant_id = $1 AND ts >= $2",
                &[&c.participant, &c.effective_at],
            )
            .await
            .map_err(|e| Error::pg(s, e))?
            .get(0);
        stored_after += n;
    }
    let change = |audit_seq| participants::NewChange {
        seq,
        participant: &c.participant,
        status: c.status,
        effective_at: Some(c.effective_at),
        reason: &c.reason,
        audit_seq,
    };
    for s in shards.iter().skip(1) {
        let mut sc = s.client().await?;
        let tx = sc.transaction().await.map_err(|e| Error::pg(s, e))?;
        participants::record_in(&tx, &change(None))
            .await
            .map_err(|e| Error::pg(s, e))?;
        tx.commit().await.map_err(|e| Error::pg(s, e))?;
    }
    let details = json!({
        "status": c.status.as_str(),
        "effective_at": c.effective_at,
        "status_before": statuses.decide(&c.participant, c.effective_at.timestamp_micros()),
        "status_seq": seq,
        "shards": shards.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
        "stored_at_or_after_effective": stored_after,
    });
    let act = match c.status {
        Status::Active => action::REINSTATE,
        _ => action::WITHDRAW,
    };
    let rec = Record::new(act, details.clone())
        .reason(Some(&c.reason))
        .participants([c.participant.clone()]);
    let mut mc = map.client().await?;
    let tx = mc.transaction().await.map_err(|e| Error::pg(map, e))?;
    // The status lock before the trail's, as everywhere else (record_in takes it again).
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&participants::LOCK_KEY],
    )
    .await
    .map_err(|e| Error::pg(map, e))?;
    let entry = audit::append_in(&tx, map, &rec).await?;
    participants::record_in(&tx, &change(Some(entry.seq)))
        .await
        .map_err(|e| Error::pg(map, e))?;
    tx.commit().await.map_err(|e| Error::pg(map, e))?;
    if stored_after > 0 && c.status == Status::Withdrawn {
        tracing::warn!(
            participant = %c.participant, readings = stored_after,
            "readings at or after the effective time were stored before the withdrawal was \
             recorded; they stay until `trial participants erase`"
        );
    }
    let mut out = details;
    if let Some(o) = out.as_object_mut() {
        o.insert("participant".into(), json!(c.participant));
        o.insert("audit_seq".into(), json!(entry.seq));
    }
    Ok(out)
}

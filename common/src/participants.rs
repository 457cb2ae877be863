//! Participants' status: withdrawals, reinstatements and erasures, and the rule that decides
//! whether a reading is stored (`schemas/sql/0014_trial.sql`, table `participant_status`).
//!
//! Sources: FDA guidance "Data Retention When Subjects Withdraw from FDA-Regulated Clinical
//! Trials" (2008): data collected before withdrawal stay part of the study, nothing is
//! collected after it; GDPR Art. 17 for erasure.
//!
//! **The rule** ([`Statuses::decide`]), a pure function of the reading and the table:
//! - a participant with an `erased` change is [`Status::Erased`] for every reading (a resend
//!   of their old data must not bring them back);
//! - otherwise the change with the greatest (`effective_at`, `seq`) among those with
//!   `effective_at <= ts` (the reading's own time, the device's instant) gives the status; none:
//!   [`Status::Active`].
//!
//! **Every shard holds the whole table**, written by `trial participants …` under an exclusive
//! transaction-level advisory lock ([`LOCK_KEY`]) on each shard. A writer decides each row in
//! the transaction that stores it: it takes the same lock *shared* ([`lock_shared`], a
//! statement of its own, so that the next statement's snapshot is taken after the lock is
//! granted), reads the table's version ([`version`]) and, when the version is not the one it
//! filtered with, reloads ([`Statuses::load`]) and decides again before it writes. A change
//! therefore applies to every row committed after the command returns, on every shard, and a
//! replay after a crash decides by the same table as the transaction that commits.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Advisory-lock key guarding `participant_status` against rows being stored by a decision
/// made on an older version ("vswthdrw" as a big-endian integer).
pub const LOCK_KEY: i64 = 0x7673_7774_6864_7277;

/// A participant's status for one reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Stored.
    Active,
    /// Not stored: the reading is at or after a withdrawal's effective time (dead-letter
    /// reason `withdrawn`).
    Withdrawn,
    /// Not stored: the participant was erased (dead-letter reason `erased`).
    Erased,
}

impl Status {
    /// As stored in `participant_status.status` and used as a dead-letter reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Withdrawn => "withdrawn",
            Status::Erased => "erased",
        }
    }

    /// From `participant_status.status`; unknown text reads as withdrawn (the cautious side:
    /// not stored, kept in the dead-letter topic).
    pub fn parse(s: &str) -> Status {
        match s {
            "active" => Status::Active,
            "erased" => Status::Erased,
            _ => Status::Withdrawn,
        }
    }
}

/// One row of `participant_status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Order of changes, the same on every shard.
    pub seq: i64,
    /// The participant.
    pub participant_id: String,
    /// What it became.
    pub status: Status,
    /// From when (the readings' own time), UTC.
    pub effective_at: DateTime<Utc>,
    /// When it was recorded, UTC.
    pub recorded_at: DateTime<Utc>,
    /// Why.
    pub reason: String,
    /// The audit entry that recorded it (`audit_log.seq` on the map shard).
    pub audit_seq: Option<i64>,
}

/// Every change, by participant, ready to decide readings.
#[derive(Debug, Clone, Default)]
pub struct Statuses {
    version: i64,
    /// Per participant: (effective_at µs, seq, status), ascending.
    by_participant: HashMap<String, Vec<(i64, i64, Status)>>,
    erased: std::collections::HashSet<String>,
}

impl Statuses {
    /// From `changes` (any order); the version is their highest `seq` (0: none).
    pub fn from_changes(changes: &[Change]) -> Self {
        let mut s = Statuses::default();
        for c in changes {
            s.version = s.version.max(c.seq);
            if c.status == Status::Erased {
                s.erased.insert(c.participant_id.clone());
            }
            s.by_participant
                .entry(c.participant_id.clone())
                .or_default()
                .push((c.effective_at.timestamp_micros(), c.seq, c.status));
        }
        for v in s.by_participant.values_mut() {
            v.sort_unstable_by_key(|&(at, seq, _)| (at, seq));
        }
        s
    }

    /// Reads the whole table with `client` (a plain client or a transaction).
    ///
    /// # Errors
    /// The driver's error (the caller names the shard).
    pub async fn load(
        client: &impl tokio_postgres::GenericClient,
    ) -> std::result::Result<Self, tokio_postgres::Error> {
        Ok(Self::from_changes(&changes(client).await?))
    }

    /// The highest `seq` this was built from (0: no change).
    pub fn version(&self) -> i64 {
        self.version
    }

    /// Whether no participant has any change (every reading is stored).
    pub fn is_empty(&self) -> bool {
        self.by_participant.is_empty()
    }

    /// The status of `participant`'s reading taken at `ts_us` (µs since the epoch, UTC).
    pub fn decide(&self, participant: &str, ts_us: i64) -> Status {
        if self.erased.contains(participant) {
            return Status::Erased;
        }
        let Some(v) = self.by_participant.get(participant) else {
            return Status::Active;
        };
        let i = v.partition_point(|&(at, _, _)| at <= ts_us);
        if i == 0 {
            Status::Active
        } else {
            v[i - 1].2
        }
    }

    /// The participant's status now (for `query`'s participant table and `trial participants
    /// list`).
    pub fn current(&self, participant: &str, now_us: i64) -> Status {
        self.decide(participant, now_us)
    }
}

/// Every change, ordered by `seq`.
///
/// # Errors
/// The driver's error.
pub async fn changes(
    client: &impl tokio_postgres::GenericClient,
) -> std::result::Result<Vec<Change>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT seq, participant_id, status, effective_at, recorded_at, reason, audit_seq
               FROM participant_status ORDER BY seq",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Change {
            seq: r.get(0),
            participant_id: r.get(1),
            status: Status::parse(r.get(2)),
            effective_at: r.get(3),
            recorded_at: r.get(4),
            reason: r.get(5),
            audit_seq: r.get(6),
        })
        .collect())
}

/// A change to record in `participant_status` ([`record_in`]).
#[derive(Debug, Clone)]
pub struct NewChange<'a> {
    /// Its `seq`, the same on every shard ([`next_seq`]).
    pub seq: i64,
    /// The participant.
    pub participant: &'a str,
    /// What they become.
    pub status: Status,
    /// From when (readings' own time); `None`: the shard's `now()`.
    pub effective_at: Option<DateTime<Utc>>,
    /// Why.
    pub reason: &'a str,
    /// The audit entry that records it, where known.
    pub audit_seq: Option<i64>,
}

/// Inserts `c` in `tx` holding [`LOCK_KEY`] exclusively to the end of `tx`, so that no
/// writer's transaction that decided by the older table commits after `tx` does. A row with
/// that `seq` already there (a resumed command) is kept.
///
/// # Errors
/// The driver's error (SQLSTATE 42501 for a role without `INSERT`).
pub async fn record_in(
    tx: &tokio_postgres::Transaction<'_>,
    c: &NewChange<'_>,
) -> std::result::Result<(), tokio_postgres::Error> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await?;
    tx.execute(
        "INSERT INTO participant_status
             (seq, participant_id, status, effective_at, reason, audit_seq)
         VALUES ($1, $2, $3, coalesce($4, now()), $5, $6) ON CONFLICT (seq) DO NOTHING",
        &[
            &c.seq,
            &c.participant,
            &c.status.as_str(),
            &c.effective_at,
            &c.reason,
            &c.audit_seq,
        ],
    )
    .await?;
    Ok(())
}

/// The `seq` for a new change: one above the highest on any of `shards`.
///
/// # Errors
/// [`crate::Error::Postgres`]/[`crate::Error::Pool`] naming the shard.
pub async fn next_seq(shards: &[crate::db::Shard]) -> crate::Result<i64> {
    let mut seq = 0i64;
    for s in shards {
        let c = s.client().await?;
        seq = seq.max(version(&**c).await.map_err(|e| s.err(e))?);
    }
    Ok(seq + 1)
}

/// Takes [`LOCK_KEY`] shared to the end of the caller's transaction. Run it as a statement of
/// its own before [`version`].
///
/// # Errors
/// The driver's error.
pub async fn lock_shared(
    tx: &tokio_postgres::Transaction<'_>,
) -> std::result::Result<(), tokio_postgres::Error> {
    tx.execute("SELECT pg_advisory_xact_lock_shared($1)", &[&LOCK_KEY])
        .await
        .map(|_| ())
}

/// The table's version: its highest `seq` (0: empty).
///
/// # Errors
/// The driver's error.
pub async fn version(
    client: &impl tokio_postgres::GenericClient,
) -> std::result::Result<i64, tokio_postgres::Error> {
    Ok(client
        .query_one(
            "SELECT coalesce(max(seq), 0)::bigint FROM participant_status",
            &[],
        )
        .await?
        .get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).unwrap()
    }

    fn change(seq: i64, p: &str, status: Status, eff: i64) -> Change {
        Change {
            seq,
            participant_id: p.into(),
            status,
            effective_at: at(eff),
            recorded_at: at(eff),
            reason: "r".into(),
            audit_seq: None,
        }
    }

    #[test]
    fn a_withdrawal_applies_from_its_effective_time() {
        let s = Statuses::from_changes(&[change(1, "p", Status::Withdrawn, 100)]);
        assert_eq!(s.decide("p", 99_999_999), Status::Active);
        assert_eq!(s.decide("p", 100_000_000), Status::Withdrawn);
        assert_eq!(s.decide("q", 200_000_000), Status::Active);
        assert_eq!(s.version(), 1);
    }

    #[test]
    fn a_reinstatement_ends_the_withdrawal_from_its_own_time() {
        let s = Statuses::from_changes(&[
            change(2, "p", Status::Active, 200),
            change(1, "p", Status::Withdrawn, 100),
        ]);
        assert_eq!(s.decide("p", 150_000_000), Status::Withdrawn);
        assert_eq!(s.decide("p", 200_000_000), Status::Active);
        assert_eq!(s.decide("p", 50_000_000), Status::Active);
    }

    #[test]
    fn an_erased_participant_is_refused_at_any_time() {
        let s = Statuses::from_changes(&[change(1, "p", Status::Erased, 500)]);
        assert_eq!(s.decide("p", 0), Status::Erased);
    }
}

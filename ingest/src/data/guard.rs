//! The check that makes every committed batch decided by the `participant_status` table of
//! the transaction that commits it (`common/src/participants.rs`, the protocol).
//!
//! In the writer's transaction, before anything is written: take
//! `pg_advisory_xact_lock_shared(LOCK_KEY)` as a statement of its own (a `trial participants`
//! command holds it exclusively while it inserts its change, so the next statement's snapshot
//! sees every change committed before the lock was granted, and none can commit until this
//! transaction ends), then read the table's version. The same version as the batch's
//! [`Label`]: the batch commits as decided. Another one: the table is read in the same
//! transaction and compared with the label's ([`Consent::changed_between`]); when no
//! participant of the batch has a change that differs, every decision of the batch is the
//! same under both and it commits. Otherwise the batch is **stale**: it is rolled back, the
//! writer drops it and every later batch of the same generation, and reports [`Stale`] to the
//! consume loop, which rewinds (`crate::control::statuses`): it decides by the table the
//! writer read, and consumes again from where the shards stand.
//!
//! A batch that decides nothing (progress only) takes no lock.

use std::sync::Arc;
use vitalsink_common::participants;

use crate::data::consent::{Consent, Label};

/// What the check found.
#[derive(Debug)]
pub enum Check {
    /// Every decision of the batch holds under the table: commit.
    Current,
    /// Some participant of the batch has a change the batch was not decided with: roll back.
    /// Carries the table as read in the transaction.
    Stale(Arc<Consent>),
}

/// A writer rolled back a stale batch of `generation`: the consume loop rewinds, deciding
/// shard `shard`'s readings by `consent` from then on.
#[derive(Debug, Clone)]
pub struct Stale {
    /// The shard's name.
    pub shard: String,
    /// The pipeline generation of the batch.
    pub generation: u64,
    /// The shard's table, read in the transaction that refused the batch.
    pub consent: Arc<Consent>,
}

/// Runs the check in `tx` for a batch labelled `label`. `seen` caches the last table read by
/// this writer (reloaded only when the version moved).
///
/// # Errors
/// The driver's error; the caller's retry rules apply (the transaction is rolled back).
pub async fn check(
    tx: &tokio_postgres::Transaction<'_>,
    label: &Label,
    seen: &mut Option<Arc<Consent>>,
) -> Result<Check, tokio_postgres::Error> {
    let Some(decided) = label.consent.as_ref().filter(|_| !label.is_empty()) else {
        return Ok(Check::Current);
    };
    participants::lock_shared(tx).await?;
    let version = participants::version(tx).await?;
    if version == decided.version() {
        return Ok(Check::Current);
    }
    let table = match seen {
        Some(c) if c.version() == version => Arc::clone(c),
        _ => {
            let c = Arc::new(Consent::load(tx).await?);
            *seen = Some(Arc::clone(&c));
            c
        }
    };
    let changed = decided.changed_between(&table);
    let stale = label
        .participants
        .iter()
        .any(|p| changed.contains(p.as_ref()));
    tracing::debug!(
        decided = decided.version(),
        table = version,
        stale,
        "batch decided by another participant_status version"
    );
    Ok(if stale {
        Check::Stale(table)
    } else {
        Check::Current
    })
}

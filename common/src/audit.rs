//! The audit trail: one entry per operator action that creates, changes, moves or deletes
//! records, appended to `audit_log` on the map shard (`schemas/sql/0014_trial.sql`).
//!
//! Sources: 21 CFR 11.10(e) ("secure, computer-generated, time-stamped audit trails"); FDA
//! Q&A guidance on electronic systems in clinical investigations (2024) Q12 (who, user and
//! role, when, old and new value, why; "protected from modification"); EMA/INS/GCP/112288/2023
//! §6.2.1.
//!
//! Each entry records the UTC time (the map shard's transaction time, µs), the operating-system
//! user, the database role (`session_user`), the host, the action, the command line with its
//! secrets masked ([`command_line`]), the reason, the participants it touched and a JSON
//! `details` object (what it touched, with counts and checksums before and after; never a
//! participant's values).
//!
//! **Tamper evidence.** `hash` = SHA-256 (FIPS 180-4) over the entry's canonical encoding
//! ([`Entry::canonical`]), which ends with `prev_hash`, the previous entry's `hash` (64 `0`s for
//! the first). Appends are serialised by a transaction-level advisory lock ([`LOCK_KEY`]), so
//! `seq` has no gaps. [`verify`] recomputes the chain: an entry changed, removed or reordered
//! breaks it at that entry. The table's triggers refuse UPDATE, DELETE and TRUNCATE for every
//! role; an owner who disables them is caught by the chain; one who recomputes the whole chain
//! after a change is caught by the copies of the trail in the archive (`trial audit verify`
//! compares them).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::db::Shard;
use crate::error::{Error, Result};

/// Advisory-lock key serialising appends to the trail ("vsaudit!" as a big-endian integer).
pub const LOCK_KEY: i64 = 0x7673_6175_6469_7421;

/// `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Actions, as stored in `audit_log.action`.
pub mod action {
    /// Schema migrations applied to a shard.
    pub const MIGRATE: &str = "schema.migrate";
    /// A chunk archived and dropped from its shard by `archiver run`.
    pub const ARCHIVE_DROP: &str = "archive.drop";
    /// An archived chunk restored into a shard (`archiver restore`).
    pub const ARCHIVE_RESTORE: &str = "archive.restore";
    /// Archive objects rewritten into the current layout (`archiver migrate-archive`).
    pub const ARCHIVE_MIGRATE: &str = "archive.migrate";
    /// A shard-set change that moved participants' rows (`reshard add-shard|remove-shard`).
    pub const RESHARD_MOVE: &str = "reshard.move";
    /// A participant withdrawn (`trial participants withdraw`).
    pub const WITHDRAW: &str = "participant.withdraw";
    /// A withdrawal ended (`trial participants reinstate`).
    pub const REINSTATE: &str = "participant.reinstate";
    /// A participant's rows removed from every shard and the archive (`trial participants erase`).
    pub const ERASE: &str = "participant.erase";
    /// A dataset lock created (`trial lock create`).
    pub const LOCK_CREATE: &str = "lock.create";
    /// A new revision of a lock, after an erasure (`trial participants erase`).
    pub const LOCK_REVISE: &str = "lock.revise";
}

/// What an action reports about itself; the actor and time are added by [`append`].
#[derive(Debug, Clone, Default)]
pub struct Record {
    /// One of [`action`].
    pub action: String,
    /// Why (`--reason`); required for destructive commands by their own flags.
    pub reason: Option<String>,
    /// Participants the action touched (sorted and deduplicated when appended).
    pub participants: Vec<String>,
    /// What it touched, with counts and checksums before and after (a JSON object).
    pub details: serde_json::Value,
}

impl Record {
    /// A record of `action` with `details`.
    pub fn new(action: &str, details: serde_json::Value) -> Self {
        Self {
            action: action.to_string(),
            details,
            ..Self::default()
        }
    }

    /// With a reason.
    #[must_use]
    pub fn reason(mut self, reason: Option<&str>) -> Self {
        self.reason = reason.map(str::to_string);
        self
    }

    /// With participants.
    #[must_use]
    pub fn participants(mut self, p: impl IntoIterator<Item = String>) -> Self {
        self.participants = p.into_iter().collect();
        self
    }
}

/// One entry of the trail, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the trail, from 1, without gaps.
    pub seq: i64,
    /// When, UTC, µs precision (the map shard's transaction time).
    pub at: DateTime<Utc>,
    /// Operating-system user that ran the command.
    pub os_user: String,
    /// Database login role (`session_user`).
    pub db_role: String,
    /// Host the command ran on.
    pub host: String,
    /// One of [`action`].
    pub action: String,
    /// The command line, secrets masked.
    pub command: String,
    /// Why.
    pub reason: Option<String>,
    /// Participants touched, sorted.
    pub participants: Vec<String>,
    /// JSON object text, exactly as hashed.
    pub details: String,
    /// The previous entry's hash ([`GENESIS`] for the first).
    pub prev_hash: String,
    /// SHA-256 of [`Entry::canonical`], 64 lower-case hex digits.
    pub hash: String,
}

impl Entry {
    /// The bytes hashed: each field in declaration order (`seq` … `details`, then
    /// `prev_hash`), a text field as u32 LE byte length + UTF-8, `seq` and `at` (µs since
    /// 1970-01-01T00:00:00Z) as i64 LE, `reason` as u8 0 (NULL) or u8 1 + text, and
    /// `participants` as u32 LE count + each text.
    pub fn canonical(&self) -> Vec<u8> {
        fn text(out: &mut Vec<u8>, s: &str) {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        let mut out = Vec::with_capacity(256 + self.details.len() + self.command.len());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.at.timestamp_micros().to_le_bytes());
        for s in [
            &self.os_user,
            &self.db_role,
            &self.host,
            &self.action,
            &self.command,
        ] {
            text(&mut out, s);
        }
        match &self.reason {
            None => out.push(0),
            Some(r) => {
                out.push(1);
                text(&mut out, r);
            }
        }
        out.extend_from_slice(&(self.participants.len() as u32).to_le_bytes());
        for p in &self.participants {
            text(&mut out, p);
        }
        text(&mut out, &self.details);
        text(&mut out, &self.prev_hash);
        out
    }

    /// SHA-256 of [`Entry::canonical`], lower-case hex.
    pub fn compute_hash(&self) -> String {
        let d = Sha256::digest(self.canonical());
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// From a row with the table's columns, by name.
    ///
    /// # Panics
    /// When a column is missing or of another type (a query of this crate's shape only).
    pub fn from_row(r: &tokio_postgres::Row) -> Self {
        Self {
            seq: r.get("seq"),
            at: r.get("at"),
            os_user: r.get("os_user"),
            db_role: r.get("db_role"),
            host: r.get("host"),
            action: r.get("action"),
            command: r.get("command"),
            reason: r.get("reason"),
            participants: r.get("participants"),
            details: r.get("details"),
            prev_hash: r.get("prev_hash"),
            hash: r.get("hash"),
        }
    }
}

/// The operating-system user and host of this process, as recorded (`unknown` when the OS
/// does not say).
pub fn actor() -> (String, String) {
    let user = whoami::username()
        .ok()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".into());
    let host = whoami::hostname().unwrap_or_else(|_| "unknown".into());
    (user, host)
}

/// This process's command line with secrets masked: the value after (or in `=`) any flag
/// whose name [`crate::secret::is_secret_key`] calls secret, and any password inside a
/// connection string ([`crate::secret::redact_url`]).
pub fn command_line() -> String {
    mask_args(std::env::args())
}

/// [`command_line`] over given arguments.
pub fn mask_args(args: impl IntoIterator<Item = String>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut mask_next = false;
    for a in args {
        if mask_next {
            out.push(crate::secret::MASK.to_string());
            mask_next = false;
            continue;
        }
        if let Some(flag) = a.strip_prefix("--") {
            if let Some((k, _)) = flag.split_once('=') {
                if crate::secret::is_secret_key(k) {
                    out.push(format!("--{k}={}", crate::secret::MASK));
                    continue;
                }
            } else if crate::secret::is_secret_key(flag) {
                mask_next = true;
            }
        }
        out.push(crate::secret::redact_url(&a));
    }
    out.join(" ")
}

/// Appends `rec` to the trail on `map_shard` in its own transaction; returns the entry.
///
/// # Errors
/// [`Error::Postgres`]/[`Error::Pool`] when the map shard refuses (e.g. a role without
/// `INSERT` on `audit_log`: SQLSTATE 42501) or cannot be reached.
pub async fn append(map_shard: &Shard, rec: &Record) -> Result<Entry> {
    let mut c = map_shard.client().await?;
    let tx = c.transaction().await.map_err(|e| map_shard.err(e))?;
    let e = append_in(&tx, map_shard, rec).await?;
    tx.commit().await.map_err(|e| map_shard.err(e))?;
    Ok(e)
}

/// Appends `rec` inside `tx`, a transaction on the map shard, so that the entry commits with
/// the change it records. Holds [`LOCK_KEY`] to the end of `tx`.
///
/// # Errors
/// As [`append`].
pub async fn append_in(
    tx: &tokio_postgres::Transaction<'_>,
    map_shard: &Shard,
    rec: &Record,
) -> Result<Entry> {
    let err = |e| map_shard.err(e);
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(err)?;
    let head = tx
        .query_opt(
            "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
            &[],
        )
        .await
        .map_err(err)?;
    let (seq, prev_hash) = head.map_or((1, GENESIS.to_string()), |r| {
        (r.get::<_, i64>(0) + 1, r.get::<_, String>(1))
    });
    let now = tx
        .query_one(
            "SELECT date_trunc('microseconds', now()), session_user::text",
            &[],
        )
        .await
        .map_err(err)?;
    let (os_user, host) = actor();
    let mut participants = rec.participants.clone();
    participants.sort();
    participants.dedup();
    let mut e = Entry {
        seq,
        at: now.get(0),
        os_user,
        db_role: now.get(1),
        host,
        action: rec.action.clone(),
        command: command_line(),
        reason: rec.reason.clone(),
        participants,
        details: serde_json::to_string(&rec.details)
            .map_err(|e| Error::Audit(format!("details of {}: {e}", rec.action)))?,
        prev_hash,
        hash: String::new(),
    };
    e.hash = e.compute_hash();
    tx.execute(
        "INSERT INTO audit_log (seq, at, os_user, db_role, host, action, command, reason,
                                participants, details, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        &[
            &e.seq,
            &e.at,
            &e.os_user,
            &e.db_role,
            &e.host,
            &e.action,
            &e.command,
            &e.reason,
            &e.participants,
            &e.details,
            &e.prev_hash,
            &e.hash,
        ],
    )
    .await
    .map_err(err)?;
    tracing::info!(seq = e.seq, action = %e.action, hash = %e.hash, "audit entry appended");
    Ok(e)
}

/// Entries with `seq` in `from..=to` (`to`: none for the end), in `seq` order.
///
/// # Errors
/// [`Error::Postgres`]/[`Error::Pool`].
pub async fn read(map_shard: &Shard, from: i64, to: Option<i64>) -> Result<Vec<Entry>> {
    let c = map_shard.client().await?;
    let rows = c
        .query(
            "SELECT seq, at, os_user, db_role, host, action, command, reason, participants,
                    details, prev_hash, hash
               FROM audit_log WHERE seq >= $1 AND ($2::bigint IS NULL OR seq <= $2)
              ORDER BY seq",
            &[&from, &to],
        )
        .await
        .map_err(|e| map_shard.err(e))?;
    Ok(rows.iter().map(Entry::from_row).collect())
}

/// A break in the chain, as [`verify`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Break {
    /// `seq` of the entry where the chain breaks.
    pub seq: i64,
    /// What is wrong there.
    pub problem: String,
}

/// Checks `entries` (in the order read, `seq` ascending, starting at `first_seq` whose
/// `prev_hash` must be `first_prev`) as a chain: consecutive `seq`, each `prev_hash` equal to
/// the hash before it, each `hash` equal to its recomputation. Returns every break (empty:
/// the chain holds).
pub fn verify(entries: &[Entry], first_seq: i64, first_prev: &str) -> Vec<Break> {
    let mut breaks = Vec::new();
    let mut expect_seq = first_seq;
    let mut prev = first_prev.to_string();
    for e in entries {
        if e.seq != expect_seq {
            breaks.push(Break {
                seq: e.seq,
                problem: format!(
                    "expected entry {expect_seq} here: an entry is missing or out of order"
                ),
            });
        }
        if e.prev_hash != prev {
            breaks.push(Break {
                seq: e.seq,
                problem: "prev_hash is not the hash of the entry before it (an entry before \
                          it was removed, reordered or changed)"
                    .into(),
            });
        }
        let h = e.compute_hash();
        if h != e.hash {
            breaks.push(Break {
                seq: e.seq,
                problem: format!("content does not match its hash (recomputed {h})"),
            });
        }
        expect_seq = e.seq + 1;
        prev = e.hash.clone();
    }
    breaks
}

#[cfg(test)]
mod tests;

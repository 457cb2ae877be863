//! `trial audit verify`: re-checks the audit trail (FDA Q&A guidance 2024, Q12: "protected
//! from modification"; 21 CFR 11.10(a): "the ability to discern invalid or altered records").
//!
//! Two checks, both always run:
//! 1. the chain in `audit_log` on the map shard ([`vitalsink_common::audit::verify`]): `seq`
//!    without gaps from 1, each `prev_hash` the hash of the entry before, each `hash` its
//!    recomputation. Read in pages of [`PAGE`] entries, so memory does not grow with the trail.
//! 2. the copies in the archive ([`vitalsink_archiver::trail`]): every copied entry must be in
//!    the table, byte for byte. This finds what the chain alone cannot: entries removed from
//!    the end, or a chain the table's owner recomputed after changing an entry.

use serde::Serialize;
use vitalsink_common::audit::{self, Break, GENESIS};
use vitalsink_common::db::Shard;

use crate::error::{Error, Result};

/// Entries read per round.
pub const PAGE: i64 = 10_000;

/// What `audit verify` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Entries in the table.
    pub entries: u64,
    /// `seq` of the last entry (0: none).
    pub last_seq: i64,
    /// Hash of the last entry ([`GENESIS`] when empty).
    pub head: String,
    /// Entries found in the archive's copies.
    pub copied: u64,
    /// Every break found; empty when the trail holds.
    pub breaks: Vec<Break>,
}

/// Verifies the trail on `map_shard` and, when `archive` is given, against its copies.
///
/// # Errors
/// [`Error::Common`]/[`Error::Archive`] when the table or the archive cannot be read (not a
/// verification failure: the report's `breaks` carry those).
pub async fn verify(
    map_shard: &Shard,
    archive: Option<&vitalsink_archiver::storage::store::Archive>,
) -> Result<Report> {
    let mut r = Report {
        entries: 0,
        last_seq: 0,
        head: GENESIS.to_string(),
        copied: 0,
        breaks: Vec::new(),
    };
    let mut from = 1;
    let mut prev = GENESIS.to_string();
    let mut expect = 1;
    loop {
        let page = read_page(map_shard, from).await?;
        let Some(last) = page.last() else { break };
        r.breaks.extend(audit::verify(&page, expect, &prev));
        r.entries += page.len() as u64;
        r.last_seq = last.seq;
        r.head = last.hash.clone();
        prev = last.hash.clone();
        expect = last.seq + 1;
        from = last.seq + 1;
        if (page.len() as i64) < PAGE {
            break;
        }
    }
    if let Some(archive) = archive {
        for (first, last, path) in vitalsink_archiver::trail::copies(archive).await? {
            let copy = vitalsink_archiver::trail::read(archive, &path).await?;
            r.copied += copy.len() as u64;
            let table = audit::read(map_shard, first, Some(last)).await?;
            let by_seq: std::collections::HashMap<i64, &audit::Entry> =
                table.iter().map(|e| (e.seq, e)).collect();
            for c in &copy {
                match by_seq.get(&c.seq) {
                    None => r.breaks.push(Break {
                        seq: c.seq,
                        problem: format!(
                            "entry is in the archive's copy {path} but not in audit_log (removed)"
                        ),
                    }),
                    Some(t) if *t != c => r.breaks.push(Break {
                        seq: c.seq,
                        problem: format!(
                            "entry differs from the archive's copy {path} (changed after it was \
                             copied)"
                        ),
                    }),
                    Some(_) => {}
                }
            }
        }
    }
    r.breaks.sort_by_key(|b| b.seq);
    r.breaks.dedup();
    Ok(r)
}

async fn read_page(map_shard: &Shard, from: i64) -> Result<Vec<audit::Entry>> {
    // Read by position, not by seq range: a removed or renumbered entry must still show up.
    let c = map_shard.client().await?;
    let rows = c
        .query(
            "SELECT seq, at, os_user, db_role, host, action, command, reason, participants,
                    details, prev_hash, hash
               FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT $2",
            &[&from, &PAGE],
        )
        .await
        .map_err(|e| Error::pg(map_shard, e))?;
    Ok(rows.iter().map(audit::Entry::from_row).collect())
}

//! `trial audit list`: the trail's entries, filtered by time, action, participant and user,
//! as JSON lines or CSV (FDA Q&A guidance 2024, Q12: the audit trail is searchable and
//! sortable).

use chrono::{DateTime, Utc};
use tokio_postgres::types::ToSql;
use vitalsink_common::audit::Entry;
use vitalsink_common::db::Shard;

use crate::error::{Error, Result};
use crate::output::{self, Format};

/// The filters; each absent one matches everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Entries at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Entries before this instant.
    pub until: Option<DateTime<Utc>>,
    /// Exact action, or a prefix ending in `.` (`participant.` for every participant action).
    pub action: Option<String>,
    /// Entries that touched this participant.
    pub participant: Option<String>,
    /// Entries by this operating-system user or database role.
    pub user: Option<String>,
}

/// The entries of the trail on `map_shard` that match `f`, in `seq` order.
///
/// # Errors
/// [`Error::Common`] when the map shard cannot be read (a role without `SELECT` on
/// `audit_log`: SQLSTATE 42501).
pub async fn entries(map_shard: &Shard, f: &Filter) -> Result<Vec<Entry>> {
    let c = map_shard.client().await?;
    let action_prefix = f
        .action
        .as_deref()
        .filter(|a| a.ends_with('.'))
        .map(|a| format!("{}%", a.replace('%', "\\%").replace('_', "\\_")));
    let action_exact = f.action.as_deref().filter(|a| !a.ends_with('.'));
    let params: [&(dyn ToSql + Sync); 6] = [
        &f.since,
        &f.until,
        &action_exact,
        &action_prefix,
        &f.participant,
        &f.user,
    ];
    let rows = c
        .query(
            "SELECT seq, at, os_user, db_role, host, action, command, reason, participants,
                    details, prev_hash, hash
               FROM audit_log
              WHERE ($1::timestamptz IS NULL OR at >= $1)
                AND ($2::timestamptz IS NULL OR at < $2)
                AND ($3::text IS NULL OR action = $3)
                AND ($4::text IS NULL OR action LIKE $4)
                AND ($5::text IS NULL OR participants @> ARRAY[$5::text])
                AND ($6::text IS NULL OR os_user = $6 OR db_role = $6)
              ORDER BY seq",
            &params,
        )
        .await
        .map_err(|e| Error::pg(map_shard, e))?;
    Ok(rows.iter().map(Entry::from_row).collect())
}

/// Prints the matching entries.
///
/// # Errors
/// As [`entries`], and [`Error::Output`].
pub async fn run(map_shard: &Shard, f: &Filter, format: Format) -> Result<()> {
    let rows = entries(map_shard, f).await?;
    tracing::debug!(entries = rows.len(), "audit list");
    output::print(
        format,
        &rows,
        &[
            "seq",
            "at",
            "os_user",
            "db_role",
            "host",
            "action",
            "command",
            "reason",
            "participants",
            "details",
            "prev_hash",
            "hash",
        ],
        |e| {
            vec![
                e.seq.to_string(),
                e.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                e.os_user.clone(),
                e.db_role.clone(),
                e.host.clone(),
                e.action.clone(),
                e.command.clone(),
                e.reason.clone().unwrap_or_default(),
                e.participants.join(";"),
                e.details.clone(),
                e.prev_hash.clone(),
                e.hash.clone(),
            ]
        },
        entry_json,
    )
}

/// An entry as a JSON object, its `details` as an object rather than text.
pub fn entry_json(e: &Entry) -> serde_json::Value {
    let mut v = serde_json::to_value(e).unwrap_or_default();
    if let (Some(o), Ok(d)) = (
        v.as_object_mut(),
        serde_json::from_str::<serde_json::Value>(&e.details),
    ) {
        o.insert("details".into(), d);
    }
    v
}

//! Participants' status: `participant_status_changes` (the rows of `participant_status` on
//! the map shard, every shard holds the same) and `participants` (one row per participant
//! with a change: the status now by `vitalsink_common::participants`' rule).

use arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::TableType;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use std::collections::BTreeMap;
use std::sync::Arc;
use vitalsink_common::participants::{self, Change, Status, Statuses};

use super::{ts_field, MapShard, SqlTable};
use crate::error::Error;

/// `participant_status_changes`: `seq` Int64, `participant_id` Utf8, `status` Utf8
/// (`active` | `withdrawn` | `erased`), `effective_at` and `recorded_at` Timestamp(µs, UTC),
/// `reason` Utf8, `audit_seq` Int64 (nullable: the `audit_log` entry that recorded it).
pub fn changes_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("seq", DataType::Int64, false),
        Field::new("participant_id", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        ts_field("effective_at", false),
        ts_field("recorded_at", false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("audit_seq", DataType::Int64, true),
    ]))
}

/// The `participant_status_changes` table of `map`, in `seq` order.
pub fn changes_table(map: MapShard) -> SqlTable {
    SqlTable::new(
        "participant_status",
        changes_schema(),
        &["seq", "effective_at", "recorded_at", "audit_seq"],
        "seq",
        map,
    )
}

/// `participants`: `participant_id` Utf8, `status_now` Utf8 (`active` | `withdrawn` |
/// `erased`), `withdrawn_from` Timestamp(µs, UTC) (nullable), `changes` Int64.
pub fn participants_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("participant_id", DataType::Utf8, false),
        Field::new("status_now", DataType::Utf8, false),
        ts_field("withdrawn_from", true),
        Field::new("changes", DataType::Int64, false),
    ]))
}

/// One row of `participants`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The participant.
    pub participant_id: String,
    /// The status of a reading taken at `now` ([`Statuses::current`]).
    pub status_now: Status,
    /// With `status_now` withdrawn: the effective time of the first of the uninterrupted run
    /// of withdrawals (by effective time, then `seq`) that ends with the change in force at
    /// `now`; a second withdrawal without a reinstatement between does not move it. Else
    /// `None`.
    pub withdrawn_from: Option<DateTime<Utc>>,
    /// Changes recorded for the participant.
    pub changes: i64,
}

/// One [`Summary`] per participant of `changes`, by participant id, at `now`.
pub fn summarise(changes: &[Change], now: DateTime<Utc>) -> Vec<Summary> {
    let statuses = Statuses::from_changes(changes);
    let now_us = now.timestamp_micros();
    let mut by: BTreeMap<&str, Vec<&Change>> = BTreeMap::new();
    for c in changes {
        by.entry(c.participant_id.as_str()).or_default().push(c);
    }
    by.into_iter()
        .map(|(p, mut v)| {
            v.sort_unstable_by_key(|c| (c.effective_at, c.seq));
            let status_now = statuses.current(p, now_us);
            let withdrawn_from = (status_now == Status::Withdrawn)
                .then(|| {
                    let in_force =
                        v.partition_point(|c| c.effective_at.timestamp_micros() <= now_us);
                    v[..in_force]
                        .iter()
                        .rev()
                        .take_while(|c| c.status == Status::Withdrawn)
                        .last()
                        .map(|c| c.effective_at)
                })
                .flatten();
            Summary {
                participant_id: p.to_string(),
                status_now,
                withdrawn_from,
                changes: v.len() as i64,
            }
        })
        .collect()
}

/// `rows` as one batch of [`participants_schema`].
///
/// # Errors
/// Never in practice (the arrays match the schema).
pub fn batch(rows: &[Summary]) -> DfResult<RecordBatch> {
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.participant_id.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.status_now.as_str()),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter(
                rows.iter()
                    .map(|r| r.withdrawn_from.map(|t| t.timestamp_micros())),
            )
            .with_timezone("UTC"),
        ),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.changes))),
    ];
    Ok(RecordBatch::try_new(participants_schema(), cols)?)
}

/// The `participants` table: each scan reads `participant_status` from the map shard
/// (`vitalsink_common::participants::changes`) and decides every participant's status at the
/// scan's time.
#[derive(Debug)]
pub struct Participants {
    map: MapShard,
    schema: SchemaRef,
}

impl Participants {
    /// The table of `map`.
    pub fn new(map: MapShard) -> Self {
        Self {
            map,
            schema: participants_schema(),
        }
    }
}

#[async_trait]
impl TableProvider for Participants {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let (client, shard) = self.map.session().await?;
        let changes = participants::changes(&client)
            .await
            .map_err(|e| Error::Shard {
                shard,
                message: vitalsink_common::error::describe_postgres(&e),
            })?;
        let rows = summarise(&changes, Utc::now());
        let b = batch(&rows)?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![b]],
            self.schema.clone(),
            projection.cloned(),
        )?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
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
            audit_seq: Some(seq),
        }
    }

    #[test]
    fn status_now_and_the_withdrawal_in_force() {
        use Status::*;
        let changes = [
            // w: withdrawn at 100, again at 150 (a correction), in force from 100.
            change(1, "w", Withdrawn, 100),
            change(4, "w", Withdrawn, 150),
            // r: withdrawn, reinstated, withdrawn again from 300.
            change(2, "r", Withdrawn, 100),
            change(3, "r", Active, 200),
            change(5, "r", Withdrawn, 300),
            // f: withdrawn from a time after now: active now.
            change(6, "f", Withdrawn, 10_000),
            // e: erased.
            change(7, "e", Withdrawn, 100),
            change(8, "e", Erased, 400),
            // a: withdrawn then reinstated.
            change(9, "a", Withdrawn, 100),
            change(10, "a", Active, 120),
        ];
        let got = summarise(&changes, at(1_000));
        let want = [
            ("a", Active, None, 2),
            ("e", Erased, None, 2),
            ("f", Active, None, 1),
            ("r", Withdrawn, Some(at(300)), 3),
            ("w", Withdrawn, Some(at(100)), 2),
        ];
        assert_eq!(got.len(), want.len());
        for (g, (p, s, from, n)) in got.iter().zip(want) {
            assert_eq!(
                (
                    g.participant_id.as_str(),
                    g.status_now,
                    g.withdrawn_from,
                    g.changes
                ),
                (p, s, from, n)
            );
        }
        let b = batch(&got).unwrap();
        assert_eq!(b.num_rows(), 5);
        assert_eq!(b.column(2).null_count(), 3);
    }
}

//! What a move is run with ([`Options`], from the command line) and what a run reports
//! ([`Report`], printed as JSON and kept in the move's audit entry).

use serde::Serialize;

/// How a move runs.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Run while ingest runs (cut-over records); `false` for `--offline`. A resumed move
    /// keeps the mode it started in.
    pub online: bool,
    /// Online: how long to wait for the cut-over before stopping (a re-run waits again).
    pub cutover_timeout: std::time::Duration,
    /// Copy throttle, bytes per second of COPY stream; 0 for none.
    pub bytes_per_second: u32,
    /// Rows per copy or delete batch (one transaction each); at least one participant.
    pub batch_rows: i64,
}

/// What a run of the command did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The move's id.
    pub move_id: i64,
    /// Epoch it started from.
    pub from_epoch: i32,
    /// Epoch it ended in.
    pub to_epoch: i32,
    /// Participants that moved.
    pub participants: usize,
    /// Their rows.
    pub rows: i64,
    /// Participants copied by this run (the others were copied by an earlier, killed run).
    pub copied_now: usize,
    /// Participants deleted from their old shard by this run.
    pub deleted_now: usize,
}

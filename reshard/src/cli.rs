//! Command line of the `reshard` binary.

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use vitalsink_common::cli::{self as common_cli, CommonArgs};
use vitalsink_common::db::Shard;
use vitalsink_common::observe;
use vitalsink_common::Config;

use crate::error::{Error, Result};
use crate::plan::{plan, Change, MovePlan};

/// Changes vitalsink's shard set: one shard appended, or the last one removed.
#[derive(Debug, Parser)]
#[command(name = "reshard", version, about)]
pub struct Cli {
    /// Flags shared with the other binaries.
    #[command(flatten)]
    pub common: CommonArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the effective configuration as JSON (secrets masked) and exit.
    CheckConfig,
    /// Show the shard map's current epoch (JSON).
    Map,
    /// Show every move and its phase (JSON lines).
    Status,
    /// Append a shard and move its participants to it, while ingest runs (or with the workers
    /// stopped: --offline); running it again resumes a killed run.
    AddShard {
        /// Name of the new shard (`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`).
        #[arg(long, env = "RESHARD_NAME")]
        name: String,
        /// Its libpq connection string.
        #[arg(long, env = "RESHARD_URL")]
        url: String,
        /// Why (required: the move copies and deletes participants' rows), for the move's
        /// audit entry.
        #[arg(long)]
        reason: String,
        /// How the move runs.
        #[command(flatten)]
        opts: MoveArgs,
    },
    /// Remove the last shard, moving its participants to the others, while ingest runs (or
    /// with the workers stopped: --offline); running it again resumes a killed run.
    RemoveShard {
        /// Name of the shard; must be the last of the current epoch.
        #[arg(long, env = "RESHARD_NAME")]
        name: String,
        /// Why (required: the move copies and deletes participants' rows), for the move's
        /// audit entry.
        #[arg(long)]
        reason: String,
        /// How the move runs.
        #[command(flatten)]
        opts: MoveArgs,
    },
    /// Dry run: which participants a change would move, from where to where, and how many
    /// rows; refuses a change routing cannot honour. Changes nothing.
    Plan {
        /// The change.
        #[command(subcommand)]
        change: PlanChange,
        /// Print the whole plan as JSON instead of a summary.
        #[arg(long, global = true)]
        json: bool,
    },
}

/// Flags of `add-shard` and `remove-shard`.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct MoveArgs {
    /// Copy throttle, bytes per second of COPY stream (0: none).
    #[arg(long, env = "RESHARD_BYTES_PER_SECOND", default_value_t = 64 << 20)]
    pub bytes_per_second: u32,
    /// Rows per copy or delete batch, one transaction each (at least one participant).
    #[arg(long, env = "RESHARD_BATCH_ROWS", default_value_t = 50_000)]
    pub batch_rows: i64,
    /// Move with the ingest workers stopped (they refuse to start until it has finished)
    /// instead of while they run. A resumed move keeps the mode it started in.
    #[arg(long, env = "RESHARD_OFFLINE")]
    pub offline: bool,
    /// Online: seconds to wait for every partition to pass its cut-over before stopping
    /// (running the command again waits again).
    #[arg(long, env = "RESHARD_CUTOVER_TIMEOUT", default_value_t = 600)]
    pub cutover_timeout: u64,
}

impl From<MoveArgs> for crate::moves::Options {
    fn from(a: MoveArgs) -> Self {
        Self {
            online: !a.offline,
            cutover_timeout: std::time::Duration::from_secs(a.cutover_timeout),
            bytes_per_second: a.bytes_per_second,
            batch_rows: a.batch_rows,
        }
    }
}

/// A change of the shard set.
#[derive(Debug, Subcommand)]
pub enum PlanChange {
    /// Append a shard to the routing order.
    AddShard {
        /// Name of the new shard (`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`).
        #[arg(long, env = "RESHARD_NAME")]
        name: String,
        /// Its libpq connection string.
        #[arg(long, env = "RESHARD_URL")]
        url: String,
    },
    /// Remove a shard; only the last of the routing order can be.
    RemoveShard {
        /// Name of the shard.
        #[arg(long, env = "RESHARD_NAME")]
        name: String,
    },
}

/// Runs the command; returns the exit code (0 success, 1 failure or refusal, 2 bad
/// configuration).
pub async fn main(cli: Cli) -> ExitCode {
    let cfg = match common_cli::start("reshard", &cli.common) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(e) = bulk_lock_sessions(&cli.command, &cfg) {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("reshard: {e}");
        }
        return ExitCode::from(2);
    }
    common_cli::exit_code("reshard", run(cli.command, cfg).await)
}

/// A move holds the bulk lock on every shard (and the one added) for its whole length, in a
/// session of its own: under `database.pooling = "transaction"` each needs its
/// `database.direct_urls` entry (README, "PgBouncer"). Checked at start-up (exit code 2).
fn bulk_lock_sessions(command: &Command, cfg: &Config) -> vitalsink_common::Result<()> {
    let added = match command {
        Command::AddShard { name, .. } => Some(name.as_str()),
        Command::RemoveShard { .. } => None,
        _ => return Ok(()),
    };
    cfg.database.require_sessions(
        cfg.shards.iter().map(|s| s.name.as_str()).chain(added),
        vitalsink_common::config::RESHARD_BULK_LOCK,
    )
}

#[allow(clippy::print_stdout)]
async fn run(command: Command, cfg: Config) -> Result<()> {
    let shards = Shard::all(&cfg.shards, &cfg.database)?;
    match command {
        Command::CheckConfig => println!("{}", common_cli::config_json(&cfg)),
        Command::Map => {
            let map_shard = shards
                .first()
                .ok_or_else(|| vitalsink_common::Error::ShardMap("no shards configured".into()))?;
            let map = vitalsink_common::shardmap::current(map_shard).await?;
            let json = match map {
                Some(m) => serde_json::json!({"epoch": m.epoch, "shards": m.shards}),
                None => serde_json::Value::Null,
            };
            println!("{json}");
        }
        Command::Status => {
            let map_shard = shards
                .first()
                .ok_or_else(|| vitalsink_common::Error::ShardMap("no shards configured".into()))?;
            for m in crate::state::all(map_shard).await? {
                println!("{}", serde_json::to_string(&m).unwrap_or_default());
            }
        }
        Command::AddShard {
            name,
            url,
            reason,
            opts,
        } => run_move(&cfg, Change::Add { name, url }, opts.into(), &reason).await?,
        Command::RemoveShard { name, reason, opts } => {
            run_move(&cfg, Change::Remove { name }, opts.into(), &reason).await?
        }
        Command::Plan { change, json } => {
            let change = match change {
                PlanChange::AddShard { name, url } => Change::Add { name, url },
                PlanChange::RemoveShard { name } => Change::Remove { name },
            };
            let p = plan(&shards, &cfg.database, &change).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&p).map_err(|e| {
                        Error::Refused {
                            action: "print the plan".into(),
                            message: e.to_string(),
                        }
                    })?
                );
            } else {
                print_summary(&p);
            }
        }
    }
    Ok(())
}

/// Runs a move with `/metrics`, `/healthz` and `/readyz` served meanwhile (a port already
/// taken only costs the endpoint, not the move), then prints its report as JSON. A blank
/// `reason` is refused before anything is done.
#[allow(clippy::print_stdout)]
async fn run_move(
    cfg: &Config,
    change: Change,
    opts: crate::moves::Options,
    reason: &str,
) -> Result<()> {
    if reason.trim().is_empty() {
        return Err(Error::Refused {
            action: change.action(),
            message: "--reason must not be empty (it goes into the move's audit entry)".into(),
        });
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop_on_return = stop.clone().drop_guard();
    let ready = observe::Readiness::new("moving");
    ready.set(None);
    if let Err(e) = observe::serve(
        cfg.observability.listen_or(crate::DEFAULT_LISTEN),
        observe::install_recorder(),
        ready,
        stop.clone(),
    )
    .await
    {
        tracing::warn!(error = %e, "metrics endpoint not served for this move");
    }
    let r = crate::moves::run(cfg, &change, opts, reason).await?;
    println!("{}", serde_json::to_string(&r).unwrap_or_default());
    Ok(())
}

#[allow(clippy::print_stdout)]
fn print_summary(p: &MovePlan) {
    println!(
        "epoch {} [{}] -> epoch {} [{}]",
        p.epoch,
        p.shards.join(", "),
        p.epoch + 1,
        p.next_shards.join(", ")
    );
    let mut by_route: std::collections::BTreeMap<(&str, &str), (u64, i64)> = Default::default();
    for m in &p.moves {
        let e = by_route
            .entry((m.from.as_str(), m.to.as_str()))
            .or_default();
        e.0 += 1;
        e.1 += m.rows;
    }
    for ((from, to), (participants, rows)) in by_route {
        println!("  {from} -> {to}: {participants} participants, {rows} rows");
    }
    println!(
        "moving {} of {} participants seen, {} of {} rows (the archive is not moved)",
        p.moves.len(),
        p.participants_seen,
        p.rows_moving,
        p.rows_seen
    );
}

//! Command line of the `archiver` binary.

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use std::process::ExitCode;
use vitalsink_common::cli::{self as common_cli, CommonArgs};
use vitalsink_common::observe;
use vitalsink_common::Config;

use crate::error::{Error, Result};
use crate::runner::Runner;

/// Moves aged TimescaleDB chunks to verified Parquet, and back.
#[derive(Debug, Parser)]
#[command(name = "archiver", version, about)]
pub struct Cli {
    /// Flags shared with the other binaries.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Flags of the `[archive]` section.
    #[command(flatten)]
    pub archive: ArchiveArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags overriding `[archive]` keys (each also read from its environment variable).
#[derive(Debug, Clone, Default, Args)]
pub struct ArchiveArgs {
    /// Archive root, `file:///dir` or `s3://bucket/prefix` (key `archive.root`).
    #[arg(long, global = true, env = "VITALSINK_ARCHIVE__ROOT")]
    pub root: Option<String>,
    /// Archive chunks whose range ends before now minus this, e.g. `30d` (key `archive.older_than`).
    #[arg(long, global = true, env = "VITALSINK_ARCHIVE__OLDER_THAN")]
    pub older_than: Option<String>,
    /// Export rate limit in rows per second, 0 for none (key `archive.rows_per_second`).
    #[arg(long, global = true, env = "VITALSINK_ARCHIVE__ROWS_PER_SECOND")]
    pub rows_per_second: Option<u32>,
    /// S3 endpoint URL (key `archive.s3_endpoint`).
    #[arg(long, global = true, env = "VITALSINK_ARCHIVE__S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Dry run: list the chunks, rows and bytes `run` would move now.
    Plan {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Archive every aged chunk once (cron, systemd timer), or every interval as a daemon.
    Run {
        /// Repeat every this long until SIGTERM/SIGINT, e.g. `1h` (key `archive.every`).
        #[arg(long, env = "VITALSINK_ARCHIVE__EVERY")]
        every: Option<String>,
        /// Why, for the audit entry of each chunk dropped (default: "scheduled archiving:
        /// chunks older than <older_than>").
        #[arg(long)]
        reason: Option<String>,
    },
    /// Re-check the archive against its manifest; exit 1 on a missing, corrupt or unknown object.
    Verify {
        /// Only check that each object exists with its recorded size.
        #[arg(long)]
        quick: bool,
    },
    /// Load archived rows of [FROM, TO) back into the hypertables, exactly once.
    Restore {
        /// Window start, inclusive: RFC 3339 or YYYY-MM-DD (UTC midnight).
        #[arg(long)]
        from: String,
        /// Window end, exclusive: RFC 3339 or YYYY-MM-DD.
        #[arg(long)]
        to: String,
        /// Only this participant (repeatable).
        #[arg(long = "participant")]
        participants: Vec<String>,
        /// Why, for the restore's audit entry.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Show chunks waiting, the archive log per shard and the archive's live objects (JSON).
    Status,
    /// Rename objects of an archive written before the `part-…` layout (names Arrow, pandas
    /// and Spark skip) to their current names: copy, verify the copy, log `renamed`, delete the
    /// old name. Resumable; exit 1 while anything is left under an old name.
    MigrateArchive {
        /// Only report what would be renamed (applies pending schema migrations, as `plan` does).
        #[arg(long, env = "ARCHIVER_MIGRATE_DRY_RUN")]
        dry_run: bool,
        /// Why, for the audit entry of the objects renamed.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Apply the schema migrations on every shard (idempotent) and exit.
    Migrate,
    /// Load and validate the configuration, print the effective one as JSON and exit.
    CheckConfig,
}

impl Cli {
    fn overrides(&self) -> Value {
        let mut v = self.common.overrides();
        let mut a = serde_json::Map::new();
        if let Some(x) = &self.archive.root {
            a.insert("root".into(), json!(x));
        }
        if let Some(x) = &self.archive.older_than {
            a.insert("older_than".into(), json!(x));
        }
        if let Some(x) = self.archive.rows_per_second {
            a.insert("rows_per_second".into(), json!(x));
        }
        if let Some(x) = &self.archive.s3_endpoint {
            a.insert("s3_endpoint".into(), json!(x));
        }
        if let Command::Run { every: Some(x), .. } = &self.command {
            a.insert("every".into(), json!(x));
        }
        if let (Value::Object(m), false) = (&mut v, a.is_empty()) {
            m.insert("archive".into(), Value::Object(a));
        }
        v
    }
}

/// Loads the configuration, starts the async runtime with [`async_threads`] workers and runs
/// the command on it; returns the exit code (0 success, 1 failure, 2 bad configuration).
pub fn main(cli: Cli) -> ExitCode {
    let loaded =
        Config::load(cli.common.config.as_deref(), &cli.overrides()).and_then(|mut cfg| {
            cfg.use_role("archiver")?;
            bulk_lock_sessions(&cli.command, &cfg)?;
            vitalsink_common::telemetry::init_logging(&cfg.observability).map(|()| cfg)
        });
    let cfg = match loaded {
        Ok(c) => c,
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("archiver: {e}");
            }
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(async_threads(cfg.archive.async_threads))
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the tokio runtime");
            return ExitCode::FAILURE;
        }
    };
    common_cli::exit_code("archiver", runtime.block_on(run(cli.command, cfg)))
}

/// Worker threads of the async runtime for `archive.async_threads = configured`: that many,
/// or for 0 one per 4 CPUs (`std::thread::available_parallelism`), at least 1. The async
/// tasks only move bytes (COPY messages into blocks, uploads, SQL); the CPU-bound stages have
/// threads of their own, and on a machine the shard shares more async workers cost more in
/// wake-ups than they do work (see `archive.async_threads` in `vitalsink_common::config`).
pub fn async_threads(configured: usize) -> usize {
    match configured {
        0 => std::thread::available_parallelism().map_or(1, |n| (n.get() / 4).max(1)),
        n => n,
    }
}

#[allow(clippy::print_stdout)]
fn print(line: &str) {
    println!("{line}");
}

/// A `--reason` as given; refused when given but blank (an audit entry's reason says why).
fn reason(r: Option<String>) -> Result<Option<String>> {
    match r {
        Some(r) if r.trim().is_empty() => Err(Error::Arg {
            arg: "--reason",
            message: "must not be empty".into(),
        }),
        r => Ok(r),
    }
}

/// Parses an RFC 3339 time or a `YYYY-MM-DD` date (UTC midnight).
fn parse_time(arg: &'static str, s: &str) -> Result<DateTime<Utc>> {
    vitalsink_common::cli::parse_instant(s).ok_or_else(|| Error::Arg {
        arg,
        message: format!("{s:?} is neither RFC 3339 nor YYYY-MM-DD"),
    })
}

/// `run` (and its daemon) and `migrate-archive` hold the bulk lock on each shard in a session
/// of its own: under `database.pooling = "transaction"` every shard needs its
/// `database.direct_urls` entry (README, "PgBouncer"). Checked at start-up (exit code 2).
fn bulk_lock_sessions(command: &Command, cfg: &Config) -> vitalsink_common::Result<()> {
    match command {
        Command::Run { .. } | Command::MigrateArchive { .. } => cfg.database.require_sessions(
            cfg.shards.iter().map(|s| s.name.as_str()),
            vitalsink_common::config::ARCHIVER_BULK_LOCK,
        ),
        _ => Ok(()),
    }
}

async fn run(command: Command, cfg: Config) -> Result<()> {
    match command {
        Command::Migrate => common_cli::migrate(&cfg).await?,
        Command::CheckConfig => print(&common_cli::config_json(&cfg)),
        Command::Plan { json } => {
            let items = Runner::new(&cfg)?.plan().await?;
            let (mut rows, mut bytes) = (0i64, 0i64);
            if !json {
                print("shard      chunk                                      range (UTC)                                   rows      bytes on disk  action");
            }
            for i in &items {
                rows += i.rows;
                bytes += i.bytes_on_disk;
                if json {
                    print(&serde_json::to_string(i)?);
                } else {
                    print(&format!(
                        "{:<10} {:<42} {} .. {} {:>10} {:>14}  {}",
                        i.shard,
                        i.chunk,
                        i.range_start.format("%Y-%m-%d %H:%M"),
                        i.range_end.format("%Y-%m-%d %H:%M"),
                        i.rows,
                        i.bytes_on_disk,
                        i.action
                    ));
                }
            }
            if !json {
                print(&format!(
                    "total: {} chunks, {rows} rows, {bytes} bytes on disk",
                    items.len()
                ));
            }
        }
        Command::Run { reason: why, .. } => {
            let runner = Runner::new(&cfg)?.with_reason(reason(why)?);
            let shutdown = observe::shutdown_on_signals();
            match cfg.archive.every {
                Some(every) => runner.run_every(every, shutdown).await?,
                None => {
                    let ready = observe::Readiness::new("running");
                    ready.set(None);
                    let served = observe::serve(
                        cfg.observability.listen_or(crate::DEFAULT_LISTEN),
                        observe::install_recorder(),
                        ready,
                        shutdown.clone(),
                    )
                    .await;
                    if let Err(e) = served {
                        tracing::warn!(error = %e, "metrics endpoint not served for this single run");
                    }
                    let report = runner.run_once().await;
                    shutdown.cancel();
                    print(&serde_json::to_string(&report?)?);
                }
            }
        }
        Command::Verify { quick } => {
            let report = crate::commands::verify::verify(&Runner::new(&cfg)?, quick).await?;
            print(&serde_json::to_string_pretty(&report)?);
            if report.problems() > 0 {
                return Err(Error::ArchiveBad(report.problems()));
            }
        }
        Command::Restore {
            from,
            to,
            participants,
            reason: why,
        } => {
            let req = crate::commands::restore::Request {
                from: parse_time("--from", &from)?,
                to: parse_time("--to", &to)?,
                participants: participants.into_iter().collect(),
            };
            if req.from >= req.to {
                return Err(Error::Arg {
                    arg: "--to",
                    message: "must be after --from".into(),
                });
            }
            let runner = Runner::new(&cfg)?.with_reason(reason(why)?);
            let report = crate::commands::restore::restore(&runner, &req).await?;
            print(&serde_json::to_string(&report)?);
        }
        Command::MigrateArchive {
            dry_run,
            reason: why,
        } => {
            let runner = Runner::new(&cfg)?.with_reason(reason(why)?);
            let report =
                crate::commands::migrate_archive::migrate_archive(&runner, dry_run).await?;
            print(&serde_json::to_string_pretty(&report)?);
            if report.incomplete() > 0 {
                return Err(Error::MigrationIncomplete(report.incomplete()));
            }
        }
        Command::Status => {
            let doc = crate::commands::status::status(&Runner::new(&cfg)?, cfg.archive.older_than)
                .await?;
            print(&serde_json::to_string_pretty(&doc)?);
        }
    }
    Ok(())
}

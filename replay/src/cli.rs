//! Command line of the `replay` binary.
//!
//! Every flag also reads an environment variable. Replay's own variables are `REPLAY_*`, not
//! `VITALSINK_*`: the configuration loader refuses unknown `VITALSINK_<SECTION>__<KEY>`
//! variables, and the ingest worker may share the environment.

use crate::error::{Error, Result};
use crate::publish::{PublishOptions, MAX_BATCH_SAMPLES};
use crate::rebase::TimePlan;
use crate::synthetic::{Spec, SynthMetric};
use clap::{Args, Parser, Subcommand};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::process::ExitCode;
use vitalsink_common::cli::{self as common_cli, CommonArgs};
use vitalsink_common::Config;

/// Replays real participant recordings (or synthetic load) to the measurements topic.
#[derive(Debug, Parser)]
#[command(name = "replay", version, about)]
pub struct Cli {
    /// Flags shared with the other binaries (`--config`, `--brokers`, `--topic`, …).
    #[command(flatten)]
    pub common: CommonArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish the real recordings under --data (one participant per file).
    Real {
        /// Where the recordings are.
        #[command(flatten)]
        source: SourceArgs,
        /// Publishing.
        #[command(flatten)]
        publish: PublishArgs,
    },
    /// Publish synthetic load: participants × metrics × days, deterministic for a seed.
    Synthetic {
        /// Number of participants.
        #[arg(long, env = "REPLAY_PARTICIPANTS", default_value_t = 100)]
        participants: u32,
        /// Days per participant, ending at --end-at.
        #[arg(long, env = "REPLAY_DAYS", default_value_t = 1)]
        days: u32,
        /// Metrics, comma-separated.
        #[arg(
            long,
            env = "REPLAY_METRICS",
            value_enum,
            value_delimiter = ',',
            default_value = "activity-count,light,acceleration"
        )]
        metrics: Vec<SynthMetric>,
        /// Seed of the generators.
        #[arg(long, env = "REPLAY_SEED", default_value_t = 1)]
        seed: u64,
        /// Participant id prefix.
        #[arg(long, env = "REPLAY_PREFIX", default_value = "syn-")]
        prefix: String,
        /// End of the last day: `now` or RFC 3339.
        #[arg(long, env = "REPLAY_END_AT", default_value = "now")]
        end_at: String,
        /// Publishing.
        #[command(flatten)]
        publish: PublishArgs,
    },
    /// Print (or write) the truth of the real recordings without publishing.
    Truth {
        /// Where the recordings are.
        #[command(flatten)]
        source: SourceArgs,
        /// Output file, `-` for standard output.
        #[arg(long, env = "REPLAY_TRUTH_OUT", default_value = "-")]
        out: PathBuf,
    },
    /// Print the effective configuration as JSON (secrets masked) and exit.
    CheckConfig,
    /// List the files under --data: parsed (with readings) or skipped (with the reason).
    List {
        /// Where the recordings are.
        #[command(flatten)]
        source: SourceArgs,
    },
}

/// Where the real recordings are and how their timestamps are placed.
#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// Data directory filled by `dev/fetch-data`.
    #[arg(
        long,
        env = "REPLAY_DATA_DIR",
        default_value = "/var/cache/vitalsink/data"
    )]
    pub data: PathBuf,
    /// Rebase each recording so that its last reading is at this time: `now` or RFC 3339.
    #[arg(long, env = "REPLAY_END_AT", default_value = "now")]
    pub end_at: String,
    /// Keep the files' own wall-clock timestamps (files without one are still rebased).
    /// Readings older than validation.max_age (20 years; the AWD examples date from 1918) are
    /// then dead-lettered by ingest.
    #[arg(long, env = "REPLAY_NATIVE_TIMESTAMPS")]
    pub native_timestamps: bool,
}

impl SourceArgs {
    /// The time plan these flags describe.
    ///
    /// # Errors
    /// [`Error::Argument`] for a bad `--end-at`.
    pub fn plan(&self) -> Result<TimePlan> {
        Ok(TimePlan {
            native: self.native_timestamps,
            end_at_micros: end_at(&self.end_at)?,
        })
    }
}

/// How records are published.
#[derive(Debug, Clone, Args)]
pub struct PublishArgs {
    /// Average readings per second (unset: as fast as the broker takes them).
    #[arg(long, env = "REPLAY_RATE")]
    pub rate: Option<NonZeroU32>,
    /// Samples per batch record (1 to 10000); records also stay within
    /// validation.max_message_bytes of the configuration.
    #[arg(long, env = "REPLAY_BATCH_SAMPLES", default_value_t = MAX_BATCH_SAMPLES)]
    pub batch_samples: usize,
    /// Records awaiting delivery before sending waits.
    #[arg(long, env = "REPLAY_IN_FLIGHT", default_value_t = 64)]
    pub in_flight: usize,
    /// Create the topic first if missing (ingest.topic_partitions partitions).
    #[arg(long, env = "REPLAY_CREATE_TOPIC")]
    pub create_topic: bool,
    /// Write the truth of what was published (JSON) to this file, `-` for standard output.
    #[arg(long, env = "REPLAY_TRUTH_OUT")]
    pub truth_out: Option<PathBuf>,
}

impl PublishArgs {
    fn options(&self, cfg: &Config) -> PublishOptions {
        PublishOptions {
            topic: cfg.kafka.topic.clone(),
            batch_samples: self.batch_samples,
            max_message_bytes: cfg.validation.max_message_bytes,
            rate: self.rate,
            in_flight: self.in_flight,
        }
    }
}

/// `now` or an RFC 3339 time, as microseconds since the Unix epoch.
///
/// # Errors
/// [`Error::Argument`] naming `--end-at`.
pub fn end_at(s: &str) -> Result<i64> {
    if s.eq_ignore_ascii_case("now") {
        return Ok(chrono::Utc::now().timestamp_micros());
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_micros())
        .map_err(|e| Error::Argument {
            name: "--end-at",
            detail: format!("{s:?}: {e} (use `now` or RFC 3339)"),
        })
}

/// Runs the command; returns the exit code (0 success, 1 failure, 2 bad configuration).
pub async fn main(cli: Cli) -> ExitCode {
    let cfg = match common_cli::start("replay", &cli.common) {
        Ok(c) => c,
        Err(code) => return code,
    };
    common_cli::exit_code("replay", run(cli.command, cfg).await)
}

async fn run(command: Command, cfg: Config) -> Result<()> {
    match command {
        Command::Real { source, publish } => {
            prepare(&cfg, &publish).await?;
            let t = crate::run::real(
                &source.data,
                source.plan()?,
                &cfg.kafka,
                publish.options(&cfg),
            )
            .await?;
            if let Some(p) = &publish.truth_out {
                crate::run::write_truth(&t, p)?;
            }
        }
        Command::Synthetic {
            participants,
            days,
            metrics,
            seed,
            prefix,
            end_at: e,
            publish,
        } => {
            prepare(&cfg, &publish).await?;
            let spec = Spec {
                participants,
                days,
                metrics,
                seed,
                end_at_micros: end_at(&e)?,
                prefix,
            };
            let t = crate::run::synthetic(&spec, &cfg.kafka, publish.options(&cfg)).await?;
            if let Some(p) = &publish.truth_out {
                crate::run::write_truth(&t, p)?;
            }
        }
        Command::Truth { source, out } => {
            let t = crate::run::truth(&source.data, source.plan()?)?;
            crate::run::write_truth(&t, &out)?;
        }
        Command::List { source } => list(&source)?,
        Command::CheckConfig => {
            use std::io::Write;
            writeln!(
                std::io::stdout().lock(),
                "{}",
                common_cli::config_json(&cfg)
            )
            .map_err(|e| Error::io("<stdout>", e))?;
        }
    }
    Ok(())
}

async fn prepare(cfg: &Config, publish: &PublishArgs) -> Result<()> {
    // TLS and SASL are checked here, so a refused connection fails the start naming it.
    vitalsink_common::kafka::check_connection(&cfg.kafka).await?;
    if publish.create_topic {
        vitalsink_common::kafka::ensure_topic(
            &cfg.kafka,
            &cfg.kafka.topic,
            cfg.ingest.topic_partitions,
        )
        .await?;
    }
    Ok(())
}

fn list(source: &SourceArgs) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let w = |e| Error::io("<stdout>", e);
    for f in crate::formats::discover(&source.data)? {
        match crate::formats::parse(&source.data, &f)? {
            Some(rec) => {
                let metrics: Vec<String> = rec
                    .series
                    .iter()
                    .map(|s| format!("{}={}", s.metric.name, s.samples.len()))
                    .collect();
                writeln!(
                    out,
                    "parsed  {:<28} {:>7} {}  {}",
                    rec.participant_id,
                    rec.readings(),
                    f.rel.display(),
                    metrics.join(" ")
                )
                .map_err(w)?;
            }
            None => {
                let why = f.kind.err().unwrap_or_default();
                writeln!(out, "skipped {}  ({why})", f.rel.display()).map_err(w)?;
            }
        }
    }
    Ok(())
}

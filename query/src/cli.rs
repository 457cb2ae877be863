//! Command line of the `query` binary: one-off SQL over the `measurements` table.

use arrow::record_batch::RecordBatch;
use clap::{Parser, Subcommand, ValueEnum};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use vitalsink_common::cli::{self as common_cli, CommonArgs};
use vitalsink_common::Config;

use crate::engine::{collect, session, Limits};
use crate::error::{Error, Result};

/// One SQL table, `measurements`, over every shard and the Parquet archive.
#[derive(Debug, Parser)]
#[command(name = "query", version, about)]
pub struct Cli {
    /// Flags shared with the other binaries.
    #[command(flatten)]
    pub common: CommonArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Memory for the query's operators, bytes (they spill beyond it where they can).
    #[arg(long, env = "QUERY_MEMORY_BYTES", default_value_t = 512 << 20, global = true)]
    pub memory_bytes: usize,
}

/// Output formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// An aligned text table.
    Table,
    /// CSV with a header.
    Csv,
    /// JSON lines, one object per row.
    Json,
    /// A Parquet file (needs --out).
    Parquet,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one SQL statement and print its result.
    Sql {
        /// The statement, e.g. `SELECT participant_id, count(*) FROM measurements GROUP BY 1`.
        sql: String,
        /// Output format.
        #[arg(long, env = "QUERY_FORMAT", value_enum, default_value = "table")]
        format: Format,
        /// Write to this file instead of standard output.
        #[arg(long, env = "QUERY_OUT")]
        out: Option<PathBuf>,
    },
    /// Print the effective configuration as JSON (secrets masked) and exit.
    CheckConfig,
    /// Serve Arrow Flight SQL (ADBC, JDBC) until SIGTERM; `/metrics`, `/healthz` and
    /// `/readyz` on `observability.listen` (default 127.0.0.1:9467).
    Serve {
        /// Flight SQL address (`--listen` is the metrics server's, as for every binary).
        #[arg(long, env = "QUERY_FLIGHT_LISTEN", default_value = crate::DEFAULT_FLIGHT_LISTEN)]
        flight_listen: std::net::SocketAddr,
        /// PEM certificate (chain) for TLS on the Flight SQL port; with --flight-tls-key.
        #[arg(long, env = "QUERY_FLIGHT_TLS_CERT", requires = "flight_tls_key")]
        flight_tls_cert: Option<PathBuf>,
        /// PEM private key of --flight-tls-cert.
        #[arg(long, env = "QUERY_FLIGHT_TLS_KEY", requires = "flight_tls_cert")]
        flight_tls_key: Option<PathBuf>,
        /// User analysts log in as (Flight SQL basic auth, then a bearer token).
        #[arg(long, env = "QUERY_FLIGHT_USER", default_value = "analyst")]
        flight_user: String,
        /// File holding that user's password; without it (or --flight-password-env) every
        /// caller is accepted.
        #[arg(long, env = "QUERY_FLIGHT_PASSWORD_FILE")]
        flight_password_file: Option<PathBuf>,
        /// Environment variable holding that user's password.
        #[arg(long, env = "QUERY_FLIGHT_PASSWORD_ENV")]
        flight_password_env: Option<String>,
    },
}

/// Runs the command; returns the exit code (0 success, 1 failure, 2 bad configuration).
pub async fn main(cli: Cli) -> ExitCode {
    let cfg = match common_cli::start("query", &cli.common) {
        Ok(c) => c,
        Err(code) => return code,
    };
    common_cli::exit_code("query", run(cli.command, cli.memory_bytes, cfg).await)
}

async fn run(command: Command, memory_bytes: usize, cfg: Config) -> Result<()> {
    if let Command::CheckConfig = command {
        let text = common_cli::config_json(&cfg);
        let mut out = std::io::stdout().lock();
        return writeln!(out, "{text}").map_err(|e| Error::Output(e.to_string()));
    }
    let ctx = session(
        &cfg,
        Limits {
            memory_bytes,
            ..Limits::default()
        },
    )?;
    match command {
        Command::Sql { sql, format, out } => {
            let batches = collect(&ctx, &sql).await?;
            write(&batches, format, out.as_deref())
        }
        Command::CheckConfig => Ok(()),
        Command::Serve {
            flight_listen,
            flight_tls_cert,
            flight_tls_key,
            flight_user,
            flight_password_file,
            flight_password_env,
        } => {
            let password = vitalsink_common::secret::PasswordSource {
                password_file: flight_password_file,
                password_env: flight_password_env,
            }
            .resolve("--flight")?;
            let read = |flag: &str, p: &PathBuf| {
                std::fs::read(p).map_err(|e| {
                    Error::Common(vitalsink_common::Error::Config {
                        key: flag.to_string(),
                        message: format!("{}: {e}", p.display()),
                    })
                })
            };
            let tls = match (&flight_tls_cert, &flight_tls_key) {
                (Some(c), Some(k)) => {
                    Some((read("--flight-tls-cert", c)?, read("--flight-tls-key", k)?))
                }
                _ => None,
            };
            let listen = crate::flight::Listen {
                addr: flight_listen,
                tls,
                auth: crate::flight::auth::Auth::new(flight_user, password),
            };
            let shutdown = vitalsink_common::observe::shutdown_on_signals();
            let ready = vitalsink_common::observe::Readiness::new("starting");
            vitalsink_common::observe::serve(
                cfg.observability.listen_or(crate::DEFAULT_LISTEN),
                vitalsink_common::observe::install_recorder(),
                ready.clone(),
                shutdown.clone(),
            )
            .await?;
            ready.set(None);
            crate::flight::serve(ctx, listen, shutdown).await
        }
    }
}

fn write(batches: &[RecordBatch], format: Format, out: Option<&std::path::Path>) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| Error::Output(e.to_string());
    let mut sink: Box<dyn std::io::Write> = match out {
        Some(p) => Box::new(std::fs::File::create(p).map_err(|e| err(&e))?),
        None => Box::new(std::io::stdout().lock()),
    };
    match format {
        Format::Table => {
            let t = arrow::util::pretty::pretty_format_batches(batches).map_err(|e| err(&e))?;
            writeln!(sink, "{t}").map_err(|e| err(&e))?;
        }
        Format::Csv => {
            let mut w = arrow::csv::Writer::new(sink);
            for b in batches {
                w.write(b).map_err(|e| err(&e))?;
            }
        }
        Format::Json => {
            let mut w = arrow::json::LineDelimitedWriter::new(sink);
            for b in batches {
                w.write(b).map_err(|e| err(&e))?;
            }
            w.finish().map_err(|e| err(&e))?;
        }
        Format::Parquet => {
            let Some(p) = out else {
                return Err(Error::Output("--format parquet needs --out FILE".into()));
            };
            let schema = batches
                .first()
                .map(|b| b.schema())
                .ok_or_else(|| Error::Output("no result to write".into()))?;
            let f = std::fs::File::create(p).map_err(|e| err(&e))?;
            let mut w =
                parquet::arrow::ArrowWriter::try_new(f, schema, None).map_err(|e| err(&e))?;
            for b in batches {
                w.write(b).map_err(|e| err(&e))?;
            }
            w.close().map_err(|e| err(&e))?;
        }
    }
    Ok(())
}

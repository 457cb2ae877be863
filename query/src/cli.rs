//! Command line of the `query` binary: one-off SQL over the `measurements` table and the
//! trial tables ([`crate::trial_tables`]), the Flight SQL server, and the analysts' accounts
//! file. `--lock NAME` makes `measurements` the data of a dataset lock ([`crate::locked`]).

use arrow::record_batch::RecordBatch;
use clap::{Parser, Subcommand, ValueEnum};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use vitalsink_common::cli::{self as common_cli, CommonArgs};
use vitalsink_common::Config;

use crate::access::{AccessLog, Record};
use crate::engine::{Engine, Limits};
use crate::error::{Error, Result};

/// SQL over `measurements` (every shard and the Parquet archive, or a dataset lock) and the
/// trial's `audit_log`, `participants` and `participant_status_changes`.
#[derive(Debug, Parser)]
#[command(name = "query", version, about)]
pub struct Cli {
    /// Flags shared with the other binaries.
    #[command(flatten)]
    pub common: CommonArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Memory for the operators of all running statements together, bytes.
    #[arg(long, env = "QUERY_MEMORY_BYTES", default_value_t = 512 << 20, global = true)]
    pub memory_bytes: usize,
    /// How long one statement may run, planning to last row (`30s`, `10m`); it is then
    /// stopped with an error.
    #[arg(long, env = "QUERY_STATEMENT_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration, global = true)]
    pub statement_timeout: std::time::Duration,
    /// Also append each statement's access record to this file, one JSON line each
    /// (`crate::access`); the log always has them.
    #[arg(long, env = "QUERY_ACCESS_LOG", global = true)]
    pub access_log: Option<PathBuf>,
    /// Read `measurements` from dataset lock NAME only: the archive objects of its newest
    /// revision, no shard (`sql` and `serve`; fails at start when there is no such lock).
    #[arg(long, env = "QUERY_LOCK", global = true, value_name = "NAME")]
    pub lock: Option<String>,
    /// Compute aggregates on the shards (`crate::aggregate`): only partial results travel.
    /// `false` streams every matching row to the engine instead (same results; for
    /// comparison and as a way out).
    #[arg(long, env = "QUERY_AGGREGATE_PUSHDOWN", default_value_t = true, action = clap::ArgAction::Set, global = true, value_name = "BOOL")]
    pub aggregate_pushdown: bool,
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
        /// Analysts' accounts: `NAME:ARGON2-PHC` lines (`query add-user` writes them);
        /// re-read when the file changes. Without it and without --flight-password-file,
        /// every caller is accepted as `anonymous`.
        #[arg(long, env = "QUERY_USERS_FILE")]
        users_file: Option<PathBuf>,
        /// One more account, with a plain password from a secret file: its name.
        #[arg(long, env = "QUERY_FLIGHT_USER", default_value = "analyst")]
        flight_user: String,
        /// File holding --flight-user's password.
        #[arg(long, env = "QUERY_FLIGHT_PASSWORD_FILE")]
        flight_password_file: Option<PathBuf>,
        /// Environment variable holding --flight-user's password.
        #[arg(long, env = "QUERY_FLIGHT_PASSWORD_ENV")]
        flight_password_env: Option<String>,
        /// How long a login's bearer token is valid.
        #[arg(long, env = "QUERY_SESSION_TTL", default_value = "12h", value_parser = humantime::parse_duration)]
        session_ttl: std::time::Duration,
        /// Statements running at once; more wait for a slot.
        #[arg(long, env = "QUERY_MAX_CONCURRENT_QUERIES", default_value_t = crate::flight::admission::DEFAULT_MAX_CONCURRENT)]
        max_concurrent_queries: usize,
        /// How long a statement waits for a slot before it is answered RESOURCE_EXHAUSTED.
        #[arg(long, env = "QUERY_QUEUE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
        queue_timeout: std::time::Duration,
    },
    /// Add an analyst to the accounts file (or set a new password for one), reading the
    /// password from standard input (its first line); creates the file (mode 0600).
    AddUser {
        /// The accounts file.
        #[arg(long, env = "QUERY_USERS_FILE")]
        users_file: PathBuf,
        /// The analyst's name (1-64 of A-Z a-z 0-9 . _ @ -).
        name: String,
    },
}

/// Runs the command; returns the exit code (0 success, 1 failure, 2 bad configuration).
pub async fn main(cli: Cli) -> ExitCode {
    if let Command::AddUser { users_file, name } = &cli.command {
        return match add_user(users_file, name) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                #[allow(clippy::print_stderr)]
                {
                    eprintln!("query add-user: {e}");
                }
                ExitCode::from(2)
            }
        };
    }
    let cfg = match common_cli::start("query", &cli.common) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let limits = Limits {
        memory_bytes: cli.memory_bytes,
        statement_timeout: cli.statement_timeout,
        aggregate_pushdown: cli.aggregate_pushdown,
        ..Limits::default()
    };
    let access = match AccessLog::open(cli.access_log.as_deref()) {
        Ok(a) => std::sync::Arc::new(a),
        Err(e) => {
            tracing::error!(error = %e, "query failed");
            return ExitCode::from(2);
        }
    };
    common_cli::exit_code(
        "query",
        run(cli.command, limits, access, cfg, cli.lock.as_deref()).await,
    )
}

/// Writes `name`'s line (a new Argon2id hash of the password on standard input) into
/// `path`, replacing the line the name had.
fn add_user(path: &std::path::Path, name: &str) -> Result<()> {
    use std::io::BufRead as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if !crate::flight::users::valid_name(name) {
        return Err(Error::Output(format!(
            "invalid name {name:?} (1-64 of A-Z a-z 0-9 . _ @ -)"
        )));
    }
    let mut password = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut password)
        .map_err(|e| Error::Output(format!("reading the password: {e}")))?;
    let password = password.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err(Error::Output("no password on standard input".into()));
    }
    let old = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::Output(format!("{}: {e}", path.display()))),
    };
    crate::flight::users::parse(path, &old)?;
    let prefix = format!("{name}:");
    let mut text: String = old
        .lines()
        .filter(|l| !l.trim().starts_with(&prefix))
        .map(|l| format!("{l}\n"))
        .collect();
    text.push_str(&format!(
        "{name}:{}\n",
        crate::flight::users::hash(password)?
    ));
    // Written beside the file and renamed over it: a server re-reading it never sees half.
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::Output(format!("{}: {e}", tmp.display())))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| Error::Output(format!("{}: {e}", path.display())))
}

/// The operating-system user running `query sql`, for its access record.
fn local_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .map(|u| format!("local:{u}"))
        .unwrap_or_else(|_| "local".into())
}

async fn run(
    command: Command,
    limits: Limits,
    access: std::sync::Arc<AccessLog>,
    cfg: Config,
    lock: Option<&str>,
) -> Result<()> {
    if let Command::CheckConfig = command {
        let text = common_cli::config_json(&cfg);
        let mut out = std::io::stdout().lock();
        return writeln!(out, "{text}").map_err(|e| Error::Output(e.to_string()));
    }
    let engine = match lock {
        Some(name) => Engine::locked(&cfg, limits, name).await?,
        None => Engine::new(&cfg, limits)?,
    };
    match command {
        Command::Sql { sql, format, out } => {
            let record = Record::start(access, &local_user(), &sql, Vec::new());
            let batches = match engine.collect(&sql).await {
                Ok(b) => b,
                Err(e) => {
                    record.fail(&e);
                    return Err(e);
                }
            };
            for b in &batches {
                record.add_rows(b.num_rows() as u64);
                record.add_bytes(b.get_array_memory_size() as u64);
            }
            record.ok();
            write(&batches, format, out.as_deref())
        }
        Command::CheckConfig | Command::AddUser { .. } => Ok(()),
        Command::Serve {
            flight_listen,
            flight_tls_cert,
            flight_tls_key,
            users_file,
            flight_user,
            flight_password_file,
            flight_password_env,
            session_ttl,
            max_concurrent_queries,
            queue_timeout,
        } => {
            let password = vitalsink_common::secret::PasswordSource {
                password_file: flight_password_file,
                password_env: flight_password_env,
            }
            .resolve("--flight")?;
            let accounts = users_file
                .map(crate::flight::users::Accounts::open)
                .transpose()?;
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
                auth: crate::flight::auth::Auth::new(
                    accounts,
                    password.map(|p| (flight_user, p)),
                    session_ttl,
                ),
                admission: crate::flight::admission::Admission::new(
                    max_concurrent_queries,
                    queue_timeout,
                ),
                access,
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
            crate::flight::serve(std::sync::Arc::new(engine), listen, shutdown).await
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
                w.write(&lists_as_text(b).map_err(|e| err(&e))?)
                    .map_err(|e| err(&e))?;
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

/// `batch` with its list columns (`audit_log.participants`) as text (`[a, b]`), which CSV
/// can hold.
fn lists_as_text(
    batch: &RecordBatch,
) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    use arrow::datatypes::{DataType, Field, Schema};
    let is_list = |t: &DataType| matches!(t, DataType::List(_) | DataType::LargeList(_));
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|f| is_list(f.data_type()))
    {
        return Ok(batch.clone());
    }
    let mut fields = Vec::new();
    let mut cols = Vec::new();
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        if is_list(f.data_type()) {
            fields.push(Field::new(f.name(), DataType::Utf8, f.is_nullable()));
            cols.push(arrow::compute::cast(c, &DataType::Utf8)?);
        } else {
            fields.push(f.as_ref().clone());
            cols.push(c.clone());
        }
    }
    RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), cols)
}

//! Command line of the `trial` binary (README "Running a trial" lists each verb with the role
//! that may run it).

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use vitalsink_common::cli::{self as common_cli, CommonArgs};
use vitalsink_common::db::Shard;
use vitalsink_common::participants::Status;
use vitalsink_common::Config;

use crate::commands::{self, audit_list, audit_verify, map_shard, parse_time, status_change};
use crate::error::{Error, Result};
use crate::output::{self, Format};

/// Trial operations: the audit trail, participants' withdrawal and erasure, dataset locks.
#[derive(Debug, Parser)]
#[command(name = "trial", version, about)]
pub struct Cli {
    /// Flags shared with the other binaries.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Archive root, `file:///dir` or `s3://bucket/prefix` (key `archive.root`).
    #[arg(long, global = true, env = "VITALSINK_ARCHIVE__ROOT")]
    pub root: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the effective configuration as JSON (secrets masked) and exit.
    CheckConfig,
    /// The audit trail.
    Audit {
        /// What to do with it.
        #[command(subcommand)]
        verb: AuditVerb,
    },
    /// Participants' status: withdrawal, reinstatement, erasure.
    Participants {
        /// What to do.
        #[command(subcommand)]
        verb: ParticipantVerb,
    },
    /// Dataset locks: named, immutable versions of the data.
    Lock {
        /// What to do.
        #[command(subcommand)]
        verb: LockVerb,
    },
}

/// `lock` verbs.
#[derive(Debug, Subcommand)]
pub enum LockVerb {
    /// Freeze the dataset as it is now under NAME (`query --lock NAME` reads it).
    Create {
        /// The lock's name (1-64 of A-Z a-z 0-9 . _ -).
        name: String,
        /// Why (required; recorded in the audit trail).
        #[arg(long, env = "TRIAL_REASON")]
        reason: String,
    },
    /// Re-check every object and row count of a lock; exit 1 on any difference.
    Verify {
        /// The lock.
        name: String,
        /// A revision other than the newest.
        #[arg(long)]
        revision: Option<i32>,
    },
    /// Every lock and revision (JSON lines).
    List,
}

/// `audit` verbs.
#[derive(Debug, Subcommand)]
pub enum AuditVerb {
    /// Entries, oldest first, filtered (every filter optional).
    List {
        /// Entries at or after this instant (RFC 3339 or YYYY-MM-DD).
        #[arg(long, env = "TRIAL_SINCE")]
        since: Option<String>,
        /// Entries before this instant (RFC 3339 or YYYY-MM-DD).
        #[arg(long, env = "TRIAL_UNTIL")]
        until: Option<String>,
        /// An action (`participant.withdraw`) or a prefix ending in `.` (`archive.`).
        #[arg(long, env = "TRIAL_ACTION")]
        action: Option<String>,
        /// Entries that touched this participant.
        #[arg(long, env = "TRIAL_PARTICIPANT")]
        participant: Option<String>,
        /// Entries by this operating-system user or database role.
        #[arg(long, env = "TRIAL_USER")]
        user: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Json, env = "TRIAL_FORMAT")]
        format: Format,
    },
    /// Re-check the chain and the archive's copies; exit 1 on any break.
    Verify {
        /// Skip the comparison with the archive's copies.
        #[arg(long, env = "TRIAL_NO_ARCHIVE")]
        no_archive: bool,
    },
}

/// `participants` verbs.
#[derive(Debug, Subcommand)]
pub enum ParticipantVerb {
    /// Stop storing a participant's readings taken at or after --effective (they go to the
    /// dead-letter topic with reason `withdrawn`); earlier readings stay.
    Withdraw {
        /// The participant.
        participant: String,
        /// From when, by the readings' own time (RFC 3339 or YYYY-MM-DD).
        #[arg(long, env = "TRIAL_EFFECTIVE")]
        effective: String,
        /// Why (required; recorded in the audit trail).
        #[arg(long, env = "TRIAL_REASON")]
        reason: String,
    },
    /// End a withdrawal: readings taken at or after --effective are stored again.
    Reinstate {
        /// The participant.
        participant: String,
        /// From when, by the readings' own time (RFC 3339 or YYYY-MM-DD).
        #[arg(long, env = "TRIAL_EFFECTIVE")]
        effective: String,
        /// Why (required; recorded in the audit trail).
        #[arg(long, env = "TRIAL_REASON")]
        reason: String,
    },
    /// Remove a participant's rows from every shard and from the archive (and their readings
    /// from then on); running it again resumes a killed run.
    Erase {
        /// The participant.
        participant: String,
        /// Why (required; recorded in the audit trail).
        #[arg(long, env = "TRIAL_REASON")]
        reason: String,
    },
    /// Every recorded status change, with each participant's status now.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Json, env = "TRIAL_FORMAT")]
        format: Format,
    },
}

/// Runs the command; returns the exit code (0 success, 1 failure, refusal or a failed check,
/// 2 bad configuration).
pub async fn main(cli: Cli) -> ExitCode {
    let cfg = match common_cli::start("trial", &cli.common) {
        Ok(mut c) => {
            if let Some(root) = &cli.root {
                c.archive.root = root.clone();
            }
            c
        }
        Err(code) => return code,
    };
    common_cli::exit_code("trial", run(cli.command, cfg).await)
}

#[allow(clippy::print_stdout)]
async fn run(command: Command, cfg: Config) -> Result<()> {
    let shards = Shard::all(&cfg.shards, &cfg.database)?;
    match command {
        Command::CheckConfig => println!("{}", common_cli::config_json(&cfg)),
        Command::Audit { verb } => audit(&cfg, &shards, verb).await?,
        Command::Participants { verb } => participants(&cfg, &shards, verb).await?,
        Command::Lock { verb } => lock(&cfg, &shards, verb).await?,
    }
    Ok(())
}

async fn audit(cfg: &Config, shards: &[Shard], verb: AuditVerb) -> Result<()> {
    let map = map_shard(shards)?;
    match verb {
        AuditVerb::List {
            since,
            until,
            action,
            participant,
            user,
            format,
        } => {
            let f = audit_list::Filter {
                since: since.map(|s| parse_time("since", &s)).transpose()?,
                until: until.map(|s| parse_time("until", &s)).transpose()?,
                action,
                participant,
                user,
            };
            audit_list::run(map, &f, format).await
        }
        AuditVerb::Verify { no_archive } => {
            let archive = if no_archive {
                None
            } else {
                Some(vitalsink_archiver::storage::store::open(&cfg.archive)?)
            };
            let r = audit_verify::verify(map, archive.as_ref()).await?;
            output::json_line(&serde_json::to_value(&r).unwrap_or_default())?;
            if r.breaks.is_empty() {
                Ok(())
            } else {
                Err(Error::Failed(format!(
                    "audit trail broken at {} place(s), first at entry {}",
                    r.breaks.len(),
                    r.breaks[0].seq
                )))
            }
        }
    }
}

async fn participants(cfg: &Config, shards: &[Shard], verb: ParticipantVerb) -> Result<()> {
    let (participant, status, effective, reason) = match verb {
        ParticipantVerb::List { format } => {
            return commands::participants_list::run(map_shard(shards)?, format).await
        }
        ParticipantVerb::Erase {
            participant,
            reason,
        } => {
            let reason = commands::reason(&reason)?;
            let reach = commands::status_shards(cfg, shards).await?;
            let held = commands::serialize(map_shard(shards)?).await?;
            let out = commands::erase::run(cfg, &reach, &participant, &reason).await;
            commands::release(held).await;
            output::json_line(&out?)?;
            copy_trail(cfg, shards).await;
            return Ok(());
        }
        ParticipantVerb::Withdraw {
            participant,
            effective,
            reason,
        } => (participant, Status::Withdrawn, effective, reason),
        ParticipantVerb::Reinstate {
            participant,
            effective,
            reason,
        } => (participant, Status::Active, effective, reason),
    };
    let c = status_change::Change {
        participant,
        status,
        effective_at: parse_time("effective", &effective)?,
        reason: commands::reason(&reason)?,
    };
    let reach = commands::status_shards(cfg, shards).await?;
    let held = commands::serialize(map_shard(shards)?).await?;
    let out = status_change::run(&reach, &c).await;
    commands::release(held).await;
    output::json_line(&out?)?;
    copy_trail(cfg, shards).await;
    Ok(())
}

async fn lock(cfg: &Config, shards: &[Shard], verb: LockVerb) -> Result<()> {
    let map = map_shard(shards)?;
    match verb {
        LockVerb::Create { name, reason } => {
            let reason = commands::reason(&reason)?;
            let out = commands::lock_create::run(cfg, shards, &name, &reason).await?;
            output::json_line(&out)?;
            copy_trail(cfg, shards).await;
        }
        LockVerb::Verify { name, revision } => {
            let archive = vitalsink_archiver::storage::store::open(&cfg.archive)?;
            let r = commands::lock_verify::verify(&archive, map, &name, revision).await?;
            output::json_line(&serde_json::to_value(&r).unwrap_or_default())?;
            if !r.problems.is_empty() {
                return Err(Error::Failed(format!(
                    "lock {name} revision {}: {} problem(s), first: {}",
                    r.revision,
                    r.problems.len(),
                    r.problems[0]
                )));
            }
        }
        LockVerb::List => {
            let c = map.client().await?;
            for row in c
                .query(
                    "SELECT name, revision, created_at, reason, rows, checksum, audit_seq
                       FROM dataset_locks ORDER BY name, revision",
                    &[],
                )
                .await
                .map_err(|e| Error::pg(map, e))?
            {
                let at: chrono::DateTime<chrono::Utc> = row.get(2);
                output::json_line(&serde_json::json!({
                    "lock": row.get::<_, String>(0),
                    "revision": row.get::<_, i32>(1),
                    "created_at": at,
                    "reason": row.get::<_, String>(3),
                    "rows": row.get::<_, i64>(4),
                    "manifest_checksum": row.get::<_, String>(5),
                    "audit_seq": row.get::<_, Option<i64>>(6),
                }))?;
            }
        }
    }
    Ok(())
}

/// Copies new audit entries to the archive; a failure is logged, not fatal (the next command
/// or `archiver run` copies them).
async fn copy_trail(cfg: &Config, shards: &[Shard]) {
    let Ok(map) = map_shard(shards) else { return };
    let res = match vitalsink_archiver::storage::store::open(&cfg.archive) {
        Ok(a) => vitalsink_archiver::trail::copy_new(&a, map).await,
        Err(e) => Err(e),
    };
    if let Err(e) = res {
        tracing::warn!(error = %e, "audit trail not copied to the archive now; the next archiver run copies it");
    }
}

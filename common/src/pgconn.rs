//! How every binary connects to PostgreSQL: TLS with libpq's `sslmode` semantics, and the
//! login of the binary's own role.
//!
//! **TLS.** tokio-postgres itself knows `sslmode` disable, prefer and require, and leaves the
//! certificate check to the connector. The connector here is `postgres-openssl` (released from
//! tokio-postgres's own repository, and the same system OpenSSL that librdkafka's `ssl`
//! feature links, so one TLS library checks every hop). Modes, as libpq defines them
//! (PostgreSQL docs, "SSL Support", table "SSL Mode Descriptions"):
//! - `disable`: plain TCP; `allow`/`prefer`: TLS if the server offers it, no checks;
//! - `require`: TLS, no certificate check;
//! - `verify-ca`: TLS, the server's chain must lead to the configured CA;
//! - `verify-full`: as verify-ca, and the certificate must name the host connected to.
//!
//! With `ca_file` the CA file is the **only** trust anchor (libpq's `sslrootcert`); without it
//! the system's store is used. The section `[database.tls]` applies to every shard, replica
//! and move target; a connection string's own `sslmode`, `sslrootcert`, `sslcert` and
//! `sslkey` (libpq's parameter names, URL or key-value form) take precedence for it.
//!
//! **Login.** `[database.credentials.<binary>]` (`ingest`, `archiver`, `query`, `reshard`,
//! `migrate`) gives the user and password source of that binary's role (`schemas/ROLES.md`);
//! they replace the connection string's `user` and `password`. Without one, the connection
//! string's own apply, then the `PGPASSWORD` environment variable (as libpq).

use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::X509;
use postgres_openssl::MakeTlsConnector;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::DatabaseConfig;
use crate::error::{Error, Result};
use crate::secret::{PasswordSource, Secret};

mod url;
use url::split_tls;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS when the server insists (treated as `prefer`: tokio-postgres has no `allow`).
    Allow,
    /// TLS when the server offers it, unchecked; plain otherwise (libpq's default).
    #[default]
    Prefer,
    /// TLS, certificate unchecked.
    Require,
    /// TLS, chain checked against the CA.
    VerifyCa,
    /// TLS, chain and host name checked.
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "disable" => Self::Disable,
            "allow" => Self::Allow,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }

    fn verifies(self) -> bool {
        matches!(self, Self::VerifyCa | Self::VerifyFull)
    }
}

/// `[database.tls]`: TLS to every shard, replica and move target.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PgTlsConfig {
    /// `sslmode` (default `prefer`, as libpq). Production: `verify-full`.
    pub mode: SslMode,
    /// PEM file of the CA(s) the server's certificate must chain to (libpq `sslrootcert`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM), for `cert` authentication (libpq `sslcert`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM, unencrypted; libpq `sslkey`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

/// `[database.credentials.<binary>]`: the role one binary logs in as.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoginConfig {
    /// PostgreSQL user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// File holding the password (a Docker/Kubernetes secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
}

/// The login this process uses, resolved from a [`LoginConfig`] at start-up.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Login {
    /// The binary whose entry was used (`ingest`, …), for messages.
    pub role: Option<String>,
    /// User, replacing the connection string's.
    pub user: Option<String>,
    /// Password, replacing the connection string's.
    pub password: Option<Secret>,
}

impl Login {
    /// Resolves `database.credentials.<role>`; a missing entry gives the empty login.
    ///
    /// # Errors
    /// [`Error::Config`] naming the key when its password file or variable cannot be read.
    pub fn resolve(db: &DatabaseConfig, role: &str) -> Result<Self> {
        let Some(c) = db.credentials.get(role) else {
            return Ok(Self::default());
        };
        let password = PasswordSource {
            password_file: c.password_file.clone(),
            password_env: c.password_env.clone(),
        }
        .resolve(&format!("database.credentials.{role}"))?;
        Ok(Self {
            role: Some(role.to_string()),
            user: c.user.clone(),
            password,
        })
    }
}

/// tokio-postgres's (and libpq's) keepalive idle time when the string does not set one.
const DEFAULT_KEEPALIVES_IDLE: Duration = Duration::from_secs(2 * 60 * 60);

/// The connection settings and TLS connector for one connection string.
///
/// `key` names the string in errors (`shards[1].url`, `shards[0].replicas[0]`); `app` is the
/// `application_name` shown in `pg_stat_activity` unless the string sets one.
///
/// # Errors
/// [`Error::Config`] naming `key` for a string that does not parse or an unknown `sslmode`,
/// and `database.tls.*` (or `key`, for the string's own `sslrootcert` …) for a CA,
/// certificate or key file that cannot be read or used.
pub fn settings(
    url: &str,
    key: &str,
    db: &DatabaseConfig,
    app: &str,
) -> Result<(tokio_postgres::Config, MakeTlsConnector)> {
    let (rest, own) = split_tls(url);
    let mut pg: tokio_postgres::Config =
        rest.parse()
            .map_err(|e: tokio_postgres::Error| Error::Config {
                key: key.to_string(),
                message: e.to_string(),
            })?;
    let mode = match &own.mode {
        Some(m) => SslMode::parse(m).ok_or_else(|| Error::Config {
            key: key.to_string(),
            message: format!(
                "sslmode {m:?}: expected disable, allow, prefer, require, verify-ca or verify-full"
            ),
        })?,
        None => db.tls.mode,
    };
    pg.ssl_mode(match mode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Allow | SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        _ => tokio_postgres::config::SslMode::Require,
    });
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(db.connect_timeout);
    }
    // tokio-postgres's keepalive idle default is 2 h (libpq's too): a string that leaves it
    // and `tcp_user_timeout` alone gets `database.tcp_user_timeout` for both.
    if !db.tcp_user_timeout.is_zero()
        && pg.get_tcp_user_timeout().is_none()
        && pg.get_keepalives_idle() == DEFAULT_KEEPALIVES_IDLE
    {
        let probe = (db.tcp_user_timeout / 4).max(Duration::from_secs(1));
        pg.tcp_user_timeout(db.tcp_user_timeout)
            .keepalives(true)
            .keepalives_idle(probe)
            .keepalives_interval(probe)
            .keepalives_retries(3);
    }
    if pg.get_application_name().is_none() {
        pg.application_name(app);
    }
    if let Some(u) = &db.login.user {
        pg.user(u);
    }
    if let Some(p) = &db.login.password {
        pg.password(p.expose());
    } else if pg.get_password().is_none() {
        if let Ok(p) = std::env::var("PGPASSWORD") {
            pg.password(p);
        }
    }
    let file = |own: &Option<String>, conf: &Option<PathBuf>, name: &str| match (own, conf) {
        (Some(p), _) => Some((PathBuf::from(p), key.to_string())),
        (None, Some(p)) => Some((p.clone(), format!("database.tls.{name}"))),
        (None, None) => None,
    };
    let connector = connector(
        mode,
        file(&own.root, &db.tls.ca_file, "ca_file"),
        file(&own.cert, &db.tls.cert_file, "cert_file"),
        file(&own.key, &db.tls.key_file, "key_file"),
    )?;
    Ok((pg, connector))
}

/// An OpenSSL connector for `mode`: each file comes with the configuration key it is from.
fn connector(
    mode: SslMode,
    ca: Option<(PathBuf, String)>,
    cert: Option<(PathBuf, String)>,
    key: Option<(PathBuf, String)>,
) -> Result<MakeTlsConnector> {
    let bad = |k: &str, p: &Path, e: &dyn std::fmt::Display| Error::Config {
        key: k.to_string(),
        message: format!("{}: {e}", p.display()),
    };
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| Error::Config {
        key: "database.tls".into(),
        message: e.to_string(),
    })?;
    if mode.verifies() {
        b.set_verify(SslVerifyMode::PEER);
        if let Some((p, k)) = &ca {
            let pem = std::fs::read(p).map_err(|e| bad(k, p, &e))?;
            let certs = X509::stack_from_pem(&pem).map_err(|e| bad(k, p, &e))?;
            if certs.is_empty() {
                return Err(bad(k, p, &"no certificate in the file"));
            }
            let mut store = X509StoreBuilder::new().map_err(|e| bad(k, p, &e))?;
            for c in certs {
                store.add_cert(c).map_err(|e| bad(k, p, &e))?;
            }
            b.set_cert_store(store.build());
        }
    } else {
        b.set_verify(SslVerifyMode::NONE);
    }
    match (&cert, &key) {
        (Some((c, ck)), Some((k, kk))) => {
            b.set_certificate_chain_file(c)
                .map_err(|e| bad(ck, c, &e))?;
            b.set_private_key_file(k, SslFiletype::PEM)
                .map_err(|e| bad(kk, k, &e))?;
        }
        (None, None) => {}
        (Some((c, ck)), None) => return Err(bad(ck, c, &"a client certificate needs its key")),
        (None, Some((k, kk))) => return Err(bad(kk, k, &"a client key needs its certificate")),
    }
    let mut m = MakeTlsConnector::new(b.build());
    if mode != SslMode::VerifyFull {
        m.set_callback(|c, _| {
            c.set_verify_hostname(false);
            Ok(())
        });
    }
    Ok(m)
}

#[cfg(test)]
mod tests;

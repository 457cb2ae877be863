//! The secure variant of the local stack (`STACK_SECURE=1 dev/stack up`): TLS with a
//! throwaway CA and SCRAM logins, from the `VITALSINK_SECURE_*` variables that
//! `STACK_SECURE=1 dev/stack env` prints (`dev/test` exports them).
//!
//! A test using it fails, never skips, when a variable is missing.

use std::path::PathBuf;
use std::process::{Command, Output};

/// Endpoints, CA files and credentials of the secure stack.
#[derive(Debug, Clone)]
pub struct SecureStack {
    /// Directory with the CA, the certificate and the secret files.
    pub dir: PathBuf,
    /// The CA that signed the server certificate (subjectAltName DNS:localhost only).
    pub ca: PathBuf,
    /// An unrelated CA, for "unknown CA" checks.
    pub other_ca: PathBuf,
    /// `localhost`: the certificate's only name (`127.0.0.1` fails hostname verification).
    pub pg_host: String,
    /// Port of the TLS + SCRAM TimescaleDB cluster.
    pub pg_port: u16,
    /// Its superuser.
    pub pg_admin_user: String,
    /// File with the superuser's password.
    pub pg_admin_password_file: PathBuf,
    /// Kafka bootstrap (`localhost:29093`, TLS by stunnel, SASL SCRAM by Tansu).
    pub kafka: String,
    /// SCRAM-SHA-512 user.
    pub kafka_user: String,
    /// File with its password.
    pub kafka_password_file: PathBuf,
    /// SCRAM-SHA-256 user.
    pub kafka256_user: String,
    /// File with its password.
    pub kafka256_password_file: PathBuf,
    /// Tansu's own listener behind stunnel (`127.0.0.1:29092`, plain TCP, SASL required).
    pub tansu_listener: String,
    /// S3 endpoint (`https://localhost:28443`).
    pub s3: String,
    /// Bucket `up` creates.
    pub s3_bucket: String,
    /// Region to sign with.
    pub s3_region: String,
    /// File with the access key id.
    pub s3_access_key_file: PathBuf,
    /// File with the secret access key.
    pub s3_secret_key_file: PathBuf,
    /// Whether the broker refuses a client that goes on after a wrong SCRAM proof (`dev/stack
    /// up` probes it; Tansu 0.6.0 does not, fixed upstream in PR #696).
    pub tansu_refuses_wrong_password: bool,
}

fn var(k: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| {
        panic!(
            "{k} is not set: start the secure stack and export its endpoints: \
             `STACK_SECURE=1 dev/stack up && set -a && eval \"$(STACK_SECURE=1 dev/stack env)\"` \
             (dev/test does both)"
        )
    })
}

/// Reads a secret file, trimmed.
pub fn read_secret(path: &std::path::Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (STACK_SECURE=1 dev/stack up makes it)",
                path.display()
            )
        })
        .trim()
        .to_string()
}

impl SecureStack {
    /// Reads the `VITALSINK_SECURE_*` variables; panics naming the first missing one.
    pub fn from_env() -> Self {
        let path = |k: &str| PathBuf::from(var(k));
        let flag = var("VITALSINK_SECURE_TANSU_REFUSES_WRONG_PASSWORD");
        Self {
            dir: path("VITALSINK_SECURE_DIR"),
            ca: path("VITALSINK_SECURE_CA"),
            other_ca: path("VITALSINK_SECURE_OTHER_CA"),
            pg_host: var("VITALSINK_SECURE_PG_HOST"),
            pg_port: var("VITALSINK_SECURE_PG_PORT")
                .parse()
                .expect("VITALSINK_SECURE_PG_PORT"),
            pg_admin_user: var("VITALSINK_SECURE_PG_ADMIN_USER"),
            pg_admin_password_file: path("VITALSINK_SECURE_PG_ADMIN_PASSWORD_FILE"),
            kafka: var("VITALSINK_SECURE_KAFKA"),
            kafka_user: var("VITALSINK_SECURE_KAFKA_USER"),
            kafka_password_file: path("VITALSINK_SECURE_KAFKA_PASSWORD_FILE"),
            kafka256_user: var("VITALSINK_SECURE_KAFKA256_USER"),
            kafka256_password_file: path("VITALSINK_SECURE_KAFKA256_PASSWORD_FILE"),
            tansu_listener: var("VITALSINK_SECURE_TANSU_LISTENER"),
            s3: var("VITALSINK_SECURE_S3"),
            s3_bucket: var("VITALSINK_SECURE_S3_BUCKET"),
            s3_region: var("VITALSINK_SECURE_S3_REGION"),
            s3_access_key_file: path("VITALSINK_SECURE_S3_ACCESS_KEY_FILE"),
            s3_secret_key_file: path("VITALSINK_SECURE_S3_SECRET_KEY_FILE"),
            tansu_refuses_wrong_password: match flag.as_str() {
                "1" => true,
                "0" => false,
                other => panic!("VITALSINK_SECURE_TANSU_REFUSES_WRONG_PASSWORD={other:?}: 0 or 1"),
            },
        }
    }

    /// The superuser's password.
    pub fn pg_admin_password(&self) -> String {
        read_secret(&self.pg_admin_password_file)
    }

    /// The SCRAM-SHA-512 user's password.
    pub fn kafka_password(&self) -> String {
        read_secret(&self.kafka_password_file)
    }

    /// The SCRAM-SHA-256 user's password.
    pub fn kafka256_password(&self) -> String {
        read_secret(&self.kafka256_password_file)
    }

    /// S3 access key id and secret.
    pub fn s3_credentials(&self) -> (String, String) {
        (
            read_secret(&self.s3_access_key_file),
            read_secret(&self.s3_secret_key_file),
        )
    }

    /// A libpq connection string (no password: give it through `PGPASSWORD` or a file) for
    /// `dbname` as the superuser, verify-full against the stack's CA, to `localhost`.
    pub fn pg_url(&self, dbname: &str) -> String {
        format!(
            "host={} port={} user={} dbname={dbname} sslmode=verify-full sslrootcert={}",
            self.pg_host,
            self.pg_port,
            self.pg_admin_user,
            self.ca.display()
        )
    }

    /// librdkafka settings for a SASL_SSL SCRAM client of the secure broker (what
    /// `[kafka.properties]` carries), without `bootstrap.servers`.
    pub fn kafka_properties(
        &self,
        mechanism: &str,
        user: &str,
        password: &str,
    ) -> Vec<(String, String)> {
        [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", mechanism),
            ("sasl.username", user),
            ("sasl.password", password),
            ("ssl.ca.location", &self.ca.display().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// A client configuration: bootstrap `bootstrap`, SCRAM-SHA-512 as the stack's user.
    pub fn kafka_config(&self, bootstrap: &str) -> rdkafka::ClientConfig {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", bootstrap);
        for (k, v) in
            self.kafka_properties("SCRAM-SHA-512", &self.kafka_user, &self.kafka_password())
        {
            c.set(k, v);
        }
        c
    }
}

/// Runs `psql` on `conninfo` with `password` (through `PGPASSWORD`, not the command line),
/// a 5 s connect timeout and no `~/.psqlrc`, running `sql`.
pub fn psql(conninfo: &str, password: &str, sql: &str) -> Output {
    Command::new("psql")
        .args(["-X", "-tA", "-v", "ON_ERROR_STOP=1", conninfo, "-c", sql])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "5")
        .env_remove("PGSSLMODE")
        .env_remove("PGSSLROOTCERT")
        .output()
        .expect("psql missing: run dev/setup")
}

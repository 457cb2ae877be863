//! Kafka helpers: client configuration and topic creation.

use crate::config::KafkaConfig;
use crate::error::{Error, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

/// A librdkafka configuration with `bootstrap.servers`, the extra `kafka.properties` of
/// `cfg` and the SASL password resolved from `kafka.password_file` / `password_env`.
/// Never log it with `Debug`: it holds the password. Callers add their role's settings (group, acks, …).
pub fn client_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers);
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    if let Some(p) = &cfg.sasl_password {
        c.set("sasl.password", p.expose());
    }
    c
}

/// The configuration of the dead-letter producer: [`client_config`] plus
/// `kafka.dlq_properties`.
pub fn dlq_client_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = client_config(cfg);
    for (k, v) in &cfg.dlq_properties {
        c.set(k, v);
    }
    c
}

/// Creates `topic` with `partitions` partitions (replication factor 1 unless the broker's
/// default applies) if it does not exist yet. An existing topic is left as it is.
///
/// # Errors
/// [`Error::TopicCreate`] with the broker's answer, or [`Error::Kafka`] when the admin
/// client cannot be built or the request times out.
pub async fn ensure_topic(cfg: &KafkaConfig, topic: &str, partitions: i32) -> Result<()> {
    ensure_topic_with(client_config(cfg), topic, partitions).await
}

/// As [`ensure_topic`], on the cluster `client` points at (e.g. [`dlq_client_config`]).
///
/// # Errors
/// As [`ensure_topic`].
pub async fn ensure_topic_with(client: ClientConfig, topic: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = client.create()?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for res in admin.create_topics([&new], &opts).await? {
        match res {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(Error::TopicCreate {
                    topic: t,
                    message: code.to_string(),
                })
            }
        }
    }
    Ok(())
}

/// Collects what librdkafka reports while a [`preflight`] client connects: the reasons of its
/// error callbacks (a failed TLS handshake or SASL authentication arrives only there).
#[derive(Default)]
struct Reasons(std::sync::Mutex<Vec<String>>);

impl Reasons {
    fn push(&self, reason: &str) {
        if let Ok(mut v) = self.0.lock() {
            if v.len() < 8 && !v.iter().any(|r| r == reason) {
                v.push(reason.to_string());
            }
        }
    }
}

impl ClientContext for Reasons {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(%error, reason, "kafka client error");
        self.push(reason);
    }

    // A failed TLS handshake is reported in librdkafka's log only (level error/warning,
    // facility FAIL), e.g. "SSL handshake failed: … certificate verify failed".
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        if matches!(
            level,
            L::Emerg | L::Alert | L::Critical | L::Error | L::Warning
        ) {
            tracing::debug!(fac, message, "kafka client log");
            // Drop librdkafka's "host:port/bootstrap: " prefix; the error names the brokers.
            let m = message.split_once(": ").map_or(message, |(_, m)| m);
            self.push(m);
        }
    }
}

impl ConsumerContext for Reasons {}

/// Connects to the cluster with `client` (TLS, SASL and all) and asks for its metadata, so a
/// binary fails at start-up, naming the brokers and librdkafka's reason, instead of retrying
/// in the background: a plain-text client on a TLS listener, an unknown CA, a certificate
/// for another host name, a wrong SASL password.
///
/// # Errors
/// [`Error::KafkaConnect`] when no metadata arrives within `timeout` (ms resolution), with
/// every distinct reason librdkafka reported meanwhile.
pub fn preflight(client: &ClientConfig, timeout: Duration) -> Result<()> {
    let brokers = client
        .get("bootstrap.servers")
        .unwrap_or_default()
        .to_string();
    let mut c = client.clone();
    // A consumer without a group: it only fetches metadata. Warnings and errors of
    // librdkafka's log reach [`Reasons`] whatever the process's log level.
    c.remove("group.id");
    c.set_log_level(rdkafka::config::RDKafkaLogLevel::Warning);
    let consumer: BaseConsumer<Reasons> = c.create_with_context(Reasons::default())?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let err = match consumer.fetch_metadata(None, Duration::from_secs(1)) {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        // Serves the error callbacks (a failed SASL authentication arrives there).
        let _ = consumer.poll(Duration::from_millis(100));
        // A refused handshake or login does not heal by waiting: report it at once.
        let refused = consumer.context().0.lock().is_ok_and(|v| {
            v.iter().any(|r| {
                r.contains("SSL handshake failed")
                    || r.contains("SASL authentication error")
                    || r.contains("Authentication failed")
                    || r.contains("Disconnected while requesting ApiVersion")
            })
        });
        if refused || std::time::Instant::now() >= deadline {
            let reasons = consumer
                .context()
                .0
                .lock()
                .map(|v| v.join("; "))
                .unwrap_or_default();
            return Err(Error::KafkaConnect {
                brokers,
                message: if reasons.is_empty() {
                    err.to_string()
                } else {
                    format!("{reasons} ({err})")
                },
            });
        }
    }
}

/// [`preflight`] of `cfg`'s connection, off the async runtime, with a 15 s timeout.
///
/// # Errors
/// As [`preflight`].
pub async fn check_connection(cfg: &KafkaConfig) -> Result<()> {
    let client = client_config(cfg);
    tokio::task::spawn_blocking(move || preflight(&client, Duration::from_secs(15)))
        .await
        .map_err(|e| Error::KafkaConnect {
            brokers: cfg.brokers.clone(),
            message: e.to_string(),
        })?
}

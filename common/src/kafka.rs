//! Kafka helpers: client configuration and topic creation.

use crate::config::KafkaConfig;
use crate::error::{Error, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

/// A librdkafka configuration with `bootstrap.servers` and the extra
/// `kafka.properties` of `cfg`. Callers add their role's settings (group, acks, …).
pub fn client_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers);
    for (k, v) in &cfg.properties {
        c.set(k, v);
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

//! The retry rule every loop of vitalsink follows: an error is either **transient** (waiting
//! can fix it: a shard restarting, a broker unreachable, a lock, a serialization failure) and
//! is retried with [`Backoff`] while the process is not shutting down, or **permanent**
//! (waiting cannot fix it: permission denied, a missing table, a constraint, a wrong password)
//! and fails loudly, named, at once.
//!
//! The classes follow the sources:
//! - PostgreSQL: the SQLSTATE class (PostgreSQL 17 manual, Appendix A "PostgreSQL Error
//!   Codes"). Classes 08 (connection exception), 40 (transaction rollback: serialization
//!   failure, deadlock), 53 (insufficient resources), 57 (operator intervention: admin
//!   shutdown, cannot connect now, query canceled), 58 (system error) and the codes 25006
//!   (read-only transaction: a standby answered during a failover), 55P03 (lock not
//!   available) and 55006 (object in use) are transient. Every other SQLSTATE is permanent:
//!   a statement that failed on its merits fails again. An error without a SQLSTATE (an I/O
//!   error, a closed connection, a timeout) is transient.
//! - Kafka: the error table of the protocol guide (kafka.apache.org/protocol, "Error Codes",
//!   column *retriable*) and librdkafka's local codes (`rdkafkacpp.h`, `RD_KAFKA_RESP_ERR__*`).
//!   [`kafka_class`] lists the permanent ones; an unlisted code is transient, as most broker
//!   errors are retriable.

use rand::Rng;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

/// Whether retrying can fix an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Retry with backoff (while not shutting down).
    Transient,
    /// Fail now, naming the error.
    Permanent,
}

/// The class of a PostgreSQL driver error (see the module doc for the rule and its source).
pub fn postgres_class(e: &tokio_postgres::Error) -> Class {
    match e.code() {
        None => Class::Transient,
        Some(state) => sqlstate_class(state.code()),
    }
}

/// The class of a five-character SQLSTATE, e.g. `42501` (insufficient privilege) is
/// permanent and `57P01` (admin shutdown) transient.
pub fn sqlstate_class(code: &str) -> Class {
    const TRANSIENT_CLASSES: [&str; 5] = ["08", "40", "53", "57", "58"];
    const TRANSIENT_CODES: [&str; 3] = ["25006", "55P03", "55006"];
    if TRANSIENT_CLASSES.iter().any(|c| code.starts_with(c)) || TRANSIENT_CODES.contains(&code) {
        Class::Transient
    } else {
        Class::Permanent
    }
}

/// What a failed Kafka produce of one record calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProduceClass {
    /// The broker or client may accept the same record later: retry with backoff.
    Transient,
    /// The record is too large for the client's `message.max.bytes` or the topic's
    /// `max.message.bytes`: only a smaller record can succeed.
    TooLarge,
    /// The broker refuses this record itself (corrupt, invalid): no retry of it succeeds.
    RecordRejected,
    /// The client cannot produce to the topic at all (authorization, invalid topic name,
    /// a configuration the broker refuses): no retry of any record succeeds.
    Fatal,
}

/// The class of a Kafka client error of a produce (see the module doc for the source).
pub fn kafka_class(e: &KafkaError) -> ProduceClass {
    let code = match e {
        KafkaError::MessageProduction(c) => *c,
        KafkaError::ClientCreation(_) | KafkaError::ClientConfig(..) => return ProduceClass::Fatal,
        other => match other.rdkafka_error_code() {
            Some(c) => c,
            None => return ProduceClass::Transient,
        },
    };
    produce_code_class(code)
}

/// The class of one librdkafka error code of a produce.
pub fn produce_code_class(code: RDKafkaErrorCode) -> ProduceClass {
    use RDKafkaErrorCode as C;
    match code {
        C::MessageSizeTooLarge | C::InvalidMessageSize | C::MessageBatchTooLarge => {
            ProduceClass::TooLarge
        }
        C::InvalidMessage | C::InvalidRecord | C::BadMessage => ProduceClass::RecordRejected,
        C::TopicAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::GroupAuthorizationFailed
        | C::TransactionalIdAuthorizationFailed
        | C::SaslAuthenticationFailed
        | C::Authentication
        | C::InvalidTopic
        | C::InvalidRequiredAcks
        | C::InvalidConfig
        | C::UnsupportedVersion
        | C::UnsupportedForMessageFormat
        | C::UnsupportedCompressionType
        | C::InvalidArgument
        | C::Fatal => ProduceClass::Fatal,
        _ => ProduceClass::Transient,
    }
}

/// Exponential backoff with full jitter: attempt `n` (from 1) waits a uniformly random time
/// in `[0, min(max, initial × 2^(n-1))]` (AWS Architecture Blog, "Exponential Backoff and
/// Jitter", 2015).
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Ceiling of the first delay.
    pub initial: Duration,
    /// Largest ceiling.
    pub max: Duration,
}

impl Backoff {
    /// The delay before retry number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self
            .initial
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.max);
        ceiling.mul_f64(rand::rng().random::<f64>())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_that_waiting_cannot_fix_are_permanent() {
        for permanent in [
            "42501", "42P01", "42703", "23505", "23514", "22P02", "28P01", "3D000", "XX000",
        ] {
            assert_eq!(sqlstate_class(permanent), Class::Permanent, "{permanent}");
        }
        for transient in [
            "08006", "40001", "40P01", "53100", "57P01", "57P03", "58030", "25006", "55P03",
        ] {
            assert_eq!(sqlstate_class(transient), Class::Transient, "{transient}");
        }
    }

    #[test]
    fn produce_errors_are_told_apart() {
        use RDKafkaErrorCode as C;
        let of = |c| kafka_class(&KafkaError::MessageProduction(c));
        assert_eq!(of(C::MessageSizeTooLarge), ProduceClass::TooLarge);
        assert_eq!(of(C::InvalidRecord), ProduceClass::RecordRejected);
        assert_eq!(of(C::TopicAuthorizationFailed), ProduceClass::Fatal);
        assert_eq!(of(C::UnknownTopicOrPartition), ProduceClass::Transient);
        assert_eq!(of(C::MessageTimedOut), ProduceClass::Transient);
        assert_eq!(of(C::AllBrokersDown), ProduceClass::Transient);
        assert_eq!(kafka_class(&KafkaError::Canceled), ProduceClass::Transient);
    }

    #[test]
    fn backoff_stays_under_its_ceiling() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        for attempt in 1..40 {
            let ceiling = Duration::from_millis(100 * (1u64 << (attempt - 1).min(20)))
                .min(Duration::from_secs(2));
            assert!(b.delay(attempt) <= ceiling);
        }
    }
}

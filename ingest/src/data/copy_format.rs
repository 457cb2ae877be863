//! `measurements` rows in PostgreSQL's `COPY … (FORMAT binary)` format, encoded once when a
//! record is buffered and sent to the shard as-is.
//!
//! The format (PostgreSQL docs, "COPY — Binary Format"): an 11-byte signature
//! `PGCOPY\n\xff\r\n\0`, an `i32` flags field (0: no OIDs) and an `i32` header-extension length
//! (0); then per tuple an `i16` field count and, per field, an `i32` byte length (-1 for NULL)
//! followed by the value in its type's binary send format; then an `i16` -1 trailer. All
//! integers are big-endian. Send formats used here: `text` = the UTF-8 bytes; `float8` = the
//! IEEE 754 bits; `int2`/`int4`/`int8` = the integer; `timestamptz` = an `i64` of microseconds
//! since 2000-01-01T00:00:00Z (`timestamp_send` in PostgreSQL's
//! `src/backend/utils/adt/timestamp.c`).
//!
//! A tuple has the fourteen columns of [`vitalsink_common::columns::COLUMNS`]: the reading, its
//! UTC offset and occurrence (per sample), then its record's receipt time and lineage (the same
//! for every sample of a record; schemas/README.md, "A reading's identity, time and source").

use bytes::Bytes;
use futures::SinkExt;

mod encode;
pub use encode::{encode_message, encode_reading, message_len, occurrences};

/// The COPY statement the encoded tuples are written for; columns in this order
/// ([`vitalsink_common::columns::COLUMNS`]). `table` is `measurements` or a staging table of the
/// same shape.
pub fn copy_sql(table: &str) -> String {
    format!(
        "COPY {table} ({}) FROM STDIN (FORMAT binary)",
        vitalsink_common::columns::column_list()
    )
}

/// Where a record came from and when it arrived: the per-record columns of its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source<'a> {
    /// Source topic.
    pub topic: &'a str,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// The record's Kafka timestamp, µs since the Unix epoch (Kafka keeps ms); `None` when the
    /// record has none.
    pub received_at_micros: Option<i64>,
    /// Its kind (KIP-32): [`vitalsink_common::columns::RECEIVED_CREATE_TIME`] or
    /// [`vitalsink_common::columns::RECEIVED_LOG_APPEND_TIME`].
    pub received_at_type: Option<i16>,
}

impl<'a> Source<'a> {
    /// The source of a consumed record: its topic, partition, offset and timestamp.
    pub fn of(msg: &'a rdkafka::message::BorrowedMessage<'a>) -> Self {
        use rdkafka::message::{Message as _, Timestamp};
        use vitalsink_common::columns::{RECEIVED_CREATE_TIME, RECEIVED_LOG_APPEND_TIME};
        let (received_at_micros, received_at_type) = match msg.timestamp() {
            Timestamp::CreateTime(ms) => {
                (Some(ms.saturating_mul(1000)), Some(RECEIVED_CREATE_TIME))
            }
            Timestamp::LogAppendTime(ms) => (
                Some(ms.saturating_mul(1000)),
                Some(RECEIVED_LOG_APPEND_TIME),
            ),
            Timestamp::NotAvailable => (None, None),
        };
        Self {
            topic: msg.topic(),
            partition: msg.partition(),
            offset: msg.offset(),
            received_at_micros,
            received_at_type,
        }
    }
}

/// Signature, flags and header-extension length that start the COPY data, 19 bytes.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The file trailer: a field count of -1.
const TRAILER: &[u8] = &[0xff, 0xff];
/// Fields per tuple.
const FIELDS: i16 = 14;
/// Microseconds between the Unix epoch and PostgreSQL's epoch, 2000-01-01T00:00:00Z.
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// The most bytes of tuples sent in one COPY data message. tokio-postgres copies each message
/// into its connection's write buffer (`postgres_protocol::message::frontend::CopyData::write`),
/// and that buffer keeps its largest size for the life of the connection: a whole batch per
/// message would make every pooled connection hold up to `ingest.batch_max_bytes` outside
/// the memory budget (issue 27: peak RSS over `ingest.memory_cap_bytes`). Slices of the
/// batch are zero-copy, so smaller messages cost only their 5-byte headers.
pub const COPY_MESSAGE_BYTES: usize = 64 << 10;

/// Runs [`copy_sql`]`(table)` in `tx` with the encoded tuples `parts` (each a whole number of
/// tuples; header and trailer are added here), in messages of at most [`COPY_MESSAGE_BYTES`]. Returns the rows PostgreSQL reports copied. No
/// COPY is started when `parts` is empty.
///
/// # Errors
/// The driver's error (the caller's transaction, or its savepoint, is then unusable).
pub async fn copy_in(
    tx: &tokio_postgres::Transaction<'_>,
    table: &str,
    parts: &[Bytes],
) -> Result<u64, tokio_postgres::Error> {
    if parts.is_empty() {
        return Ok(0);
    }
    let sink = tx.copy_in::<_, Bytes>(&copy_sql(table)).await?;
    futures::pin_mut!(sink);
    sink.feed(Bytes::from_static(HEADER)).await?;
    for p in parts {
        let mut at = 0;
        while at < p.len() {
            let end = (at + COPY_MESSAGE_BYTES).min(p.len());
            sink.feed(p.slice(at..end)).await?;
            at = end;
        }
    }
    sink.feed(Bytes::from_static(TRAILER)).await?;
    sink.finish().await
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;

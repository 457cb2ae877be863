//! The cut-over of an online move: control records into every partition of the
//! measurements topic, then the wait until every shard has applied every partition past its
//! cut-over (`vitalsink_common::cutover` has the rule; `schemas/ROUTING.md` the promise).
//!
//! After that wait the moving participants' rows below the cut-over are final on their old
//! shards — records above it route to the new shards, replays below it are skipped by every
//! shard's offsets — so their history can be copied, verified and deleted while ingest keeps
//! writing (Vitess copies and then catches up from its binlog; here the Kafka log itself is
//! the catch-up, and the cut-over offsets are the fixed positions of Vitess's "stop, catch up,
//! flip").

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use vitalsink_common::cutover::{CONTROL_CUTOVER, CONTROL_HEADER, EPOCH_HEADER, MOVE_HEADER};
use vitalsink_common::db::Shard;
use vitalsink_common::kafka::client_config;
use vitalsink_common::Config;

use crate::error::{Error, Result};

/// How often the wait re-reads the shards' offsets.
const POLL: Duration = Duration::from_millis(500);
/// How often the wait logs where it is.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// The measurements topic's partition ids, from the broker's metadata.
///
/// # Errors
/// [`Error::Kafka`] when the metadata cannot be read or the topic does not exist.
pub fn partitions(cfg: &Config) -> Result<Vec<i32>> {
    let consumer: BaseConsumer = client_config(&cfg.kafka).create()?;
    let md = consumer.fetch_metadata(Some(&cfg.kafka.topic), Duration::from_secs(10))?;
    let ids: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == cfg.kafka.topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if ids.is_empty() {
        return Err(Error::Kafka(format!(
            "topic {} has no partitions (does it exist?)",
            cfg.kafka.topic
        )));
    }
    Ok(ids)
}

/// Publishes a cut-over record to `epoch` for move `move_id` into each of `partitions`
/// (`acks=all`), and waits for every delivery.
///
/// # Errors
/// [`Error::Kafka`] with the first failed delivery; the move stays in phase `cutover` and a
/// re-run publishes again where no cut-over is stored.
pub async fn publish(cfg: &Config, move_id: i64, epoch: i32, partitions: &[i32]) -> Result<()> {
    vitalsink_common::kafka::check_connection(&cfg.kafka).await?;
    let mut c = client_config(&cfg.kafka);
    c.set("acks", "all").set("message.timeout.ms", "30000");
    let producer: FutureProducer = c.create()?;
    let (epoch_s, move_s) = (epoch.to_string(), move_id.to_string());
    let value = serde_json::json!({"control": CONTROL_CUTOVER, "epoch": epoch, "move": move_id})
        .to_string();
    let key = format!("vitalsink-cutover-{epoch}");
    let sends = partitions.iter().map(|&p| {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: CONTROL_HEADER,
                value: Some(CONTROL_CUTOVER),
            })
            .insert(Header {
                key: EPOCH_HEADER,
                value: Some(epoch_s.as_str()),
            })
            .insert(Header {
                key: MOVE_HEADER,
                value: Some(move_s.as_str()),
            });
        let record = FutureRecord::to(&cfg.kafka.topic)
            .partition(p)
            .key(&key)
            .payload(&value)
            .headers(headers);
        producer.send(record, Duration::from_secs(30))
    });
    for res in futures::future::join_all(sends).await {
        if let Err((e, _)) = res {
            return Err(e.into());
        }
    }
    tracing::info!(
        epoch,
        partitions = partitions.len(),
        "cut-over records published"
    );
    Ok(())
}

/// Where the cut-over stands: partitions without a stored cut-over, and records up to the
/// stored ones that some shard has not applied yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Standing {
    /// Partitions no worker has stored the cut-over of yet.
    pub waiting: Vec<i32>,
    /// Sum over cut-over partitions of (cut-over offset + 1 − the lowest next offset over
    /// `shards`), where positive.
    pub lag: i64,
}

impl Standing {
    /// Every partition cut over and applied past it everywhere.
    pub fn reached(&self) -> bool {
        self.waiting.is_empty() && self.lag == 0
    }
}

/// Reads where the cut-over to `epoch` stands over `shards` (every shard a record may route
/// to during the move).
///
/// # Errors
/// Database errors.
pub async fn standing(
    cfg: &Config,
    shards: &[Shard],
    epoch: i32,
    partitions: &[i32],
) -> Result<Standing> {
    let Some(map_shard) = shards.first() else {
        return Ok(Standing::default());
    };
    let cut = vitalsink_common::cutover::load(map_shard, &cfg.kafka.topic, epoch).await?;
    let mut lowest: BTreeMap<i32, i64> = BTreeMap::new();
    for (i, s) in shards.iter().enumerate() {
        let c = s.client().await?;
        let rows = c
            .query(
                "SELECT kafka_partition, next_offset FROM ingest_offsets
                  WHERE consumer_group = $1 AND topic = $2",
                &[&cfg.kafka.group_id, &cfg.kafka.topic],
            )
            .await
            .map_err(|e| s.err(e))?;
        let here: BTreeMap<i32, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        for &p in partitions {
            let o = here.get(&p).copied().unwrap_or(0);
            let e = lowest.entry(p).or_insert(o);
            if i > 0 {
                *e = (*e).min(o);
            }
        }
    }
    let mut st = Standing::default();
    for &p in partitions {
        match cut.get(&p) {
            None => st.waiting.push(p),
            Some(&c) => st.lag += (c + 1 - lowest.get(&p).copied().unwrap_or(0)).max(0),
        }
    }
    Ok(st)
}

/// Waits until the cut-over to `epoch` is reached ([`Standing::reached`]), for at most
/// `timeout`, logging and exporting where it stands.
///
/// # Errors
/// [`Error::Stalled`] at the timeout; database errors.
pub async fn wait(
    cfg: &Config,
    shards: &[Shard],
    epoch: i32,
    partitions: &[i32],
    timeout: Duration,
) -> Result<()> {
    let started = Instant::now();
    let mut logged = Instant::now();
    loop {
        let st = standing(cfg, shards, epoch, partitions).await?;
        crate::metrics::cutover(partitions.len() - st.waiting.len(), st.lag);
        if st.reached() {
            tracing::info!(
                epoch,
                waited_ms = started.elapsed().as_millis() as u64,
                "cut-over reached: every shard applied every partition past its cut-over"
            );
            return Ok(());
        }
        let detail = format!(
            "{} of {} partitions not cut over yet{}, {} records up to the cut-overs not applied everywhere",
            st.waiting.len(),
            partitions.len(),
            if st.waiting.is_empty() {
                String::new()
            } else {
                format!(" ({:?}; are the ingest workers running?)", &st.waiting[..st.waiting.len().min(8)])
            },
            st.lag
        );
        if started.elapsed() >= timeout {
            return Err(Error::Stalled {
                waited_s: started.elapsed().as_secs(),
                detail,
            });
        }
        if logged.elapsed() >= LOG_EVERY {
            tracing::info!(epoch, "waiting for the cut-over: {detail}");
            logged = Instant::now();
        }
        tokio::time::sleep(POLL).await;
    }
}

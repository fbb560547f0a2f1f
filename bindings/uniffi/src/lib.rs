//! The UniFFI binding of the client core, one `cdylib` for Kotlin (`bindings/kotlin`, package
//! `dev.sluiceway.ffi`) and Swift (`bindings/swift`, module `Sluiceway`). It converts types,
//! calls the core's blocking twins for the blocking methods and hands the core's futures to
//! UniFFI for the async ones (Kotlin `suspend`, Swift `async`), and maps errors. Nothing else:
//! every default, retry, batch and position rule lives in `sluiceway_core::client` (see "API
//! boundaries" in `docs/ARCHITECTURE.md`).
//!
//! - Async: the core's futures enter the client runtime whenever they are polled, so whichever
//!   thread the foreign executor polls them on works; no UniFFI async runtime is configured.
//! - Numbers: offsets and timestamps are `i64` (Kotlin `Long`, Swift `Int64`), partitions
//!   `i32` (Kafka's `int`); a negative one is INVALID_ARGUMENT, checked here as a conversion.
//!   Timeouts are `Duration` (Kotlin `java.time.Duration`, Swift `TimeInterval`).
//! - Errors: one [`SluicewayError`] whose only variant carries the code's name, the message
//!   and the retriable flag as fields (`code`, `detail`, `retriable`), so the message reaches Kotlin non-empty (a field-less
//!   variant of a non-flat enum arrives with an empty message). Per-record results of a batch
//!   are [`DeliveryResult`]s holding either metadata or an [`ErrorInfo`].
//! - Batches cross the boundary once: `send_batch` takes a list and returns a list.

// UniFFI's scaffolding macros generate the `extern "C"` functions and their pointer handling.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluiceway_core::client::{
    self, AdminConfig, ConsumerConfig, ConsumerRecord, NewTopic, PollBatch as CorePollBatch,
    ProducerConfig, RebalanceEvent as CoreRebalanceEvent, TopicPartition as CoreTopicPartition,
};
use sluiceway_core::{Error, ErrorCode, Offset};

uniffi::setup_scaffolding!();

// ---------------------------------------------------------------------------------------------
// Errors

/// A core error: the stable code's name (`UNKNOWN_TOPIC_OR_PARTITION`, …), the message, and
/// whether the client's own retry rule would retry it.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum SluicewayError {
    // `detail`, not `message`: Kotlin's generated exception overrides `message` itself.
    #[error("{code}: {detail}")]
    Failed {
        code: String,
        detail: String,
        retriable: bool,
    },
}

impl From<Error> for SluicewayError {
    fn from(e: Error) -> SluicewayError {
        SluicewayError::Failed {
            code: e.code().name().to_owned(),
            detail: e.to_string(),
            retriable: e.is_retriable(),
        }
    }
}

/// The error of one record of a batch (the same fields as [`SluicewayError`]).
#[derive(Debug, Clone, uniffi::Record)]
pub struct ErrorInfo {
    pub code: String,
    pub message: String,
    pub retriable: bool,
}

impl From<Error> for ErrorInfo {
    fn from(e: Error) -> ErrorInfo {
        ErrorInfo {
            code: e.code().name().to_owned(),
            message: e.to_string(),
            retriable: e.is_retriable(),
        }
    }
}

/// One core error code: its name, number and whether it is retriable.
#[derive(Debug, Clone, uniffi::Record)]
pub struct ErrorCodeInfo {
    pub name: String,
    pub number: i32,
    pub retriable: bool,
}

/// Every core error code, for the foreign tests that check each one maps to a typed error.
#[uniffi::export]
pub fn error_codes() -> Vec<ErrorCodeInfo> {
    ErrorCode::ALL
        .iter()
        .map(|c| ErrorCodeInfo {
            name: c.name().to_owned(),
            number: c.as_i32(),
            retriable: c.is_retriable(),
        })
        .collect()
}

type Result<T> = std::result::Result<T, SluicewayError>;

fn invalid(message: String) -> SluicewayError {
    Error::InvalidArgument(message).into()
}

fn timed_out(what: &str) -> SluicewayError {
    Error::TimedOut(format!("{what} did not complete within the timeout")).into()
}

// ---------------------------------------------------------------------------------------------
// Records and conversions

fn to_partition(p: i32, name: &str) -> Result<u32> {
    u32::try_from(p).map_err(|_| invalid(format!("{name} must be a partition number ≥ 0, not {p}")))
}

fn to_offset(o: i64, name: &str) -> Result<Offset> {
    u64::try_from(o)
        .map(Offset)
        .map_err(|_| invalid(format!("{name} must be an offset ≥ 0, not {o}")))
}

/// Offsets are at most `i64::MAX` by the core's contract, so this never saturates in practice.
fn from_offset(o: Offset) -> i64 {
    i64::try_from(o.0).unwrap_or(i64::MAX)
}

/// Partitions are below `PARTITIONS_MAX`, far below `i32::MAX`.
fn from_partition(p: u32) -> i32 {
    i32::try_from(p).unwrap_or(i32::MAX)
}

/// A topic and a partition number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, uniffi::Record)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

fn to_tp(tp: TopicPartition) -> Result<CoreTopicPartition> {
    Ok(CoreTopicPartition::new(
        tp.topic,
        to_partition(tp.partition, "partition")?,
    ))
}

fn to_tps(tps: Vec<TopicPartition>) -> Result<Vec<CoreTopicPartition>> {
    tps.into_iter().map(to_tp).collect()
}

fn from_tps(tps: Vec<CoreTopicPartition>) -> Vec<TopicPartition> {
    tps.into_iter()
        .map(|tp| TopicPartition {
            topic: tp.topic,
            partition: from_partition(tp.partition),
        })
        .collect()
}

/// A record to send. `partition: None` lets the core's partitioner choose (key hash, else
/// sticky); `timestamp: None` means now.
#[derive(Debug, Clone, uniffi::Record)]
pub struct ProducerRecord {
    pub topic: String,
    #[uniffi(default = None)]
    pub value: Option<Vec<u8>>,
    #[uniffi(default = None)]
    pub key: Option<Vec<u8>>,
    #[uniffi(default = None)]
    pub partition: Option<i32>,
    #[uniffi(default = None)]
    pub timestamp: Option<i64>,
}

fn to_record(r: ProducerRecord) -> Result<client::ProducerRecord> {
    Ok(client::ProducerRecord {
        topic: r.topic,
        partition: r
            .partition
            .map(|p| to_partition(p, "partition"))
            .transpose()?,
        key: r.key.map(Bytes::from),
        value: r.value.map(Bytes::from),
        timestamp: r.timestamp,
    })
}

/// Where a record landed; `offset` is `None` with `acks=0`.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct RecordMetadata {
    pub topic: String,
    pub partition: i32,
    pub offset: Option<i64>,
    pub timestamp: i64,
}

impl From<client::RecordMetadata> for RecordMetadata {
    fn from(m: client::RecordMetadata) -> RecordMetadata {
        RecordMetadata {
            topic: m.topic.to_string(),
            partition: from_partition(m.partition),
            offset: m.offset.map(from_offset),
            timestamp: m.timestamp,
        }
    }
}

/// One record's delivery report in a batch: exactly one of `metadata` and `error` is set.
#[derive(Debug, Clone, uniffi::Record)]
pub struct DeliveryResult {
    pub metadata: Option<RecordMetadata>,
    pub error: Option<ErrorInfo>,
}

fn delivery_results(
    rs: Vec<sluiceway_core::Result<client::RecordMetadata>>,
) -> Vec<DeliveryResult> {
    rs.into_iter()
        .map(|r| match r {
            Ok(m) => DeliveryResult {
                metadata: Some(m.into()),
                error: None,
            },
            Err(e) => DeliveryResult {
                metadata: None,
                error: Some(e.into()),
            },
        })
        .collect()
}

/// A consumed record.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Ms since the epoch (−1 when the record has none).
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

impl From<ConsumerRecord> for Record {
    fn from(r: ConsumerRecord) -> Record {
        Record {
            topic: r.topic.to_string(),
            partition: from_partition(r.partition),
            offset: from_offset(r.offset),
            timestamp: r.timestamp,
            key: r.key.map(|k| k.to_vec()),
            value: r.value.map(|v| v.to_vec()),
        }
    }
}

fn records(rs: Vec<ConsumerRecord>) -> Vec<Record> {
    rs.into_iter().map(Record::from).collect()
}

/// A partition and an offset in it (`None`: there is none, e.g. never committed).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PartitionOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: Option<i64>,
}

fn positions(ps: Vec<client::PartitionOffset>) -> Vec<PartitionOffset> {
    ps.into_iter()
        .map(|p| PartitionOffset {
            topic: p.topic,
            partition: from_partition(p.partition),
            offset: p.offset.map(from_offset),
        })
        .collect()
}

/// A change of a group member's assignment (see `RebalanceEvent` in the core).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum RebalanceEvent {
    /// Taken away, with the positions reached: commit now to hand them over without duplicates.
    Revoked { positions: Vec<PartitionOffset> },
    /// Now this member's, each with the group's committed offset (or none).
    Assigned { positions: Vec<PartitionOffset> },
}

/// What one `poll_batch` returns: records, or rebalance events.
#[derive(Debug, Clone, uniffi::Record)]
pub struct PollBatch {
    pub records: Vec<Record>,
    pub events: Vec<RebalanceEvent>,
}

impl From<CorePollBatch> for PollBatch {
    fn from(b: CorePollBatch) -> PollBatch {
        PollBatch {
            records: records(b.records),
            events: b
                .events
                .into_iter()
                .map(|e| match e {
                    CoreRebalanceEvent::Revoked(ps) => RebalanceEvent::Revoked {
                        positions: positions(ps),
                    },
                    CoreRebalanceEvent::Assigned(ps) => RebalanceEvent::Assigned {
                        positions: positions(ps),
                    },
                })
                .collect(),
        }
    }
}

/// A topic as listed by the admin client.
#[derive(Debug, Clone, uniffi::Record)]
pub struct TopicListing {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i32,
}

// ---------------------------------------------------------------------------------------------
// Producer

/// The producer (`ProducerConfig::from_map` keys: `bootstrap.servers`, `linger.ms`, …).
#[derive(Debug, uniffi::Object)]
pub struct Producer(client::Producer);

#[uniffi::export]
impl Producer {
    #[uniffi::constructor]
    pub fn new(config: HashMap<String, String>) -> Result<Arc<Producer>> {
        let config = ProducerConfig::from_map(&config)?;
        Ok(Arc::new(Producer(client::Producer::new_blocking(config)?)))
    }

    /// Sends one record and waits for its delivery report.
    pub async fn send(&self, record: ProducerRecord) -> Result<RecordMetadata> {
        let delivery = self.0.send(to_record(record)?).await?;
        Ok(delivery.await?.into())
    }

    /// Queues one record (blocking while the buffer is full) and returns its delivery handle.
    pub fn send_blocking(&self, record: ProducerRecord) -> Result<Arc<Delivery>> {
        let d = self.0.send_blocking(to_record(record)?)?;
        Ok(Arc::new(Delivery(d)))
    }

    /// Sends a batch (one boundary crossing) and waits for every record's report, in order.
    pub async fn send_batch(&self, records: Vec<ProducerRecord>) -> Result<Vec<DeliveryResult>> {
        let records = records.into_iter().map(to_record).collect::<Result<_>>()?;
        Ok(delivery_results(
            self.0.send_batch(records).await?.wait().await,
        ))
    }

    /// Sends a batch and waits up to `timeout` (`None`: until every record resolves, at the
    /// latest by `delivery.timeout.ms`) for every record's report, in order.
    pub fn send_batch_blocking(
        &self,
        records: Vec<ProducerRecord>,
        timeout: Option<Duration>,
    ) -> Result<Vec<DeliveryResult>> {
        let records = records.into_iter().map(to_record).collect::<Result<_>>()?;
        let batch = self.0.send_batch_blocking(records)?;
        match batch.wait_blocking(timeout) {
            Some(rs) => Ok(delivery_results(rs)),
            None => Err(timed_out("the batch's delivery")),
        }
    }

    pub async fn flush(&self, timeout: Option<Duration>) -> Result<()> {
        Ok(self.0.flush(timeout).await?)
    }

    pub fn flush_blocking(&self, timeout: Option<Duration>) -> Result<()> {
        Ok(self.0.flush_blocking(timeout)?)
    }

    pub async fn close(&self, timeout: Option<Duration>) -> Result<()> {
        Ok(self.0.close(timeout).await?)
    }

    pub fn close_blocking(&self, timeout: Option<Duration>) -> Result<()> {
        Ok(self.0.close_blocking(timeout)?)
    }
}

/// The delivery report of one `send_blocking`.
#[derive(Debug, uniffi::Object)]
pub struct Delivery(client::DeliveryFuture);

#[uniffi::export]
impl Delivery {
    /// Waits up to `timeout` (`None`: until resolved) for the record's metadata.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<RecordMetadata> {
        match self.0.wait_blocking(timeout) {
            Some(r) => Ok(r?.into()),
            None => Err(timed_out("the delivery")),
        }
    }

    pub fn is_done(&self) -> bool {
        self.0.is_done()
    }
}

// ---------------------------------------------------------------------------------------------
// Consumer

/// The consumer (`ConsumerConfig::from_map` keys: `bootstrap.servers`, `group.id`, …).
#[derive(Debug, uniffi::Object)]
pub struct Consumer(client::Consumer);

#[uniffi::export]
impl Consumer {
    #[uniffi::constructor]
    pub fn new(config: HashMap<String, String>) -> Result<Arc<Consumer>> {
        let config = ConsumerConfig::from_map(&config)?;
        Ok(Arc::new(Consumer(client::Consumer::new_blocking(config)?)))
    }

    pub fn assign(&self, partitions: Vec<TopicPartition>) -> Result<()> {
        Ok(self.0.assign(to_tps(partitions)?)?)
    }

    pub fn assignment(&self) -> Vec<TopicPartition> {
        from_tps(self.0.assignment())
    }

    pub async fn subscribe(&self, topics: Vec<String>) -> Result<()> {
        Ok(self.0.subscribe(topics).await?)
    }

    pub fn subscribe_blocking(&self, topics: Vec<String>) -> Result<()> {
        Ok(self.0.subscribe_blocking(topics)?)
    }

    pub fn subscription(&self) -> Vec<String> {
        self.0.subscription()
    }

    pub fn unsubscribe_blocking(&self) -> Result<()> {
        Ok(self.0.unsubscribe_blocking()?)
    }

    pub async fn poll(&self, timeout: Duration) -> Result<Vec<Record>> {
        Ok(records(self.0.poll(timeout).await?))
    }

    pub fn poll_blocking(&self, timeout: Duration) -> Result<Vec<Record>> {
        Ok(records(self.0.poll_blocking(timeout)?))
    }

    pub async fn poll_batch(
        &self,
        timeout: Duration,
        max_records: Option<u32>,
    ) -> Result<PollBatch> {
        Ok(self.0.poll_batch(timeout, max_records).await?.into())
    }

    pub fn poll_batch_blocking(
        &self,
        timeout: Duration,
        max_records: Option<u32>,
    ) -> Result<PollBatch> {
        Ok(self.0.poll_batch_blocking(timeout, max_records)?.into())
    }

    pub fn seek(&self, partition: TopicPartition, offset: i64) -> Result<()> {
        Ok(self
            .0
            .seek(&to_tp(partition)?, to_offset(offset, "offset")?)?)
    }

    /// `None`: every assigned partition.
    pub fn seek_to_beginning_blocking(
        &self,
        partitions: Option<Vec<TopicPartition>>,
    ) -> Result<()> {
        let tps = partitions.map(to_tps).transpose()?;
        Ok(self.0.seek_to_beginning_blocking(tps.as_deref())?)
    }

    pub fn seek_to_end_blocking(&self, partitions: Option<Vec<TopicPartition>>) -> Result<()> {
        let tps = partitions.map(to_tps).transpose()?;
        Ok(self.0.seek_to_end_blocking(tps.as_deref())?)
    }

    pub fn seek_to_timestamp_blocking(
        &self,
        timestamp_ms: i64,
        partitions: Option<Vec<TopicPartition>>,
    ) -> Result<()> {
        let tps = partitions.map(to_tps).transpose()?;
        Ok(self
            .0
            .seek_to_timestamp_blocking(tps.as_deref(), timestamp_ms)?)
    }

    pub fn position_blocking(&self, partition: TopicPartition) -> Result<i64> {
        Ok(from_offset(self.0.position_blocking(&to_tp(partition)?)?))
    }

    pub fn committed(&self, partition: TopicPartition) -> Result<Option<i64>> {
        Ok(self.0.committed(&to_tp(partition)?).map(from_offset))
    }

    /// Commits the current positions.
    pub async fn commit(&self) -> Result<()> {
        Ok(self.0.commit().await?)
    }

    pub fn commit_blocking(&self) -> Result<()> {
        Ok(self.0.commit_blocking()?)
    }

    /// Commits the given offsets (each must have one).
    pub fn commit_offsets_blocking(&self, offsets: Vec<PartitionOffset>) -> Result<()> {
        let os = offsets
            .into_iter()
            .map(|o| {
                let offset = o.offset.ok_or_else(|| {
                    invalid(format!(
                        "no offset to commit for {}-{}",
                        o.topic, o.partition
                    ))
                })?;
                Ok((
                    CoreTopicPartition::new(o.topic, to_partition(o.partition, "partition")?),
                    to_offset(offset, "offset")?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(self.0.commit_offsets_blocking(os)?)
    }

    pub fn pause(&self, partitions: Vec<TopicPartition>) -> Result<()> {
        Ok(self.0.pause(&to_tps(partitions)?)?)
    }

    pub fn resume(&self, partitions: Vec<TopicPartition>) -> Result<()> {
        Ok(self.0.resume(&to_tps(partitions)?)?)
    }

    pub fn paused(&self) -> Vec<TopicPartition> {
        from_tps(self.0.paused())
    }

    pub async fn close(&self, timeout: Option<Duration>) -> Result<()> {
        Ok(self.0.close(timeout).await?)
    }

    pub fn close_blocking(&self, timeout: Option<Duration>) -> Result<()> {
        Ok(self.0.close_blocking(timeout)?)
    }
}

// ---------------------------------------------------------------------------------------------
// Admin

/// The admin client (`AdminConfig::from_map` keys: `bootstrap.servers`, …).
#[derive(Debug, uniffi::Object)]
pub struct Admin(client::Admin);

#[uniffi::export]
impl Admin {
    #[uniffi::constructor]
    pub fn new(config: HashMap<String, String>) -> Result<Arc<Admin>> {
        let config = AdminConfig::from_map(&config)?;
        Ok(Arc::new(Admin(client::Admin::new_blocking(config)?)))
    }

    /// Creates a topic; returns its number of partitions. `replication_factor: None` is the
    /// core's default.
    pub fn create_topic_blocking(
        &self,
        name: String,
        partitions: i32,
        replication_factor: Option<i32>,
        configs: HashMap<String, String>,
    ) -> Result<i32> {
        let mut t = NewTopic::new(name, to_partition(partitions, "partitions")?);
        if let Some(n) = replication_factor {
            t = t.replication_factor(to_partition(n, "replication_factor")?);
        }
        t.configs = configs.into_iter().collect();
        let m = self.0.create_topic_blocking(t)?;
        Ok(i32::try_from(m.partitions.len()).unwrap_or(i32::MAX))
    }

    pub fn delete_topic_blocking(&self, name: String) -> Result<()> {
        Ok(self.0.delete_topic_blocking(&name)?)
    }

    pub fn list_topics_blocking(&self) -> Result<Vec<TopicListing>> {
        Ok(self
            .0
            .list_topics_blocking()?
            .into_iter()
            .map(|t| TopicListing {
                name: t.name,
                partitions: from_partition(t.partitions),
                replication_factor: from_partition(t.replication_factor),
            })
            .collect())
    }
}

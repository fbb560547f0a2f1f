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
//! - Admin: topics, consumer groups (listing, description, lag) and offset lookups, as the
//!   core's `Admin` returns them; `decode_message_set` is the core's codec (conformance C4).

// UniFFI's scaffolding macros generate the `extern "C"` functions and their pointer handling.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use sluiceway_core::client::{
    self, AdminConfig, ConsumerConfig, ConsumerRecord, GroupState as CoreGroupState, NewTopic,
    OffsetSpec as CoreOffsetSpec, PollBatch as CorePollBatch, ProducerConfig,
    RebalanceEvent as CoreRebalanceEvent, TimestampType as CoreTimestampType,
    TopicPartition as CoreTopicPartition,
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
// Keys and values

/// A key or value: UniFFI `bytes` on the foreign side (Kotlin `ByteArray`, Swift `Data`; the
/// same wire form and metadata as `Vec<u8>`, so the generated code is unchanged), a
/// `bytes::Bytes` here. UniFFI's own `Vec<u8>` conversion moves one byte per step in both
/// directions, which made the per-byte cost of every send and poll; this one copies each value
/// in bulk, hands a consumed record's `Bytes` to the foreign side without an intermediate
/// `Vec`, and takes a whole-argument buffer over as the `Bytes` without any copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload(pub Bytes);

/// A value longer than `i32::MAX` cannot cross (UniFFI's lengths are `i32`); the core's message
/// size limits keep every key and value far below it.
fn payload_len(len: usize) -> i32 {
    i32::try_from(len).expect("a key or value is shorter than i32::MAX bytes")
}

// SAFETY: the wire form is exactly that of `Vec<u8>` (a big-endian `i32` length, then the
// bytes) and `TYPE_ID_META` is `Vec<u8>`'s, so the generated foreign code reads and writes it
// as it does any `bytes` value.
unsafe impl uniffi::FfiConverter<crate::UniFfiTag> for Payload {
    type FfiType = uniffi::RustBuffer;

    fn lower(obj: Payload) -> uniffi::RustBuffer {
        let mut buf = Vec::with_capacity(4 + obj.0.len());
        <Payload as uniffi::FfiConverter<crate::UniFfiTag>>::write(obj, &mut buf);
        uniffi::RustBuffer::from_vec(buf)
    }

    /// A whole argument: the foreign side's buffer (allocated by this library) becomes the
    /// `Bytes`, past the length prefix, without a copy.
    fn try_lift(buf: uniffi::RustBuffer) -> uniffi::Result<Payload> {
        let mut data = Bytes::from(buf.destroy_into_vec());
        uniffi::check_remaining(&data, 4)?;
        let len = usize::try_from(data.get_i32())?;
        if data.len() != len {
            uniffi::deps::anyhow::bail!("bytes of length {len} in a buffer of {}", data.len());
        }
        Ok(Payload(data))
    }

    fn write(obj: Payload, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&payload_len(obj.0.len()).to_be_bytes());
        buf.extend_from_slice(&obj.0);
    }

    fn try_read(buf: &mut &[u8]) -> uniffi::Result<Payload> {
        uniffi::check_remaining(buf, 4)?;
        let len = usize::try_from(buf.get_i32())?;
        uniffi::check_remaining(buf, len)?;
        let (value, rest) = buf.split_at(len);
        *buf = rest;
        Ok(Payload(Bytes::copy_from_slice(value)))
    }

    const TYPE_ID_META: uniffi::MetadataBuffer =
        <Vec<u8> as uniffi::TypeId<crate::UniFfiTag>>::TYPE_ID_META;
}

uniffi::derive_ffi_traits!(impl Lower<crate::UniFfiTag> for Payload);
uniffi::derive_ffi_traits!(impl Lift<crate::UniFfiTag> for Payload);
uniffi::derive_ffi_traits!(impl LowerReturn<crate::UniFfiTag> for Payload);
uniffi::derive_ffi_traits!(impl LiftReturn<crate::UniFfiTag> for Payload);
uniffi::derive_ffi_traits!(impl LiftRef<crate::UniFfiTag> for Payload);
uniffi::derive_ffi_traits!(impl TypeId<crate::UniFfiTag> for Payload);

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
    pub value: Option<Payload>,
    #[uniffi(default = None)]
    pub key: Option<Payload>,
    #[uniffi(default = None)]
    pub partition: Option<i32>,
    #[uniffi(default = None)]
    pub timestamp: Option<i64>,
    /// Kafka's record headers, in order (keys may repeat): the record goes in a magic 2 batch.
    #[uniffi(default = [])]
    pub headers: Vec<RecordHeader>,
}

fn to_record(r: ProducerRecord) -> Result<client::ProducerRecord> {
    Ok(client::ProducerRecord {
        topic: r.topic.into(),
        partition: r
            .partition
            .map(|p| to_partition(p, "partition"))
            .transpose()?,
        key: r.key.map(|k| k.0),
        value: r.value.map(|v| v.0),
        timestamp: r.timestamp,
        headers: r
            .headers
            .into_iter()
            .map(|h| client::RecordHeader {
                key: h.key,
                value: h.value.map(|v| v.0),
            })
            .collect(),
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
    pub key: Option<Payload>,
    pub value: Option<Payload>,
    /// Its headers in order (magic 2 records); empty for records without.
    pub headers: Vec<RecordHeader>,
}

/// One record header: a UTF-8 key (keys may repeat) and a value that may be null.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct RecordHeader {
    pub key: String,
    pub value: Option<Payload>,
}

impl From<ConsumerRecord> for Record {
    fn from(r: ConsumerRecord) -> Record {
        Record {
            topic: r.topic.to_string(),
            partition: from_partition(r.partition),
            offset: from_offset(r.offset),
            timestamp: r.timestamp,
            key: r.key.map(Payload),
            value: r.value.map(Payload),
            headers: r
                .headers
                .into_iter()
                .map(|h| RecordHeader {
                    key: h.key,
                    value: h.value.map(Payload),
                })
                .collect(),
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

/// The code's name, or `None` for `ErrorCode::None` (a per-entry "no error").
fn code_name(code: ErrorCode) -> Option<String> {
    (code != ErrorCode::None).then(|| code.name().to_owned())
}

/// One partition of a described topic, as the registry places it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PartitionInfo {
    pub partition: i32,
    /// The leader's broker id; `None` while the partition has no leader.
    pub leader: Option<i32>,
    pub leader_epoch: i32,
    /// Broker ids holding a replica, the preferred leader first.
    pub replicas: Vec<i32>,
    /// The in-sync replicas.
    pub isr: Vec<i32>,
    /// `None`, or the code name of why the partition is unusable now (`LEADER_NOT_AVAILABLE`, …).
    pub error: Option<String>,
}

/// A topic's placement and configuration.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct TopicDescription {
    pub name: String,
    pub partitions: Vec<PartitionInfo>,
    /// The overrides given at creation.
    pub configs: HashMap<String, String>,
    /// Every key with its effective value.
    pub effective_configs: HashMap<String, String>,
}

impl From<client::TopicDescription> for TopicDescription {
    fn from(d: client::TopicDescription) -> TopicDescription {
        TopicDescription {
            name: d.topic.name,
            partitions: d
                .topic
                .partitions
                .into_iter()
                .map(|p| PartitionInfo {
                    partition: from_partition(p.partition),
                    leader: p.leader_id,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replicas,
                    isr: p.isr,
                    error: code_name(p.error),
                })
                .collect(),
            configs: d.configs.into_iter().collect(),
            effective_configs: d.effective_configs.into_iter().collect(),
        }
    }
}

/// A consumer group's state as its coordinator reports it (the core's `GroupState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    Stable,
    /// The coordinator knows nothing of the group (no members, no committed offsets).
    Dead,
    /// A state this client does not know (a newer broker).
    Unknown,
}

impl From<CoreGroupState> for GroupState {
    fn from(s: CoreGroupState) -> GroupState {
        match s {
            CoreGroupState::Empty => GroupState::Empty,
            CoreGroupState::PreparingRebalance => GroupState::PreparingRebalance,
            CoreGroupState::Stable => GroupState::Stable,
            CoreGroupState::Dead => GroupState::Dead,
            CoreGroupState::Unknown => GroupState::Unknown,
        }
    }
}

/// A group in a listing.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct GroupListing {
    pub group_id: String,
    pub state: GroupState,
    pub members: i32,
    /// The current generation (0 for a group that only has committed offsets).
    pub generation: i32,
}

/// A member of a described group.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct MemberDescription {
    pub member_id: String,
    pub client_id: String,
    /// The topics it subscribed to.
    pub topics: Vec<String>,
    /// Its partitions in the current generation (empty until a rebalance assigns them).
    pub assignment: Vec<TopicPartition>,
}

/// A group's committed offset for one partition.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct CommittedOffset {
    pub topic: String,
    pub partition: i32,
    /// The next offset the group will read; `None` when it committed none.
    pub offset: Option<i64>,
    pub metadata: String,
    /// When it was committed (ms, the coordinator's clock); `None` when it committed none.
    pub commit_timestamp: Option<i64>,
    /// `None`, or the code name of why this partition has no offset.
    pub error: Option<String>,
}

/// One group: state, members with their partitions, committed offsets.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: GroupState,
    pub generation: i32,
    /// The partition assignor ("range", "roundrobin"); `None` while the group has no members.
    pub assignor: Option<String>,
    /// Sorted by member id.
    pub members: Vec<MemberDescription>,
    /// Sorted by partition.
    pub offsets: Vec<CommittedOffset>,
}

impl From<client::GroupDescription> for GroupDescription {
    fn from(g: client::GroupDescription) -> GroupDescription {
        GroupDescription {
            group_id: g.group_id,
            state: g.state.into(),
            generation: g.generation,
            assignor: g.assignor,
            members: g
                .members
                .into_iter()
                .map(|m| MemberDescription {
                    member_id: m.member_id,
                    client_id: m.client_id,
                    topics: m.topics,
                    assignment: from_tps(m.assignment),
                })
                .collect(),
            offsets: g
                .offsets
                .into_iter()
                .map(|o| CommittedOffset {
                    topic: o.partition.topic,
                    partition: from_partition(o.partition.partition),
                    offset: o.offset.map(from_offset),
                    metadata: o.metadata,
                    commit_timestamp: o.commit_timestamp.map(|t| t.0),
                    error: code_name(o.error),
                })
                .collect(),
        }
    }
}

/// One partition of a group with its consumer lag (`kafka-consumer-groups --describe`).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct GroupPartitionLag {
    pub topic: String,
    pub partition: i32,
    /// The member that owns it in the current generation; `None` when no member does.
    pub member_id: Option<String>,
    pub client_id: Option<String>,
    /// The group's committed offset; `None` when it committed none.
    pub committed: Option<i64>,
    /// The partition's high watermark at its leader; `None` when the lookup failed.
    pub log_end_offset: Option<i64>,
    /// `log_end_offset − committed` (0 when the commit is ahead); `None` when either is unknown.
    pub lag: Option<i64>,
}

impl From<client::GroupPartitionLag> for GroupPartitionLag {
    fn from(l: client::GroupPartitionLag) -> GroupPartitionLag {
        GroupPartitionLag {
            topic: l.partition.topic,
            partition: from_partition(l.partition.partition),
            member_id: l.member_id,
            client_id: l.client_id,
            committed: l.committed.map(from_offset),
            log_end_offset: l.log_end_offset.map(from_offset),
            lag: l.lag.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
        }
    }
}

/// Which offset `list_offsets` looks up (Kafka's `OffsetSpec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// The high watermark (the offset the next consumed message will get).
    Latest,
    /// The first offset whose timestamp is ≥ `timestamp_ms` (ms since the epoch).
    Timestamp { timestamp_ms: i64 },
}

/// One `list_offsets` lookup.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct OffsetQuery {
    pub topic: String,
    pub partition: i32,
    pub spec: OffsetSpec,
}

/// A `list_offsets` answer for one partition.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ListedOffset {
    pub topic: String,
    pub partition: i32,
    /// The offset found; `None` when a timestamp lookup found no message at or after it.
    pub offset: Option<i64>,
    pub log_start_offset: i64,
    pub high_watermark: i64,
}

/// One lookup's outcome: exactly one of `listed` and `error` is set.
#[derive(Debug, Clone, uniffi::Record)]
pub struct ListedOffsetResult {
    pub listed: Option<ListedOffset>,
    pub error: Option<ErrorInfo>,
}

// ---------------------------------------------------------------------------------------------
// The message format (the golden vectors, conformance C4)

/// Whether a timestamp is the producer's (create time) or the broker's (log-append time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// One logical message of a decoded message set.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct DecodedRecord {
    pub offset: i64,
    /// Ms since the epoch; −1 for magic-0 messages, which carry none.
    pub timestamp: i64,
    pub timestamp_type: TimestampType,
    pub key: Option<Payload>,
    pub value: Option<Payload>,
    /// Magic 2 records' headers, in order; empty for magic 0/1.
    pub headers: Vec<RecordHeader>,
}

/// Decodes a stored message set (the bytes of a segment or of a fetch answer) with the core's
/// codec, `format::for_each_record`: every record in offset order, wrappers decompressed, every
/// CRC checked. For the golden-vector tests (C4).
#[uniffi::export]
pub fn decode_message_set(data: Payload) -> Result<Vec<DecodedRecord>> {
    let mut out = Vec::new();
    sluiceway_core::format::for_each_record(&data.0, &mut Vec::new(), |r| {
        out.push(DecodedRecord {
            offset: from_offset(r.offset),
            timestamp: r.timestamp.0,
            timestamp_type: match r.timestamp_type {
                CoreTimestampType::CreateTime => TimestampType::CreateTime,
                CoreTimestampType::LogAppendTime => TimestampType::LogAppendTime,
            },
            key: r.key.map(|k| Payload(Bytes::copy_from_slice(k))),
            value: r.value.map(|v| Payload(Bytes::copy_from_slice(v))),
            headers: r
                .headers
                .iter()
                .map(|h| RecordHeader {
                    key: h.key.to_owned(),
                    value: h.value.map(|v| Payload(Bytes::copy_from_slice(v))),
                })
                .collect(),
        });
    })?;
    Ok(out)
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
    pub async fn create_topic(
        &self,
        name: String,
        partitions: i32,
        replication_factor: Option<i32>,
        configs: HashMap<String, String>,
    ) -> Result<i32> {
        let t = new_topic(name, partitions, replication_factor, configs)?;
        Ok(partition_count(&self.0.create_topic(t).await?))
    }

    /// [`Admin::create_topic`], blocking the calling thread.
    pub fn create_topic_blocking(
        &self,
        name: String,
        partitions: i32,
        replication_factor: Option<i32>,
        configs: HashMap<String, String>,
    ) -> Result<i32> {
        let t = new_topic(name, partitions, replication_factor, configs)?;
        Ok(partition_count(&self.0.create_topic_blocking(t)?))
    }

    pub async fn delete_topic(&self, name: String) -> Result<()> {
        Ok(self.0.delete_topic(&name).await?)
    }

    pub fn delete_topic_blocking(&self, name: String) -> Result<()> {
        Ok(self.0.delete_topic_blocking(&name)?)
    }

    pub async fn list_topics(&self) -> Result<Vec<TopicListing>> {
        Ok(topic_listings(self.0.list_topics().await?))
    }

    pub fn list_topics_blocking(&self) -> Result<Vec<TopicListing>> {
        Ok(topic_listings(self.0.list_topics_blocking()?))
    }

    /// One topic's partitions (leader, replicas, in-sync replicas) and configuration.
    pub async fn describe_topic(&self, name: String) -> Result<TopicDescription> {
        Ok(self.0.describe_topic(&name).await?.into())
    }

    pub fn describe_topic_blocking(&self, name: String) -> Result<TopicDescription> {
        Ok(self.0.describe_topic_blocking(&name)?.into())
    }

    /// Every consumer group of the cluster, sorted by id.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        Ok(group_listings(self.0.list_groups().await?))
    }

    pub fn list_groups_blocking(&self) -> Result<Vec<GroupListing>> {
        Ok(group_listings(self.0.list_groups_blocking()?))
    }

    /// One group's state, members with their assignments, and committed offsets. A group the
    /// coordinator knows nothing of is described as `Dead` (the core's rule), not an error.
    pub async fn describe_group(&self, group_id: String) -> Result<GroupDescription> {
        Ok(self.0.describe_group(&group_id).await?.into())
    }

    pub fn describe_group_blocking(&self, group_id: String) -> Result<GroupDescription> {
        Ok(self.0.describe_group_blocking(&group_id)?.into())
    }

    /// The group's partitions with owner, committed offset, log end and lag: the core's
    /// `group_lag` of its `describe_group`.
    pub async fn group_lag(&self, group_id: String) -> Result<Vec<GroupPartitionLag>> {
        let group = self.0.describe_group(&group_id).await?;
        Ok(lag_rows(self.0.group_lag(&group).await))
    }

    pub fn group_lag_blocking(&self, group_id: String) -> Result<Vec<GroupPartitionLag>> {
        let group = self.0.describe_group_blocking(&group_id)?;
        Ok(lag_rows(self.0.group_lag_blocking(&group)?))
    }

    /// Looks offsets up at each partition's leader: one result per query, in order.
    pub async fn list_offsets(&self, queries: Vec<OffsetQuery>) -> Result<Vec<ListedOffsetResult>> {
        let specs = offset_specs(queries)?;
        let results = self.0.list_offsets(&specs).await;
        Ok(listed_offsets(results, specs))
    }

    pub fn list_offsets_blocking(
        &self,
        queries: Vec<OffsetQuery>,
    ) -> Result<Vec<ListedOffsetResult>> {
        let specs = offset_specs(queries)?;
        let results = self.0.list_offsets_blocking(&specs)?;
        Ok(listed_offsets(results, specs))
    }
}

fn new_topic(
    name: String,
    partitions: i32,
    replication_factor: Option<i32>,
    configs: HashMap<String, String>,
) -> Result<NewTopic> {
    let mut t = NewTopic::new(name, to_partition(partitions, "partitions")?);
    if let Some(n) = replication_factor {
        t = t.replication_factor(to_partition(n, "replication_factor")?);
    }
    t.configs = configs.into_iter().collect();
    Ok(t)
}

fn partition_count(m: &client::TopicMetadata) -> i32 {
    i32::try_from(m.partitions.len()).unwrap_or(i32::MAX)
}

fn topic_listings(topics: Vec<client::TopicListing>) -> Vec<TopicListing> {
    topics
        .into_iter()
        .map(|t| TopicListing {
            name: t.name,
            partitions: from_partition(t.partitions),
            replication_factor: from_partition(t.replication_factor),
        })
        .collect()
}

fn group_listings(groups: Vec<client::GroupListing>) -> Vec<GroupListing> {
    groups
        .into_iter()
        .map(|g| GroupListing {
            group_id: g.group_id,
            state: g.state.into(),
            members: i32::try_from(g.members).unwrap_or(i32::MAX),
            generation: g.generation,
        })
        .collect()
}

fn lag_rows(rows: Vec<client::GroupPartitionLag>) -> Vec<GroupPartitionLag> {
    rows.into_iter().map(GroupPartitionLag::from).collect()
}

fn offset_specs(queries: Vec<OffsetQuery>) -> Result<Vec<(CoreTopicPartition, CoreOffsetSpec)>> {
    queries
        .into_iter()
        .map(|q| {
            let spec = match q.spec {
                OffsetSpec::Earliest => CoreOffsetSpec::Earliest,
                OffsetSpec::Latest => CoreOffsetSpec::Latest,
                OffsetSpec::Timestamp { timestamp_ms } => CoreOffsetSpec::Timestamp(timestamp_ms),
            };
            Ok((
                CoreTopicPartition::new(q.topic, to_partition(q.partition, "partition")?),
                spec,
            ))
        })
        .collect()
}

fn listed_offsets(
    results: Vec<sluiceway_core::Result<client::ListedOffset>>,
    specs: Vec<(CoreTopicPartition, CoreOffsetSpec)>,
) -> Vec<ListedOffsetResult> {
    results
        .into_iter()
        .zip(specs)
        .map(|(r, (tp, _))| match r {
            Ok(l) => ListedOffsetResult {
                listed: Some(ListedOffset {
                    topic: tp.topic,
                    partition: from_partition(tp.partition),
                    offset: l.offset.map(from_offset),
                    log_start_offset: from_offset(l.log_start_offset),
                    high_watermark: from_offset(l.high_watermark),
                }),
                error: None,
            },
            Err(e) => ListedOffsetResult {
                listed: None,
                error: Some(e.into()),
            },
        })
        .collect()
}

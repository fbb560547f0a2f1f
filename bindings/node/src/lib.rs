//! The Node.js binding of Sluiceway's client core (napi-rs), loaded by the npm package
//! `sluiceway` (`node/`) as its private native module. It converts types and errors and does
//! nothing else: every behaviour (batching, retries, partitioning, positions, defaults,
//! rebalances) is `sluiceway_core::client`'s, and the kafkajs-shaped API is TypeScript
//! (`node/src/*.ts`) over the generated `native.d.ts`.
//!
//! Conversions:
//! - Offsets and timestamps cross as decimal strings (int64 never becomes a lossy JS number); a
//!   malformed string is an `InvalidArg` error naming the argument, which TypeScript throws as
//!   a `TypeError`. In the per-record columns below they cross as a `Float64Array` ([`Exact`]):
//!   exact while every number is within ±2^53 (offsets and ms timestamps always are in
//!   practice), else with a comma-separated decimal string beside it that TypeScript reads
//!   instead; TypeScript makes a number a string only when its field is read.
//! - The per-record paths cross in columns, so the boundary costs a few napi calls per call,
//!   not several per record (each `Buffer` read from JS is a reference that must be released on
//!   Node's thread; each one made is an external buffer with a finalizer): a `send` passes
//!   [`JsRecordColumns`] (values end to end in one `Buffer` that the records share, lengths in
//!   an `Int32Array`) and gets [`JsDeliveries`] (typed arrays); a poll returns a
//!   [`JsRecordBatch`] (keys and values end to end in two `Buffer`s, which TypeScript hands
//!   out as views).
//! - A core `Error` rejects with the reason `sluiceway:<CODE_NAME>:<0|1 retriable>:<message and
//!   causes>`; TypeScript turns it into a `SluicewayError` subclass (`node/src/errors.ts`). A
//!   per-record failure in a batch is an [`ErrorInfo`] object instead.
//! - Calls that wait are `async fn`s (Promises): napi polls them on its own tokio runtime, and
//!   the core enters its client runtime for every call (`core/src/client/runtime.rs`), so
//!   nothing runs on, or blocks, Node's event loop.

/// The binding's Rust allocations only (see `Cargo.toml`); the host's are its own.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashMap;
use std::error::Error as _;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use napi::bindgen_prelude::{
    Buffer, BufferSlice, Float64Array, Int32Array, JsValue, Status, ToNapiValue, TypeName,
    Uint8Array, Uint32Array, ValueType,
};
use napi::{Env, sys};
use napi_derive::napi;
use sluiceway_core::client::{
    Acks, Admin, AdminConfig, Compression, Consumer, ConsumerConfig, NewTopic, OffsetSpec,
    PartitionOffset, PollColumns, Producer, ProducerConfig, ProducerRecord, RebalanceEvent,
    RecordColumns, RecordHeader, SendSettings, TimestampType, TopicMetadata, TopicPartition,
};
use sluiceway_core::limits::CONSUMER_POLL_TIMEOUT_MS_DEFAULT;
use sluiceway_core::{Error, ErrorCode, Offset};

// ---------------------------------------------------------------------------------------------
// Errors

/// A core error as the Promise's rejection (see the module docs for the reason's format).
fn reject(e: Error) -> napi::Error {
    napi::Error::new(
        Status::GenericFailure,
        format!(
            "sluiceway:{}:{}:{}",
            e.code().name(),
            u8::from(e.is_retriable()),
            describe(&e)
        ),
    )
}

/// The error's message followed by its causes, so the chain survives the boundary.
fn describe(e: &Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// A bad argument (TypeScript throws it as a `TypeError`); the message names the argument.
fn bad_argument(message: String) -> napi::Error {
    napi::Error::new(Status::InvalidArg, message)
}

/// A failure of one record of a batch, or of one partition of a lookup.
#[napi(object)]
#[derive(Debug)]
pub struct ErrorInfo {
    /// The `ErrorCode` name, e.g. `UNKNOWN_TOPIC_OR_PARTITION`.
    pub code: String,
    /// The numeric wire code.
    pub number: i32,
    pub retriable: bool,
    pub message: String,
}

fn error_info(e: &Error) -> ErrorInfo {
    ErrorInfo {
        code: e.code().name().to_owned(),
        number: e.code().as_i32(),
        retriable: e.is_retriable(),
        message: describe(e),
    }
}

/// One `ErrorCode` (for the TypeScript error classes and the test that each has one).
#[napi(object)]
#[derive(Debug)]
pub struct ErrorCodeInfo {
    pub name: String,
    pub number: i32,
    pub retriable: bool,
}

/// Every wire error code, with its retriability.
#[napi]
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

// ---------------------------------------------------------------------------------------------
// Plain conversions

fn parse_offset(argument: &str, value: &str) -> napi::Result<Offset> {
    value.parse::<u64>().map(Offset).map_err(|_| {
        bad_argument(format!(
            "{argument}: expected an offset as a decimal string, got {value:?}"
        ))
    })
}

fn parse_timestamp(argument: &str, value: &str) -> napi::Result<i64> {
    value.parse::<i64>().map_err(|_| {
        bad_argument(format!(
            "{argument}: expected a timestamp (ms since the epoch) as a decimal string, got {value:?}"
        ))
    })
}

fn timeout(ms: Option<u32>) -> Option<Duration> {
    ms.map(|ms| Duration::from_millis(u64::from(ms)))
}

fn timestamp_type_name(t: TimestampType) -> String {
    match t {
        TimestampType::CreateTime => "CreateTime",
        TimestampType::LogAppendTime => "LogAppendTime",
    }
    .to_owned()
}

#[napi(object)]
#[derive(Debug, Clone)]
pub struct JsTopicPartition {
    pub topic: String,
    pub partition: u32,
}

fn tp(p: JsTopicPartition) -> TopicPartition {
    TopicPartition::new(p.topic, p.partition)
}

fn tps(ps: Vec<JsTopicPartition>) -> Vec<TopicPartition> {
    ps.into_iter().map(tp).collect()
}

fn js_tp(p: &TopicPartition) -> JsTopicPartition {
    JsTopicPartition {
        topic: p.topic.clone(),
        partition: p.partition,
    }
}

/// A partition with an offset (a position, a commit, a starting point); `offset` is absent
/// where there is none.
#[napi(object)]
#[derive(Debug)]
pub struct JsPartitionOffset {
    pub topic: String,
    pub partition: u32,
    pub offset: Option<String>,
}

fn js_partition_offset(p: PartitionOffset) -> JsPartitionOffset {
    JsPartitionOffset {
        topic: p.topic,
        partition: p.partition,
        offset: p.offset.map(|o| o.0.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// Producer

/// The records of one `send`, in columns: the call crosses the boundary with a handful of
/// values whatever the number of records, and no per-record JS object, string or `Buffer` is
/// read (each would be a reference to create, and to release on Node's thread).
#[napi(object)]
#[allow(missing_debug_implementations)] // napi's `Buffer` has no `Debug`.
pub struct JsRecordColumns {
    /// Record `i` goes to `topics[topicIndex[i]]` (`topicIndex` absent: `topics[0]` for all).
    pub topics: Vec<String>,
    pub topic_index: Option<Uint32Array>,
    /// Record `i`'s partition, or -1 to let the partitioner choose (absent: -1 for all).
    pub partitions: Option<Int32Array>,
    /// The values end to end: record `i`'s is the next `valueLengths[i]` bytes, null for -1.
    /// A `Buffer` made for this call that nothing else writes: the records share its memory.
    pub values: Buffer,
    pub value_lengths: Int32Array,
    /// The keys likewise (absent: no record has a key), also made for this call.
    pub keys: Option<Buffer>,
    pub key_lengths: Option<Int32Array>,
    /// Record `i`'s create time, ms since the epoch as a decimal string; null or absent: now.
    pub timestamps: Option<Vec<Option<String>>>,
    /// Headers (absent: no record has any): record `i` has the next `headerCounts[i]` of
    /// `headerKeys`, whose values are end to end in `headerValues` (`headerValueLengths`, -1
    /// for null).
    pub header_counts: Option<Uint32Array>,
    pub header_keys: Option<Vec<String>>,
    pub header_values: Option<Buffer>,
    pub header_value_lengths: Option<Int32Array>,
}

/// Cuts `all` into one piece per length (-1: null), all sharing its bytes.
fn split(argument: &str, all: Bytes, lengths: &[i32]) -> napi::Result<Vec<Option<Bytes>>> {
    let mut at = 0usize;
    let mut out = Vec::with_capacity(lengths.len());
    for &len in lengths {
        let Ok(len) = usize::try_from(len) else {
            out.push(None);
            continue;
        };
        let end = at.saturating_add(len);
        if end > all.len() {
            break;
        }
        out.push(Some(all.slice(at..end)));
        at = end;
    }
    if out.len() != lengths.len() || at != all.len() {
        return Err(bad_argument(format!(
            "{argument}: the lengths ({}) do not add up to the data ({} bytes)",
            lengths.len(),
            all.len()
        )));
    }
    Ok(out)
}

fn producer_records(c: JsRecordColumns) -> napi::Result<Vec<ProducerRecord>> {
    let n = c.value_lengths.len();
    let check_len = |argument: &str, len: usize| {
        if len == n {
            Ok(())
        } else {
            Err(bad_argument(format!(
                "{argument}: {len} entries for {n} records"
            )))
        }
    };
    let mut headers = record_headers(&c, n)?.into_iter();
    // The values and keys `Buffer`s were made for this call and nothing else writes them, so
    // the records share their memory instead of a copy (napi releases each `Buffer` on Node's
    // thread once the core has dropped the last record made from it).
    let values = split("values", Bytes::from_owner(c.values), &c.value_lengths)?;
    let keys = match (c.keys, &c.key_lengths) {
        (Some(k), Some(l)) => split("keys", Bytes::from_owner(k), l)?,
        (None, None) => vec![None; n],
        _ => {
            return Err(bad_argument(
                "keys: needs keyLengths, and only with it".into(),
            ));
        }
    };
    check_len("keys", keys.len())?;
    if let Some(t) = &c.topic_index {
        check_len("topicIndex", t.len())?;
    }
    if let Some(p) = &c.partitions {
        check_len("partitions", p.len())?;
    }
    if let Some(t) = &c.timestamps {
        check_len("timestamps", t.len())?;
    }
    // Shared by the records: no allocation per record.
    let topics: Vec<Arc<str>> = c.topics.iter().map(|t| Arc::from(t.as_str())).collect();
    let mut records = Vec::with_capacity(n);
    for (i, (value, key)) in values.into_iter().zip(keys).enumerate() {
        let t = c.topic_index.as_ref().map_or(0, |t| t[i] as usize);
        let topic = topics
            .get(t)
            .ok_or_else(|| bad_argument(format!("topicIndex[{i}]: no topic {t}")))?;
        let timestamp = match c.timestamps.as_ref().and_then(|ts| ts[i].as_deref()) {
            Some(ts) => Some(parse_timestamp(&format!("messages[{i}].timestamp"), ts)?),
            None => None,
        };
        records.push(ProducerRecord {
            topic: topic.clone(),
            partition: c.partitions.as_ref().and_then(|p| u32::try_from(p[i]).ok()),
            key,
            value,
            timestamp,
            headers: headers.next().unwrap_or_default(),
        });
    }
    Ok(records)
}

/// Each record's headers from the header columns (all empty when there are none).
fn record_headers(c: &JsRecordColumns, n: usize) -> napi::Result<Vec<Vec<RecordHeader>>> {
    let (Some(counts), Some(keys), Some(values), Some(lengths)) = (
        &c.header_counts,
        &c.header_keys,
        &c.header_values,
        &c.header_value_lengths,
    ) else {
        if c.header_counts.is_some()
            || c.header_keys.is_some()
            || c.header_values.is_some()
            || c.header_value_lengths.is_some()
        {
            return Err(bad_argument(
                "headerCounts, headerKeys, headerValues and headerValueLengths go together".into(),
            ));
        }
        return Ok(Vec::new());
    };
    if counts.len() != n {
        return Err(bad_argument(format!(
            "headerCounts: {} entries for {n} records",
            counts.len()
        )));
    }
    // Header values are few: a copy, so `c` keeps its `Buffer`.
    let values = split("headerValues", Bytes::copy_from_slice(values), lengths)?;
    let total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
    if total != keys.len() as u64 || values.len() != keys.len() {
        return Err(bad_argument(format!(
            "headers: the counts add up to {total}, with {} keys and {} values",
            keys.len(),
            values.len()
        )));
    }
    let mut pairs = keys.iter().zip(values);
    Ok(counts
        .iter()
        .map(|&count| {
            pairs
                .by_ref()
                .take(count as usize)
                .map(|(key, value)| RecordHeader {
                    key: key.clone(),
                    value,
                })
                .collect()
        })
        .collect())
}

/// A per-send setting (`argument`, read by `parse` as the config key reads it); absent: the
/// producer's own.
fn setting<T>(
    argument: &str,
    given: Option<&str>,
    parse: impl Fn(&str) -> Option<T>,
    allowed: &str,
    own: T,
) -> napi::Result<T> {
    let Some(v) = given else {
        return Ok(own);
    };
    parse(v).ok_or_else(|| {
        bad_argument(format!(
            "{argument}: {v:?} is not allowed; allowed: {allowed}"
        ))
    })
}

/// Integers beyond this are not exact as a JS number (`Number.MAX_SAFE_INTEGER` + 1).
const JS_EXACT_MAX: u64 = 1 << 53;

/// A column of int64 values (offsets, timestamps) for JavaScript: a `Float64Array`, exact while
/// every value is within ±2^53, and otherwise the decimal text of every value beside it (see
/// the module docs). In an offset column, "none" is -1 in the numbers and an empty entry in
/// the text (offsets are never negative); a timestamp column has no "none".
struct Exact {
    numbers: Vec<f64>,
    /// Built only once a value is not exact: the values so far are written then.
    text: Option<String>,
    offsets: bool,
}

impl Exact {
    fn offsets(n: usize) -> Exact {
        Exact {
            numbers: Vec::with_capacity(n),
            text: None,
            offsets: true,
        }
    }

    fn timestamps(n: usize) -> Exact {
        Exact {
            offsets: false,
            ..Exact::offsets(n)
        }
    }

    fn push_offset(&mut self, v: u64) {
        if self.text.is_none() && v > JS_EXACT_MAX {
            self.start_text();
        }
        self.numbers.push(v as f64);
        if let Some(t) = &mut self.text {
            let _ = write!(t, "{v},");
        }
    }

    fn push_timestamp(&mut self, v: i64) {
        if self.text.is_none() && v.unsigned_abs() > JS_EXACT_MAX {
            self.start_text();
        }
        self.numbers.push(v as f64);
        if let Some(t) = &mut self.text {
            let _ = write!(t, "{v},");
        }
    }

    /// No offset (acks=0, a failed record).
    fn push_none(&mut self) {
        debug_assert!(self.offsets, "only an offset column has none");
        self.numbers.push(-1.0);
        if let Some(t) = &mut self.text {
            t.push(',');
        }
    }

    /// The text of the values pushed so far (each exact as a number).
    fn start_text(&mut self) {
        let mut t = String::with_capacity(self.numbers.capacity() * 21);
        for &n in &self.numbers {
            if self.offsets && n < 0.0 {
                t.push(',');
            } else {
                let _ = write!(t, "{},", n as i64);
            }
        }
        self.text = Some(t);
    }

    fn finish(self) -> (Float64Array, Option<String>) {
        let text = self.text.map(|mut t| {
            t.pop(); // One separator per value: n entries when split.
            t
        });
        (self.numbers.into(), text)
    }
}

/// The outcomes of one `send`, in columns (record `i` at index `i`).
#[napi(object)]
#[allow(missing_debug_implementations)] // napi's typed arrays have no `Debug`.
pub struct JsDeliveries {
    /// The partition record `i` went to (0 where it failed).
    pub partitions: Uint32Array,
    /// Record `i`'s offset; -1 with `acks=0` or where it failed.
    pub offsets: Float64Array,
    /// Present when an offset is beyond 2^53: every offset, decimal, comma-separated (empty
    /// for none).
    pub offsets_text: Option<String>,
    /// Record `i`'s timestamp (ms since the epoch); 0 where it failed.
    pub timestamps: Float64Array,
    /// Present when a timestamp is beyond ±2^53: every timestamp, decimal, comma-separated.
    pub timestamps_text: Option<String>,
    /// The records that failed.
    pub errors: Vec<JsRecordError>,
}

/// The failure of record `index` of a `send`.
#[napi(object)]
#[derive(Debug)]
pub struct JsRecordError {
    pub index: u32,
    pub error: ErrorInfo,
}

/// The core's `Producer`.
#[napi]
#[derive(Debug)]
pub struct NativeProducer {
    inner: Producer,
}

/// Creates a producer from Kafka-named configuration (`bootstrap.servers`, `acks`,
/// `compression.type`, `linger.ms`, …), validated by the core.
#[napi]
pub async fn create_producer(config: HashMap<String, String>) -> napi::Result<NativeProducer> {
    let config = ProducerConfig::from_map(config).map_err(reject)?;
    let inner = Producer::new(config).await.map_err(reject)?;
    Ok(NativeProducer { inner })
}

#[napi]
impl NativeProducer {
    /// Sends the records as one batch (core `send_batch_with`) and resolves once every record
    /// is delivered or failed: one result per record, in order. `acks` and `compression` (the
    /// `acks` and `compression.type` values of kafkajs's per-send settings; absent: the
    /// producer's) are the batch's own.
    #[napi]
    pub async fn send(
        &self,
        records: JsRecordColumns,
        acks: Option<String>,
        compression: Option<String>,
    ) -> napi::Result<JsDeliveries> {
        let settings = self.send_settings(acks.as_deref(), compression.as_deref())?;
        let records = producer_records(records)?;
        let delivery = self
            .inner
            .send_batch_with(records, settings)
            .await
            .map_err(reject)?;
        let results = delivery.wait().await;
        let mut partitions = Vec::with_capacity(results.len());
        let mut offsets = Exact::offsets(results.len());
        let mut timestamps = Exact::timestamps(results.len());
        let mut errors = Vec::new();
        for (i, result) in results.into_iter().enumerate() {
            match result {
                Ok(m) => {
                    partitions.push(m.partition);
                    match m.offset {
                        Some(o) => offsets.push_offset(o.0),
                        None => offsets.push_none(),
                    }
                    timestamps.push_timestamp(m.timestamp);
                }
                Err(e) => {
                    partitions.push(0);
                    offsets.push_none();
                    timestamps.push_timestamp(0);
                    errors.push(JsRecordError {
                        index: i as u32,
                        error: error_info(&e),
                    });
                }
            }
        }
        let (offsets, offsets_text) = offsets.finish();
        let (timestamps, timestamps_text) = timestamps.finish();
        Ok(JsDeliveries {
            partitions: partitions.into(),
            offsets,
            offsets_text,
            timestamps,
            timestamps_text,
            errors,
        })
    }

    /// kafkajs's per-send `acks` and `compression` as the core's [`SendSettings`] (absent:
    /// the producer's own).
    fn send_settings(
        &self,
        acks: Option<&str>,
        compression: Option<&str>,
    ) -> napi::Result<SendSettings> {
        let own = self.inner.config().send_settings();
        Ok(SendSettings {
            acks: setting("acks", acks, Acks::from_name, "all, -1, 1, 0", own.acks)?,
            compression: setting(
                "compression",
                compression,
                Compression::from_name,
                "none, gzip, snappy, lz4, zstd",
                own.compression,
            )?,
        })
    }

    /// Delivers everything queued; rejects with a report when records failed or are pending
    /// after `timeoutMs` (core `flush`).
    #[napi]
    pub async fn flush(&self, timeout_ms: Option<u32>) -> napi::Result<()> {
        self.inner.flush(timeout(timeout_ms)).await.map_err(reject)
    }

    /// Stops sending, delivers what is queued, fails what is left with CLOSED (core `close`).
    #[napi]
    pub async fn close(&self, timeout_ms: Option<u32>) -> napi::Result<()> {
        self.inner.close(timeout(timeout_ms)).await.map_err(reject)
    }
}

// ---------------------------------------------------------------------------------------------
// Consumer

/// The records of one poll, in columns (record `i` at index `i`), for the same reason as
/// [`JsRecordColumns`]: a few napi values per poll, not an object, strings and an external
/// `Buffer` per record. TypeScript hands out keys and values as views of `keys` and
/// `valueBuffers`. Only ever returned to JS.
#[napi(object, object_from_js = false)]
#[allow(missing_debug_implementations)] // napi's `Buffer` and typed arrays have no `Debug`.
pub struct JsRecordBatch {
    /// Record `i`'s topic is `topics[topicIndex[i]]`.
    pub topics: Vec<String>,
    pub topic_index: Uint32Array,
    pub partitions: Uint32Array,
    /// Record `i`'s offset (see the module docs for `offsetsText`).
    pub offsets: Float64Array,
    pub offsets_text: Option<String>,
    /// Record `i`'s timestamp, ms since the epoch, likewise.
    pub timestamps: Float64Array,
    pub timestamps_text: Option<String>,
    /// 1 where the timestamp is the broker's `LogAppendTime`, 0 for `CreateTime`.
    pub log_append_time: Uint8Array,
    /// The keys end to end: record `i`'s is the next `keyLengths[i]` bytes, null for -1.
    pub keys: Buffer,
    pub key_lengths: Int32Array,
    /// Record `i`'s value is the `valueLengths[i]` bytes (null for -1, empty for 0) at
    /// `valueStarts[i]` of `valueBuffers[valueBuffer[i]]`: the fetched bytes themselves, not a
    /// copy (external `Buffer`s, one per run of records, never overlapping).
    #[napi(ts_type = "Array<Buffer>")]
    pub value_buffers: Vec<FetchedBytes>,
    pub value_buffer: Uint32Array,
    pub value_starts: Uint32Array,
    pub value_lengths: Int32Array,
    /// Headers, as in [`JsRecordColumns`] (absent when no record of the poll has any).
    pub header_counts: Option<Uint32Array>,
    pub header_keys: Option<Vec<String>>,
    pub header_values: Option<Buffer>,
    pub header_value_lengths: Option<Int32Array>,
}

/// Fetched bytes handed to JS without a copy: an external `Buffer` over them whose finalizer
/// drops them (napi copies instead where a runtime refuses external buffers). JS may write into
/// a consumed value as into any `Buffer`; the bytes are the record's alone once drained.
#[derive(Debug)]
pub struct FetchedBytes(Bytes);

impl TypeName for FetchedBytes {
    fn type_name() -> &'static str {
        "Buffer"
    }

    fn value_type() -> ValueType {
        ValueType::Object
    }
}

impl ToNapiValue for FetchedBytes {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> napi::Result<sys::napi_value> {
        let FetchedBytes(bytes) = val;
        if bytes.is_empty() {
            // No external buffer over no memory (napi refuses it); the core sends none anyway.
            return unsafe { Buffer::to_napi_value(env, Vec::new().into()) };
        }
        let (data, len) = (bytes.as_ptr().cast_mut(), bytes.len());
        // SAFETY: `data..data + len` stays valid while the finalizer's `bytes` lives, and no
        // other external buffer starts at `data` (the core's buffers never overlap).
        let slice = unsafe {
            BufferSlice::from_external(&Env::from_raw(env), data, len, bytes, |_, bytes| {
                drop(bytes)
            })
        }?;
        Ok(slice.value().value)
    }
}

/// The core's poll columns as napi values: the byte buffers and length columns move as they
/// are, offsets and timestamps become exact doubles (or text, see [`Exact`]).
fn record_batch(c: RecordColumns) -> JsRecordBatch {
    let n = c.len();
    let mut offsets = Exact::offsets(n);
    for &o in &c.offsets {
        offsets.push_offset(o);
    }
    let mut timestamps = Exact::timestamps(n);
    for &t in &c.timestamps {
        timestamps.push_timestamp(t);
    }
    let log_append_time: Vec<u8> = c
        .timestamp_types
        .iter()
        .map(|&t| u8::from(t == TimestampType::LogAppendTime))
        .collect();
    let (offsets, offsets_text) = offsets.finish();
    let (timestamps, timestamps_text) = timestamps.finish();
    let headers = !c.header_counts.is_empty();
    JsRecordBatch {
        topics: c.topics.iter().map(|t| t.to_string()).collect(),
        topic_index: c.topic_index.into(),
        partitions: c.partitions.into(),
        offsets,
        offsets_text,
        timestamps,
        timestamps_text,
        log_append_time: log_append_time.into(),
        keys: c.keys.into(),
        key_lengths: c.key_lengths.into(),
        value_buffers: c.value_buffers.into_iter().map(FetchedBytes).collect(),
        value_buffer: c.value_buffer.into(),
        value_starts: c.value_starts.into(),
        value_lengths: c.value_lengths.into(),
        header_counts: headers.then(|| c.header_counts.into()),
        header_keys: headers.then_some(c.header_keys),
        header_values: headers.then(|| c.header_values.into()),
        header_value_lengths: headers.then(|| c.header_value_lengths.into()),
    }
}

/// A `RebalanceEvent`: `kind` is `revoked` (with the positions reached) or `assigned` (with
/// each partition's starting offset, absent when none was committed).
#[napi(object)]
#[derive(Debug)]
pub struct JsRebalanceEvent {
    pub kind: String,
    pub partitions: Vec<JsPartitionOffset>,
}

/// What one `pollBatch` returns: records, or rebalance events. Only ever returned to JS.
#[napi(object, object_from_js = false)]
#[allow(missing_debug_implementations)] // Holds records (napi `Buffer`s).
pub struct JsPollBatch {
    pub records: JsRecordBatch,
    pub events: Vec<JsRebalanceEvent>,
}

/// A group member's identity.
#[napi(object)]
#[derive(Debug)]
pub struct JsGroupMembership {
    pub member_id: String,
    pub generation: i32,
}

/// The core's `Consumer`.
#[napi]
#[derive(Debug)]
pub struct NativeConsumer {
    inner: Consumer,
}

/// Creates a consumer from Kafka-named configuration (`bootstrap.servers`, `group.id`,
/// `auto.offset.reset`, `offset.store.dir`, …), validated by the core.
#[napi]
pub async fn create_consumer(config: HashMap<String, String>) -> napi::Result<NativeConsumer> {
    let config = ConsumerConfig::from_map(config).map_err(reject)?;
    let inner = Consumer::new(config).await.map_err(reject)?;
    Ok(NativeConsumer { inner })
}

#[napi]
impl NativeConsumer {
    /// Replaces the manual assignment.
    #[napi]
    pub fn assign(&self, partitions: Vec<JsTopicPartition>) -> napi::Result<()> {
        self.inner.assign(tps(partitions)).map_err(reject)
    }

    /// The assigned partitions.
    #[napi]
    pub fn assignment(&self) -> Vec<JsTopicPartition> {
        self.inner.assignment().iter().map(js_tp).collect()
    }

    /// Joins the group `group.id` subscribed to `topics`.
    #[napi]
    pub async fn subscribe(&self, topics: Vec<String>) -> napi::Result<()> {
        self.inner.subscribe(topics).await.map_err(reject)
    }

    /// Leaves the group (core `unsubscribe`).
    #[napi]
    pub async fn unsubscribe(&self) -> napi::Result<()> {
        self.inner.unsubscribe().await.map_err(reject)
    }

    /// Records or rebalance events, waiting up to `timeoutMs` (absent: the core's
    /// `CONSUMER_POLL_TIMEOUT_MS_DEFAULT`) (core `poll_columns`).
    #[napi]
    pub async fn poll_batch(
        &self,
        timeout_ms: Option<u32>,
        max_records: Option<u32>,
    ) -> napi::Result<JsPollBatch> {
        let timeout_ms = timeout_ms.unwrap_or(CONSUMER_POLL_TIMEOUT_MS_DEFAULT);
        let batch = self
            .inner
            .poll_columns(Duration::from_millis(u64::from(timeout_ms)), max_records)
            .await
            .map_err(reject)?;
        Ok(js_poll_batch(batch))
    }

    /// What a poll can return without waiting (records already fetched and decoded, events,
    /// or an error), on the calling thread; `null` when `pollBatch` would have to wait (core
    /// `poll_columns_now`).
    #[napi]
    pub fn poll_batch_now(&self, max_records: Option<u32>) -> napi::Result<Option<JsPollBatch>> {
        Ok(self
            .inner
            .poll_columns_now(max_records)
            .map_err(reject)?
            .map(js_poll_batch))
    }

    /// Moves a partition's position.
    #[napi]
    pub fn seek(&self, partition: JsTopicPartition, offset: String) -> napi::Result<()> {
        let offset = parse_offset("offset", &offset)?;
        self.inner.seek(&tp(partition), offset).map_err(reject)
    }

    /// To the first offset of `partitions` (absent: every assigned one).
    #[napi]
    pub async fn seek_to_beginning(
        &self,
        partitions: Option<Vec<JsTopicPartition>>,
    ) -> napi::Result<()> {
        let ps = partitions.map(tps);
        self.inner
            .seek_to_beginning(ps.as_deref())
            .await
            .map_err(reject)
    }

    /// To the end (high watermark) of `partitions` (absent: every assigned one).
    #[napi]
    pub async fn seek_to_end(&self, partitions: Option<Vec<JsTopicPartition>>) -> napi::Result<()> {
        let ps = partitions.map(tps);
        self.inner.seek_to_end(ps.as_deref()).await.map_err(reject)
    }

    /// To the first record at or after `timestamp` (ms, decimal string).
    #[napi]
    pub async fn seek_to_timestamp(
        &self,
        partitions: Option<Vec<JsTopicPartition>>,
        timestamp: String,
    ) -> napi::Result<()> {
        let ts = parse_timestamp("timestamp", &timestamp)?;
        let ps = partitions.map(tps);
        self.inner
            .seek_to_timestamp(ps.as_deref(), ts)
            .await
            .map_err(reject)
    }

    #[napi]
    pub fn pause(&self, partitions: Vec<JsTopicPartition>) -> napi::Result<()> {
        self.inner.pause(&tps(partitions)).map_err(reject)
    }

    #[napi]
    pub fn resume(&self, partitions: Vec<JsTopicPartition>) -> napi::Result<()> {
        self.inner.resume(&tps(partitions)).map_err(reject)
    }

    #[napi]
    pub fn paused(&self) -> Vec<JsTopicPartition> {
        self.inner.paused().iter().map(js_tp).collect()
    }

    /// The offset of the next record for `partition`.
    #[napi]
    pub async fn position(&self, partition: JsTopicPartition) -> napi::Result<String> {
        let p = tp(partition);
        let o = self.inner.position(&p).await.map_err(reject)?;
        Ok(o.0.to_string())
    }

    /// The locally stored committed offset of `partition`, if any.
    #[napi]
    pub fn committed(&self, partition: JsTopicPartition) -> Option<String> {
        self.inner
            .committed(&tp(partition))
            .map(|o| o.0.to_string())
    }

    /// Commits the current positions.
    #[napi]
    pub async fn commit(&self) -> napi::Result<()> {
        self.inner.commit().await.map_err(reject)
    }

    /// Commits the given offsets (of the next record to read).
    #[napi]
    pub async fn commit_offsets(&self, offsets: Vec<JsPartitionOffset>) -> napi::Result<()> {
        let mut converted = Vec::with_capacity(offsets.len());
        for (i, o) in offsets.into_iter().enumerate() {
            let argument = format!("offsets[{i}].offset");
            let offset = o
                .offset
                .as_deref()
                .ok_or_else(|| bad_argument(format!("{argument}: missing")))?;
            converted.push((
                TopicPartition::new(o.topic, o.partition),
                parse_offset(&argument, offset)?,
            ));
        }
        self.inner.commit_offsets(converted).await.map_err(reject)
    }

    /// The member id and generation once joined.
    #[napi]
    pub fn group_membership(&self) -> Option<JsGroupMembership> {
        self.inner.group_membership().map(|m| JsGroupMembership {
            member_id: m.member_id,
            generation: m.generation,
        })
    }

    /// Commits (with auto-commit), leaves the group, stops fetching (core `close`).
    #[napi]
    pub async fn close(&self, timeout_ms: Option<u32>) -> napi::Result<()> {
        self.inner.close(timeout(timeout_ms)).await.map_err(reject)
    }
}

// ---------------------------------------------------------------------------------------------
// Admin

#[napi(object)]
#[derive(Debug)]
pub struct JsNewTopic {
    pub topic: String,
    pub num_partitions: u32,
    pub replication_factor: Option<u32>,
    pub configs: Option<HashMap<String, String>>,
}

#[napi(object)]
#[derive(Debug)]
pub struct JsPartitionMetadata {
    pub partition_id: u32,
    /// Absent when the partition has no leader.
    pub leader: Option<i32>,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// Absent when NONE, else the code name (e.g. `LEADER_NOT_AVAILABLE`).
    pub error: Option<String>,
}

#[napi(object)]
#[derive(Debug)]
pub struct JsTopicMetadata {
    pub name: String,
    pub partitions: Vec<JsPartitionMetadata>,
}

fn js_topic_metadata(t: TopicMetadata) -> JsTopicMetadata {
    JsTopicMetadata {
        name: t.name,
        partitions: t
            .partitions
            .into_iter()
            .map(|p| JsPartitionMetadata {
                partition_id: p.partition,
                leader: p.leader_id,
                leader_epoch: p.leader_epoch,
                replicas: p.replicas,
                isr: p.isr,
                error: (p.error != ErrorCode::None).then(|| p.error.name().to_owned()),
            })
            .collect(),
    }
}

#[napi(object)]
#[derive(Debug)]
pub struct JsTopicListing {
    pub name: String,
    pub partitions: u32,
    pub replication_factor: u32,
}

/// One `listOffsets` query: `spec` is `earliest`, `latest` or a timestamp (ms, decimal).
#[napi(object)]
#[derive(Debug)]
pub struct JsOffsetQuery {
    pub topic: String,
    pub partition: u32,
    pub spec: String,
}

#[napi(object)]
#[derive(Debug)]
pub struct JsListedOffset {
    pub topic: String,
    pub partition: u32,
    /// Absent when a timestamp lookup found nothing, or on error.
    pub offset: Option<String>,
    pub log_start_offset: Option<String>,
    pub high_watermark: Option<String>,
    pub error: Option<ErrorInfo>,
}

#[napi(object)]
#[derive(Debug)]
pub struct JsGroupListing {
    pub group_id: String,
    pub state: String,
    pub members: u32,
    pub generation: i32,
}

#[napi(object)]
#[derive(Debug)]
pub struct JsMemberDescription {
    pub member_id: String,
    pub client_id: String,
    pub topics: Vec<String>,
    pub assignment: Vec<JsTopicPartition>,
}

#[napi(object)]
#[derive(Debug)]
pub struct JsCommittedOffset {
    pub topic: String,
    pub partition: u32,
    pub offset: Option<String>,
    pub metadata: String,
    pub error: Option<String>,
}

#[napi(object)]
#[derive(Debug)]
pub struct JsGroupDescription {
    pub group_id: String,
    pub state: String,
    pub generation: i32,
    pub assignor: Option<String>,
    pub members: Vec<JsMemberDescription>,
    pub offsets: Vec<JsCommittedOffset>,
}

/// The core's `Admin`.
#[napi]
#[derive(Debug)]
pub struct NativeAdmin {
    inner: Admin,
}

/// Creates an admin client from Kafka-named configuration (`bootstrap.servers`, …).
#[napi]
pub async fn create_admin(config: HashMap<String, String>) -> napi::Result<NativeAdmin> {
    let config = AdminConfig::from_map(config).map_err(reject)?;
    let inner = Admin::new(config).await.map_err(reject)?;
    Ok(NativeAdmin { inner })
}

#[napi]
impl NativeAdmin {
    #[napi]
    pub async fn create_topic(&self, topic: JsNewTopic) -> napi::Result<JsTopicMetadata> {
        let mut t = NewTopic::new(topic.topic, topic.num_partitions);
        if let Some(rf) = topic.replication_factor {
            t = t.replication_factor(rf);
        }
        for (k, v) in topic.configs.unwrap_or_default() {
            t = t.config(k, v);
        }
        let m = self.inner.create_topic(t).await.map_err(reject)?;
        Ok(js_topic_metadata(m))
    }

    #[napi]
    pub async fn delete_topic(&self, name: String) -> napi::Result<()> {
        self.inner.delete_topic(&name).await.map_err(reject)
    }

    #[napi]
    pub async fn list_topics(&self) -> napi::Result<Vec<JsTopicListing>> {
        let ts = self.inner.list_topics().await.map_err(reject)?;
        Ok(ts
            .into_iter()
            .map(|t| JsTopicListing {
                name: t.name,
                partitions: t.partitions,
                replication_factor: t.replication_factor,
            })
            .collect())
    }

    #[napi]
    pub async fn describe_topic(&self, name: String) -> napi::Result<JsTopicMetadata> {
        let d = self.inner.describe_topic(&name).await.map_err(reject)?;
        Ok(js_topic_metadata(d.topic))
    }

    /// Offsets at each partition's leader: one result per query, in order.
    #[napi]
    pub async fn list_offsets(
        &self,
        queries: Vec<JsOffsetQuery>,
    ) -> napi::Result<Vec<JsListedOffset>> {
        let mut specs = Vec::with_capacity(queries.len());
        for (i, q) in queries.into_iter().enumerate() {
            let spec = match q.spec.as_str() {
                "earliest" => OffsetSpec::Earliest,
                "latest" => OffsetSpec::Latest,
                t => OffsetSpec::Timestamp(parse_timestamp(&format!("queries[{i}].spec"), t)?),
            };
            specs.push((TopicPartition::new(q.topic, q.partition), spec));
        }
        let results = self.inner.list_offsets(&specs).await;
        Ok(results
            .into_iter()
            .zip(specs)
            .map(|(r, (p, _))| match r {
                Ok(l) => JsListedOffset {
                    topic: p.topic,
                    partition: p.partition,
                    offset: l.offset.map(|o| o.0.to_string()),
                    log_start_offset: Some(l.log_start_offset.0.to_string()),
                    high_watermark: Some(l.high_watermark.0.to_string()),
                    error: None,
                },
                Err(e) => JsListedOffset {
                    topic: p.topic,
                    partition: p.partition,
                    offset: None,
                    log_start_offset: None,
                    high_watermark: None,
                    error: Some(error_info(&e)),
                },
            })
            .collect())
    }

    #[napi]
    pub async fn list_groups(&self) -> napi::Result<Vec<JsGroupListing>> {
        let gs = self.inner.list_groups().await.map_err(reject)?;
        Ok(gs
            .into_iter()
            .map(|g| JsGroupListing {
                group_id: g.group_id,
                state: g.state.name().to_owned(),
                members: g.members,
                generation: g.generation,
            })
            .collect())
    }

    #[napi]
    pub async fn describe_group(&self, group_id: String) -> napi::Result<JsGroupDescription> {
        let g = self.inner.describe_group(&group_id).await.map_err(reject)?;
        Ok(JsGroupDescription {
            group_id: g.group_id,
            state: g.state.name().to_owned(),
            generation: g.generation,
            assignor: g.assignor,
            members: g
                .members
                .into_iter()
                .map(|m| JsMemberDescription {
                    member_id: m.member_id,
                    client_id: m.client_id,
                    topics: m.topics,
                    assignment: m.assignment.iter().map(js_tp).collect(),
                })
                .collect(),
            offsets: g
                .offsets
                .into_iter()
                .map(|o| JsCommittedOffset {
                    topic: o.partition.topic,
                    partition: o.partition.partition,
                    offset: o.offset.map(|x| x.0.to_string()),
                    metadata: o.metadata,
                    error: (o.error != ErrorCode::None).then(|| o.error.name().to_owned()),
                })
                .collect(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Message format (the golden vectors, conformance C4)

/// One logical message of a decoded message set.
#[napi(object)]
#[allow(missing_debug_implementations)] // napi's `Buffer` has no `Debug`.
pub struct JsDecodedRecord {
    pub offset: String,
    /// `-1` for magic-0 messages, which carry none.
    pub timestamp: String,
    pub timestamp_type: String,
    pub key: Option<Buffer>,
    pub value: Option<Buffer>,
    /// Magic 2 records' headers, in order (empty for magic 0/1).
    pub headers: Vec<JsHeader>,
}

/// One record header: a UTF-8 key (keys may repeat) and a value that may be null.
#[napi(object)]
#[allow(missing_debug_implementations)] // napi's `Buffer` has no `Debug`.
pub struct JsHeader {
    pub key: String,
    pub value: Option<Buffer>,
}

/// Decodes a stored message set (every CRC checked, wrappers decompressed): the core's
/// `format::for_each_record`.
#[napi]
pub fn decode_message_set(set: Buffer) -> napi::Result<Vec<JsDecodedRecord>> {
    let mut scratch = Vec::new();
    let mut out = Vec::new();
    sluiceway_core::format::for_each_record(&set, &mut scratch, |r| {
        out.push(JsDecodedRecord {
            offset: r.offset.0.to_string(),
            timestamp: r.timestamp.0.to_string(),
            timestamp_type: timestamp_type_name(r.timestamp_type),
            key: r.key.map(|k| Buffer::from(k.to_vec())),
            value: r.value.map(|v| Buffer::from(v.to_vec())),
            headers: r
                .headers
                .iter()
                .map(|h| JsHeader {
                    key: h.key.to_owned(),
                    value: h.value.map(|v| Buffer::from(v.to_vec())),
                })
                .collect(),
        });
    })
    .map_err(reject)?;
    Ok(out)
}

/// The compression codecs the core knows, by their `compression.type` names.
#[napi]
pub fn compression_types() -> Vec<String> {
    [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ]
    .iter()
    .map(|c| c.name().to_owned())
    .collect()
}

fn js_poll_batch(batch: PollColumns) -> JsPollBatch {
    JsPollBatch {
        records: record_batch(batch.records),
        events: batch
            .events
            .into_iter()
            .map(|e| {
                let (kind, partitions) = match e {
                    RebalanceEvent::Revoked(ps) => ("revoked", ps),
                    RebalanceEvent::Assigned(ps) => ("assigned", ps),
                };
                JsRebalanceEvent {
                    kind: kind.to_owned(),
                    partitions: partitions.into_iter().map(js_partition_offset).collect(),
                }
            })
            .collect(),
    }
}

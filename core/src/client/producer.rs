//! The producer: `send` puts a record into the [`Accumulator`] and returns a
//! [`DeliveryFuture`]; one background sender task turns ready batches into Produce requests.
//!
//! - **Partition choice** ([`Partitioner`], `crate::partitioner`): the record's explicit
//!   partition; else Kafka's murmur2 of the key (so keys land where a Kafka client puts them);
//!   else *sticky*: keyless records of a topic stick to one partition until `batch.size` bytes
//!   or one `linger.ms` window went to it, then move to the next partition round-robin — full
//!   batches, spread evenly.
//! - **Sending**: ready batches are grouped by their partition's leader (and `acks`: records
//!   sent with other settings through [`Producer::send_batch_with`] are batched apart) into ONE
//!   multi-partition `Log.Produce` per broker and `acks` level (at most `max.in.flight.requests.per.connection` requests in
//!   flight per broker, each at most `max.request.size` bytes of sets and
//!   [`REQUEST_PARTITIONS_MAX`] partitions). A partition contributes its front batch and the
//!   ready batches queued behind it as one set (see `accumulator`), so one busy partition
//!   still moves up to `max.request.size` per round trip. Per-partition results are
//!   handled one by one: success resolves the batch's futures; a retriable code (NOT_LEADER,
//!   connection errors, …) refreshes metadata when the code calls for it and retries after
//!   `retry.backoff.ms`, while `retries` and `delivery.timeout.ms` allow; anything else fails
//!   the batch with the broker's code and message.
//! - **Ordering**: up to `max.in.flight.requests.per.connection` requests per partition and
//!   send settings are in flight, numbered in the producer's session so
//!   the leader appends them in the order sent; a failed one is resent before anything newer
//!   (see `accumulator`). So order within a partition holds across retries among records sent
//!   with the same `acks` and codec.
//! - **Back-pressure**: queued and in-flight record bytes are bounded by `buffer.memory`. `send`
//!   *waits* for room up to `max.block.ms` and then fails with REQUEST_TIMED_OUT; it also waits
//!   for the topic's metadata (an unknown topic fails at once with UNKNOWN_TOPIC_OR_PARTITION
//!   after one metadata refresh, rather than blocking for `max.block.ms` as Kafka does).
//! - **Close**: `close(timeout)` stops new sends (they fail with [`Error::Closed`]), delivers what
//!   is queued (flushing, ignoring `linger.ms`), and when `timeout` (default
//!   `delivery.timeout.ms` plus a grace period) runs out fails whatever is left with CLOSED, so
//!   no future ever hangs. Dropping a producer without `close()` delivers in the background.
//! - **Reports**: `send_batch` returns one [`BatchDelivery`] for all its records (one result per
//!   record). `flush` and `close` report records that failed since the last report and records
//!   still pending ([`Error::Undelivered`]); they are never a silent `Ok`.
//! - **Hot path**: with metadata cached and buffer room, `send` queues synchronously: no task,
//!   no timer, no lock but the accumulator's, and the sender is woken only when a record opens
//!   or fills a batch.
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::accumulator::{
    Accumulator, BatchDelivery, BatchKey, Delivered, DeliveryFuture, Drained, FailureTally,
    record_size,
};
use super::cluster::{Cluster, clone_error, is_connection_error, needs_metadata_refresh};
use super::config::{Acks, ProducerConfig, SendSettings};
use super::consumer::RecordHeader;
use super::produce_call::{PartitionSets, ProduceCall};
use super::runtime::{Home, PreciseSleep};
use crate::error::{Error, ErrorCode, Result};
use crate::group::TopicPartition;
use crate::limits::{
    MESSAGE_BYTES_MAX, MESSAGE_SET_BYTES_MAX, PRODUCER_CLOSE_GRACE_MS, RECORD_HEADERS_MAX,
    REQUEST_PARTITIONS_MAX,
};
use crate::partitioner::{Partitioner, stateless_partition};
use crate::wire::{TopicMetadata, code_from_proto, partition_error};

/// One record to send.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerRecord {
    /// Shared, so that sending many records to one topic costs no allocation per record.
    pub topic: Arc<str>,
    /// An explicit partition; `None` lets the partitioner choose (key hash, else sticky).
    pub partition: Option<u32>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    /// Create time, ms since the epoch; `None` means now.
    pub timestamp: Option<i64>,
    /// Kafka's record headers, in order (keys may repeat). A record with headers goes in a
    /// magic 2 batch (Kafka's RecordBatch v2); records without stay in the configured
    /// `message.format.version`.
    pub headers: Vec<RecordHeader>,
}

impl ProducerRecord {
    /// A keyless record.
    pub fn new(topic: impl Into<Arc<str>>, value: impl Into<Bytes>) -> ProducerRecord {
        ProducerRecord {
            topic: topic.into(),
            value: Some(value.into()),
            ..ProducerRecord::default()
        }
    }
    /// Sets the key.
    pub fn key(mut self, key: impl Into<Bytes>) -> ProducerRecord {
        self.key = Some(key.into());
        self
    }
    /// Sets an explicit partition.
    pub fn partition(mut self, partition: u32) -> ProducerRecord {
        self.partition = Some(partition);
        self
    }
    /// Sets the create timestamp (ms since the epoch).
    pub fn timestamp(mut self, ms: i64) -> ProducerRecord {
        self.timestamp = Some(ms);
        self
    }
    /// Adds a header (after the ones already set; keys may repeat).
    pub fn header(mut self, key: impl Into<String>, value: Option<Bytes>) -> ProducerRecord {
        self.headers.push(RecordHeader {
            key: key.into(),
            value,
        });
        self
    }
}

/// The wall clock read through the monotonic one: a record's create time costs the `Instant`
/// its send reads anyway, not a second clock read. The offset between the two clocks is
/// re-read by [`WallClock::sync`], which the sender calls on every wake-up (per batch, at least
/// every `metadata.max.age.ms`), so a stepped system clock shows in timestamps from the next
/// batch on; between syncs the two clocks run at the same (NTP-slewed) rate.
#[derive(Debug)]
struct WallClock {
    origin: Instant,
    /// Wall-clock ns since the epoch minus ns since `origin`, at the last sync.
    offset_ns: AtomicI64,
}

impl WallClock {
    fn new() -> WallClock {
        let clock = WallClock {
            origin: Instant::now(),
            offset_ns: AtomicI64::new(0),
        };
        clock.sync();
        clock
    }

    fn sync(&self) {
        let now = Instant::now();
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        self.offset_ns
            .store(wall - self.since_origin(now), Ordering::Relaxed);
    }

    fn since_origin(&self, now: Instant) -> i64 {
        now.saturating_duration_since(self.origin).as_nanos() as i64
    }

    /// Ms since the epoch at `now`.
    fn ms(&self, now: Instant) -> i64 {
        (self.since_origin(now) + self.offset_ns.load(Ordering::Relaxed)).div_euclid(1_000_000)
    }
}

#[derive(Debug)]
struct Inner {
    config: ProducerConfig,
    cluster: Arc<Cluster>,
    acc: Mutex<Accumulator>,
    /// Partition choice, with the sticky state of keyless records per topic.
    partitioner: Mutex<Partitioner>,
    buffer: Arc<Semaphore>,
    /// Wakes the sender: new batches, full batches, completions, flush, close.
    wake: Notify,
    closed: AtomicBool,
    flushing: AtomicUsize,
    in_flight: Mutex<HashMap<String, u32>>,
    /// Failed records since the last `flush`/`close` report.
    tally: Arc<FailureTally>,
    /// Create times of records sent without one.
    wall: WallClock,
    /// `ProduceRequest.session`: random, so a leader keeps this producer's requests to a
    /// partition in the order they were sent (several may be in flight).
    session: u64,
}

/// An asynchronous producer (see the module docs). Cheap to share behind an `Arc`; every
/// method takes `&self`. Its tasks run on the client core's runtime (`runtime.rs`), so it
/// works from any thread and any executor; the `*_blocking` methods serve synchronous APIs.
#[derive(Debug)]
pub struct Producer {
    inner: Arc<Inner>,
    home: Home,
    sender: Mutex<Option<JoinHandle<()>>>,
}

/// The outcome of the fast, synchronous part of queuing a record.
enum Enqueue {
    Done(Result<DeliveryFuture>),
    /// Metadata or `buffer.memory` room must be waited for: the slow path takes the record.
    Wait(ProducerRecord),
}

impl Producer {
    /// Validates `config`, bootstraps metadata (failing over between bootstrap addresses) and
    /// starts the sender task on the client runtime. Callable from any executor.
    pub async fn new(config: ProducerConfig) -> Result<Producer> {
        let home = Home::new("producer")?;
        home.clone()
            .run(async move { Producer::start(config, home).await })
            .await
    }

    /// [`Producer::new`] for synchronous callers (blocks the calling thread).
    pub fn new_blocking(config: ProducerConfig) -> Result<Producer> {
        let home = Home::new("producer")?;
        home.clone()
            .block_on(async move { Producer::start(config, home).await })
    }

    async fn start(config: ProducerConfig, home: Home) -> Result<Producer> {
        config.validate()?;
        let cluster = Arc::new(Cluster::new(config.common.clone(), home.clone()));
        cluster.refresh(&[]).await?;
        let tally = Arc::new(FailureTally::default());
        let partitioner = Partitioner::new(config.batch_size as usize, config.linger);
        let mut acc = Accumulator::new(
            config.batch_size,
            config.linger,
            config.delivery_timeout,
            tally.clone(),
        )
        .with_magic(config.message_format_version)
        .with_requests_in_flight(config.max_in_flight);
        if config.enable_idempotence {
            acc = acc.with_idempotence(cluster.init_producer_id().await?);
        }
        let inner = Arc::new(Inner {
            acc: Mutex::new(acc),
            buffer: Arc::new(Semaphore::new(config.buffer_memory as usize)),
            cluster,
            config,
            partitioner: Mutex::new(partitioner),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            flushing: AtomicUsize::new(0),
            in_flight: Mutex::new(HashMap::new()),
            tally,
            wall: WallClock::new(),
            session: random_session(),
        });
        let sender = home.handle().spawn(sender_loop(inner.clone()));
        Ok(Producer {
            inner,
            home,
            sender: Mutex::new(Some(sender)),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &ProducerConfig {
        &self.inner.config
    }

    /// Queues one record. Returns once it is queued (waiting for metadata or `buffer.memory`
    /// room, up to `max.block.ms`); the returned future resolves when it is delivered or has
    /// failed. Fails at once for a closed producer, an unknown topic or partition, or a record
    /// larger than the limits. With metadata known and room in the buffer this does no I/O,
    /// spawns nothing and arms no timer.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        self.home.check()?;
        let settings = self.inner.config.send_settings();
        match enqueue_now(&self.inner, record, settings) {
            Enqueue::Done(r) => r,
            Enqueue::Wait(record) => {
                let inner = self.inner.clone();
                self.home
                    .run(async move { enqueue_wait(&inner, record, settings).await })
                    .await
            }
        }
    }

    /// [`Producer::send`] for synchronous callers: blocks while metadata or buffer room is
    /// awaited (at most `max.block.ms`); the future can be waited on with
    /// [`DeliveryFuture::wait_blocking`].
    pub fn send_blocking(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        self.home.check()?;
        let settings = self.inner.config.send_settings();
        match enqueue_now(&self.inner, record, settings) {
            Enqueue::Done(r) => r,
            Enqueue::Wait(record) => {
                let inner = self.inner.clone();
                self.home
                    .block_on(async move { enqueue_wait(&inner, record, settings).await })
            }
        }
    }

    /// Queues many records with one call (what a language binding uses, so it crosses the
    /// boundary once per batch) and returns one handle for all of them: one result per record,
    /// in order. A record that cannot be queued (unknown topic, too large, …) gets its error in
    /// its slot; the others are unaffected. A missing topic is looked up once per call, not once
    /// per record. Waits for `buffer.memory` room like `send`.
    pub async fn send_batch(&self, records: Vec<ProducerRecord>) -> Result<BatchDelivery> {
        let settings = self.inner.config.send_settings();
        self.send_batch_with(records, settings).await
    }

    /// [`Producer::send_batch`] with its own `acks` and codec instead of the producer's
    /// (kafkajs's per-send `acks` and `compression`). Its records are batched apart from
    /// records sent with other settings — a batch has one codec, a Produce request one `acks`
    /// — so they keep their order among themselves but not with those (see `accumulator`).
    /// With `acks` 0 the results carry no offsets.
    pub async fn send_batch_with(
        &self,
        records: Vec<ProducerRecord>,
        settings: SendSettings,
    ) -> Result<BatchDelivery> {
        self.home.check()?;
        check_settings(&self.inner.config, settings)?;
        let inner = self.inner.clone();
        self.home
            .run(async move { Ok(enqueue_batch(&inner, records, settings).await) })
            .await
    }

    /// [`Producer::send_batch`] for synchronous callers (blocks while queuing).
    pub fn send_batch_blocking(&self, records: Vec<ProducerRecord>) -> Result<BatchDelivery> {
        let settings = self.inner.config.send_settings();
        self.send_batch_with_blocking(records, settings)
    }

    /// [`Producer::send_batch_with`] for synchronous callers (blocks while queuing).
    pub fn send_batch_with_blocking(
        &self,
        records: Vec<ProducerRecord>,
        settings: SendSettings,
    ) -> Result<BatchDelivery> {
        check_settings(&self.inner.config, settings)?;
        let inner = self.inner.clone();
        self.home
            .block_on(async move { Ok(enqueue_batch(&inner, records, settings).await) })
    }

    /// Sends everything queued now (ignoring `linger.ms`) and waits until each of those records
    /// is delivered or has failed, at most `timeout` (`None`: until they resolve, which every
    /// record does within `delivery.timeout.ms`). `Ok` only when nothing was left pending and
    /// no record failed since the previous `flush`/`close`; otherwise [`Error::Undelivered`]
    /// with the counts and the first error (its code is that error's, or REQUEST_TIMED_OUT
    /// when records were only pending).
    pub async fn flush(&self, timeout: Option<Duration>) -> Result<()> {
        let inner = self.inner.clone();
        self.home
            .run(async move { flush(&inner, timeout).await })
            .await
    }

    /// [`Producer::flush`] for synchronous callers.
    pub fn flush_blocking(&self, timeout: Option<Duration>) -> Result<()> {
        let inner = self.inner.clone();
        self.home
            .block_on(async move { flush(&inner, timeout).await })
    }

    /// Stops accepting sends (later ones fail with CLOSED), delivers what is pending for up to
    /// `timeout` (`None`: `delivery.timeout.ms` plus a grace period), then fails the rest with
    /// CLOSED and stops the sender task: every pending send resolves before this returns.
    /// Reports like [`Producer::flush`]: `Ok` only when everything sent was delivered.
    /// Idempotent (a second call reports nothing new).
    pub async fn close(&self, timeout: Option<Duration>) -> Result<()> {
        let inner = self.inner.clone();
        let sender = self.sender.lock().take();
        self.home
            .run(async move { close(&inner, sender, timeout).await })
            .await
    }

    /// [`Producer::close`] for synchronous callers.
    pub fn close_blocking(&self, timeout: Option<Duration>) -> Result<()> {
        let inner = self.inner.clone();
        let sender = self.sender.lock().take();
        self.home
            .block_on(async move { close(&inner, sender, timeout).await })
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        // The sender task delivers what is queued, then exits (see the module docs).
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.wake.notify_one();
    }
}

/// Checks that hold before anything is queued.
/// An idempotent producer sends with its own settings only: its sequence numbers count one queue
/// per partition, and other settings would open a second one (see `accumulator`).
fn check_settings(config: &ProducerConfig, settings: SendSettings) -> Result<()> {
    if config.enable_idempotence && settings != config.send_settings() {
        return Err(Error::InvalidArgument(format!(
            "an idempotent producer (enable.idempotence=true) sends with its own acks and \
             compression ({} / {}); this send asked for {} / {}",
            config.acks.name(),
            config.compression.name(),
            settings.acks.name(),
            settings.compression.name()
        )));
    }
    Ok(())
}

fn check_record(inner: &Inner, record: &ProducerRecord) -> Result<usize> {
    if inner.closed.load(Ordering::Acquire) {
        return Err(Error::Closed("producer"));
    }
    if record.headers.len() > RECORD_HEADERS_MAX as usize {
        return Err(Error::InvalidArgument(format!(
            "a record may carry at most {RECORD_HEADERS_MAX} headers, not {}",
            record.headers.len()
        )));
    }
    let size = record_size(
        record.key.as_deref(),
        record.value.as_deref(),
        &record.headers,
    );
    let max = (MESSAGE_BYTES_MAX as usize).min(inner.config.buffer_memory as usize);
    if size > max {
        return Err(Error::MessageTooLarge {
            size: size as u64,
            max: max as u64,
        });
    }
    Ok(size)
}

/// The number of partitions of a topic, checking an explicit partition against it.
fn partition_count(meta: &TopicMetadata, partition: Option<u32>) -> Result<u32> {
    let partitions = meta.partitions.len() as u32;
    if partitions == 0 {
        return Err(Error::Remote {
            code: ErrorCode::LeaderNotAvailable,
            message: format!("topic {} has no partitions yet", meta.name),
        });
    }
    if let Some(p) = partition
        && p >= partitions
    {
        return Err(Error::Remote {
            code: ErrorCode::UnknownTopicOrPartition,
            message: format!(
                "topic {} has {partitions} partitions; there is no partition {p}",
                meta.name
            ),
        });
    }
    Ok(partitions)
}

/// Queues a record without waiting: possible when the topic's metadata is cached (or it is
/// known to be missing) and `buffer.memory` has room.
fn enqueue_now(inner: &Inner, record: ProducerRecord, settings: SendSettings) -> Enqueue {
    let size = match check_record(inner, &record) {
        Ok(s) => s,
        Err(e) => return Enqueue::Done(Err(e)),
    };
    let meta = match inner.cluster.cached_topic(&record.topic) {
        Some(Ok(m)) => m,
        Some(Err(e)) => return Enqueue::Done(Err(e)),
        None => return Enqueue::Wait(record),
    };
    let partitions = match partition_count(&meta, record.partition) {
        Ok(n) => n,
        Err(e) => return Enqueue::Done(Err(e)),
    };
    match inner.buffer.clone().try_acquire_many_owned(size as u32) {
        Ok(permit) => Enqueue::Done(append(inner, record, settings, size, partitions, permit)),
        Err(_) => Enqueue::Wait(record),
    }
}

/// Queues a record, waiting up to `max.block.ms` for its topic's metadata and for room.
async fn enqueue_wait(
    inner: &Inner,
    record: ProducerRecord,
    settings: SendSettings,
) -> Result<DeliveryFuture> {
    let size = check_record(inner, &record)?;
    let max_block = inner.config.max_block;
    let topic = &record.topic;
    let meta = match tokio::time::timeout(max_block, inner.cluster.topic(topic)).await {
        Ok(m) => m?,
        Err(_) => {
            return Err(Error::TimedOut(format!(
                "metadata for topic {topic} not available within max.block.ms"
            )));
        }
    };
    let partitions = partition_count(&meta, record.partition)?;
    let permit = match inner.buffer.clone().try_acquire_many_owned(size as u32) {
        Ok(p) => p,
        Err(_) => match tokio::time::timeout(
            max_block,
            inner.buffer.clone().acquire_many_owned(size as u32),
        )
        .await
        {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => return Err(Error::Closed("producer")),
            Err(_) => {
                return Err(Error::TimedOut(format!(
                    "buffer.memory ({} bytes) stayed full for max.block.ms ({} ms)",
                    inner.config.buffer_memory,
                    max_block.as_millis()
                )));
            }
        },
    };
    append(inner, record, settings, size, partitions, permit)
}

/// Queues every record of a batch (see [`Producer::send_batch`]): each run of consecutive
/// records for one topic in one go when it can ([`append_run`]), otherwise record by record
/// (waiting for metadata or buffer room as `send` does).
async fn enqueue_batch(
    inner: &Inner,
    mut records: Vec<ProducerRecord>,
    settings: SendSettings,
) -> BatchDelivery {
    let mut out = Vec::with_capacity(records.len());
    let mut start = 0;
    while start < records.len() {
        let topic = &records[start].topic;
        let end = start
            + records[start..]
                .iter()
                .take_while(|r| r.topic == *topic)
                .count();
        if !append_run(inner, &records[start..end], settings, &mut out) {
            for r in &mut records[start..end] {
                let r = std::mem::take(r);
                let f = match enqueue_now(inner, r, settings) {
                    Enqueue::Done(f) => f,
                    Enqueue::Wait(r) => enqueue_wait(inner, r, settings).await,
                };
                out.push(f.unwrap_or_else(DeliveryFuture::failed));
            }
        }
        start = end;
    }
    BatchDelivery::new(out)
}

/// Queues a run of records for one topic at the cost of one: one metadata lookup, one clock
/// read, one `buffer.memory` reservation and one hold of the partitioner's and accumulator's
/// locks for the whole run. Possible when the topic's metadata is cached and the buffer has room for all
/// of it; otherwise returns false having taken nothing, and the caller goes record by record.
/// A record that fails its own checks (too large, no such partition) gets its error in its
/// slot; the others are queued.
fn append_run(
    inner: &Inner,
    run: &[ProducerRecord],
    settings: SendSettings,
    out: &mut Vec<DeliveryFuture>,
) -> bool {
    let Some(first) = run.first() else {
        return true;
    };
    if inner.closed.load(Ordering::Acquire) {
        return false;
    }
    let meta = match inner.cluster.cached_topic(&first.topic) {
        Some(Ok(m)) => m,
        _ => return false,
    };
    // Each record's size, or its error.
    let checks: Vec<Result<(usize, u32)>> = run
        .iter()
        .map(|r| {
            let size = check_record(inner, r)?;
            Ok((size, partition_count(&meta, r.partition)?))
        })
        .collect();
    let total: usize = checks.iter().flatten().map(|(size, _)| size).sum();
    let Ok(total) = u32::try_from(total) else {
        return false;
    };
    let Ok(mut permit) = inner.buffer.clone().try_acquire_many_owned(total) else {
        return false;
    };
    let now = Instant::now();
    let now_ms = inner.wall.ms(now);
    let mut key = BatchKey {
        tp: TopicPartition {
            topic: first.topic.to_string(),
            partition: 0,
        },
        settings,
    };
    let mut wake = false;
    {
        let mut partitioner = inner.partitioner.lock();
        let mut topic_partitioner = partitioner.topic(&key.tp.topic);
        let mut acc = inner.acc.lock();
        for (r, check) in run.iter().zip(checks) {
            let (size, partitions) = match check {
                Ok(c) => c,
                Err(e) => {
                    out.push(DeliveryFuture::failed(e));
                    continue;
                }
            };
            let share = permit.split(size);
            // Checked under the accumulator's lock, as `append` does.
            if inner.closed.load(Ordering::SeqCst) {
                out.push(DeliveryFuture::failed(Error::Closed("producer")));
                continue;
            }
            key.tp.partition =
                topic_partitioner.partition(r.partition, r.key.as_deref(), partitions, size, now);
            let ts = r.timestamp.unwrap_or(now_ms);
            let (future, w) = acc.append(
                &key,
                ts,
                r.key.as_deref(),
                r.value.as_deref(),
                &r.headers,
                now,
                share,
            );
            wake |= w;
            out.push(future);
        }
    }
    if wake {
        inner.wake.notify_one();
    }
    true
}

/// Chooses the partition and appends the record to its batch; wakes the sender only when the
/// accumulator says so (a new or a full batch).
fn append(
    inner: &Inner,
    record: ProducerRecord,
    settings: SendSettings,
    size: usize,
    partitions: u32,
    permit: OwnedSemaphorePermit,
) -> Result<DeliveryFuture> {
    let ProducerRecord {
        topic,
        partition,
        key: k,
        value,
        timestamp,
        headers,
    } = record;
    let now = Instant::now();
    let p = match stateless_partition(partition, k.as_deref(), partitions) {
        Some(p) => p,
        None => inner
            .partitioner
            .lock()
            .topic(&topic)
            .partition(None, None, partitions, size, now),
    };
    let ts = timestamp.unwrap_or_else(|| inner.wall.ms(now));
    let (future, wake) = {
        let mut acc = inner.acc.lock();
        // Checked again under the accumulator's lock: the sender exits only when it sees the
        // producer closed and the accumulator empty under this lock, so no record can be
        // appended after it left (its future would never resolve).
        if inner.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed("producer"));
        }
        acc.with_key(&topic, p, settings, |acc, key| {
            acc.append(
                key,
                ts,
                k.as_deref(),
                value.as_deref(),
                &headers,
                now,
                Some(permit),
            )
        })
    };
    if wake {
        inner.wake.notify_one();
    }
    Ok(future)
}

async fn flush(inner: &Arc<Inner>, timeout: Option<Duration>) -> Result<()> {
    let pending = send_queued(inner, timeout).await;
    report(inner, pending)
}

/// Sends everything queued now and waits until it resolved, at most `timeout`; returns how
/// many of those records are still pending.
async fn send_queued(inner: &Arc<Inner>, timeout: Option<Duration>) -> u64 {
    struct Flushing<'a>(&'a Inner);
    impl Drop for Flushing<'_> {
        fn drop(&mut self) {
            self.0.flushing.fetch_sub(1, Ordering::AcqRel);
        }
    }
    inner.flushing.fetch_add(1, Ordering::AcqRel);
    let _guard = Flushing(inner);
    inner.wake.notify_one();
    let pending = inner.acc.lock().pending();
    let wait_all = async {
        for (b, _) in &pending {
            b.wait().await;
        }
    };
    match timeout {
        Some(t) => {
            let _ = tokio::time::timeout(t, wait_all).await;
        }
        None => wait_all.await,
    }
    pending
        .iter()
        .filter(|(b, _)| !b.is_resolved())
        .map(|(_, n)| u64::from(*n))
        .sum()
}

/// `Ok` when nothing failed since the last report and nothing is `pending`.
fn report(inner: &Inner, pending: u64) -> Result<()> {
    let (failed, first) = inner.tally.take();
    if failed == 0 && pending == 0 {
        Ok(())
    } else {
        Err(Error::Undelivered {
            failed,
            pending,
            first_error: first.map(Box::new),
        })
    }
}

async fn close(
    inner: &Arc<Inner>,
    sender: Option<JoinHandle<()>>,
    timeout: Option<Duration>,
) -> Result<()> {
    inner.closed.store(true, Ordering::SeqCst);
    inner.wake.notify_one();
    let timeout = timeout
        .unwrap_or(inner.config.delivery_timeout + Duration::from_millis(PRODUCER_CLOSE_GRACE_MS));
    // Records still pending then are failed below (and counted as failed there).
    send_queued(inner, Some(timeout)).await;
    inner.acc.lock().fail_all(|| Error::Closed("producer"));
    inner.wake.notify_one();
    if let Some(h) = sender
        && tokio::time::timeout(Duration::from_millis(PRODUCER_CLOSE_GRACE_MS), h)
            .await
            .is_err()
    {
        // The sender exits once the queue is empty; it cannot be left non-empty here.
        inner.acc.lock().fail_all(|| Error::Closed("producer"));
    }
    report(inner, 0)
}

/// A random non-zero session id: std's per-process random hash keys over the clock.
fn random_session() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish().max(1)
}

fn refresh_in_background(inner: &Arc<Inner>) {
    let wake = inner.clone();
    inner.cluster.spawn_refresh(move || wake.wake.notify_one());
}

async fn sender_loop(inner: Arc<Inner>) {
    // Batches are sent at their linger deadline, not up to a timer tick after it.
    let mut timer = PreciseSleep::default();
    let backoff = inner
        .config
        .common
        .retry_backoff
        .max(Duration::from_millis(1));
    loop {
        let closed = inner.closed.load(Ordering::Acquire);
        let flushing = closed || inner.flushing.load(Ordering::Acquire) > 0;
        if inner.cluster.is_stale() {
            refresh_in_background(&inner);
        }
        inner.wall.sync();
        let now = Instant::now();
        let mut requests: Vec<(String, Acks, Vec<Drained>)> = Vec::new();
        let mut wake_at: Option<Instant>;
        {
            let mut acc = inner.acc.lock();
            acc.expire(now);
            let (ready, next) = acc.ready(now, flushing);
            wake_at = next;
            // One request per leader and `acks` level (a Produce request has one).
            let mut by_leader: HashMap<(String, Acks), Vec<BatchKey>> = HashMap::new();
            for key in ready {
                match inner.cluster.cached_leader(&key.tp) {
                    Some((address, _epoch)) => by_leader
                        .entry((address, key.settings.acks))
                        .or_default()
                        .push(key),
                    None => {
                        inner.cluster.request_refresh();
                        refresh_in_background(&inner);
                        let t = now + backoff;
                        wake_at = Some(wake_at.map_or(t, |w| w.min(t)));
                    }
                }
            }
            let mut in_flight = inner.in_flight.lock();
            for ((address, acks), keys) in by_leader {
                let n = in_flight.entry(address.clone()).or_insert(0);
                if *n >= inner.config.max_in_flight {
                    continue; // A completion wakes the sender.
                }
                let mut drained = Vec::new();
                let mut bytes = 0usize;
                let budget = inner.config.max_request_size as usize;
                for key in keys {
                    // A request names a partition once: another queue of the same partition
                    // (other codec) goes in the next request. `ready` sorts keys partition
                    // first, so such queues are adjacent.
                    if drained.last().is_some_and(|d: &Drained| d.key.tp == key.tp) {
                        wake_at = Some(now);
                        continue;
                    }
                    let b = acc.front_bytes(&key);
                    let full = drained.len() >= REQUEST_PARTITIONS_MAX || bytes + b > budget;
                    if !drained.is_empty() && full {
                        // The rest waits for the next request to this broker.
                        wake_at = Some(now);
                        break;
                    }
                    // A partition's set stays within the broker's limit for one set.
                    let room = budget
                        .saturating_sub(bytes)
                        .min(MESSAGE_SET_BYTES_MAX as usize);
                    match acc.drain(&key, room, now, flushing, &address) {
                        Ok(Some(d)) => {
                            bytes += d.bytes;
                            drained.push(d);
                        }
                        Ok(None) => {}
                        Err(e) => tracing::warn!(error = %e, "building a batch failed"),
                    }
                }
                if !drained.is_empty() {
                    *n += 1;
                    requests.push((address, acks, drained));
                }
            }
        }
        for (address, acks, drained) in requests {
            tokio::spawn(send_request(inner.clone(), address, acks, drained));
        }
        if inner.closed.load(Ordering::SeqCst) && inner.acc.lock().is_empty() {
            return;
        }
        let idle = inner.config.common.metadata_max_age;
        let sleep_until = wake_at.unwrap_or(now + idle).max(now);
        tokio::select! {
            _ = inner.wake.notified() => {}
            _ = timer.until(sleep_until) => {}
        }
    }
}

async fn send_request(inner: Arc<Inner>, address: String, acks: Acks, drained: Vec<Drained>) {
    let request = ProduceCall {
        acks: acks.as_i32(),
        timeout_ms: u32::try_from(inner.config.common.request_timeout.as_millis())
            .unwrap_or(u32::MAX),
        partitions: drained
            .iter()
            .map(|d| PartitionSets {
                topic: &d.key.tp.topic,
                partition: d.key.tp.partition,
                sets: &d.sets,
                order_sequence: d.order_sequence,
                order_since: d.order_since,
            })
            .collect(),
        session: inner.session,
    };
    // Written around the message sets, without tonic's copy of them (`produce_call`).
    let result = super::produce_call::produce(&inner.cluster, &address, &request).await;
    let now = Instant::now();
    let backoff = inner.config.common.retry_backoff;
    let retries = inner.config.retries;
    {
        let mut acc = inner.acc.lock();
        match result {
            Ok(resp) if resp.results.len() == drained.len() => {
                for (d, r) in drained.iter().zip(resp.results) {
                    let code = code_from_proto(r.error_code);
                    if code == ErrorCode::None {
                        let base = if acks == Acks::None || r.base_offset < 0 {
                            None
                        } else {
                            Some(r.base_offset as u64)
                        };
                        // -1: a CreateTime topic (Kafka's convention).
                        let log_append_time =
                            (r.log_append_time_ms >= 0).then_some(r.log_append_time_ms);
                        let bases: Vec<u64> =
                            r.batch_base_offsets.iter().map(|o| *o as u64).collect();
                        acc.complete_at(
                            &d.key,
                            d.batch_id,
                            Ok(Delivered {
                                base_offset: base,
                                log_append_time,
                            }),
                            &bases,
                        );
                        continue;
                    }
                    let err = partition_error(r.error_code, &r.error_message, &d.key.tp);
                    if needs_metadata_refresh(code) {
                        inner.cluster.request_refresh();
                    }
                    // Refused because an earlier request of the partition, still unanswered
                    // when this one was sent, failed or had not come (docs/FORMAT.md,
                    // "Pipelined produce requests"): not appended, to be sent again in order.
                    let refused_in_order = code == ErrorCode::OutOfOrderSequenceNumber
                        && d.order_since < d.order_sequence;
                    if refused_in_order || code.is_retriable() {
                        let maybe_appended = !refused_in_order;
                        acc.retry_or_fail(
                            &d.key,
                            d.batch_id,
                            err,
                            now,
                            backoff,
                            retries,
                            maybe_appended,
                        );
                    } else {
                        acc.complete(&d.key, d.batch_id, Err(err));
                    }
                }
            }
            Ok(resp) => {
                let msg = format!(
                    "broker {address} answered {} results for {} partitions",
                    resp.results.len(),
                    drained.len()
                );
                for d in &drained {
                    acc.complete(
                        &d.key,
                        d.batch_id,
                        Err(Error::Remote {
                            code: ErrorCode::UnknownServerError,
                            message: msg.clone(),
                        }),
                    );
                }
            }
            Err(e) => {
                let retriable = is_connection_error(&e) || e.code().is_retriable();
                if retriable {
                    inner.cluster.request_refresh();
                }
                for d in &drained {
                    if retriable {
                        acc.retry_or_fail(
                            &d.key,
                            d.batch_id,
                            clone_error(&e),
                            now,
                            backoff,
                            retries,
                            true,
                        );
                    } else {
                        acc.complete(&d.key, d.batch_id, Err(clone_error(&e)));
                    }
                }
            }
        }
    }
    if let Some(n) = inner.in_flight.lock().get_mut(&address) {
        *n = n.saturating_sub(1);
    }
    inner.wake.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wall_clock_through_the_monotonic_one_reads_the_system_clock() {
        let wall = WallClock::new();
        let system_ms = || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64
        };
        for _ in 0..3 {
            let before = system_ms();
            let ms = wall.ms(Instant::now());
            let after = system_ms();
            // Between two reads of the system clock, give or take the ms the sync truncated.
            assert!(
                before - 1 <= ms && ms <= after + 1,
                "{before} <= {ms} <= {after}"
            );
            wall.sync();
        }
        // An instant before the clock's origin reads as the origin, never a negative span.
        if let Some(earlier) = wall.origin.checked_sub(Duration::from_millis(5)) {
            assert!(wall.ms(earlier) <= system_ms());
        }
    }
}

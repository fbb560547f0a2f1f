//! The producer: `send` puts a record into the [`Accumulator`] and returns a
//! [`DeliveryFuture`]; one background sender task turns ready batches into Produce requests.
//!
//! - **Partition choice** ([`choose_partition`]): the record's explicit partition; else Kafka's
//!   murmur2 of the key ([`crate::partitioner::partition_for_key`], so keys land where a Kafka
//!   client puts them); else *sticky*: keyless records of a topic stick to one partition until
//!   `batch.size` bytes or one `linger.ms` window went to it, then move to the next partition
//!   round-robin — full batches, spread evenly.
//! - **Sending**: ready batches are grouped by their partition's leader into ONE multi-partition
//!   `Log.Produce` per broker (at most `max.in.flight.requests.per.connection` requests in
//!   flight per broker, each at most [`PRODUCER_REQUEST_BYTES_MAX`] and
//!   [`REQUEST_PARTITIONS_MAX`] partitions). Per-partition results are
//!   handled one by one: success resolves the batch's futures; a retriable code (NOT_LEADER,
//!   connection errors, …) refreshes metadata when the code calls for it and retries after
//!   `retry.backoff.ms`, while `retries` and `delivery.timeout.ms` allow; anything else fails
//!   the batch with the broker's code and message.
//! - **Ordering**: at most one batch per partition is in flight (see `accumulator`), so order
//!   within a partition holds across retries, whatever `max.in.flight…` says.
//! - **Back-pressure**: queued and in-flight record bytes are bounded by `buffer.memory`. `send`
//!   *waits* for room up to `max.block.ms` and then fails with REQUEST_TIMED_OUT; it also waits
//!   for the topic's metadata (an unknown topic fails at once with UNKNOWN_TOPIC_OR_PARTITION
//!   after one metadata refresh, rather than blocking for `max.block.ms` as Kafka does).
//! - **Close**: `close()` stops new sends (they fail with [`Error::Closed`]), delivers what is
//!   queued (flushing, ignoring `linger.ms`), and after `delivery.timeout.ms` plus a grace period
//!   fails whatever is left with SHUTTING_DOWN, so no future ever hangs. Dropping a producer
//!   without `close()` does the same in the background.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::Mutex;
use sluiceway_proto::v1;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;

use super::accumulator::{Accumulator, Delivered, DeliveryFuture, Drained, record_size};
use super::cluster::{
    Cluster, clone_error, code_from_i32, is_connection_error, needs_metadata_refresh,
    partition_error, status_to_error,
};
use super::config::{Acks, ProducerConfig};
use crate::error::{Error, ErrorCode, Result};
use crate::group::TopicPartition;
use crate::limits::{
    MESSAGE_BYTES_MAX, PRODUCER_CLOSE_GRACE_MS, PRODUCER_REQUEST_BYTES_MAX, REQUEST_PARTITIONS_MAX,
};
use crate::partitioner::partition_for_key;

/// One record to send.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerRecord {
    pub topic: String,
    /// An explicit partition; `None` lets the partitioner choose (key hash, else sticky).
    pub partition: Option<u32>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    /// Create time, ms since the epoch; `None` means now.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    /// A keyless record.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> ProducerRecord {
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
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Where keyless records of one topic currently go.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sticky {
    partition: u32,
    bytes: usize,
    since: Instant,
}

/// The partition for a record (see the module docs). `sticky` is the topic's keyless state.
#[allow(clippy::too_many_arguments)] // All plain inputs of one pure decision; a struct would only rename them.
pub(crate) fn choose_partition(
    explicit: Option<u32>,
    key: Option<&[u8]>,
    partitions: u32,
    size: usize,
    sticky: &mut Option<Sticky>,
    batch_size: usize,
    linger: Duration,
    now: Instant,
) -> u32 {
    if let Some(p) = explicit {
        return p;
    }
    if let Some(k) = key {
        return partition_for_key(k, partitions);
    }
    let s = match sticky {
        Some(s)
            if s.partition < partitions
                && s.bytes + size <= batch_size.max(1)
                && now < s.since + linger.max(Duration::from_millis(1)) =>
        {
            s
        }
        Some(s) => {
            *s = Sticky {
                partition: (s.partition + 1) % partitions,
                bytes: 0,
                since: now,
            };
            s
        }
        None => sticky.insert(Sticky {
            partition: 0,
            bytes: 0,
            since: now,
        }),
    };
    s.bytes += size;
    s.partition
}

#[derive(Debug)]
struct Inner {
    config: ProducerConfig,
    cluster: Arc<Cluster>,
    acc: Mutex<Accumulator>,
    sticky: Mutex<HashMap<String, Option<Sticky>>>,
    buffer: Arc<Semaphore>,
    /// Wakes the sender: new records, completions, flush, close.
    wake: Notify,
    closed: AtomicBool,
    flushing: AtomicUsize,
    in_flight: Mutex<HashMap<String, u32>>,
}

/// An asynchronous producer (see the module docs). Cheap to share behind an `Arc`; every
/// method takes `&self`.
#[derive(Debug)]
pub struct Producer {
    inner: Arc<Inner>,
    sender: Mutex<Option<JoinHandle<()>>>,
}

impl Producer {
    /// Validates `config`, bootstraps metadata (failing over between bootstrap addresses) and
    /// starts the sender task. Must be called inside a tokio runtime.
    pub async fn new(config: ProducerConfig) -> Result<Producer> {
        config.validate()?;
        let cluster = Arc::new(Cluster::new(config.common.clone()));
        cluster.refresh(&[]).await?;
        let inner = Arc::new(Inner {
            acc: Mutex::new(Accumulator::new(
                config.batch_size,
                config.linger,
                config.compression,
                config.delivery_timeout,
            )),
            buffer: Arc::new(Semaphore::new(config.buffer_memory as usize)),
            cluster,
            config,
            sticky: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            flushing: AtomicUsize::new(0),
            in_flight: Mutex::new(HashMap::new()),
        });
        let sender = tokio::spawn(sender_loop(inner.clone()));
        Ok(Producer {
            inner,
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
    /// larger than the limits.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        let f = self.enqueue(record).await;
        self.inner.wake.notify_one();
        f
    }

    /// Queues many records with one call (what a language binding uses, so it crosses the
    /// boundary once per batch). A record that cannot be queued gets an already-failed future;
    /// the others are unaffected.
    pub async fn send_batch(&self, records: Vec<ProducerRecord>) -> Vec<DeliveryFuture> {
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            out.push(self.enqueue(r).await.unwrap_or_else(DeliveryFuture::failed));
        }
        self.inner.wake.notify_one();
        out
    }

    async fn enqueue(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed("producer"));
        }
        let ProducerRecord {
            topic,
            partition,
            key,
            value,
            timestamp,
        } = record;
        let size = record_size(key.as_deref(), value.as_deref());
        let max = (MESSAGE_BYTES_MAX as usize).min(inner.config.buffer_memory as usize);
        if size > max {
            return Err(Error::MessageTooLarge {
                size: size as u64,
                max: max as u64,
            });
        }
        let max_block = inner.config.max_block;
        let meta = match tokio::time::timeout(max_block, inner.cluster.topic(&topic)).await {
            Ok(m) => m?,
            Err(_) => {
                return Err(Error::TimedOut(format!(
                    "metadata for topic {topic} not available within max.block.ms"
                )));
            }
        };
        let partitions = meta.partitions.len() as u32;
        if partitions == 0 {
            return Err(Error::Remote {
                code: ErrorCode::LeaderNotAvailable,
                message: format!("topic {topic} has no partitions yet"),
            });
        }
        if let Some(p) = partition
            && p >= partitions
        {
            return Err(Error::Remote {
                code: ErrorCode::UnknownTopicOrPartition,
                message: format!(
                    "topic {topic} has {partitions} partitions; there is no partition {p}"
                ),
            });
        }
        // Fast path without a timer when there is room.
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
        if inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed("producer"));
        }
        let now = Instant::now();
        let p = if partition.is_none() && key.is_none() {
            let mut sticky = inner.sticky.lock();
            let slot = match sticky.get_mut(&topic) {
                Some(s) => s,
                None => sticky.entry(topic.clone()).or_default(),
            };
            choose_partition(
                None,
                None,
                partitions,
                size,
                slot,
                inner.config.batch_size as usize,
                inner.config.linger,
                now,
            )
        } else {
            choose_partition(
                partition,
                key.as_deref(),
                partitions,
                size,
                &mut None,
                0,
                Duration::ZERO,
                now,
            )
        };
        let ts = timestamp.unwrap_or_else(now_ms);
        let tp = TopicPartition {
            topic,
            partition: p,
        };
        let mut acc = inner.acc.lock();
        // Checked again under the accumulator's lock: the sender exits only when it sees the
        // producer closed and the accumulator empty under this lock, so no record can be
        // appended after it left (its future would never resolve).
        if inner.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed("producer"));
        }
        Ok(acc.append(&tp, ts, key.as_deref(), value.as_deref(), now, Some(permit)))
    }

    /// Sends everything queued now (ignoring `linger.ms`) and waits until each of those records
    /// is delivered or has failed.
    pub async fn flush(&self) -> Result<()> {
        flush(&self.inner).await;
        Ok(())
    }

    /// [`Producer::close_timeout`] with `delivery.timeout.ms` plus a grace period: every pending
    /// send resolves before this returns.
    pub async fn close(&self) -> Result<()> {
        let t = self.inner.config.delivery_timeout + Duration::from_millis(PRODUCER_CLOSE_GRACE_MS);
        self.close_timeout(t).await
    }

    /// Stops accepting sends, delivers what is pending for up to `timeout`, then fails the rest
    /// with SHUTTING_DOWN and stops the sender task. Idempotent.
    pub async fn close_timeout(&self, timeout: Duration) -> Result<()> {
        let inner = &self.inner;
        inner.closed.store(true, Ordering::SeqCst);
        inner.wake.notify_one();
        if tokio::time::timeout(timeout, flush(inner)).await.is_err() {
            inner.acc.lock().fail_all(|| Error::ShuttingDown);
            inner.wake.notify_one();
        }
        let handle = self.sender.lock().take();
        if let Some(h) = handle
            && tokio::time::timeout(Duration::from_millis(PRODUCER_CLOSE_GRACE_MS), h)
                .await
                .is_err()
        {
            // The sender exits once the queue is empty; it cannot be left non-empty here.
            inner.acc.lock().fail_all(|| Error::ShuttingDown);
        }
        Ok(())
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        // The sender task delivers what is queued, then exits (see the module docs).
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.wake.notify_one();
    }
}

async fn flush(inner: &Arc<Inner>) {
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
    for b in pending {
        b.wait().await;
    }
}

fn refresh_in_background(inner: &Arc<Inner>) {
    let wake = inner.clone();
    inner.cluster.spawn_refresh(move || wake.wake.notify_one());
}

async fn sender_loop(inner: Arc<Inner>) {
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
        let now = Instant::now();
        let mut requests: Vec<(String, Vec<Drained>)> = Vec::new();
        let mut wake_at: Option<Instant>;
        {
            let mut acc = inner.acc.lock();
            acc.expire(now);
            let (ready, next) = acc.ready(now, flushing);
            wake_at = next;
            let mut by_leader: HashMap<String, Vec<TopicPartition>> = HashMap::new();
            for tp in ready {
                match inner.cluster.cached_leader(&tp) {
                    Some((address, _epoch)) => by_leader.entry(address).or_default().push(tp),
                    None => {
                        inner.cluster.request_refresh();
                        refresh_in_background(&inner);
                        let t = now + backoff;
                        wake_at = Some(wake_at.map_or(t, |w| w.min(t)));
                    }
                }
            }
            let mut in_flight = inner.in_flight.lock();
            for (address, tps) in by_leader {
                let n = in_flight.entry(address.clone()).or_insert(0);
                if *n >= inner.config.max_in_flight {
                    continue; // A completion wakes the sender.
                }
                let mut drained = Vec::new();
                let mut bytes = 0usize;
                for tp in tps {
                    let b = acc.front_bytes(&tp);
                    let full = drained.len() >= REQUEST_PARTITIONS_MAX
                        || bytes + b > PRODUCER_REQUEST_BYTES_MAX as usize;
                    if !drained.is_empty() && full {
                        // The rest waits for the next request to this broker.
                        wake_at = Some(now);
                        break;
                    }
                    match acc.drain(&tp) {
                        Ok(Some(d)) => {
                            bytes += d.set.len();
                            drained.push(d);
                        }
                        Ok(None) => {}
                        Err(e) => tracing::warn!(error = %e, "building a batch failed"),
                    }
                }
                if !drained.is_empty() {
                    *n += 1;
                    requests.push((address, drained));
                }
            }
        }
        for (address, drained) in requests {
            tokio::spawn(send_request(inner.clone(), address, drained));
        }
        if inner.closed.load(Ordering::SeqCst) && inner.acc.lock().is_empty() {
            return;
        }
        let idle = inner.config.common.metadata_max_age;
        let sleep_until = wake_at.unwrap_or(now + idle).max(now);
        tokio::select! {
            _ = inner.wake.notified() => {}
            _ = tokio::time::sleep_until(sleep_until.into()) => {}
        }
    }
}

async fn send_request(inner: Arc<Inner>, address: String, drained: Vec<Drained>) {
    let acks = inner.config.acks;
    let request = v1::ProduceRequest {
        acks: acks.as_i32(),
        timeout_ms: u32::try_from(inner.config.common.request_timeout.as_millis())
            .unwrap_or(u32::MAX),
        partitions: drained
            .iter()
            .map(|d| v1::ProducePartition {
                topic: d.tp.topic.clone(),
                partition: d.tp.partition,
                message_set: d.set.clone(),
                leader_epoch: None,
            })
            .collect(),
    };
    let result = match inner.cluster.log_client(&address) {
        Ok(mut client) => client
            .produce(inner.cluster.request(request, Duration::ZERO))
            .await
            .map(|r| r.into_inner())
            .map_err(|s| status_to_error(&s)),
        Err(e) => Err(e),
    };
    let now = Instant::now();
    let backoff = inner.config.common.retry_backoff;
    let retries = inner.config.retries;
    {
        let mut acc = inner.acc.lock();
        match result {
            Ok(resp) if resp.results.len() == drained.len() => {
                for (d, r) in drained.iter().zip(resp.results) {
                    let code = code_from_i32(r.error_code);
                    if code == ErrorCode::None {
                        let base = if acks == Acks::None || r.base_offset < 0 {
                            None
                        } else {
                            Some(r.base_offset as u64)
                        };
                        // -1: a CreateTime topic (Kafka's convention).
                        let log_append_time =
                            (r.log_append_time_ms >= 0).then_some(r.log_append_time_ms);
                        acc.complete(
                            &d.tp,
                            d.batch_id,
                            Ok(Delivered {
                                base_offset: base,
                                log_append_time,
                            }),
                        );
                        continue;
                    }
                    let err = partition_error(r.error_code, &r.error_message, &d.tp);
                    if needs_metadata_refresh(code) {
                        inner.cluster.request_refresh();
                    }
                    if code.is_retriable() {
                        acc.retry_or_fail(&d.tp, d.batch_id, err, now, backoff, retries);
                    } else {
                        acc.complete(&d.tp, d.batch_id, Err(err));
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
                        &d.tp,
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
                            &d.tp,
                            d.batch_id,
                            clone_error(&e),
                            now,
                            backoff,
                            retries,
                        );
                    } else {
                        acc.complete(&d.tp, d.batch_id, Err(clone_error(&e)));
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
    fn explicit_partition_wins_then_key_hash() {
        let now = Instant::now();
        let mut s = None;
        assert_eq!(
            choose_partition(Some(2), Some(b"a"), 6, 10, &mut s, 100, Duration::ZERO, now),
            2
        );
        assert_eq!(
            choose_partition(
                None,
                Some(b"hello"),
                6,
                10,
                &mut s,
                100,
                Duration::ZERO,
                now
            ),
            partition_for_key(b"hello", 6)
        );
        assert!(s.is_none(), "keyed records leave the sticky state alone");
    }

    #[test]
    fn keyless_records_stick_for_a_batch_then_rotate_evenly() {
        let now = Instant::now();
        let mut s = None;
        let linger = Duration::from_secs(10);
        // Batches of 3 records of 10 bytes over 3 partitions.
        let got: Vec<u32> = (0..18)
            .map(|_| choose_partition(None, None, 3, 10, &mut s, 30, linger, now))
            .collect();
        assert_eq!(got, [0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 0, 0, 1, 1, 1, 2, 2, 2]);
        // A new linger window moves on even when the batch is not full.
        let later = now + linger;
        assert_eq!(
            choose_partition(None, None, 3, 10, &mut s, 30, linger, later),
            0
        );
        assert_eq!(
            choose_partition(None, None, 3, 10, &mut s, 30, linger, later),
            0
        );
    }

    /// Conformance C2's vectors: Kafka's default partitioner over 6 partitions, computed by an
    /// independent (Python) transcription of Kafka's `Utils.murmur2` that reproduces Kafka's own
    /// `UtilsTest` vectors: `(murmur2(key) & 0x7fffffff) % 6`.
    #[test]
    fn kafka_partition_vectors_for_c2() {
        let want: &[(&str, u32)] = &[
            ("a", 4),
            ("b", 2),
            ("hello", 3),
            ("sluiceway", 4),
            ("0", 2),
            ("1", 3),
            ("2", 2),
            ("3", 5),
            ("4", 1),
            ("5", 0),
            ("6", 4),
            ("7", 3),
            ("8", 3),
            ("9", 5),
        ];
        let now = Instant::now();
        for (k, p) in want {
            assert_eq!(
                choose_partition(
                    None,
                    Some(k.as_bytes()),
                    6,
                    1,
                    &mut None,
                    1,
                    Duration::ZERO,
                    now
                ),
                *p,
                "key {k}"
            );
        }
    }
}

//! The measurement loops of `sluiceway bench produce|consume|e2e`, over the public client API
//! so they measure what an application gets (and any binding can reuse them).
//!
//! - **produce**: `producers` producers (each its own [`Producer`]) send `size`-byte values (no
//!   key, sticky partitioning), each with at most `in_flight` sends outstanding. Latency =
//!   send → delivery seen, in microseconds.
//! - **consume**: `consumers` standalone consumers share the topic's partitions (round-robin,
//!   assigned, no group) and read from the earliest offset; latency = local clock at `poll`
//!   return − the record's timestamp (create time, ms: meaningful only on the producing
//!   machine's clock; against a backlog it measures the backlog's age).
//! - **e2e**: consumers positioned at the end of every partition first, then producers as in
//!   `produce`; each value carries its send time in its first 8 bytes (ns since the run's start,
//!   little-endian, same process so the same monotonic clock) and the consumers record receive
//!   time − send time. The run ends when the consumers have read what the producers delivered.
//!
//! **Fixed rate** (`rate`: messages/s over all producers, split evenly): message *i* of a
//! producer is *intended* to be sent at `start + i / rate`, and every latency is measured from
//! that intended time, not from when the send actually happened, so a stall of the producer,
//! the client or the broker shows up as latency of every message it delayed (no coordinated
//! omission). Without `rate` a producer sends as fast as its window allows.
//!
//! **Cost per message in the loops**: none of our own beyond the `send` call and one histogram
//! record. The sender reads the clock once per chunk of up to [`CHUNK_MESSAGES_MAX`] messages,
//! the rate limiter sleeps once per chunk of *due* messages (not per message; the last 2 ms of
//! a wait on a blocking-pool thread, as precise as the OS's sleep, since tokio's 1 ms timer
//! would add its lateness to every latency), the in-flight
//! window is acquired per chunk, and one completion task per producer waits for the chunks in
//! sending order, reads the clock once per chunk and records the chunk's latencies (at a fixed
//! rate one record per message, each from its own intended time, computed without a clock
//! read). A chunk's latency is when its last record was seen delivered, so a record finishing
//! early in a chunk, or behind an older chunk on a slower partition, is counted late: the
//! figures err high, never low. Stamped values (e2e) are cut from one buffer per chunk.
//! What the client API itself costs per record (a delivery result carries the topic) is part
//! of what is measured.
//!
//! Every run is bounded: by `messages` and/or `duration`; a consume run also stops after
//! [`BENCH_IDLE_MS`] without a record (the topic ran dry) and an e2e run that long after the
//! producers finished. Latencies go into an HdrHistogram (3 significant digits, 1 µs .. 1 hour,
//! larger values saturate). `progress` is called about once a second with running totals.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::runtime::PreciseSleep;
use super::{
    Admin, AdminConfig, Consumer, ConsumerConfig, DeliveryFuture, NewTopic, OffsetReset, Producer,
    ProducerConfig, ProducerRecord, TopicPartition,
};
use crate::error::{Error, ErrorCode, Result};
use crate::limits::{
    BENCH_CLIENTS_MAX, BENCH_IN_FLIGHT_MAX, BENCH_MESSAGE_BYTES_MAX, BENCH_MESSAGES_MAX,
    BENCH_RATE_MAX,
};

/// A consume run ends after this long without a record (an e2e run this long after the
/// producers finished).
pub const BENCH_IDLE_MS: u64 = 5_000;
/// Most messages one producer sends between two clock reads (and one completion wake-up).
pub const CHUNK_MESSAGES_MAX: usize = 256;
/// Bytes at the head of an e2e value: its send time.
pub const STAMP_BYTES: usize = 8;
/// Highest latency the histogram tracks exactly (1 hour in µs); larger ones saturate.
const LATENCY_US_MAX: u64 = 3_600_000_000;
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
const POLL_TIMEOUT: Duration = Duration::from_millis(100);

/// Which loop to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchKind {
    Produce,
    Consume,
    EndToEnd,
}

impl BenchKind {
    pub fn name(self) -> &'static str {
        match self {
            BenchKind::Produce => "produce",
            BenchKind::Consume => "consume",
            BenchKind::EndToEnd => "e2e",
        }
    }
}

/// What to run. At least one of `messages` and `duration` bounds the run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub topic: String,
    /// Partitions of the topic when the benchmark creates it.
    pub partitions: u32,
    /// Replication factor when the benchmark creates the topic (0: the broker's default).
    pub replication_factor: u32,
    /// Topic configuration overrides when the benchmark creates the topic
    /// (e.g. `flush.policy=os`).
    pub topic_configs: BTreeMap<String, String>,
    /// Messages in total (over all producers, or read over all consumers).
    pub messages: Option<u64>,
    pub duration: Option<Duration>,
    /// Value size in bytes (produce, e2e).
    pub size: usize,
    /// Sends outstanding at once, per producer.
    pub in_flight: usize,
    /// Fixed rate in messages/s over all producers (produce, e2e); `None`: as fast as possible.
    pub rate: Option<u64>,
    pub producers: usize,
    pub consumers: usize,
}

impl BenchOptions {
    /// Options with the defaults of `sluiceway bench` for `topic`.
    pub fn new(topic: impl Into<String>) -> BenchOptions {
        BenchOptions {
            topic: topic.into(),
            partitions: 4,
            replication_factor: 0,
            topic_configs: BTreeMap::new(),
            messages: Some(100_000),
            duration: None,
            size: 100,
            in_flight: 10_000,
            rate: None,
            producers: 1,
            consumers: 1,
        }
    }

    pub fn validate(&self, kind: BenchKind) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        if self.messages.is_none() && self.duration.is_none() {
            return bad("give --messages, --duration-s or both".into());
        }
        if self
            .messages
            .is_some_and(|n| n == 0 || n > BENCH_MESSAGES_MAX)
        {
            return bad(format!("--messages must be 1..={BENCH_MESSAGES_MAX}"));
        }
        if self.duration.is_some_and(|d| d.is_zero()) {
            return bad("--duration-s must be at least 1".into());
        }
        if self.size > BENCH_MESSAGE_BYTES_MAX {
            return bad(format!(
                "--size must be at most {BENCH_MESSAGE_BYTES_MAX} bytes"
            ));
        }
        if kind == BenchKind::EndToEnd && self.size < STAMP_BYTES {
            return bad(format!(
                "--size must be at least {STAMP_BYTES} bytes for e2e (the send time rides in the value)"
            ));
        }
        if self.in_flight == 0 || self.in_flight > BENCH_IN_FLIGHT_MAX {
            return bad(format!("--in-flight must be 1..={BENCH_IN_FLIGHT_MAX}"));
        }
        if self.partitions == 0 {
            return bad("--partitions must be at least 1".into());
        }
        if self.rate.is_some_and(|r| r == 0 || r > BENCH_RATE_MAX) {
            return bad(format!("--rate must be 1..={BENCH_RATE_MAX} messages/s"));
        }
        if kind == BenchKind::Consume && self.rate.is_some() {
            return bad("--rate applies to produce and e2e, not consume".into());
        }
        for (flag, n) in [
            ("--producers", self.producers),
            ("--consumers", self.consumers),
        ] {
            if n == 0 || n > BENCH_CLIENTS_MAX {
                return bad(format!("{flag} must be 1..={BENCH_CLIENTS_MAX}"));
            }
        }
        if self
            .messages
            .is_some_and(|m| m < self.producers as u64 && kind != BenchKind::Consume)
        {
            return bad("--messages must be at least --producers (each sends a share)".into());
        }
        if self
            .rate
            .is_some_and(|r| r < self.producers as u64 && kind != BenchKind::Consume)
        {
            return bad("--rate must be at least --producers (each sends a share)".into());
        }
        Ok(())
    }
}

/// Running totals passed to the progress callback.
#[derive(Clone, Copy, Debug)]
pub struct BenchProgress {
    pub elapsed: Duration,
    /// Messages delivered (produce) or read (consume, e2e).
    pub messages: u64,
    pub bytes: u64,
    /// Messages per second over the last interval.
    pub recent_rate: f64,
}

/// The final figures. Latencies in microseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchReport {
    pub mode: &'static str,
    /// Messages delivered (produce) or read (consume, e2e).
    pub messages: u64,
    pub bytes: u64,
    /// Failed deliveries (produce, e2e).
    pub errors: u64,
    pub elapsed: Duration,
    pub messages_per_sec: f64,
    pub mb_per_sec: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// Samples behind the percentiles (records with a usable timestamp).
    pub latency_samples: u64,
    pub producers: usize,
    pub consumers: usize,
    /// The topic's effective `flush.policy` and replication factor, as the broker reports them.
    pub flush_policy: Option<String>,
    pub replication_factor: Option<u32>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("static bounds are valid")
}

fn percentile(h: &Histogram<u64>, q: f64) -> u64 {
    if h.is_empty() {
        0
    } else {
        h.value_at_quantile(q)
    }
}

/// What the topic is, as the broker describes it.
#[derive(Clone, Debug, Default)]
struct TopicFacts {
    partitions: Vec<u32>,
    flush_policy: Option<String>,
    replication_factor: Option<u32>,
}

/// Creates `topic` with `partitions` partitions (and the options' replication factor and
/// configs) unless it exists.
pub async fn ensure_topic(admin: AdminConfig, topic: &str, partitions: u32) -> Result<()> {
    let mut options = BenchOptions::new(topic);
    options.partitions = partitions;
    prepare_topic(admin, &options).await.map(|_| ())
}

async fn prepare_topic(admin: AdminConfig, options: &BenchOptions) -> Result<TopicFacts> {
    let admin = Admin::new(admin).await?;
    let mut new = NewTopic::new(options.topic.clone(), options.partitions)
        .replication_factor(options.replication_factor);
    for (k, v) in &options.topic_configs {
        new = new.config(k.clone(), v.clone());
    }
    match admin.create_topic(new).await {
        Ok(_) => {}
        Err(e) if e.code() == ErrorCode::TopicAlreadyExists => {}
        Err(e) => return Err(e),
    }
    let d = admin.describe_topic(&options.topic).await?;
    Ok(TopicFacts {
        partitions: d.topic.partitions.iter().map(|p| p.partition).collect(),
        flush_policy: d.effective_configs.get("flush.policy").cloned(),
        replication_factor: d.topic.partitions.first().map(|p| p.replicas.len() as u32),
    })
}

/// Totals the workers add to once per chunk or poll, for the progress line.
#[derive(Debug, Default)]
struct Counters {
    messages: AtomicU64,
    bytes: AtomicU64,
}

/// What one worker (a producer or a consumer) measured.
#[derive(Debug)]
struct Tally {
    histogram: Histogram<u64>,
    messages: u64,
    bytes: u64,
    errors: u64,
    first_error: Option<Error>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            histogram: histogram(),
            messages: 0,
            bytes: 0,
            errors: 0,
            first_error: None,
        }
    }
    fn merge(&mut self, other: Tally) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.histogram.add(&other.histogram);
        self.messages += other.messages;
        self.bytes += other.bytes;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// Calls `progress` about once a second from the counters until `work` finishes.
async fn with_progress<T>(
    counters: &Counters,
    start: Instant,
    work: impl Future<Output = T>,
    progress: &mut impl FnMut(BenchProgress),
) -> T {
    tokio::pin!(work);
    let mut interval = tokio::time::interval_at(
        tokio::time::Instant::from_std(start + PROGRESS_INTERVAL),
        PROGRESS_INTERVAL,
    );
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut last, mut last_messages) = (start, 0u64);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = interval.tick() => {
                let now = Instant::now();
                let messages = counters.messages.load(Ordering::Relaxed);
                progress(BenchProgress {
                    elapsed: now - start,
                    messages,
                    bytes: counters.bytes.load(Ordering::Relaxed),
                    recent_rate: (messages - last_messages) as f64
                        / (now - last).as_secs_f64().max(1e-9),
                });
                (last, last_messages) = (now, messages);
            }
        }
    }
}

/// Joins spawned workers, merging what they measured.
async fn join_all(handles: Vec<tokio::task::JoinHandle<Result<Tally>>>) -> Result<Tally> {
    let mut total = Tally::new();
    let mut failure = None;
    for h in handles {
        match h.await {
            Ok(Ok(t)) => total.merge(t),
            Ok(Err(e)) => {
                failure.get_or_insert(e);
            }
            // A worker panicked (the tasks are never cancelled): pass the panic on.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(total),
    }
}

fn report(
    kind: BenchKind,
    options: &BenchOptions,
    facts: &TopicFacts,
    t: &Tally,
    elapsed: Duration,
) -> BenchReport {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let h = &t.histogram;
    BenchReport {
        mode: kind.name(),
        messages: t.messages,
        bytes: t.bytes,
        errors: t.errors,
        elapsed,
        messages_per_sec: t.messages as f64 / secs,
        mb_per_sec: t.bytes as f64 / secs / 1_000_000.0,
        p50_us: percentile(h, 0.5),
        p99_us: percentile(h, 0.99),
        p999_us: percentile(h, 0.999),
        max_us: if h.is_empty() { 0 } else { h.max() },
        latency_samples: h.len(),
        producers: if kind == BenchKind::Consume {
            0
        } else {
            options.producers
        },
        consumers: if kind == BenchKind::Produce {
            0
        } else {
            options.consumers
        },
        flush_policy: facts.flush_policy.clone(),
        replication_factor: facts.replication_factor,
    }
}

/// Splits `total` into `n` shares differing by at most one.
fn share(total: u64, n: usize, i: usize) -> u64 {
    let n = n as u64;
    total / n + u64::from((i as u64) < total % n)
}

/// One producer's part of a run.
#[derive(Clone, Debug)]
struct ProducerPlan {
    topic: Arc<str>,
    size: usize,
    in_flight: usize,
    messages: u64,
    deadline: Option<Instant>,
    /// Messages/s for this producer.
    rate: Option<f64>,
    /// Stamp each value with its (intended) send time for e2e.
    stamp: bool,
}

/// A chunk of sends waiting for delivery, in sending order.
#[derive(Debug)]
struct Chunk {
    /// When the first message was sent (or, at a fixed rate, was intended to be).
    first: Instant,
    /// Time between the intended sends of two consecutive messages (zero without a rate).
    step: Duration,
    futures: Vec<DeliveryFuture>,
    _permits: OwnedSemaphorePermit,
}

/// Fills one buffer with `n` values of `size` bytes, value `k` stamped with the send time of
/// message `k` (ns since `base`), and cuts it into values without copying.
fn stamped_values(
    n: usize,
    size: usize,
    base: Instant,
    first: Instant,
    step: Duration,
    out: &mut Vec<Bytes>,
) {
    let mut buf = BytesMut::with_capacity(n * size);
    let first_ns = first.saturating_duration_since(base).as_nanos() as u64;
    let step_ns = step.as_nanos() as u64;
    for k in 0..n {
        buf.put_u64_le(first_ns + k as u64 * step_ns);
        buf.put_bytes(b'x', size - STAMP_BYTES);
    }
    let buf = buf.freeze();
    out.clear();
    out.extend((0..n).map(|k| buf.slice(k * size..(k + 1) * size)));
}

/// Sends a producer's share (see the module docs); a completion task records latencies.
/// Waits until `at` with the precision of the OS's sleep (tens of µs) rather than tokio's 1 ms
/// timer wheel ([`PreciseSleep`]): a fixed-rate run counts latency from each message's intended
/// send time, so a generator that wakes up to a ms late would charge its own lateness to the
/// system measured (Kafka's `E2eLatency.java` paces with `LockSupport.parkNanos`, as precise as
/// this).
async fn pace_until(at: Instant) {
    PreciseSleep::default().until(at).await;
}

async fn produce_worker(
    producer: Producer,
    plan: ProducerPlan,
    base: Instant,
    counters: Arc<Counters>,
) -> Result<Tally> {
    let window = Arc::new(Semaphore::new(plan.in_flight));
    // At most `in_flight` chunks are outstanding (each holds at least one permit).
    let (tx, mut rx) = mpsc::channel::<Chunk>(plan.in_flight);
    let (recycle_tx, mut recycle_rx) = mpsc::channel::<Vec<DeliveryFuture>>(plan.in_flight);
    let size = plan.size as u64;
    let completion = {
        let counters = counters.clone();
        tokio::spawn(async move {
            let mut t = Tally::new();
            while let Some(mut chunk) = rx.recv().await {
                let n = chunk.futures.len() as u64;
                let mut ok = 0u64;
                for f in chunk.futures.iter_mut() {
                    match f.await {
                        Ok(_) => ok += 1,
                        Err(e) => {
                            t.errors += 1;
                            t.first_error.get_or_insert(e);
                        }
                    }
                }
                let seen = Instant::now();
                if chunk.step.is_zero() || ok < n {
                    let us = seen.saturating_duration_since(chunk.first).as_micros() as u64;
                    t.histogram.saturating_record_n(us.max(1), ok);
                } else {
                    let lat0 = seen.saturating_duration_since(chunk.first).as_nanos() as u64;
                    let step = chunk.step.as_nanos() as u64;
                    for k in 0..n {
                        let us = lat0.saturating_sub(k * step) / 1_000;
                        t.histogram.saturating_record(us.max(1));
                    }
                }
                t.messages += ok;
                t.bytes += ok * size;
                counters.messages.fetch_add(ok, Ordering::Relaxed);
                counters.bytes.fetch_add(ok * size, Ordering::Relaxed);
                chunk.futures.clear();
                let _ = recycle_tx.try_send(std::mem::take(&mut chunk.futures));
            }
            t
        })
    };

    // One value for every unstamped message, as Kafka's ProducerPerformance reuses one payload:
    // static, so a clone is a copy of two words (a shared `Bytes` would cost every record an
    // atomic reference count up and down). Leaked once per producer of a run: `size` bytes.
    let shared_value = Bytes::from_static(Box::leak(vec![b'x'; plan.size].into_boxed_slice()));
    let mut values: Vec<Bytes> = Vec::with_capacity(CHUNK_MESSAGES_MAX);
    let chunk_max = CHUNK_MESSAGES_MAX.min(plan.in_flight) as u64;
    let step = plan
        .rate
        .map_or(Duration::ZERO, |r| Duration::from_secs_f64(1.0 / r));
    let start = Instant::now();
    let mut sent = 0u64;
    let mut send_error = None;
    'run: while sent < plan.messages {
        let now = Instant::now();
        if plan.deadline.is_some_and(|d| now >= d) {
            break;
        }
        let n = match plan.rate {
            None => chunk_max.min(plan.messages - sent),
            Some(r) => {
                // Messages whose intended time has come (message i is due at start + i/r).
                let due = ((now - start).as_secs_f64() * r) as u64 + 1;
                let due = due.min(plan.messages);
                if due <= sent {
                    let next = start + Duration::from_secs_f64(sent as f64 / r);
                    pace_until(next).await;
                    continue;
                }
                (due - sent).min(chunk_max)
            }
        };
        let permits = window
            .clone()
            .acquire_many_owned(n as u32)
            .await
            .expect("the window is never closed");
        let first = match plan.rate {
            Some(r) => start + Duration::from_secs_f64(sent as f64 / r),
            None => Instant::now(),
        };
        if plan.stamp {
            stamped_values(n as usize, plan.size, base, first, step, &mut values);
        }
        let mut futures = recycle_rx
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(chunk_max as usize));
        for k in 0..n as usize {
            let value = match values.get(k) {
                Some(v) if plan.stamp => v.clone(),
                _ => shared_value.clone(),
            };
            match producer
                .send(ProducerRecord::new(plan.topic.clone(), value))
                .await
            {
                Ok(f) => futures.push(f),
                Err(e) => {
                    send_error = Some(e);
                    break;
                }
            }
        }
        sent += futures.len() as u64;
        if !futures.is_empty() {
            let _ = tx
                .send(Chunk {
                    first,
                    step,
                    futures,
                    _permits: permits,
                })
                .await;
        }
        if send_error.is_some() {
            break 'run;
        }
    }
    drop(tx);
    let mut t = match completion.await {
        Ok(t) => t,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    let closed = producer.close(None).await;
    if let Some(e) = send_error {
        t.errors += 1;
        t.first_error.get_or_insert(e);
    }
    if t.messages == 0 {
        if let Some(e) = t.first_error.take() {
            return Err(e);
        }
        closed?;
    }
    Ok(t)
}

/// The producers of a run, each its own client, connected before the clock starts.
async fn new_producers(config: &ProducerConfig, n: usize) -> Result<Vec<Producer>> {
    let mut producers = Vec::with_capacity(n);
    for _ in 0..n {
        producers.push(Producer::new(config.clone()).await?);
    }
    Ok(producers)
}

/// Starts the producers' loops, each with its share of the messages and the rate.
fn spawn_producers(
    producers: Vec<Producer>,
    options: &BenchOptions,
    base: Instant,
    stamp: bool,
    counters: &Arc<Counters>,
) -> Vec<tokio::task::JoinHandle<Result<Tally>>> {
    let deadline = options.duration.map(|d| Instant::now() + d);
    producers
        .into_iter()
        .enumerate()
        .map(|(i, producer)| {
            let plan = ProducerPlan {
                topic: options.topic.as_str().into(),
                size: options.size,
                in_flight: options.in_flight,
                messages: options
                    .messages
                    .map_or(u64::MAX, |m| share(m, options.producers, i)),
                deadline,
                rate: options.rate.map(|r| share(r, options.producers, i) as f64),
                stamp,
            };
            tokio::spawn(produce_worker(producer, plan, base, counters.clone()))
        })
        .collect()
}

/// The produce benchmark (see the module docs).
pub async fn bench_produce(
    config: ProducerConfig,
    options: &BenchOptions,
    mut progress: impl FnMut(BenchProgress),
) -> Result<BenchReport> {
    options.validate(BenchKind::Produce)?;
    config.validate()?;
    let facts = prepare_topic(
        AdminConfig {
            common: config.common.clone(),
        },
        options,
    )
    .await?;
    let producers = new_producers(&config, options.producers).await?;
    let counters = Arc::new(Counters::default());
    let start = Instant::now();
    let handles = spawn_producers(producers, options, start, false, &counters);
    let t = with_progress(&counters, start, join_all(handles), &mut progress).await?;
    let elapsed = start.elapsed();
    if t.messages == 0
        && let Some(e) = t.first_error
    {
        return Err(e);
    }
    Ok(report(BenchKind::Produce, options, &facts, &t, elapsed))
}

/// How a consumer worker knows when to stop.
#[derive(Debug)]
struct ConsumeStop {
    /// Read over all consumers.
    read: AtomicU64,
    /// Stop when `read` reaches this (consume: `messages`; e2e: what the producers delivered,
    /// set when they finished).
    target: AtomicU64,
    /// e2e: the producers finished (consume: always true).
    producers_done: AtomicBool,
    deadline: Option<Instant>,
}

/// Consumers of a run, each assigned its share of the partitions, positioned before any
/// producer starts.
async fn start_consumers(
    config: &ConsumerConfig,
    options: &BenchOptions,
    facts: &TopicFacts,
    from_end: bool,
) -> Result<Vec<Consumer>> {
    if options.consumers > facts.partitions.len() {
        return Err(Error::InvalidArgument(format!(
            "--consumers ({}) must be at most the topic's partitions ({})",
            options.consumers,
            facts.partitions.len()
        )));
    }
    let mut consumers = Vec::with_capacity(options.consumers);
    for i in 0..options.consumers {
        let c = Consumer::new(config.clone().auto_offset_reset(OffsetReset::Earliest)).await?;
        let mine: Vec<TopicPartition> = facts
            .partitions
            .iter()
            .skip(i)
            .step_by(options.consumers)
            .map(|&p| TopicPartition::new(options.topic.clone(), p))
            .collect();
        c.assign(mine.clone())?;
        if from_end {
            c.seek_to_end(None).await?;
            // Resolve the positions now, so records sent from here on are all read.
            for tp in &mine {
                c.position(tp).await?;
            }
        } else {
            c.seek_to_beginning(None).await?;
        }
        consumers.push(c);
    }
    Ok(consumers)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Reads until the stop condition; latencies from stamps (e2e) or record timestamps.
async fn consume_worker(
    consumer: Consumer,
    stop: Arc<ConsumeStop>,
    base: Instant,
    stamped: bool,
    counters: Arc<Counters>,
) -> Result<Tally> {
    let mut t = Tally::new();
    let idle = Duration::from_millis(BENCH_IDLE_MS);
    let mut last_record = Instant::now();
    loop {
        let read = stop.read.load(Ordering::Relaxed);
        let done = stop.producers_done.load(Ordering::Acquire);
        if done && read >= stop.target.load(Ordering::Acquire) {
            break;
        }
        if stop.deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let records = consumer.poll(POLL_TIMEOUT).await?;
        if records.is_empty() {
            // Idle counts only once nothing more is coming.
            if !done {
                last_record = Instant::now();
            } else if last_record.elapsed() >= idle {
                break;
            }
            continue;
        }
        last_record = Instant::now();
        let (now_ns, now_ms) = (base.elapsed().as_nanos() as u64, now_ms());
        let mut bytes = 0u64;
        for r in &records {
            let value = r.value.as_deref().unwrap_or_default();
            if stamped {
                if let Some(stamp) = value.first_chunk::<STAMP_BYTES>() {
                    let sent = u64::from_le_bytes(*stamp);
                    t.histogram
                        .saturating_record((now_ns.saturating_sub(sent) / 1_000).max(1));
                }
            } else if r.timestamp >= 0 {
                t.histogram
                    .saturating_record(((now_ms - r.timestamp).max(0) as u64 * 1000).max(1));
            }
            bytes += value.len() as u64 + r.key.as_ref().map_or(0, |k| k.len() as u64);
        }
        let n = records.len() as u64;
        t.messages += n;
        t.bytes += bytes;
        stop.read.fetch_add(n, Ordering::Relaxed);
        counters.messages.fetch_add(n, Ordering::Relaxed);
        counters.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    consumer.close(None).await?;
    Ok(t)
}

fn spawn_consumers(
    consumers: Vec<Consumer>,
    stop: &Arc<ConsumeStop>,
    base: Instant,
    stamped: bool,
    counters: &Arc<Counters>,
) -> Vec<tokio::task::JoinHandle<Result<Tally>>> {
    consumers
        .into_iter()
        .map(|c| {
            tokio::spawn(consume_worker(
                c,
                stop.clone(),
                base,
                stamped,
                counters.clone(),
            ))
        })
        .collect()
}

/// The consume benchmark (see the module docs). `config` should not carry a `group.id`
/// subscription: the benchmark assigns the partitions itself and reads from the earliest
/// offset.
pub async fn bench_consume(
    config: ConsumerConfig,
    options: &BenchOptions,
    mut progress: impl FnMut(BenchProgress),
) -> Result<BenchReport> {
    options.validate(BenchKind::Consume)?;
    config.validate()?;
    // Created when absent, so a consume run may start before the producer's.
    let facts = prepare_topic(
        AdminConfig {
            common: config.common.clone(),
        },
        options,
    )
    .await?;
    let consumers = start_consumers(&config, options, &facts, false).await?;
    let counters = Arc::new(Counters::default());
    let start = Instant::now();
    let stop = Arc::new(ConsumeStop {
        read: AtomicU64::new(0),
        target: AtomicU64::new(options.messages.unwrap_or(u64::MAX)),
        producers_done: AtomicBool::new(true),
        deadline: options.duration.map(|d| start + d),
    });
    let handles = spawn_consumers(consumers, &stop, start, false, &counters);
    let t = with_progress(&counters, start, join_all(handles), &mut progress).await?;
    Ok(report(
        BenchKind::Consume,
        options,
        &facts,
        &t,
        start.elapsed(),
    ))
}

/// The end-to-end benchmark (see the module docs): producers and consumers in this process,
/// latency = receive time − send time (intended send time at a fixed rate). Throughput and
/// bytes count what the consumers read; `errors` counts failed deliveries.
pub async fn bench_e2e(
    producer_config: ProducerConfig,
    consumer_config: ConsumerConfig,
    options: &BenchOptions,
    mut progress: impl FnMut(BenchProgress),
) -> Result<BenchReport> {
    options.validate(BenchKind::EndToEnd)?;
    producer_config.validate()?;
    consumer_config.validate()?;
    let facts = prepare_topic(
        AdminConfig {
            common: producer_config.common.clone(),
        },
        options,
    )
    .await?;
    let consumers = start_consumers(&consumer_config, options, &facts, true).await?;
    let producers = new_producers(&producer_config, options.producers).await?;
    let counters = Arc::new(Counters::default());
    // Producers only add to their own tallies; the progress line shows what was read.
    let produced = Arc::new(Counters::default());
    let start = Instant::now();
    let stop = Arc::new(ConsumeStop {
        read: AtomicU64::new(0),
        target: AtomicU64::new(u64::MAX),
        producers_done: AtomicBool::new(false),
        // The consumers get a grace period past the producers' deadline to drain.
        deadline: options
            .duration
            .map(|d| start + d + Duration::from_millis(BENCH_IDLE_MS)),
    });
    let readers = spawn_consumers(consumers, &stop, start, true, &counters);
    let work = async {
        let writers = spawn_producers(producers, options, start, true, &produced);
        let sent = join_all(writers).await;
        // Tell the consumers what to wait for (nothing more when the producers failed).
        let target = sent.as_ref().map_or(0, |t| t.messages);
        stop.target.store(target, Ordering::Release);
        stop.producers_done.store(true, Ordering::Release);
        let read = join_all(readers).await;
        (sent, read)
    };
    let (sent, read) = with_progress(&counters, start, work, &mut progress).await;
    let elapsed = start.elapsed();
    let sent = sent?;
    let mut read = read?;
    if sent.messages == 0
        && let Some(e) = sent.first_error
    {
        return Err(e);
    }
    read.errors = sent.errors;
    Ok(report(BenchKind::EndToEnd, options, &facts, &read, elapsed))
}

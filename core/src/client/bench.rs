//! The measurement loops of `sluiceway bench produce|consume`, over the public client API so
//! they measure what an application gets (and any binding can reuse them).
//!
//! - **produce**: sends `size`-byte values (no key, round-robin/sticky partitioning) with at
//!   most `in_flight` sends outstanding; latency = `send` called → delivery future resolved,
//!   in microseconds.
//! - **consume**: a standalone consumer assigned every partition of the topic (created when
//!   absent, like for produce) from the earliest offset; latency = local wall clock at `poll`
//!   return − the record's timestamp (create time, so meaningful only on the producing
//!   machine's clock; a backlog read after the fact measures its age), in milliseconds
//!   recorded as µs.
//!
//! Both are bounded: by `messages` and/or `duration`, and a consume run also stops after
//! [`BENCH_IDLE_MS`] without a record (the topic ran dry). Latencies go into an HdrHistogram
//! (3 significant digits, 1 µs .. 1 hour, larger values saturate). `progress` is called about
//! once a second with the running totals.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hdrhistogram::Histogram;

use super::{
    Admin, AdminConfig, Consumer, ConsumerConfig, NewTopic, OffsetReset, Producer, ProducerConfig,
    ProducerRecord, TopicPartition,
};
use crate::error::{Error, ErrorCode, Result};
use crate::limits::{BENCH_IN_FLIGHT_MAX, BENCH_MESSAGE_BYTES_MAX, BENCH_MESSAGES_MAX};

/// A consume run ends after this long without a record.
pub const BENCH_IDLE_MS: u64 = 5_000;
/// Highest latency the histogram tracks exactly (1 hour in µs); larger ones saturate.
const LATENCY_US_MAX: u64 = 3_600_000_000;
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// What to run. At least one of `messages` and `duration` bounds the run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub topic: String,
    /// Partitions of the topic when the benchmark creates it.
    pub partitions: u32,
    pub messages: Option<u64>,
    pub duration: Option<Duration>,
    /// Value size in bytes (produce).
    pub size: usize,
    /// Sends outstanding at once (produce).
    pub in_flight: usize,
}

impl BenchOptions {
    pub fn validate(&self) -> Result<()> {
        if self.messages.is_none() && self.duration.is_none() {
            return Err(Error::InvalidArgument(
                "give --messages, --duration-s or both".into(),
            ));
        }
        if self
            .messages
            .is_some_and(|n| n == 0 || n > BENCH_MESSAGES_MAX)
        {
            return Err(Error::InvalidArgument(format!(
                "--messages must be 1..={BENCH_MESSAGES_MAX}"
            )));
        }
        if self.size > BENCH_MESSAGE_BYTES_MAX {
            return Err(Error::InvalidArgument(format!(
                "--size must be at most {BENCH_MESSAGE_BYTES_MAX} bytes"
            )));
        }
        if self.in_flight == 0 || self.in_flight > BENCH_IN_FLIGHT_MAX {
            return Err(Error::InvalidArgument(format!(
                "the in-flight window must be 1..={BENCH_IN_FLIGHT_MAX}"
            )));
        }
        if self.partitions == 0 {
            return Err(Error::InvalidArgument(
                "--partitions must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Running totals passed to the progress callback.
#[derive(Clone, Copy, Debug)]
pub struct BenchProgress {
    pub elapsed: Duration,
    pub messages: u64,
    pub bytes: u64,
    /// Messages per second over the last interval.
    pub recent_rate: f64,
}

/// The final figures. Latencies in microseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchReport {
    pub mode: &'static str,
    pub messages: u64,
    pub bytes: u64,
    /// Failed deliveries (produce).
    pub errors: u64,
    pub elapsed: Duration,
    pub messages_per_sec: f64,
    pub mb_per_sec: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("static bounds are valid")
}

fn report(
    mode: &'static str,
    messages: u64,
    bytes: u64,
    errors: u64,
    elapsed: Duration,
    h: &Histogram<u64>,
) -> BenchReport {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let q = |x: f64| {
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(x)
        }
    };
    BenchReport {
        mode,
        messages,
        bytes,
        errors,
        elapsed,
        messages_per_sec: messages as f64 / secs,
        mb_per_sec: bytes as f64 / secs / 1_000_000.0,
        p50_us: q(0.5),
        p99_us: q(0.99),
        p999_us: q(0.999),
        max_us: if h.is_empty() { 0 } else { h.max() },
    }
}

/// Calls `progress` about once a second.
struct Ticker {
    start: Instant,
    last: Instant,
    last_messages: u64,
}

impl Ticker {
    fn new() -> Ticker {
        let now = Instant::now();
        Ticker {
            start: now,
            last: now,
            last_messages: 0,
        }
    }
    fn tick(&mut self, messages: u64, bytes: u64, progress: &mut impl FnMut(BenchProgress)) {
        let now = Instant::now();
        let dt = now - self.last;
        if dt < PROGRESS_INTERVAL {
            return;
        }
        progress(BenchProgress {
            elapsed: now - self.start,
            messages,
            bytes,
            recent_rate: (messages - self.last_messages) as f64 / dt.as_secs_f64(),
        });
        self.last = now;
        self.last_messages = messages;
    }
}

/// Creates `topic` with `partitions` partitions unless it exists.
pub async fn ensure_topic(admin: AdminConfig, topic: &str, partitions: u32) -> Result<()> {
    let admin = Admin::new(admin).await?;
    match admin.create_topic(NewTopic::new(topic, partitions)).await {
        Ok(_) => Ok(()),
        Err(e) if e.code() == ErrorCode::TopicAlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// The produce benchmark (see the module docs).
pub async fn bench_produce(
    config: ProducerConfig,
    options: &BenchOptions,
    mut progress: impl FnMut(BenchProgress),
) -> Result<BenchReport> {
    options.validate()?;
    ensure_topic(
        AdminConfig {
            common: config.common.clone(),
        },
        &options.topic,
        options.partitions,
    )
    .await?;
    let producer = Producer::new(config).await?;
    let value = Bytes::from(vec![b'x'; options.size]);
    let window = std::sync::Arc::new(tokio::sync::Semaphore::new(options.in_flight));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(bool, Duration)>();
    let mut h = histogram();
    let (mut sent, mut delivered, mut errors) = (0u64, 0u64, 0u64);
    let mut first_error: Option<Error> = None;
    let mut ticker = Ticker::new();
    let start = Instant::now();
    let deadline = options.duration.map(|d| start + d);
    let limit = options.messages.unwrap_or(u64::MAX);
    while sent < limit && deadline.is_none_or(|d| Instant::now() < d) {
        let permit = window
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let t0 = Instant::now();
        let record = ProducerRecord::new(options.topic.clone(), value.clone());
        match producer.send(record).await {
            Ok(fut) => {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let ok = fut.await.is_ok();
                    let _ = tx.send((ok, t0.elapsed()));
                    drop(permit);
                });
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e);
                break;
            }
        }
        sent += 1;
        drain(&mut rx, &mut h, &mut delivered, &mut errors);
        ticker.tick(delivered, delivered * options.size as u64, &mut progress);
    }
    drop(tx);
    producer.flush(None).await?;
    // Every spawned waiter holds its sender until it reported: wait for all of them.
    while let Some((ok, lat)) = rx.recv().await {
        if ok {
            delivered += 1;
            h.saturating_record((lat.as_micros() as u64).max(1));
        } else {
            errors += 1;
        }
    }
    let elapsed = start.elapsed();
    producer.close(None).await?;
    if delivered == 0
        && let Some(e) = first_error
    {
        return Err(e);
    }
    Ok(report(
        "produce",
        delivered,
        delivered * options.size as u64,
        errors,
        elapsed,
        &h,
    ))
}

/// Takes the delivery outcomes reported so far.
fn drain(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(bool, Duration)>,
    h: &mut Histogram<u64>,
    delivered: &mut u64,
    errors: &mut u64,
) {
    while let Ok((ok, lat)) = rx.try_recv() {
        if ok {
            *delivered += 1;
            h.saturating_record((lat.as_micros() as u64).max(1));
        } else {
            *errors += 1;
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The consume benchmark (see the module docs). `config` should not carry a `group.id`
/// subscription: the benchmark assigns every partition itself and reads from the earliest
/// offset.
pub async fn bench_consume(
    config: ConsumerConfig,
    options: &BenchOptions,
    mut progress: impl FnMut(BenchProgress),
) -> Result<BenchReport> {
    options.validate()?;
    let admin_config = AdminConfig {
        common: config.common.clone(),
    };
    // Created when absent, so a consume run may start before the producer's.
    ensure_topic(admin_config.clone(), &options.topic, options.partitions).await?;
    let admin = Admin::new(admin_config).await?;
    let topic = admin.describe_topic(&options.topic).await?;
    let consumer = Consumer::new(config.auto_offset_reset(OffsetReset::Earliest)).await?;
    consumer.assign(
        topic
            .topic
            .partitions
            .iter()
            .map(|p| TopicPartition::new(options.topic.clone(), p.partition))
            .collect(),
    )?;
    consumer.seek_to_beginning(None).await?;
    let mut h = histogram();
    let (mut messages, mut bytes) = (0u64, 0u64);
    let mut ticker = Ticker::new();
    let start = Instant::now();
    let deadline = options.duration.map(|d| start + d);
    let limit = options.messages.unwrap_or(u64::MAX);
    let idle = Duration::from_millis(BENCH_IDLE_MS);
    let mut last_record = Instant::now();
    while messages < limit && deadline.is_none_or(|d| Instant::now() < d) {
        let records = consumer.poll(Duration::from_millis(100)).await?;
        let now = now_ms();
        if records.is_empty() {
            if last_record.elapsed() >= idle {
                break;
            }
            continue;
        }
        last_record = Instant::now();
        for r in &records {
            if r.timestamp >= 0 {
                h.saturating_record(((now - r.timestamp).max(0) as u64 * 1000).max(1));
            }
            bytes += r.value.as_ref().map_or(0, |v| v.len() as u64)
                + r.key.as_ref().map_or(0, |k| k.len() as u64);
        }
        messages += records.len() as u64;
        ticker.tick(messages, bytes, &mut progress);
    }
    let elapsed = start.elapsed();
    consumer.close(None).await?;
    Ok(report("consume", messages, bytes, 0, elapsed, &h))
}

//! The producer's record accumulator and the delivery futures `send` hands back.
//!
//! Owns, per [`BatchKey`] — a partition and the [`SendSettings`] its records were sent with
//! (`acks`, codec) — a queue of batches (a [`SetBuilder`] each, in the producer's
//! `message.format.version`, compressed with the key's codec when sealed). A producer's own
//! settings give one key per partition; a send with other settings
//! (`Producer::send_batch_with`) gets queues of its own, since a batch is one codec and a
//! request one `acks`. No I/O and no clock of its own: the sender task passes `now`,
//! so the batching rules are tested without a broker.
//!
//! Rules:
//! - A record goes into the partition's last batch while that batch is still open (not yet
//!   built for sending) and has room (`batch.size`); otherwise a new batch is opened. A record
//!   larger than `batch.size` gets a batch of its own.
//! - A partition's front batch is *ready* when the producer is flushing or closing, when it is
//!   full (its bytes reached `batch.size`, or a later batch exists), or when it is `linger.ms`
//!   old — and it is not waiting out a retry backoff.
//! - **Ordering:** up to `max.in.flight.requests.per.connection` requests per batch queue are
//!   in flight, all to one leader. Each carries
//!   the queue's first batches not yet sent — the first, and the batches behind it that are
//!   ready too, up to the request's byte budget (`max.request.size`), as one message set — so a
//!   busy partition moves many batches per round trip. Each request is numbered per queue
//!   (`order_sequence`, never reused) and says which of the queue's requests were still in
//!   flight (`order_since`): the leader appends them in that order whatever order they arrive
//!   in, and refuses one sent behind a request that failed there (docs/FORMAT.md, "Pipelined
//!   produce requests"). Batches leave the queue only when acknowledged or failed for good; a
//!   request that comes back to be resent *holds* the queue — no new request — until every
//!   request sent after it is back, and then goes again first, in order. So a partition's
//!   records reach the log in `send` order even across retries (with acks ≠ 0, a retry after a
//!   lost answer may write a batch twice, after batches sent behind it, unless the producer is
//!   idempotent). Records of one partition sent with *different* settings are in different
//!   queues, so no order holds between them (as between two Kafka producers).
//! - **Idempotence** (`enable.idempotence`): every batch is magic 2 and is stamped, when it is
//!   built for its first send, with the producer id, the partition's epoch and the partition's
//!   next sequence number; retries resend the same bytes, so the leader recognises a batch it
//!   already has (an answer lost, a leader that changed) and answers with the first offsets —
//!   per batch: a retry may carry batches the log has followed by new ones, and the answer then
//!   gives each batch's first offset. The leader appends a request's batches back to back and
//!   remembers them as one run, so a retry of all of them is recognised (docs/FORMAT.md). The
//!   batches of a request are retried or failed together. A stamped batch that fails for good
//!   leaves a gap in the sequence: the partition's epoch is bumped and its sequence restarts
//!   at 0 (Kafka's KIP-360 bump for idempotent producers), so later batches are accepted. The
//!   batches numbered in the old epoch are then renumbered in the new one, in queue order —
//!   at once, or, when requests of the queue are in flight, once they are all back (the
//!   queue is held until then; those refused behind the failed one come back unappended). A
//!   batch an earlier attempt of which may be in the log (its answer was lost) is not
//!   renumbered but fails: under a new number it could be written twice.
//! - Every batch has a deadline (`delivery.timeout.ms` from its creation); one that passes it
//!   while not in flight fails with REQUEST_TIMED_OUT. So every future resolves.
//!
//! A batch's futures share one [`BatchShared`] (one allocation per batch, not per record): each
//! [`DeliveryFuture`] holds the `Arc` and its index in the batch. A [`BatchDelivery`] (what
//! `send_batch` returns) is those futures together: one handle, one result per record.
//! Waiting works in any async executor (a waker per record slot, a `Notify` per batch) and
//! from plain threads (a condition variable per batch), so no runtime is needed to wait.
//!
//! Every failed batch is counted in the producer's [`FailureTally`] (records and the first
//! error), which `flush` and `close` report and reset.

use std::collections::{HashMap, VecDeque};

use rustc_hash::FxHashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use tokio::sync::OwnedSemaphorePermit;

use super::cluster::clone_error;
use super::config::SendSettings;
use super::consumer::RecordHeader;
use super::runtime::current_pid;
use crate::error::{Error, ErrorCode, Result};
use crate::format::v2::Header;
use crate::format::{MAGIC_POS, MAGIC_V1, SetBuilder, message_size};
use crate::group::TopicPartition;
use crate::limits::LOG_OVERHEAD_BYTES;
use crate::types::{Offset, TimestampMs};

/// Where a delivered record landed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordMetadata {
    pub topic: Arc<str>,
    pub partition: u32,
    /// The record's offset; `None` with `acks=0` (the broker answers before appending).
    pub offset: Option<Offset>,
    /// The record's timestamp (ms since the epoch): the broker's append time on a
    /// `LogAppendTime` topic, otherwise the create time it was sent with (Kafka's rule).
    pub timestamp: i64,
}

/// What the broker answered for a delivered batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Delivered {
    /// The batch's base offset (`None` with acks=0).
    pub base_offset: Option<u64>,
    /// The broker's append time on a `LogAppendTime` topic (`None` otherwise).
    pub log_append_time: Option<i64>,
}

#[derive(Debug)]
enum Outcome {
    Delivered(Delivered),
    Failed(Error),
}

#[derive(Debug)]
struct SharedState {
    outcome: Option<Outcome>,
    /// One slot per record of the batch, so polling a future twice keeps one waker.
    wakers: Vec<Option<Waker>>,
}

/// Records that failed since the last `flush`/`close` report, and the first error among them.
#[derive(Debug, Default)]
pub(crate) struct FailureTally {
    state: Mutex<(u64, Option<Error>)>,
}

impl FailureTally {
    fn record(&self, records: u32, e: &Error) {
        let mut s = self.state.lock();
        s.0 += u64::from(records);
        if s.1.is_none() {
            s.1 = Some(clone_error(e));
        }
    }

    /// The failures since the last call, resetting the tally.
    pub(crate) fn take(&self) -> (u64, Option<Error>) {
        std::mem::take(&mut *self.state.lock())
    }
}

/// The completion shared by the records of one batch.
#[derive(Debug)]
pub(crate) struct BatchShared {
    topic: Arc<str>,
    partition: u32,
    state: Mutex<SharedState>,
    /// Woken on resolution, for async waits on the whole batch (`flush`, [`BatchDelivery`]).
    done: tokio::sync::Notify,
    /// Signalled on resolution, for blocking waits.
    done_cv: Condvar,
    tally: Arc<FailureTally>,
    /// The process the batch was made in: only that process's sender can resolve it, so a wait
    /// in a forked child fails at once instead of never returning.
    pid: u32,
}

impl BatchShared {
    fn new(topic: Arc<str>, partition: u32, tally: Arc<FailureTally>) -> Arc<BatchShared> {
        Arc::new(BatchShared {
            topic,
            partition,
            state: Mutex::new(SharedState {
                outcome: None,
                wakers: Vec::new(),
            }),
            done: tokio::sync::Notify::new(),
            done_cv: Condvar::new(),
            tally,
            pid: current_pid(),
        })
    }

    /// [`Error::Forked`] when called in a process other than the batch's (a forked child).
    fn check_process(&self) -> Result<()> {
        let here = current_pid();
        if here == self.pid {
            Ok(())
        } else {
            Err(Error::Forked {
                what: "producer",
                parent: self.pid,
                child: here,
            })
        }
    }

    /// Resolves every record of the batch (`records` of them; the first resolution wins).
    pub(crate) fn resolve(&self, outcome: Result<Delivered>, records: u32) {
        let wakers = {
            let mut s = self.state.lock();
            if s.outcome.is_some() {
                return;
            }
            s.outcome = Some(match outcome {
                Ok(d) => Outcome::Delivered(d),
                Err(e) => {
                    self.tally.record(records, &e);
                    Outcome::Failed(e)
                }
            });
            std::mem::take(&mut s.wakers)
        };
        for w in wakers.into_iter().flatten() {
            w.wake();
        }
        self.done.notify_waiters();
        self.done_cv.notify_all();
    }

    /// Blocks the calling thread until the batch is resolved or `deadline` passes; returns
    /// whether it is resolved.
    ///
    /// With a binding's interrupt check installed (`client::set_interrupt_check`) it wakes
    /// every `CLIENT_INTERRUPT_CHECK_INTERVAL_MS` to ask it, and fails with
    /// [`Error::Interrupted`] when the check says so.
    pub(crate) fn wait_blocking(&self, deadline: Option<Instant>) -> Result<bool> {
        let interrupt = super::runtime::interrupt_check();
        let mut s = self.state.lock();
        if s.outcome.is_none() {
            self.check_process()?;
        }
        while s.outcome.is_none() {
            let slice = interrupt.map(|_| Instant::now() + INTERRUPT_SLICE);
            let until = match (deadline, slice) {
                (Some(d), Some(i)) => Some(d.min(i)),
                (d, i) => d.or(i),
            };
            match until {
                Some(u) => {
                    let _ = self.done_cv.wait_until(&mut s, u);
                }
                None => self.done_cv.wait(&mut s),
            }
            if s.outcome.is_some() {
                break;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
            if let Some(check) = interrupt {
                // Ask without the batch's lock: the check may run the host's signal handlers.
                let interrupted = parking_lot::MutexGuard::unlocked(&mut s, check);
                if interrupted {
                    return Err(Error::Interrupted);
                }
            }
        }
        Ok(true)
    }

    /// One record's result, once the batch is resolved.
    fn result(&self, index: u32, timestamp: i64) -> Option<Result<RecordMetadata>> {
        match &self.state.lock().outcome {
            Some(Outcome::Delivered(d)) => Some(Ok(RecordMetadata {
                topic: self.topic.clone(),
                partition: self.partition,
                offset: d.base_offset.map(|b| Offset(b + u64::from(index))),
                timestamp: d.log_append_time.unwrap_or(timestamp),
            })),
            Some(Outcome::Failed(e)) => Some(Err(clone_error(e))),
            None => None,
        }
    }

    /// Waits until the batch is resolved.
    pub(crate) async fn wait(&self) {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_resolved() {
                return;
            }
            notified.await;
        }
    }

    pub(crate) fn is_resolved(&self) -> bool {
        self.state.lock().outcome.is_some()
    }
}

/// Resolves to where one sent record landed, or to why it was not delivered. Every future a
/// producer hands out resolves: at the latest when `delivery.timeout.ms` passes or when the
/// producer is closed.
#[derive(Debug)]
#[must_use = "a DeliveryFuture reports whether the record was delivered"]
pub struct DeliveryFuture {
    inner: FutureInner,
}

#[derive(Debug)]
enum FutureInner {
    Pending {
        shared: Arc<BatchShared>,
        index: u32,
        timestamp: i64,
    },
    Failed(Option<Error>),
}

impl DeliveryFuture {
    pub(crate) fn pending(shared: Arc<BatchShared>, index: u32, timestamp: i64) -> DeliveryFuture {
        DeliveryFuture {
            inner: FutureInner::Pending {
                shared,
                index,
                timestamp,
            },
        }
    }

    /// A future that has already failed (for `send_batch`, whose records fail one by one).
    pub(crate) fn failed(e: Error) -> DeliveryFuture {
        DeliveryFuture {
            inner: FutureInner::Failed(Some(e)),
        }
    }

    /// The result if the record is resolved, without waiting (can be asked again).
    pub fn try_result(&self) -> Option<Result<RecordMetadata>> {
        match &self.inner {
            FutureInner::Pending {
                shared,
                index,
                timestamp,
            } => shared.result(*index, *timestamp),
            FutureInner::Failed(Some(e)) => Some(Err(clone_error(e))),
            FutureInner::Failed(None) => Some(Err(polled_after_completion())),
        }
    }

    /// Whether the record is resolved (delivered or failed).
    pub fn is_done(&self) -> bool {
        match &self.inner {
            FutureInner::Pending { shared, .. } => shared.is_resolved(),
            FutureInner::Failed(_) => true,
        }
    }

    /// Blocks the calling thread (no runtime needed) until the record is resolved, at most
    /// `timeout` (`None`: until it resolves, which every record does by `delivery.timeout.ms`).
    /// `None` when the time ran out first.
    /// An installed interrupt check (`client::set_interrupt_check`) that fires ends the wait
    /// with `Some(Err(Error::Interrupted))`; in a forked child an unresolved record is
    /// `Some(Err(Error::Forked))` (code CLOSED) at once, since only the parent could resolve it.
    pub fn wait_blocking(&self, timeout: Option<Duration>) -> Option<Result<RecordMetadata>> {
        if let FutureInner::Pending { shared, .. } = &self.inner
            && let Err(e) = shared.wait_blocking(deadline_after(timeout))
        {
            return Some(Err(e));
        }
        self.try_result()
    }

    fn shared(&self) -> Option<&Arc<BatchShared>> {
        match &self.inner {
            FutureInner::Pending { shared, .. } => Some(shared),
            FutureInner::Failed(_) => None,
        }
    }
}

fn polled_after_completion() -> Error {
    Error::InvalidArgument("DeliveryFuture polled after completion".into())
}

/// How long a blocking wait sleeps between two asks of an installed interrupt check.
const INTERRUPT_SLICE: Duration =
    Duration::from_millis(crate::limits::CLIENT_INTERRUPT_CHECK_INTERVAL_MS);

fn deadline_after(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// The failed records of a resolved [`BatchDelivery`]: how many, and the first in record order.
#[derive(Debug, Default)]
pub struct Failures {
    pub count: usize,
    pub first: Option<Error>,
}

impl Failures {
    fn add(&mut self, records: usize, error: impl FnOnce() -> Error) {
        self.count += records;
        if self.first.is_none() {
            self.first = Some(error());
        }
    }
}

/// One handle for the records of one `send_batch` call: one result per record, in the order
/// they were given. Waiting costs one wake-up per underlying batch, not one per record.
#[derive(Debug)]
#[must_use = "a BatchDelivery reports whether each record was delivered"]
pub struct BatchDelivery {
    records: Vec<DeliveryFuture>,
}

impl BatchDelivery {
    pub(crate) fn new(records: Vec<DeliveryFuture>) -> BatchDelivery {
        BatchDelivery { records }
    }

    /// The number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The distinct batches behind the records (consecutive records share one).
    fn batches(&self) -> impl Iterator<Item = &Arc<BatchShared>> {
        let mut last: Option<&Arc<BatchShared>> = None;
        self.records
            .iter()
            .filter_map(DeliveryFuture::shared)
            .filter(move |s| {
                let new = !last.is_some_and(|l| Arc::ptr_eq(l, s));
                last = Some(s);
                new
            })
    }

    /// Whether every record is resolved (a non-blocking check).
    pub fn is_done(&self) -> bool {
        self.batches().all(|b| b.is_resolved())
    }

    /// Every record's result if all are resolved, without waiting (can be asked again).
    pub fn try_results(&self) -> Option<Vec<Result<RecordMetadata>>> {
        if !self.is_done() {
            return None;
        }
        self.records
            .iter()
            .map(DeliveryFuture::try_result)
            .collect()
    }

    /// Waits (in any executor) until every record is resolved; one result per record.
    pub async fn wait(&self) -> Vec<Result<RecordMetadata>> {
        self.resolved().await;
        self.try_results()
            .expect("every batch is resolved after waiting for each")
    }

    /// Blocks the calling thread (no runtime needed) until every record is resolved, at most
    /// `timeout`; `None` when the time ran out first.
    /// An installed interrupt check (`client::set_interrupt_check`) that fires ends the wait
    /// with `Some` of [`Error::Interrupted`] for every record; in a forked child, unresolved
    /// records make it `Some` of [`Error::Forked`] for every record at once.
    pub fn wait_blocking(&self, timeout: Option<Duration>) -> Option<Vec<Result<RecordMetadata>>> {
        match self.resolved_blocking(timeout)? {
            Ok(()) => self.try_results(),
            Err(e) => Some(self.records.iter().map(|_| Err(clone_error(&e))).collect()),
        }
    }

    /// How many records failed and the first failure in record order, once every record is
    /// resolved (`None` while some are pending), without building a result per record: for
    /// callers that only need "all delivered, or why not" (a binding's hot loop).
    pub fn try_failures(&self) -> Option<Failures> {
        let mut out = Failures::default();
        let mut i = 0;
        while i < self.records.len() {
            match &self.records[i].inner {
                FutureInner::Failed(e) => {
                    out.add(1, || {
                        e.as_ref().map_or_else(polled_after_completion, clone_error)
                    });
                    i += 1;
                }
                FutureInner::Pending { shared, .. } => {
                    let run = self.records[i..]
                        .iter()
                        .take_while(|r| r.shared().is_some_and(|s| Arc::ptr_eq(s, shared)))
                        .count();
                    match &shared.state.lock().outcome {
                        None => return None,
                        Some(Outcome::Delivered(_)) => {}
                        Some(Outcome::Failed(e)) => out.add(run, || clone_error(e)),
                    }
                    i += run;
                }
            }
        }
        Some(out)
    }

    /// [`BatchDelivery::try_failures`] after waiting (in any executor) for every record.
    pub async fn wait_failures(&self) -> Failures {
        self.resolved().await;
        self.try_failures()
            .expect("every batch is resolved after waiting for each")
    }

    /// [`BatchDelivery::try_failures`] after blocking the calling thread until every record is
    /// resolved, at most `timeout`: `None` when the time ran out first, `Some(Err(Interrupted))`
    /// when an installed interrupt check fired.
    pub fn wait_failures_blocking(&self, timeout: Option<Duration>) -> Option<Result<Failures>> {
        match self.resolved_blocking(timeout)? {
            Ok(()) => self.try_failures().map(Ok),
            Err(e) => Some(Err(e)),
        }
    }

    async fn resolved(&self) {
        for b in self.batches() {
            b.wait().await;
        }
    }

    /// Blocks until every batch is resolved: `None` when `timeout` ran out first, `Some(Err)`
    /// when the interrupt check fired.
    fn resolved_blocking(&self, timeout: Option<Duration>) -> Option<Result<()>> {
        let deadline = deadline_after(timeout);
        for b in self.batches() {
            match b.wait_blocking(deadline) {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
        Some(Ok(()))
    }

    /// The per-record futures (for callers that want to await records one by one).
    pub fn into_futures(self) -> Vec<DeliveryFuture> {
        self.records
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.inner {
            FutureInner::Failed(e) => {
                Poll::Ready(Err(e.take().unwrap_or_else(polled_after_completion)))
            }
            FutureInner::Pending {
                shared,
                index,
                timestamp,
            } => {
                if let Some(r) = shared.result(*index, *timestamp) {
                    return Poll::Ready(r);
                }
                let mut s = shared.state.lock();
                match &s.outcome {
                    // Resolved between the check above and this lock.
                    Some(_) => {
                        drop(s);
                        Poll::Ready(
                            shared
                                .result(*index, *timestamp)
                                .expect("resolved outcomes stay"),
                        )
                    }
                    None => {
                        if let Err(e) = shared.check_process() {
                            return Poll::Ready(Err(e));
                        }
                        let i = *index as usize;
                        if s.wakers.len() <= i {
                            s.wakers.resize(i + 1, None);
                        }
                        match &s.wakers[i] {
                            Some(w) if w.will_wake(cx.waker()) => {}
                            _ => s.wakers[i] = Some(cx.waker().clone()),
                        }
                        Poll::Pending
                    }
                }
            }
        }
    }
}

/// One batch of records for one partition.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) id: u64,
    builder: Option<SetBuilder>,
    /// The built (and compressed) set, kept for retries.
    set: Option<Bytes>,
    pub(crate) records: u32,
    /// Uncompressed bytes (what `batch.size` counts).
    pub(crate) bytes: usize,
    created: Instant,
    deadline: Instant,
    pub(crate) attempts: u32,
    retry_at: Option<Instant>,
    /// The (epoch, base sequence) an idempotent batch was stamped with when first built.
    stamp: Option<(i16, i32)>,
    /// Part of a request in flight.
    in_flight: bool,
    /// An attempt ended without telling whether the leader appended it (a lost answer, a
    /// timeout): after an idempotent epoch bump it cannot be sent again under a new number.
    maybe_in_log: bool,
    pub(crate) shared: Arc<BatchShared>,
    /// `buffer.memory` held by this batch's records, released when it completes.
    permit: Option<OwnedSemaphorePermit>,
}

#[derive(Debug, Default)]
struct PartitionQueue {
    batches: VecDeque<Batch>,
    /// How many batches are in flight. Unless `held`, they are the queue's front.
    in_flight: usize,
    /// The requests in flight, in the order they were sent.
    requests: VecDeque<InFlight>,
    /// A request came back to be sent again while later ones are still in flight: no new
    /// request until those are back too, so that the resend goes first.
    held: bool,
    /// The leader the requests in flight went to: a new one goes there too, or waits.
    leader: String,
    /// An idempotent producer's epoch was bumped while requests of this queue were in flight:
    /// once they are all back (`held` until then), the batches numbered in the old epoch are
    /// renumbered before anything is sent ([`renumber`]).
    renumber: bool,
}

/// A request of a batch queue in flight.
#[derive(Debug)]
struct InFlight {
    /// Its first batch's id; its batches follow that one in the queue.
    first_id: u64,
    batches: usize,
    order_sequence: u64,
}

/// What a batch queue is for: a partition, and the settings its records were sent with.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct BatchKey {
    pub(crate) tp: TopicPartition,
    pub(crate) settings: SendSettings,
}

impl BatchKey {
    /// A total order (partition first) for a stable sending order.
    fn order(&self) -> (&TopicPartition, i32, u8) {
        (
            &self.tp,
            self.settings.acks.as_i32(),
            self.settings.compression.code(),
        )
    }
}

/// The front batches of one batch queue taken for sending, as one message set.
#[derive(Debug)]
pub(crate) struct Drained {
    pub(crate) key: BatchKey,
    /// The id of the first batch (checked on completion).
    pub(crate) batch_id: u64,
    /// How many batches, from the front, the set holds (the accumulator keeps the count).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) batches: usize,
    /// The batches' sets, in order: one message set when concatenated.
    pub(crate) sets: Vec<Bytes>,
    /// Their total length.
    pub(crate) bytes: usize,
    /// `ProducePartition.order_sequence` and `order_since`: the request's number among the
    /// queue's requests, and the lowest number still in flight (its own when none is).
    pub(crate) order_sequence: u64,
    pub(crate) order_since: u64,
}

impl Drained {
    /// The sets as one (tests read them so).
    #[cfg(test)]
    pub(crate) fn set(&self) -> Bytes {
        Bytes::from(self.sets.concat())
    }
}

/// Per-partition batching (see the module docs).
#[derive(Debug)]
pub(crate) struct Accumulator {
    /// FxHash: looked up for every record (see `Cargo.toml` on `rustc-hash`).
    queues: FxHashMap<BatchKey, PartitionQueue>,
    topics: FxHashMap<String, Arc<str>>,
    batch_size: usize,
    linger: Duration,
    /// `message.format.version`: the magic batches are written in.
    magic: u8,
    delivery_timeout: Duration,
    next_id: u64,
    tally: Arc<FailureTally>,
    /// `enable.idempotence`: the producer id and each partition's (epoch, next sequence).
    idempotence: Option<Idempotence>,
    /// The key [`Accumulator::with_key`] looks queues up with, kept so that its topic's
    /// `String` is rewritten in place rather than allocated per record.
    scratch_key: Option<BatchKey>,
    /// Most requests in flight per batch queue (`max.in.flight.requests.per.connection`).
    requests_max: usize,
    /// Each queue's next `order_sequence`, kept when an empty queue is dropped: a leader
    /// orders a producer's requests to a partition by it, so it never goes back.
    order_sequences: FxHashMap<BatchKey, u64>,
}

/// The idempotent producer's numbering (see the module docs).
#[derive(Debug)]
struct Idempotence {
    producer_id: i64,
    partitions: HashMap<TopicPartition, (i16, i32)>,
}

impl Idempotence {
    /// The stamp for a batch of `records` of `tp`: its epoch and base sequence; the partition's
    /// next sequence moves past it (wrapping as Kafka's sequences do).
    fn stamp(&mut self, tp: &TopicPartition, records: u32) -> (i16, i32) {
        let (epoch, next) = self.partitions.entry(tp.clone()).or_insert((0, 0));
        let stamp = (*epoch, *next);
        *next = crate::format::v2::next_sequence(*next, records as i32);
        stamp
    }

    /// A batch stamped `stamp` failed for good: unless a bump already followed it, the
    /// partition moves to the next epoch and its sequence restarts at 0.
    fn failed(&mut self, tp: &TopicPartition, stamp: (i16, i32)) {
        if let Some((epoch, next)) = self.partitions.get_mut(tp)
            && *epoch == stamp.0
        {
            // The epoch wraps to 0 after i16::MAX (32,767 failures of one partition): the
            // broker then sees an older epoch and fences it; a new producer starts over.
            *epoch = epoch.checked_add(1).unwrap_or(0);
            *next = 0;
        }
    }
}

/// Gives the queue's batches numbered in an epoch older than the partition's the new epoch's
/// next sequences, in queue order (their bytes are rewritten). One whose earlier attempt may
/// have reached the log fails instead: under a new number it could be written twice. None is
/// in flight.
fn renumber(i: &mut Idempotence, tp: &TopicPartition, q: &mut PartitionQueue) {
    q.renumber = false;
    let current = i.partitions.get(tp).map(|p| p.0);
    let producer_id = i.producer_id;
    let mut k = 0;
    while k < q.batches.len() {
        let b = &mut q.batches[k];
        let stale = b.stamp.is_some_and(|(epoch, _)| Some(epoch) != current);
        if !stale {
            k += 1;
            continue;
        }
        if b.maybe_in_log {
            let b = q.batches.remove(k).expect("index checked");
            b.shared.resolve(
                Err(Error::Remote {
                    code: ErrorCode::OutOfOrderSequenceNumber,
                    message: format!(
                        "not sent again: an earlier batch of {}-{} failed for good, and this \
                         one, sent before that, may already be in the log (its answer was \
                         lost); under the producer's new epoch it could be written twice",
                        tp.topic, tp.partition
                    ),
                }),
                b.records,
            );
            continue;
        }
        if let Some(set) = &b.set {
            let (epoch, sequence) = i.stamp(tp, b.records);
            let mut bytes = set.to_vec();
            crate::format::v2::restamp(&mut bytes, producer_id, epoch, sequence);
            b.set = Some(Bytes::from(bytes));
            b.stamp = Some((epoch, sequence));
        }
        k += 1;
    }
}

/// Bytes a record adds to an uncompressed set (an upper bound with headers: each counts its
/// key and value plus the longest varint lengths).
pub(crate) fn record_size(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[RecordHeader],
) -> usize {
    let headers: usize = headers
        .iter()
        .map(|h| h.key.len() + h.value.as_ref().map_or(0, Bytes::len) + HEADER_VARINTS_BYTES_MAX)
        .sum();
    LOG_OVERHEAD_BYTES as usize + message_size(MAGIC_V1, key, value) + headers
}

/// A header's two length varints at their longest (zigzag varints of 32-bit lengths).
const HEADER_VARINTS_BYTES_MAX: usize = 10;

impl Accumulator {
    pub(crate) fn new(
        batch_size: u32,
        linger: Duration,
        delivery_timeout: Duration,
        tally: Arc<FailureTally>,
    ) -> Accumulator {
        Accumulator {
            queues: FxHashMap::default(),
            topics: FxHashMap::default(),
            batch_size: batch_size as usize,
            linger,
            magic: MAGIC_V1,
            delivery_timeout,
            next_id: 0,
            tally,
            idempotence: None,
            scratch_key: None,
            requests_max: 1,
            order_sequences: FxHashMap::default(),
        }
    }

    /// Lets up to `n` requests per batch queue be in flight (see the module docs); without
    /// it, one.
    pub(crate) fn with_requests_in_flight(mut self, n: u32) -> Accumulator {
        self.requests_max = n.max(1) as usize;
        self
    }

    /// Makes this an idempotent producer's accumulator (`producer_id` from InitProducerId):
    /// magic 2 batches, stamped, one per partition per request.
    pub(crate) fn with_idempotence(mut self, producer_id: i64) -> Accumulator {
        self.magic = crate::format::MAGIC_V2;
        self.idempotence = Some(Idempotence {
            producer_id,
            partitions: HashMap::new(),
        });
        self
    }

    /// A stamped batch failed for good (see [`Idempotence::failed`]): the partition's batches
    /// numbered in the old epoch are renumbered ([`renumber`]) — now, or once the queue's
    /// requests in flight are all back (the queue is held until then, so they are renumbered
    /// in order, ahead of the batches behind them).
    fn failed_for_good(&mut self, tp: &TopicPartition, stamp: Option<(i16, i32)>) {
        let (Some(i), Some(stamp)) = (&mut self.idempotence, stamp) else {
            return;
        };
        let before = i.partitions.get(tp).map(|p| p.0);
        i.failed(tp, stamp);
        if i.partitions.get(tp).map(|p| p.0) == before {
            return;
        }
        for q in self
            .queues
            .iter_mut()
            .filter(|(k, _)| k.tp == *tp)
            .map(|(_, q)| q)
        {
            if q.requests.is_empty() {
                renumber(i, tp, q);
            } else {
                q.held = true;
                q.renumber = true;
            }
        }
    }

    /// Writes batches in `magic` (1 or 2) instead of magic 1.
    pub(crate) fn with_magic(mut self, magic: u8) -> Accumulator {
        self.magic = magic;
        self
    }

    /// Calls `f` with the key of the queue of (`topic`, `partition`, `settings`) without
    /// building a [`BatchKey`] (and its topic's `String`) per record: the key is kept and its
    /// topic rewritten in place.
    pub(crate) fn with_key<R>(
        &mut self,
        topic: &str,
        partition: u32,
        settings: SendSettings,
        f: impl FnOnce(&mut Accumulator, &BatchKey) -> R,
    ) -> R {
        let mut k = self.scratch_key.take().unwrap_or_else(|| BatchKey {
            tp: TopicPartition::new(topic, partition),
            settings,
        });
        if k.tp.topic != topic {
            k.tp.topic.clear();
            k.tp.topic.push_str(topic);
        }
        k.tp.partition = partition;
        k.settings = settings;
        let out = f(self, &k);
        self.scratch_key = Some(k);
        out
    }

    /// Adds one record; returns its future, and whether the sender must be woken: the record
    /// opened a new batch (whose linger deadline the sender must learn) or filled one. Other
    /// records need no wake-up, so a steady stream costs about two per batch, not one per
    /// record. `permit` is the record's share of `buffer.memory`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn append(
        &mut self,
        key_of: &BatchKey,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[RecordHeader],
        now: Instant,
        permit: Option<OwnedSemaphorePermit>,
    ) -> (DeliveryFuture, bool) {
        let size = record_size(key, value, headers);
        let tp = &key_of.tp;
        let queue = match self.queues.get_mut(key_of) {
            Some(q) => q,
            None => self.queues.entry(key_of.clone()).or_default(),
        };
        let has_room = |b: &Batch| {
            b.builder.is_some() && (b.records == 0 || b.bytes + size <= self.batch_size)
        };
        let opened = !queue.batches.back().is_some_and(has_room);
        if opened {
            let topic = match self.topics.get(&tp.topic) {
                Some(t) => t.clone(),
                None => {
                    let t: Arc<str> = Arc::from(tp.topic.as_str());
                    self.topics.insert(tp.topic.clone(), t.clone());
                    t
                }
            };
            self.next_id += 1;
            queue.batches.push_back(Batch {
                id: self.next_id,
                builder: Some(SetBuilder::with_capacity(
                    self.magic,
                    key_of.settings.compression,
                    self.batch_size.max(size),
                )),
                set: None,
                records: 0,
                bytes: 0,
                created: now,
                deadline: now + self.delivery_timeout,
                attempts: 0,
                retry_at: None,
                stamp: None,
                in_flight: false,
                maybe_in_log: false,
                shared: BatchShared::new(topic, tp.partition, self.tally.clone()),
                permit: None,
            });
        }
        let batch = queue.batches.back_mut().expect("a batch was just ensured");
        let builder = batch.builder.as_mut().expect("an open batch has a builder");
        builder.push(
            TimestampMs(timestamp),
            key,
            value,
            headers.iter().map(|h| Header {
                key: &h.key,
                value: h.value.as_deref(),
            }),
        );
        let index = batch.records;
        batch.records += 1;
        batch.bytes += size;
        match (&mut batch.permit, permit) {
            (Some(held), Some(p)) => held.merge(p),
            (held @ None, p) => *held = p,
            (Some(_), None) => {}
        }
        let full = batch.bytes >= self.batch_size;
        (
            DeliveryFuture::pending(batch.shared.clone(), index, timestamp),
            opened || full,
        )
    }

    fn is_ready(
        &self,
        q: &PartitionQueue,
        now: Instant,
        flushing: bool,
    ) -> (bool, Option<Instant>) {
        if q.held || q.requests.len() >= self.requests_max {
            return (false, None);
        }
        // Not held: the batches in flight are the front ones.
        let Some(front) = q.batches.get(q.in_flight) else {
            return (false, None);
        };
        if let Some(t) = front.retry_at
            && t > now
        {
            return (false, Some(t));
        }
        let full = q.batches.len() > q.in_flight + 1
            || front.bytes >= self.batch_size
            || front.builder.is_none();
        let linger_end = front.created + self.linger;
        if flushing || full || now >= linger_end {
            (true, None)
        } else {
            (false, Some(linger_end))
        }
    }

    /// Partitions whose front batch is ready to send, and the earliest time another may become
    /// ready (linger end, retry backoff or a delivery deadline).
    pub(crate) fn ready(&self, now: Instant, flushing: bool) -> (Vec<BatchKey>, Option<Instant>) {
        let mut ready = Vec::new();
        let mut next: Option<Instant> = None;
        for (key, q) in &self.queues {
            let (r, wake) = self.is_ready(q, now, flushing);
            if r {
                ready.push(key.clone());
            }
            for w in wake
                .into_iter()
                .chain(q.batches.iter().find(|b| !b.in_flight).map(|b| b.deadline))
            {
                next = Some(next.map_or(w, |n| n.min(w)));
            }
        }
        ready.sort_by(|a, b| a.order().cmp(&b.order()));
        (ready, next)
    }

    /// Takes the partition's first batches not in flight for sending to `leader` as one
    /// message set, a request in flight: the first one (the caller checked it is ready), then
    /// each batch behind it that is ready as well (closed by a later batch, full, lingered long
    /// enough, or `flushing`) while the set stays within `max_bytes` (a first batch larger
    /// than that goes alone). Each batch is built (compressed) on first use and kept for
    /// retries. `None` when the queue may not send now: as many requests in flight as allowed,
    /// a resend waiting for those in flight, or requests in flight to another leader.
    pub(crate) fn drain(
        &mut self,
        key: &BatchKey,
        max_bytes: usize,
        now: Instant,
        flushing: bool,
        leader: &str,
    ) -> Result<Option<Drained>> {
        let Some(q) = self.queues.get_mut(key) else {
            return Ok(None);
        };
        if q.held
            || q.requests.len() >= self.requests_max
            || (!q.requests.is_empty() && q.leader != leader)
        {
            return Ok(None);
        }
        if q.renumber
            && let Some(i) = &mut self.idempotence
        {
            renumber(i, &key.tp, q);
        }
        let start = q.in_flight;
        let mut taken = start;
        let mut bytes = 0usize;
        while taken < q.batches.len() {
            let last = taken + 1 == q.batches.len();
            let b = &mut q.batches[taken];
            if taken > start {
                let ready = (!last
                    || flushing
                    || b.bytes >= self.batch_size
                    || now >= b.created + self.linger)
                    && b.retry_at.is_none_or(|t| t <= now);
                if !ready || bytes >= max_bytes {
                    break;
                }
            }
            if b.set.is_none() {
                let mut builder = b.builder.take().expect("an unbuilt batch has a builder");
                if let Some(i) = &mut self.idempotence {
                    let (epoch, sequence) = i.stamp(&key.tp, b.records);
                    builder.producer_state(i.producer_id, epoch, sequence);
                    b.stamp = Some((epoch, sequence));
                }
                match builder.finish() {
                    Ok(set) => b.set = Some(Bytes::from(set)),
                    Err(e) => {
                        // Its records fail; the batches behind it keep their order.
                        let b = q.batches.remove(taken).expect("index checked");
                        b.shared.resolve(Err(e), b.records);
                        continue;
                    }
                }
            }
            // One magic per request: the broker refuses a set that mixes them, and a batch
            // whose records carry headers is magic 2 while its neighbours may be magic 1.
            let magic_of = |b: &Batch| b.set.as_ref().and_then(|s| s.get(MAGIC_POS).copied());
            if taken > start && magic_of(&q.batches[taken]) != magic_of(&q.batches[start]) {
                break;
            }
            let b = &mut q.batches[taken];
            let size = b.set.as_ref().map_or(0, Bytes::len);
            if taken > start && bytes + size > max_bytes {
                break; // Built now, sent next time.
            }
            b.attempts += 1;
            b.retry_at = None;
            b.in_flight = true;
            bytes += size;
            taken += 1;
        }
        let n = taken - start;
        if n == 0 {
            if q.batches.is_empty() {
                self.queues.remove(key);
            }
            return Ok(None);
        }
        let first_id = q.batches[start].id;
        let order_sequence = match self.order_sequences.get_mut(key) {
            Some(next) => std::mem::replace(next, *next + 1),
            None => {
                self.order_sequences.insert(key.clone(), 1);
                0
            }
        };
        let order_since = q
            .requests
            .front()
            .map_or(order_sequence, |r| r.order_sequence);
        q.requests.push_back(InFlight {
            first_id,
            batches: n,
            order_sequence,
        });
        q.in_flight += n;
        if q.leader != leader {
            q.leader.clear();
            q.leader.push_str(leader);
        }
        // Not concatenated: the request carries them as consecutive chunks of one set field
        // (`produce_call`), so a byte is not copied again on its way out.
        let sets = q
            .batches
            .range(start..taken)
            .map(|b| b.set.clone().expect("built above"))
            .collect();
        Ok(Some(Drained {
            key: key.clone(),
            batch_id: first_id,
            batches: n,
            sets,
            bytes,
            order_sequence,
            order_since,
        }))
    }

    /// The size in bytes of the partition's front set when it is built (for request packing).
    pub(crate) fn front_bytes(&self, key: &BatchKey) -> usize {
        self.queues
            .get(key)
            .and_then(|q| q.batches.front())
            .map_or(0, |b| b.set.as_ref().map_or(b.bytes, Bytes::len))
    }

    /// Ends the request in flight whose first batch is `batch_id`: the queue, and where its
    /// batches are in it (first index, count), no longer in flight. `None` for a request not
    /// in flight (a stale completion).
    fn request_back(
        &mut self,
        key: &BatchKey,
        batch_id: u64,
    ) -> Option<(&mut PartitionQueue, usize, usize)> {
        let q = self.queues.get_mut(key)?;
        let r = q.requests.iter().position(|r| r.first_id == batch_id)?;
        let n = q.requests.remove(r).expect("position found").batches;
        // Batch ids grow along the queue.
        let start = q.batches.partition_point(|b| b.id < batch_id);
        debug_assert!(q.batches.get(start).is_some_and(|b| b.id == batch_id));
        for b in q.batches.range_mut(start..start + n) {
            b.in_flight = false;
        }
        q.in_flight -= n;
        if q.requests.is_empty() {
            q.held = false;
        }
        Some((q, start, n))
    }

    /// The in-flight request of a partition (whose first batch is `batch_id`) finished: its
    /// batches are delivered — consecutive offsets from the set's base offset — or failed for
    /// good.
    pub(crate) fn complete(&mut self, key: &BatchKey, batch_id: u64, outcome: Result<Delivered>) {
        self.complete_at(key, batch_id, outcome, &[]);
    }

    /// [`complete`](Self::complete) with each batch's first offset when the broker gave them
    /// (`bases`, one per batch: an idempotent retry answered partly with earlier offsets);
    /// otherwise (`bases` empty or of another length) the batches follow each other from the
    /// base offset.
    pub(crate) fn complete_at(
        &mut self,
        key: &BatchKey,
        batch_id: u64,
        outcome: Result<Delivered>,
        bases: &[u64],
    ) {
        let Some((q, start, n)) = self.request_back(key, batch_id) else {
            return;
        };
        let bases = if bases.len() == n { bases } else { &[] };
        let mut next_base = outcome.as_ref().ok().and_then(|d| d.base_offset);
        let failed: Vec<_> = match &outcome {
            Err(_) => q.batches.range(start..start + n).map(|b| b.stamp).collect(),
            Ok(_) => Vec::new(),
        };
        for (i, b) in q.batches.drain(start..start + n).enumerate() {
            let result = match &outcome {
                Ok(d) => {
                    if let (Some(&at), Some(_)) = (bases.get(i), next_base) {
                        next_base = Some(at);
                    }
                    let base = next_base;
                    next_base = next_base.map(|o| o + u64::from(b.records));
                    Ok(Delivered {
                        base_offset: base,
                        log_append_time: d.log_append_time,
                    })
                }
                Err(e) => Err(clone_error(e)),
            };
            b.shared.resolve(result, b.records);
        }
        if q.batches.is_empty() {
            self.queues.remove(key);
        }
        for stamp in failed {
            self.failed_for_good(&key.tp, stamp);
        }
    }

    /// The in-flight request of a partition failed with a retriable error: its batches go back
    /// with a backoff, except those out of retries or past their delivery deadline, which fail.
    /// `maybe_appended`: the failure does not say the leader left them out (a lost answer, a
    /// timeout), so after an epoch bump they are not renumbered. Returns how many will retry.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn retry_or_fail(
        &mut self,
        key: &BatchKey,
        batch_id: u64,
        err: Error,
        now: Instant,
        backoff: Duration,
        retries: u32,
        maybe_appended: bool,
    ) -> usize {
        let idempotent = self.idempotence.is_some();
        let Some((q, start, n)) = self.request_back(key, batch_id) else {
            return 0;
        };
        let (mut i, mut kept) = (start, 0);
        let mut failed = Vec::new();
        // An idempotent producer's batches of one request stay together: a later one retried
        // after an earlier one failed for good would carry a sequence the gap makes out of order.
        let front = q.batches.get(start);
        let together = idempotent
            && front.is_some_and(|b| b.attempts <= retries && now + backoff < b.deadline);
        for _ in 0..n {
            let b = &mut q.batches[i];
            let keep = if idempotent {
                together
            } else {
                b.attempts <= retries && now + backoff < b.deadline
            };
            if keep {
                b.retry_at = Some(now + backoff);
                b.maybe_in_log |= maybe_appended;
                i += 1;
                kept += 1;
            } else {
                let b = q
                    .batches
                    .remove(i)
                    .expect("index within the in-flight batches");
                b.shared.resolve(Err(clone_error(&err)), b.records);
                failed.push(b.stamp);
            }
        }
        // Requests still in flight were sent after this one: it goes again before anything
        // else once they are back.
        if kept > 0 && !q.requests.is_empty() {
            q.held = true;
        }
        if q.batches.is_empty() {
            self.queues.remove(key);
        }
        for stamp in failed {
            self.failed_for_good(&key.tp, stamp);
        }
        kept
    }

    /// Fails every batch that is not in flight and is past its delivery deadline.
    pub(crate) fn expire(&mut self, now: Instant) -> usize {
        let mut n = 0;
        let mut failed = Vec::new();
        self.queues.retain(|BatchKey { tp, .. }, q| {
            let mut i = 0;
            while i < q.batches.len() {
                if !q.batches[i].in_flight && q.batches[i].deadline <= now {
                    let b = q.batches.remove(i).expect("index checked");
                    b.shared.resolve(
                        Err(Error::TimedOut(format!(
                            "{} record(s) for {}-{} not delivered within delivery.timeout.ms",
                            b.records, tp.topic, tp.partition
                        ))),
                        b.records,
                    );
                    failed.push((tp.clone(), b.stamp));
                    n += 1;
                } else {
                    i += 1;
                }
            }
            !q.batches.is_empty()
        });
        for (tp, stamp) in failed {
            self.failed_for_good(&tp, stamp);
        }
        n
    }

    /// Fails every batch, in flight or not (close's last resort).
    pub(crate) fn fail_all(&mut self, mut err: impl FnMut() -> Error) {
        for (_, q) in self.queues.drain() {
            for b in q.batches {
                b.shared.resolve(Err(err()), b.records);
            }
        }
    }

    /// The completions of every queued batch and their record counts (what `flush` waits
    /// for).
    pub(crate) fn pending(&self) -> Vec<(Arc<BatchShared>, u32)> {
        self.queues
            .values()
            .flat_map(|q| q.batches.iter().map(|b| (b.shared.clone(), b.records)))
            .collect()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// Queued batches of one partition (tests).
    #[cfg(test)]
    fn batch_count(&self, key: &BatchKey) -> usize {
        self.queues.get(key).map_or(0, |q| q.batches.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;
    use crate::format::{Entries, for_each_record};

    use crate::client::config::Acks;
    use crate::format::Compression;

    /// Partition `p` of topic `t`, uncompressed, acks=all.
    fn tp(p: u32) -> BatchKey {
        key(p, Compression::None)
    }

    /// Partition `p` of topic `t`, gzip, acks=all.
    fn gz(p: u32) -> BatchKey {
        key(p, Compression::Gzip)
    }

    fn key(p: u32, compression: Compression) -> BatchKey {
        BatchKey {
            tp: TopicPartition::new("t", p),
            settings: SendSettings {
                acks: Acks::All,
                compression,
            },
        }
    }

    fn poll_now(f: &mut DeliveryFuture) -> Poll<Result<RecordMetadata>> {
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        Pin::new(f).poll(&mut cx)
    }

    #[test]
    fn records_fill_a_batch_up_to_batch_size_then_open_a_new_one() {
        let now = Instant::now();
        let per = record_size(None, Some(&[0u8; 100]), &[]);
        let mut acc = Accumulator::new(
            (per * 3) as u32,
            Duration::from_millis(10),
            Duration::from_secs(60),
            Arc::default(),
        );
        for _ in 0..7 {
            drop(acc.append(&tp(0), 1, None, Some(&[0u8; 100]), &[], now, None));
        }
        assert_eq!(acc.batch_count(&tp(0)), 3, "3 + 3 + 1");
        // The first batch is full (a later one exists): ready at once, before linger.
        let (ready, _) = acc.ready(now, false);
        assert_eq!(ready, [tp(0)]);
    }

    #[test]
    fn a_lone_small_batch_waits_for_linger_unless_flushing() {
        let now = Instant::now();
        let mut acc = Accumulator::new(
            16 << 10,
            Duration::from_millis(10),
            Duration::from_secs(60),
            Arc::default(),
        );
        drop(
            acc.append(&tp(1), 1, Some(b"k"), Some(b"v"), &[], now, None)
                .0,
        );
        let (ready, next) = acc.ready(now, false);
        assert!(ready.is_empty());
        assert_eq!(next, Some(now + Duration::from_millis(10)));
        assert_eq!(acc.ready(now, true).0, [tp(1)]);
        assert_eq!(acc.ready(now + Duration::from_millis(10), false).0, [tp(1)]);
    }

    #[test]
    fn an_oversized_record_gets_its_own_batch() {
        let now = Instant::now();
        let mut acc = Accumulator::new(
            1000,
            Duration::ZERO,
            Duration::from_secs(60),
            Arc::default(),
        );
        drop(
            acc.append(&tp(0), 1, None, Some(b"small"), &[], now, None)
                .0,
        );
        drop(acc.append(&tp(0), 1, None, Some(&[7u8; 5000]), &[], now, None));
        drop(
            acc.append(&tp(0), 1, None, Some(b"small"), &[], now, None)
                .0,
        );
        assert_eq!(acc.batch_count(&tp(0)), 3);
    }

    #[test]
    fn one_batch_in_flight_per_partition_and_offsets_per_record() {
        let now = Instant::now();
        let mut acc =
            Accumulator::new(100, Duration::ZERO, Duration::from_secs(60), Arc::default());
        let mut futs: Vec<_> = (0..4)
            .map(|i| {
                acc.append(&gz(0), 10 + i, None, Some(&[i as u8; 60]), &[], now, None)
                    .0
            })
            .collect();
        let d = acc.drain(&gz(0), 1, now, false, "b").unwrap().unwrap();
        // The set is a gzip wrapper holding the batch's records.
        let mut n = 0;
        for_each_record(&d.set(), &mut Vec::new(), |_| n += 1).unwrap();
        assert_eq!(n, 1);
        assert!(
            acc.drain(&gz(0), 1, now, false, "b").unwrap().is_none(),
            "front already in flight"
        );
        assert!(acc.ready(now, true).0.is_empty());
        acc.complete(&gz(0), d.batch_id, delivered_at(40));
        match poll_now(&mut futs[0]) {
            Poll::Ready(Ok(m)) => {
                assert_eq!(m.offset, Some(Offset(40)));
                assert_eq!(m.timestamp, 10);
                assert_eq!(&*m.topic, "t");
            }
            other => panic!("{other:?}"),
        }
        assert!(poll_now(&mut futs[1]).is_pending());
        assert_eq!(acc.ready(now, false).0, [gz(0)]);
    }

    #[test]
    fn retriable_failures_back_off_then_give_up_at_the_deadline() {
        let now = Instant::now();
        let mut acc = Accumulator::new(
            1000,
            Duration::ZERO,
            Duration::from_millis(500),
            Arc::default(),
        );
        let mut f = acc.append(&tp(0), 1, None, Some(b"v"), &[], now, None).0;
        let d = acc.drain(&tp(0), 1, now, false, "b").unwrap().unwrap();
        let err = || Error::Remote {
            code: ErrorCode::NotLeader,
            message: "moved".into(),
        };
        assert_eq!(
            1,
            acc.retry_or_fail(
                &tp(0),
                d.batch_id,
                err(),
                now,
                Duration::from_millis(100),
                10,
                true
            )
        );
        let (ready, next) = acc.ready(now, false);
        assert!(ready.is_empty());
        assert_eq!(next, Some(now + Duration::from_millis(100)));
        let later = now + Duration::from_millis(450);
        let d = acc.drain(&tp(0), 1, later, false, "b").unwrap().unwrap();
        assert_eq!(
            0,
            acc.retry_or_fail(
                &tp(0),
                d.batch_id,
                err(),
                later,
                Duration::from_millis(100),
                10,
                true
            )
        );
        match poll_now(&mut f) {
            Poll::Ready(Err(e)) => assert_eq!(e.code(), ErrorCode::NotLeader),
            other => panic!("{other:?}"),
        }
        assert!(acc.is_empty());
    }

    /// An idempotent producer's accumulator whose batches hold three one-byte records.
    fn idempotent_accumulator(producer_id: i64) -> Accumulator {
        let per = record_size(None, Some(b"v"), &[]);
        Accumulator::new(
            (per * 3) as u32,
            Duration::ZERO,
            Duration::from_secs(60),
            Arc::default(),
        )
        .with_idempotence(producer_id)
    }

    /// The producer fields of a drained idempotent set (one batch).
    fn stamp_of(d: &Drained) -> (i64, i16, i32, u32) {
        let h = crate::format::v2::BatchHeader::parse(&d.set()).unwrap();
        assert_eq!(
            h.batch_length as usize + 12,
            d.set().len(),
            "one batch per set"
        );
        (
            h.producer_id,
            h.producer_epoch,
            h.base_sequence,
            h.record_count,
        )
    }

    #[test]
    fn idempotent_batches_are_stamped_once_and_a_lost_one_bumps_the_epoch() {
        let now = Instant::now();
        let mut acc = idempotent_accumulator(42);
        for _ in 0..9 {
            let _ = acc.append(&tp(0), 1, None, Some(b"v"), &[], now, None);
        }
        // Three full batches queued: a budget of one batch takes one.
        let d = acc.drain(&tp(0), 1, now, false, "b").unwrap().unwrap();
        assert_eq!((d.batches, stamp_of(&d)), (1, (42, 0, 0, 3)));
        // A retriable failure: the same bytes go again, sequence and all.
        acc.retry_or_fail(
            &tp(0),
            d.batch_id,
            Error::Network("reset".into()),
            now,
            Duration::ZERO,
            5,
            true,
        );
        let again = acc.drain(&tp(0), 1, now, false, "b").unwrap().unwrap();
        assert_eq!(again.set(), d.set());
        acc.complete(
            &tp(0),
            again.batch_id,
            Ok(Delivered {
                base_offset: Some(0),
                log_append_time: None,
            }),
        );
        let d = acc.drain(&tp(0), 1, now, false, "b").unwrap().unwrap();
        assert_eq!(stamp_of(&d), (42, 0, 3, 3));
        // This batch fails for good: the next one starts the next epoch at sequence 0.
        acc.complete(
            &tp(0),
            d.batch_id,
            Err(Error::InvalidArgument("refused".into())),
        );
        let d = acc.drain(&tp(0), 1, now, false, "b").unwrap().unwrap();
        assert_eq!(stamp_of(&d), (42, 1, 0, 3));
        // Other partitions keep their own numbering.
        let _ = acc.append(&tp(1), 1, None, Some(b"v"), &[], now, None);
        let d1 = acc.drain(&tp(1), 1 << 20, now, true, "b").unwrap().unwrap();
        assert_eq!(stamp_of(&d1), (42, 0, 0, 1));
    }

    #[test]
    fn idempotent_requests_carry_consecutive_batches_renumbered_after_a_bump() {
        let now = Instant::now();
        let mut acc = idempotent_accumulator(7);
        let futures: Vec<DeliveryFuture> = (0..9)
            .map(|_| acc.append(&tp(0), 1, None, Some(b"v"), &[], now, None).0)
            .collect();
        // A budget of a batch and a half: the first goes, the second is built (numbered 3..5)
        // but waits for the next request.
        let one = acc
            .drain(&tp(0), 1, now, false, "b")
            .unwrap()
            .unwrap()
            .set()
            .len();
        acc.retry_or_fail(
            &tp(0),
            1,
            Error::Network("x".into()),
            now,
            Duration::ZERO,
            5,
            true,
        );
        let d = acc
            .drain(&tp(0), one + one / 2, now, false, "b")
            .unwrap()
            .unwrap();
        assert_eq!((d.batches, stamp_of(&d)), (1, (7, 0, 0, 3)));
        // The first batch fails for good: the built, never sent second one is renumbered.
        acc.complete(
            &tp(0),
            d.batch_id,
            Err(Error::InvalidArgument("refused".into())),
        );
        let d = acc
            .drain(&tp(0), 1 << 20, now, false, "b")
            .unwrap()
            .unwrap();
        assert_eq!(d.batches, 2, "the rest in one request");
        let stamps: Vec<_> = Entries::new(&d.set())
            .map(|e| {
                let h = crate::format::v2::BatchHeader::parse(e.unwrap().bytes).unwrap();
                (h.producer_epoch, h.base_sequence)
            })
            .collect();
        assert_eq!(stamps, [(1, 0), (1, 3)]);
        for e in Entries::new(&d.set()) {
            e.unwrap().check_crc().expect("renumbered with a new CRC");
        }
        // The answer names each batch's offset (the first was already in the log).
        acc.complete_at(
            &tp(0),
            d.batch_id,
            Ok(Delivered {
                base_offset: Some(40),
                log_append_time: None,
            }),
            &[40, 90],
        );
        let offsets: Vec<Option<u64>> = futures[3..]
            .iter()
            .map(|f| f.try_result().unwrap().unwrap().offset.map(|o| o.0))
            .collect();
        assert_eq!(offsets, [40, 41, 42, 90, 91, 92].map(Some));
    }

    #[test]
    fn retries_zero_fails_on_first_error() {
        let now = Instant::now();
        let mut acc = Accumulator::new(
            1000,
            Duration::ZERO,
            Duration::from_secs(60),
            Arc::default(),
        );
        let _f = acc.append(&tp(0), 1, None, Some(b"v"), &[], now, None).0;
        let d = acc.drain(&tp(0), 1, now, false, "b").unwrap().unwrap();
        let err = Error::Network("reset".into());
        assert_eq!(
            0,
            acc.retry_or_fail(&tp(0), d.batch_id, err, now, Duration::ZERO, 0, true)
        );
    }

    #[test]
    fn expired_batches_fail_with_timed_out_and_stale_completions_are_ignored() {
        let now = Instant::now();
        let mut acc = Accumulator::new(
            10,
            Duration::ZERO,
            Duration::from_millis(50),
            Arc::default(),
        );
        let mut f1 = acc
            .append(&tp(0), 1, None, Some(b"first"), &[], now, None)
            .0;
        let mut f2 = acc
            .append(&tp(0), 1, None, Some(b"second"), &[], now, None)
            .0;
        let d = acc.drain(&tp(0), 1, now, false, "b").unwrap().unwrap();
        assert_eq!(
            acc.expire(now + Duration::from_millis(60)),
            1,
            "the in-flight batch is left alone"
        );
        match poll_now(&mut f2) {
            Poll::Ready(Err(e)) => assert_eq!(e.code(), ErrorCode::RequestTimedOut),
            other => panic!("{other:?}"),
        }
        acc.complete(&tp(0), d.batch_id + 100, delivered_at(0));
        assert!(poll_now(&mut f1).is_pending());
        acc.fail_all(|| Error::ShuttingDown);
        assert!(matches!(
            poll_now(&mut f1),
            Poll::Ready(Err(Error::ShuttingDown))
        ));
    }

    #[test]
    fn records_with_other_send_settings_get_batches_of_their_own() {
        let now = Instant::now();
        let mut acc = Accumulator::new(
            16 << 10,
            Duration::from_secs(10),
            Duration::from_secs(60),
            Arc::default(),
        );
        let acks0 = BatchKey {
            settings: SendSettings {
                acks: Acks::None,
                compression: Compression::None,
            },
            ..tp(0)
        };
        let mut plain = acc
            .append(&tp(0), 1, None, Some(&[1u8; 200]), &[], now, None)
            .0;
        let mut zipped = acc
            .append(&gz(0), 1, None, Some(&[2u8; 200]), &[], now, None)
            .0;
        let _fire = acc.append(&acks0, 1, None, Some(b"x"), &[], now, None).0;
        assert_eq!(acc.batch_count(&tp(0)), 1);
        assert_eq!(acc.batch_count(&gz(0)), 1);
        assert_eq!(acc.batch_count(&acks0), 1);
        // Each queue is ready on its own, in one order: partition, acks (wire value), codec.
        assert_eq!(acc.ready(now, true).0, [tp(0), gz(0), acks0.clone()]);
        let d_plain = acc.drain(&tp(0), 1 << 20, now, true, "b").unwrap().unwrap();
        let d_gz = acc.drain(&gz(0), 1 << 20, now, true, "b").unwrap().unwrap();
        assert_eq!(d_gz.key, gz(0));
        // The gzip set is smaller (a run of equal bytes) and still decodes to the one record.
        assert!(d_gz.set().len() < d_plain.set().len(), "{d_gz:?}");
        let mut values = Vec::new();
        for_each_record(&d_gz.set(), &mut Vec::new(), |r| {
            values.push(r.value.map(<[u8]>::to_vec))
        })
        .unwrap();
        assert_eq!(values, [Some(vec![2u8; 200])]);
        acc.complete(&gz(0), d_gz.batch_id, delivered_at(5));
        assert!(matches!(poll_now(&mut zipped), Poll::Ready(Ok(m)) if m.offset == Some(Offset(5))));
        assert!(
            poll_now(&mut plain).is_pending(),
            "its own queue is still in flight"
        );
        acc.complete(&tp(0), d_plain.batch_id, delivered_at(6));
        assert!(matches!(poll_now(&mut plain), Poll::Ready(Ok(m)) if m.offset == Some(Offset(6))));
        assert_eq!(acc.ready(now, true).0, [acks0]);
    }

    fn delivered_at(base: u64) -> Result<Delivered> {
        Ok(Delivered {
            base_offset: Some(base),
            log_append_time: None,
        })
    }

    fn gzip_acc(batch_size: u32, linger: Duration) -> Accumulator {
        Accumulator::new(batch_size, linger, Duration::from_secs(60), Arc::default())
    }

    #[test]
    fn queued_batches_of_a_partition_go_out_together_within_the_request_budget() {
        let now = Instant::now();
        let mut acc = gzip_acc(100, Duration::from_secs(10));
        // One record per batch (60-byte values, 100-byte batches): five batches, the last open.
        let mut futs: Vec<_> = (0..5)
            .map(|i| {
                acc.append(&gz(0), 10 + i, None, Some(&[i as u8; 60]), &[], now, None)
                    .0
            })
            .collect();
        assert_eq!(acc.batch_count(&gz(0)), 5);
        let d = acc
            .drain(&gz(0), 1 << 20, now, false, "b")
            .unwrap()
            .unwrap();
        // The four closed batches, as four gzip wrappers in one set; the open one stays.
        assert_eq!(d.batches, 4);
        let mut wrappers = 0;
        for_each_record(&d.set(), &mut Vec::new(), |_| wrappers += 1).unwrap();
        assert_eq!(wrappers, 4);
        assert!(
            acc.drain(&gz(0), 1 << 20, now, true, "b")
                .unwrap()
                .is_none()
        );
        acc.complete(&gz(0), d.batch_id, delivered_at(40));
        for (i, f) in futs.iter_mut().take(4).enumerate() {
            match poll_now(f) {
                Poll::Ready(Ok(m)) => assert_eq!(m.offset, Some(Offset(40 + i as u64))),
                other => panic!("{other:?}"),
            }
        }
        assert!(poll_now(&mut futs[4]).is_pending());
        // Flushing takes the open batch too.
        let d = acc.drain(&gz(0), 1 << 20, now, true, "b").unwrap().unwrap();
        assert_eq!(d.batches, 1);
    }

    #[test]
    fn the_request_budget_bounds_a_drain_but_never_strands_a_front_batch() {
        let now = Instant::now();
        let mut acc = gzip_acc(100, Duration::ZERO);
        for i in 0..6 {
            let _ = acc.append(&gz(0), 1, None, Some(&[i as u8; 60]), &[], now, None);
        }
        let one = acc.drain(&gz(0), 1, now, false, "b").unwrap().unwrap();
        assert_eq!(one.batches, 1, "a front batch over the budget goes alone");
        acc.complete(&gz(0), one.batch_id, delivered_at(0));
        let two = acc
            .drain(&gz(0), 2 * one.set().len(), now, false, "b")
            .unwrap()
            .unwrap();
        assert!(
            two.batches >= 2 && two.set().len() <= 2 * one.set().len(),
            "{two:?}"
        );
    }

    #[test]
    fn a_failed_multi_batch_request_retries_its_batches_together_in_order() {
        let now = Instant::now();
        let mut acc = gzip_acc(100, Duration::ZERO);
        let mut futs: Vec<_> = (0..3)
            .map(|i| {
                acc.append(&gz(0), 1, None, Some(&[i as u8; 60]), &[], now, None)
                    .0
            })
            .collect();
        let d = acc
            .drain(&gz(0), 1 << 20, now, false, "b")
            .unwrap()
            .unwrap();
        assert_eq!(d.batches, 3);
        let err = Error::Network("reset".into());
        let backoff = Duration::from_millis(100);
        assert_eq!(
            acc.retry_or_fail(&gz(0), d.batch_id, err, now, backoff, 5, true),
            3
        );
        assert!(
            acc.drain(&gz(0), 1 << 20, now, false, "b")
                .unwrap()
                .is_some_and(|d| d.batches == 1),
            "the front is drained by the sender only once ready; drain itself takes it"
        );
        // Put back by a second failure, then after the backoff all three go again at once.
        let later = now + backoff;
        let front = acc.queues[&gz(0)].batches[0].id;
        assert_eq!(
            acc.retry_or_fail(
                &gz(0),
                front,
                Error::Network("again".into()),
                now,
                backoff,
                5,
                true
            ),
            1
        );
        let d = acc
            .drain(&gz(0), 1 << 20, later, false, "b")
            .unwrap()
            .unwrap();
        assert_eq!(d.batches, 3);
        acc.complete(&gz(0), d.batch_id, delivered_at(7));
        for (i, f) in futs.iter_mut().enumerate() {
            match poll_now(f) {
                Poll::Ready(Ok(m)) => assert_eq!(m.offset, Some(Offset(7 + i as u64))),
                other => panic!("{other:?}"),
            }
        }
    }

    /// The first byte of each record's value in `d`'s set, in order.
    fn values_of(d: &Drained) -> Vec<u8> {
        let mut out = Vec::new();
        for_each_record(&d.set(), &mut Vec::new(), |r| out.push(r.value.unwrap()[0])).unwrap();
        out
    }

    /// An accumulator of one-record batches (60-byte values), up to three requests per queue.
    fn pipelined(
        now: Instant,
    ) -> (
        Accumulator,
        impl FnMut(&mut Accumulator, u8) -> DeliveryFuture,
    ) {
        let acc = Accumulator::new(100, Duration::ZERO, Duration::from_secs(60), Arc::default())
            .with_requests_in_flight(3);
        let append = move |acc: &mut Accumulator, v: u8| {
            acc.append(&tp(0), 1, None, Some(&[v; 60]), &[], now, None)
                .0
        };
        (acc, append)
    }

    #[test]
    fn requests_of_a_queue_pipeline_up_to_the_limit_to_one_leader_and_complete_in_any_order() {
        let now = Instant::now();
        let (mut acc, mut append) = pipelined(now);
        let mut futs = Vec::new();
        let mut sent = Vec::new();
        for v in 0..3 {
            futs.push(append(&mut acc, v));
            assert_eq!(
                acc.ready(now, false).0,
                [tp(0)],
                "a new batch is ready beside those in flight"
            );
            let d = acc
                .drain(&tp(0), 1 << 20, now, false, "b")
                .unwrap()
                .unwrap();
            assert_eq!(values_of(&d), [v]);
            assert_eq!((d.order_sequence, d.order_since), (u64::from(v), 0));
            sent.push(d);
        }
        futs.push(append(&mut acc, 3));
        assert!(
            acc.ready(now, false).0.is_empty(),
            "three in flight: the limit"
        );
        assert!(
            acc.drain(&tp(0), 1 << 20, now, false, "b")
                .unwrap()
                .is_none()
        );
        // The second answer comes first: its record is delivered, the first is still pending.
        acc.complete(&tp(0), sent[1].batch_id, delivered_at(11));
        assert!(
            matches!(poll_now(&mut futs[1]), Poll::Ready(Ok(m)) if m.offset == Some(Offset(11)))
        );
        assert!(poll_now(&mut futs[0]).is_pending());
        // Another leader (metadata changed) waits until the requests in flight are back.
        assert!(
            acc.drain(&tp(0), 1 << 20, now, false, "c")
                .unwrap()
                .is_none()
        );
        let d3 = acc
            .drain(&tp(0), 1 << 20, now, false, "b")
            .unwrap()
            .unwrap();
        assert_eq!(
            (values_of(&d3), d3.order_sequence, d3.order_since),
            (vec![3], 3, 0)
        );
        acc.complete(&tp(0), sent[0].batch_id, delivered_at(10));
        acc.complete(&tp(0), sent[2].batch_id, delivered_at(12));
        futs.push(append(&mut acc, 4));
        // Only request 3 is in flight now: the next one says so.
        let d4 = acc
            .drain(&tp(0), 1 << 20, now, false, "b")
            .unwrap()
            .unwrap();
        assert_eq!((d4.order_sequence, d4.order_since), (4, 3));
        acc.complete(&tp(0), d3.batch_id, delivered_at(13));
        acc.complete(&tp(0), d4.batch_id, delivered_at(14));
        for (i, f) in futs.iter_mut().enumerate() {
            assert!(
                matches!(poll_now(f), Poll::Ready(Ok(m)) if m.offset == Some(Offset(10 + i as u64)))
            );
        }
        assert!(acc.is_empty());
        // With every request back, the next may go to another leader.
        drop(append(&mut acc, 5));
        let d = acc
            .drain(&tp(0), 1 << 20, now, false, "c")
            .unwrap()
            .unwrap();
        assert_eq!((d.order_sequence, d.order_since), (5, 5));
    }

    #[test]
    fn a_request_to_resend_waits_for_those_in_flight_then_goes_first_in_order() {
        let now = Instant::now();
        let backoff = Duration::from_millis(10);
        let (mut acc, mut append) = pipelined(now);
        let mut futs = Vec::new();
        let mut sent = Vec::new();
        for v in 0..3 {
            futs.push(append(&mut acc, v));
            sent.push(
                acc.drain(&tp(0), 1 << 20, now, false, "b")
                    .unwrap()
                    .unwrap(),
            );
        }
        let retry = |acc: &mut Accumulator, d: &Drained| {
            acc.retry_or_fail(
                &tp(0),
                d.batch_id,
                Error::Network("reset".into()),
                now,
                backoff,
                5,
                true,
            )
        };
        // The second request fails while the others are in flight: nothing new goes out, not
        // even after the backoff, until they are back.
        assert_eq!(retry(&mut acc, &sent[1]), 1);
        futs.push(append(&mut acc, 3));
        let later = now + backoff;
        assert!(acc.ready(later, false).0.is_empty());
        assert!(
            acc.drain(&tp(0), 1 << 20, later, false, "b")
                .unwrap()
                .is_none()
        );
        // The third fails too (its leader refused it behind the failed one); the first was
        // appended.
        assert_eq!(retry(&mut acc, &sent[2]), 1);
        assert!(
            acc.ready(later, false).0.is_empty(),
            "the first is still in flight"
        );
        acc.complete(&tp(0), sent[0].batch_id, delivered_at(20));
        // All back: the two failed ones go again, first, in order, then the new record, each
        // numbered after everything sent before and waiting for nothing.
        assert_eq!(acc.ready(later, false).0, [tp(0)]);
        let d = acc
            .drain(&tp(0), 1 << 20, later, false, "b")
            .unwrap()
            .unwrap();
        assert_eq!(values_of(&d), [1, 2, 3]);
        assert_eq!((d.order_sequence, d.order_since), (3, 3));
        acc.complete(&tp(0), d.batch_id, delivered_at(21));
        for (i, f) in futs.iter_mut().enumerate() {
            assert!(
                matches!(poll_now(f), Poll::Ready(Ok(m)) if m.offset == Some(Offset(20 + i as u64)))
            );
        }
    }

    #[test]
    fn an_idempotent_producer_pipelines_and_renumbers_in_order_after_a_bump_in_flight() {
        let now = Instant::now();
        let backoff = Duration::from_millis(10);
        let mut acc = idempotent_accumulator(5).with_requests_in_flight(3);
        let mut futs: Vec<_> = (0..4)
            .map(|v| {
                acc.append(&tp(0), 1, None, Some(&[v; 60]), &[], now, None)
                    .0
            })
            .collect();
        let sent: Vec<Drained> = (0..3)
            .map(|_| acc.drain(&tp(0), 100, now, false, "b").unwrap().unwrap())
            .collect();
        let stamps: Vec<_> = sent.iter().map(stamp_of).collect();
        assert_eq!(stamps, [(5, 0, 0, 1), (5, 0, 1, 1), (5, 0, 2, 1)]);
        assert!(
            acc.drain(&tp(0), 100, now, false, "b").unwrap().is_none(),
            "three in flight"
        );
        // Request 1's answer is lost (it may be in the log); request 0 fails for good, which
        // bumps the epoch while request 2 is still out; request 2 comes back refused behind
        // them (not appended).
        let lost = Error::Network("reset".into());
        assert_eq!(
            acc.retry_or_fail(&tp(0), sent[1].batch_id, lost, now, backoff, 5, true),
            1
        );
        acc.complete(
            &tp(0),
            sent[0].batch_id,
            Err(Error::Remote {
                code: ErrorCode::CorruptMessage,
                message: "damaged".into(),
            }),
        );
        let later = now + backoff;
        assert!(
            acc.ready(later, false).0.is_empty(),
            "held until request 2 is back"
        );
        let refused = Error::Remote {
            code: ErrorCode::OutOfOrderSequenceNumber,
            message: "behind a failed request".into(),
        };
        assert_eq!(
            acc.retry_or_fail(&tp(0), sent[2].batch_id, refused, now, backoff, 5, false),
            1
        );
        // Now renumbered in the new epoch, in queue order: request 1's batch fails (under a new
        // number it could be written twice), request 2's and the unsent one go as 0 and 1.
        assert_eq!(acc.ready(later, false).0, [tp(0)]);
        let d = acc.drain(&tp(0), 100, later, false, "b").unwrap().unwrap();
        assert_eq!((stamp_of(&d), values_of(&d)), ((5, 1, 0, 1), vec![2]));
        let e = acc.drain(&tp(0), 100, later, false, "b").unwrap().unwrap();
        assert_eq!((stamp_of(&e), values_of(&e)), ((5, 1, 1, 1), vec![3]));
        acc.complete(&tp(0), d.batch_id, delivered_at(40));
        acc.complete(&tp(0), e.batch_id, delivered_at(41));
        assert!(
            matches!(poll_now(&mut futs[0]), Poll::Ready(Err(e)) if e.code() == ErrorCode::CorruptMessage)
        );
        match poll_now(&mut futs[1]) {
            Poll::Ready(Err(e)) => {
                assert_eq!(e.code(), ErrorCode::OutOfOrderSequenceNumber);
                assert!(e.to_string().contains("written twice"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(poll_now(&mut futs[2]), Poll::Ready(Ok(m)) if m.offset == Some(Offset(40)))
        );
        assert!(
            matches!(poll_now(&mut futs[3]), Poll::Ready(Ok(m)) if m.offset == Some(Offset(41)))
        );
        assert!(acc.is_empty());
    }

    #[test]
    fn failures_count_records_of_failed_batches_and_keep_the_first_in_order() {
        let now = Instant::now();
        let mut acc = gzip_acc(100, Duration::ZERO);
        // Two partitions: p0's batch will be delivered, p1's will fail; one record failed early.
        let mut futs = vec![acc.append(&gz(0), 1, None, Some(b"a"), &[], now, None).0];
        futs.push(DeliveryFuture::failed(Error::MessageTooLarge {
            size: 9,
            max: 1,
        }));
        futs.extend((0..3).map(|_| acc.append(&gz(1), 1, None, Some(b"b"), &[], now, None).0));
        let batch = BatchDelivery::new(futs);
        assert!(batch.try_failures().is_none(), "pending");
        let d0 = acc.drain(&gz(0), 1 << 20, now, true, "b").unwrap().unwrap();
        let d1 = acc.drain(&gz(1), 1 << 20, now, true, "b").unwrap().unwrap();
        acc.complete(&gz(0), d0.batch_id, delivered_at(0));
        acc.complete(&gz(1), d1.batch_id, Err(Error::Network("reset".into())));
        let f = batch.try_failures().expect("all resolved");
        assert_eq!(f.count, 4);
        assert_eq!(f.first.unwrap().code(), ErrorCode::MessageTooLarge);
        let f = batch
            .wait_failures_blocking(Some(Duration::ZERO))
            .unwrap()
            .unwrap();
        assert_eq!(f.count, 4);
    }
}

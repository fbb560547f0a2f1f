//! The consumer: `assign` partitions (or `subscribe` to a group), `poll` batches of records
//! and rebalance events, move positions with `seek*`, `pause`/`resume` partitions, and commit
//! positions to the local offset store and, for a group member, to the broker.
//!
//! Owns, per assigned partition, its *position* (the offset of the next record `poll` returns)
//! and its *fetch offset* (the next offset to fetch, ahead of the position by what is buffered).
//! A background fetcher task (on the client runtime, `runtime.rs`) keeps a bounded buffer of
//! fetched records filled:
//! - partitions without a position get one: the committed offset from the local store, else
//!   `auto.offset.reset` (earliest / latest by `ListOffsets`; `none`/`error` makes `poll` fail);
//! - partitions with a position are long-polled (`Log.Fetch`, `fetch.max.wait.ms`), several
//!   partitions per request, one request per leader, while fewer than `fetch.max.bytes` (at
//!   most [`CONSUMER_BUFFER_BYTES_MAX`]) bytes are buffered, so `poll` usually returns without a
//!   round trip; paused partitions are not fetched;
//! - the fetcher reads only a fetched set's framing (its last offset: where the next fetch
//!   starts); the `poll` that reaches the set deep-decodes it into columns ([`DecodedSet`], CRCs
//!   checked), so the next fetch is on the wire meanwhile. A compressed wrapper may start before
//!   the fetch offset: records below it are skipped. A set that fails to decode stops its
//!   partition there (later chunks go stale, `poll` reports the error, fetching restarts at the
//!   position);
//! - OFFSET_OUT_OF_RANGE applies `auto.offset.reset`; NOT_LEADER / unknown partition /
//!   connection errors refresh metadata and retry after `retry.backoff.ms`; an answer whose
//!   result count does not match the request is retried the same way (never trusted).
//!
//! **Invariant:** each partition carries an *epoch*, bumped by every `seek`/`assign`/`pause`;
//! fetch answers and buffered records of an older epoch are dropped, so after a seek `poll`
//! never returns a record from before it. Records of a partition are returned in offset order,
//! each once per position (no gap, no repeat), and the position only advances over returned
//! records.
//!
//! Offsets: `commit()` writes the current positions to the local offset store
//! (`offset_store.rs`), `commit_offsets` explicit ones; with `enable.auto.commit`, `poll`
//! starts a commit of the positions reached by the previous poll every
//! `auto.commit.interval.ms` (at-least-once) in the background — `poll` never waits for it —
//! and `close` commits once more.
//!
//! Consumer groups: `subscribe(topics)` (needs `group.id`) starts the membership task of
//! `consumer/group.rs`, which joins the group through the broker's coordinator and calls the
//! same internal `set_assignment` that `assign` uses, so the fetcher, positions and store are
//! shared by both modes. For a group member `commit()` writes to the broker (with its member
//! id and generation) and to the local store when one is configured.
//!
//! **Rebalance events, in band** (Kafka's `ConsumerRebalanceListener` without callbacks on
//! core threads): [`Consumer::poll_batch`] returns, besides records, [`RebalanceEvent`]s.
//! `Revoked` carries the positions reached; the partitions are already out of the fetcher and
//! nothing of them is returned any more, but the member waits to rejoin the group until the
//! application's next `poll` (at most half of the smaller of `session.timeout.ms` and
//! `max.poll.interval.ms`), so a commit made in
//! between (`commit()` commits the revoked positions then) lands before another member starts
//! on them. `Assigned` carries the new partitions and where each starts (the group's commit).
//! A revoke waits only once the application has called `poll_batch`: a consumer that only
//! uses the plain [`Consumer::poll`] (which drops events) never holds a rebalance up.
//!
//! **Invariant:** epochs come from one counter per consumer, so a partition that is revoked and
//! later assigned again never matches a fetch answer from its earlier ownership.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use sluiceway_proto::v1;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::cluster::{
    Cluster, OffsetSpec, clone_error, is_connection_error, needs_metadata_refresh,
};
use super::config::{ConsumerConfig, OffsetReset};
use super::offset_store::{OffsetStore, STANDALONE_ID};
use super::runtime::Home;

mod columns;
mod group;
use crate::error::{Error, ErrorCode, Result};
use crate::format::{Crcs, TimestampType};
use crate::group::TopicPartition;
use crate::limits::{
    CONSUMER_BUFFER_BYTES_MAX, CONSUMER_EVENTS_MAX, CONSUMER_MAX_POLL_RECORDS_MAX,
    REQUEST_PARTITIONS_MAX,
};
use crate::types::Offset;
use crate::wire::{code_from_proto, partition_error};
pub use columns::RecordColumns;
use columns::{DecodedSet, RecordSink};

/// One record as `poll` returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerRecord {
    pub topic: Arc<str>,
    pub partition: u32,
    pub offset: Offset,
    /// Ms since the epoch (−1 for magic-0 messages).
    pub timestamp: i64,
    pub timestamp_type: TimestampType,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    /// The record's headers in order (magic 2 records); empty for magic 0/1, and then not
    /// allocated.
    pub headers: Vec<RecordHeader>,
}

/// One record header: Kafka's ordered key/value pairs, keys UTF-8 (and repeatable), values
/// bytes or null.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RecordHeader {
    pub key: String,
    pub value: Option<Bytes>,
}

/// A partition and an offset in it: a position reached, a commit, a starting point.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PartitionOffset {
    pub topic: String,
    pub partition: u32,
    /// `None` where there is no offset (a partition assigned without a group commit starts by
    /// the local store or `auto.offset.reset`).
    pub offset: Option<Offset>,
}

impl PartitionOffset {
    fn new(tp: &TopicPartition, offset: Option<Offset>) -> PartitionOffset {
        PartitionOffset {
            topic: tp.topic.clone(),
            partition: tp.partition,
            offset,
        }
    }
}

/// A change of a group member's assignment, returned in band by [`Consumer::poll_batch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RebalanceEvent {
    /// These partitions were taken away, with the positions reached. The member rejoins the
    /// group only after the next `poll`, so commit now (`commit()` commits these positions)
    /// to hand them over without duplicates.
    Revoked(Vec<PartitionOffset>),
    /// These partitions are now this member's; each starts at the group's committed offset
    /// (`None`: the local store, else `auto.offset.reset`).
    Assigned(Vec<PartitionOffset>),
}

/// What one [`Consumer::poll_batch`] returns: records, or rebalance events (events come alone,
/// before any record of the new assignment).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PollBatch {
    pub records: Vec<ConsumerRecord>,
    pub events: Vec<RebalanceEvent>,
}

/// [`PollBatch`] with the records in columns: what [`Consumer::poll_columns`] returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PollColumns {
    pub records: RecordColumns,
    pub events: Vec<RebalanceEvent>,
}

/// A group member's identity at the coordinator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMembership {
    pub member_id: String,
    pub generation: i32,
}

#[derive(Debug, Default)]
struct PartState {
    position: Option<u64>,
    fetch_offset: Option<u64>,
    epoch: u64,
    /// A fetch or a position lookup for this epoch is running (and, for a fetch, its answer
    /// has not yet told where the next one starts).
    busy: bool,
    /// Fetches sent in this epoch, and how many of their answers were applied: answers are
    /// applied in the order the fetches were sent (see [`fetch`]). Both restart at 0 with the
    /// epoch.
    issued: u64,
    landed: u64,
    /// Ignore the committed offset when resolving (after OFFSET_OUT_OF_RANGE).
    reset_by_policy: bool,
    /// Not fetched and not returned until resumed.
    paused: bool,
    retry_at: Option<Instant>,
    /// Reported by the next `poll`.
    error: Option<Error>,
}

impl PartState {
    /// Moves the partition to `epoch`: fetches of the old one are ignored when they answer.
    fn renew(&mut self, epoch: u64) {
        self.epoch = epoch;
        self.issued = 0;
        self.landed = 0;
    }
}

#[derive(Debug)]
struct Chunk {
    tp: TopicPartition,
    topic: Arc<str>,
    epoch: u64,
    /// The fetched set, not decoded yet: the fetcher only reads its framing (to know where the
    /// next fetch starts) and the first poll that reaches it decodes it (CRCs, records), so the
    /// next fetch is on the wire while the application's thread decodes this one.
    pending: Option<PendingSet>,
    decoded: DecodedSet,
    bytes: usize,
    /// Names the chunk to the decode-ahead task ([`Inner::decode_ahead`]).
    id: u64,
    /// The decode-ahead task has its set: a poll waits for it rather than pass it.
    decoding: bool,
    /// The decode-ahead task found the set damaged and left it to the poll (not retried).
    decode_failed: bool,
}

/// A fetched set awaiting [`DecodedSet::decode`]: records at or after `from`, CRCs checked as
/// `check.crcs` says.
#[derive(Debug)]
struct PendingSet {
    set: Bytes,
    from: u64,
    crcs: Crcs,
}

/// A revoke handed to the application and not yet acknowledged by its next poll.
#[derive(Debug)]
struct PendingRevoke {
    positions: Vec<(TopicPartition, u64)>,
    /// A `poll_batch` returned the event; the next poll acknowledges it.
    delivered: bool,
}

#[derive(Debug, Default)]
struct State {
    parts: BTreeMap<TopicPartition, PartState>,
    buffer: VecDeque<Chunk>,
    buffered_bytes: usize,
    topics: HashMap<String, Arc<str>>,
    closed: bool,
    last_commit: Option<Instant>,
    /// A background auto-commit is running.
    auto_commit_running: bool,
    /// Source of partition epochs (see the module invariant).
    next_epoch: u64,
    /// Source of chunk ids.
    next_chunk_id: u64,
    /// A decode-ahead task is running.
    decoding_ahead: bool,
    /// How many records the last poll could take: what decode-ahead prepares for the next
    /// (0 before the first poll: nothing is decoded ahead of an application that never polls).
    decode_want: usize,
    /// A group membership failure or a failed background commit the next `poll` reports
    /// (once).
    group_error: Option<Error>,
    /// The application takes rebalance events (it called `poll_batch`): only then does a
    /// revoke wait for its acknowledgement.
    events_wanted: bool,
    /// Rebalance events not yet returned by a poll (at most [`CONSUMER_EVENTS_MAX`], oldest
    /// dropped first: a consumer that does not poll must not grow it).
    events: VecDeque<RebalanceEvent>,
    revoke: Option<PendingRevoke>,
}

impl State {
    fn push_event(&mut self, event: RebalanceEvent) {
        if self.events.len() >= CONSUMER_EVENTS_MAX {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    fn new_epoch(&mut self) -> u64 {
        self.next_epoch += 1;
        self.next_epoch
    }

    /// Drops buffered records of `tp` that do not belong to its current epoch.
    fn drop_stale_chunks(&mut self) {
        let State {
            parts,
            buffer,
            buffered_bytes,
            ..
        } = self;
        buffer.retain(|c| {
            let keep = parts.get(&c.tp).is_some_and(|p| p.epoch == c.epoch);
            if !keep {
                *buffered_bytes -= c.bytes;
            }
            keep
        });
    }

    /// Restarts a partition's fetching at `position` under a new epoch (seek, pause).
    fn restart(&mut self, tp: &TopicPartition, position: Option<u64>) -> Result<()> {
        let epoch = self.new_epoch();
        let p = self.parts.get_mut(tp).ok_or_else(|| not_assigned(tp))?;
        p.renew(epoch);
        p.position = position;
        p.fetch_offset = position;
        p.busy = false;
        p.reset_by_policy = false;
        p.retry_at = None;
        p.error = None;
        self.drop_stale_chunks();
        Ok(())
    }
}

#[derive(Debug)]
struct Inner {
    config: ConsumerConfig,
    home: Home,
    cluster: Arc<Cluster>,
    state: Mutex<State>,
    /// Fetched data, errors or events arrived (wakes `poll`).
    data: Notify,
    /// A fetch answer was applied (wakes later answers of the same partitions, `wait_turn`).
    landed: Notify,
    /// Something for the fetcher to do (wakes the fetcher).
    wake: Notify,
    /// A delivered revoke was acknowledged (wakes the membership task).
    revoke_acked: Notify,
    /// The local offset store; taken out by `close`, which so releases its lock at once.
    store: Mutex<Option<Arc<OffsetStore>>>,
    buffer_limit: usize,
    /// The group membership while subscribed (`None` for a standalone consumer).
    member: Mutex<Option<group::Member>>,
    fetcher: Mutex<Option<JoinHandle<()>>>,
    /// The group membership task while subscribed.
    membership: Mutex<Option<JoinHandle<()>>>,
}

/// A consumer (see the module docs). Every method takes `&self`; its tasks run on the client
/// core's runtime, so it works from any thread and any executor, and the `*_blocking` methods
/// serve synchronous APIs.
#[derive(Debug)]
pub struct Consumer {
    inner: Arc<Inner>,
}

fn not_assigned(tp: &TopicPartition) -> Error {
    Error::InvalidArgument(format!(
        "partition {}-{} is not assigned to this consumer",
        tp.topic, tp.partition
    ))
}

fn checked_offset(offset: Offset) -> Result<u64> {
    if offset > Offset::MAX {
        return Err(Error::InvalidArgument(format!(
            "offset {offset} is above the largest offset {}",
            Offset::MAX
        )));
    }
    Ok(offset.0)
}

/// Runs an operation of the consumer on the client runtime (async or blocking).
macro_rules! op {
    (async $self:ident, |$inner:ident| $body:expr) => {{
        let $inner = $self.inner.clone();
        $self.inner.home.run(async move { $body }).await
    }};
    (blocking $self:ident, |$inner:ident| $body:expr) => {{
        let $inner = $self.inner.clone();
        $self.inner.home.block_on(async move { $body })
    }};
}

impl Inner {
    /// The assignment seam of `assign` and of the group membership. Partitions that stay keep
    /// their position, pause and buffered records; new ones start at `committed` (the group's
    /// broker-committed offsets), else the local store, else `auto.offset.reset`. Buffered
    /// records of partitions that went away are dropped here, under the lock `poll` drains
    /// with, so no record of a revoked partition is returned after this call.
    fn set_assignment(
        &self,
        partitions: Vec<TopicPartition>,
        committed: &HashMap<TopicPartition, u64>,
    ) -> Result<()> {
        let mut st = self.state.lock();
        if st.closed {
            return Err(Error::Closed("consumer"));
        }
        let mut parts = BTreeMap::new();
        for tp in partitions {
            let state = match st.parts.remove(&tp) {
                Some(p) => p,
                None => {
                    let start = committed.get(&tp).copied().or_else(|| self.stored(&tp));
                    PartState {
                        position: start,
                        fetch_offset: start,
                        epoch: st.new_epoch(),
                        ..PartState::default()
                    }
                }
            };
            if !st.topics.contains_key(&tp.topic) {
                st.topics
                    .insert(tp.topic.clone(), Arc::from(tp.topic.as_str()));
            }
            parts.insert(tp, state);
        }
        st.parts = parts;
        st.drop_stale_chunks();
        drop(st);
        self.wake.notify_one();
        Ok(())
    }

    /// Takes every partition away (a group rebalance revokes them all) and returns the
    /// positions reached, atomically with respect to `poll`.
    fn revoke_all(&self) -> Vec<(TopicPartition, u64)> {
        let mut st = self.state.lock();
        let positions = st
            .parts
            .iter()
            .filter_map(|(tp, p)| p.position.map(|o| (tp.clone(), o)))
            .collect();
        st.parts.clear();
        st.buffer.clear();
        st.buffered_bytes = 0;
        positions
    }

    /// The current position of every assigned partition that has one, and during an
    /// unacknowledged revoke the revoked positions (so `commit()` in reaction to a `Revoked`
    /// event commits what was revoked, as Kafka's commitSync in onPartitionsRevoked does).
    fn positions(&self) -> Vec<(TopicPartition, u64)> {
        let st = self.state.lock();
        let mut out: Vec<_> = st
            .parts
            .iter()
            .filter_map(|(tp, p)| p.position.map(|o| (tp.clone(), o)))
            .collect();
        if let Some(r) = &st.revoke {
            out.extend(r.positions.iter().cloned());
        }
        out
    }

    /// Acknowledges a revoke (the application polled again, closed or unsubscribed).
    fn ack_revoke(&self, st: &mut State, only_delivered: bool) {
        if st
            .revoke
            .as_ref()
            .is_some_and(|r| r.delivered || !only_delivered)
        {
            st.revoke = None;
            self.revoke_acked.notify_waiters();
        }
    }

    fn store(&self) -> Option<Arc<OffsetStore>> {
        self.store.lock().clone()
    }

    /// The position committed in the local store for `tp`.
    fn stored(&self, tp: &TopicPartition) -> Option<u64> {
        self.store().and_then(|s| s.get(tp))
    }

    /// Writes `offsets` to the local store (when configured), off the runtime's workers.
    async fn commit_local(&self, offsets: Vec<(TopicPartition, u64)>) -> Result<()> {
        let Some(store) = self.store() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || store.commit(offsets))
            .await
            .map_err(|e| Error::InvalidArgument(format!("offset store task failed: {e}")))?
    }

    async fn seek_to(
        &self,
        partitions: Option<Vec<TopicPartition>>,
        spec: OffsetSpec,
    ) -> Result<()> {
        self.check_open()?;
        let targets = {
            let st = self.state.lock();
            match partitions {
                None => st.parts.keys().cloned().collect(),
                Some(ps) => {
                    if let Some(tp) = ps.iter().find(|tp| !st.parts.contains_key(*tp)) {
                        return Err(not_assigned(tp));
                    }
                    ps
                }
            }
        };
        let specs: Vec<_> = targets.iter().map(|tp| (tp.clone(), spec)).collect();
        let results = self.cluster.list_offsets(&specs).await;
        let mut offsets = Vec::with_capacity(targets.len());
        for (tp, r) in targets.iter().zip(results) {
            let r = r?;
            // No record at or after the timestamp: start at the end (Kafka's rule).
            offsets.push((tp, r.offset.unwrap_or(r.high_watermark)));
        }
        let mut st = self.state.lock();
        for (tp, off) in offsets {
            st.restart(tp, Some(off.0))?;
        }
        drop(st);
        self.wake.notify_one();
        Ok(())
    }

    async fn position(&self, tp: &TopicPartition) -> Result<Offset> {
        self.check_open()?;
        let (known, epoch, by_policy) = {
            let st = self.state.lock();
            let p = st.parts.get(tp).ok_or_else(|| not_assigned(tp))?;
            (p.position, p.epoch, p.reset_by_policy)
        };
        if let Some(o) = known {
            return Ok(Offset(o));
        }
        let o = resolve_position(self, tp, by_policy).await?;
        let mut st = self.state.lock();
        let p = st.parts.get_mut(tp).ok_or_else(|| not_assigned(tp))?;
        if p.epoch == epoch && p.position.is_none() {
            p.position = Some(o);
            p.fetch_offset = Some(o);
            p.reset_by_policy = false;
        }
        Ok(Offset(p.position.unwrap_or(o)))
    }

    /// The first buffered set not decoded yet, when the decoded records ahead of it are fewer
    /// than `want` (what the next poll may take) and no decode-ahead task runs; it is marked as
    /// being decoded.
    fn next_to_decode(&self, st: &mut State, want: usize) -> Option<(u64, PendingSet)> {
        if st.decoding_ahead {
            return None;
        }
        let mut ready = 0usize;
        for chunk in st.buffer.iter_mut() {
            if ready >= want || chunk.decoding || chunk.decode_failed {
                return None;
            }
            match chunk.pending.take() {
                Some(set) => {
                    chunk.decoding = true;
                    st.decoding_ahead = true;
                    return Some((chunk.id, set));
                }
                None => ready += chunk.decoded.remaining(),
            }
        }
        None
    }

    /// Decodes buffered sets ahead of the application's polls, one at a time, until a poll's
    /// worth (`want` records) is decoded ahead: the application's thread then finds records
    /// ready instead of decoding them itself. Only a poll's worth, so what was decoded is still
    /// in the CPU's caches when it is drained (decoding every buffered set as it arrived made a
    /// Node consumer of 100 B records 35 % slower). A set that does not decode goes back as it
    /// was: the poll that reaches it decodes it again and reports the error at its place.
    async fn decode_ahead(self: Arc<Self>, mut job: (u64, PendingSet), want: usize) {
        loop {
            let (id, pending) = job;
            let decoded = DecodedSet::decode(pending.set.clone(), pending.from, pending.crcs);
            let next = {
                let mut st = self.state.lock();
                if let Some(chunk) = st.buffer.iter_mut().find(|c| c.id == id) {
                    chunk.decoding = false;
                    match decoded {
                        Ok(d) => chunk.decoded = d,
                        Err(_) => {
                            chunk.pending = Some(pending);
                            chunk.decode_failed = true;
                        }
                    }
                }
                st.decoding_ahead = false;
                self.next_to_decode(&mut st, want)
            };
            self.data.notify_waiters();
            match next {
                Some(j) => job = j,
                None => return,
            }
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.state.lock().closed {
            return Err(Error::Closed("consumer"));
        }
        Ok(())
    }

    async fn commit_offsets(&self, offsets: Vec<(TopicPartition, u64)>) -> Result<()> {
        self.check_open()?;
        let member = self.member.lock().is_some();
        if !member && self.store().is_none() {
            return Err(Error::InvalidConfig {
                key: "offset.store.dir".into(),
                reason: "is not set; committing needs a local offset store directory (or a \
                         group subscription)"
                    .into(),
            });
        }
        if member {
            group::commit_to_group(self, &offsets).await?;
        }
        self.commit_local(offsets).await?;
        self.state.lock().last_commit = Some(Instant::now());
        Ok(())
    }

    /// Starts a background commit of the current positions when `auto.commit.interval.ms`
    /// has passed; `poll` never waits for it. A failure other than a rebalance is reported by
    /// the next `poll`.
    fn maybe_auto_commit(self: &Arc<Self>) {
        let member = self.member.lock().is_some();
        if !self.config.enable_auto_commit || (self.store().is_none() && !member) {
            return;
        }
        {
            let mut st = self.state.lock();
            if st.auto_commit_running {
                return;
            }
            match st.last_commit {
                Some(t) if t.elapsed() >= self.config.auto_commit_interval => {}
                Some(_) => return,
                None => {
                    // The interval starts with the first poll.
                    st.last_commit = Some(Instant::now());
                    return;
                }
            }
            st.auto_commit_running = true;
        }
        // The positions reached by the previous polls, taken now, before this poll returns
        // more records: what is committed has been handed to the application (at-least-once).
        let positions = self.positions();
        let inner = self.clone();
        self.home.handle().spawn(async move {
            let r = inner.commit_offsets(positions).await;
            let mut st = inner.state.lock();
            st.auto_commit_running = false;
            match r {
                Ok(()) => {}
                // Around a rebalance: the membership task commits the revoked positions.
                Err(e) if group::is_rebalance_error(&e) => {
                    tracing::debug!(error = %e, "auto commit skipped during a rebalance");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "auto commit failed");
                    // Retried at the next interval; only what retrying cannot fix is reported.
                    st.last_commit = Some(Instant::now());
                    if !e.is_retriable() {
                        st.group_error.get_or_insert(e);
                    }
                }
            }
        });
    }

    /// Records (into a new `S`) or rebalance events, for every public poll.
    /// `max_records` checked, else `max.poll.records`.
    fn poll_max(&self, max_records: Option<u32>) -> Result<usize> {
        Ok(match max_records {
            None => self.config.max_poll_records,
            Some(n) if (1..=CONSUMER_MAX_POLL_RECORDS_MAX).contains(&n) => n,
            Some(n) => {
                return Err(Error::InvalidArgument(format!(
                    "max_records {n} is out of range; allowed: 1..={CONSUMER_MAX_POLL_RECORDS_MAX}"
                )));
            }
        } as usize)
    }

    /// What a poll can return at once, under the state lock: pending rebalance events, an
    /// error, or up to `max` records; `None` when it would have to wait. `decoded_only`: stop
    /// at a set not decoded yet instead of decoding it (a caller on an event-loop thread).
    fn poll_now<S: RecordSink>(
        self: &Arc<Self>,
        max: usize,
        keep_events: bool,
        decoded_only: bool,
    ) -> Result<Option<(S, Vec<RebalanceEvent>)>> {
        let mut st = self.state.lock();
        if st.closed {
            return Err(Error::Closed("consumer"));
        }
        st.events_wanted |= keep_events;
        // This poll acknowledges a revoke an earlier poll returned.
        self.ack_revoke(&mut st, true);
        if !st.events.is_empty() {
            let events: Vec<_> = st.events.drain(..).collect();
            let revoked = events
                .iter()
                .any(|e| matches!(e, RebalanceEvent::Revoked(_)));
            if keep_events {
                if revoked && let Some(r) = st.revoke.as_mut() {
                    r.delivered = true;
                }
                return Ok(Some((S::default(), events)));
            }
            // The caller does not take events: nothing to wait for.
            self.ack_revoke(&mut st, false);
        }
        if let Some(e) = st.group_error.take() {
            return Err(e);
        }
        if let Some(e) = st.parts.values_mut().find_map(|p| p.error.take()) {
            return Err(e);
        }
        let mut records = S::default();
        st.decode_want = max;
        drain_records(&mut st, max, &mut records, decoded_only);
        if records.len() == 0 {
            return Ok(None);
        }
        let decode = self.next_to_decode(&mut st, max);
        drop(st);
        self.wake.notify_one();
        if let Some(job) = decode {
            // The next poll's sets decode while the application handles these.
            self.home
                .handle()
                .spawn(self.clone().decode_ahead(job, max));
        }
        Ok(Some((records, Vec::new())))
    }

    async fn poll_into<S: RecordSink>(
        self: &Arc<Self>,
        timeout: Duration,
        max_records: Option<u32>,
        keep_events: bool,
    ) -> Result<(S, Vec<RebalanceEvent>)> {
        let max = self.poll_max(max_records)?;
        let deadline = tokio::time::Instant::now() + timeout;
        self.maybe_auto_commit();
        loop {
            let notified = self.data.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(answer) = self.poll_now(max, keep_events, false)? {
                return Ok(answer);
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => return Ok((S::default(), Vec::new())),
            }
        }
    }

    async fn subscribe(self: &Arc<Self>, topics: Vec<String>) -> Result<()> {
        let group_id = self
            .config
            .group_id
            .clone()
            .ok_or_else(|| Error::InvalidConfig {
                key: "group.id".into(),
                reason: "is not set; subscribe needs a consumer group id".into(),
            })?;
        let topics: std::collections::BTreeSet<String> = topics.into_iter().collect();
        if topics.is_empty() || topics.len() > crate::limits::CONSUMER_SUBSCRIBE_TOPICS_MAX {
            return Err(Error::InvalidArgument(format!(
                "subscribe needs 1..={} topics",
                crate::limits::CONSUMER_SUBSCRIBE_TOPICS_MAX
            )));
        }
        for t in &topics {
            crate::topic::validate_topic_name(t)
                .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        }
        let topics: Vec<String> = topics.into_iter().collect();
        if self.state.lock().closed {
            return Err(Error::Closed("consumer"));
        }
        let previous = self.member.lock().clone();
        match previous {
            Some(m) if m.topics == topics => return Ok(()),
            Some(_) => {
                // A new subscription: give the partitions back (committing them) and rejoin
                // with the same member id, which rebalances the group. The caller is the
                // application itself, so the revoke is not waited on.
                self.stop_task().await;
                group::revoke(self, false).await;
            }
            None => {
                if !self.state.lock().parts.is_empty() {
                    return Err(Error::InvalidArgument(
                        "the consumer has a manual assignment: assign([]) before subscribing"
                            .into(),
                    ));
                }
            }
        }
        {
            let mut member = self.member.lock();
            let member_id = member
                .as_ref()
                .map(|m| m.member_id.clone())
                .unwrap_or_default();
            *member = Some(group::Member {
                group_id,
                topics,
                member_id,
                generation: None,
            });
        }
        let task = self.home.handle().spawn(group::run(self.clone()));
        *self.membership.lock() = Some(task);
        Ok(())
    }

    async fn stop_task(&self) {
        let task = self.membership.lock().take();
        if let Some(t) = task {
            t.abort();
            let _ = t.await;
        }
    }

    async fn stop_membership(&self) -> Result<()> {
        self.stop_task().await;
        if self.member.lock().is_none() {
            return Ok(());
        }
        let mut result = Ok(());
        if self.config.enable_auto_commit {
            result = match self.commit_offsets(self.positions()).await {
                Err(e) if group::is_rebalance_error(&e) => {
                    tracing::warn!(error = %e, "final commit refused by the group coordinator");
                    Ok(())
                }
                other => other,
            };
        }
        let left = group::leave(self).await;
        self.member.lock().take();
        self.revoke_all();
        {
            let mut st = self.state.lock();
            self.ack_revoke(&mut st, false);
            st.events.clear();
        }
        result.and(left)
    }

    async fn close(&self, timeout: Option<Duration>) -> Result<()> {
        let already = self.state.lock().closed;
        let mut result = Ok(());
        if !already {
            let subscribed = self.member.lock().is_some();
            if subscribed || self.membership.lock().is_some() {
                // One budget for the final commit and the LeaveGroup together: a coordinator
                // that stopped answering must not hold `close` for retries × timeouts.
                let budget = timeout.unwrap_or(self.config.common.request_timeout);
                result = match tokio::time::timeout(budget, self.stop_membership()).await {
                    Ok(r) => r,
                    Err(_) => {
                        if let Some(t) = self.membership.lock().take() {
                            t.abort();
                        }
                        self.member.lock().take();
                        self.revoke_all();
                        Err(Error::TimedOut(format!(
                            "leaving the group took longer than the close timeout ({} ms)",
                            budget.as_millis()
                        )))
                    }
                };
            } else if self.config.enable_auto_commit && self.store().is_some() {
                result = self.commit_offsets(self.positions()).await;
            }
        }
        {
            let mut st = self.state.lock();
            st.closed = true;
            self.ack_revoke(&mut st, false);
        }
        // Releases the store's lock (once a commit still writing finishes), so another
        // consumer can open it right away.
        self.store.lock().take();
        self.wake.notify_one();
        self.data.notify_waiters();
        if let Some(h) = self.fetcher.lock().take() {
            h.abort();
        }
        result
    }
}

fn tps_to_vec(partitions: Option<&[TopicPartition]>) -> Option<Vec<TopicPartition>> {
    partitions.map(<[TopicPartition]>::to_vec)
}

impl Consumer {
    /// Validates `config`, opens the local offset store (when `offset.store.dir` is set; a
    /// damaged or locked store is an error), bootstraps metadata and starts the fetcher task
    /// on the client runtime. Callable from any executor.
    pub async fn new(config: ConsumerConfig) -> Result<Consumer> {
        let home = Home::new("consumer")?;
        home.clone()
            .run(async move { Consumer::start(config, home).await })
            .await
    }

    /// [`Consumer::new`] for synchronous callers (blocks the calling thread).
    pub fn new_blocking(config: ConsumerConfig) -> Result<Consumer> {
        let home = Home::new("consumer")?;
        home.clone()
            .block_on(async move { Consumer::start(config, home).await })
    }

    async fn start(config: ConsumerConfig, home: Home) -> Result<Consumer> {
        config.validate()?;
        let store = match &config.offset_store_dir {
            Some(dir) => {
                let dir = dir.clone();
                let id = config
                    .group_id
                    .clone()
                    .unwrap_or_else(|| STANDALONE_ID.to_owned());
                let s = tokio::task::spawn_blocking(move || OffsetStore::open(&dir, &id))
                    .await
                    .map_err(|e| {
                        Error::InvalidArgument(format!("offset store task failed: {e}"))
                    })??;
                Some(Arc::new(s))
            }
            None => None,
        };
        let cluster = Arc::new(Cluster::new(config.common.clone(), home.clone()));
        cluster.refresh(&[]).await?;
        let buffer_limit = (config.fetch_max_bytes as u64).min(CONSUMER_BUFFER_BYTES_MAX) as usize;
        let inner = Arc::new(Inner {
            config,
            home: home.clone(),
            cluster,
            state: Mutex::new(State::default()),
            data: Notify::new(),
            landed: Notify::new(),
            wake: Notify::new(),
            revoke_acked: Notify::new(),
            store: Mutex::new(store),
            buffer_limit,
            member: Mutex::new(None),
            fetcher: Mutex::new(None),
            membership: Mutex::new(None),
        });
        let fetcher = home.handle().spawn(fetcher_loop(inner.clone()));
        *inner.fetcher.lock() = Some(fetcher);
        Ok(Consumer { inner })
    }

    /// The configuration in use.
    pub fn config(&self) -> &ConsumerConfig {
        &self.inner.config
    }

    /// Replaces the assignment. Partitions that stay keep their position and buffered records;
    /// new ones start at their committed offset, else by `auto.offset.reset`.
    pub fn assign(&self, partitions: Vec<TopicPartition>) -> Result<()> {
        self.inner.home.check()?;
        if partitions.len() > REQUEST_PARTITIONS_MAX {
            return Err(Error::InvalidArgument(format!(
                "at most {REQUEST_PARTITIONS_MAX} partitions may be assigned"
            )));
        }
        if self.inner.member.lock().is_some() {
            return Err(Error::InvalidArgument(
                "the consumer is subscribed to a group: unsubscribe before assigning partitions"
                    .into(),
            ));
        }
        self.inner.set_assignment(partitions, &HashMap::new())
    }

    /// The assigned partitions: for a group member, those of the current generation (empty
    /// while a rebalance is in progress).
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.inner.state.lock().parts.keys().cloned().collect()
    }

    /// Returns the next records (at most `max.poll.records`), waiting up to `timeout` for
    /// some; empty when none came. Rebalance events are dropped (use
    /// [`Consumer::poll_batch`] to see them). An error a partition hit (no position with
    /// `auto.offset.reset=none`, OFFSET_OUT_OF_RANGE with it, a non-retriable fetch error, a
    /// corrupt record) is returned once, by the next poll.
    pub async fn poll(&self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        op!(async self, |inner| inner
            .poll_into(timeout, None, false)
            .await
            .map(|(records, _)| records))
    }

    /// [`Consumer::poll`] for synchronous callers.
    pub fn poll_blocking(&self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        op!(blocking self, |inner| inner
            .poll_into(timeout, None, false)
            .await
            .map(|(records, _)| records))
    }

    /// Returns records (at most `max_records`, default `max.poll.records`) or rebalance events
    /// (see the module docs), waiting up to `timeout`. Calling it again acknowledges a
    /// `Revoked` event it returned.
    pub async fn poll_batch(
        &self,
        timeout: Duration,
        max_records: Option<u32>,
    ) -> Result<PollBatch> {
        op!(async self, |inner| inner
            .poll_into(timeout, max_records, true)
            .await
            .map(|(records, events)| PollBatch { records, events }))
    }

    /// [`Consumer::poll_batch`] with the records in columns ([`RecordColumns`]): what a
    /// binding hands across its language boundary, with no object per record.
    pub async fn poll_columns(
        &self,
        timeout: Duration,
        max_records: Option<u32>,
    ) -> Result<PollColumns> {
        op!(async self, |inner| inner
            .poll_into(timeout, max_records, true)
            .await
            .map(|(records, events)| PollColumns { records, events }))
    }

    /// [`Consumer::poll_columns`] without waiting, for a binding's event-loop thread: pending
    /// rebalance events, an error, or up to `max_records` records that are buffered and already
    /// decoded (the decode-ahead task decodes them off this thread); `None` when a poll would
    /// have to wait or decode. No runtime hop: a Node consumer reading a backlog gets most of
    /// its polls this way.
    pub fn poll_columns_now(&self, max_records: Option<u32>) -> Result<Option<PollColumns>> {
        let max = self.inner.poll_max(max_records)?;
        self.inner.maybe_auto_commit();
        Ok(self
            .inner
            .poll_now(max, true, true)?
            .map(|(records, events)| PollColumns { records, events }))
    }

    /// [`Consumer::poll_batch`] for synchronous callers.
    pub fn poll_batch_blocking(
        &self,
        timeout: Duration,
        max_records: Option<u32>,
    ) -> Result<PollBatch> {
        op!(blocking self, |inner| inner
            .poll_into(timeout, max_records, true)
            .await
            .map(|(records, events)| PollBatch { records, events }))
    }

    /// Moves a partition's position: the next `poll` returns records from `offset` on.
    pub fn seek(&self, tp: &TopicPartition, offset: Offset) -> Result<()> {
        self.inner.home.check()?;
        let offset = checked_offset(offset)?;
        self.inner.state.lock().restart(tp, Some(offset))?;
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Moves the given partitions (`None`: every assigned one) to their first offset.
    pub async fn seek_to_beginning(&self, partitions: Option<&[TopicPartition]>) -> Result<()> {
        let ps = tps_to_vec(partitions);
        op!(async self, |inner| inner.seek_to(ps, OffsetSpec::Earliest).await)
    }

    /// [`Consumer::seek_to_beginning`] for synchronous callers.
    pub fn seek_to_beginning_blocking(&self, partitions: Option<&[TopicPartition]>) -> Result<()> {
        let ps = tps_to_vec(partitions);
        op!(blocking self, |inner| inner.seek_to(ps, OffsetSpec::Earliest).await)
    }

    /// Moves the given partitions (`None`: every assigned one) to their end (high watermark).
    pub async fn seek_to_end(&self, partitions: Option<&[TopicPartition]>) -> Result<()> {
        let ps = tps_to_vec(partitions);
        op!(async self, |inner| inner.seek_to(ps, OffsetSpec::Latest).await)
    }

    /// [`Consumer::seek_to_end`] for synchronous callers.
    pub fn seek_to_end_blocking(&self, partitions: Option<&[TopicPartition]>) -> Result<()> {
        let ps = tps_to_vec(partitions);
        op!(blocking self, |inner| inner.seek_to(ps, OffsetSpec::Latest).await)
    }

    /// Moves the given partitions (`None`: every assigned one) to the first record whose
    /// timestamp is ≥ `timestamp_ms`; to the end where there is none.
    pub async fn seek_to_timestamp(
        &self,
        partitions: Option<&[TopicPartition]>,
        timestamp_ms: i64,
    ) -> Result<()> {
        let spec = timestamp_spec(timestamp_ms)?;
        let ps = tps_to_vec(partitions);
        op!(async self, |inner| inner.seek_to(ps, spec).await)
    }

    /// [`Consumer::seek_to_timestamp`] for synchronous callers.
    pub fn seek_to_timestamp_blocking(
        &self,
        partitions: Option<&[TopicPartition]>,
        timestamp_ms: i64,
    ) -> Result<()> {
        let spec = timestamp_spec(timestamp_ms)?;
        let ps = tps_to_vec(partitions);
        op!(blocking self, |inner| inner.seek_to(ps, spec).await)
    }

    /// Stops fetching the given partitions and returning their records until
    /// [`Consumer::resume`]; positions are kept (buffered records are dropped and fetched
    /// again after resuming). Pausing twice is harmless.
    pub fn pause(&self, partitions: &[TopicPartition]) -> Result<()> {
        self.inner.home.check()?;
        let mut st = self.inner.state.lock();
        if let Some(tp) = partitions.iter().find(|tp| !st.parts.contains_key(*tp)) {
            return Err(not_assigned(tp));
        }
        for tp in partitions {
            if st.parts[tp].paused {
                continue;
            }
            let position = st.parts[tp].position;
            st.restart(tp, position)?;
            st.parts.get_mut(tp).expect("checked").paused = true;
        }
        Ok(())
    }

    /// Fetches and returns the given paused partitions again.
    pub fn resume(&self, partitions: &[TopicPartition]) -> Result<()> {
        self.inner.home.check()?;
        let mut st = self.inner.state.lock();
        if let Some(tp) = partitions.iter().find(|tp| !st.parts.contains_key(*tp)) {
            return Err(not_assigned(tp));
        }
        for tp in partitions {
            st.parts.get_mut(tp).expect("checked").paused = false;
        }
        drop(st);
        self.inner.wake.notify_one();
        Ok(())
    }

    /// The paused partitions.
    pub fn paused(&self) -> Vec<TopicPartition> {
        let st = self.inner.state.lock();
        st.parts
            .iter()
            .filter(|(_, p)| p.paused)
            .map(|(tp, _)| tp.clone())
            .collect()
    }

    /// The offset of the next record `poll` returns for `tp`, resolving it first (committed
    /// offset, else `auto.offset.reset`) when the consumer has none yet.
    pub async fn position(&self, tp: &TopicPartition) -> Result<Offset> {
        let tp = tp.clone();
        op!(async self, |inner| inner.position(&tp).await)
    }

    /// [`Consumer::position`] for synchronous callers.
    pub fn position_blocking(&self, tp: &TopicPartition) -> Result<Offset> {
        let tp = tp.clone();
        op!(blocking self, |inner| inner.position(&tp).await)
    }

    /// The position committed in the local store for `tp` (`None` without one or without a
    /// store).
    pub fn committed(&self, tp: &TopicPartition) -> Option<Offset> {
        self.inner.stored(tp).map(Offset)
    }

    /// Commits the current position of every assigned partition that has one (during a
    /// revoke: the revoked positions too).
    pub async fn commit(&self) -> Result<()> {
        op!(async self, |inner| inner.commit_offsets(inner.positions()).await)
    }

    /// [`Consumer::commit`] for synchronous callers.
    pub fn commit_blocking(&self) -> Result<()> {
        op!(blocking self, |inner| inner.commit_offsets(inner.positions()).await)
    }

    /// Commits the given positions (the offset of the next record to read, per partition): for
    /// a group member to the broker (with its member id and generation; during a rebalance this
    /// fails with the retriable REBALANCE_IN_PROGRESS) and then to the local store when
    /// `offset.store.dir` is set; for a standalone consumer to the local store, which must then
    /// be configured.
    pub async fn commit_offsets(
        &self,
        offsets: impl IntoIterator<Item = (TopicPartition, Offset)>,
    ) -> Result<()> {
        let offsets = checked_offsets(offsets)?;
        op!(async self, |inner| inner.commit_offsets(offsets).await)
    }

    /// [`Consumer::commit_offsets`] for synchronous callers.
    pub fn commit_offsets_blocking(
        &self,
        offsets: impl IntoIterator<Item = (TopicPartition, Offset)>,
    ) -> Result<()> {
        let offsets = checked_offsets(offsets)?;
        op!(blocking self, |inner| inner.commit_offsets(offsets).await)
    }

    /// Joins the consumer group `group.id` with a subscription to `topics` (replacing an
    /// earlier subscription) and returns once the membership task runs; the assignment arrives
    /// in the background (see `consumer/group.rs`) as an `Assigned` event, and `poll` returns
    /// records of the assigned partitions as soon as the group's rebalance completes. Fails
    /// with [`Error::InvalidConfig`] without `group.id`, [`Error::InvalidArgument`] for no
    /// topics, a bad topic name, or a consumer with a manual `assign`ment.
    pub async fn subscribe<S: Into<String>>(
        &self,
        topics: impl IntoIterator<Item = S>,
    ) -> Result<()> {
        let topics: Vec<String> = topics.into_iter().map(Into::into).collect();
        op!(async self, |inner| inner.subscribe(topics).await)
    }

    /// [`Consumer::subscribe`] for synchronous callers.
    pub fn subscribe_blocking<S: Into<String>>(
        &self,
        topics: impl IntoIterator<Item = S>,
    ) -> Result<()> {
        let topics: Vec<String> = topics.into_iter().map(Into::into).collect();
        op!(blocking self, |inner| inner.subscribe(topics).await)
    }

    /// The topics of the current subscription (empty when not subscribed).
    pub fn subscription(&self) -> Vec<String> {
        self.inner
            .member
            .lock()
            .as_ref()
            .map(|m| m.topics.clone())
            .unwrap_or_default()
    }

    /// The member id the group coordinator gave this consumer and its generation, once joined.
    pub fn group_membership(&self) -> Option<GroupMembership> {
        let m = self.inner.member.lock();
        let m = m.as_ref()?;
        Some(GroupMembership {
            member_id: m.member_id.clone(),
            generation: m.generation?,
        })
    }

    /// Leaves the group: commits the positions (with `enable.auto.commit`), sends LeaveGroup so
    /// the group rebalances at once, and drops the assignment. A no-op when not subscribed.
    pub async fn unsubscribe(&self) -> Result<()> {
        op!(async self, |inner| inner.stop_membership().await)
    }

    /// [`Consumer::unsubscribe`] for synchronous callers.
    pub fn unsubscribe_blocking(&self) -> Result<()> {
        op!(blocking self, |inner| inner.stop_membership().await)
    }

    /// Commits (with `enable.auto.commit` and a store or a group), leaves the group when
    /// subscribed, stops the fetcher and releases the local offset store. The final commit and
    /// the LeaveGroup share one budget, `timeout` (`None`: `request.timeout.ms`); the group
    /// task is aborted, never awaited on the network. Idempotent; later calls other than
    /// `close` fail with CLOSED.
    pub async fn close(&self, timeout: Option<Duration>) -> Result<()> {
        op!(async self, |inner| inner.close(timeout).await)
    }

    /// [`Consumer::close`] for synchronous callers.
    pub fn close_blocking(&self, timeout: Option<Duration>) -> Result<()> {
        op!(blocking self, |inner| inner.close(timeout).await)
    }
}

fn timestamp_spec(timestamp_ms: i64) -> Result<OffsetSpec> {
    if timestamp_ms < 0 {
        return Err(Error::InvalidArgument(format!(
            "timestamp {timestamp_ms} is negative"
        )));
    }
    Ok(OffsetSpec::Timestamp(timestamp_ms))
}

fn checked_offsets(
    offsets: impl IntoIterator<Item = (TopicPartition, Offset)>,
) -> Result<Vec<(TopicPartition, u64)>> {
    offsets
        .into_iter()
        .map(|(tp, o)| Ok((tp, checked_offset(o)?)))
        .collect()
}

impl Drop for Consumer {
    fn drop(&mut self) {
        // Dropped without `close`: the membership stops heartbeating (the coordinator removes
        // it after `session.timeout.ms`, as for a crashed process).
        if let Some(h) = self.inner.membership.lock().take() {
            h.abort();
        }
        if let Some(h) = self.inner.fetcher.lock().take() {
            h.abort();
        }
    }
}

/// Moves up to `max` records (counting those already in `out`) from the buffer to `out`, in
/// order, advancing positions and decoding sets as it reaches them (unless `decoded_only`: then
/// it stops at a set not decoded yet). It also stops at a set the decode-ahead task holds.
fn drain_records(st: &mut State, max: usize, out: &mut impl RecordSink, decoded_only: bool) {
    let State {
        parts,
        buffer,
        buffered_bytes,
        next_epoch,
        ..
    } = st;
    while out.len() < max {
        let Some(chunk) = buffer.front_mut() else {
            break;
        };
        if chunk.decoding || (decoded_only && chunk.pending.is_some()) {
            // The decode-ahead task has it (its end wakes the poll), or the caller does not
            // decode.
            break;
        }
        let live = parts.get(&chunk.tp).filter(|p| p.epoch == chunk.epoch);
        let Some(_) = live else {
            *buffered_bytes -= chunk.bytes;
            buffer.pop_front();
            continue;
        };
        let p = parts.get_mut(&chunk.tp).expect("checked");
        if let Some(pending) = chunk.pending.take() {
            match DecodedSet::decode(pending.set, pending.from, pending.crcs) {
                Ok(decoded) => chunk.decoded = decoded,
                Err(e) => {
                    // The partition stops before the damaged set: its later chunks become
                    // stale (no record past the damage is returned, so no gap), poll reports
                    // the error, and fetching starts again at the position.
                    *next_epoch += 1;
                    p.renew(*next_epoch);
                    p.fetch_offset = p.position;
                    p.busy = false;
                    p.error = Some(e);
                    *buffered_bytes -= chunk.bytes;
                    buffer.pop_front();
                    continue;
                }
            }
        }
        let set = &mut chunk.decoded;
        // The fetcher only buffers records at or after the fetch offset, in order; a record
        // below the position cannot be here, but dropping one keeps "no repeat" true.
        while let Some(offset) = set.next_offset()
            && p.position.is_some_and(|pos| offset < pos)
        {
            set.advance(1);
        }
        let n = set.remaining().min(max - out.len());
        if n > 0 {
            out.extend(&chunk.topic, chunk.tp.partition, set, n);
            set.advance(n);
            p.position = set.last_drained().map(|last| last + 1);
        }
        if set.remaining() == 0 {
            *buffered_bytes -= chunk.bytes;
            buffer.pop_front();
        }
    }
}

/// The committed offset (unless `by_policy`), else the `auto.offset.reset` answer.
async fn resolve_position(inner: &Inner, tp: &TopicPartition, by_policy: bool) -> Result<u64> {
    if !by_policy && let Some(o) = inner.stored(tp) {
        return Ok(o);
    }
    let spec = match inner.config.auto_offset_reset {
        OffsetReset::Earliest => OffsetSpec::Earliest,
        OffsetReset::Latest => OffsetSpec::Latest,
        OffsetReset::Error => {
            return Err(Error::Remote {
                code: ErrorCode::OffsetOutOfRange,
                message: format!(
                    "{}-{} has no {} position and auto.offset.reset is none: seek first",
                    tp.topic,
                    tp.partition,
                    if by_policy { "valid" } else { "committed" }
                ),
            });
        }
    };
    let r = inner
        .cluster
        .list_offsets(&[(tp.clone(), spec)])
        .await
        .pop()
        .expect("one answer per request");
    Ok(r?.offset.map_or(0, |o| o.0))
}

async fn fetcher_loop(inner: Arc<Inner>) {
    let backoff = inner
        .config
        .common
        .retry_backoff
        .max(Duration::from_millis(1));
    loop {
        let now = Instant::now();
        if inner.cluster.is_stale() {
            // At most one at a time, spaced out inside the cluster.
            let wake = inner.clone();
            inner.cluster.spawn_refresh(move || wake.wake.notify_one());
        }
        let mut next_wake: Option<Instant> = None;
        let mut resolves = Vec::new();
        let mut by_leader: HashMap<String, Vec<FetchPart>> = HashMap::new();
        {
            let mut st = inner.state.lock();
            if st.closed {
                return;
            }
            let room = st.buffered_bytes < inner.buffer_limit;
            for (tp, p) in st.parts.iter_mut() {
                if p.busy || p.error.is_some() || p.paused {
                    continue;
                }
                if let Some(t) = p.retry_at {
                    if t > now {
                        next_wake = Some(next_wake.map_or(t, |w| w.min(t)));
                        continue;
                    }
                    p.retry_at = None;
                }
                match p.fetch_offset {
                    None => {
                        p.busy = true;
                        resolves.push((tp.clone(), p.epoch, p.reset_by_policy));
                    }
                    Some(off) if room => match inner.cluster.cached_leader(tp) {
                        Some((address, _)) => {
                            p.busy = true;
                            p.issued += 1;
                            by_leader.entry(address).or_default().push(FetchPart {
                                tp: tp.clone(),
                                offset: off,
                                epoch: p.epoch,
                                seq: p.issued,
                            });
                        }
                        None => {
                            inner.cluster.request_refresh();
                            p.retry_at = Some(now + backoff);
                            next_wake =
                                Some(next_wake.map_or(now + backoff, |w| w.min(now + backoff)));
                        }
                    },
                    Some(_) => {}
                }
            }
        }
        for (tp, epoch, by_policy) in resolves {
            let inner = inner.clone();
            tokio::spawn(async move {
                let r = resolve_position(&inner, &tp, by_policy).await;
                let mut st = inner.state.lock();
                if let Some(p) = st.parts.get_mut(&tp).filter(|p| p.epoch == epoch) {
                    p.busy = false;
                    match r {
                        // `position()` may have resolved it meanwhile; the first answer stands
                        // (a second "latest" lookup could differ and skip records).
                        Ok(_) if p.position.is_some() => {}
                        Ok(o) => {
                            p.position = Some(o);
                            p.fetch_offset = Some(o);
                            p.reset_by_policy = false;
                        }
                        Err(e) if e.code().is_retriable() || is_connection_error(&e) => {
                            p.retry_at = Some(Instant::now() + inner.config.common.retry_backoff);
                        }
                        Err(e) => p.error = Some(e),
                    }
                }
                drop(st);
                inner.data.notify_waiters();
                inner.wake.notify_one();
            });
        }
        for (address, parts) in by_leader {
            tokio::spawn(fetch(inner.clone(), address, parts));
        }
        let idle = Duration::from_millis(200).min(inner.config.common.metadata_max_age);
        let until = next_wake.unwrap_or(now + idle).max(now);
        tokio::select! {
            _ = inner.wake.notified() => {}
            _ = tokio::time::sleep_until(until.into()) => {}
        }
    }
}

/// One partition of a fetch: where it starts, under which epoch, and which fetch of that epoch
/// it is ([`PartState::issued`]).
#[derive(Debug)]
struct FetchPart {
    tp: TopicPartition,
    offset: u64,
    epoch: u64,
    seq: u64,
}

/// One Fetch request to `address`, its answer applied to the partitions' state.
///
/// **Pipelining.** The answer's first frame says where each partition's next fetch starts
/// (`next_offsets`); [`release_early`] then lets the fetcher send that fetch while this
/// answer's sets are still arriving, so the broker reads the next range while this one is on
/// the wire. So that answers are applied in the order their fetches were sent, an answer waits
/// for the earlier fetches of its partitions to land first ([`wait_turn`]), and a fetch is
/// released early only when none is outstanding before it: at most two per partition. When the
/// answer does not bear its early offsets out (an error, a set that ends elsewhere), the
/// partition moves to a new epoch, which drops the later fetch's answer, and starts again from
/// what this answer really gave.
async fn fetch(inner: Arc<Inner>, address: String, parts: Vec<FetchPart>) {
    let cfg = &inner.config;
    let max_wait = cfg.fetch_max_wait;
    let request = v1::FetchRequest {
        max_wait_ms: max_wait.as_millis() as u32,
        min_bytes: cfg.fetch_min_bytes,
        max_bytes: cfg.fetch_max_bytes,
        replica_id: None,
        partitions: parts
            .iter()
            .map(|f| v1::FetchPartition {
                topic: f.tp.topic.clone(),
                partition: f.tp.partition,
                fetch_offset: f.offset as i64,
                max_bytes: cfg.max_partition_fetch_bytes,
                leader_epoch: None,
            })
            .collect(),
    };
    // Decoded from the HTTP/2 frames without tonic's copy (`fetch_call`).
    let result = super::fetch_call::fetch(&inner.cluster, &address, request, max_wait, |next| {
        release_early(&inner, &parts, next)
    })
    .await;
    let now = Instant::now();
    // An answer that does not have one result per partition asked cannot be matched up: it
    // is treated like a failed request (retried), never zipped short.
    let result = result.and_then(|resp| {
        if resp.results.len() == parts.len() {
            Ok(resp)
        } else {
            Err(Error::Network(format!(
                "broker {address} answered {} fetch results for {} partitions",
                resp.results.len(),
                parts.len()
            )))
        }
    });
    wait_turn(&inner, &parts).await;
    land(&inner, &parts, result, now);
}

/// Applies a fetch's answer (or its failure) to the partitions it asked for, in its turn
/// ([`wait_turn`]), and wakes whoever waits on it.
fn land(inner: &Arc<Inner>, parts: &[FetchPart], result: Result<v1::FetchResponse>, now: Instant) {
    let cfg = &inner.config;
    let backoff = cfg.common.retry_backoff;
    let mut st = inner.state.lock();
    match result {
        Ok(resp) => {
            let early = resp.next_offsets;
            for (i, (f, r)) in parts.iter().zip(resp.results).enumerate() {
                let topic = st
                    .topics
                    .get(&f.tp.topic)
                    .cloned()
                    .unwrap_or_else(|| Arc::from(f.tp.topic.as_str()));
                let State {
                    parts: states,
                    buffer,
                    buffered_bytes,
                    next_epoch,
                    next_chunk_id,
                    ..
                } = &mut *st;
                let Some(p) = states.get_mut(&f.tp).filter(|p| p.epoch == f.epoch) else {
                    continue;
                };
                p.landed = f.seq;
                let code = code_from_proto(r.error_code);
                let set = r.message_set;
                // Only the framing here; `drain_records` decodes (see `Chunk`).
                let last = if code == ErrorCode::None {
                    last_offset(&set).map(|l| l.filter(|&l| l >= f.offset))
                } else {
                    Ok(None)
                };
                // The next fetch was sent from `early[i]`: it stands only if this answer
                // ends just before it.
                if p.issued > f.seq {
                    let sent_from = early.get(i).copied().unwrap_or(-1);
                    let ends_at = match &last {
                        Ok(Some(l)) => *l as i64 + 1,
                        _ => -2,
                    };
                    if ends_at != sent_from {
                        *next_epoch += 1;
                        p.renew(*next_epoch);
                        p.fetch_offset = Some(f.offset);
                    }
                }
                // No later fetch was sent (or it was just voided): this answer sets where the
                // next one starts (below, on success; else here, where this one started).
                let owns_next = p.issued <= f.seq;
                if owns_next {
                    p.busy = false;
                    p.fetch_offset = Some(f.offset);
                }
                match code {
                    ErrorCode::None => match last {
                        Ok(Some(last)) => {
                            if owns_next {
                                p.fetch_offset = Some(last + 1);
                            }
                            *buffered_bytes += set.len();
                            *next_chunk_id += 1;
                            buffer.push_back(Chunk {
                                id: *next_chunk_id,
                                decoding: false,
                                decode_failed: false,
                                tp: f.tp.clone(),
                                topic,
                                epoch: p.epoch,
                                bytes: set.len(),
                                pending: Some(PendingSet {
                                    set,
                                    from: f.offset,
                                    crcs: if cfg.check_crcs {
                                        Crcs::Check
                                    } else {
                                        Crcs::Skip
                                    },
                                }),
                                decoded: DecodedSet::default(),
                            });
                        }
                        Ok(None) => {}
                        Err(e) => p.error = Some(e),
                    },
                    ErrorCode::OffsetOutOfRange => match cfg.auto_offset_reset {
                        OffsetReset::Error => {
                            p.error = Some(partition_error(r.error_code, &r.error_message, &f.tp))
                        }
                        OffsetReset::Earliest | OffsetReset::Latest => {
                            tracing::info!(topic = %f.tp.topic, partition = f.tp.partition, offset = f.offset, "offset out of range; applying auto.offset.reset");
                            *next_epoch += 1;
                            p.renew(*next_epoch);
                            p.position = None;
                            p.fetch_offset = None;
                            p.reset_by_policy = true;
                        }
                    },
                    c if c.is_retriable() => {
                        if needs_metadata_refresh(c) {
                            inner.cluster.request_refresh();
                        }
                        p.retry_at = Some(now + backoff);
                    }
                    _ => p.error = Some(partition_error(r.error_code, &r.error_message, &f.tp)),
                }
            }
        }
        Err(e) => {
            let retriable = is_connection_error(&e) || e.code().is_retriable();
            if retriable {
                inner.cluster.request_refresh();
            }
            let State {
                parts: states,
                next_epoch,
                ..
            } = &mut *st;
            for f in parts {
                if let Some(p) = states.get_mut(&f.tp).filter(|p| p.epoch == f.epoch) {
                    p.landed = f.seq;
                    if p.issued > f.seq {
                        // The fetch sent from this answer's early offsets is void.
                        *next_epoch += 1;
                        p.renew(*next_epoch);
                    }
                    // Fetching starts again where this fetch started, also when its early
                    // offsets had moved the partition on without a fetch sent from there yet.
                    p.fetch_offset = Some(f.offset);
                    p.busy = false;
                    if retriable {
                        p.retry_at = Some(now + backoff);
                    } else {
                        p.error = Some(clone_error(&e));
                    }
                }
            }
        }
    }
    // Sets that arrived while the application was handling a poll's records are decoded now,
    // not by the next poll (when fewer than a poll's worth are decoded ahead).
    let want = st.decode_want;
    let decode = (want > 0)
        .then(|| inner.next_to_decode(&mut st, want))
        .flatten();
    drop(st);
    if let Some(job) = decode {
        inner
            .home
            .handle()
            .spawn(inner.clone().decode_ahead(job, want));
    }
    inner.landed.notify_waiters();
    inner.data.notify_waiters();
    inner.wake.notify_one();
}

/// Called with a fetch answer's `next_offsets` as soon as they arrive: a partition whose fetch
/// this is (the latest sent, with none outstanding before it) and whose set has records gets
/// its next fetch offset now, and the fetcher may send that fetch at once.
fn release_early(inner: &Inner, parts: &[FetchPart], next: &[i64]) {
    if next.len() != parts.len() {
        return;
    }
    let mut released = false;
    {
        let mut st = inner.state.lock();
        for (f, &n) in parts.iter().zip(next) {
            let Some(p) = st.parts.get_mut(&f.tp).filter(|p| p.epoch == f.epoch) else {
                continue;
            };
            if n > f.offset as i64 && p.busy && p.issued == f.seq && p.landed + 1 == f.seq {
                p.fetch_offset = Some(n as u64);
                p.busy = false;
                released = true;
            }
        }
    }
    if released {
        inner.wake.notify_one();
    }
}

/// Waits until every earlier fetch of these partitions (same epoch) has landed.
async fn wait_turn(inner: &Inner, parts: &[FetchPart]) {
    loop {
        let landed = inner.landed.notified();
        let mut landed = std::pin::pin!(landed);
        landed.as_mut().enable();
        let ready = {
            let st = inner.state.lock();
            parts.iter().all(|f| {
                st.parts
                    .get(&f.tp)
                    .filter(|p| p.epoch == f.epoch)
                    .is_none_or(|p| p.landed + 1 >= f.seq)
            })
        };
        if ready {
            return;
        }
        landed.await;
    }
}

/// The offset of the last record of a fetched set from its framing alone (a compressed
/// wrapper carries its last inner offset, a magic 2 batch its last offset delta); `None` when
/// it is empty. Framing errors are CORRUPT_MESSAGE; CRCs are checked later, by
/// [`DecodedSet::decode`].
fn last_offset(set: &[u8]) -> Result<Option<u64>> {
    Ok(crate::format::last_offset_of(set)?.map(|o| o.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{AppendOptions, Compression, MAGIC_V1, MessageSetBuilder, prepare_append};
    use crate::types::TimestampMs;

    /// A set as the broker stores it: built by a producer, offsets assigned from `base`.
    fn stored_set(codec: Compression, base: u64, n: u64) -> Bytes {
        let mut b = MessageSetBuilder::new(MAGIC_V1, codec);
        for i in 0..n {
            b.push(
                TimestampMs(1000 + i as i64),
                Some(format!("k{i}").as_bytes()),
                Some(format!("v{}", base + i).as_bytes()),
            );
        }
        as_stored(b.finish().unwrap(), base)
    }

    /// A producer's set with offsets assigned from `base`, as the broker stores it.
    fn as_stored(mut set: Vec<u8>, base: u64) -> Bytes {
        prepare_append(
            &mut set,
            Offset(base),
            &AppendOptions {
                max_message_bytes: crate::limits::MESSAGE_BYTES_MAX,
                timestamp_type: TimestampType::CreateTime,
                now: TimestampMs(0),
                leader_epoch: 0,
            },
            &mut Vec::new(),
        )
        .unwrap();
        Bytes::from(set)
    }

    /// `set` decoded from `from` and drained whole as `ConsumerRecord`s.
    fn decode(
        topic: &Arc<str>,
        partition: u32,
        set: &Bytes,
        from: u64,
    ) -> Result<Vec<ConsumerRecord>> {
        let d = DecodedSet::decode(set.clone(), from, Crcs::Check)?;
        let mut out = Vec::new();
        RecordSink::extend(&mut out, topic, partition, &d, d.remaining());
        Ok(out)
    }

    /// A state with `tp` alone: read from 0, fetched up to `fetch_offset`, epoch 1.
    fn one_partition(tp: &TopicPartition, fetch_offset: u64) -> State {
        let mut st = State::default();
        st.parts.insert(
            tp.clone(),
            PartState {
                position: Some(0),
                fetch_offset: Some(fetch_offset),
                epoch: 1,
                ..PartState::default()
            },
        );
        st
    }

    fn drain(st: &mut State, max: usize) -> Vec<ConsumerRecord> {
        let mut out = Vec::new();
        drain_records(st, max, &mut out, false);
        out
    }

    /// A buffered chunk of `set`, decoded (`pending: false`) or not.
    fn chunk(tp: &TopicPartition, epoch: u64, set: Bytes, from: u64, pending: bool) -> Chunk {
        let bytes = set.len();
        let (pending, decoded) = if pending {
            (
                Some(PendingSet {
                    set,
                    from,
                    crcs: Crcs::Check,
                }),
                DecodedSet::default(),
            )
        } else {
            (None, DecodedSet::decode(set, from, Crcs::Check).unwrap())
        };
        Chunk {
            tp: tp.clone(),
            topic: Arc::from(tp.topic.as_str()),
            epoch,
            pending,
            decoded,
            bytes,
            id: 0,
            decoding: false,
            decode_failed: false,
        }
    }

    #[test]
    fn records_below_the_fetch_offset_in_a_wrapper_are_skipped() {
        let topic: Arc<str> = Arc::from("t");
        for codec in Compression::ALL {
            let set = stored_set(codec, 100, 10);
            let got = decode(&topic, 0, &set, 104).unwrap();
            let offsets: Vec<u64> = got.iter().map(|r| r.offset.0).collect();
            assert_eq!(offsets, (104..110).collect::<Vec<_>>(), "{codec:?}");
            assert_eq!(got[0].value.as_deref(), Some(&b"v104"[..]));
            assert_eq!(got[0].key.as_deref(), Some(&b"k4"[..]));
        }
    }

    #[test]
    fn magic_2_records_come_with_their_headers_and_skip_below_the_fetch_offset() {
        use crate::format::{Header, RecordBatchBuilder};
        let topic: Arc<str> = Arc::from("t");
        for codec in Compression::ALL {
            let mut b = RecordBatchBuilder::new(codec);
            for i in 0..4u8 {
                b.push(
                    TimestampMs(1000 + i64::from(i)),
                    None,
                    Some(&[i]),
                    [
                        Header {
                            key: "i",
                            value: Some(&[i]),
                        },
                        Header {
                            key: "null",
                            value: None,
                        },
                    ],
                );
            }
            let set = as_stored(b.finish().unwrap(), 50);
            let got = decode(&topic, 0, &set, 52).unwrap();
            let got: Vec<_> = got
                .iter()
                .map(|r| (r.offset.0, r.timestamp, r.headers.clone()))
                .collect();
            let h = |i: u8| {
                vec![
                    RecordHeader {
                        key: "i".into(),
                        value: Some(Bytes::copy_from_slice(&[i])),
                    },
                    RecordHeader {
                        key: "null".into(),
                        value: None,
                    },
                ]
            };
            assert_eq!(got, [(52, 1002, h(2)), (53, 1003, h(3))], "{codec:?}");
        }
        // Magic 1 records have no headers.
        let got = decode(&topic, 0, &stored_set(Compression::None, 0, 2), 0).unwrap();
        assert!(got.iter().all(|r| r.headers.is_empty()));
    }

    /// The columns `records` would give, built record by record (the reference for the
    /// columnar drain), without the value views (see [`values_of`]).
    fn columns_of(records: &[ConsumerRecord]) -> RecordColumns {
        let mut c = RecordColumns::default();
        let push = |data: &mut Vec<u8>, lengths: &mut Vec<i32>, b: &Option<Bytes>| match b {
            Some(b) => {
                data.extend_from_slice(b);
                lengths.push(b.len() as i32);
            }
            None => lengths.push(-1),
        };
        for r in records {
            let t = match c.topics.iter().position(|t| *t == r.topic) {
                Some(t) => t,
                None => {
                    c.topics.push(r.topic.clone());
                    c.topics.len() - 1
                }
            };
            c.topic_index.push(t as u32);
            c.partitions.push(r.partition);
            c.offsets.push(r.offset.0);
            c.timestamps.push(r.timestamp);
            c.timestamp_types.push(r.timestamp_type);
            push(&mut c.keys, &mut c.key_lengths, &r.key);
            c.value_lengths
                .push(r.value.as_ref().map_or(-1, |v| v.len() as i32));
        }
        if records.iter().any(|r| !r.headers.is_empty()) {
            for r in records {
                c.header_counts.push(r.headers.len() as u32);
                for h in &r.headers {
                    c.header_keys.push(h.key.clone());
                    push(&mut c.header_values, &mut c.header_value_lengths, &h.value);
                }
            }
        }
        c
    }

    /// Takes the value views out of `c`: each record's value, and the buffers' addresses.
    fn values_of(c: &mut RecordColumns) -> (Vec<Option<Bytes>>, Vec<usize>) {
        let values = (0..c.len())
            .map(|i| match c.value_lengths[i] {
                -1 => None,
                0 => Some(Bytes::new()),
                len => {
                    let b = &c.value_buffers[c.value_buffer[i] as usize];
                    let start = c.value_starts[i] as usize;
                    Some(b.slice(start..start + len as usize))
                }
            })
            .collect();
        let addresses = c
            .value_buffers
            .iter()
            .map(|b| b.as_ptr() as usize)
            .collect();
        c.value_buffers.clear();
        c.value_buffer.clear();
        c.value_starts.clear();
        (values, addresses)
    }

    #[test]
    fn columns_hold_what_records_hold_across_sets_topics_codecs_and_headers() {
        use crate::format::{Header, RecordBatchBuilder};
        let with_headers = |codec, base: u64, n: u8| {
            let mut b = RecordBatchBuilder::new(codec);
            for i in 0..n {
                let key = [b'k', i];
                let header_value = [i, 0];
                let seven = [i; 7];
                b.push(
                    TimestampMs(2000 + i64::from(i)),
                    (i % 2 == 0).then_some(&key[..]),
                    // Null, empty and 7-byte values.
                    (i % 3 != 0).then_some(if i == 4 { &[][..] } else { &seven[..] }),
                    (0..i % 3).map(|j| Header {
                        key: if j == 0 { "a" } else { "b" },
                        value: (j == 0).then_some(&header_value[..]),
                    }),
                );
            }
            as_stored(b.finish().unwrap(), base)
        };
        for codec in Compression::ALL {
            // Chunks of two topics, with and without headers, drained in polls of 1 to 100
            // records: polls end inside sets and span several.
            let plans: Vec<(TopicPartition, Bytes)> = vec![
                (TopicPartition::new("a", 0), stored_set(codec, 0, 10)),
                (TopicPartition::new("b", 3), with_headers(codec, 20, 9)),
                (TopicPartition::new("a", 0), stored_set(codec, 10, 4)),
                (TopicPartition::new("a", 1), with_headers(codec, 0, 5)),
            ];
            let state = || {
                let mut st = State::default();
                for (tp, set) in &plans {
                    let from = if tp.topic == "b" { 22 } else { 0 };
                    st.parts.entry(tp.clone()).or_insert(PartState {
                        position: Some(from),
                        epoch: 1,
                        ..PartState::default()
                    });
                    st.buffered_bytes += set.len();
                    st.buffer.push_back(chunk(tp, 1, set.clone(), from, true));
                }
                st
            };
            for max in [1, 2, 7, 100] {
                let (mut by_records, mut by_columns) = (state(), state());
                let mut total = 0;
                // Every value buffer handed out starts at its own address (they never overlap)
                // while the values handed out live, as a JS runtime holds them (once they are
                // dropped, the allocator may give the address to a later buffer).
                let mut addresses = std::collections::HashSet::new();
                let mut alive = Vec::new();
                loop {
                    let records = drain(&mut by_records, max);
                    let mut columns = RecordColumns::default();
                    drain_records(&mut by_columns, max, &mut columns, false);
                    let (values, buffers) = values_of(&mut columns);
                    assert_eq!(columns, columns_of(&records), "{codec:?} {max}");
                    let want: Vec<_> = records.iter().map(|r| r.value.clone()).collect();
                    assert_eq!(values, want, "{codec:?} {max}");
                    alive.push(values);
                    for a in buffers {
                        assert!(
                            addresses.insert(a),
                            "{codec:?} {max}: a buffer handed out twice"
                        );
                    }
                    if records.is_empty() {
                        break;
                    }
                    total += records.len();
                }
                assert_eq!(total, 10 + 7 + 4 + 5, "{codec:?} {max}");
            }
        }
    }

    #[test]
    fn drained_records_advance_the_position_and_stale_epochs_are_dropped() {
        let tp = TopicPartition::new("t", 0);
        let mut st = one_partition(&tp, 10);
        let set = stored_set(Compression::None, 0, 10);
        st.buffer.push_back(Chunk {
            bytes: 5,
            ..chunk(&tp, 0, set.clone(), 0, false)
        });
        st.buffer.push_back(Chunk {
            bytes: 7,
            ..chunk(&tp, 1, set, 0, false)
        });
        st.buffered_bytes = 12;
        let got = drain(&mut st, 4);
        assert_eq!(
            got.iter().map(|r| r.offset.0).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert_eq!(st.parts[&tp].position, Some(4));
        assert_eq!(st.buffered_bytes, 7, "the stale chunk was dropped");
        let got = drain(&mut st, 100);
        assert_eq!(got.len(), 6);
        assert_eq!(st.parts[&tp].position, Some(10));
        assert_eq!(st.buffered_bytes, 0);
    }

    #[test]
    fn a_set_is_decoded_by_the_poll_that_reaches_it_and_damage_stops_the_partition_there() {
        let tp = TopicPartition::new("t", 0);
        let mut st = one_partition(&tp, 15);
        st.next_epoch = 1; // epoch 1 came from the counter
        let mut damaged = stored_set(Compression::None, 5, 5).to_vec();
        let last = damaged.len() - 1;
        damaged[last] ^= 0x01; // the last value byte: the framing holds, the CRC does not
        let damaged = Bytes::from(damaged);
        assert_eq!(last_offset(&damaged).unwrap(), Some(9), "framing only");
        for (base, set) in [
            (0, stored_set(Compression::None, 0, 5)),
            (5, damaged),
            (10, stored_set(Compression::None, 10, 5)),
        ] {
            st.buffered_bytes += set.len();
            st.buffer.push_back(chunk(&tp, 1, set, base, true));
        }
        let got = drain(&mut st, 100);
        assert_eq!(
            got.iter().map(|r| r.offset.0).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4],
            "nothing at or past the damage"
        );
        let p = &st.parts[&tp];
        assert_eq!((p.position, p.fetch_offset), (Some(5), Some(5)));
        assert_eq!(
            p.error.as_ref().map(Error::code),
            Some(ErrorCode::CorruptMessage)
        );
        assert_ne!(p.epoch, 1, "the chunks behind the damage are stale");
        assert!(st.buffer.is_empty());
        assert_eq!(st.buffered_bytes, 0);
    }

    /// `check.crcs=false`: the same damaged set's records are returned as they are, the changed
    /// byte included, and the partition goes on past it.
    #[test]
    fn with_crcs_skipped_a_damaged_value_is_returned_as_it_is() {
        let tp = TopicPartition::new("t", 0);
        let mut st = one_partition(&tp, 10);
        let mut damaged = stored_set(Compression::None, 0, 5).to_vec();
        let last = damaged.len() - 1;
        damaged[last] ^= 0x01; // "v4" → "v5"
        let damaged = Bytes::from(damaged);
        for (base, set) in [(0, damaged), (5, stored_set(Compression::None, 5, 5))] {
            st.buffered_bytes += set.len();
            let mut c = chunk(&tp, 1, set, base, true);
            c.pending.as_mut().expect("pending").crcs = Crcs::Skip;
            st.buffer.push_back(c);
        }
        let got = drain(&mut st, 100);
        assert_eq!(
            got.iter().map(|r| r.offset.0).collect::<Vec<_>>(),
            (0..10).collect::<Vec<_>>()
        );
        assert_eq!(got[4].value.as_deref(), Some(&b"v5"[..]));
        let p = &st.parts[&tp];
        assert!(p.error.is_none());
        assert_eq!(p.position, Some(10));
    }

    /// Decode-ahead: a poll's worth of sets decoded off the application's thread, a poll
    /// stopping at the set being decoded, and a damaged set left for the poll to report at its
    /// place (not retried by the task).
    #[test]
    fn sets_decoded_ahead_drain_as_those_decoded_by_the_poll() {
        let tp = TopicPartition::new("t", 0);
        let inner = Arc::new(bare_inner());
        inner
            .set_assignment(vec![tp.clone()], &HashMap::from([(tp.clone(), 0)]))
            .unwrap();
        let mut damaged = stored_set(Compression::None, 10, 5).to_vec();
        let last = damaged.len() - 1;
        damaged[last] ^= 0x01;
        let job = {
            let mut st = inner.state.lock();
            let epoch = st.parts[&tp].epoch;
            for (id, (base, set)) in [
                (0, stored_set(Compression::None, 0, 5)),
                (5, stored_set(Compression::None, 5, 5)),
                (10, Bytes::from(damaged)),
                (15, stored_set(Compression::None, 15, 5)),
            ]
            .into_iter()
            .enumerate()
            {
                st.buffered_bytes += set.len();
                st.buffer.push_back(Chunk {
                    id: id as u64 + 1,
                    ..chunk(&tp, epoch, set, base, true)
                });
            }
            let job = inner.next_to_decode(&mut st, 3).expect("the first set");
            assert_eq!(job.0, 1);
            assert!(
                inner.next_to_decode(&mut st, 3).is_none(),
                "one task at a time"
            );
            assert!(
                drain(&mut st, 100).is_empty(),
                "the poll waits for the set being decoded"
            );
            job
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        // 5 records ahead cover a poll of 3: the task stops after the first set.
        rt.block_on(inner.clone().decode_ahead(job, 3));
        {
            let mut st = inner.state.lock();
            let pending: Vec<bool> = st.buffer.iter().map(|c| c.pending.is_some()).collect();
            assert_eq!(pending, [false, true, true, true]);
            assert!(!st.decoding_ahead);
            let got = drain(&mut st, 4);
            assert_eq!(
                got.iter().map(|r| r.offset.0).collect::<Vec<_>>(),
                [0, 1, 2, 3]
            );
            // One record left ahead, fewer than a poll of 100: the task goes on, through the
            // second set, and stops at the damaged one, which it leaves as it came.
            let job = inner.next_to_decode(&mut st, 100).expect("the second set");
            drop(st);
            rt.block_on(inner.clone().decode_ahead(job, 100));
        }
        let mut st = inner.state.lock();
        let state: Vec<(bool, bool)> = st
            .buffer
            .iter()
            .map(|c| (c.pending.is_some(), c.decode_failed))
            .collect();
        assert_eq!(
            state,
            [(false, false), (false, false), (true, true), (true, false)]
        );
        assert!(inner.next_to_decode(&mut st, 100).is_none(), "not retried");
        let got = drain(&mut st, 100);
        assert_eq!(
            got.iter().map(|r| r.offset.0).collect::<Vec<_>>(),
            (4..10).collect::<Vec<_>>(),
            "nothing at or past the damage"
        );
        let p = &st.parts[&tp];
        assert_eq!(p.position, Some(10));
        assert_eq!(
            p.error.as_ref().map(Error::code),
            Some(ErrorCode::CorruptMessage)
        );
    }

    /// A fetch released early (its answer's first frame gave the next offset) that then fails
    /// or ends elsewhere: fetching starts again where it really ends, whether or not the next
    /// fetch was already sent, so no record is skipped; one that ends as it said is kept.
    #[test]
    fn an_early_released_fetch_that_fails_or_ends_elsewhere_skips_nothing() {
        let tp = TopicPartition::new("t", 0);
        let answer = |set: Bytes, next: i64| {
            Ok(v1::FetchResponse {
                results: vec![v1::FetchPartitionResult {
                    topic: "t".into(),
                    message_set: set,
                    ..Default::default()
                }],
                next_offsets: vec![next],
            })
        };
        let failed = || Err(Error::Network("connection reset mid-answer".into()));
        // `sent_next`: whether the fetcher already sent the fetch from the early offset.
        for (sent_next, result, want_offset, want_records) in [
            (false, failed(), 0, 0),
            (true, failed(), 0, 0),
            (false, answer(stored_set(Compression::None, 0, 5), 5), 5, 5),
            (true, answer(stored_set(Compression::None, 0, 5), 5), 5, 5),
            (true, answer(stored_set(Compression::None, 0, 3), 5), 3, 3),
        ] {
            let inner = Arc::new(bare_inner());
            inner
                .set_assignment(vec![tp.clone()], &HashMap::from([(tp.clone(), 0)]))
                .unwrap();
            let part = {
                let mut st = inner.state.lock();
                let p = st.parts.get_mut(&tp).unwrap();
                p.busy = true;
                p.issued = 1;
                FetchPart {
                    tp: tp.clone(),
                    offset: 0,
                    epoch: p.epoch,
                    seq: 1,
                }
            };
            let first_epoch = part.epoch;
            release_early(&inner, std::slice::from_ref(&part), &[5]);
            {
                let mut st = inner.state.lock();
                let p = st.parts.get_mut(&tp).unwrap();
                assert_eq!((p.busy, p.fetch_offset), (false, Some(5)), "released");
                if sent_next {
                    p.busy = true;
                    p.issued = 2;
                }
            }
            let ok = result.is_ok();
            land(&inner, std::slice::from_ref(&part), result, Instant::now());
            let mut st = inner.state.lock();
            let p = &st.parts[&tp];
            let case = format!("sent_next {sent_next}, ok {ok}, want {want_offset}");
            if sent_next && want_offset != 5 {
                assert_ne!(p.epoch, first_epoch, "{case}: the early fetch is void");
            }
            if !sent_next || want_offset != 5 {
                assert!(!p.busy, "{case}");
                assert_eq!(p.fetch_offset, Some(want_offset), "{case}");
            } else {
                assert!(
                    p.busy && p.epoch == first_epoch,
                    "{case}: the early fetch stands"
                );
                assert_eq!(p.fetch_offset, Some(5), "{case}");
            }
            assert_eq!(p.retry_at.is_some(), !ok, "{case}");
            let got = drain(&mut st, 100);
            assert_eq!(
                got.iter().map(|r| r.offset.0).collect::<Vec<_>>(),
                (0..want_records).collect::<Vec<_>>(),
                "{case}"
            );
        }
    }

    fn bare_inner() -> Inner {
        let config = ConsumerConfig::new("127.0.0.1:1");
        let home = Home::new("consumer").unwrap();
        Inner {
            cluster: Arc::new(Cluster::new(config.common.clone(), home.clone())),
            home,
            config,
            state: Mutex::new(State::default()),
            data: Notify::new(),
            landed: Notify::new(),
            wake: Notify::new(),
            revoke_acked: Notify::new(),
            store: Mutex::new(None),
            buffer_limit: 1 << 20,
            member: Mutex::new(None),
            fetcher: Mutex::new(None),
            membership: Mutex::new(None),
        }
    }

    #[test]
    fn revoking_returns_positions_and_a_reassigned_partition_starts_at_the_group_commit() {
        let inner = bare_inner();
        let tp = TopicPartition::new("t", 0);
        inner
            .set_assignment(vec![tp.clone()], &HashMap::from([(tp.clone(), 3)]))
            .unwrap();
        let first_epoch = inner.state.lock().parts[&tp].epoch;
        {
            let mut st = inner.state.lock();
            st.buffer.push_back(Chunk {
                bytes: 9,
                ..chunk(
                    &tp,
                    first_epoch,
                    stored_set(Compression::None, 3, 4),
                    3,
                    false,
                )
            });
            st.buffered_bytes = 9;
            assert_eq!(drain(&mut st, 2).len(), 2);
        }
        assert_eq!(inner.revoke_all(), vec![(tp.clone(), 5)]);
        {
            let st = inner.state.lock();
            assert!(st.parts.is_empty() && st.buffer.is_empty());
            assert_eq!(st.buffered_bytes, 0);
        }
        // Another member committed 9 meanwhile: the new ownership starts there, with an epoch
        // no answer to a fetch of the first ownership can carry.
        inner
            .set_assignment(vec![tp.clone()], &HashMap::from([(tp.clone(), 9)]))
            .unwrap();
        let st = inner.state.lock();
        assert_eq!(st.parts[&tp].position, Some(9));
        assert_ne!(st.parts[&tp].epoch, first_epoch);
    }
}

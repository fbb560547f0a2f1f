//! The standalone consumer: `assign` partitions, `poll` batches of records, move positions
//! with `seek*`, and commit positions to the local offset store.
//!
//! Owns, per assigned partition, its *position* (the offset of the next record `poll` returns)
//! and its *fetch offset* (the next offset to fetch, ahead of the position by what is buffered).
//! A background fetcher task keeps a bounded buffer of fetched records filled:
//! - partitions without a position get one: the committed offset from the local store, else
//!   `auto.offset.reset` (earliest / latest by `ListOffsets`; `none`/`error` makes `poll` fail);
//! - partitions with a position are long-polled (`Log.Fetch`, `fetch.max.wait.ms`), several
//!   partitions per request, one request per leader, while fewer than `fetch.max.bytes` (at
//!   most [`CONSUMER_BUFFER_BYTES_MAX`]) bytes are buffered, so `poll` usually returns without a
//!   round trip;
//! - a fetched compressed wrapper may start before the fetch offset: records below it are
//!   skipped; every record is deep-decoded with [`for_each_record`] (CRCs checked);
//! - OFFSET_OUT_OF_RANGE applies `auto.offset.reset`; NOT_LEADER / unknown partition /
//!   connection errors refresh metadata and retry after `retry.backoff.ms`.
//!
//! **Invariant:** each partition carries an *epoch*, bumped by every `seek`/`assign`; fetch
//! answers and buffered records of an older epoch are dropped, so after a seek `poll` never
//! returns a record from before it. Records of a partition are returned in offset order, each
//! once per position (no gap, no repeat), and the position only advances over returned records.
//!
//! Offsets: `commit()` writes the current positions to the local offset store
//! (`offset_store.rs`), `commit_offsets` explicit ones; with `enable.auto.commit` and a store,
//! `poll` commits the positions reached by the previous poll every `auto.commit.interval.ms`
//! (at-least-once), and `close` commits once more.
//!
//! Consumer groups: `subscribe(topics)` (needs `group.id`) starts the membership task of
//! `consumer/group.rs`, which joins the group through the broker's coordinator and calls the
//! same internal `set_assignment` that `assign` uses, so the fetcher, positions and store are
//! shared by both modes. For a group member `commit()` writes to the broker (with its member
//! id and generation) and to the local store when one is configured.
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
    Cluster, OffsetSpec, clone_error, code_from_i32, is_connection_error, needs_metadata_refresh,
    partition_error, status_to_error,
};
use super::config::{ConsumerConfig, OffsetReset};
use super::offset_store::{OffsetStore, STANDALONE_ID};

mod group;
use crate::error::{Error, ErrorCode, Result};
use crate::format::{TimestampType, for_each_record};
use crate::group::TopicPartition;
use crate::limits::{CONSUMER_BUFFER_BYTES_MAX, REQUEST_PARTITIONS_MAX};
use crate::types::Offset;

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
}

#[derive(Debug, Default)]
struct PartState {
    position: Option<u64>,
    fetch_offset: Option<u64>,
    epoch: u64,
    /// A fetch or a position lookup for this epoch is running.
    busy: bool,
    /// Ignore the committed offset when resolving (after OFFSET_OUT_OF_RANGE).
    reset_by_policy: bool,
    retry_at: Option<Instant>,
    /// Reported by the next `poll`.
    error: Option<Error>,
}

#[derive(Debug)]
struct Chunk {
    tp: TopicPartition,
    epoch: u64,
    records: VecDeque<ConsumerRecord>,
    bytes: usize,
}

#[derive(Debug, Default)]
struct State {
    parts: BTreeMap<TopicPartition, PartState>,
    buffer: VecDeque<Chunk>,
    buffered_bytes: usize,
    topics: HashMap<String, Arc<str>>,
    closed: bool,
    last_commit: Option<Instant>,
    /// Source of partition epochs (see the module invariant).
    next_epoch: u64,
    /// A group membership failure the next `poll` reports (once).
    group_error: Option<Error>,
}

impl State {
    fn new_epoch(&mut self) -> u64 {
        self.next_epoch += 1;
        self.next_epoch
    }
}

#[derive(Debug)]
struct Inner {
    config: ConsumerConfig,
    cluster: Arc<Cluster>,
    state: Mutex<State>,
    /// Fetched data or errors arrived (wakes `poll`).
    data: Notify,
    /// Something for the fetcher to do (wakes the fetcher).
    wake: Notify,
    store: Option<Arc<Mutex<OffsetStore>>>,
    buffer_limit: usize,
    /// The group membership while subscribed (`None` for a standalone consumer).
    member: Mutex<Option<group::Member>>,
}

/// A standalone consumer (see the module docs). Every method takes `&self`.
#[derive(Debug)]
pub struct Consumer {
    inner: Arc<Inner>,
    fetcher: Mutex<Option<JoinHandle<()>>>,
    /// The group membership task while subscribed.
    membership: Mutex<Option<JoinHandle<()>>>,
    runtime: tokio::runtime::Handle,
}

fn not_assigned(tp: &TopicPartition) -> Error {
    Error::InvalidArgument(format!(
        "partition {}-{} is not assigned to this consumer",
        tp.topic, tp.partition
    ))
}

impl Inner {
    /// The assignment seam of `assign` and of the group membership. Partitions that stay keep
    /// their position and buffered records; new ones start at `committed` (the group's
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
                    let start = committed
                        .get(&tp)
                        .copied()
                        .or_else(|| self.store.as_ref().and_then(|s| s.lock().get(&tp)));
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
        let State {
            parts,
            buffer,
            buffered_bytes,
            ..
        } = &mut *st;
        buffer.retain(|c| {
            let keep = parts.get(&c.tp).is_some_and(|p| p.epoch == c.epoch);
            if !keep {
                *buffered_bytes -= c.bytes;
            }
            keep
        });
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

    /// The current position of every assigned partition that has one.
    fn positions(&self) -> Vec<(TopicPartition, u64)> {
        let st = self.state.lock();
        st.parts
            .iter()
            .filter_map(|(tp, p)| p.position.map(|o| (tp.clone(), o)))
            .collect()
    }

    /// Writes `offsets` to the local store (when configured).
    async fn commit_local(&self, offsets: Vec<(TopicPartition, u64)>) -> Result<()> {
        let Some(store) = self.store.clone() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || store.lock().commit(offsets))
            .await
            .map_err(|e| Error::InvalidArgument(format!("offset store task failed: {e}")))?
    }
}

impl Consumer {
    /// Validates `config`, opens the local offset store (when `offset.store.dir` is set; a
    /// damaged store file is an error), bootstraps metadata and starts the fetcher task.
    pub async fn new(config: ConsumerConfig) -> Result<Consumer> {
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
                Some(Arc::new(Mutex::new(s)))
            }
            None => None,
        };
        let cluster = Arc::new(Cluster::new(config.common.clone()));
        cluster.refresh(&[]).await?;
        let buffer_limit = (config.fetch_max_bytes as u64).min(CONSUMER_BUFFER_BYTES_MAX) as usize;
        let inner = Arc::new(Inner {
            config,
            cluster,
            state: Mutex::new(State::default()),
            data: Notify::new(),
            wake: Notify::new(),
            store,
            buffer_limit,
            member: Mutex::new(None),
        });
        let fetcher = tokio::spawn(fetcher_loop(inner.clone()));
        Ok(Consumer {
            inner,
            fetcher: Mutex::new(Some(fetcher)),
            membership: Mutex::new(None),
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &ConsumerConfig {
        &self.inner.config
    }

    /// Replaces the assignment. Partitions that stay keep their position and buffered records;
    /// new ones start at their committed offset, else by `auto.offset.reset`.
    pub fn assign(&self, partitions: Vec<TopicPartition>) -> Result<()> {
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

    /// Returns the next batch of records (at most `max.poll.records`), waiting up to `timeout`
    /// for some; an empty batch when none came. An error a partition hit (no position with
    /// `auto.offset.reset=none`, OFFSET_OUT_OF_RANGE with it, a non-retriable fetch error, a
    /// corrupt record) is returned once, by the next poll.
    pub async fn poll(&self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.maybe_auto_commit().await?;
        let max = self.inner.config.max_poll_records as usize;
        loop {
            let notified = self.inner.data.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.inner.state.lock();
                if st.closed {
                    return Err(Error::Closed("consumer"));
                }
                if let Some(e) = st.group_error.take() {
                    return Err(e);
                }
                if let Some(e) = st.parts.values_mut().find_map(|p| p.error.take()) {
                    return Err(e);
                }
                let out = drain_records(&mut st, max);
                if !out.is_empty() {
                    drop(st);
                    self.inner.wake.notify_one();
                    return Ok(out);
                }
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => return Ok(Vec::new()),
            }
        }
    }

    /// Moves a partition's position: the next `poll` returns records from `offset` on.
    pub fn seek(&self, tp: &TopicPartition, offset: u64) -> Result<()> {
        let mut st = self.inner.state.lock();
        let epoch = st.new_epoch();
        let p = st.parts.get_mut(tp).ok_or_else(|| not_assigned(tp))?;
        p.epoch = epoch;
        p.position = Some(offset);
        p.fetch_offset = Some(offset);
        p.busy = false;
        p.reset_by_policy = false;
        p.retry_at = None;
        p.error = None;
        let epoch = p.epoch;
        let State {
            buffer,
            buffered_bytes,
            ..
        } = &mut *st;
        buffer.retain(|c| {
            let keep = !(c.tp == *tp && c.epoch != epoch);
            if !keep {
                *buffered_bytes -= c.bytes;
            }
            keep
        });
        drop(st);
        self.inner.wake.notify_one();
        Ok(())
    }

    fn targets(&self, partitions: &[TopicPartition]) -> Result<Vec<TopicPartition>> {
        let st = self.inner.state.lock();
        if partitions.is_empty() {
            return Ok(st.parts.keys().cloned().collect());
        }
        for tp in partitions {
            if !st.parts.contains_key(tp) {
                return Err(not_assigned(tp));
            }
        }
        Ok(partitions.to_vec())
    }

    async fn seek_to(&self, partitions: &[TopicPartition], spec: OffsetSpec) -> Result<()> {
        let targets = self.targets(partitions)?;
        let specs: Vec<_> = targets.iter().map(|tp| (tp.clone(), spec)).collect();
        let results = self.inner.cluster.list_offsets(&specs).await;
        let mut offsets = Vec::with_capacity(targets.len());
        for (tp, r) in targets.iter().zip(results) {
            let r = r?;
            // −1: no record at or after the timestamp; start at the end (Kafka's rule).
            let off = if r.offset < 0 {
                r.high_watermark.max(0)
            } else {
                r.offset
            };
            offsets.push((tp, off as u64));
        }
        for (tp, off) in offsets {
            self.seek(tp, off)?;
        }
        Ok(())
    }

    /// Moves the given partitions (all assigned ones when empty) to their first offset.
    pub async fn seek_to_beginning(&self, partitions: &[TopicPartition]) -> Result<()> {
        self.seek_to(partitions, OffsetSpec::Earliest).await
    }

    /// Moves the given partitions (all assigned ones when empty) to their end (high watermark).
    pub async fn seek_to_end(&self, partitions: &[TopicPartition]) -> Result<()> {
        self.seek_to(partitions, OffsetSpec::Latest).await
    }

    /// Moves the given partitions (all assigned ones when empty) to the first record whose
    /// timestamp is ≥ `timestamp_ms`; to the end where there is none.
    pub async fn seek_to_timestamp(
        &self,
        partitions: &[TopicPartition],
        timestamp_ms: i64,
    ) -> Result<()> {
        if timestamp_ms < 0 {
            return Err(Error::InvalidArgument(format!(
                "timestamp {timestamp_ms} is negative"
            )));
        }
        self.seek_to(partitions, OffsetSpec::Timestamp(timestamp_ms))
            .await
    }

    /// The offset of the next record `poll` returns for `tp`, resolving it first (committed
    /// offset, else `auto.offset.reset`) when the consumer has none yet.
    pub async fn position(&self, tp: &TopicPartition) -> Result<u64> {
        let (known, epoch, by_policy) = {
            let st = self.inner.state.lock();
            let p = st.parts.get(tp).ok_or_else(|| not_assigned(tp))?;
            (p.position, p.epoch, p.reset_by_policy)
        };
        if let Some(o) = known {
            return Ok(o);
        }
        let o = resolve_position(&self.inner, tp, by_policy).await?;
        let mut st = self.inner.state.lock();
        let p = st.parts.get_mut(tp).ok_or_else(|| not_assigned(tp))?;
        if p.epoch == epoch && p.position.is_none() {
            p.position = Some(o);
            p.fetch_offset = Some(o);
            p.reset_by_policy = false;
        }
        Ok(p.position.unwrap_or(o))
    }

    /// The position committed in the local store for `tp` (`None` without one or without a
    /// store).
    pub fn committed(&self, tp: &TopicPartition) -> Option<u64> {
        self.inner.store.as_ref().and_then(|s| s.lock().get(tp))
    }

    /// Commits the current position of every assigned partition that has one.
    pub async fn commit(&self) -> Result<()> {
        let positions = self.inner.positions();
        self.commit_offsets(positions).await
    }

    /// Commits the given positions (the offset of the next record to read, per partition): for
    /// a group member to the broker (with its member id and generation; during a rebalance this
    /// fails with the retriable REBALANCE_IN_PROGRESS) and then to the local store when
    /// `offset.store.dir` is set; for a standalone consumer to the local store, which must then
    /// be configured.
    pub async fn commit_offsets(
        &self,
        offsets: impl IntoIterator<Item = (TopicPartition, u64)>,
    ) -> Result<()> {
        let member = self.inner.member.lock().is_some();
        if !member && self.inner.store.is_none() {
            return Err(Error::InvalidConfig {
                key: "offset.store.dir".into(),
                reason: "is not set; committing needs a local offset store directory (or a \
                         group subscription)"
                    .into(),
            });
        }
        let offsets: Vec<_> = offsets.into_iter().collect();
        if member {
            group::commit_to_group(&self.inner, &offsets).await?;
        }
        self.inner.commit_local(offsets).await?;
        self.inner.state.lock().last_commit = Some(Instant::now());
        Ok(())
    }

    async fn maybe_auto_commit(&self) -> Result<()> {
        let member = self.inner.member.lock().is_some();
        if !self.inner.config.enable_auto_commit || (self.inner.store.is_none() && !member) {
            return Ok(());
        }
        let due = {
            let mut st = self.inner.state.lock();
            match st.last_commit {
                Some(t) => t.elapsed() >= self.inner.config.auto_commit_interval,
                None => {
                    // The interval starts with the first poll.
                    st.last_commit = Some(Instant::now());
                    false
                }
            }
        };
        if !due {
            return Ok(());
        }
        match self.commit().await {
            // Around a rebalance: the membership task commits the revoked positions itself.
            Err(e) if group::is_rebalance_error(&e) => {
                tracing::debug!(error = %e, "auto commit skipped during a rebalance");
                Ok(())
            }
            other => other,
        }
    }

    /// Joins the consumer group `group.id` with a subscription to `topics` (replacing an
    /// earlier subscription) and returns once the membership task runs; the assignment arrives
    /// in the background (see `consumer/group.rs`): `poll` returns records of the assigned
    /// partitions as soon as the group's rebalance completes. Fails with
    /// [`Error::InvalidConfig`] without `group.id`, [`Error::InvalidArgument`] for no topics,
    /// a bad topic name, or a consumer with a manual `assign`ment.
    pub async fn subscribe<S: Into<String>>(
        &self,
        topics: impl IntoIterator<Item = S>,
    ) -> Result<()> {
        let group_id = self
            .inner
            .config
            .group_id
            .clone()
            .ok_or_else(|| Error::InvalidConfig {
                key: "group.id".into(),
                reason: "is not set; subscribe needs a consumer group id".into(),
            })?;
        let topics: std::collections::BTreeSet<String> =
            topics.into_iter().map(Into::into).collect();
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
        if self.inner.state.lock().closed {
            return Err(Error::Closed("consumer"));
        }
        let previous = self.inner.member.lock().clone();
        match previous {
            Some(m) if m.topics == topics => return Ok(()),
            Some(_) => {
                // A new subscription: give the partitions back (committing them) and rejoin
                // with the same member id, which rebalances the group.
                let task = self.membership.lock().take();
                if let Some(t) = task {
                    t.abort();
                    let _ = t.await;
                }
                group::revoke(&self.inner).await;
            }
            None => {
                if !self.inner.state.lock().parts.is_empty() {
                    return Err(Error::InvalidArgument(
                        "the consumer has a manual assignment: assign(vec![]) before subscribing"
                            .into(),
                    ));
                }
            }
        }
        {
            let mut member = self.inner.member.lock();
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
        let task = self.runtime.spawn(group::run(self.inner.clone()));
        *self.membership.lock() = Some(task);
        Ok(())
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
    pub fn group_membership(&self) -> Option<(String, i32)> {
        let m = self.inner.member.lock();
        let m = m.as_ref()?;
        Some((m.member_id.clone(), m.generation?))
    }

    /// Leaves the group: commits the positions (with `enable.auto.commit`), sends LeaveGroup so
    /// the group rebalances at once, and drops the assignment. A no-op when not subscribed.
    pub async fn unsubscribe(&self) -> Result<()> {
        self.stop_membership().await
    }

    async fn stop_membership(&self) -> Result<()> {
        let task = self.membership.lock().take();
        if let Some(t) = task {
            t.abort();
            let _ = t.await;
        }
        if self.inner.member.lock().is_none() {
            return Ok(());
        }
        let mut result = Ok(());
        if self.inner.config.enable_auto_commit {
            result = match self.commit().await {
                Err(e) if group::is_rebalance_error(&e) => {
                    tracing::warn!(error = %e, "final commit refused by the group coordinator");
                    Ok(())
                }
                other => other,
            };
        }
        let left = group::leave(&self.inner).await;
        self.inner.member.lock().take();
        self.inner.revoke_all();
        result.and(left)
    }

    /// Commits (with `enable.auto.commit` and a store or a group), leaves the group when
    /// subscribed, stops the fetcher. Bounded: each request has the client's timeout and the
    /// group task is aborted, never awaited on the network. Idempotent; later calls other than
    /// `close` fail with [`Error::Closed`].
    pub async fn close(&self) -> Result<()> {
        let already = self.inner.state.lock().closed;
        let mut result = Ok(());
        if !already {
            let subscribed = self.inner.member.lock().is_some();
            if subscribed || self.membership.lock().is_some() {
                // One budget for the final commit and the LeaveGroup together: a coordinator
                // that stopped answering must not hold `close` for retries × timeouts.
                let budget = self.inner.config.common.request_timeout;
                result = match tokio::time::timeout(budget, self.stop_membership()).await {
                    Ok(r) => r,
                    Err(_) => {
                        if let Some(t) = self.membership.lock().take() {
                            t.abort();
                        }
                        self.inner.member.lock().take();
                        self.inner.revoke_all();
                        Err(Error::TimedOut(format!(
                            "leaving the group took longer than request.timeout.ms ({} ms)",
                            budget.as_millis()
                        )))
                    }
                };
            } else if self.inner.config.enable_auto_commit && self.inner.store.is_some() {
                result = self.commit().await;
            }
        }
        self.inner.state.lock().closed = true;
        self.inner.wake.notify_one();
        self.inner.data.notify_waiters();
        if let Some(h) = self.fetcher.lock().take() {
            h.abort();
        }
        result
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        // Dropped without `close`: the membership stops heartbeating (the coordinator removes
        // it after `session.timeout.ms`, as for a crashed process).
        if let Some(h) = self.membership.lock().take() {
            h.abort();
        }
        if let Some(h) = self.fetcher.lock().take() {
            h.abort();
        }
    }
}

/// Takes up to `max` records from the buffer, advancing positions.
fn drain_records(st: &mut State, max: usize) -> Vec<ConsumerRecord> {
    let mut out = Vec::new();
    let State {
        parts,
        buffer,
        buffered_bytes,
        ..
    } = st;
    while out.len() < max {
        let Some(chunk) = buffer.front_mut() else {
            break;
        };
        let live = parts.get(&chunk.tp).filter(|p| p.epoch == chunk.epoch);
        let Some(_) = live else {
            *buffered_bytes -= chunk.bytes;
            buffer.pop_front();
            continue;
        };
        let p = parts.get_mut(&chunk.tp).expect("checked");
        while out.len() < max {
            let Some(r) = chunk.records.pop_front() else {
                break;
            };
            // The fetcher only buffers records at or after the fetch offset, in order; a
            // record below the position cannot be here, but dropping one keeps "no repeat" true.
            if p.position.is_some_and(|pos| r.offset.0 < pos) {
                continue;
            }
            p.position = Some(r.offset.0 + 1);
            out.push(r);
        }
        if chunk.records.is_empty() {
            *buffered_bytes -= chunk.bytes;
            buffer.pop_front();
        }
    }
    out
}

/// The committed offset (unless `by_policy`), else the `auto.offset.reset` answer.
async fn resolve_position(inner: &Inner, tp: &TopicPartition, by_policy: bool) -> Result<u64> {
    if !by_policy && let Some(o) = inner.store.as_ref().and_then(|s| s.lock().get(tp)) {
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
    Ok(r?.offset.max(0) as u64)
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
        let mut by_leader: HashMap<String, Vec<(TopicPartition, u64, u64)>> = HashMap::new();
        {
            let mut st = inner.state.lock();
            if st.closed {
                return;
            }
            let room = st.buffered_bytes < inner.buffer_limit;
            for (tp, p) in st.parts.iter_mut() {
                if p.busy || p.error.is_some() {
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
                            by_leader
                                .entry(address)
                                .or_default()
                                .push((tp.clone(), off, p.epoch));
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

async fn fetch(inner: Arc<Inner>, address: String, parts: Vec<(TopicPartition, u64, u64)>) {
    let cfg = &inner.config;
    let max_wait = cfg.fetch_max_wait;
    let request = v1::FetchRequest {
        max_wait_ms: max_wait.as_millis() as u32,
        min_bytes: cfg.fetch_min_bytes,
        max_bytes: cfg.fetch_max_bytes,
        replica_id: None,
        partitions: parts
            .iter()
            .map(|(tp, off, _)| v1::FetchPartition {
                topic: tp.topic.clone(),
                partition: tp.partition,
                fetch_offset: *off as i64,
                max_bytes: cfg.max_partition_fetch_bytes,
                leader_epoch: None,
            })
            .collect(),
    };
    let result = match inner.cluster.log_client(&address) {
        Ok(mut c) => c
            .fetch(inner.cluster.request(request, max_wait))
            .await
            .map(|r| r.into_inner())
            .map_err(|s| status_to_error(&s)),
        Err(e) => Err(e),
    };
    let now = Instant::now();
    let backoff = cfg.common.retry_backoff;
    let mut st = inner.state.lock();
    match result {
        Ok(resp) => {
            for ((tp, off, epoch), r) in parts.iter().zip(resp.results) {
                let topic = st
                    .topics
                    .get(&tp.topic)
                    .cloned()
                    .unwrap_or_else(|| Arc::from(tp.topic.as_str()));
                let State {
                    parts: states,
                    buffer,
                    buffered_bytes,
                    next_epoch,
                    ..
                } = &mut *st;
                let Some(p) = states.get_mut(tp).filter(|p| p.epoch == *epoch) else {
                    continue;
                };
                p.busy = false;
                let code = code_from_i32(r.error_code);
                match code {
                    ErrorCode::None => {
                        let set = r.message_set;
                        match decode(&topic, tp.partition, &set, *off) {
                            Ok(records) => {
                                if let Some(last) = records.back() {
                                    p.fetch_offset = Some(last.offset.0 + 1);
                                    *buffered_bytes += set.len();
                                    buffer.push_back(Chunk {
                                        tp: tp.clone(),
                                        epoch: *epoch,
                                        records,
                                        bytes: set.len(),
                                    });
                                }
                            }
                            Err(e) => p.error = Some(e),
                        }
                    }
                    ErrorCode::OffsetOutOfRange => match cfg.auto_offset_reset {
                        OffsetReset::Error => {
                            p.error = Some(partition_error(r.error_code, &r.error_message, tp))
                        }
                        OffsetReset::Earliest | OffsetReset::Latest => {
                            tracing::info!(topic = %tp.topic, partition = tp.partition, offset = off, "offset out of range; applying auto.offset.reset");
                            *next_epoch += 1;
                            p.epoch = *next_epoch;
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
                    _ => p.error = Some(partition_error(r.error_code, &r.error_message, tp)),
                }
            }
        }
        Err(e) => {
            let retriable = is_connection_error(&e) || e.code().is_retriable();
            if retriable {
                inner.cluster.request_refresh();
            }
            for (tp, _, epoch) in &parts {
                if let Some(p) = st.parts.get_mut(tp).filter(|p| p.epoch == *epoch) {
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
    drop(st);
    inner.data.notify_waiters();
    inner.wake.notify_one();
}

/// Deep-decodes a fetched set into records at or after `from`. Uncompressed keys and values
/// are zero-copy slices of `set`; records from a compressed wrapper are copied out of the
/// decompression buffer.
fn decode(
    topic: &Arc<str>,
    partition: u32,
    set: &Bytes,
    from: u64,
) -> Result<VecDeque<ConsumerRecord>> {
    let mut out = VecDeque::new();
    let mut scratch = Vec::new();
    let base = set.as_ptr() as usize;
    let end = base + set.len();
    let slice = |b: &[u8]| {
        let p = b.as_ptr() as usize;
        if p >= base && p + b.len() <= end {
            set.slice_ref(b)
        } else {
            Bytes::copy_from_slice(b)
        }
    };
    for_each_record(set, &mut scratch, |r| {
        if r.offset.0 < from {
            return;
        }
        out.push_back(ConsumerRecord {
            topic: topic.clone(),
            partition,
            offset: r.offset,
            timestamp: r.timestamp.0,
            timestamp_type: r.timestamp_type,
            key: r.key.map(slice),
            value: r.value.map(slice),
        });
    })?;
    Ok(out)
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
        let mut set = b.finish().unwrap();
        prepare_append(
            &mut set,
            Offset(base),
            &AppendOptions {
                max_message_bytes: crate::limits::MESSAGE_BYTES_MAX,
                timestamp_type: TimestampType::CreateTime,
                now: TimestampMs(0),
            },
            &mut Vec::new(),
        )
        .unwrap();
        Bytes::from(set)
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
    fn drained_records_advance_the_position_and_stale_epochs_are_dropped() {
        let topic: Arc<str> = Arc::from("t");
        let tp = TopicPartition::new("t", 0);
        let mut st = State::default();
        st.parts.insert(
            tp.clone(),
            PartState {
                position: Some(0),
                fetch_offset: Some(10),
                epoch: 1,
                ..PartState::default()
            },
        );
        let records = decode(&topic, 0, &stored_set(Compression::None, 0, 10), 0).unwrap();
        st.buffer.push_back(Chunk {
            tp: tp.clone(),
            epoch: 0,
            records: records.clone(),
            bytes: 5,
        });
        st.buffer.push_back(Chunk {
            tp: tp.clone(),
            epoch: 1,
            records,
            bytes: 7,
        });
        st.buffered_bytes = 12;
        let got = drain_records(&mut st, 4);
        assert_eq!(
            got.iter().map(|r| r.offset.0).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert_eq!(st.parts[&tp].position, Some(4));
        assert_eq!(st.buffered_bytes, 7, "the stale chunk was dropped");
        let got = drain_records(&mut st, 100);
        assert_eq!(got.len(), 6);
        assert_eq!(st.parts[&tp].position, Some(10));
        assert_eq!(st.buffered_bytes, 0);
    }

    fn bare_inner() -> Inner {
        let config = ConsumerConfig::new("127.0.0.1:1");
        Inner {
            cluster: Arc::new(Cluster::new(config.common.clone())),
            config,
            state: Mutex::new(State::default()),
            data: Notify::new(),
            wake: Notify::new(),
            store: None,
            buffer_limit: 1 << 20,
            member: Mutex::new(None),
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
            let topic: Arc<str> = Arc::from("t");
            let records = decode(&topic, 0, &stored_set(Compression::None, 3, 4), 3).unwrap();
            st.buffer.push_back(Chunk {
                tp: tp.clone(),
                epoch: first_epoch,
                records,
                bytes: 9,
            });
            st.buffered_bytes = 9;
            assert_eq!(drain_records(&mut st, 2).len(), 2);
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

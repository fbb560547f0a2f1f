//! One partition hosted by this broker: its [`PartitionLog`], its leader-epoch history
//! ([`LeaderEpochCache`], the `leader-epoch-checkpoint` file beside the segments), its
//! replication [`Role`], the two notifications long polls wait on, and its counters.
//!
//! - **Role** (behind `role`): [`Role::Leader`] holds core's sans-IO [`LeaderState`] (follower
//!   end offsets, ISR, high watermark); [`Role::Follower`] names the leader and epoch followed
//!   and where the fetcher is with it (truncated yet? paused?); [`Role::None`] while no leader
//!   is known. The role pass ([`super::roles`]) sets it from the registry; the leader epoch the
//!   registry holds is `leader_epoch`, used to fence requests that carry one.
//! - **Append gate**: every append (leader or follower) and every truncation holds `append_gate`
//!   for reading and re-checks the role under it; a role change holds it for writing. So no
//!   append of a deposed leader lands after the role changed (the follower's truncation would
//!   miss it), and no follower append lands after a promotion recorded the epoch's start offset.
//! - **Watches**: `hw` carries the high watermark (consumer fetches and acks=all wait on it; it
//!   is also poked on role changes so waiters re-check leadership); `end` carries the log end
//!   offset (replica fetches wait on it: followers must see data before it is committed).
//!
//! - **Fencing** ([`Partition::check_epoch`], [`Partition::check_replica_fetch`]): a request
//!   carrying an older leader epoch is FENCED_LEADER_EPOCH, a newer one UNKNOWN_LEADER_EPOCH —
//!   one rule, written once in `fence`.
//! - **The leader's hooks**: [`Partition::leader_append`] (the one append path of a leader:
//!   clients' produce and the replicated `__consumer_offsets`), [`Partition::wait_for_replicas`]
//!   (acks=all), and the replica-fetch hooks [`Partition::on_replica_fetch`] and
//!   [`Partition::epochs_covering`].
//!
//! Lock order: `append_gate` → `role` → `epoch_cache`; the log's own locks come last. None is
//! held across an `.await`. The locks are parking_lot's (no poisoning: a panic while holding
//! one is a bug that ends the task, not a state to recover).
//!
//! Invariant: the value in `hw` is the log's high watermark after the last change; it is
//! published *after* `PartitionLog::set_high_watermark`, so a woken fetch always finds the data.
//! Consumers never read at or above it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use sluiceway_core::registry::BrokerId;
use sluiceway_core::replication::{EpochEntry, LeaderEpochCache, LeaderState};
use sluiceway_core::storage::{AppendInfo, PartitionLog};
use sluiceway_core::{ErrorCode, Offset};
use sluiceway_proto::v1;
use tokio::sync::watch;
use tracing::debug;

use super::produce_order::ProduceOrder;
use crate::errors::PartitionError;

/// An ISR change a replica fetch or the shrink timer produced: the partition, the leader epoch
/// it was made at, the proposed ISR.
#[derive(Debug)]
pub struct IsrProposal {
    pub partition: Arc<Partition>,
    pub epoch: u32,
    pub isr: Vec<BrokerId>,
}

/// Where a follower's fetcher is with the leader it follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerRole {
    pub leader: BrokerId,
    /// The leader epoch followed (sent with every fetch, for fencing).
    pub epoch: u32,
    /// Whether the log was truncated to the point it shares with this leader (KIP-101); the
    /// fetcher fetches only after that.
    pub truncated: bool,
    /// The leader refused us (fenced, not leader, unknown epoch): no fetching until the next
    /// registry change or this instant, whichever comes first.
    pub paused_until: Option<Instant>,
}

/// See the module docs.
#[derive(Debug)]
pub enum Role {
    /// No leader known (or not yet set up): produce and fetch answer NOT_LEADER.
    None,
    Leader(Box<LeaderState>),
    Follower(FollowerRole),
}

/// See the module docs.
#[derive(Debug)]
pub struct Partition {
    pub topic: Arc<str>,
    pub partition: u32,
    /// The topic's `min.insync.replicas`: acks=all needs an ISR at least this large.
    pub min_insync_replicas: u32,
    pub log: PartitionLog,
    /// The partition's leader epoch as the registry holds it.
    leader_epoch: AtomicU32,
    /// How many replicas the partition has (for the under-replicated gauge).
    replica_count: AtomicU32,
    /// Grows each time this broker starts a leadership term (from not leading). An acks=all
    /// wait that sees it change was answered by a deposed leader: NOT_LEADER.
    leadership: AtomicU64,
    role: Mutex<Role>,
    append_gate: RwLock<()>,
    epoch_cache: Mutex<LeaderEpochCache>,
    hw: watch::Sender<u64>,
    end: watch::Sender<u64>,
    deleted: AtomicBool,
    pub produced_messages: AtomicU64,
    pub produced_bytes: AtomicU64,
    pub fetched_bytes: AtomicU64,
    /// Bytes served to followers (leader) or appended from the leader (follower).
    pub replicated_bytes: AtomicU64,
    /// Idempotent producers' retries answered with their first offsets (nothing written).
    pub duplicate_batches: AtomicU64,
    /// The order of pipelined producers' requests (`produce_order`).
    pub produce_order: ProduceOrder,
}

impl Partition {
    pub fn new(
        topic: Arc<str>,
        partition: u32,
        min_insync_replicas: u32,
        log: PartitionLog,
        epoch_cache: LeaderEpochCache,
    ) -> Partition {
        let (hw, _) = watch::channel(log.high_watermark().0);
        let (end, _) = watch::channel(log.log_end_offset().0);
        Partition {
            topic,
            partition,
            min_insync_replicas,
            log,
            leader_epoch: AtomicU32::new(0),
            replica_count: AtomicU32::new(1),
            leadership: AtomicU64::new(0),
            role: Mutex::new(Role::None),
            append_gate: RwLock::new(()),
            epoch_cache: Mutex::new(epoch_cache),
            hw,
            end,
            deleted: AtomicBool::new(false),
            produced_messages: AtomicU64::new(0),
            produced_bytes: AtomicU64::new(0),
            fetched_bytes: AtomicU64::new(0),
            replicated_bytes: AtomicU64::new(0),
            duplicate_batches: AtomicU64::new(0),
            produce_order: ProduceOrder::default(),
        }
    }

    /// A receiver that is woken on the next high-watermark change, role change or deletion.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.hw.subscribe()
    }

    /// A receiver that is woken on the next log-end change, role change or deletion.
    pub fn subscribe_end(&self) -> watch::Receiver<u64> {
        self.end.subscribe()
    }

    /// Moves the high watermark to `hw` (monotonic, clamped by the log) and wakes waiting fetches.
    pub fn advance_high_watermark(&self, hw: Offset) {
        self.log.set_high_watermark(hw);
        let now = self.log.high_watermark().0;
        self.hw.send_if_modified(|v| {
            if *v == now {
                false
            } else {
                *v = now;
                true
            }
        });
    }

    /// Publishes the log end after an append or truncation (wakes replica fetches).
    pub fn publish_log_end(&self) {
        let now = self.log.log_end_offset().0;
        self.end.send_if_modified(|v| {
            if *v == now {
                false
            } else {
                *v = now;
                true
            }
        });
    }

    /// Publishes the log's high watermark and log end as they are now (after a truncation
    /// lowered them).
    pub fn refresh_watches(&self) {
        let (hw, end) = (self.log.high_watermark().0, self.log.log_end_offset().0);
        self.hw.send_if_modified(|v| std::mem::replace(v, hw) != hw);
        self.end
            .send_if_modified(|v| std::mem::replace(v, end) != end);
    }

    /// Wakes every waiter so it re-checks the role (leadership changed) or deletion.
    pub fn wake_all(&self) {
        self.hw.send_modify(|_| {});
        self.end.send_modify(|_| {});
    }

    /// Marks the partition deleted and wakes its waiters, which then answer
    /// UNKNOWN_TOPIC_OR_PARTITION.
    pub fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::SeqCst);
        self.wake_all();
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::SeqCst)
    }

    /// `topic-partition`, for messages.
    pub fn name(&self) -> String {
        PartitionLog::dir_name(&self.topic, self.partition)
    }

    pub fn leader_epoch(&self) -> u32 {
        self.leader_epoch.load(Ordering::SeqCst)
    }

    pub fn set_leader_epoch(&self, epoch: u32) {
        self.leader_epoch.store(epoch, Ordering::SeqCst);
    }

    pub fn replica_count(&self) -> u32 {
        self.replica_count.load(Ordering::Relaxed)
    }

    pub fn set_replica_count(&self, n: u32) {
        self.replica_count.store(n, Ordering::Relaxed);
    }

    pub fn leadership(&self) -> u64 {
        self.leadership.load(Ordering::SeqCst)
    }

    pub fn start_leadership(&self) {
        self.leadership.fetch_add(1, Ordering::SeqCst);
    }

    pub fn role(&self) -> MutexGuard<'_, Role> {
        self.role.lock()
    }

    pub fn epoch_cache(&self) -> MutexGuard<'_, LeaderEpochCache> {
        self.epoch_cache.lock()
    }

    /// Held (shared) by appends and truncations; see the module docs.
    pub fn append_gate(&self) -> RwLockReadGuard<'_, ()> {
        self.append_gate.read()
    }

    /// Held (exclusive) by role changes; see the module docs.
    pub fn role_change_gate(&self) -> RwLockWriteGuard<'_, ()> {
        self.append_gate.write()
    }

    /// Whether this broker leads the partition now.
    pub fn is_leader(&self) -> bool {
        matches!(*self.role(), Role::Leader(_))
    }

    /// The committed ISR size while leading (None otherwise).
    pub fn isr_size(&self) -> Option<u32> {
        match &*self.role() {
            Role::Leader(ls) => Some(ls.isr().len() as u32),
            _ => None,
        }
    }

    /// NOT_LEADER for requests that only the leader serves, naming who leads when known.
    pub fn not_leader(&self) -> PartitionError {
        let who = match &*self.role() {
            Role::Follower(f) => format!("broker {} leads it", f.leader),
            Role::Leader(_) => "this broker leads it".to_owned(),
            Role::None => "it has no leader now".to_owned(),
        };
        PartitionError::new(
            ErrorCode::NotLeader,
            format!(
                "this broker is not the leader of {} at epoch {}; {who}",
                self.name(),
                self.leader_epoch()
            ),
        )
    }

    /// Fences a client request carrying a leader epoch against the partition's current one
    /// (the registry's). No epoch: nothing to check.
    pub fn check_epoch(&self, epoch: Option<i32>) -> Result<(), PartitionError> {
        match epoch {
            None => Ok(()),
            Some(e) => fence(self, e, self.leader_epoch()),
        }
    }

    /// Checks a replica fetch (or OffsetForLeaderEpoch) before reading: this broker leads the
    /// partition at `leader_epoch`, which the request must carry.
    pub fn check_replica_fetch(&self, leader_epoch: Option<i32>) -> Result<(), PartitionError> {
        let Some(epoch) = leader_epoch else {
            return Err(PartitionError::new(
                ErrorCode::InvalidRequest,
                format!("a replica fetch of {} must carry leader_epoch", self.name()),
            ));
        };
        let current = match &*self.role() {
            Role::Leader(ls) => Some(ls.leader_epoch()),
            _ => None,
        };
        match current {
            Some(current) => fence(self, epoch, current),
            None => Err(self.not_leader()),
        }
    }

    /// acks=all's precondition: the committed ISR has at least `min.insync.replicas` members.
    pub fn check_min_insync(&self) -> Result<(), PartitionError> {
        match self.isr_size() {
            Some(n) if n >= self.min_insync_replicas => Ok(()),
            Some(n) => Err(PartitionError::new(
                ErrorCode::NotEnoughReplicas,
                format!(
                    "{} has {n} in-sync replica(s), fewer than its min.insync.replicas of {}",
                    self.name(),
                    self.min_insync_replicas
                ),
            )),
            None => Err(self.not_leader()),
        }
    }

    /// Appends as the leader (blocking: call it on a blocking thread): under the append gate,
    /// re-checks that this broker still leads (and for acks=all that the ISR is large enough),
    /// appends, feeds the leader state (which may move the HW) and publishes the new log end.
    /// Returns the append and the leadership term it happened in.
    pub fn leader_append(
        &self,
        set: &mut [u8],
        acks: i32,
    ) -> Result<(AppendInfo, u64), PartitionError> {
        let _gate = self.append_gate();
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        if acks == -1 {
            self.check_min_insync()?;
        }
        let leadership = self.leadership();
        let bytes = set.len() as u64;
        let info = self.log.append_in_epoch(set, self.leader_epoch())?;
        {
            let mut role = self.role();
            if let Role::Leader(ls) = &mut *role
                && let Some(hw) = ls.on_append(self.log.log_end_offset())
            {
                self.advance_high_watermark(hw);
            }
        }
        // An idempotent producer's retry: batches the log has are answered with their first
        // offsets, not written again.
        self.duplicate_batches
            .fetch_add(u64::from(info.duplicate_batches), Ordering::Relaxed);
        if info.duplicate {
            debug!(topic = %self.topic, partition = self.partition, base_offset = info.base_offset.0,
                "duplicate batches answered with their first offsets");
            return Ok((info, leadership));
        }
        self.publish_log_end();
        self.produced_messages
            .fetch_add(info.message_count, Ordering::Relaxed);
        self.produced_bytes.fetch_add(bytes, Ordering::Relaxed);
        debug!(topic = %self.topic, partition = self.partition, base_offset = info.base_offset.0,
            last_offset = info.last_offset.0, "appended");
        Ok((info, leadership))
    }

    /// acks=all: waits until the high watermark passes `last` (every in-sync replica has it).
    /// Ends with NOT_LEADER when the leadership term changes or `shutdown` turns true, and
    /// with REQUEST_TIMED_OUT at `deadline` (`timeout_ms` is for the message).
    pub async fn wait_for_replicas(
        &self,
        last: Offset,
        leadership: u64,
        deadline: Instant,
        timeout_ms: u64,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), PartitionError> {
        // Subscribe before checking, so a change between the check and the wait still wakes us.
        let mut hw = self.subscribe();
        loop {
            if self.is_deleted() {
                return Err(PartitionError::unknown(&self.topic, self.partition));
            }
            if self.leadership() != leadership || !self.is_leader() {
                let e = self.not_leader();
                return Err(PartitionError::new(
                    e.code,
                    format!(
                        "{}; the append at offset {last} may not be replicated",
                        e.message
                    ),
                ));
            }
            if self.log.high_watermark() > last {
                let isr = self.isr_size().unwrap_or(0);
                if isr < self.min_insync_replicas {
                    return Err(PartitionError::new(
                        ErrorCode::NotEnoughReplicasAfterAppend,
                        format!(
                            "{} was appended at offset {last} but its in-sync replica set shrank to {isr}, below min.insync.replicas {}",
                            self.name(),
                            self.min_insync_replicas
                        ),
                    ));
                }
                return Ok(());
            }
            if *shutdown.borrow() {
                return Err(PartitionError::new(
                    ErrorCode::NotLeader,
                    format!(
                        "the broker is shutting down before the in-sync replicas of {} confirmed offset {last}",
                        self.name()
                    ),
                ));
            }
            tokio::select! {
                r = hw.changed() => if r.is_err() {
                    return Err(PartitionError::unknown(&self.topic, self.partition));
                },
                _ = shutdown.changed() => {}
                () = tokio::time::sleep_until(deadline.into()) => {
                    return Err(PartitionError::new(
                        ErrorCode::RequestTimedOut,
                        format!(
                            "the in-sync replicas of {} did not confirm offset {last} within {timeout_ms} ms (high watermark {})",
                            self.name(),
                            self.log.high_watermark()
                        ),
                    ));
                }
            }
        }
    }

    /// Feeds one replica fetch (after its read) to the leader state: `leader_end` is the log
    /// end the read saw; `eligible` whether the registry has the follower registered now (a
    /// fenced follower is never proposed for the ISR, KIP-841). Moves the high watermark when it
    /// advanced; returns an ISR expansion to submit.
    pub fn on_replica_fetch(
        self: &Arc<Self>,
        follower: BrokerId,
        fetch_offset: Offset,
        leader_end: Offset,
        now_ms: u64,
        eligible: bool,
    ) -> Result<Option<IsrProposal>, PartitionError> {
        let mut role = self.role();
        let Role::Leader(ls) = &mut *role else {
            drop(role);
            return Err(self.not_leader());
        };
        match ls.on_follower_fetch(follower, fetch_offset, leader_end, now_ms, eligible) {
            Ok(outcome) => {
                if let Some(hw) = outcome.high_watermark {
                    self.advance_high_watermark(hw);
                }
                Ok(outcome.propose_isr.map(|isr| IsrProposal {
                    partition: self.clone(),
                    epoch: ls.leader_epoch(),
                    isr,
                }))
            }
            // Not a replica of the partition (the proto's rule: NOT_LEADER), or a fetch past
            // the log end that the read did not catch.
            Err(e) => Err(PartitionError::new(ErrorCode::NotLeader, e.to_string())),
        }
    }

    /// The leader-epoch entries covering `[fetch_offset, end)`: the entry containing
    /// `fetch_offset`, then every entry starting below `end`. Magic 0/1 entries carry no epoch,
    /// so a follower learns them from these.
    pub fn epochs_covering(&self, fetch_offset: Offset, end: Offset) -> Vec<v1::LeaderEpochEntry> {
        let cache = self.epoch_cache();
        let entries = cache.entries();
        let first = entries
            .partition_point(|e| e.start_offset <= fetch_offset)
            .saturating_sub(1);
        entries[first.min(entries.len())..]
            .iter()
            .take_while(|e| e.start_offset < end || e.start_offset <= fetch_offset)
            .map(|e| v1::LeaderEpochEntry {
                epoch: e.epoch as i32,
                start_offset: e.start_offset.0 as i64,
            })
            .collect()
    }

    /// OffsetForLeaderEpoch for one partition: the largest epoch `<=` `epoch` in this leader's
    /// history and where it ends (the next epoch's start, or the log end). The request must
    /// carry the epoch this broker leads at (`current_leader_epoch`).
    pub fn end_offset_for_epoch(
        &self,
        current_leader_epoch: i32,
        epoch: i32,
    ) -> Result<Option<EpochEntry>, PartitionError> {
        self.check_replica_fetch(Some(current_leader_epoch))?;
        if epoch < 0 {
            return Ok(None);
        }
        let log_end = self.log.log_end_offset();
        Ok(self.epoch_cache().end_offset_for(epoch as u32, log_end))
    }
}

/// The one fencing rule: `epoch` (from a request) against `current`.
fn fence(p: &Partition, epoch: i32, current: u32) -> Result<(), PartitionError> {
    if epoch < 0 || (epoch as u32) < current {
        return Err(PartitionError::new(
            ErrorCode::FencedLeaderEpoch,
            format!(
                "leader epoch {epoch} of {} is older than the current {current}",
                p.name()
            ),
        ));
    }
    if epoch as u32 > current {
        return Err(PartitionError::new(
            ErrorCode::UnknownLeaderEpoch,
            format!(
                "leader epoch {epoch} of {} is newer than the current {current}",
                p.name()
            ),
        ));
    }
    Ok(())
}

//! One partition hosted by this broker: its [`PartitionLog`], its leader-epoch history
//! ([`LeaderEpochCache`], the `leader-epoch-checkpoint` file beside the segments), its
//! replication [`Role`], the two notifications long polls wait on, and its counters.
//!
//! - **Role** (behind `role`): [`Role::Leader`] holds core's sans-IO [`LeaderState`] (follower
//!   end offsets, ISR, high watermark); [`Role::Follower`] names the leader and epoch followed
//!   and where the fetcher is with it (truncated yet? paused?); [`Role::None`] while no leader
//!   is known. The role loop ([`crate::roles`]) sets it from the registry; the leader epoch the
//!   registry holds is `leader_epoch`, used to fence requests that carry one.
//! - **Append gate**: every append (leader or follower) and every truncation holds `append_gate`
//!   for reading and re-checks the role under it; a role change holds it for writing. So no
//!   append of a deposed leader lands after the role changed (the follower's truncation would
//!   miss it), and no follower append lands after a promotion recorded the epoch's start offset.
//! - **Watches**: `hw` carries the high watermark (consumer fetches and acks=all wait on it; it
//!   is also poked on role changes so waiters re-check leadership); `end` carries the log end
//!   offset (replica fetches wait on it: followers must see data before it is committed).
//!
//! Lock order: `append_gate` → `role` → `epoch_cache`; the log's own locks come last. None is
//! held across an `.await`.
//!
//! Invariant: the value in `hw` is the log's high watermark after the last change; it is
//! published *after* `PartitionLog::set_high_watermark`, so a woken fetch always finds the data.
//! Consumers never read at or above it.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use sluiceway_core::registry::BrokerId;
use sluiceway_core::replication::{LeaderEpochCache, LeaderState};
use sluiceway_core::storage::PartitionLog;
use sluiceway_core::{ErrorCode, Offset};
use tokio::sync::watch;

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
    pub epoch_cache: Mutex<LeaderEpochCache>,
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
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
        lock(&self.role)
    }

    pub fn epoch_cache(&self) -> MutexGuard<'_, LeaderEpochCache> {
        lock(&self.epoch_cache)
    }

    /// Held (shared) by appends and truncations; see the module docs.
    pub fn append_gate(&self) -> RwLockReadGuard<'_, ()> {
        self.append_gate.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Held (exclusive) by role changes; see the module docs.
    pub fn role_change_gate(&self) -> RwLockWriteGuard<'_, ()> {
        self.append_gate.write().unwrap_or_else(|e| e.into_inner())
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
    pub fn not_leader(&self) -> (ErrorCode, String) {
        let who = match &*self.role() {
            Role::Follower(f) => format!("broker {} leads it", f.leader),
            Role::Leader(_) => "this broker leads it".to_owned(),
            Role::None => "it has no leader now".to_owned(),
        };
        (
            ErrorCode::NotLeader,
            format!(
                "this broker is not the leader of {} at epoch {}; {who}",
                self.name(),
                self.leader_epoch()
            ),
        )
    }
}

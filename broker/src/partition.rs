//! One partition hosted by this broker: its [`PartitionLog`], the high-watermark notification
//! that long-poll fetches wait on, and its counters.
//!
//! Invariant: the value in `hw` is the log's high watermark after the last change; it is
//! published *after* `PartitionLog::set_high_watermark`, so a woken fetch always finds the data.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sluiceway_core::Offset;
use sluiceway_core::storage::PartitionLog;
use tokio::sync::watch;

/// See the module docs.
#[derive(Debug)]
pub struct Partition {
    pub topic: Arc<str>,
    pub partition: u32,
    pub leader_epoch: u32,
    /// Members of the in-sync replica set (the leader included) and the topic's
    /// `min.insync.replicas`: acks=all needs `isr_size >= min_insync_replicas`.
    pub isr_size: u32,
    pub min_insync_replicas: u32,
    pub log: PartitionLog,
    hw: watch::Sender<u64>,
    deleted: AtomicBool,
    pub produced_messages: AtomicU64,
    pub produced_bytes: AtomicU64,
    pub fetched_bytes: AtomicU64,
}

impl Partition {
    pub fn new(
        topic: Arc<str>,
        partition: u32,
        leader_epoch: u32,
        isr_size: u32,
        min_insync_replicas: u32,
        log: PartitionLog,
    ) -> Partition {
        let (hw, _) = watch::channel(log.high_watermark().0);
        Partition {
            topic,
            partition,
            leader_epoch,
            isr_size,
            min_insync_replicas,
            log,
            hw,
            deleted: AtomicBool::new(false),
            produced_messages: AtomicU64::new(0),
            produced_bytes: AtomicU64::new(0),
            fetched_bytes: AtomicU64::new(0),
        }
    }

    /// A receiver that is woken on the next high-watermark change (or deletion).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.hw.subscribe()
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

    /// Marks the partition deleted and wakes its waiters, which then answer
    /// UNKNOWN_TOPIC_OR_PARTITION.
    pub fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::SeqCst);
        self.hw.send_modify(|_| {});
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::SeqCst)
    }

    /// `topic-partition`, for messages.
    pub fn name(&self) -> String {
        PartitionLog::dir_name(&self.topic, self.partition)
    }
}

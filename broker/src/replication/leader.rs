//! The leader's side of replication: replica fetches (a follower's `Fetch` with `replica_id`),
//! OffsetForLeaderEpoch, and the in-sync replica set (ISR).
//!
//! - A **replica fetch** must carry the leader epoch this broker leads at (older:
//!   FENCED_LEADER_EPOCH, newer: UNKNOWN_LEADER_EPOCH, not leading: NOT_LEADER), reads up to the
//!   log end (not the high watermark), and reports the fetch offset to core's [`LeaderState`]
//!   as the follower's log end: everything below it is on the follower's disk. That may move
//!   the high watermark (waking consumers and acks=all waits) or propose an ISR expansion. The
//!   answer carries the leader-epoch entries covering the returned range, since magic 0/1
//!   entries carry no epoch. Its long poll waits on the log *end* (the broker's fetch path
//!   calls the partition's hooks: [`Partition::check_replica_fetch`],
//!   [`Partition::on_replica_fetch`], [`Partition::epochs_covering`]).
//! - **ISR changes** are proposals of the [`LeaderState`]: an expansion from a fetch, a shrink
//!   from the timer ([`run_isr_timer`], every `min(lag / 2, 1 s)`). Each is written with
//!   `Registry::alter_isr` (fenced by the leader epoch) on a blocking thread, and the outcome
//!   is fed back (`isr_committed` / `isr_proposal_failed`) if the same leadership is still in
//!   place. The state machine keeps at most one proposal in flight.
//! - **OffsetForLeaderEpoch** answers from the leader-epoch cache: the largest epoch `<=` the
//!   asked one and where it ends (the next epoch's start, or the log end).
//!
//! [`LeaderState`]: sluiceway_core::replication::LeaderState
//! [`Partition::check_replica_fetch`]: super::Partition::check_replica_fetch
//! [`Partition::on_replica_fetch`]: super::Partition::on_replica_fetch
//! [`Partition::epochs_covering`]: super::Partition::epochs_covering

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sluiceway_core::limits::{ISR_CHECK_INTERVAL_MS_MAX, ISR_CHECK_INTERVAL_MS_MIN};
use sluiceway_proto::v1;
use tracing::{info, warn};

use super::{IsrProposal, ReplicaManager, Role};
use crate::errors::{blocking, to_proto};

impl ReplicaManager {
    /// Writes an ISR proposal to the registry on a blocking thread and feeds the outcome back
    /// to the leader state, if the same leadership term is still in place.
    pub fn submit_isr(&self, proposal: IsrProposal) {
        let IsrProposal {
            partition: p,
            epoch,
            isr,
        } = proposal;
        let registry = self.registry.clone();
        let me = self.config.broker_id;
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let (topic, partition) = (p.topic.to_string(), p.partition);
            let proposed = isr.clone();
            let r =
                blocking(move || registry.alter_isr(&topic, partition, me, epoch, &proposed)).await;
            let mut role = p.role();
            let Role::Leader(ls) = &mut *role else {
                return;
            };
            if ls.leader_epoch() != epoch {
                return;
            }
            match r {
                Ok(stored) => {
                    let before = ls.isr().len();
                    let counter = if stored.isr.len() < before {
                        &metrics.isr_shrinks
                    } else {
                        &metrics.isr_expands
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    info!(partition = %p.name(), epoch, from = ?ls.isr(), to = ?stored.isr, "in-sync replicas changed");
                    if let Some(hw) = ls.isr_committed(&stored.isr) {
                        p.advance_high_watermark(hw);
                    }
                }
                Err(e) => {
                    warn!(partition = %p.name(), epoch, proposed = ?isr, error = %e, "changing the in-sync replicas failed");
                    ls.isr_proposal_failed();
                }
            }
            drop(role);
            // acks=all waits re-check the ISR size against min.insync.replicas.
            p.wake_all();
        });
    }

    /// One pass of the ISR shrink check over the partitions this broker leads.
    pub fn check_isr(&self) {
        let now = self.now_ms();
        let mut proposals = Vec::new();
        for p in self.hosted_partitions() {
            let mut role = p.role();
            if let Role::Leader(ls) = &mut *role
                && let Some(isr) = ls.maybe_shrink_isr(now)
            {
                info!(partition = %p.name(), from = ?ls.isr(), to = ?isr, "proposing to shrink the in-sync replicas");
                proposals.push(IsrProposal {
                    partition: p.clone(),
                    epoch: ls.leader_epoch(),
                    isr,
                });
            }
        }
        for proposal in proposals {
            self.submit_isr(proposal);
        }
    }

    /// OffsetForLeaderEpoch: where the asked epochs end in this leader's log (the request's
    /// bounds and in-flight permit are the broker's).
    pub fn offset_for_leader_epoch(
        &self,
        partitions: Vec<v1::OffsetForLeaderEpochPartition>,
    ) -> Vec<v1::OffsetForLeaderEpochResult> {
        let mut results = Vec::with_capacity(partitions.len());
        for q in partitions {
            let mut r = v1::OffsetForLeaderEpochResult {
                topic: q.topic.clone(),
                partition: q.partition,
                error_code: 0,
                error_message: String::new(),
                leader_epoch: -1,
                end_offset: -1,
            };
            let answer = self
                .partition(&q.topic, q.partition)
                .and_then(|p| p.end_offset_for_epoch(q.current_leader_epoch, q.leader_epoch));
            match answer {
                Ok(Some(e)) => {
                    r.leader_epoch = e.epoch as i32;
                    r.end_offset = e.start_offset.0 as i64;
                }
                Ok(None) => {}
                Err(e) => {
                    r.error_code = to_proto(e.code);
                    r.error_message = e.message;
                }
            }
            results.push(r);
        }
        results
    }
}

/// Runs the ISR shrink check until shutdown, every `replica_lag_time_max_ms / 2` within
/// `[ISR_CHECK_INTERVAL_MS_MIN, ISR_CHECK_INTERVAL_MS_MAX]`.
pub async fn run_isr_timer(replicas: Arc<ReplicaManager>) {
    let period = (replicas.config.replica_lag_time_max_ms / 2)
        .clamp(ISR_CHECK_INTERVAL_MS_MIN, ISR_CHECK_INTERVAL_MS_MAX);
    let mut tick = tokio::time::interval(Duration::from_millis(period));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown = replicas.shutdown_receiver();
    loop {
        tokio::select! {
            _ = tick.tick() => replicas.check_isr(),
            _ = shutdown.changed() => return,
        }
    }
}

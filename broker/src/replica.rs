//! The leader's side of replication: replica fetches (a follower's `Fetch` with `replica_id`),
//! OffsetForLeaderEpoch, and the in-sync replica set (ISR).
//!
//! - A **replica fetch** must carry the leader epoch this broker leads at (older:
//!   FENCED_LEADER_EPOCH, newer: UNKNOWN_LEADER_EPOCH, not leading: NOT_LEADER), reads up to the
//!   log end (not the high watermark), and reports the fetch offset to core's [`LeaderState`]
//!   as the follower's log end: everything below it is on the follower's disk. That may move
//!   the high watermark (waking consumers and acks=all waits) or propose an ISR expansion. The
//!   answer carries the leader-epoch entries covering the returned range, since magic 0/1
//!   entries carry no epoch. Its long poll waits on the log *end* (see [`crate::broker`]).
//! - **ISR changes** are proposals of the [`LeaderState`]: an expansion from a fetch, a shrink
//!   from the timer ([`run_isr_timer`], every `min(lag / 2, 1 s)`). Each is written with
//!   `Registry::alter_isr` (fenced by the leader epoch) on a blocking thread, and the outcome
//!   is fed back (`isr_committed` / `isr_proposal_failed`) if the same leadership is still in
//!   place. The state machine keeps at most one proposal in flight.
//! - **OffsetForLeaderEpoch** answers from the leader-epoch cache: the largest epoch `<=` the
//!   asked one and where it ends (the next epoch's start, or the log end).
//!
//! [`LeaderState`]: sluiceway_core::replication::LeaderState

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sluiceway_core::registry::BrokerId;
use sluiceway_core::{ErrorCode, Offset};
use sluiceway_proto::v1;
use tracing::{info, warn};

use crate::broker::{Broker, IsrProposal, PartitionError, blocking};
use crate::errors::{status, to_proto};
use crate::partition::{Partition, Role};

/// Longest period of the ISR shrink check (Kafka checks every lag/2; we also bound it so a
/// short lag time is honoured promptly and a long one does not stall the check).
pub const ISR_CHECK_INTERVAL_MS_MAX: u64 = 1_000;

/// Checks a replica fetch's partition before reading: this broker leads it at `leader_epoch`.
pub(crate) fn check_replica_fetch(
    p: &Partition,
    leader_epoch: Option<i32>,
) -> Result<(), PartitionError> {
    let Some(epoch) = leader_epoch else {
        return Err((
            ErrorCode::InvalidRequest,
            format!("a replica fetch of {} must carry leader_epoch", p.name()),
        ));
    };
    let current = match &*p.role() {
        Role::Leader(ls) => Some(ls.leader_epoch()),
        _ => None,
    };
    match current {
        Some(current) => fence(p, epoch, current),
        None => Err(p.not_leader()),
    }
}

fn fence(p: &Partition, epoch: i32, current: u32) -> Result<(), PartitionError> {
    if epoch < 0 || (epoch as u32) < current {
        return Err((
            ErrorCode::FencedLeaderEpoch,
            format!(
                "leader epoch {epoch} of {} is older than the current {current}",
                p.name()
            ),
        ));
    }
    if epoch as u32 > current {
        return Err((
            ErrorCode::UnknownLeaderEpoch,
            format!(
                "leader epoch {epoch} of {} is newer than this leader's {current}",
                p.name()
            ),
        ));
    }
    Ok(())
}

/// Feeds one replica fetch (after its read) to the leader state: `leader_end` is the log end
/// the read saw; `eligible` whether the registry has the follower registered now (a fenced
/// follower is never proposed for the ISR, KIP-841). Moves the high watermark when it advanced;
/// returns an ISR expansion to submit.
pub(crate) fn on_replica_fetch(
    p: &Arc<Partition>,
    follower: BrokerId,
    fetch_offset: Offset,
    leader_end: Offset,
    now_ms: u64,
    eligible: bool,
) -> Result<Option<IsrProposal>, PartitionError> {
    let mut role = p.role();
    let Role::Leader(ls) = &mut *role else {
        drop(role);
        return Err(p.not_leader());
    };
    match ls.on_follower_fetch(follower, fetch_offset, leader_end, now_ms, eligible) {
        Ok(outcome) => {
            if let Some(hw) = outcome.high_watermark {
                p.advance_high_watermark(hw);
            }
            Ok(outcome
                .propose_isr
                .map(|isr| (p.clone(), ls.leader_epoch(), isr)))
        }
        // Not a replica of the partition (the proto's rule: NOT_LEADER), or a fetch past the
        // log end that the read did not catch.
        Err(e) => Err((ErrorCode::NotLeader, e.to_string())),
    }
}

/// The leader-epoch entries covering `[fetch_offset, end)`: the entry containing
/// `fetch_offset`, then every entry starting below `end`.
pub(crate) fn epochs_covering(
    p: &Partition,
    fetch_offset: Offset,
    end: Offset,
) -> Vec<v1::LeaderEpochEntry> {
    let cache = p.epoch_cache();
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

impl Broker {
    /// Writes an ISR proposal to the registry on a blocking thread and feeds the outcome back
    /// to the leader state, if the same leadership term is still in place.
    pub(crate) fn submit_isr(&self, p: Arc<Partition>, epoch: u32, isr: Vec<BrokerId>) {
        let registry = self.registry.clone();
        let me = self.config.broker_id;
        let metrics = (
            self.metrics.isr_shrinks.clone(),
            self.metrics.isr_expands.clone(),
        );
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
                        &metrics.0
                    } else {
                        &metrics.1
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
    pub(crate) fn check_isr(&self) {
        let now = self.now_ms();
        let mut proposals = Vec::new();
        for p in self.hosted_partitions() {
            let mut role = p.role();
            if let Role::Leader(ls) = &mut *role
                && let Some(isr) = ls.maybe_shrink_isr(now)
            {
                info!(partition = %p.name(), from = ?ls.isr(), to = ?isr, "proposing to shrink the in-sync replicas");
                proposals.push((p.clone(), ls.leader_epoch(), isr));
            }
        }
        for (p, epoch, isr) in proposals {
            self.submit_isr(p, epoch, isr);
        }
    }

    /// OffsetForLeaderEpoch: where the asked epochs end in this leader's log.
    pub async fn offset_for_leader_epoch(
        &self,
        req: v1::OffsetForLeaderEpochRequest,
    ) -> Result<v1::OffsetForLeaderEpochResponse, tonic::Status> {
        if req.partitions.len() > sluiceway_core::limits::REQUEST_PARTITIONS_MAX {
            return Err(status(
                ErrorCode::InvalidRequest,
                format!(
                    "{} partitions in one request exceeds the limit of {}",
                    req.partitions.len(),
                    sluiceway_core::limits::REQUEST_PARTITIONS_MAX
                ),
            ));
        }
        let _permit = self.permit(self.requests()).await?;
        let mut results = Vec::with_capacity(req.partitions.len());
        for q in req.partitions {
            let mut r = v1::OffsetForLeaderEpochResult {
                topic: q.topic.clone(),
                partition: q.partition,
                error_code: 0,
                error_message: String::new(),
                leader_epoch: -1,
                end_offset: -1,
            };
            let answer = self.partition(&q.topic, q.partition).and_then(|p| {
                check_replica_fetch(&p, Some(q.current_leader_epoch))?;
                if q.leader_epoch < 0 {
                    return Ok(None);
                }
                let log_end = p.log.log_end_offset();
                Ok(p.epoch_cache()
                    .end_offset_for(q.leader_epoch as u32, log_end))
            });
            match answer {
                Ok(Some(e)) => {
                    r.leader_epoch = e.epoch as i32;
                    r.end_offset = e.start_offset.0 as i64;
                }
                Ok(None) => {}
                Err((code, message)) => {
                    r.error_code = to_proto(code);
                    r.error_message = message;
                }
            }
            results.push(r);
        }
        Ok(v1::OffsetForLeaderEpochResponse { results })
    }
}

/// Runs the ISR shrink check until shutdown.
pub async fn run_isr_timer(broker: Arc<Broker>) {
    let period = (broker.config.replica_lag_time_max_ms / 2).clamp(10, ISR_CHECK_INTERVAL_MS_MAX);
    let mut tick = tokio::time::interval(Duration::from_millis(period));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown = broker.shutdown_receiver();
    loop {
        tokio::select! {
            _ = tick.tick() => broker.check_isr(),
            _ = shutdown.changed() => return,
        }
    }
}

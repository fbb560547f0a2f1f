//! Group coordination in a cluster: which broker coordinates which group, and how its commits
//! are replicated (Kafka's design, KIP-less since 0.9).
//!
//! - **`__consumer_offsets` is a replicated topic** in the registry (internal: never listed,
//!   never produced to by clients), created by the first FindCoordinator once
//!   `offsets_topic_replication_factor` brokers are alive, with retention off (compaction by
//!   snapshot bounds it instead; see core's `GroupOffsetStore`). The role loop hosts, leads and
//!   follows its partitions like any other.
//! - **The coordinator of a group is the leader of its partition**
//!   (`partition_for_group(group, partition count)`). After every role pass
//!   ([`Groups::sync_coordination`]) each partition this broker leads is loaded into the
//!   group store (replayed from its log) and each one it stopped leading is unloaded; group
//!   requests for an unloaded partition answer NOT_COORDINATOR, so exactly one broker
//!   coordinates a group at a time, and clients find it with FindCoordinator (answered by the
//!   broker layer, `crate::broker`, which creates `__consumer_offsets` on first use).
//! - **A commit is acknowledged once replicated** ([`ReplicatedOffsetsLog`]): it goes through
//!   the leader's fenced append path and waits until the high watermark passes it (acks=all, at
//!   most `OFFSETS_COMMIT_TIMEOUT_MS`), so a committed offset survives the loss of the
//!   coordinator. A lost leadership answers NOT_COORDINATOR, missing replicas
//!   COORDINATOR_NOT_AVAILABLE (Kafka's mapping for offset commits).
//!
//! Group *membership* is not persisted: after a coordinator moves, members rejoin the new one
//! (a rebalance) and resume from the replicated commits.
//!
//! On one broker (the embedded registry) none of this applies: the broker coordinates every
//! group and owns the offsets logs itself.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use sluiceway_core::group::OffsetsLog;
use sluiceway_core::group::offsets::OFFSETS_TOPIC;
use sluiceway_core::limits::OFFSETS_COMMIT_TIMEOUT_MS;
use sluiceway_core::storage::{AppendInfo, PartitionLog};
use sluiceway_core::{Error, ErrorCode, Result};
use tracing::warn;

use super::Groups;
use crate::errors::PartitionError;
use crate::replication::{Partition, ReplicaManager};

/// A partition of `__consumer_offsets` this broker leads, as the group store appends to it.
#[derive(Debug)]
pub struct ReplicatedOffsetsLog {
    replicas: Weak<ReplicaManager>,
    partition: Arc<Partition>,
    runtime: tokio::runtime::Handle,
}

impl OffsetsLog for ReplicatedOffsetsLog {
    fn log(&self) -> &PartitionLog {
        &self.partition.log
    }

    /// Called on a blocking thread (the store's callers run there), so waiting on the runtime
    /// for the high watermark is allowed.
    fn append_committed(&self, set: &mut [u8]) -> Result<AppendInfo> {
        let replicas = self.replicas.upgrade().ok_or(Error::ShuttingDown)?;
        let p = &self.partition;
        let (info, leadership) = p.leader_append(set, -1).map_err(commit_error)?;
        let deadline = Instant::now() + Duration::from_millis(OFFSETS_COMMIT_TIMEOUT_MS);
        self.runtime
            .block_on(p.wait_for_replicas(
                info.last_offset,
                leadership,
                deadline,
                OFFSETS_COMMIT_TIMEOUT_MS,
                replicas.shutdown_receiver(),
            ))
            .map_err(commit_error)?;
        Ok(info)
    }
}

/// Kafka's mapping of a failed offsets append to what the committer is told: a coordinator that
/// lost its partition is NOT_COORDINATOR, one whose replicas are missing or slow is
/// COORDINATOR_NOT_AVAILABLE (both retriable after finding the coordinator again); anything
/// else (a storage failure) keeps its code.
fn commit_error(PartitionError { code, message }: PartitionError) -> Error {
    match code {
        ErrorCode::NotLeader
        | ErrorCode::FencedLeaderEpoch
        | ErrorCode::UnknownLeaderEpoch
        | ErrorCode::UnknownTopicOrPartition => Error::NotCoordinator(message),
        ErrorCode::NotEnoughReplicas
        | ErrorCode::NotEnoughReplicasAfterAppend
        | ErrorCode::RequestTimedOut => Error::CoordinatorNotAvailable(message),
        code => Error::Remote { code, message },
    }
}

impl Groups {
    /// After a role pass (blocking; cluster only): load the offsets partitions this broker now
    /// leads (or leads in a new term), unload the ones it stopped leading.
    pub fn sync_coordination(&self, replicas: &Arc<ReplicaManager>) {
        let Some(count) = replicas.known_partition_count(OFFSETS_TOPIC) else {
            return;
        };
        self.offsets.set_partition_count(count);
        let hosted = replicas.topic(OFFSETS_TOPIC);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        for p in 0..count {
            let led = hosted
                .as_ref()
                .and_then(|t| t.partitions.get(&p).cloned())
                .filter(|part| part.is_leader() && !part.is_deleted());
            match led {
                Some(part) => {
                    let term = part.leadership();
                    match self.offsets.loaded_term(p) {
                        Some(loaded) if loaded == term => continue,
                        // Led again after a gap this pass did not see: another coordinator may
                        // have served these groups meanwhile, so start from the log afresh.
                        Some(_) => self.unload(p),
                        None => {}
                    }
                    let log = Arc::new(ReplicatedOffsetsLog {
                        replicas: Arc::downgrade(replicas),
                        partition: part,
                        runtime: runtime.clone(),
                    });
                    if let Err(e) = self.load(p, log, term) {
                        warn!(partition = p, error = %e, "cannot load the offsets partition; its groups stay unavailable until the next pass");
                        self.unload(p);
                    }
                }
                None => self.unload(p),
            }
        }
    }
}

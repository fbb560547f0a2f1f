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
//!   ([`Broker::sync_group_coordination`]) each partition this broker leads is loaded into the
//!   group store (replayed from its log) and each one it stopped leading is unloaded; group
//!   requests for an unloaded partition answer NOT_COORDINATOR, so exactly one broker
//!   coordinates a group at a time, and clients find it with FindCoordinator.
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

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use sluiceway_core::group::OffsetsLog;
use sluiceway_core::group::offsets::{OFFSETS_TOPIC, partition_for_group};
use sluiceway_core::limits::{OFFSETS_COMMIT_TIMEOUT_MS, OFFSETS_TOPIC_PARTITIONS_DEFAULT};
use sluiceway_core::registry::{BrokerId, NewTopic};
use sluiceway_core::storage::{AppendInfo, PartitionLog};
use sluiceway_core::topic::{RETENTION_BYTES, RETENTION_MS};
use sluiceway_core::{Error, ErrorCode, Result};
use tracing::{info, warn};

use crate::broker::{Broker, blocking, leader_append};
use crate::partition::Partition;

/// A partition of `__consumer_offsets` this broker leads, as the group store appends to it.
#[derive(Debug)]
pub struct ReplicatedOffsetsLog {
    broker: Weak<Broker>,
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
        let broker = self.broker.upgrade().ok_or(Error::ShuttingDown)?;
        let p = &self.partition;
        let (info, leadership) = leader_append(p, set, -1).map_err(commit_error)?;
        let deadline = Instant::now() + Duration::from_millis(OFFSETS_COMMIT_TIMEOUT_MS);
        self.runtime
            .block_on(broker.wait_for_replicas(
                p,
                info.last_offset,
                leadership,
                deadline,
                OFFSETS_COMMIT_TIMEOUT_MS,
            ))
            .map_err(commit_error)?;
        Ok(info)
    }
}

/// Kafka's mapping of a failed offsets append to what the committer is told: a coordinator that
/// lost its partition is NOT_COORDINATOR, one whose replicas are missing or slow is
/// COORDINATOR_NOT_AVAILABLE (both retriable after finding the coordinator again); anything
/// else (a storage failure) keeps its code.
fn commit_error((code, message): (ErrorCode, String)) -> Error {
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

impl Broker {
    /// After a role pass (blocking; cluster only): load the offsets partitions this broker now
    /// leads (or leads in a new term), unload the ones it stopped leading.
    pub(crate) fn sync_group_coordination(self: &Arc<Self>) {
        let Some(count) = self.known_partition_count(OFFSETS_TOPIC) else {
            return;
        };
        self.groups.offsets.set_partition_count(count);
        let hosted = self.topic(OFFSETS_TOPIC);
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
                    match self.groups.offsets.loaded_term(p) {
                        Some(loaded) if loaded == term => continue,
                        // Led again after a gap this pass did not see: another coordinator may
                        // have served these groups meanwhile, so start from the log afresh.
                        Some(_) => self.groups.unload(p),
                        None => {}
                    }
                    let log = Arc::new(ReplicatedOffsetsLog {
                        broker: Arc::downgrade(self),
                        partition: part,
                        runtime: runtime.clone(),
                    });
                    if let Err(e) = self.groups.load(p, log, term) {
                        warn!(partition = p, error = %e, "cannot load the offsets partition; its groups stay unavailable until the next pass");
                        self.groups.unload(p);
                    }
                }
                None => self.groups.unload(p),
            }
        }
    }

    /// Where `group`'s coordinator is: (broker id, address). See [`crate::coordination`].
    pub async fn find_coordinator(&self, group: &str) -> Result<(BrokerId, String)> {
        let me = self.config.broker_id;
        let address_of = |id: BrokerId| -> Result<String> {
            self.registry
                .brokers()?
                .into_iter()
                .find(|b| b.id == id && b.alive)
                .map(|b| b.address)
                .ok_or_else(|| {
                    Error::CoordinatorNotAvailable(format!(
                        "the coordinator of group {group:?}, broker {id}, is not alive"
                    ))
                })
        };
        if !self.registry.is_cluster() {
            return Ok((me, address_of(me)?));
        }
        let info = match self.registry.topic(OFFSETS_TOPIC)? {
            Some(info) => info,
            None => self.create_offsets_topic().await?,
        };
        let p = partition_for_group(group, info.partitions.len() as u32);
        let leader = info.partitions[p as usize].leader.ok_or_else(|| {
            Error::CoordinatorNotAvailable(format!(
                "{OFFSETS_TOPIC}-{p}, which holds group {group:?}, has no leader now"
            ))
        })?;
        Ok((leader, address_of(leader)?))
    }

    /// Creates `__consumer_offsets` in the registry (another broker may win the race: then its
    /// topic is the one). COORDINATOR_NOT_AVAILABLE while fewer brokers than its replication
    /// factor are alive.
    async fn create_offsets_topic(&self) -> Result<sluiceway_core::registry::TopicInfo> {
        let rf = self.config.offsets_topic_replication_factor;
        let live = self.registry.brokers()?.iter().filter(|b| b.alive).count();
        if live < rf as usize {
            return Err(Error::CoordinatorNotAvailable(format!(
                "{OFFSETS_TOPIC} needs {rf} live brokers (offsets_topic_replication_factor) and {live} are alive"
            )));
        }
        let new = NewTopic {
            name: OFFSETS_TOPIC.to_owned(),
            partitions: OFFSETS_TOPIC_PARTITIONS_DEFAULT,
            replication_factor: rf,
            // Retention would drop live commits: compaction by snapshot bounds the log instead.
            configs: BTreeMap::from([
                (RETENTION_MS.to_owned(), "-1".to_owned()),
                (RETENTION_BYTES.to_owned(), "-1".to_owned()),
            ]),
        };
        let registry = self.registry.clone();
        match blocking(move || registry.create_topic(&new)).await {
            Ok(info) => {
                info!(
                    partitions = info.partitions.len(),
                    replication_factor = rf,
                    "created {OFFSETS_TOPIC}"
                );
                Ok(info)
            }
            Err(e) if e.code() == ErrorCode::TopicAlreadyExists => {
                self.registry.topic(OFFSETS_TOPIC)?.ok_or_else(|| {
                    Error::CoordinatorNotAvailable(format!("{OFFSETS_TOPIC} is being created"))
                })
            }
            Err(e) => Err(Error::CoordinatorNotAvailable(format!(
                "cannot create {OFFSETS_TOPIC}: {e}"
            ))),
        }
    }
}

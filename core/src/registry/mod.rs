//! The registry: where brokers register and where topic and partition metadata lives (the notes'
//! 注册中心, Kafka's ZooKeeper). Clients never talk to it directly: every broker serves the
//! registry's gRPC service and answers from its [`Registry`] backend.
//!
//! Two backends behind one trait:
//! - [`EmbeddedRegistry`] (default, one machine): the broker is its own registry and controller;
//!   the state is one JSON file in its data directory, replaced atomically on every change.
//! - [`EtcdRegistry`] (clusters): leases for liveness, an elected controller, metadata in etcd
//!   (key layout in `docs/FORMAT.md`, "Cluster metadata in etcd").
//!
//! **API Boundary**: calls may block (file or network I/O), so async callers run them on a
//! blocking thread. Reads are answered from an in-memory snapshot in both backends and are cheap.
//!
//! Security metadata lives here too, so every broker checks the same: SCRAM credentials by user
//! and ACL bindings (`docs/FORMAT.md`, "Credentials and ACLs").
//!
//! Invariants: topic names are valid ([`crate::topic::validate_topic_name`]); each partition's
//! `replicas` are distinct brokers, `isr ⊆ replicas`, and the leader (when present) is in `isr`;
//! `leader_epoch` only grows.

mod embedded;
mod etcd;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

pub use embedded::EmbeddedRegistry;
pub use etcd::{EtcdOptions, EtcdRegistry, EtcdSpec};

use crate::acl::AclBinding;
use crate::error::{Error, Result};
use crate::scram::ScramCredential;

/// A broker's id (`--broker-id`), unique in a cluster. Kafka's ids are non-negative `int32`s on
/// the wire; ours are too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BrokerId(pub u32);

impl BrokerId {
    /// Largest id (so it fits a non-negative `int32` on the wire).
    pub const MAX: BrokerId = BrokerId(i32::MAX as u32);
}

impl fmt::Display for BrokerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One broker as the registry knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerInfo {
    pub id: BrokerId,
    /// Where clients reach its gRPC services, `HOST:PORT`.
    pub address: String,
    /// Whether the registry considers it alive (embedded: itself, always; etcd: holds its lease).
    pub alive: bool,
}

/// One partition's placement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: u32,
    /// `None` while no replica can lead.
    pub leader: Option<BrokerId>,
    /// The preferred leader first.
    pub replicas: Vec<BrokerId>,
    /// In-sync replicas, the leader included.
    pub isr: Vec<BrokerId>,
    /// Grows with every leadership change; requests carrying an older epoch are fenced.
    pub leader_epoch: u32,
}

/// One topic's placement and configuration overrides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub replication_factor: u32,
    /// In partition order: `partitions[i].partition == i`.
    pub partitions: Vec<PartitionInfo>,
    /// The overrides given at creation (Kafka keys); defaults are not stored, so a change of the
    /// broker's defaults applies to every topic that did not override the key.
    pub configs: BTreeMap<String, String>,
}

/// A topic to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    pub partitions: u32,
    pub replication_factor: u32,
    /// Already validated by the caller ([`crate::topic::TopicConfig::parse`]).
    pub configs: BTreeMap<String, String>,
}

/// The registry backend. See the module docs for the blocking rule.
pub trait Registry: Send + Sync + fmt::Debug {
    /// Records (or updates the address of) a broker.
    fn register_broker(&self, id: BrokerId, address: &str) -> Result<()>;
    /// Every known broker.
    fn brokers(&self) -> Result<Vec<BrokerInfo>>;
    /// Whether broker `id` is registered and alive now (etcd: holds a live lease), answered from
    /// the snapshot without allocating. A leader proposes only registered followers for its ISR
    /// (Kafka's KIP-841: a fenced broker never joins an ISR).
    fn is_registered(&self, id: BrokerId) -> bool {
        self.brokers()
            .is_ok_and(|brokers| brokers.iter().any(|b| b.id == id && b.alive))
    }
    /// The broker acting as controller, if any.
    fn controller(&self) -> Option<BrokerId>;
    /// Every topic, sorted by name.
    fn topics(&self) -> Result<Vec<TopicInfo>>;
    /// One topic, `None` when it does not exist.
    fn topic(&self, name: &str) -> Result<Option<TopicInfo>>;
    /// Creates a topic, placing its replicas on distinct live brokers. Errors: InvalidTopic,
    /// TopicAlreadyExists, InvalidPartitions, InvalidReplicationFactor.
    fn create_topic(&self, topic: &NewTopic) -> Result<TopicInfo>;
    /// Deletes a topic's metadata and returns what it was (the caller deletes the data).
    /// UnknownTopicOrPartition when absent.
    fn delete_topic(&self, name: &str) -> Result<TopicInfo>;
    /// A version number that grows whenever anything above changes (brokers, controller, topics,
    /// partition leaders / ISR / epochs). The broker waits on it to re-check its partitions' roles.
    /// The snapshot read after a change is at least as new as the version seen.
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64>;
    /// Leader only: replaces the in-sync replicas of `topic`-`partition`, provided `leader` still
    /// leads it at `leader_epoch` (etcd: a transaction guarded by the partition state's revision,
    /// so a deposed leader's write fails). Returns the partition as now stored. Errors:
    /// FencedLeaderEpoch / NotLeader when the state moved on, UnknownTopicOrPartition,
    /// IneligibleReplica (retriable) when a broker being added is not registered, and a
    /// retriable error when the registry cannot be reached. `isr` must contain `leader` and be a
    /// subset of the replicas (InvalidRequest otherwise).
    fn alter_isr(
        &self,
        topic: &str,
        partition: u32,
        leader: BrokerId,
        leader_epoch: u32,
        isr: &[BrokerId],
    ) -> Result<PartitionInfo>;
    /// The stored SCRAM-SHA-256 credential of `user`, answered from the snapshot.
    fn credential(&self, user: &str) -> Option<ScramCredential>;
    /// Every user with a credential, sorted by name.
    fn users(&self) -> Result<Vec<(String, ScramCredential)>>;
    /// Creates or replaces `user`'s credential.
    fn put_credential(&self, user: &str, credential: &ScramCredential) -> Result<()>;
    /// Deletes `user`'s credential; `false` when there was none.
    fn delete_credential(&self, user: &str) -> Result<bool>;
    /// Every ACL binding (shared, not copied: the authorizer reads it on every request).
    fn acls(&self) -> Arc<Vec<AclBinding>>;
    /// Adds bindings (validated by the caller); ones already present are kept once.
    fn add_acls(&self, acls: &[AclBinding]) -> Result<()>;
    /// Removes exactly these bindings; returns how many existed.
    fn remove_acls(&self, acls: &[AclBinding]) -> Result<usize>;
    /// Hands out `count` idempotent producer ids never handed out before in this cluster (Kafka's
    /// `AllocateProducerIds`, KIP-730): returns the first of the block `first..first + count`.
    /// The allocation is durable before it returns (embedded: the state file; etcd: a guarded
    /// write), so a restarted broker never hands out an id twice. A broker asks for a block and
    /// serves `InitProducerId` from it.
    fn allocate_producer_ids(&self, count: u32) -> Result<i64>;
    /// Whether partitions have replicas on other brokers (the etcd backend): the broker then runs
    /// replication. The embedded registry answers false.
    fn is_cluster(&self) -> bool {
        false
    }
    /// Leaves the registry on a graceful shutdown (etcd: revokes the lease, so the controller
    /// moves leadership away at once instead of after the session timeout).
    fn shutdown(&self) {}
}

/// The end of the producer id block starting at `first`; an error once ids run out (`i64::MAX`).
pub(crate) fn producer_id_block_end(first: i64, count: u32) -> Result<i64> {
    if first < 0 || count == 0 {
        return Err(Error::InvalidRequest(format!(
            "producer id block of {count} at {first}"
        )));
    }
    first
        .checked_add(i64::from(count))
        .ok_or_else(|| Error::Remote {
            code: crate::ErrorCode::UnknownServerError,
            message: "the cluster has handed out every producer id".into(),
        })
}

/// Places `partitions` partitions with `replication_factor` copies on `brokers` (sorted, distinct
/// live broker ids): Kafka's rack-unaware assignment (`AdminUtils.assignReplicasToBrokers`).
/// Partition p's first replica (its preferred leader) is `brokers[(start + p) % n]`, so leaders
/// go round the brokers; the followers follow it at a shift that grows by one after every `n`
/// partitions, so the followers of one broker's partitions spread over the others too. Copies of
/// one partition are always on distinct brokers. `start` (a hash of the topic name) makes
/// different topics start on different brokers; Kafka picks it at random, we derive it so the
/// result is deterministic. Returns `replicas[p]`.
///
/// Errors: InvalidReplicationFactor when the factor is 0 or larger than the number of brokers,
/// InvalidPartitions when `partitions` is 0.
pub fn place_replicas(
    brokers: &[BrokerId],
    partitions: u32,
    replication_factor: u32,
    start: u32,
) -> Result<Vec<Vec<BrokerId>>> {
    let n = brokers.len();
    if replication_factor == 0 || replication_factor as usize > n {
        return Err(Error::InvalidReplicationFactor(format!(
            "replication factor {replication_factor} is larger than the number of live brokers ({n})"
        )));
    }
    if partitions == 0 {
        return Err(Error::InvalidPartitions("0 partitions".into()));
    }
    debug_assert!(brokers.windows(2).all(|w| w[0] < w[1]), "sorted, distinct");
    let start = start as usize % n;
    let mut shift = start;
    let mut placement = Vec::with_capacity(partitions as usize);
    for p in 0..partitions as usize {
        if p > 0 && p % n == 0 {
            shift += 1;
        }
        let first = (start + p) % n;
        let mut replicas = Vec::with_capacity(replication_factor as usize);
        replicas.push(brokers[first]);
        for j in 0..replication_factor as usize - 1 {
            // 1 + (shift + j) % (n - 1) takes rf - 1 distinct values in [1, n - 1]: never `first`.
            let offset = 1 + (shift + j) % (n - 1);
            replicas.push(brokers[(first + offset) % n]);
        }
        placement.push(replicas);
    }
    Ok(placement)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn placement_is_distinct_and_spreads_leaders() {
        for n in 1..=7u32 {
            let brokers: Vec<BrokerId> = (1..=n).map(BrokerId).collect();
            for rf in 1..=n {
                for start in [0, 5, 1234567] {
                    let placement = place_replicas(&brokers, 3 * n, rf, start).unwrap();
                    let mut leaders = BTreeMap::new();
                    for replicas in &placement {
                        let distinct: BTreeSet<_> = replicas.iter().collect();
                        assert_eq!(distinct.len(), rf as usize, "{replicas:?}");
                        *leaders.entry(replicas[0]).or_insert(0) += 1;
                    }
                    assert!(leaders.values().all(|c| *c == 3), "{leaders:?}");
                }
            }
        }
        assert!(matches!(
            place_replicas(&[BrokerId(1)], 1, 2, 0),
            Err(Error::InvalidReplicationFactor(_))
        ));
    }

    #[test]
    fn placement_matches_kafkas_example() {
        // Kafka's javadoc example: 5 brokers, 10 partitions, 3 replicas, start 0 (shift 0 too).
        let brokers: Vec<BrokerId> = (0..5).map(BrokerId).collect();
        let placement = place_replicas(&brokers, 10, 3, 0).unwrap();
        let ids = |p: usize| placement[p].iter().map(|b| b.0).collect::<Vec<_>>();
        assert_eq!(ids(0), [0, 1, 2]);
        assert_eq!(ids(4), [4, 0, 1]);
        assert_eq!(ids(5), [0, 2, 3]);
        assert_eq!(ids(9), [4, 1, 2]);
    }
}

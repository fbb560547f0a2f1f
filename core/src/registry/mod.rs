//! The registry: where brokers register and where topic and partition metadata lives (the notes'
//! 注册中心, Kafka's ZooKeeper). Clients never talk to it directly: every broker serves the
//! registry's gRPC service and answers from its [`Registry`] backend.
//!
//! Two backends behind one trait:
//! - [`EmbeddedRegistry`] (default, one machine): the broker is its own registry and controller;
//!   the state is one JSON file in its data directory, replaced atomically on every change.
//! - etcd (clusters; the replication issue): leases for liveness, an elected controller, metadata
//!   in etcd.
//!
//! **API Boundary**: calls may block (file or network I/O), so async callers run them on a
//! blocking thread. Reads are answered from an in-memory snapshot in both backends and are cheap.
//!
//! Invariants: topic names are valid ([`crate::topic::validate_topic_name`]); each partition's
//! `replicas` are distinct brokers, `isr ⊆ replicas`, and the leader (when present) is in `isr`;
//! `leader_epoch` only grows.

mod embedded;

use std::collections::BTreeMap;
use std::fmt;

pub use embedded::EmbeddedRegistry;

use crate::error::Result;

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
    /// FencedLeaderEpoch / NotLeader when the state moved on, UnknownTopicOrPartition, and a
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
    /// Whether partitions have replicas on other brokers (the etcd backend): the broker then runs
    /// replication. The embedded registry answers false.
    fn is_cluster(&self) -> bool {
        false
    }
    /// Leaves the registry on a graceful shutdown (etcd: revokes the lease, so the controller
    /// moves leadership away at once instead of after the session timeout).
    fn shutdown(&self) {}
}

//! Replication: the partitions this broker hosts and their roles (Kafka's `ReplicaManager`).
//!
//! - [`partition`] — one hosted partition: its log, leader-epoch history, role, watches,
//!   and the leader's hooks (fencing, the leader append, the acks=all wait, replica fetches).
//! - `roles` — [`ReplicaManager::apply_registry`]: hosting, leading and following partitions as
//!   the registry says.
//! - `leader` — the leader's side: ISR proposals ([`ReplicaManager::submit_isr`], the shrink
//!   timer [`run_isr_timer`]) and OffsetForLeaderEpoch.
//! - `fetcher` — the follower's side: one fetcher task per leader broker.
//!
//! **Architecture Invariant**: this module never imports `crate::broker`, `crate::groups` or
//! `crate::server`; what those need from a pass over the registry comes back as a value
//! ([`Applied`]). Request-level concerns (in-flight permits, request validation, gRPC statuses)
//! stay in `crate::broker`; here a failure is a [`PartitionError`] or a core `Error`.
//!
//! Concurrency: `topics` and `known` are read far more often than written; writes happen in a
//! role pass or an embedded CreateTopic / DeleteTopic, which the broker serializes with its
//! admin lock. The locks are parking_lot's and never held across an `.await`.

pub mod fetcher;
pub mod leader;
pub mod partition;
pub mod produce_order;
pub mod roles;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use sluiceway_core::registry::{BrokerId, Registry};
use sluiceway_core::replication::{LeaderEpochCache, ReplicationConfig};
use sluiceway_core::storage::{Clock, PartitionLog};
use sluiceway_core::topic::TopicConfig;
use sluiceway_core::{Error, Result};
use tokio::sync::watch;

use crate::config::BrokerConfig;
use crate::errors::PartitionError;
use crate::metrics::Metrics;
use crate::topics::is_internal_topic;

pub use leader::run_isr_timer;
pub use partition::{FollowerRole, IsrProposal, Partition, Role};
pub use roles::Applied;

/// A hosted topic: its effective configuration and the partitions this broker holds a replica
/// of (all of them on one broker; in a cluster, those whose replicas include this broker).
#[derive(Debug)]
pub struct Topic {
    pub config: TopicConfig,
    /// The topic's partition count in the registry.
    pub partition_count: u32,
    pub partitions: BTreeMap<u32, Arc<Partition>>,
}

/// See the module docs.
#[derive(Debug)]
pub struct ReplicaManager {
    pub config: BrokerConfig,
    pub registry: Arc<dyn Registry>,
    pub(crate) clock: Arc<dyn Clock>,
    /// The replication state machines' clock (monotonic ms since start).
    started: Instant,
    pub(crate) replication: ReplicationConfig,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    /// Partition counts of every topic in the registry, hosted here or not (what the group
    /// coordinators assign, and what tells NOT_LEADER from UNKNOWN_TOPIC_OR_PARTITION).
    known: RwLock<BTreeMap<String, u32>>,
    shutdown: watch::Receiver<bool>,
    pub(crate) metrics: Arc<Metrics>,
    /// Bumped when a follower role changed: fetchers re-read their partitions.
    pub(crate) follower_roles: watch::Sender<u64>,
    /// Source brokers that have a fetcher task.
    pub(crate) fetchers: Mutex<HashSet<BrokerId>>,
}

impl ReplicaManager {
    /// No partition is hosted until the first [`apply_registry`](ReplicaManager::apply_registry)
    /// (or, on one broker, CreateTopic). `shutdown` turns true when the broker starts shutting
    /// down.
    pub fn new(
        config: BrokerConfig,
        registry: Arc<dyn Registry>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
    ) -> ReplicaManager {
        let replication = ReplicationConfig {
            replica_lag_time_max_ms: config.replica_lag_time_max_ms,
        };
        ReplicaManager {
            config,
            registry,
            clock,
            started: Instant::now(),
            replication,
            topics: RwLock::new(HashMap::new()),
            known: RwLock::new(BTreeMap::new()),
            shutdown,
            metrics,
            follower_roles: watch::channel(0).0,
            fetchers: Mutex::new(HashSet::new()),
        }
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().get(name).cloned()
    }

    /// Every hosted topic, sorted by name.
    pub fn hosted_topics(&self) -> Vec<(String, Arc<Topic>)> {
        let mut v: Vec<(String, Arc<Topic>)> = self
            .topics
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Every hosted partition.
    pub fn hosted_partitions(&self) -> Vec<Arc<Partition>> {
        self.hosted_topics()
            .into_iter()
            .flat_map(|(_, t)| t.partitions.values().cloned().collect::<Vec<_>>())
            .collect()
    }

    /// Partition counts of every client topic in the registry (what the group coordinators
    /// assign).
    pub fn topic_partition_counts(&self) -> BTreeMap<String, u32> {
        let mut counts = self.known.read().clone();
        counts.retain(|name, _| !is_internal_topic(name));
        counts
    }

    /// The partition count of `topic` in the registry as last applied.
    pub fn known_partition_count(&self, topic: &str) -> Option<u32> {
        self.known.read().get(topic).copied()
    }

    /// Whether the partition exists in the registry (commits to it are accepted; in a cluster
    /// this broker need not host it).
    pub fn has_partition(&self, topic: &str, partition: u32) -> bool {
        self.known.read().get(topic).is_some_and(|n| partition < *n)
    }

    /// The hosted partition; NOT_LEADER when the topic has it but this broker holds no replica
    /// (in a cluster), UNKNOWN_TOPIC_OR_PARTITION when it does not exist.
    pub fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>, PartitionError> {
        if let Some(p) = self
            .topic(topic)
            .and_then(|t| t.partitions.get(&partition).cloned())
            .filter(|p| !p.is_deleted())
        {
            return Ok(p);
        }
        if self.has_partition(topic, partition) {
            return Err(PartitionError::new(
                sluiceway_core::ErrorCode::NotLeader,
                format!(
                    "this broker holds no replica of {topic}-{partition}; refresh the metadata"
                ),
            ));
        }
        Err(PartitionError::unknown(topic, partition))
    }

    /// The hosted partition if this broker leads it (NOT_LEADER otherwise).
    pub fn led_partition(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<Arc<Partition>, PartitionError> {
        let p = self.partition(topic, partition)?;
        if !p.is_leader() {
            return Err(p.not_leader());
        }
        Ok(p)
    }

    /// Hosts a topic created on this broker alone (the embedded registry's CreateTopic), its
    /// partitions opened by the caller.
    pub fn insert_topic(&self, name: &str, topic: Topic) {
        let count = topic.partition_count;
        self.topics.write().insert(name.to_owned(), Arc::new(topic));
        self.known.write().insert(name.to_owned(), count);
    }

    /// Forgets a topic deleted on this broker alone (the embedded registry's DeleteTopic) and
    /// returns it, so the caller removes its data.
    pub fn remove_topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.known.write().remove(name);
        self.topics.write().remove(name)
    }

    /// The replication clock: monotonic milliseconds since the broker started.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// A receiver that sees `true` once shutdown begins.
    pub fn shutdown_receiver(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }
}

/// Opens one partition's log and leader-epoch history in the data directory (creating them).
pub fn open_partition(
    data_dir: &Path,
    clock: &Arc<dyn Clock>,
    topic: &str,
    partition: u32,
    config: &TopicConfig,
) -> Result<Arc<Partition>> {
    let dir: PathBuf = data_dir.join(PartitionLog::dir_name(topic, partition));
    let log = PartitionLog::open(dir.clone(), config.log.clone(), clock.clone())?;
    let mut cache = LeaderEpochCache::open(&dir)?;
    // A crash between a truncation of the log and of the history leaves entries past the log
    // end; Kafka drops them on open too.
    cache.truncate_from_end(log.log_end_offset().next())?;
    Ok(Arc::new(Partition::new(
        Arc::from(topic),
        partition,
        config.min_insync_replicas,
        log,
        cache,
    )))
}

/// Deletes a topic's local data (its logs and their directories). Readers still holding a
/// partition keep their open files (Linux keeps unlinked files readable); appends after this
/// fail and are answered as such.
pub fn remove_topic_data(topic: &Topic) -> Result<()> {
    for p in topic.partitions.values() {
        p.mark_deleted();
    }
    for p in topic.partitions.values() {
        let _ = p.log.close();
        let dir = p.log.dir().to_path_buf();
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove partition directory", &dir, e)),
        }
    }
    Ok(())
}

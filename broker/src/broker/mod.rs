//! The broker: its state and request logic — the registry backend, the in-flight bounds, the
//! data-directory lock, and the produce / fetch / list-offsets / admin / metadata operations
//! (the gRPC services in [`crate::server`] are thin wrappers over these). It sits on top of
//! [`crate::replication`] (the hosted partitions and their roles: [`ReplicaManager`]) and
//! [`crate::groups`] (the group coordinators), and ties them together in the role pass
//! ([`Broker::apply_registry`], `role_loop.rs`).
//!
//! - `produce.rs` — Produce and its acks; `fetch.rs` — Fetch (consumers and followers, long
//!   polls), ListOffsets, OffsetForLeaderEpoch; `admin.rs` — topics and metadata;
//!   `coordinator.rs` — FindCoordinator; `producer_ids.rs` — InitProducerId; `role_loop.rs` —
//!   the role pass and its loop.
//!
//! **Architecture Invariant**: nothing below this module (`replication`, `groups`, `metrics`,
//! `errors`, `config`) imports it; only `server` and `cli` do.
//!
//! Concurrency: appends run on tokio's blocking pool (`spawn_blocking`); the log serializes
//! appends to one partition, different partitions proceed in parallel. Reads also run on the
//! blocking pool. Admin changes (create / delete topic) and the role loop's passes are
//! serialized by `admin_lock`.
//!
//! **Only the leader serves clients**: produce, consumer fetches and list-offsets for a
//! partition this broker does not lead (it follows it, or does not host it although the topic
//! exists) answer NOT_LEADER, so the client refreshes its metadata. Consumers never see offsets
//! at or above the high watermark (HW).
//!
//! acks: `0` answers before appending (errors found later are only logged); `1` answers after
//! the leader's append returned, i.e. once it is durable on the leader per the topic's flush
//! policy; `-1` (all), Kafka's rules: before appending, the committed in-sync replica set (ISR)
//! must have at least `min.insync.replicas` members (else NOT_ENOUGH_REPLICAS, nothing
//! appended); after appending, the answer waits until the HW passes the set's last offset, i.e.
//! every ISR member has it (on disk, with flush policy `always`) — then NOT_ENOUGH_REPLICAS_AFTER_APPEND
//! if the ISR shrank below `min.insync.replicas` meanwhile, else success. The wait ends with
//! REQUEST_TIMED_OUT after the request's `timeout_ms` (0: `ACKS_ALL_TIMEOUT_MS_DEFAULT`) and with
//! NOT_LEADER when this broker stops leading the partition (deposed: it acknowledges nothing
//! more) or shuts down. On one broker (the embedded registry) the ISR is the leader alone, so
//! the HW is the log end after each append and `-1` behaves as `1`.

mod admin;
mod coordinator;
mod fetch;
mod produce;
mod producer_ids;
mod role_loop;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sluiceway_core::limits::{
    IN_FLIGHT_FETCHES_MAX, IN_FLIGHT_REQUESTS_MAX, IN_FLIGHT_WAIT_MS_MAX, REQUEST_PARTITIONS_MAX,
};
use sluiceway_core::registry::{EmbeddedRegistry, EtcdOptions, EtcdRegistry, EtcdSpec, Registry};
use sluiceway_core::storage::{Clock, SystemClock};
use sluiceway_core::topic::TopicConfig;
use sluiceway_core::{Error, ErrorCode, Result, TimestampMs};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tracing::{info, warn};

use crate::config::{BrokerConfig, RegistryKind};
use crate::errors::{blocking, status};
use crate::groups::Groups;
use crate::metrics::{Metrics, PartitionSnapshot, Snapshot};
use crate::replication::ReplicaManager;

pub use role_loop::run_role_loop;

/// See the module docs.
#[derive(Debug)]
pub struct Broker {
    /// Held (locked) for the broker's lifetime: one broker per data directory.
    _lock: std::fs::File,
    pub config: BrokerConfig,
    pub registry: Arc<dyn Registry>,
    /// The hosted partitions, their roles, the fetchers.
    pub replicas: Arc<ReplicaManager>,
    pub(crate) clock: Arc<dyn Clock>,
    /// Serializes admin changes (create / delete topic) with the role loop's passes.
    pub(crate) admin_lock: tokio::sync::Mutex<()>,
    requests: Arc<Semaphore>,
    fetches: Arc<Semaphore>,
    shutdown: watch::Sender<bool>,
    pub metrics: Arc<Metrics>,
    /// The consumer-group coordinators and `__consumer_offsets`.
    pub groups: Arc<Groups>,
    /// Counts the role loop's completed passes (admin requests wait on it).
    pub(crate) applied: watch::Sender<u64>,
    /// Idempotent producer ids, served from a block allocated through the registry.
    producer_ids: producer_ids::ProducerIds,
}

/// Opens the registry backend the configuration names: the embedded one in the data directory,
/// or a connection to etcd.
pub async fn open_registry(config: &BrokerConfig) -> Result<Arc<dyn Registry>> {
    match &config.registry {
        RegistryKind::Embedded => {
            let (dir, id) = (config.data_dir.clone(), config.broker_id);
            let r = blocking(move || {
                std::fs::create_dir_all(&dir)
                    .map_err(|e| Error::io("create data directory", &dir, e))?;
                EmbeddedRegistry::open(&dir, id)
            })
            .await?;
            Ok(Arc::new(r))
        }
        RegistryKind::Etcd(spec) => {
            let spec = EtcdSpec::parse(spec)?;
            let options = EtcdOptions {
                session_timeout_ms: config.registry_session_timeout_ms,
                leader_rebalance_interval_ms: config.leader_rebalance_interval_ms,
                ..EtcdOptions::default()
            };
            let r: Arc<dyn Registry> =
                EtcdRegistry::connect(&spec, config.broker_id, options).await?;
            Ok(r)
        }
    }
}

impl Broker {
    /// Takes the data directory and opens `__consumer_offsets`. The partitions are opened by the
    /// first [`apply_registry`](Broker::apply_registry) pass (the caller runs it before serving).
    pub fn open(config: BrokerConfig, registry: Arc<dyn Registry>) -> Result<Broker> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| Error::io("create data directory", &config.data_dir, e))?;
        let lock = lock_data_dir(&config.data_dir)?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        // `__consumer_offsets` gets the broker's default log configuration (its flush policy);
        // the store itself turns retention off.
        let defaults = TopicConfig::parse(&config.topic_defaults, &BTreeMap::new())?;
        let groups = Groups::open(
            &config.data_dir,
            defaults.log,
            clock.clone(),
            registry.is_cluster(),
            config.group_initial_rebalance_delay_ms,
        )?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let metrics = Arc::new(Metrics::default());
        let producer_ids = producer_ids::ProducerIds::new(registry.clone());
        let replicas = Arc::new(ReplicaManager::new(
            config.clone(),
            registry.clone(),
            clock.clone(),
            metrics.clone(),
            shutdown_rx,
        ));
        Ok(Broker {
            _lock: lock,
            config,
            registry,
            replicas,
            clock,
            admin_lock: tokio::sync::Mutex::new(()),
            requests: Arc::new(Semaphore::new(IN_FLIGHT_REQUESTS_MAX)),
            fetches: Arc::new(Semaphore::new(IN_FLIGHT_FETCHES_MAX)),
            shutdown,
            metrics,
            groups: Arc::new(groups),
            applied: watch::channel(0).0,
            producer_ids,
        })
    }

    /// Whether the partition exists in the registry (commits to it are accepted; in a cluster
    /// this broker need not host it).
    pub fn has_partition(&self, topic: &str, partition: u32) -> bool {
        self.replicas.has_partition(topic, partition)
    }

    /// Starts the graceful shutdown: waiting fetches answer at once, new requests are refused.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// A receiver that sees `true` once shutdown begins.
    pub fn shutdown_receiver(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Waits (bounded) until no request holds an in-flight slot, acks=0 appends included.
    pub async fn drain(&self, within: Duration) -> bool {
        let all = async {
            let r = self
                .requests
                .acquire_many(IN_FLIGHT_REQUESTS_MAX as u32)
                .await;
            let f = self
                .fetches
                .acquire_many(IN_FLIGHT_FETCHES_MAX as u32)
                .await;
            drop((r, f));
        };
        tokio::time::timeout(within, all).await.is_ok()
    }

    /// Closes every log cleanly (flush + clean-shutdown marker) so the next start skips recovery.
    pub fn close_all(&self) {
        for p in self.replicas.hosted_partitions() {
            // Waits for a follower append in flight; later ones see the shutdown and skip.
            let _gate = p.role_change_gate();
            if let Err(e) = p.log.close() {
                warn!(partition = %p.name(), error = %e, "closing the log failed");
            }
        }
        self.groups.close();
    }

    /// One round of housekeeping on every log: age rolls and interval flushes.
    pub fn tick_all(&self) {
        for p in self.replicas.hosted_partitions() {
            if let Err(e) = p.log.tick() {
                warn!(partition = %p.name(), error = %e, "log tick failed");
            }
        }
        self.groups.tick();
    }

    /// One retention pass over every log; the leader-epoch history follows the log start.
    pub fn enforce_retention_all(&self) {
        for p in self.replicas.hosted_partitions() {
            match p.log.enforce_retention() {
                Ok(0) => {}
                Ok(n) => {
                    info!(partition = %p.name(), segments = n, "retention deleted segments");
                    if let Err(e) = p
                        .epoch_cache()
                        .truncate_from_start(p.log.log_start_offset())
                    {
                        warn!(partition = %p.name(), error = %e, "updating the leader-epoch checkpoint failed");
                    }
                }
                Err(e) => {
                    warn!(partition = %p.name(), error = %e, "retention failed")
                }
            }
        }
    }

    /// The in-flight bound shared by produce, list-offsets, admin and group commits.
    pub(crate) fn requests(&self) -> &Arc<Semaphore> {
        &self.requests
    }

    pub(crate) async fn permit(
        &self,
        sem: &Arc<Semaphore>,
    ) -> std::result::Result<OwnedSemaphorePermit, tonic::Status> {
        if self.is_shutting_down() {
            return Err(status(
                ErrorCode::ShuttingDown,
                "the broker is shutting down",
            ));
        }
        match tokio::time::timeout(
            Duration::from_millis(IN_FLIGHT_WAIT_MS_MAX),
            sem.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(_)) => Err(status(
                ErrorCode::ShuttingDown,
                "the broker is shutting down",
            )),
            Err(_) => Err(status(
                ErrorCode::RequestTimedOut,
                format!(
                    "the broker is at its in-flight request limit; waited {IN_FLIGHT_WAIT_MS_MAX} ms"
                ),
            )),
        }
    }

    pub fn topic_defaults(&self) -> &BTreeMap<String, String> {
        &self.config.topic_defaults
    }

    pub fn now(&self) -> TimestampMs {
        self.clock.now_ms()
    }

    /// What the metrics endpoint renders besides the counters: gauges read now.
    pub fn metrics_snapshot(&self) -> Snapshot {
        let (groups, members) = self.groups.counts();
        let mut partitions = Vec::new();
        for (topic, t) in self.replicas.hosted_topics() {
            for p in t.partitions.values() {
                partitions.push(PartitionSnapshot {
                    topic: topic.clone(),
                    partition: p.partition,
                    isr_size: p.isr_size(),
                    replica_count: p.replica_count(),
                    log_end_offset: p.log.log_end_offset().0,
                    high_watermark: p.log.high_watermark().0,
                    log_start_offset: p.log.log_start_offset().0,
                    size_bytes: p.log.size_bytes(),
                    produced_messages: p
                        .produced_messages
                        .load(std::sync::atomic::Ordering::Relaxed),
                    produced_bytes: p.produced_bytes.load(std::sync::atomic::Ordering::Relaxed),
                    fetched_bytes: p.fetched_bytes.load(std::sync::atomic::Ordering::Relaxed),
                    duplicate_batches: p
                        .duplicate_batches
                        .load(std::sync::atomic::Ordering::Relaxed),
                    replicated_bytes: p
                        .replicated_bytes
                        .load(std::sync::atomic::Ordering::Relaxed),
                    produce_order_waits: p.produce_order.counts().0,
                    produce_order_refusals: p.produce_order.counts().1,
                });
            }
        }
        Snapshot {
            groups,
            group_members: members,
            group_rebalances: self
                .groups
                .rebalances
                .load(std::sync::atomic::Ordering::Relaxed),
            group_offsets_size_bytes: self.groups.offsets.size_bytes(),
            partitions,
        }
    }
}

/// The lock file that keeps a second broker off a data directory in use. The OS releases the
/// lock when the process dies, even by `kill -9`.
pub const LOCK_FILE: &str = "broker.lock";

// `File::try_lock` (std since Rust 1.89, the workspace's rust-version) avoids an unsafe `flock`.
fn lock_data_dir(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("open", &path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::InvalidConfig {
            key: "data_dir".into(),
            reason: format!(
                "{} is in use by another broker (it holds {})",
                dir.display(),
                path.display()
            ),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io("lock", &path, e)),
    }
}

pub(crate) fn check_partition_count(n: usize) -> Result<(), tonic::Status> {
    if n > REQUEST_PARTITIONS_MAX {
        return Err(status(
            ErrorCode::InvalidRequest,
            format!("{n} partitions in one request exceeds the limit of {REQUEST_PARTITIONS_MAX}"),
        ));
    }
    Ok(())
}

pub(crate) fn check_duplicates<'a>(
    it: impl Iterator<Item = (&'a str, u32)>,
) -> Result<(), tonic::Status> {
    let mut seen = HashSet::new();
    for (t, p) in it {
        if !seen.insert((t, p)) {
            return Err(status(
                ErrorCode::InvalidRequest,
                format!("partition {t}-{p} appears more than once in the request"),
            ));
        }
    }
    Ok(())
}

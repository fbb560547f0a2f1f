//! The broker's state and request logic: the hosted partitions, the registry backend, the
//! in-flight bounds, and the produce / fetch / list-offsets / admin operations (the gRPC
//! services in [`crate::service`] are thin wrappers over these). Replication lives beside it:
//! [`crate::roles`] (which partitions this broker hosts and leads, from the registry),
//! [`crate::replica`] (the leader's side: replica fetches, OffsetForLeaderEpoch, the ISR) and
//! [`crate::fetcher`] (the follower's side).
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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::poll_fn;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use sluiceway_core::format::TimestampType;
use sluiceway_core::limits::{
    FETCH_BYTES_MAX, FETCH_PARTITION_BYTES_DEFAULT, FETCH_RESPONSE_BYTES_DEFAULT,
    FETCH_WAIT_MS_MAX, IN_FLIGHT_FETCHES_MAX, IN_FLIGHT_REQUESTS_MAX, IN_FLIGHT_WAIT_MS_MAX,
    MESSAGE_SET_BYTES_MAX, PRODUCE_TIMEOUT_MS_MAX, REQUEST_PARTITIONS_MAX,
};
use sluiceway_core::registry::{
    BrokerId, EmbeddedRegistry, EtcdOptions, EtcdRegistry, EtcdSpec, NewTopic, Registry, TopicInfo,
};
use sluiceway_core::replication::{LeaderEpochCache, ReplicationConfig};
use sluiceway_core::storage::{AppendInfo, Clock, PartitionLog, SystemClock};
use sluiceway_core::topic::{TopicConfig, validate_topic_name};
use sluiceway_core::{Error, ErrorCode, Offset, Result, TimestampMs};
use sluiceway_proto::v1;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tracing::{debug, info, warn};

use crate::config::{BrokerConfig, RegistryKind};
use crate::errors::{status, to_proto};
use crate::groups::{Groups, internal_topic_error, is_internal_topic};
use crate::metrics::Metrics;
use crate::partition::{Partition, Role};

/// A hosted topic: its effective configuration and the partitions this broker holds a replica
/// of (all of them on one broker; in a cluster, those whose replicas include this broker).
#[derive(Debug)]
pub struct Topic {
    pub config: TopicConfig,
    /// The topic's partition count in the registry.
    pub partition_count: u32,
    pub partitions: BTreeMap<u32, Arc<Partition>>,
}

/// How long an acks=all produce waits for the in-sync replicas when its `timeout_ms` is 0.
pub const ACKS_ALL_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// How long CreateTopic / DeleteTopic in a cluster wait for this broker to apply the change (so
/// the next request to this broker sees it); the change is made either way.
pub const ADMIN_APPLY_WAIT_MS: u64 = 5_000;
const _: () = assert!(ACKS_ALL_TIMEOUT_MS_DEFAULT <= PRODUCE_TIMEOUT_MS_MAX as u64);

/// See the module docs.
#[derive(Debug)]
pub struct Broker {
    /// Held (locked) for the broker's lifetime: one broker per data directory.
    _lock: std::fs::File,
    pub config: BrokerConfig,
    pub registry: Arc<dyn Registry>,
    pub(crate) topics: RwLock<HashMap<String, Arc<Topic>>>,
    /// Partition counts of every topic in the registry, hosted here or not (what the group
    /// coordinators assign, and what tells NOT_LEADER from UNKNOWN_TOPIC_OR_PARTITION).
    pub(crate) known: RwLock<BTreeMap<String, u32>>,
    pub(crate) clock: Arc<dyn Clock>,
    /// The replication state machines' clock (monotonic ms since start).
    started: Instant,
    pub(crate) admin_lock: tokio::sync::Mutex<()>,
    requests: Arc<Semaphore>,
    fetches: Arc<Semaphore>,
    shutdown: watch::Sender<bool>,
    pub metrics: Metrics,
    /// The consumer-group coordinators and `__consumer_offsets`.
    pub groups: Arc<Groups>,
    pub(crate) replication: ReplicationConfig,
    /// Counts the role loop's completed passes (admin requests wait on it).
    pub(crate) applied: watch::Sender<u64>,
    /// Bumped when a follower role changed: fetchers re-read their partitions.
    pub(crate) follower_roles: watch::Sender<u64>,
    /// Source brokers that have a fetcher task.
    pub(crate) fetchers: std::sync::Mutex<HashSet<BrokerId>>,
    /// Idempotent producer ids, served from a block allocated through the registry.
    pub(crate) producer_ids: crate::producer_ids::ProducerIds,
}

/// A per-partition failure: its code and message.
pub(crate) type PartitionError = (ErrorCode, String);

pub(crate) fn perr(e: &Error) -> PartitionError {
    (e.code(), e.to_string())
}

fn unknown(topic: &str, partition: u32) -> PartitionError {
    (
        ErrorCode::UnknownTopicOrPartition,
        format!("unknown topic or partition {topic}-{partition}"),
    )
}

/// An unexpected failure inside the broker (a panicked task), as UNKNOWN_SERVER_ERROR.
pub fn internal(message: String) -> Error {
    Error::Remote {
        code: ErrorCode::UnknownServerError,
        message,
    }
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| internal(format!("internal task failed: {e}")))?
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
        let (shutdown, _) = watch::channel(false);
        let replication = ReplicationConfig {
            replica_lag_time_max_ms: config.replica_lag_time_max_ms,
        };
        let producer_ids = crate::producer_ids::ProducerIds::new(registry.clone());
        Ok(Broker {
            _lock: lock,
            config,
            registry,
            topics: RwLock::new(HashMap::new()),
            known: RwLock::new(BTreeMap::new()),
            clock,
            started: Instant::now(),
            admin_lock: tokio::sync::Mutex::new(()),
            requests: Arc::new(Semaphore::new(IN_FLIGHT_REQUESTS_MAX)),
            fetches: Arc::new(Semaphore::new(IN_FLIGHT_FETCHES_MAX)),
            shutdown,
            metrics: Metrics::default(),
            groups: Arc::new(groups),
            replication,
            applied: watch::channel(0).0,
            follower_roles: watch::channel(0).0,
            fetchers: std::sync::Mutex::new(HashSet::new()),
            producer_ids,
        })
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Every hosted topic, sorted by name.
    pub fn hosted_topics(&self) -> Vec<(String, Arc<Topic>)> {
        let mut v: Vec<(String, Arc<Topic>)> = self
            .topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
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

    /// Partition counts of every topic in the registry (what the group coordinators assign).
    pub fn topic_partition_counts(&self) -> BTreeMap<String, u32> {
        let mut counts = self.known.read().unwrap_or_else(|e| e.into_inner()).clone();
        counts.retain(|name, _| !is_internal_topic(name));
        counts
    }

    /// The partition count of `topic` in the registry as last applied.
    pub(crate) fn known_partition_count(&self, topic: &str) -> Option<u32> {
        self.known
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(topic)
            .copied()
    }

    /// Whether the partition exists in the registry (commits to it are accepted; in a cluster
    /// this broker need not host it).
    pub fn has_partition(&self, topic: &str, partition: u32) -> bool {
        self.known
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(topic)
            .is_some_and(|n| partition < *n)
    }

    /// The hosted partition; NOT_LEADER when the topic has it but this broker holds no replica
    /// (in a cluster), UNKNOWN_TOPIC_OR_PARTITION when it does not exist.
    pub(crate) fn partition(
        &self,
        topic: &str,
        partition: u32,
    ) -> std::result::Result<Arc<Partition>, PartitionError> {
        if let Some(p) = self
            .topic(topic)
            .and_then(|t| t.partitions.get(&partition).cloned())
            .filter(|p| !p.is_deleted())
        {
            return Ok(p);
        }
        if self.has_partition(topic, partition) {
            return Err((
                ErrorCode::NotLeader,
                format!(
                    "this broker holds no replica of {topic}-{partition}; refresh the metadata"
                ),
            ));
        }
        Err(unknown(topic, partition))
    }

    /// The hosted partition if this broker leads it (NOT_LEADER otherwise).
    fn led_partition(
        &self,
        topic: &str,
        partition: u32,
    ) -> std::result::Result<Arc<Partition>, PartitionError> {
        let p = self.partition(topic, partition)?;
        if !p.is_leader() {
            return Err(p.not_leader());
        }
        Ok(p)
    }

    /// The replication clock: monotonic milliseconds since the broker started.
    pub(crate) fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
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
        for p in self.hosted_partitions() {
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
        for p in self.hosted_partitions() {
            if let Err(e) = p.log.tick() {
                warn!(partition = %p.name(), error = %e, "log tick failed");
            }
        }
        self.groups.tick();
    }

    /// One retention pass over every log; the leader-epoch history follows the log start.
    pub fn enforce_retention_all(&self) {
        for p in self.hosted_partitions() {
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

    // ---- Admin ----

    pub fn topic_defaults(&self) -> &BTreeMap<String, String> {
        &self.config.topic_defaults
    }

    pub async fn create_topic(&self, req: v1::CreateTopicRequest) -> Result<TopicInfo> {
        validate_topic_name(&req.name)?;
        if is_internal_topic(&req.name) {
            return Err(internal_topic_error(&req.name));
        }
        let configs: BTreeMap<String, String> = req.configs.into_iter().collect();
        let config = TopicConfig::parse(self.topic_defaults(), &configs)?;
        let new = NewTopic {
            name: req.name,
            partitions: req.partitions,
            replication_factor: if req.replication_factor == 0 {
                self.config.default_replication_factor
            } else {
                req.replication_factor
            },
            configs,
        };
        if self.registry.is_cluster() {
            // The registry is the one place topics are created; the role loop opens the logs
            // (here and on the other replicas). Waiting for it here means the creator's next
            // request to this broker finds the topic.
            let registry = self.registry.clone();
            let info = blocking(move || registry.create_topic(&new)).await?;
            info!(topic = %info.name, partitions = info.partitions.len(), "created topic");
            let me = self.config.broker_id;
            let mine = info
                .partitions
                .iter()
                .filter(|p| p.replicas.contains(&me))
                .count();
            let name = info.name.clone();
            self.wait_applied(|b| {
                b.has_partition(&name, 0)
                    && b.topic(&name).map_or(0, |t| t.partitions.len()) >= mine
            })
            .await;
            return Ok(info);
        }
        let _admin = self.admin_lock.lock().await;
        let registry = self.registry.clone();
        let broker_config = self.config.clone();
        let clock = self.clock.clone();
        let (info, topic) = blocking(move || {
            // A directory left by a deletion that crashed half-way must not become this new
            // topic's data: the registry says the topic does not exist, so it is an orphan.
            for p in 0..new
                .partitions
                .min(sluiceway_core::limits::PARTITIONS_PER_TOPIC_MAX)
            {
                let dir = broker_config
                    .data_dir
                    .join(PartitionLog::dir_name(&new.name, p));
                if dir.exists() && registry.topic(&new.name)?.is_none() {
                    warn!(dir = %dir.display(), "removing an orphaned partition directory");
                    std::fs::remove_dir_all(&dir)
                        .map_err(|e| Error::io("remove orphaned partition directory", &dir, e))?;
                }
            }
            let info = registry.create_topic(&new)?;
            let opened = info
                .partitions
                .iter()
                .map(|p| {
                    open_partition(
                        &broker_config.data_dir,
                        &clock,
                        &info.name,
                        p.partition,
                        &config,
                    )
                    .map(|part| (p.partition, part))
                })
                .collect::<Result<BTreeMap<u32, Arc<Partition>>>>();
            match opened {
                Ok(partitions) => Ok((
                    info.clone(),
                    Topic {
                        config,
                        partition_count: info.partitions.len() as u32,
                        partitions,
                    },
                )),
                Err(e) => {
                    // Undo the registration so the topic can be created again once fixed.
                    let _ = registry.delete_topic(&info.name);
                    Err(e)
                }
            }
        })
        .await?;
        for p in &info.partitions {
            if let Some(part) = topic.partitions.get(&p.partition) {
                self.apply_role(part, p);
            }
        }
        info!(topic = %info.name, partitions = info.partitions.len(), "created topic");
        self.topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(info.name.clone(), Arc::new(topic));
        self.known
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(info.name.clone(), info.partitions.len() as u32);
        self.groups.topics_changed(self.topic_partition_counts());
        Ok(info)
    }

    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        if is_internal_topic(name) {
            return Err(internal_topic_error(name));
        }
        if self.registry.is_cluster() {
            let registry = self.registry.clone();
            let n = name.to_owned();
            blocking(move || registry.delete_topic(&n)).await?;
            info!(topic = %name, "deleted topic");
            // The role loop deletes the data (here and on the other replicas).
            // Each coordinator tombstones the topic's commits when its role pass sees the
            // deletion (roles.rs).
            self.wait_applied(|b| !b.has_partition(name, 0) && b.topic(name).is_none())
                .await;
            return Ok(());
        }
        let _admin = self.admin_lock.lock().await;
        let registry = self.registry.clone();
        let n = name.to_owned();
        blocking(move || registry.delete_topic(&n)).await?;
        self.known
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        let removed = self
            .topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        if let Some(topic) = removed {
            blocking(move || remove_topic_data(&topic)).await?;
            self.groups.topics_changed(self.topic_partition_counts());
            self.groups.forget_topic(name).await;
        }
        info!(topic = %name, "deleted topic");
        Ok(())
    }

    /// Waits (at most `ADMIN_APPLY_WAIT_MS`) until the role loop's state satisfies `done`.
    async fn wait_applied(&self, done: impl Fn(&Broker) -> bool) {
        let mut applied = self.applied.subscribe();
        let deadline = Instant::now() + Duration::from_millis(ADMIN_APPLY_WAIT_MS);
        while !done(self) {
            tokio::select! {
                r = applied.changed() => if r.is_err() { return },
                () = tokio::time::sleep_until(deadline.into()) => {
                    warn!("the registry change was not applied on this broker within {ADMIN_APPLY_WAIT_MS} ms");
                    return;
                }
            }
        }
    }

    // ---- Produce ----

    pub async fn produce(
        &self,
        req: v1::ProduceRequest,
    ) -> std::result::Result<v1::ProduceResponse, tonic::Status> {
        if !matches!(req.acks, -1..=1) {
            return Err(status(
                ErrorCode::InvalidRequiredAcks,
                format!("acks {} is not one of -1 (all), 0, 1", req.acks),
            ));
        }
        check_partition_count(req.partitions.len())?;
        if req.timeout_ms > PRODUCE_TIMEOUT_MS_MAX {
            return Err(status(
                ErrorCode::InvalidRequest,
                format!(
                    "timeout_ms {} exceeds the limit of {PRODUCE_TIMEOUT_MS_MAX}",
                    req.timeout_ms
                ),
            ));
        }
        check_duplicates(
            req.partitions
                .iter()
                .map(|p| (p.topic.as_str(), p.partition)),
        )?;
        let timeout_ms = if req.timeout_ms == 0 {
            ACKS_ALL_TIMEOUT_MS_DEFAULT
        } else {
            u64::from(req.timeout_ms)
        };
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        let permit = self.permit(&self.requests).await?;
        let acks = req.acks;
        let mut results = Vec::with_capacity(req.partitions.len());
        let mut pending = Vec::new();
        for (i, p) in req.partitions.into_iter().enumerate() {
            let mut result = v1::ProducePartitionResult {
                topic: p.topic.clone(),
                partition: p.partition,
                error_code: 0,
                error_message: String::new(),
                base_offset: -1,
                log_append_time_ms: -1,
                log_start_offset: -1,
                batch_base_offsets: Vec::new(),
            };
            match self.check_produce(&p, acks) {
                Err((code, message)) => {
                    result.error_code = to_proto(code);
                    result.error_message = message;
                }
                Ok(partition) => {
                    // The one copy of a produced set: the log rewrites its offset fields in place.
                    let mut set = Vec::from(p.message_set);
                    let handle = tokio::task::spawn_blocking(move || {
                        let r = leader_append(&partition, &mut set, acks);
                        (partition, r)
                    });
                    pending.push((i, handle));
                }
            }
            results.push(result);
        }
        if acks == 0 {
            // Answer now; the appends finish in the background, still holding the in-flight slot.
            tokio::spawn(async move {
                for (_, h) in pending {
                    if let Ok((p, Err(e))) = h.await {
                        warn!(topic = %p.topic, partition = p.partition, error = ?e, "acks=0 append failed");
                    }
                }
                drop(permit);
            });
            return Ok(v1::ProduceResponse { results });
        }
        let mut appended = Vec::new();
        for (i, h) in pending {
            let r = &mut results[i];
            match h.await {
                Ok((p, Ok((info, leadership)))) => {
                    r.base_offset = info.base_offset.0 as i64;
                    // Kafka's rule: the append time only when the topic stamps it
                    // (LogAppendTime); -1 for CreateTime topics, whose records keep the
                    // producer's timestamps.
                    if p.log.config().timestamp_type == TimestampType::LogAppendTime {
                        r.log_append_time_ms = info.log_append_time.0;
                    }
                    r.log_start_offset = p.log.log_start_offset().0 as i64;
                    r.batch_base_offsets =
                        info.batch_base_offsets.iter().map(|o| o.0 as i64).collect();
                    appended.push((i, p, info.last_offset, leadership));
                }
                Ok((p, Err((code, message)))) => {
                    debug!(topic = %p.topic, partition = p.partition, %message, "append refused");
                    r.error_code = to_proto(code);
                    r.error_message = message;
                }
                Err(e) => {
                    r.error_code = to_proto(ErrorCode::UnknownServerError);
                    r.error_message = format!("append task failed: {e}");
                }
            }
        }
        if acks == -1 {
            for (i, p, last, leadership) in appended {
                if let Err((code, message)) = self
                    .wait_for_replicas(&p, last, leadership, deadline, timeout_ms)
                    .await
                {
                    let r = &mut results[i];
                    r.error_code = to_proto(code);
                    r.error_message = message;
                    r.base_offset = -1;
                    r.log_append_time_ms = -1;
                    r.log_start_offset = -1;
                    r.batch_base_offsets.clear();
                }
            }
        }
        drop(permit);
        Ok(v1::ProduceResponse { results })
    }

    /// acks=all: waits until the high watermark passes `last` (every in-sync replica has it).
    pub(crate) async fn wait_for_replicas(
        &self,
        p: &Partition,
        last: Offset,
        leadership: u64,
        deadline: Instant,
        timeout_ms: u64,
    ) -> std::result::Result<(), PartitionError> {
        // Subscribe before checking, so a change between the check and the wait still wakes us.
        let mut hw = p.subscribe();
        let mut shutdown = self.shutdown.subscribe();
        loop {
            if p.is_deleted() {
                return Err(unknown(&p.topic, p.partition));
            }
            if p.leadership() != leadership || !p.is_leader() {
                let (code, message) = p.not_leader();
                return Err((
                    code,
                    format!("{message}; the append at offset {last} may not be replicated"),
                ));
            }
            if p.log.high_watermark() > last {
                let isr = p.isr_size().unwrap_or(0);
                if isr < p.min_insync_replicas {
                    return Err((
                        ErrorCode::NotEnoughReplicasAfterAppend,
                        format!(
                            "{} was appended at offset {last} but its in-sync replica set shrank to {isr}, below min.insync.replicas {}",
                            p.name(),
                            p.min_insync_replicas
                        ),
                    ));
                }
                return Ok(());
            }
            if *shutdown.borrow() {
                return Err((
                    ErrorCode::NotLeader,
                    format!(
                        "the broker is shutting down before the in-sync replicas of {} confirmed offset {last}",
                        p.name()
                    ),
                ));
            }
            tokio::select! {
                r = hw.changed() => if r.is_err() { return Err(unknown(&p.topic, p.partition)) },
                _ = shutdown.changed() => {}
                () = tokio::time::sleep_until(deadline.into()) => {
                    return Err((
                        ErrorCode::RequestTimedOut,
                        format!(
                            "the in-sync replicas of {} did not confirm offset {last} within {timeout_ms} ms (high watermark {})",
                            p.name(),
                            p.log.high_watermark()
                        ),
                    ));
                }
            }
        }
    }

    fn check_produce(
        &self,
        p: &v1::ProducePartition,
        acks: i32,
    ) -> std::result::Result<Arc<Partition>, PartitionError> {
        if is_internal_topic(&p.topic) {
            return Err((
                ErrorCode::InvalidTopic,
                format!(
                    "{} is an internal topic: clients cannot produce to it",
                    p.topic
                ),
            ));
        }
        let partition = self.led_partition(&p.topic, p.partition)?;
        check_epoch(&partition, p.leader_epoch)?;
        if acks == -1 {
            check_min_insync(&partition)?;
        }
        if p.message_set.len() > MESSAGE_SET_BYTES_MAX as usize {
            return Err(perr(&Error::RecordListTooLarge {
                size: p.message_set.len() as u64,
                max: u64::from(MESSAGE_SET_BYTES_MAX),
            }));
        }
        if p.message_set.is_empty() {
            return Err((
                ErrorCode::InvalidRequest,
                format!("empty message set for {}", partition.name()),
            ));
        }
        Ok(partition)
    }

    // ---- Fetch ----

    pub async fn fetch(
        &self,
        req: v1::FetchRequest,
    ) -> std::result::Result<v1::FetchResponse, tonic::Status> {
        if req.max_wait_ms > FETCH_WAIT_MS_MAX {
            return Err(status(
                ErrorCode::InvalidRequest,
                format!(
                    "max_wait_ms {} exceeds the limit of {FETCH_WAIT_MS_MAX} ms",
                    req.max_wait_ms
                ),
            ));
        }
        check_partition_count(req.partitions.len())?;
        check_duplicates(
            req.partitions
                .iter()
                .map(|p| (p.topic.as_str(), p.partition)),
        )?;
        let replica = match req.replica_id {
            None => None,
            Some(id) if id < 0 || id as u32 == self.config.broker_id.0 => {
                return Err(status(
                    ErrorCode::InvalidRequest,
                    format!("replica_id {id} is not another broker's id"),
                ));
            }
            Some(id) => Some(BrokerId(id as u32)),
        };
        let _permit = self.permit(&self.fetches).await?;
        let deadline = Instant::now() + Duration::from_millis(u64::from(req.max_wait_ms));
        let min_bytes = u64::from(req.min_bytes.max(1));
        let response_max = if req.max_bytes == 0 {
            FETCH_RESPONSE_BYTES_DEFAULT
        } else {
            req.max_bytes.min(FETCH_BYTES_MAX)
        };
        let requests = Arc::new(req.partitions);
        let mut shutdown = self.shutdown.subscribe();
        loop {
            // Subscribe before reading, so an append that lands between the read and the wait
            // still wakes us (no lost wake-up). Consumers wait for the high watermark; followers
            // for the log end (they must get data before it can be committed).
            let resolved: Vec<std::result::Result<Arc<Partition>, PartitionError>> = requests
                .iter()
                .map(|p| self.partition(&p.topic, p.partition))
                .collect();
            let mut receivers: Vec<watch::Receiver<u64>> = resolved
                .iter()
                .filter_map(|r| r.as_ref().ok())
                .map(|p| {
                    if replica.is_some() {
                        p.subscribe_end()
                    } else {
                        p.subscribe()
                    }
                })
                .collect();
            let reqs = requests.clone();
            let now_ms = self.now_ms();
            // A follower the registry does not have registered (fenced) may fetch but is never
            // proposed for an ISR (KIP-841); asked on every round, so it rejoins once registered.
            let follower = replica.map(|id| ReplicaFetch {
                id,
                isr_eligible: self.registry.is_registered(id),
            });
            let (results, bytes, failed, proposals) = tokio::task::spawn_blocking(move || {
                read_partitions(&reqs, &resolved, response_max, follower, now_ms)
            })
            .await
            .map_err(|e| {
                status(
                    ErrorCode::UnknownServerError,
                    format!("fetch task failed: {e}"),
                )
            })?;
            for (p, epoch, isr) in proposals {
                self.submit_isr(p, epoch, isr);
            }
            if let Some(r) = replica {
                self.metrics
                    .replica_fetches_served
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                debug!(replica = %r, bytes, "served a replica fetch");
            }
            if bytes >= min_bytes || failed || Instant::now() >= deadline || *shutdown.borrow() {
                return Ok(v1::FetchResponse { results });
            }
            // Wait for any partition's watch to move, the deadline, or shutdown.
            let mut changes: Vec<Pin<Box<dyn Future<Output = ()> + Send + '_>>> = receivers
                .iter_mut()
                .map(|rx| -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
                    Box::pin(async move {
                        if rx.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    })
                })
                .collect();
            let any_change = poll_fn(|cx| {
                for f in changes.iter_mut() {
                    if f.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(());
                    }
                }
                Poll::Pending
            });
            let _waiting = crate::metrics::WaitingFetch::enter(&self.metrics.waiting_fetches);
            tokio::select! {
                () = any_change => {}
                () = tokio::time::sleep_until(deadline.into()) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    // ---- ListOffsets ----

    pub async fn list_offsets(
        &self,
        req: v1::ListOffsetsRequest,
    ) -> std::result::Result<v1::ListOffsetsResponse, tonic::Status> {
        check_partition_count(req.partitions.len())?;
        let _permit = self.permit(&self.requests).await?;
        let mut results = Vec::with_capacity(req.partitions.len());
        for p in req.partitions {
            let mut r = v1::ListOffsetsPartitionResult {
                topic: p.topic.clone(),
                partition: p.partition,
                error_code: 0,
                error_message: String::new(),
                offset: -1,
                log_start_offset: -1,
                high_watermark: -1,
            };
            match self.list_offset(&p).await {
                Ok((offset, partition)) => {
                    r.offset = offset;
                    r.log_start_offset = partition.log.log_start_offset().0 as i64;
                    r.high_watermark = partition.log.high_watermark().0 as i64;
                }
                Err((code, message)) => {
                    r.error_code = to_proto(code);
                    r.error_message = message;
                }
            }
            results.push(r);
        }
        Ok(v1::ListOffsetsResponse { results })
    }

    async fn list_offset(
        &self,
        p: &v1::ListOffsetsPartition,
    ) -> std::result::Result<(i64, Arc<Partition>), PartitionError> {
        let partition = self.led_partition(&p.topic, p.partition)?;
        let spec = v1::OffsetSpec::try_from(p.spec).unwrap_or(v1::OffsetSpec::Unspecified);
        let offset = match spec {
            v1::OffsetSpec::Unspecified => {
                return Err((
                    ErrorCode::InvalidRequest,
                    format!(
                        "offset spec {} is not EARLIEST, LATEST or TIMESTAMP",
                        p.spec
                    ),
                ));
            }
            v1::OffsetSpec::Earliest => partition.log.log_start_offset().0 as i64,
            v1::OffsetSpec::Latest => partition.log.high_watermark().0 as i64,
            v1::OffsetSpec::Timestamp => {
                if p.timestamp_ms < 0 {
                    return Err((
                        ErrorCode::InvalidTimestamp,
                        format!("timestamp {} is negative", p.timestamp_ms),
                    ));
                }
                let ts = TimestampMs(p.timestamp_ms);
                let part = partition.clone();
                let found = blocking(move || part.log.offset_for_timestamp(ts))
                    .await
                    .map_err(|e| perr(&e))?;
                // Consumers see nothing at or above the high watermark.
                match found {
                    Some(o) if o < partition.log.high_watermark() => o.0 as i64,
                    _ => -1,
                }
            }
        };
        Ok((offset, partition))
    }

    /// The registry's view of a topic, as the proto's metadata.
    pub fn topic_metadata(&self, info: &TopicInfo) -> v1::TopicMetadata {
        v1::TopicMetadata {
            name: info.name.clone(),
            error_code: 0,
            error_message: String::new(),
            partitions: info
                .partitions
                .iter()
                .map(|p| v1::PartitionMetadata {
                    partition: p.partition,
                    error_code: if p.leader.is_some() {
                        0
                    } else {
                        to_proto(ErrorCode::LeaderNotAvailable)
                    },
                    leader_id: p.leader.map_or(-1, |b| b.0 as i32),
                    replicas: p.replicas.iter().map(|b| b.0 as i32).collect(),
                    isr: p.isr.iter().map(|b| b.0 as i32).collect(),
                    leader_epoch: p.leader_epoch as i32,
                })
                .collect(),
        }
    }

    pub fn now(&self) -> TimestampMs {
        self.clock.now_ms()
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

/// Opens one partition's log and leader-epoch history in the data directory (creating them).
pub(crate) fn open_partition(
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
/// partition keep their open files (Linux keeps unlinked files readable); appends after this fail
/// and are answered as such.
pub(crate) fn remove_topic_data(topic: &Topic) -> Result<()> {
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

/// Appends as the leader, on a blocking thread: under the append gate, re-checks that this
/// broker still leads (and for acks=all that the ISR is large enough), appends, feeds the
/// leader state (which may move the HW) and publishes the new log end. Returns the append and
/// the leadership term it happened in.
pub(crate) fn leader_append(
    p: &Partition,
    set: &mut [u8],
    acks: i32,
) -> std::result::Result<(AppendInfo, u64), PartitionError> {
    let _gate = p.append_gate();
    if !p.is_leader() {
        return Err(p.not_leader());
    }
    if acks == -1 {
        check_min_insync(p)?;
    }
    let leadership = p.leadership();
    let bytes = set.len() as u64;
    let info = p
        .log
        .append_in_epoch(set, p.leader_epoch())
        .map_err(|e| perr(&e))?;
    {
        let mut role = p.role();
        if let Role::Leader(ls) = &mut *role
            && let Some(hw) = ls.on_append(p.log.log_end_offset())
        {
            p.advance_high_watermark(hw);
        }
    }
    // An idempotent producer's retry: batches the log has are answered with their first
    // offsets, not written again.
    p.duplicate_batches.fetch_add(
        u64::from(info.duplicate_batches),
        std::sync::atomic::Ordering::Relaxed,
    );
    if info.duplicate {
        debug!(topic = %p.topic, partition = p.partition, base_offset = info.base_offset.0,
            "duplicate batches answered with their first offsets");
        return Ok((info, leadership));
    }
    p.publish_log_end();
    p.produced_messages
        .fetch_add(info.message_count, std::sync::atomic::Ordering::Relaxed);
    p.produced_bytes
        .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    debug!(topic = %p.topic, partition = p.partition, base_offset = info.base_offset.0,
        last_offset = info.last_offset.0, "appended");
    Ok((info, leadership))
}

/// acks=all's precondition: the committed ISR has at least `min.insync.replicas` members.
fn check_min_insync(p: &Partition) -> std::result::Result<(), PartitionError> {
    match p.isr_size() {
        Some(n) if n >= p.min_insync_replicas => Ok(()),
        Some(n) => Err((
            ErrorCode::NotEnoughReplicas,
            format!(
                "{} has {n} in-sync replica(s), fewer than its min.insync.replicas of {}",
                p.name(),
                p.min_insync_replicas
            ),
        )),
        None => Err(p.not_leader()),
    }
}

fn check_partition_count(n: usize) -> std::result::Result<(), tonic::Status> {
    if n > REQUEST_PARTITIONS_MAX {
        return Err(status(
            ErrorCode::InvalidRequest,
            format!("{n} partitions in one request exceeds the limit of {REQUEST_PARTITIONS_MAX}"),
        ));
    }
    Ok(())
}

fn check_duplicates<'a>(
    it: impl Iterator<Item = (&'a str, u32)>,
) -> std::result::Result<(), tonic::Status> {
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

/// Fences a request carrying a leader epoch against the partition's current one.
pub(crate) fn check_epoch(
    p: &Partition,
    epoch: Option<i32>,
) -> std::result::Result<(), PartitionError> {
    let current = p.leader_epoch();
    match epoch {
        None => Ok(()),
        Some(e) if e < 0 || (e as u32) < current => Err((
            ErrorCode::FencedLeaderEpoch,
            format!(
                "leader epoch {e} of {} is older than the current {current}",
                p.name(),
            ),
        )),
        Some(e) if e as u32 > current => Err((
            ErrorCode::UnknownLeaderEpoch,
            format!(
                "leader epoch {e} of {} is newer than the current {current}",
                p.name(),
            ),
        )),
        Some(_) => Ok(()),
    }
}

/// An ISR change a replica fetch produced: the partition, the leader epoch, the proposed ISR.
pub(crate) type IsrProposal = (Arc<Partition>, u32, Vec<BrokerId>);

/// The follower behind a replica fetch.
#[derive(Clone, Copy, Debug)]
struct ReplicaFetch {
    id: BrokerId,
    /// Registered in the registry now: only then may the leader propose it for an ISR.
    isr_eligible: bool,
}

/// Reads every requested partition once. Returns the results, the bytes read, whether any
/// partition failed (a failure answers the fetch at once, as Kafka does), and the ISR changes
/// that replica fetches proposed.
fn read_partitions(
    requests: &[v1::FetchPartition],
    resolved: &[std::result::Result<Arc<Partition>, PartitionError>],
    response_max: u32,
    replica: Option<ReplicaFetch>,
    now_ms: u64,
) -> (Vec<v1::FetchPartitionResult>, u64, bool, Vec<IsrProposal>) {
    let mut budget = response_max;
    let mut total = 0u64;
    let mut failed = false;
    let mut proposals = Vec::new();
    let mut results = Vec::with_capacity(requests.len());
    for (req, part) in requests.iter().zip(resolved) {
        let mut r = v1::FetchPartitionResult {
            topic: req.topic.clone(),
            partition: req.partition,
            error_code: 0,
            error_message: String::new(),
            high_watermark: -1,
            log_start_offset: -1,
            log_end_offset: -1,
            message_set: Default::default(),
            leader_epochs: Vec::new(),
        };
        let outcome = part.clone().and_then(|p| {
            if p.is_deleted() {
                return Err(unknown(&req.topic, req.partition));
            }
            match replica {
                None => {
                    if !p.is_leader() {
                        return Err(p.not_leader());
                    }
                    check_epoch(&p, req.leader_epoch)?;
                }
                Some(_) => crate::replica::check_replica_fetch(&p, req.leader_epoch)?,
            }
            if req.fetch_offset < 0 {
                return Err((
                    ErrorCode::OffsetOutOfRange,
                    format!(
                        "offset {} is out of range: the log holds [{}, {})",
                        req.fetch_offset,
                        p.log.log_start_offset(),
                        p.log.log_end_offset()
                    ),
                ));
            }
            let want = if req.max_bytes == 0 {
                FETCH_PARTITION_BYTES_DEFAULT
            } else {
                req.max_bytes.min(FETCH_BYTES_MAX)
            };
            let max = want.min(budget);
            // Consumers read below the high watermark; followers up to the log end.
            let upper = match replica {
                None => p.log.high_watermark(),
                Some(_) => p.log.log_end_offset(),
            };
            let read = if max == 0 && total > 0 {
                // The response is full: report positions only.
                None
            } else {
                Some(
                    p.log
                        .read(Offset(req.fetch_offset as u64), max.max(1), upper)
                        .map_err(|e| perr(&e))?,
                )
            };
            let (mut hw, start, end, bytes) = match read {
                None => (
                    p.log.high_watermark(),
                    p.log.log_start_offset(),
                    p.log.log_end_offset(),
                    Vec::new(),
                ),
                Some(read) => {
                    // The log returns at least one whole entry even above `max` (KIP-74). Only
                    // the first partition with data may overshoot that way, so the response
                    // stays bounded.
                    let bytes = if total > 0 && read.bytes.len() > max as usize {
                        Vec::new()
                    } else {
                        read.bytes
                    };
                    (
                        read.high_watermark,
                        read.log_start_offset,
                        read.log_end_offset,
                        bytes,
                    )
                }
            };
            let mut epochs = Vec::new();
            if let Some(follower) = replica {
                let fetched = crate::replica::on_replica_fetch(
                    &p,
                    follower.id,
                    Offset(req.fetch_offset as u64),
                    end,
                    now_ms,
                    follower.isr_eligible,
                )?;
                if let Some(proposal) = fetched {
                    proposals.push(proposal);
                }
                hw = p.log.high_watermark();
                epochs = crate::replica::epochs_covering(&p, Offset(req.fetch_offset as u64), end);
            }
            Ok((hw, start, end, bytes, epochs, p))
        });
        match outcome {
            Ok((hw, start, end, bytes, epochs, p)) => {
                r.high_watermark = hw.0 as i64;
                r.log_start_offset = start.0 as i64;
                r.log_end_offset = end.0 as i64;
                let n = bytes.len() as u64;
                let counter = if replica.is_some() {
                    &p.replicated_bytes
                } else {
                    &p.fetched_bytes
                };
                counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                total += n;
                budget = budget.saturating_sub(u32::try_from(n).unwrap_or(u32::MAX));
                r.message_set = bytes.into();
                r.leader_epochs = epochs;
            }
            Err((code, message)) => {
                failed = true;
                r.error_code = to_proto(code);
                r.error_message = message;
                // A follower needs the leader's range to recover from OFFSET_OUT_OF_RANGE.
                if replica.is_some()
                    && let Ok(p) = part
                {
                    r.log_start_offset = p.log.log_start_offset().0 as i64;
                    r.log_end_offset = p.log.log_end_offset().0 as i64;
                    r.high_watermark = p.log.high_watermark().0 as i64;
                }
            }
        }
        results.push(r);
    }
    (results, total, failed, proposals)
}

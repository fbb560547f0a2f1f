//! The broker's state and request logic: the hosted partitions, the registry backend, the
//! in-flight bounds, and the produce / fetch / list-offsets / admin operations (the gRPC
//! services in [`crate::service`] are thin wrappers over these).
//!
//! Concurrency: appends run on tokio's blocking pool (`spawn_blocking`); the log serializes
//! appends to one partition, different partitions proceed in parallel. Reads also run on the
//! blocking pool. Admin changes (create / delete topic) are serialized by `admin_lock`.
//!
//! acks: `1` answers after the append returned, i.e. once it is durable per the topic's flush
//! policy; `0` answers before appending (errors found later are only logged); `-1` (all) waits
//! for every in-sync replica — on a single broker the in-sync set is the leader alone, so it is
//! the same as `1`. The high watermark on a single broker is the end of the last completed append.

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
use sluiceway_core::registry::{EmbeddedRegistry, NewTopic, Registry, TopicInfo};
use sluiceway_core::storage::{Clock, PartitionLog, SystemClock};
use sluiceway_core::topic::{TopicConfig, validate_topic_name};
use sluiceway_core::{Error, ErrorCode, Offset, Result, TimestampMs};
use sluiceway_proto::v1;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tracing::{debug, info, warn};

use crate::config::BrokerConfig;
use crate::errors::{status, to_proto};
use crate::groups::{Groups, internal_topic_error, is_internal_topic};
use crate::metrics::Metrics;
use crate::partition::Partition;

/// A hosted topic: its effective configuration and its partitions (index = partition number).
#[derive(Debug)]
pub struct Topic {
    pub config: TopicConfig,
    pub partitions: Vec<Arc<Partition>>,
}

/// See the module docs.
#[derive(Debug)]
pub struct Broker {
    /// Held (locked) for the broker's lifetime: one broker per data directory.
    _lock: std::fs::File,
    pub config: BrokerConfig,
    pub registry: Arc<dyn Registry>,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    clock: Arc<dyn Clock>,
    admin_lock: tokio::sync::Mutex<()>,
    requests: Arc<Semaphore>,
    fetches: Arc<Semaphore>,
    shutdown: watch::Sender<bool>,
    pub metrics: Metrics,
    /// The consumer-group coordinators and `__consumer_offsets`.
    pub groups: Arc<Groups>,
}

/// A per-partition failure: its code and message.
type PartitionError = (ErrorCode, String);

fn perr(e: &Error) -> PartitionError {
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

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| internal(format!("internal task failed: {e}")))?
}

impl Broker {
    /// Opens the registry in the data directory and every partition log it assigns to this broker.
    pub fn open(config: BrokerConfig) -> Result<Broker> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| Error::io("create data directory", &config.data_dir, e))?;
        let lock = lock_data_dir(&config.data_dir)?;
        let registry = Arc::new(EmbeddedRegistry::open(&config.data_dir, config.broker_id)?);
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let mut topics = HashMap::new();
        for t in registry.topics()? {
            let topic = open_topic(&config, &clock, &t)?;
            info!(topic = %t.name, partitions = t.partitions.len(), "opened topic");
            topics.insert(t.name.clone(), Arc::new(topic));
        }
        // `__consumer_offsets` gets the broker's default log configuration (its flush policy);
        // the store itself turns retention off.
        let defaults = TopicConfig::parse(&config.topic_defaults, &BTreeMap::new())?;
        let groups = Groups::open(&config.data_dir, defaults.log, clock.clone())?;
        groups.topics_changed(
            topics
                .iter()
                .map(|(name, t): (&String, &Arc<Topic>)| (name.clone(), t.partitions.len() as u32))
                .collect(),
        );
        let (shutdown, _) = watch::channel(false);
        Ok(Broker {
            _lock: lock,
            config,
            registry,
            topics: RwLock::new(topics),
            clock,
            admin_lock: tokio::sync::Mutex::new(()),
            requests: Arc::new(Semaphore::new(IN_FLIGHT_REQUESTS_MAX)),
            fetches: Arc::new(Semaphore::new(IN_FLIGHT_FETCHES_MAX)),
            shutdown,
            metrics: Metrics::default(),
            groups: Arc::new(groups),
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

    /// Partition counts of the hosted topics (what the group coordinators assign).
    pub fn topic_partition_counts(&self) -> BTreeMap<String, u32> {
        self.hosted_topics()
            .into_iter()
            .map(|(name, t)| (name, t.partitions.len() as u32))
            .collect()
    }

    /// Whether this broker hosts the partition (and it is not being deleted).
    pub fn has_partition(&self, topic: &str, partition: u32) -> bool {
        self.partition(topic, partition).is_ok()
    }

    fn partition(
        &self,
        topic: &str,
        partition: u32,
    ) -> std::result::Result<Arc<Partition>, PartitionError> {
        self.topic(topic)
            .and_then(|t| t.partitions.get(partition as usize).cloned())
            .filter(|p| !p.is_deleted())
            .ok_or_else(|| unknown(topic, partition))
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
        for (name, topic) in self.hosted_topics() {
            for p in &topic.partitions {
                if let Err(e) = p.log.close() {
                    warn!(topic = %name, partition = p.partition, error = %e, "closing the log failed");
                }
            }
        }
        self.groups.close();
    }

    /// One round of housekeeping on every log: age rolls and interval flushes.
    pub fn tick_all(&self) {
        for (name, topic) in self.hosted_topics() {
            for p in &topic.partitions {
                if let Err(e) = p.log.tick() {
                    warn!(topic = %name, partition = p.partition, error = %e, "log tick failed");
                }
            }
        }
        self.groups.tick();
    }

    /// One retention pass over every log.
    pub fn enforce_retention_all(&self) {
        for (name, topic) in self.hosted_topics() {
            for p in &topic.partitions {
                match p.log.enforce_retention() {
                    Ok(0) => {}
                    Ok(n) => {
                        info!(topic = %name, partition = p.partition, segments = n, "retention deleted segments")
                    }
                    Err(e) => {
                        warn!(topic = %name, partition = p.partition, error = %e, "retention failed")
                    }
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
                1
            } else {
                req.replication_factor
            },
            configs,
        };
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
            match open_topic_with(&broker_config.data_dir, &clock, &info, config) {
                Ok(topic) => Ok((info, topic)),
                Err(e) => {
                    // Undo the registration so the topic can be created again once fixed.
                    let _ = registry.delete_topic(&info.name);
                    Err(e)
                }
            }
        })
        .await?;
        info!(topic = %info.name, partitions = info.partitions.len(), "created topic");
        self.topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(info.name.clone(), Arc::new(topic));
        self.groups.topics_changed(self.topic_partition_counts());
        Ok(info)
    }

    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let _admin = self.admin_lock.lock().await;
        let registry = self.registry.clone();
        let n = name.to_owned();
        blocking(move || registry.delete_topic(&n)).await?;
        let removed = self
            .topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        if let Some(topic) = removed {
            for p in &topic.partitions {
                p.mark_deleted();
            }
            let topic = topic.clone();
            blocking(move || {
                for p in &topic.partitions {
                    // Readers still holding the partition keep their open files (Linux keeps
                    // unlinked files readable); appends after this fail and are answered as such.
                    let _ = p.log.close();
                    let dir = p.log.dir().to_path_buf();
                    std::fs::remove_dir_all(&dir)
                        .map_err(|e| Error::io("remove partition directory", &dir, e))?;
                }
                Ok(())
            })
            .await?;
            self.groups.topics_changed(self.topic_partition_counts());
            self.groups.forget_topic(name).await;
        }
        info!(topic = %name, "deleted topic");
        Ok(())
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
            };
            match self.check_produce(&p, acks) {
                Err((code, message)) => {
                    result.error_code = to_proto(code);
                    result.error_message = message;
                }
                Ok(partition) => {
                    // The one copy of a produced set: the log rewrites its offset fields in place.
                    let mut set = Vec::from(p.message_set);
                    let bytes = set.len() as u64;
                    let handle = tokio::task::spawn_blocking(move || {
                        let r = partition.log.append(&mut set);
                        if let Ok(info) = &r {
                            partition.advance_high_watermark(info.last_offset.next());
                            partition.produced_messages.fetch_add(
                                info.message_count,
                                std::sync::atomic::Ordering::Relaxed,
                            );
                            partition
                                .produced_bytes
                                .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
                            debug!(topic = %partition.topic, partition = partition.partition, base_offset = info.base_offset.0,
                                last_offset = info.last_offset.0, "appended");
                        }
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
                        warn!(topic = %p.topic, partition = p.partition, error = %e, "acks=0 append failed");
                    }
                }
                drop(permit);
            });
            return Ok(v1::ProduceResponse { results });
        }
        for (i, h) in pending {
            let r = &mut results[i];
            match h.await {
                Ok((p, Ok(info))) => {
                    r.base_offset = info.base_offset.0 as i64;
                    // Kafka's rule: the append time only when the topic stamps it
                    // (LogAppendTime); -1 for CreateTime topics, whose records keep the
                    // producer's timestamps.
                    if p.log.config().timestamp_type == TimestampType::LogAppendTime {
                        r.log_append_time_ms = info.log_append_time.0;
                    }
                    r.log_start_offset = p.log.log_start_offset().0 as i64;
                }
                Ok((p, Err(e))) => {
                    debug!(topic = %p.topic, partition = p.partition, error = %e, "append refused");
                    r.error_code = to_proto(e.code());
                    r.error_message = e.to_string();
                }
                Err(e) => {
                    r.error_code = to_proto(ErrorCode::UnknownServerError);
                    r.error_message = format!("append task failed: {e}");
                }
            }
        }
        drop(permit);
        Ok(v1::ProduceResponse { results })
    }

    fn check_produce(
        &self,
        p: &v1::ProducePartition,
        acks: i32,
    ) -> std::result::Result<Arc<Partition>, PartitionError> {
        let partition = self.partition(&p.topic, p.partition)?;
        check_epoch(&partition, p.leader_epoch)?;
        if acks == -1 && partition.isr_size < partition.min_insync_replicas {
            return Err((
                ErrorCode::NotEnoughReplicas,
                format!(
                    "{} has {} in-sync replica(s), fewer than its min.insync.replicas of {}",
                    partition.name(),
                    partition.isr_size,
                    partition.min_insync_replicas
                ),
            ));
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
            // still wakes us (no lost wake-up).
            let resolved: Vec<std::result::Result<Arc<Partition>, PartitionError>> = requests
                .iter()
                .map(|p| self.partition(&p.topic, p.partition))
                .collect();
            let mut receivers: Vec<watch::Receiver<u64>> = resolved
                .iter()
                .filter_map(|r| r.as_ref().ok())
                .map(|p| p.subscribe())
                .collect();
            let reqs = requests.clone();
            let (results, bytes, failed) = tokio::task::spawn_blocking(move || {
                read_partitions(&reqs, &resolved, response_max)
            })
            .await
            .map_err(|e| {
                status(
                    ErrorCode::UnknownServerError,
                    format!("fetch task failed: {e}"),
                )
            })?;
            if bytes >= min_bytes || failed || Instant::now() >= deadline || *shutdown.borrow() {
                return Ok(v1::FetchResponse { results });
            }
            // Wait for any partition's high watermark to move, the deadline, or shutdown.
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
        let partition = self.partition(&p.topic, p.partition)?;
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

fn open_topic(config: &BrokerConfig, clock: &Arc<dyn Clock>, info: &TopicInfo) -> Result<Topic> {
    let topic_config = TopicConfig::parse(&config.topic_defaults, &info.configs)?;
    open_topic_with(&config.data_dir, clock, info, topic_config)
}

fn open_topic_with(
    data_dir: &Path,
    clock: &Arc<dyn Clock>,
    info: &TopicInfo,
    config: TopicConfig,
) -> Result<Topic> {
    let name: Arc<str> = Arc::from(info.name.as_str());
    let mut partitions = Vec::with_capacity(info.partitions.len());
    for p in &info.partitions {
        let dir: PathBuf = data_dir.join(PartitionLog::dir_name(&info.name, p.partition));
        let log = PartitionLog::open(dir, config.log.clone(), clock.clone())?;
        // A single broker: everything appended is replicated everywhere it needs to be, so the
        // high watermark is the log end (a log recovered after a crash may have a stale one).
        log.set_high_watermark(log.log_end_offset());
        partitions.push(Arc::new(Partition::new(
            name.clone(),
            p.partition,
            p.leader_epoch,
            p.isr.len() as u32,
            config.min_insync_replicas,
            log,
        )));
    }
    Ok(Topic { config, partitions })
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

fn check_epoch(p: &Partition, epoch: Option<i32>) -> std::result::Result<(), PartitionError> {
    match epoch {
        None => Ok(()),
        Some(e) if e < 0 || (e as u32) < p.leader_epoch => Err((
            ErrorCode::FencedLeaderEpoch,
            format!(
                "leader epoch {e} of {} is older than the current {}",
                p.name(),
                p.leader_epoch
            ),
        )),
        Some(e) if e as u32 > p.leader_epoch => Err((
            ErrorCode::UnknownLeaderEpoch,
            format!(
                "leader epoch {e} of {} is newer than the current {}",
                p.name(),
                p.leader_epoch
            ),
        )),
        Some(_) => Ok(()),
    }
}

/// Reads every requested partition once. Returns the results, the bytes read, and whether any
/// partition failed (a failure answers the fetch at once, as Kafka does).
fn read_partitions(
    requests: &[v1::FetchPartition],
    resolved: &[std::result::Result<Arc<Partition>, PartitionError>],
    response_max: u32,
) -> (Vec<v1::FetchPartitionResult>, u64, bool) {
    let mut budget = response_max;
    let mut total = 0u64;
    let mut failed = false;
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
            check_epoch(&p, req.leader_epoch)?;
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
            if max == 0 && total > 0 {
                // The response is full: report positions only.
                return Ok((
                    p.log.high_watermark(),
                    p.log.log_start_offset(),
                    p.log.log_end_offset(),
                    Vec::new(),
                    p,
                ));
            }
            let hw = p.log.high_watermark();
            let read = p
                .log
                .read(Offset(req.fetch_offset as u64), max.max(1), hw)
                .map_err(|e| perr(&e))?;
            // The log returns at least one whole entry even above `max` (KIP-74). Only the first
            // partition with data may overshoot that way, so the response stays bounded.
            let bytes = if total > 0 && read.bytes.len() > max as usize {
                Vec::new()
            } else {
                read.bytes
            };
            Ok((
                read.high_watermark,
                read.log_start_offset,
                read.log_end_offset,
                bytes,
                p,
            ))
        });
        match outcome {
            Ok((hw, start, end, bytes, p)) => {
                r.high_watermark = hw.0 as i64;
                r.log_start_offset = start.0 as i64;
                r.log_end_offset = end.0 as i64;
                let n = bytes.len() as u64;
                p.fetched_bytes
                    .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                total += n;
                budget = budget.saturating_sub(u32::try_from(n).unwrap_or(u32::MAX));
                r.message_set = bytes.into();
            }
            Err((code, message)) => {
                failed = true;
                r.error_code = to_proto(code);
                r.error_message = message;
            }
        }
        results.push(r);
    }
    (results, total, failed)
}

//! The connection and metadata layer every client shares.
//!
//! Owns: one tonic `Channel` per broker address (cached, created lazily, reconnecting by
//! itself), the list of known broker addresses (bootstrap ∪ the registry's answer), and the
//! metadata cache (topic → partitions → leader broker and epoch).
//!
//! - Metadata requests (`Registry.GetMetadata`) go round-robin over the known addresses; when
//!   one fails with a connection error the next is tried, so one dead bootstrap address does not
//!   stop a client. Only when every address failed is the last error returned.
//! - The cache is refreshed when a caller reports NOT_LEADER / UNKNOWN_TOPIC_OR_PARTITION /
//!   connection errors ([`Cluster::request_refresh`]), and when it is older than
//!   `metadata.max.age.ms`. Refreshes are serialised and rate-limited
//!   ([`CLIENT_METADATA_REFRESH_MS_MIN`]) so a burst of errors costs one round trip.
//! - Statuses and wire types become core's errors and types in [`crate::wire`], shared with
//!   the broker.
//! - A topic the registry says does not exist is remembered as missing for
//!   [`CLIENT_MISSING_TOPIC_TTL_MS`]: lookups within that time fail at once without a round
//!   trip (a batch of sends to a mistyped topic costs one lookup), and missing topics are not
//!   tracked by later refreshes (they are not asked about forever).
//!
//! The first refresh asks for every topic (an empty request means all); later ones ask for the
//! topics already cached plus any a caller is looking up, so a topic created since appears as
//! soon as someone asks for it. Bounded by [`CLIENT_METADATA_TOPICS_MAX`].

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use sluiceway_proto::v1;
use sluiceway_proto::v1::group_client::GroupClient;
use sluiceway_proto::v1::log_client::LogClient;
use sluiceway_proto::v1::registry_client::RegistryClient;
use tonic::transport::Channel;

use crate::client::security::{AuthChannel, Connector};

use super::config::CommonConfig;
use super::runtime::Home;
use crate::error::{Error, ErrorCode, Result};
use crate::group::TopicPartition;
use crate::limits::{
    CLIENT_METADATA_REFRESH_MS_MIN, CLIENT_METADATA_TOPICS_MAX, CLIENT_MISSING_TOPIC_TTL_MS,
    HTTP2_CONNECTION_WINDOW_BYTES, HTTP2_FRAME_BYTES_MAX, HTTP2_STREAM_WINDOW_BYTES,
    REQUEST_BYTES_MAX, REQUEST_PARTITIONS_MAX, RESPONSE_BYTES_MAX,
};
use crate::types::Offset;
use crate::wire::{TopicMetadata, code_from_proto, error_from_status, partition_error};

/// A broker as the registry describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerInfo {
    pub broker_id: i32,
    pub address: String,
    pub alive: bool,
}

/// Whether an error means "this broker could not be reached" (try another, refresh metadata).
/// A broker that answered SHUTTING_DOWN is going away (a restart, a rolling upgrade): the same
/// as a lost connection for the client, which retries rather than failing the caller (the
/// client's own shutdown is `Error::ShuttingDown`, never a `Remote` one).
pub(crate) fn is_connection_error(e: &Error) -> bool {
    matches!(e, Error::Network(_) | Error::TimedOut(_))
        || matches!(
            e,
            Error::Remote {
                code: ErrorCode::BrokerNotAvailable
                    | ErrorCode::NetworkException
                    | ErrorCode::ShuttingDown,
                ..
            }
        )
}

/// Whether a group request's error means the coordinator moved or is unreachable, so the
/// client must find it again (Kafka's NOT_COORDINATOR / COORDINATOR_NOT_AVAILABLE handling).
pub(crate) fn coordinator_moved(e: &Error) -> bool {
    is_connection_error(e)
        || matches!(
            e.code(),
            ErrorCode::NotCoordinator | ErrorCode::CoordinatorNotAvailable
        )
}

/// Whether the cached metadata should be refreshed after this error.
pub(crate) fn needs_metadata_refresh(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::NotLeader
            | ErrorCode::UnknownTopicOrPartition
            | ErrorCode::LeaderNotAvailable
            | ErrorCode::FencedLeaderEpoch
            | ErrorCode::UnknownLeaderEpoch
            | ErrorCode::BrokerNotAvailable
            | ErrorCode::NetworkException
            | ErrorCode::RequestTimedOut
            | ErrorCode::KafkaStorageError
    )
}

#[derive(Debug, Default)]
struct Cache {
    /// broker id → address, from the last answer.
    brokers: HashMap<i32, String>,
    /// FxHash: looked up for every record a producer sends (see `Cargo.toml` on `rustc-hash`).
    topics: rustc_hash::FxHashMap<String, Arc<TopicMetadata>>,
    /// Topics asked about that the registry said do not exist, and when it said so (answered
    /// from cache for [`CLIENT_MISSING_TOPIC_TTL_MS`]).
    missing: HashMap<String, Instant>,
    /// Of the missing topics, those the broker would not describe to this client
    /// (TOPIC_AUTHORIZATION_FAILED), with its message: they fail with that, not "does not exist".
    denied: HashMap<String, String>,
    refreshed_at: Option<Instant>,
    /// Set by `request_refresh`: the next lookup refreshes first.
    stale: bool,
}

/// Connections and metadata; shared by a client's tasks behind an `Arc`.
#[derive(Debug)]
pub(crate) struct Cluster {
    pub(crate) config: CommonConfig,
    /// The runtime background refreshes run on.
    home: Home,
    channels: Mutex<HashMap<String, Channel>>,
    /// TLS and credentials for every channel (`security.protocol` and friends).
    connector: Result<Connector>,
    /// Addresses metadata requests rotate over: bootstrap first, then every broker learned.
    addresses: RwLock<Vec<String>>,
    next: AtomicUsize,
    cache: RwLock<Cache>,
    /// Serialises refreshes (a refresh is a network round trip; waiters reuse its answer).
    refresh_lock: tokio::sync::Mutex<()>,
    /// When the last refresh was attempted, successful or not: attempts are spaced by
    /// `retry.backoff.ms` (at least [`CLIENT_METADATA_REFRESH_MS_MIN`]) so a cluster that is
    /// down is not polled in a tight loop.
    last_attempt: Mutex<Option<Instant>>,
    /// A background refresh is running ([`Cluster::spawn_refresh`]).
    refreshing: AtomicBool,
    /// group id → the address of its coordinator ([`Cluster::coordinator_for`]).
    coordinators: Mutex<HashMap<String, String>>,
}

impl Cluster {
    /// Where the owning client lives (its runtime and process).
    pub(crate) fn home(&self) -> &Home {
        &self.home
    }

    pub(crate) fn new(config: CommonConfig, home: Home) -> Cluster {
        let addresses = config.bootstrap_servers.clone();
        // Validated (files read) before any client gets here; a file that changed since then
        // fails every request with the same INVALID_CONFIG.
        let connector = config.security.connector();
        Cluster {
            connector,
            config,
            home,
            channels: Mutex::new(HashMap::new()),
            addresses: RwLock::new(addresses),
            next: AtomicUsize::new(0),
            cache: RwLock::new(Cache::default()),
            refresh_lock: tokio::sync::Mutex::new(()),
            last_attempt: Mutex::new(None),
            refreshing: AtomicBool::new(false),
            coordinators: Mutex::new(HashMap::new()),
        }
    }

    /// The cached channel to `address`, created (lazily connecting) on first use, with TLS
    /// and credentials as `security.protocol` says.
    pub(crate) fn channel(&self, address: &str) -> Result<AuthChannel> {
        let connector = self.connector.as_ref().map_err(clone_error)?;
        let mut channels = self.channels.lock();
        if let Some(c) = channels.get(address) {
            return Ok(connector.intercept(c.clone()));
        }
        let endpoint = connector
            .endpoint("bootstrap.servers", address, self.config.request_timeout)?
            .tcp_nodelay(true)
            .initial_stream_window_size(HTTP2_STREAM_WINDOW_BYTES)
            .initial_connection_window_size(HTTP2_CONNECTION_WINDOW_BYTES)
            .max_frame_size(HTTP2_FRAME_BYTES_MAX)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        let channel = endpoint.connect_lazy();
        channels.insert(address.to_owned(), channel.clone());
        Ok(connector.intercept(channel))
    }

    pub(crate) fn log_client(&self, address: &str) -> Result<LogClient<AuthChannel>> {
        Ok(LogClient::new(self.channel(address)?)
            .max_decoding_message_size(RESPONSE_BYTES_MAX as usize)
            .max_encoding_message_size(REQUEST_BYTES_MAX as usize))
    }

    pub(crate) fn group_client(&self, address: &str) -> Result<GroupClient<AuthChannel>> {
        Ok(GroupClient::new(self.channel(address)?)
            .max_decoding_message_size(RESPONSE_BYTES_MAX as usize)
            .max_encoding_message_size(REQUEST_BYTES_MAX as usize))
    }

    /// The address of the broker coordinating `group`, asked of any broker with FindCoordinator
    /// (in a cluster: the leader of the group's `__consumer_offsets` partition) and cached per
    /// group, so a member keeps talking to one coordinator until
    /// [`Cluster::coordinator_failed`]. Every group request goes through this one lookup.
    pub(crate) async fn coordinator_for(&self, group: &str) -> Result<String> {
        if let Some(a) = self.coordinators.lock().get(group) {
            return Ok(a.clone());
        }
        let timeout = self.config.request_timeout;
        let address = self
            .any_broker(|ch, _| {
                let group_id = group.to_owned();
                async move {
                    let mut req = tonic::Request::new(v1::FindCoordinatorRequest { group_id });
                    req.set_timeout(timeout);
                    let r = GroupClient::new(ch)
                        .find_coordinator(req)
                        .await
                        .map_err(|s| error_from_status(&s))?
                        .into_inner();
                    Ok(r.address)
                }
            })
            .await?;
        self.coordinators
            .lock()
            .insert(group.to_owned(), address.clone());
        Ok(address)
    }

    /// A group client at `group`'s coordinator ([`Cluster::coordinator_for`]).
    pub(crate) async fn coordinator_client(&self, group: &str) -> Result<GroupClient<AuthChannel>> {
        let address = self.coordinator_for(group).await?;
        self.group_client(&address)
    }

    /// Forgets `group`'s coordinator after a connection error or NOT_COORDINATOR-like answer
    /// ([`coordinator_moved`]); the next [`Cluster::coordinator_for`] asks again.
    pub(crate) fn coordinator_failed(&self, group: &str) {
        self.coordinators.lock().remove(group);
    }

    /// A request with the client's timeout (plus `extra`, for long polls).
    pub(crate) fn request<T>(&self, msg: T, extra: Duration) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(self.config.request_timeout + extra);
        r
    }

    /// The addresses to try for a request that any broker can answer, starting at the next one
    /// in the rotation.
    fn rotation(&self) -> Vec<String> {
        let addresses = self.addresses.read();
        let n = addresses.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n.max(1);
        (0..n).map(|i| addresses[(start + i) % n].clone()).collect()
    }

    /// Runs `f` against brokers in round-robin order, failing over on connection errors.
    pub(crate) async fn any_broker<T, F, Fut>(&self, mut f: F) -> Result<T>
    where
        F: FnMut(AuthChannel, String) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut last = None;
        for address in self.rotation() {
            let channel = self.channel(&address)?;
            match f(channel, address.clone()).await {
                Err(e) if is_connection_error(&e) => {
                    tracing::debug!(%address, error = %e, "broker unreachable; trying the next");
                    last = Some(e);
                }
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| Error::Network("no broker addresses known".into())))
    }

    /// A new idempotent producer id (InitProducerId) from any broker, retried with the backoff
    /// while the error is retriable (a registry briefly unreachable) until `request.timeout.ms`.
    pub(crate) async fn init_producer_id(&self) -> Result<i64> {
        let timeout = self.config.request_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let r = self
                .any_broker(|ch, _| async move {
                    let mut req = tonic::Request::new(v1::InitProducerIdRequest {});
                    req.set_timeout(timeout);
                    let r = LogClient::new(ch)
                        .init_producer_id(req)
                        .await
                        .map_err(|s| error_from_status(&s))?
                        .into_inner();
                    if r.producer_id < 0 || r.producer_epoch != 0 {
                        return Err(Error::Remote {
                            code: ErrorCode::UnknownServerError,
                            message: format!(
                                "InitProducerId answered id {} epoch {}",
                                r.producer_id, r.producer_epoch
                            ),
                        });
                    }
                    Ok(r.producer_id)
                })
                .await;
            match r {
                Err(e)
                    if (e.code().is_retriable() || is_connection_error(&e))
                        && tokio::time::Instant::now() + self.config.retry_backoff < deadline =>
                {
                    tracing::debug!(error = %e, "InitProducerId failed; retrying");
                    tokio::time::sleep(self.config.retry_backoff).await;
                }
                other => return other,
            }
        }
    }

    /// Every broker, from the registry.
    pub(crate) async fn list_brokers(&self) -> Result<(Vec<BrokerInfo>, i32)> {
        let timeout = self.config.request_timeout;
        self.any_broker(|ch, _| async move {
            let mut req = tonic::Request::new(v1::ListBrokersRequest {});
            req.set_timeout(timeout);
            let r = RegistryClient::new(ch)
                .list_brokers(req)
                .await
                .map_err(|s| error_from_status(&s))?
                .into_inner();
            let brokers = r
                .brokers
                .into_iter()
                .map(|b| BrokerInfo {
                    broker_id: b.broker_id,
                    address: b.address,
                    alive: b.alive,
                })
                .collect();
            Ok((brokers, r.controller_id))
        })
        .await
    }

    /// Starts a refresh of the tracked topics in the background unless one is running; calls
    /// `done` when it finished (either way).
    pub(crate) fn spawn_refresh(self: &Arc<Self>, done: impl FnOnce() + Send + 'static) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let cluster = self.clone();
        self.home.handle().spawn(async move {
            if let Err(e) = cluster.refresh(&[]).await {
                tracing::debug!(error = %e, "background metadata refresh failed");
            }
            cluster.refreshing.store(false, Ordering::Release);
            done();
        });
    }

    /// Marks the cache stale: the next lookup refreshes it.
    pub(crate) fn request_refresh(&self) {
        self.cache.write().stale = true;
    }

    fn fresh(&self, cache: &Cache) -> bool {
        !cache.stale
            && cache
                .refreshed_at
                .is_some_and(|t| t.elapsed() < self.config.metadata_max_age)
    }

    /// Refreshes the cached metadata for the tracked topics plus `extra`.
    pub(crate) async fn refresh(&self, extra: &[&str]) -> Result<()> {
        let started = Instant::now();
        let _guard = self.refresh_lock.lock().await;
        {
            // Someone else refreshed while we waited, and it covers what we need: reuse it.
            let c = self.cache.read();
            let covered = extra
                .iter()
                .all(|x| c.topics.contains_key(*x) || c.missing.contains_key(*x));
            if c.refreshed_at.is_some_and(|t| t >= started) && covered && !c.stale {
                return Ok(());
            }
        }
        // Space attempts out, failed ones included.
        let spacing = self
            .config
            .retry_backoff
            .max(Duration::from_millis(CLIENT_METADATA_REFRESH_MS_MIN));
        let wait = self
            .last_attempt
            .lock()
            .map_or(Duration::ZERO, |t| spacing.saturating_sub(t.elapsed()));
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        *self.last_attempt.lock() = Some(Instant::now());
        // Tracked topics plus those asked about; topics found missing earlier are not asked
        // about again unless someone looks them up.
        let (mut topics, still_missing, mut denied): (
            BTreeSet<String>,
            HashMap<String, Instant>,
            HashMap<String, String>,
        ) = {
            let c = self.cache.read();
            let ttl = Duration::from_millis(CLIENT_MISSING_TOPIC_TTL_MS);
            (
                c.topics.keys().cloned().collect(),
                c.missing
                    .iter()
                    .filter(|(t, at)| at.elapsed() < ttl && !extra.contains(&t.as_str()))
                    .map(|(t, at)| (t.clone(), *at))
                    .collect(),
                c.denied.clone(),
            )
        };
        denied.retain(|t, _| still_missing.contains_key(t));
        topics.extend(extra.iter().map(|s| (*s).to_owned()));
        if topics.len() > CLIENT_METADATA_TOPICS_MAX {
            return Err(Error::InvalidArgument(format!(
                "a client tracks at most {CLIENT_METADATA_TOPICS_MAX} topics"
            )));
        }
        let request = v1::GetMetadataRequest {
            topics: topics.into_iter().collect(),
        };
        let timeout = self.config.request_timeout;
        let resp = self
            .any_broker(|ch, _| {
                let request = request.clone();
                async move {
                    let mut req = tonic::Request::new(request);
                    req.set_timeout(timeout);
                    RegistryClient::new(ch)
                        .get_metadata(req)
                        .await
                        .map(|r| r.into_inner())
                        .map_err(|s| error_from_status(&s))
                }
            })
            .await?;
        let now = Instant::now();
        let mut cache = Cache {
            refreshed_at: Some(now),
            missing: still_missing,
            denied,
            ..Cache::default()
        };
        for b in &resp.brokers {
            cache.brokers.insert(b.broker_id, b.address.clone());
        }
        for t in resp.topics {
            let code = code_from_proto(t.error_code);
            if code == ErrorCode::None {
                cache.missing.remove(&t.name);
                cache.denied.remove(&t.name);
                cache
                    .topics
                    .insert(t.name.clone(), Arc::new(TopicMetadata::from_proto(t)));
            } else {
                if code == ErrorCode::TopicAuthorizationFailed {
                    cache.denied.insert(t.name.clone(), t.error_message);
                }
                cache.missing.insert(t.name, now);
            }
        }
        // Learn broker addresses so later metadata requests spread over the whole cluster and
        // survive the loss of the bootstrap brokers. Rebuilt on each answer (bootstrap, then the
        // live brokers), so the list is bounded by the bootstrap list plus the cluster's size.
        {
            let mut addresses = self.config.bootstrap_servers.clone();
            for b in resp.brokers {
                if !addresses.contains(&b.address) {
                    addresses.push(b.address);
                }
            }
            *self.addresses.write() = addresses;
        }
        *self.cache.write() = cache;
        Ok(())
    }

    /// The topic's metadata from the cache without I/O: `Some(Ok)` when known, `Some(Err)`
    /// when the registry said recently that it does not exist, `None` when a lookup is needed.
    pub(crate) fn cached_topic(&self, topic: &str) -> Option<Result<Arc<TopicMetadata>>> {
        // A known topic is answered from the cache even when a refresh is due: the background
        // tasks refresh it, and a client must keep working from what it knows while the
        // cluster is unreachable (as Kafka's producer does).
        let c = self.cache.read();
        if let Some(t) = c.topics.get(topic) {
            return Some(Ok(t.clone()));
        }
        let ttl = Duration::from_millis(CLIENT_MISSING_TOPIC_TTL_MS);
        c.missing
            .get(topic)
            .filter(|at| at.elapsed() < ttl)
            .map(|_| match c.denied.get(topic) {
                Some(message) => Err(Error::Remote {
                    code: ErrorCode::TopicAuthorizationFailed,
                    message: message.clone(),
                }),
                None => Err(missing_topic(topic)),
            })
    }

    /// The topic's metadata, from the cache when known, else from the registry. A topic the
    /// registry does not know is UNKNOWN_TOPIC_OR_PARTITION.
    pub(crate) async fn topic(&self, topic: &str) -> Result<Arc<TopicMetadata>> {
        if let Some(r) = self.cached_topic(topic) {
            return r;
        }
        // Unknown: ask the registry (a topic created a moment ago appears here).
        self.refresh(&[topic]).await?;
        self.cached_topic(topic)
            .unwrap_or_else(|| Err(missing_topic(topic)))
    }

    /// The cached leader address of a partition without any I/O: `None` when unknown (the caller
    /// asks for a refresh and retries later).
    pub(crate) fn cached_leader(&self, tp: &TopicPartition) -> Option<(String, i32)> {
        let c = self.cache.read();
        let t = c.topics.get(&tp.topic)?;
        let p = t.partitions.get(tp.partition as usize)?;
        c.brokers
            .get(&p.leader_id?)
            .map(|a| (a.clone(), p.leader_epoch))
    }

    /// The leader address of a partition, refreshing metadata when needed.
    pub(crate) async fn leader(&self, tp: &TopicPartition) -> Result<String> {
        let t = self.topic(&tp.topic).await?;
        if tp.partition as usize >= t.partitions.len() {
            return Err(Error::Remote {
                code: ErrorCode::UnknownTopicOrPartition,
                message: format!(
                    "topic {} has {} partitions; there is no partition {}",
                    tp.topic,
                    t.partitions.len(),
                    tp.partition
                ),
            });
        }
        if let Some((a, _)) = self.cached_leader(tp) {
            return Ok(a);
        }
        self.request_refresh();
        self.refresh(&[&tp.topic]).await?;
        self.cached_leader(tp)
            .map(|(a, _)| a)
            .ok_or_else(|| Error::Remote {
                code: ErrorCode::LeaderNotAvailable,
                message: format!("partition {}-{} has no leader", tp.topic, tp.partition),
            })
    }

    /// Whether the cache is older than `metadata.max.age.ms` (the producer's and consumer's
    /// background tasks refresh it then).
    pub(crate) fn is_stale(&self) -> bool {
        !self.fresh(&self.cache.read())
    }

    /// Looks offsets up (`Log.ListOffsets`), one request per leader. Results in request order;
    /// each is the offset (−1 when a timestamp lookup found nothing) or the partition's error.
    pub(crate) async fn list_offsets(
        &self,
        specs: &[(TopicPartition, OffsetSpec)],
    ) -> Vec<Result<ListedOffset>> {
        let mut out: Vec<Option<Result<ListedOffset>>> = (0..specs.len()).map(|_| None).collect();
        let mut by_leader: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, (tp, _)) in specs.iter().enumerate() {
            match self.leader(tp).await {
                Ok(a) => by_leader.entry(a).or_default().push(i),
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        for (address, all) in by_leader {
            // The broker takes at most REQUEST_PARTITIONS_MAX partitions per request.
            for idx in all.chunks(REQUEST_PARTITIONS_MAX) {
                self.list_offsets_at(&address, specs, idx, &mut out).await;
            }
        }
        out.into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(Error::Remote {
                        code: ErrorCode::UnknownServerError,
                        message: "no answer for partition".into(),
                    })
                })
            })
            .collect()
    }

    /// One ListOffsets request to `address` for `specs[i]`, `i` in `idx`; answers go to `out[i]`.
    async fn list_offsets_at(
        &self,
        address: &str,
        specs: &[(TopicPartition, OffsetSpec)],
        idx: &[usize],
        out: &mut [Option<Result<ListedOffset>>],
    ) {
        {
            let partitions = idx
                .iter()
                .map(|&i| {
                    let (tp, spec) = &specs[i];
                    let (spec, timestamp_ms) = match spec {
                        OffsetSpec::Earliest => (v1::OffsetSpec::Earliest, 0),
                        OffsetSpec::Latest => (v1::OffsetSpec::Latest, 0),
                        OffsetSpec::Timestamp(t) => (v1::OffsetSpec::Timestamp, *t),
                    };
                    v1::ListOffsetsPartition {
                        topic: tp.topic.clone(),
                        partition: tp.partition,
                        spec: spec as i32,
                        timestamp_ms,
                    }
                })
                .collect();
            let result = match self.log_client(address) {
                Ok(mut c) => c
                    .list_offsets(
                        self.request(v1::ListOffsetsRequest { partitions }, Duration::ZERO),
                    )
                    .await
                    .map(|r| r.into_inner())
                    .map_err(|s| error_from_status(&s)),
                Err(e) => Err(e),
            };
            match result {
                Ok(resp) => {
                    for (&i, r) in idx.iter().zip(resp.results) {
                        let tp = &specs[i].0;
                        out[i] = Some(if code_from_proto(r.error_code) == ErrorCode::None {
                            Ok(ListedOffset {
                                offset: (r.offset >= 0).then_some(Offset(r.offset as u64)),
                                log_start_offset: Offset(r.log_start_offset.max(0) as u64),
                                high_watermark: Offset(r.high_watermark.max(0) as u64),
                            })
                        } else {
                            if needs_metadata_refresh(code_from_proto(r.error_code)) {
                                self.request_refresh();
                            }
                            Err(partition_error(r.error_code, &r.error_message, tp))
                        });
                    }
                }
                Err(e) => {
                    if is_connection_error(&e) {
                        self.request_refresh();
                    }
                    for &i in idx {
                        out[i] = Some(Err(clone_error(&e)));
                    }
                }
            }
        }
    }
}

/// What `list_offsets` looks up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetSpec {
    Earliest,
    Latest,
    /// The first offset whose timestamp is ≥ this many ms since the epoch.
    Timestamp(i64),
}

/// A `list_offsets` answer for one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListedOffset {
    /// The offset found; `None` when a timestamp lookup found no message at or after it.
    pub offset: Option<Offset>,
    pub log_start_offset: Offset,
    pub high_watermark: Offset,
}

fn missing_topic(topic: &str) -> Error {
    Error::Remote {
        code: ErrorCode::UnknownTopicOrPartition,
        message: format!("topic {topic} does not exist"),
    }
}

/// A copy of an error for fanning one failure out to many waiters. `Error` holds an
/// `io::Error` and so is not `Clone`; the copy keeps the code and the message.
pub(crate) fn clone_error(e: &Error) -> Error {
    match e {
        Error::Network(m) => Error::Network(m.clone()),
        Error::TimedOut(m) => Error::TimedOut(m.clone()),
        Error::ShuttingDown => Error::ShuttingDown,
        Error::Closed(w) => Error::Closed(w),
        Error::Interrupted => Error::Interrupted,
        Error::Forked {
            what,
            parent,
            child,
        } => Error::Forked {
            what,
            parent: *parent,
            child: *child,
        },
        Error::Undelivered {
            failed,
            pending,
            first_error,
        } => Error::Undelivered {
            failed: *failed,
            pending: *pending,
            first_error: first_error.as_deref().map(|e| Box::new(clone_error(e))),
        },
        Error::InvalidArgument(m) => Error::InvalidArgument(m.clone()),
        Error::MessageTooLarge { size, max } => Error::MessageTooLarge {
            size: *size,
            max: *max,
        },
        Error::RecordListTooLarge { size, max } => Error::RecordListTooLarge {
            size: *size,
            max: *max,
        },
        Error::InvalidConfig { key, reason } => Error::InvalidConfig {
            key: key.clone(),
            reason: reason.clone(),
        },
        Error::Remote { code, message } => Error::Remote {
            code: *code,
            message: message.clone(),
        },
        other => Error::Remote {
            code: other.code(),
            message: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_round_robins() {
        let c = CommonConfig {
            bootstrap_servers: vec!["a:1".into(), "b:2".into(), "c:3".into()],
            ..CommonConfig::default()
        };
        let cl = Cluster::new(c, Home::new("test").unwrap());
        assert_eq!(cl.rotation(), ["a:1", "b:2", "c:3"]);
        assert_eq!(cl.rotation(), ["b:2", "c:3", "a:1"]);
        assert_eq!(cl.rotation(), ["c:3", "a:1", "b:2"]);
    }
}

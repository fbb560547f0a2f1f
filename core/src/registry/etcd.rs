//! The etcd registry backend: a cluster's brokers, controller, topics and partition states live
//! in etcd (`docs/FORMAT.md`, "Cluster metadata in etcd", has the keys and JSON values).
//!
//! What it owns, per broker process:
//! - a **snapshot** of the whole prefix ([`state::Snapshot`]): loaded with a paged `get` at one
//!   revision R, then moved forward by a prefix watch from R+1. Every read of the
//!   [`Registry`] trait answers from it, so reads keep working while etcd is unreachable; the
//!   [`Registry::subscribe`] version is bumped after each applied watch response. On compaction
//!   the whole state is loaded again.
//! - a **session**: a lease (TTL = the session timeout in whole seconds, at least 2 s) kept
//!   alive every TTL/3, holding `brokers/<id>`. When the lease is lost (etcd unreachable for
//!   longer than the TTL) a new one is granted and the broker registers again, in the
//!   background; the broker process keeps running.
//! - the **controller** campaign: every registered broker tries to create `controller` under its
//!   lease; the winner's epoch is the key's create revision, and every controller write is a
//!   transaction that compares it, so a deposed controller's writes fail. The decisions are
//!   pure ([`controller::reconcile`]) and level-triggered (every change and every
//!   `controller_reconcile_ms`), plus an edge: a broker whose registration disappeared is
//!   treated as failed for one pass even if it already registered again.
//!
//! Writes (`create_topic`, `delete_topic`, `alter_isr`, the controller's) are etcd transactions
//! guarded by revisions; after one succeeds the call waits (bounded) until the snapshot has
//! reached its revision, so the caller reads its own write.
//!
//! **API Boundary**: [`EtcdRegistry::connect`] is async and must run on the tokio runtime that
//! will host the background tasks (its `Handle` is kept). The [`Registry`] methods block: they
//! run their etcd calls with `Handle::block_on`, which is legal on plain threads and on
//! `spawn_blocking` threads and **panics on a runtime worker thread** — async callers use
//! `spawn_blocking`. Every etcd call is bounded by [`REGISTRY_REQUEST_TIMEOUT_MS`]; an
//! unreachable etcd gives a retriable REQUEST_TIMED_OUT naming it.
//!
//! Dropping the registry stops its tasks without revoking the lease (like a crash: the broker
//! counts as dead after the session timeout); [`Registry::shutdown`] revokes it (at once).

mod controller;
mod state;

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, LeaseKeepAliveStream,
    LeaseKeeper, PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchOptions,
};
use parking_lot::{Mutex, RwLock};
use tokio::runtime::Handle;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use self::controller::{PartitionChange, preferred_leader_changes, reconcile};
use self::state::{
    Applied, BrokerValue, ControllerValue, Event, Keys, PartitionValue, Snapshot, TopicValue,
    partition_info, prefix_end,
};
use super::{BrokerId, BrokerInfo, NewTopic, PartitionInfo, Registry, TopicInfo, place_replicas};
use crate::acl::{AclBinding, AclEntry, ResourcePattern};
use crate::error::{Error, ErrorCode, Result};
use crate::limits::{
    ACLS_MAX, LEADER_REBALANCE_INTERVAL_MS_DEFAULT, LEADER_REBALANCE_INTERVAL_MS_MAX,
    LEADER_REBALANCE_INTERVAL_MS_MIN, PARTITIONS_PER_TOPIC_MAX, REGISTRY_CAS_ATTEMPTS_MAX,
    REGISTRY_CONNECT_TIMEOUT_MS, REGISTRY_ENDPOINTS_MAX, REGISTRY_GET_PAGE_KEYS,
    REGISTRY_MESSAGE_BYTES_MAX, REGISTRY_RECONCILE_MS_DEFAULT, REGISTRY_RECONCILE_MS_MAX,
    REGISTRY_RECONCILE_MS_MIN, REGISTRY_REGISTER_GRACE_MS, REGISTRY_REQUEST_TIMEOUT_MS,
    REGISTRY_RETRY_MS, REGISTRY_SESSION_TIMEOUT_MS_DEFAULT, REGISTRY_SESSION_TIMEOUT_MS_MAX,
    REGISTRY_SESSION_TIMEOUT_MS_MIN, REGISTRY_STATE_BYTES_MAX, REGISTRY_TXN_OPS_MAX,
    REGISTRY_VALUE_BYTES_MAX, REPLICATION_FACTOR_MAX, TOPICS_MAX, USERS_MAX,
};
use crate::scram::{ScramCredential, validate_username};
use crate::topic::validate_topic_name;

/// The root used when the spec names none.
pub const DEFAULT_ROOT: &str = "/sluiceway";

/// Where the registry lives: `etcd://HOST:PORT[,HOST:PORT…][/chroot]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdSpec {
    /// `HOST:PORT` as given.
    hosts: Vec<String>,
    /// Starts with `/`, no trailing `/`.
    root: String,
}

impl EtcdSpec {
    /// Parses `etcd://127.0.0.1:2379,127.0.0.1:22379/chroot` (chroot optional, default
    /// [`DEFAULT_ROOT`]). Errors: InvalidConfig with key `registry`.
    pub fn parse(spec: &str) -> Result<EtcdSpec> {
        let bad = |reason: &str| Error::InvalidConfig {
            key: "registry".into(),
            reason: format!(
                "{spec:?} is not an etcd registry (etcd://HOST:PORT[,HOST:PORT...][/chroot]): {reason}"
            ),
        };
        let rest = spec
            .strip_prefix("etcd://")
            .ok_or_else(|| bad("it must start with etcd://"))?;
        let (hosts, root) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, DEFAULT_ROOT),
        };
        if root.is_empty() {
            return Err(bad("the chroot must name a path, such as /sluiceway"));
        }
        if root.contains("//")
            || !root
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-'))
        {
            return Err(bad(
                "the chroot may hold [a-zA-Z0-9._-] separated by single /",
            ));
        }
        let hosts: Vec<String> = hosts.split(',').map(str::to_owned).collect();
        if hosts.len() > REGISTRY_ENDPOINTS_MAX {
            return Err(bad(&format!(
                "more than {REGISTRY_ENDPOINTS_MAX} endpoints"
            )));
        }
        for h in &hosts {
            let Some((host, port)) = h.rsplit_once(':') else {
                return Err(bad(&format!("endpoint {h:?} is not HOST:PORT")));
            };
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Err(bad(&format!("endpoint {h:?} is not HOST:PORT")));
            }
        }
        Ok(EtcdSpec {
            hosts,
            root: root.to_owned(),
        })
    }

    /// The endpoints as URLs (`http://HOST:PORT`).
    pub fn endpoints(&self) -> Vec<String> {
        self.hosts.iter().map(|h| format!("http://{h}")).collect()
    }

    /// The key prefix, such as `/sluiceway` (no trailing `/`).
    pub fn root(&self) -> &str {
        &self.root
    }
}

impl fmt::Display for EtcdSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "etcd://{}{}", self.hosts.join(","), self.root)
    }
}

/// Timing of the etcd registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EtcdOptions {
    /// `--registry-session-timeout-ms`: the lease TTL is this in whole seconds, rounded up, at
    /// least 2 s. Default 6000.
    pub session_timeout_ms: u64,
    /// How often the controller re-checks every partition without a change. Default 1000.
    pub controller_reconcile_ms: u64,
    /// How often the controller hands leadership back to preferred replicas that are in sync
    /// again (Kafka's `leader.imbalance.check.interval.seconds` with
    /// `auto.leader.rebalance.enable`); 0 turns it off. Default 300000, Kafka's.
    pub leader_rebalance_interval_ms: u64,
}

impl Default for EtcdOptions {
    fn default() -> EtcdOptions {
        EtcdOptions {
            session_timeout_ms: REGISTRY_SESSION_TIMEOUT_MS_DEFAULT,
            controller_reconcile_ms: REGISTRY_RECONCILE_MS_DEFAULT,
            leader_rebalance_interval_ms: LEADER_REBALANCE_INTERVAL_MS_DEFAULT,
        }
    }
}

impl EtcdOptions {
    fn validate(&self) -> Result<()> {
        let range = |key: &str, v: u64, min: u64, max: u64| {
            if (min..=max).contains(&v) {
                Ok(())
            } else {
                Err(Error::InvalidConfig {
                    key: key.into(),
                    reason: format!("{v} ms is outside [{min}, {max}]"),
                })
            }
        };
        range(
            "registry-session-timeout-ms",
            self.session_timeout_ms,
            REGISTRY_SESSION_TIMEOUT_MS_MIN,
            REGISTRY_SESSION_TIMEOUT_MS_MAX,
        )?;
        range(
            "controller-reconcile-ms",
            self.controller_reconcile_ms,
            REGISTRY_RECONCILE_MS_MIN,
            REGISTRY_RECONCILE_MS_MAX,
        )?;
        if self.leader_rebalance_interval_ms != 0 {
            range(
                "leader-rebalance-interval-ms",
                self.leader_rebalance_interval_ms,
                LEADER_REBALANCE_INTERVAL_MS_MIN,
                LEADER_REBALANCE_INTERVAL_MS_MAX,
            )?;
        }
        Ok(())
    }

    /// The lease TTL in seconds.
    fn lease_ttl_s(&self) -> i64 {
        (self.session_timeout_ms.div_ceil(1000) as i64).max(2)
    }
}

/// See the module docs.
pub struct EtcdRegistry {
    inner: Arc<Inner>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// The lease and what this broker holds under it.
#[derive(Debug, Default)]
struct Session {
    /// 0 while none is held (lost, not granted again yet).
    lease: i64,
    /// Set by `register_broker`; the session task registers again with it after a lease loss.
    address: Option<String>,
    /// `brokers/<id>` exists under `lease`.
    registered: bool,
    /// `register_broker` succeeded once: from then on the session task registers again after a
    /// lost lease. Before, `register_broker` alone decides (it may be refusing a duplicate id).
    ever_registered: bool,
}

struct Inner {
    spec: EtcdSpec,
    me: BrokerId,
    options: EtcdOptions,
    keys: Keys,
    client: Client,
    handle: Handle,
    state: RwLock<Snapshot>,
    version: watch::Sender<u64>,
    session: Mutex<Session>,
    /// Brokers whose registration disappeared since the controller's last pass (the edge
    /// trigger), at most REGISTRY_BROKERS_MAX (one per broker id).
    failed: Mutex<BTreeSet<BrokerId>>,
    stop: watch::Sender<bool>,
    /// Wakes the controller task (registered, lease replaced).
    wake: Notify,
}

fn request_timeout() -> Duration {
    Duration::from_millis(REGISTRY_REQUEST_TIMEOUT_MS)
}

fn retry_pause() -> Duration {
    Duration::from_millis(REGISTRY_RETRY_MS)
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    let bytes = serde_json::to_vec(value).map_err(|e| Error::Remote {
        code: ErrorCode::UnknownServerError,
        message: format!("cannot encode a registry value: {e}"),
    })?;
    if bytes.len() > REGISTRY_VALUE_BYTES_MAX {
        return Err(Error::InvalidRequest(format!(
            "the registry value would be {} bytes, more than the limit of {REGISTRY_VALUE_BYTES_MAX}",
            bytes.len()
        )));
    }
    Ok(bytes)
}

fn header_revision(resp: &TxnResponse) -> i64 {
    resp.header().map(|h| h.revision()).unwrap_or(0)
}

impl EtcdRegistry {
    /// Connects to etcd, loads the cluster state, grants this broker's lease and starts the
    /// watch, session and controller tasks on the current runtime. The broker is not registered
    /// (and does not campaign for controller) until [`Registry::register_broker`].
    ///
    /// Errors: InvalidConfig for bad options or ids; a retriable REQUEST_TIMED_OUT when etcd
    /// cannot be reached.
    pub async fn connect(
        spec: &EtcdSpec,
        me: BrokerId,
        options: EtcdOptions,
    ) -> Result<Arc<EtcdRegistry>> {
        options.validate()?;
        if me > BrokerId::MAX {
            return Err(Error::InvalidConfig {
                key: "broker_id".into(),
                reason: format!("{me} is larger than {}", BrokerId::MAX),
            });
        }
        // HTTP/2 pings find a dead connection under a stalled watch; etcd refuses pings more
        // often than every 5 s (`--grpc-keepalive-min-time`), so no faster than that.
        let connect_options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_millis(REGISTRY_CONNECT_TIMEOUT_MS))
            .with_keep_alive(Duration::from_secs(6), Duration::from_secs(3));
        let endpoints = spec.endpoints();
        let unreachable = |reason: String| Error::Remote {
            code: ErrorCode::RequestTimedOut,
            message: format!("the registry (etcd at {spec}) is unreachable: {reason}"),
        };
        let client = match tokio::time::timeout(
            request_timeout(),
            Client::connect(&endpoints, Some(connect_options)),
        )
        .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Err(_) => {
                return Err(unreachable(format!(
                    "no answer within {REGISTRY_REQUEST_TIMEOUT_MS} ms"
                )));
            }
        };
        let inner = Arc::new(Inner {
            spec: spec.clone(),
            me,
            options,
            keys: Keys::new(spec.root()),
            client,
            handle: Handle::current(),
            state: RwLock::new(Snapshot::default()),
            version: watch::channel(0).0,
            session: Mutex::new(Session::default()),
            failed: Mutex::new(BTreeSet::new()),
            stop: watch::channel(false).0,
            wake: Notify::new(),
        });
        inner.load().await?;
        let lease = inner.grant_lease().await?;
        inner.session.lock().lease = lease;
        let tasks = vec![
            tokio::spawn(Arc::clone(&inner).watch_loop()),
            tokio::spawn(Arc::clone(&inner).session_loop()),
            tokio::spawn(Arc::clone(&inner).controller_loop()),
        ];
        tracing::info!(broker = %me, registry = %spec, "registry: connected to etcd");
        Ok(Arc::new(EtcdRegistry {
            inner,
            tasks: Mutex::new(tasks),
        }))
    }

    /// The spec this registry was connected with.
    pub fn spec(&self) -> &EtcdSpec {
        &self.inner.spec
    }

    /// This broker's id.
    pub fn broker_id(&self) -> BrokerId {
        self.inner.me
    }

    /// The controller epoch (the controller key's create revision), if a controller is known.
    pub fn controller_epoch(&self) -> Option<i64> {
        self.inner.state.read().controller.map(|c| c.epoch)
    }

    fn stop_tasks(&self) {
        self.inner.stop.send_replace(true);
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
    }

    fn block_on<F: Future>(&self, fut: F) -> F::Output {
        self.inner.handle.block_on(fut)
    }
}

impl Drop for EtcdRegistry {
    /// Stops the tasks without revoking the lease: the broker counts as dead after the session
    /// timeout, exactly as after a crash.
    fn drop(&mut self) {
        self.stop_tasks();
    }
}

impl fmt::Debug for EtcdRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdRegistry")
            .field("spec", &self.inner.spec.to_string())
            .field("broker_id", &self.inner.me)
            .field("revision", &self.inner.state.read().revision)
            .finish_non_exhaustive()
    }
}

/// Logs a background loop's failure once when it starts failing and once when it recovers,
/// instead of on every retry.
struct Health {
    what: &'static str,
    failing: bool,
}

impl Health {
    fn new(what: &'static str) -> Health {
        Health {
            what,
            failing: false,
        }
    }

    fn failed(&mut self, error: &dyn fmt::Display) {
        if !self.failing {
            tracing::warn!(
                "registry: {} failed (retrying every {REGISTRY_RETRY_MS} ms): {error}",
                self.what
            );
        } else {
            tracing::debug!("registry: {} failed again: {error}", self.what);
        }
        self.failing = true;
    }

    fn ok(&mut self) {
        if self.failing {
            tracing::info!("registry: {} works again", self.what);
        }
        self.failing = false;
    }
}

impl Inner {
    fn unreachable(&self, what: &str, reason: impl fmt::Display) -> Error {
        Error::Remote {
            code: ErrorCode::RequestTimedOut,
            message: format!(
                "the registry (etcd at {}) is unreachable: {what}: {reason}",
                self.spec
            ),
        }
    }

    /// Runs one etcd call, bounded by REGISTRY_REQUEST_TIMEOUT_MS, with errors mapped.
    async fn call<T>(
        &self,
        what: &str,
        fut: impl Future<Output = std::result::Result<T, etcd_client::Error>>,
    ) -> Result<T> {
        if *self.stop.borrow() {
            return Err(Error::ShuttingDown);
        }
        match tokio::time::timeout(request_timeout(), fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.etcd_error(what, e)),
            Err(_) => Err(self.unreachable(
                what,
                format!("no answer within {REGISTRY_REQUEST_TIMEOUT_MS} ms"),
            )),
        }
    }

    fn etcd_error(&self, what: &str, e: etcd_client::Error) -> Error {
        use tonic::Code;
        match &e {
            etcd_client::Error::GRpcStatus(s)
                if !matches!(
                    s.code(),
                    Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
                ) =>
            {
                Error::Remote {
                    code: ErrorCode::UnknownServerError,
                    message: format!(
                        "the registry (etcd at {}) refused to {what}: {e}",
                        self.spec
                    ),
                }
            }
            _ => self.unreachable(what, e),
        }
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    async fn txn(&self, what: &str, txn: Txn) -> Result<TxnResponse> {
        let mut client = self.client.clone();
        self.call(what, client.txn(txn)).await
    }

    async fn grant_lease(&self) -> Result<i64> {
        let ttl = self.options.lease_ttl_s();
        let mut client = self.client.clone();
        let resp = self
            .call("grant a lease", client.lease_grant(ttl, None))
            .await?;
        tracing::debug!(lease = resp.id(), ttl, "registry: lease granted");
        Ok(resp.id())
    }

    /// Waits (bounded) until the snapshot reflects `revision`, so a caller reads its own write.
    async fn wait_for_revision(&self, revision: i64) {
        let mut rx = self.version.subscribe();
        let caught_up = tokio::time::timeout(request_timeout(), async {
            while self.state.read().revision < revision {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        if caught_up.is_err() {
            tracing::debug!(
                revision,
                "registry: the watch has not reached our own write yet"
            );
        }
    }

    // ---- The snapshot ----

    /// Reads the whole prefix at one revision, in pages.
    async fn fetch_snapshot(&self) -> Result<Snapshot> {
        let mut kv = self
            .client
            .kv_client()
            .max_decoding_message_size(REGISTRY_MESSAGE_BYTES_MAX);
        let end = prefix_end(self.keys.prefix());
        let mut from = self.keys.prefix().as_bytes().to_vec();
        let mut snapshot = Snapshot::default();
        let mut revision = 0;
        let mut bytes = 0u64;
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(REGISTRY_GET_PAGE_KEYS);
            if revision != 0 {
                options = options.with_revision(revision);
            }
            let resp = self
                .call(
                    "load the cluster state",
                    kv.get(from.clone(), Some(options)),
                )
                .await?;
            if revision == 0 {
                revision = resp.header().map(|h| h.revision()).unwrap_or(0);
            }
            for kv in resp.kvs() {
                bytes += (kv.key().len() + kv.value().len()) as u64;
                if bytes > REGISTRY_STATE_BYTES_MAX {
                    return Err(Error::Remote {
                        code: ErrorCode::UnknownServerError,
                        message: format!(
                            "the cluster state under {} in etcd is larger than {REGISTRY_STATE_BYTES_MAX} bytes",
                            self.keys.prefix()
                        ),
                    });
                }
                snapshot.apply(
                    &self.keys,
                    Event {
                        key: kv.key(),
                        value: Some(kv.value()),
                        create_revision: kv.create_revision(),
                        mod_revision: kv.mod_revision(),
                        lease: kv.lease(),
                    },
                );
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        snapshot.revision = revision;
        Ok(snapshot)
    }

    /// Replaces the snapshot with a fresh load. Brokers that vanished or registered anew in
    /// between count as failed (the edge the watch would have reported).
    async fn load(&self) -> Result<()> {
        let fresh = self.fetch_snapshot().await?;
        {
            let mut state = self.state.write();
            let mut failed = self.failed.lock();
            for (id, old) in &state.brokers {
                if fresh
                    .brokers
                    .get(id)
                    .is_none_or(|b| b.create_revision != old.create_revision)
                {
                    failed.insert(*id);
                }
            }
            *state = fresh;
        }
        self.bump();
        Ok(())
    }

    async fn watch_loop(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        let mut health = Health::new("watching etcd");
        let mut reload = false;
        loop {
            if *stop.borrow() {
                return;
            }
            if reload {
                match self.load().await {
                    Ok(()) => reload = false,
                    Err(e) => {
                        health.failed(&e);
                        sleep_or_stop(&mut stop, retry_pause()).await;
                        continue;
                    }
                }
            }
            let start = self.state.read().revision + 1;
            let mut client = self
                .client
                .watch_client()
                .max_decoding_message_size(REGISTRY_MESSAGE_BYTES_MAX);
            let options = WatchOptions::new().with_prefix().with_start_revision(start);
            let mut stream = match self
                .call(
                    "watch the cluster state",
                    client.watch(self.keys.prefix(), Some(options)),
                )
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    health.failed(&e);
                    sleep_or_stop(&mut stop, retry_pause()).await;
                    continue;
                }
            };
            loop {
                let message = tokio::select! {
                    m = stream.message() => m,
                    _ = stop.wait_for(|s| *s) => return,
                };
                match message {
                    Ok(Some(resp)) => {
                        if resp.compact_revision() > 0 {
                            tracing::warn!(
                                compacted = resp.compact_revision(),
                                from = start,
                                "registry: etcd compacted the history the watch needs; loading the whole state again"
                            );
                            reload = true;
                            break;
                        }
                        if resp.canceled() {
                            health.failed(&format!("watch canceled: {}", resp.cancel_reason()));
                            break;
                        }
                        health.ok();
                        if !resp.events().is_empty() {
                            self.apply_events(resp.events());
                        }
                    }
                    Ok(None) => {
                        health.failed(&"the watch stream ended");
                        break;
                    }
                    Err(e) => {
                        health.failed(&e);
                        break;
                    }
                }
            }
            sleep_or_stop(&mut stop, retry_pause()).await;
        }
    }

    fn apply_events(&self, events: &[etcd_client::Event]) {
        let mut gone = Vec::new();
        {
            let mut state = self.state.write();
            for ev in events {
                let Some(kv) = ev.kv() else { continue };
                let value = match ev.event_type() {
                    EventType::Put => Some(kv.value()),
                    EventType::Delete => None,
                };
                let applied = state.apply(
                    &self.keys,
                    Event {
                        key: kv.key(),
                        value,
                        create_revision: kv.create_revision(),
                        mod_revision: kv.mod_revision(),
                        lease: kv.lease(),
                    },
                );
                if let Applied::BrokerGone(id) = applied {
                    gone.push(id);
                }
            }
        }
        if !gone.is_empty() {
            tracing::info!(brokers = ?gone, "registry: broker registrations expired or were revoked");
            self.failed.lock().extend(gone);
        }
        self.bump();
    }

    // ---- The session ----

    /// One attempt to hold `brokers/<me>` under `lease`: `Ok(true)` when it is ours now,
    /// `Ok(false)` when another session holds it.
    async fn try_register(&self, lease: i64, address: &str) -> Result<bool> {
        let key = self.keys.broker(self.me);
        let value = encode(&BrokerValue {
            address: address.to_owned(),
        })?;
        let put = TxnOp::put(
            key.clone(),
            value.clone(),
            Some(PutOptions::new().with_lease(lease)),
        );
        let resp = self
            .txn(
                "register the broker",
                Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([put.clone()])
                    .or_else([TxnOp::get(key.clone(), None)]),
            )
            .await?;
        if resp.succeeded() {
            self.wait_for_revision(header_revision(&resp)).await;
            return Ok(true);
        }
        let held = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| (kv.lease(), kv.value().to_vec())),
            _ => None,
        });
        match held {
            // Ours already (an answer lost earlier, or an address change): update under our lease.
            Some((l, v)) if l == lease => {
                if v != value {
                    let resp = self
                        .txn(
                            "update the broker's address",
                            Txn::new()
                                .when([Compare::lease(key, CompareOp::Equal, lease)])
                                .and_then([put]),
                        )
                        .await?;
                    if !resp.succeeded() {
                        return Ok(false);
                    }
                    self.wait_for_revision(header_revision(&resp)).await;
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Forgets `lease` (if it is still the current one): the registration and controllership
    /// under it are gone.
    fn lose_lease(&self, lease: i64) {
        let mut session = self.session.lock();
        if session.lease == lease {
            session.lease = 0;
            session.registered = false;
        }
        drop(session);
        self.wake.notify_one();
    }

    async fn session_loop(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        let mut health = Health::new("keeping the broker's lease alive");
        let mut keeper: Option<(i64, LeaseKeeper, LeaseKeepAliveStream)> = None;
        let mut waiting_for_id = false;
        let ttl_ms = self.options.lease_ttl_s() as u64 * 1000;
        loop {
            if *stop.borrow() {
                return;
            }
            let (mut lease, address, registered) = {
                let s = self.session.lock();
                (
                    s.lease,
                    s.address.clone().filter(|_| s.ever_registered),
                    s.registered,
                )
            };
            if lease == 0 {
                match self.grant_lease().await {
                    Ok(id) => {
                        self.session.lock().lease = id;
                        lease = id;
                        health.ok();
                    }
                    Err(e) => {
                        health.failed(&e);
                        sleep_or_stop(&mut stop, retry_pause()).await;
                        continue;
                    }
                }
            }
            let mut pause = Duration::from_millis(ttl_ms / 3);
            if let Some(address) = address.filter(|_| !registered) {
                match self.try_register(lease, &address).await {
                    Ok(true) => {
                        let mut s = self.session.lock();
                        if s.lease == lease {
                            s.registered = true;
                        }
                        drop(s);
                        tracing::info!(broker = %self.me, "registry: broker registered again under a new lease");
                        waiting_for_id = false;
                        self.wake.notify_one();
                    }
                    Ok(false) => {
                        if !waiting_for_id {
                            tracing::warn!(broker = %self.me, "registry: broker id is still registered by another session; retrying");
                        }
                        waiting_for_id = true;
                        pause = retry_pause();
                    }
                    Err(e) => {
                        health.failed(&e);
                        pause = retry_pause();
                    }
                }
            }
            if keeper.as_ref().is_none_or(|k| k.0 != lease) {
                let mut client = self.client.clone();
                keeper = match self
                    .call("keep the lease alive", client.lease_keep_alive(lease))
                    .await
                {
                    Ok((k, s)) => Some((lease, k, s)),
                    Err(e) => {
                        if e.to_string().contains("lease not found") {
                            tracing::warn!(broker = %self.me, lease, "registry: the broker's lease expired; registering again with a new lease");
                            self.lose_lease(lease);
                            continue;
                        }
                        health.failed(&e);
                        None
                    }
                };
            }
            if let Some((_, k, s)) = keeper.as_mut() {
                let answer = tokio::time::timeout(request_timeout(), async {
                    k.keep_alive().await?;
                    s.message().await
                })
                .await;
                match answer {
                    Ok(Ok(Some(resp))) if resp.ttl() > 0 => health.ok(),
                    Ok(Ok(Some(_))) => {
                        tracing::warn!(broker = %self.me, lease, "registry: the broker's lease expired; registering again with a new lease");
                        keeper = None;
                        self.lose_lease(lease);
                        continue;
                    }
                    Ok(Ok(None)) => {
                        health.failed(&"the keep-alive stream ended");
                        keeper = None;
                    }
                    Ok(Err(e)) => {
                        health.failed(&e);
                        keeper = None;
                    }
                    Err(_) => {
                        health.failed(&format!(
                            "no keep-alive answer within {REGISTRY_REQUEST_TIMEOUT_MS} ms"
                        ));
                        keeper = None;
                    }
                }
            }
            if keeper.is_none() {
                pause = pause.min(retry_pause());
            }
            sleep_or_stop(&mut stop, pause).await;
        }
    }

    // ---- The controller ----

    /// One campaign: `Some(epoch)` when this broker is the controller (now or already).
    async fn campaign(&self, lease: i64) -> Result<Option<i64>> {
        let key = self.keys.controller();
        let value = encode(&ControllerValue {
            broker_id: self.me.0,
        })?;
        let resp = self
            .txn(
                "campaign for controller",
                Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(
                        key.clone(),
                        value,
                        Some(PutOptions::new().with_lease(lease)),
                    )])
                    .or_else([TxnOp::get(key, None)]),
            )
            .await?;
        if resp.succeeded() {
            return Ok(Some(header_revision(&resp)));
        }
        let held = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| (kv.lease(), kv.create_revision())),
            _ => None,
        });
        Ok(match held {
            Some((l, epoch)) if l == lease => Some(epoch),
            _ => None,
        })
    }

    async fn controller_loop(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        let mut version = self.version.subscribe();
        let period = Duration::from_millis(self.options.controller_reconcile_ms);
        let mut health = Health::new("the controller");
        // (lease, epoch) while this broker is the controller.
        let mut mine: Option<(i64, i64)> = None;
        let rebalance_every = (self.options.leader_rebalance_interval_ms > 0)
            .then(|| Duration::from_millis(self.options.leader_rebalance_interval_ms));
        let mut last_rebalance = std::time::Instant::now();
        loop {
            if *stop.borrow() {
                return;
            }
            let (lease, registered) = {
                let s = self.session.lock();
                (s.lease, s.registered)
            };
            let current = self.state.read().controller;
            match mine {
                Some((l, epoch)) => {
                    let still = l == lease
                        && current.is_some_and(|c| c.broker == self.me && c.epoch == epoch);
                    if !still {
                        tracing::warn!(broker = %self.me, epoch, "registry: no longer the controller");
                        mine = None;
                        continue;
                    }
                    match self.reconcile_pass(epoch).await {
                        Ok(()) => health.ok(),
                        Err(e) => health.failed(&e),
                    }
                    if rebalance_every.is_some_and(|every| last_rebalance.elapsed() >= every) {
                        last_rebalance = std::time::Instant::now();
                        if let Err(e) = self.preferred_leader_pass(epoch).await {
                            health.failed(&e);
                        }
                    }
                }
                None if registered && lease != 0 => {
                    if current.is_none_or(|c| c.broker == self.me) {
                        match self.campaign(lease).await {
                            Ok(Some(epoch)) => {
                                tracing::info!(broker = %self.me, epoch, "registry: elected controller");
                                self.wait_for_revision(epoch).await;
                                mine = Some((lease, epoch));
                                last_rebalance = std::time::Instant::now();
                                health.ok();
                                continue;
                            }
                            Ok(None) => health.ok(),
                            Err(e) => health.failed(&e),
                        }
                    } else {
                        // Another broker controls; its own failure edges are its business.
                        // Without any controller the edges are kept for whoever wins next.
                        self.failed.lock().clear();
                    }
                }
                None => {}
            }
            tokio::select! {
                _ = version.changed() => {}
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(period) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// One level-triggered pass: every change [`reconcile`] asks for, each in a transaction
    /// guarded by the controller epoch, the topic's incarnation and the partition's revision.
    async fn reconcile_pass(&self, epoch: i64) -> Result<()> {
        let failed: Vec<BrokerId> = self.failed.lock().iter().copied().collect();
        let changes = {
            let state = self.state.read();
            let live: BTreeSet<BrokerId> = state.brokers.keys().copied().collect();
            reconcile(&state, &live, &failed)
        };
        let mut all_applied = true;
        let mut last_revision = 0;
        for change in &changes {
            match self.write_change(epoch, change).await {
                Ok(Some(revision)) => last_revision = revision,
                Ok(None) => all_applied = false,
                Err(e) => {
                    // Keep the failure edges for the next pass.
                    return Err(e);
                }
            }
        }
        if all_applied {
            let mut set = self.failed.lock();
            for id in &failed {
                set.remove(id);
            }
        }
        if last_revision > 0 {
            self.wait_for_revision(last_revision).await;
        }
        Ok(())
    }

    /// Hands leadership back to in-sync preferred replicas ([`preferred_leader_changes`]), each
    /// change guarded like any other.
    async fn preferred_leader_pass(&self, epoch: i64) -> Result<()> {
        let failed: Vec<BrokerId> = self.failed.lock().iter().copied().collect();
        let changes = {
            let state = self.state.read();
            let live: BTreeSet<BrokerId> = state.brokers.keys().copied().collect();
            preferred_leader_changes(&state, &live, &failed)
        };
        let mut last_revision = 0;
        for change in &changes {
            if let Some(revision) = self.write_change(epoch, change).await? {
                last_revision = revision;
            }
        }
        if last_revision > 0 {
            tracing::info!(
                partitions = changes.len(),
                "registry: preferred replicas lead again"
            );
            self.wait_for_revision(last_revision).await;
        }
        Ok(())
    }

    /// `Some(revision)` when written, `None` when the guard failed (the state moved on).
    async fn write_change(&self, epoch: i64, change: &PartitionChange) -> Result<Option<i64>> {
        let key = self.keys.partition(&change.topic, change.partition);
        let resp = self
            .txn(
                "write a partition's leader and in-sync replicas",
                Txn::new()
                    .when([
                        Compare::create_revision(self.keys.controller(), CompareOp::Equal, epoch),
                        Compare::create_revision(
                            self.keys.topic(&change.topic),
                            CompareOp::Equal,
                            change.topic_revision,
                        ),
                        Compare::mod_revision(
                            key.clone(),
                            CompareOp::Equal,
                            change.seen_mod_revision,
                        ),
                    ])
                    .and_then([TxnOp::put(key, encode(&change.after)?, None)]),
            )
            .await?;
        if !resp.succeeded() {
            tracing::debug!(topic = %change.topic, partition = change.partition, "registry: partition moved on before the controller's write");
            return Ok(None);
        }
        let before = &change.before;
        let after = &change.after;
        let leader = after.leader.map(BrokerId);
        let isr: Vec<u32> = after.isr.clone();
        if before.leader != leader {
            match leader {
                Some(l) => tracing::info!(
                    topic = %change.topic, partition = change.partition, leader = %l,
                    previous = ?before.leader.map(|b| b.0), leader_epoch = after.leader_epoch, ?isr,
                    "registry: leader elected"
                ),
                None => tracing::warn!(
                    topic = %change.topic, partition = change.partition,
                    previous = ?before.leader.map(|b| b.0), leader_epoch = after.leader_epoch, ?isr,
                    "registry: partition has no leader (no in-sync replica is alive)"
                ),
            }
        } else {
            tracing::info!(
                topic = %change.topic, partition = change.partition,
                previous = ?before.isr.iter().map(|b| b.0).collect::<Vec<_>>(), ?isr,
                leader_epoch = after.leader_epoch,
                "registry: in-sync replicas shrunk (dead brokers removed)"
            );
        }
        Ok(Some(header_revision(&resp)))
    }

    // ---- Writes of the trait ----

    async fn register(&self, address: &str) -> Result<()> {
        self.session.lock().address = Some(address.to_owned());
        let deadline = Instant::now()
            + Duration::from_millis(self.options.session_timeout_ms + REGISTRY_REGISTER_GRACE_MS);
        let mut waited = false;
        loop {
            let lease = self.session.lock().lease;
            if lease != 0 {
                if self.try_register(lease, address).await? {
                    let mut s = self.session.lock();
                    if s.lease == lease {
                        s.registered = true;
                    }
                    s.ever_registered = true;
                    drop(s);
                    self.wake.notify_one();
                    tracing::info!(broker = %self.me, address, "registry: broker registered");
                    return Ok(());
                }
                if !waited {
                    tracing::info!(broker = %self.me, "registry: broker id is still registered (an earlier incarnation?); waiting for its session to end");
                    waited = true;
                }
            }
            if Instant::now() >= deadline {
                self.session.lock().address = None;
                return Err(Error::InvalidConfig {
                    key: "broker_id".into(),
                    reason: format!(
                        "broker {} is already registered in {} by another live session \
                         (waited {} ms for it to expire); is another broker running with this id?",
                        self.me,
                        self.spec,
                        self.options.session_timeout_ms + REGISTRY_REGISTER_GRACE_MS
                    ),
                });
            }
            tokio::time::sleep(retry_pause()).await;
        }
    }

    async fn create(&self, topic: &NewTopic) -> Result<TopicInfo> {
        validate_topic_name(&topic.name)?;
        if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&topic.partitions) {
            return Err(Error::InvalidPartitions(format!(
                "{} partitions is outside [1, {PARTITIONS_PER_TOPIC_MAX}]",
                topic.partitions
            )));
        }
        if !(1..=REPLICATION_FACTOR_MAX).contains(&topic.replication_factor) {
            return Err(Error::InvalidReplicationFactor(format!(
                "{} is outside [1, {REPLICATION_FACTOR_MAX}]",
                topic.replication_factor
            )));
        }
        let live: Vec<BrokerId> = {
            let state = self.state.read();
            if state.topics.contains_key(&topic.name) {
                return Err(Error::TopicAlreadyExists(topic.name.clone()));
            }
            if state.topics.len() >= TOPICS_MAX {
                return Err(Error::InvalidRequest(format!(
                    "the registry already holds the maximum of {TOPICS_MAX} topics"
                )));
            }
            state.brokers.keys().copied().collect()
        };
        let start = crc32fast::hash(topic.name.as_bytes());
        let placement = place_replicas(&live, topic.partitions, topic.replication_factor, start)?;
        let value = TopicValue {
            replication_factor: topic.replication_factor,
            configs: topic.configs.clone(),
            replicas: placement
                .iter()
                .map(|r| r.iter().map(|b| b.0).collect())
                .collect(),
        };
        let topic_key = self.keys.topic(&topic.name);
        let mut puts = Vec::with_capacity(topic.partitions as usize);
        for p in 0..topic.partitions {
            puts.push(TxnOp::put(
                self.keys.partition(&topic.name, p),
                encode(&value.initial_partition(p))?,
                None,
            ));
        }
        // etcd bounds a transaction's operations, so the first transaction creates the topic
        // with as many partition keys as fit and the rest follow, each guarded by the topic's
        // incarnation. An absent partition key reads as this same initial state (state.rs), so
        // the topic is complete from the first transaction on.
        let first_count = puts.len().min(REGISTRY_TXN_OPS_MAX - 1);
        let rest = puts.split_off(first_count);
        let mut ops = vec![TxnOp::put(topic_key.clone(), encode(&value)?, None)];
        ops.extend(puts);
        let resp = self
            .txn(
                "create a topic",
                Txn::new()
                    .when([Compare::create_revision(
                        topic_key.clone(),
                        CompareOp::Equal,
                        0,
                    )])
                    .and_then(ops),
            )
            .await?;
        if !resp.succeeded() {
            return Err(Error::TopicAlreadyExists(topic.name.clone()));
        }
        let created = header_revision(&resp);
        let mut last = created;
        for chunk in rest.chunks(REGISTRY_TXN_OPS_MAX) {
            match self
                .txn(
                    "create a topic's partition keys",
                    Txn::new()
                        .when([Compare::create_revision(
                            topic_key.clone(),
                            CompareOp::Equal,
                            created,
                        )])
                        .and_then(chunk.to_vec()),
                )
                .await
            {
                Ok(r) if r.succeeded() => last = header_revision(&r),
                // Deleted (and perhaps re-created) meanwhile: nothing more to write.
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(topic = %topic.name, "registry: some partition keys were not written (they read as their initial state): {e}");
                    break;
                }
            }
        }
        self.wait_for_revision(last).await;
        tracing::info!(
            topic = %topic.name, partitions = topic.partitions,
            replication_factor = topic.replication_factor, "registry: topic created"
        );
        Ok(TopicInfo {
            name: topic.name.clone(),
            replication_factor: topic.replication_factor,
            configs: topic.configs.clone(),
            partitions: (0..topic.partitions)
                .map(|p| {
                    partition_info(p, &value.replicas[p as usize], &value.initial_partition(p))
                })
                .collect(),
        })
    }

    /// Puts (or with `None` deletes) `users/<name>` and waits until the snapshot has it.
    async fn write_user(&self, name: &str, value: Option<&ScramCredential>) -> Result<bool> {
        let key = self.keys.user(name);
        let op = match value {
            Some(c) => TxnOp::put(key.clone(), encode(c)?, None),
            None => TxnOp::delete(key.clone(), None),
        };
        let resp = self
            .txn(
                "write a user's credential",
                Txn::new()
                    .when([Compare::create_revision(key, CompareOp::Greater, 0)])
                    .and_then([op.clone()])
                    .or_else([op]),
            )
            .await?;
        self.wait_for_revision(header_revision(&resp)).await;
        Ok(resp.succeeded())
    }

    /// Moves `producer_ids` forward by `count` with a write guarded by the key's revision
    /// (retried on a conflict with another broker's allocation); returns the block's first id.
    async fn allocate_producer_ids(&self, count: u32) -> Result<i64> {
        let key = self.keys.producer_ids();
        for _ in 0..REGISTRY_CAS_ATTEMPTS_MAX {
            let mut client = self.client.clone();
            let resp = self
                .call("read the next producer id", client.get(key.clone(), None))
                .await?;
            let (first, guard) = match resp.kvs().first() {
                Some(kv) => {
                    let first = std::str::from_utf8(kv.value())
                        .ok()
                        .and_then(|v| v.parse::<i64>().ok())
                        .filter(|v| *v >= 0)
                        .ok_or_else(|| Error::Remote {
                            code: ErrorCode::UnknownServerError,
                            message: format!("registry key {key} does not hold a producer id"),
                        })?;
                    let guard =
                        Compare::mod_revision(key.clone(), CompareOp::Equal, kv.mod_revision());
                    (first, guard)
                }
                None => (
                    0,
                    Compare::create_revision(key.clone(), CompareOp::Equal, 0),
                ),
            };
            let end = super::producer_id_block_end(first, count)?;
            let put = TxnOp::put(key.clone(), end.to_string(), None);
            let resp = self
                .txn(
                    "allocate producer ids",
                    Txn::new().when([guard]).and_then([put]),
                )
                .await?;
            if resp.succeeded() {
                return Ok(first);
            }
        }
        Err(Error::TimedOut(format!(
            "producer id allocation kept conflicting with other brokers' ({REGISTRY_CAS_ATTEMPTS_MAX} attempts)"
        )))
    }

    /// Replaces the entries of some ACL patterns, each guarded by its key's revision and retried
    /// on a conflict; `change` maps a pattern's current entries to the new ones.
    async fn change_acls(
        &self,
        patterns: BTreeSet<ResourcePattern>,
        change: impl Fn(&ResourcePattern, &mut Vec<AclEntry>),
    ) -> Result<()> {
        for pattern in patterns {
            let key = self.keys.acl(&pattern);
            let mut attempt = 0;
            loop {
                let (mut entries, revision) = self
                    .state
                    .read()
                    .acls
                    .get(&pattern)
                    .cloned()
                    .unwrap_or_default();
                let before = entries.clone();
                change(&pattern, &mut entries);
                if entries == before {
                    break;
                }
                if self.state.read().acl_view.len() + entries.len() > ACLS_MAX + before.len() {
                    return Err(Error::InvalidRequest(format!(
                        "the registry holds at most {ACLS_MAX} ACL bindings"
                    )));
                }
                let guard = if revision == 0 {
                    Compare::create_revision(key.clone(), CompareOp::Equal, 0)
                } else {
                    Compare::mod_revision(key.clone(), CompareOp::Equal, revision)
                };
                let op = if entries.is_empty() {
                    TxnOp::delete(key.clone(), None)
                } else {
                    TxnOp::put(key.clone(), encode(&entries)?, None)
                };
                let resp = self
                    .txn("write ACLs", Txn::new().when([guard]).and_then([op]))
                    .await?;
                self.wait_for_revision(header_revision(&resp)).await;
                if resp.succeeded() {
                    break;
                }
                attempt += 1;
                if attempt >= REGISTRY_CAS_ATTEMPTS_MAX {
                    return Err(Error::TimedOut(format!(
                        "ACLs of {pattern} kept changing under this write"
                    )));
                }
            }
        }
        Ok(())
    }

    async fn delete(&self, name: &str) -> Result<TopicInfo> {
        let unknown = || Error::UnknownTopicOrPartition(format!("topic {name} does not exist"));
        validate_topic_name(name).map_err(|_| unknown())?;
        let topic_key = self.keys.topic(name);
        let parts_prefix = self.keys.partitions_prefix(name);
        let parts_range = || (parts_prefix.clone(), prefix_end(&parts_prefix));
        let (from, end) = parts_range();
        let resp = self
            .txn(
                "delete a topic",
                Txn::new()
                    .when([Compare::create_revision(
                        topic_key.clone(),
                        CompareOp::Greater,
                        0,
                    )])
                    .and_then([
                        TxnOp::get(topic_key.clone(), None),
                        TxnOp::get(
                            from.clone(),
                            Some(GetOptions::new().with_range(end.clone())),
                        ),
                        TxnOp::delete(topic_key, None),
                        TxnOp::delete(
                            from,
                            Some(etcd_client::DeleteOptions::new().with_range(end)),
                        ),
                    ]),
            )
            .await?;
        if !resp.succeeded() {
            return Err(unknown());
        }
        // Rebuild what was deleted from the transaction's own reads.
        let mut snapshot = Snapshot::default();
        for r in resp.op_responses() {
            if let TxnOpResponse::Get(g) = r {
                for kv in g.kvs() {
                    snapshot.apply(
                        &self.keys,
                        Event {
                            key: kv.key(),
                            value: Some(kv.value()),
                            create_revision: kv.create_revision(),
                            mod_revision: kv.mod_revision(),
                            lease: kv.lease(),
                        },
                    );
                }
            }
        }
        self.wait_for_revision(header_revision(&resp)).await;
        tracing::info!(topic = %name, "registry: topic deleted");
        snapshot.topic_info(name).ok_or_else(unknown)
    }

    async fn alter(
        &self,
        topic: &str,
        partition: u32,
        leader: BrokerId,
        leader_epoch: u32,
        isr: &[BrokerId],
    ) -> Result<PartitionInfo> {
        let unknown =
            || Error::UnknownTopicOrPartition(format!("{topic}-{partition} does not exist"));
        validate_topic_name(topic).map_err(|_| unknown())?;
        if partition >= PARTITIONS_PER_TOPIC_MAX {
            return Err(unknown());
        }
        let topic_key = self.keys.topic(topic);
        let key = self.keys.partition(topic, partition);
        for _ in 0..REGISTRY_CAS_ATTEMPTS_MAX {
            // A fresh, consistent read of the topic and the partition (one revision).
            // The proposed members' registrations come in the same read: a broker without one
            // is fenced and may not join (KIP-841).
            let mut reads = vec![
                TxnOp::get(topic_key.clone(), None),
                TxnOp::get(key.clone(), None),
            ];
            reads.extend(isr.iter().map(|b| TxnOp::get(self.keys.broker(*b), None)));
            let read = self
                .txn("read a partition's state", Txn::new().and_then(reads))
                .await?;
            let mut snapshot = Snapshot::default();
            for r in read.op_responses() {
                if let TxnOpResponse::Get(g) = r {
                    for kv in g.kvs() {
                        snapshot.apply(
                            &self.keys,
                            Event {
                                key: kv.key(),
                                value: Some(kv.value()),
                                create_revision: kv.create_revision(),
                                mod_revision: kv.mod_revision(),
                                lease: kv.lease(),
                            },
                        );
                    }
                }
            }
            let Some(entry) = snapshot.topics.get(topic) else {
                return Err(unknown());
            };
            if partition as usize >= entry.value.replicas.len() {
                return Err(unknown());
            }
            let view = snapshot
                .partition_views(topic, entry)
                .swap_remove(partition as usize);
            let current = &view.info;
            if current.leader_epoch != leader_epoch {
                return Err(Error::Remote {
                    code: ErrorCode::FencedLeaderEpoch,
                    message: format!(
                        "{topic}-{partition}: broker {leader} at leader epoch {leader_epoch} no longer leads it \
                         (the registry is at epoch {})",
                        current.leader_epoch
                    ),
                });
            }
            if current.leader != Some(leader) {
                return Err(Error::Remote {
                    code: ErrorCode::NotLeader,
                    message: format!(
                        "{topic}-{partition}: broker {leader} is not its leader at epoch {leader_epoch}"
                    ),
                });
            }
            let distinct: BTreeSet<BrokerId> = isr.iter().copied().collect();
            if !isr.contains(&leader)
                || distinct.len() != isr.len()
                || isr.iter().any(|b| !current.replicas.contains(b))
            {
                return Err(Error::InvalidRequest(format!(
                    "{topic}-{partition}: in-sync replicas {isr:?} must include the leader and be distinct replicas"
                )));
            }
            // KIP-841: a member being added must hold a registration (a live lease); otherwise
            // the controller would remove it again at once, bumping the epoch every round.
            let mut guards = vec![
                Compare::create_revision(
                    topic_key.clone(),
                    CompareOp::Equal,
                    entry.create_revision,
                ),
                Compare::mod_revision(key.clone(), CompareOp::Equal, view.mod_revision),
            ];
            for added in isr.iter().filter(|b| !current.isr.contains(b)) {
                let Some(registration) = snapshot.brokers.get(added) else {
                    return Err(Error::Remote {
                        code: ErrorCode::IneligibleReplica,
                        message: format!(
                            "{topic}-{partition}: broker {added} cannot join the in-sync replicas: it is not registered \
                             (no live session); it may once it registers again"
                        ),
                    });
                };
                // The same incarnation must still be registered when the write lands.
                guards.push(Compare::create_revision(
                    self.keys.broker(*added),
                    CompareOp::Equal,
                    registration.create_revision,
                ));
            }
            let next = PartitionValue {
                leader: Some(leader.0),
                leader_epoch,
                isr: isr.iter().map(|b| b.0).collect(),
            };
            let write = self
                .txn(
                    "change a partition's in-sync replicas",
                    Txn::new().when(guards).and_then([TxnOp::put(
                        key.clone(),
                        encode(&next)?,
                        None,
                    )]),
                )
                .await?;
            if write.succeeded() {
                tracing::info!(
                    topic, partition, leader = %leader, leader_epoch,
                    previous = ?current.isr.iter().map(|b| b.0).collect::<Vec<_>>(), isr = ?next.isr,
                    "registry: in-sync replicas changed by the leader"
                );
                self.wait_for_revision(header_revision(&write)).await;
                return Ok(partition_info(
                    partition,
                    &entry.value.replicas[partition as usize],
                    &next,
                ));
            }
            // Another write landed between the read and ours (or an added member's registration
            // went): read again and re-check the epoch and the registrations.
        }
        Err(Error::Remote {
            code: ErrorCode::FencedLeaderEpoch,
            message: format!(
                "{topic}-{partition}: the partition state kept changing during {REGISTRY_CAS_ATTEMPTS_MAX} attempts"
            ),
        })
    }
}

async fn sleep_or_stop(stop: &mut watch::Receiver<bool>, pause: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(pause) => {}
        _ = stop.wait_for(|s| *s) => {}
    }
}

impl Registry for EtcdRegistry {
    fn register_broker(&self, id: BrokerId, address: &str) -> Result<()> {
        if id != self.inner.me {
            return Err(Error::InvalidArgument(format!(
                "this registry session belongs to broker {}, not broker {id}",
                self.inner.me
            )));
        }
        self.block_on(self.inner.register(address))
    }

    fn brokers(&self) -> Result<Vec<BrokerInfo>> {
        Ok(self
            .inner
            .state
            .read()
            .brokers
            .iter()
            .map(|(id, b)| BrokerInfo {
                id: *id,
                address: b.address.clone(),
                alive: true,
            })
            .collect())
    }

    fn is_registered(&self, id: BrokerId) -> bool {
        self.inner.state.read().brokers.contains_key(&id)
    }

    fn controller(&self) -> Option<BrokerId> {
        self.inner.state.read().controller.map(|c| c.broker)
    }

    fn topics(&self) -> Result<Vec<TopicInfo>> {
        Ok(self.inner.state.read().topic_infos())
    }

    fn topic(&self, name: &str) -> Result<Option<TopicInfo>> {
        Ok(self.inner.state.read().topic_info(name))
    }

    fn create_topic(&self, topic: &NewTopic) -> Result<TopicInfo> {
        self.block_on(self.inner.create(topic))
    }

    fn delete_topic(&self, name: &str) -> Result<TopicInfo> {
        self.block_on(self.inner.delete(name))
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.version.subscribe()
    }

    fn alter_isr(
        &self,
        topic: &str,
        partition: u32,
        leader: BrokerId,
        leader_epoch: u32,
        isr: &[BrokerId],
    ) -> Result<PartitionInfo> {
        self.block_on(
            self.inner
                .alter(topic, partition, leader, leader_epoch, isr),
        )
    }

    fn allocate_producer_ids(&self, count: u32) -> Result<i64> {
        self.block_on(self.inner.allocate_producer_ids(count))
    }

    fn credential(&self, user: &str) -> Option<ScramCredential> {
        self.inner.state.read().users.get(user).cloned()
    }

    fn users(&self) -> Result<Vec<(String, ScramCredential)>> {
        Ok(self
            .inner
            .state
            .read()
            .users
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn put_credential(&self, user: &str, credential: &ScramCredential) -> Result<()> {
        validate_username(user)?;
        {
            let state = self.inner.state.read();
            if state.users.len() >= USERS_MAX && !state.users.contains_key(user) {
                return Err(Error::InvalidRequest(format!(
                    "the registry already has {USERS_MAX} users"
                )));
            }
        }
        self.block_on(self.inner.write_user(user, Some(credential)))
            .map(|_| ())
    }

    fn delete_credential(&self, user: &str) -> Result<bool> {
        validate_username(user)?;
        self.block_on(self.inner.write_user(user, None))
    }

    fn acls(&self) -> Arc<Vec<AclBinding>> {
        self.inner.state.read().acl_view.clone()
    }

    fn add_acls(&self, acls: &[AclBinding]) -> Result<()> {
        let patterns = acls.iter().map(|a| a.pattern.clone()).collect();
        self.block_on(self.inner.change_acls(patterns, |p, entries| {
            for a in acls.iter().filter(|a| &a.pattern == p) {
                if !entries.contains(&a.entry) {
                    entries.push(a.entry.clone());
                }
            }
            entries.sort();
        }))
    }

    fn remove_acls(&self, acls: &[AclBinding]) -> Result<usize> {
        let present = {
            let view = self.inner.state.read().acl_view.clone();
            acls.iter().filter(|a| view.contains(a)).count()
        };
        let patterns = acls.iter().map(|a| a.pattern.clone()).collect();
        self.block_on(self.inner.change_acls(patterns, |p, entries| {
            entries.retain(|e| !acls.iter().any(|a| &a.pattern == p && &a.entry == e));
        }))?;
        Ok(present)
    }

    fn is_cluster(&self) -> bool {
        true
    }

    /// Stops the tasks and revokes the lease: etcd deletes `brokers/<id>` and, if this broker is
    /// the controller, `controller` in the same step, so the others fail over at once.
    fn shutdown(&self) {
        self.stop_tasks();
        let lease = std::mem::take(&mut self.inner.session.lock().lease);
        if lease == 0 {
            return;
        }
        let mut client = self.inner.client.clone();
        // The timer must be created inside the runtime, so the timeout is built in the future.
        let revoked = self.block_on(async {
            tokio::time::timeout(request_timeout(), client.lease_revoke(lease)).await
        });
        match revoked {
            Ok(Ok(_)) => {
                tracing::info!(broker = %self.inner.me, "registry: left the cluster (lease revoked)")
            }
            Ok(Err(e)) => {
                tracing::warn!(broker = %self.inner.me, "registry: could not revoke the lease (it expires after the session timeout): {e}")
            }
            Err(_) => {
                tracing::warn!(broker = %self.inner.me, "registry: etcd did not answer the lease revocation (the lease expires after the session timeout)")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parses_endpoints_and_chroot() {
        let s = EtcdSpec::parse("etcd://127.0.0.1:2379,127.0.0.1:22379/chroot/a").unwrap();
        assert_eq!(
            s.endpoints(),
            ["http://127.0.0.1:2379", "http://127.0.0.1:22379"]
        );
        assert_eq!(s.root(), "/chroot/a");
        assert_eq!(
            s.to_string(),
            "etcd://127.0.0.1:2379,127.0.0.1:22379/chroot/a"
        );
        let s = EtcdSpec::parse("etcd://localhost:2379").unwrap();
        assert_eq!(s.root(), DEFAULT_ROOT);
        assert_eq!(EtcdSpec::parse("etcd://h:1/x/").unwrap().root(), "/x");
        for bad in [
            "embedded",
            "http://h:1",
            "etcd://",
            "etcd://h",
            "etcd://h:port",
            "etcd://h:1,/x",
            "etcd://h:1/",
            "etcd://h:1/a//b",
            "etcd://h:1/a b",
        ] {
            assert!(
                matches!(EtcdSpec::parse(bad), Err(Error::InvalidConfig { ref key, .. }) if key == "registry"),
                "{bad}"
            );
        }
    }

    #[test]
    fn options_bound_and_ttl() {
        assert_eq!(EtcdOptions::default().lease_ttl_s(), 6);
        let o = EtcdOptions {
            session_timeout_ms: 2_001,
            ..EtcdOptions::default()
        };
        assert_eq!(o.lease_ttl_s(), 3);
        assert!(o.validate().is_ok());
        let o = EtcdOptions {
            session_timeout_ms: 100,
            ..EtcdOptions::default()
        };
        assert!(matches!(o.validate(), Err(Error::InvalidConfig { .. })));
    }
}

//! Cluster test helpers: a real etcd ([`TestEtcd`]) and brokers registered in it
//! ([`TestCluster`]), with the faults the cluster tests inject — `kill -9`, SIGSTOP/SIGCONT,
//! restart in place — and bounded waits on what the registry says ([`wait_until`]).
//!
//! Every process is killed on drop (a stopped one is continued first, so nothing is left behind
//! stopped), every wait has a deadline, and a failing wait panics naming what it waited for and
//! the last state it saw.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::support::Client;
use sluiceway_core::client::{
    Acks, Admin, AdminConfig, Consumer, ConsumerConfig, NewTopic, OffsetReset, OffsetSpec,
    Producer, ProducerConfig, ProducerRecord, TopicPartition,
};
use sluiceway_core::format::for_each_record;
use sluiceway_core::storage::{LogConfig, PartitionLog, SystemClock};
use sluiceway_core::types::Offset;
use sluiceway_proto::v1;

use crate::netns::{ETCD_CLIENT_PORT, ETCD_PEER_PORT, NetLab, Node};
use crate::support::TestBroker;

use sluiceway_testing::process::signal;
// Shared with the core crate's tests (`testing/`); re-exported for `cluster.rs` and
// `partitions.rs`, which use some each.
#[allow(unused_imports)]
pub use sluiceway_testing::{
    CONDITION_TIMEOUT, TestEtcd, bounded, free_port, wait_for, wait_reporting, wait_until,
};

/// Registry session (etcd lease) of the test brokers: a dead broker is noticed within ~2 s.
pub const SESSION_TIMEOUT_MS: u64 = 2000;
/// `replica.lag.time.max.ms` of the test brokers.
pub const REPLICA_LAG_TIME_MAX_MS: u64 = 2000;

/// Bound on one metadata request to one broker (a stopped broker must not stall a wait).
const METADATA_CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// One broker of a [`TestCluster`]: its id, directory and address survive restarts.
#[derive(Debug)]
pub struct ClusterBroker {
    pub id: i32,
    /// `<root>/broker-<id>`: `data/` and `broker.log` (see [`TestBroker`]).
    pub root: PathBuf,
    /// The address it listens on; a restart listens on the same one.
    pub addr: String,
    pub process: Option<TestBroker>,
    /// SIGSTOPped (and not yet continued).
    pub paused: bool,
}

impl ClusterBroker {
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn running(&self) -> bool {
        self.process.is_some()
    }

    /// Running and not stopped: it can answer requests.
    pub fn serving(&self) -> bool {
        self.running() && !self.paused
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.root.join("broker.log")).unwrap_or_default()
    }
}

impl Drop for ClusterBroker {
    fn drop(&mut self) {
        // A stopped process dies on SIGKILL too, but continue it first so that nothing is ever
        // left stopped if a kill fails half-way.
        if self.paused
            && let Some(p) = &self.process
        {
            let _ = Command::new("kill")
                .args(["-CONT", &p.pid().to_string()])
                .status();
        }
        // Dropping the TestBroker kills it.
    }
}

/// etcd and `n` brokers (ids 1..=n) registered in it, each over its own temporary directory.
#[derive(Debug)]
pub struct TestCluster {
    /// Declared before `etcd` so that brokers die first (fields drop in order).
    pub brokers: Vec<ClusterBroker>,
    pub etcd: TestEtcd,
    /// The network namespaces of etcd and the brokers, when the cluster runs in them
    /// ([`TestCluster::start_in_namespaces`]); after them so that the processes die first.
    pub net: Option<NetLab>,
    /// Flags given to every broker (registry, session, lag time, and the test's extras).
    args: Vec<String>,
    /// Client settings (security.protocol, ssl.*, sasl.*) of a cluster whose listeners need
    /// them ([`TestCluster::start_secure`]); empty for plaintext clusters.
    pub client_settings: Vec<(String, String)>,
    /// Broker `id`'s `--advertised-address` is `advertised[id - 1]` when given
    /// ([`TestCluster::start_advertising`]).
    advertised: Vec<String>,
    pub root: tempfile::TempDir,
}

impl TestCluster {
    /// Starts etcd and brokers 1..=n with `--registry etcd://…`, a 2 s session and a 2 s replica
    /// lag time (either can be overridden through `extra`), then waits until every broker is
    /// registered. Like every [`TestBroker`], the brokers have no initial rebalance delay unless
    /// `extra` gives `--group-initial-rebalance-delay-ms`.
    pub async fn start(n: usize, extra: &[&str]) -> TestCluster {
        TestCluster::start_with(n, extra, None, Vec::new()).await
    }

    /// Like [`TestCluster::start`] for brokers with TLS or authentication (`extra`): the
    /// registration wait talks to them through the client core with `client_settings`. The
    /// helpers that use the raw plaintext [`Client`] do not work on such a cluster.
    pub async fn start_secure(
        n: usize,
        extra: &[&str],
        client_settings: Vec<(String, String)>,
    ) -> TestCluster {
        TestCluster::start_with(n, extra, None, client_settings).await
    }

    /// Like [`TestCluster::start`], with etcd and each broker in its own network namespace of
    /// `net` (`netns.rs`), where links can be cut; the caller runs in the lab's client namespace.
    pub async fn start_in_namespaces(net: NetLab, n: usize, extra: &[&str]) -> TestCluster {
        TestCluster::start_with(n, extra, Some(net), Vec::new()).await
    }

    /// Like [`TestCluster::start`], broker `id` advertising `advertised[id - 1]` (for example a
    /// proxy in front of it) instead of the address it listens on: clients reach it, after
    /// bootstrapping on the real addresses, through what it advertises, and so do followers.
    pub async fn start_advertising(
        n: usize,
        extra: &[&str],
        advertised: Vec<String>,
    ) -> TestCluster {
        assert_eq!(advertised.len(), n, "one advertised address per broker");
        TestCluster::start_full(n, extra, None, Vec::new(), advertised).await
    }

    async fn start_with(
        n: usize,
        extra: &[&str],
        net: Option<NetLab>,
        client_settings: Vec<(String, String)>,
    ) -> TestCluster {
        TestCluster::start_full(n, extra, net, client_settings, Vec::new()).await
    }

    async fn start_full(
        n: usize,
        extra: &[&str],
        net: Option<NetLab>,
        client_settings: Vec<(String, String)>,
        advertised: Vec<String>,
    ) -> TestCluster {
        let root = tempfile::tempdir().unwrap();
        let etcd = match &net {
            None => TestEtcd::start(root.path()),
            Some(net) => TestEtcd::start_in(
                root.path(),
                Some(&net.namespace(Node::Etcd)),
                &Node::Etcd.ip(),
                ETCD_CLIENT_PORT,
                ETCD_PEER_PORT,
            ),
        };
        let mut args = vec!["--registry".to_owned(), etcd.registry_url()];
        let has = |flag: &str| extra.iter().any(|a| a.starts_with(flag));
        if !has("--registry-session-timeout-ms") {
            args.extend([
                "--registry-session-timeout-ms".to_owned(),
                SESSION_TIMEOUT_MS.to_string(),
            ]);
        }
        if !has("--replica-lag-time-max-ms") {
            args.extend([
                "--replica-lag-time-max-ms".to_owned(),
                REPLICA_LAG_TIME_MAX_MS.to_string(),
            ]);
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let mut cluster = TestCluster {
            brokers: Vec::with_capacity(n),
            etcd,
            net,
            args,
            client_settings,
            advertised,
            root,
        };
        for id in 1..=n as i32 {
            let broker_root = cluster.root.path().join(format!("broker-{id}"));
            std::fs::create_dir_all(&broker_root).unwrap();
            let listen = match &cluster.net {
                None => "127.0.0.1:0".to_owned(),
                Some(net) => net.broker_addr(id),
            };
            let process = cluster.spawn(id, &broker_root, &listen);
            cluster.brokers.push(ClusterBroker {
                id,
                root: broker_root,
                addr: process.addr.clone(),
                process: Some(process),
                paused: false,
            });
        }
        cluster.wait_registered(n).await;
        cluster
    }

    fn spawn(&self, id: i32, root: &Path, listen: &str) -> TestBroker {
        let id_s = id.to_string();
        let mut args: Vec<&str> = vec!["--broker-id", &id_s];
        args.extend(self.args.iter().map(String::as_str));
        if let Some(a) = self.advertised.get((id - 1) as usize) {
            args.extend(["--advertised-address", a.as_str()]);
        }
        let netns = self.net.as_ref().map(|net| net.namespace(Node::Broker(id)));
        TestBroker::start_in(netns.as_deref(), root, listen, &args, &[])
    }

    pub fn broker(&self, id: i32) -> &ClusterBroker {
        &self.brokers[(id - 1) as usize]
    }

    fn broker_mut(&mut self, id: i32) -> &mut ClusterBroker {
        &mut self.brokers[(id - 1) as usize]
    }

    /// Every broker's address, comma-separated (clients fail over between them).
    pub fn bootstrap(&self) -> String {
        self.brokers
            .iter()
            .map(|b| b.addr.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The addresses of the brokers other than `id`.
    pub fn bootstrap_without(&self, id: i32) -> String {
        self.brokers
            .iter()
            .filter(|b| b.id != id)
            .map(|b| b.addr.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `kill -9` broker `id` (its data directory stays for a restart).
    pub fn kill9(&mut self, id: i32) {
        let b = self.broker_mut(id);
        let mut p = b
            .process
            .take()
            .unwrap_or_else(|| panic!("broker {id} is not running"));
        if b.paused {
            signal(p.pid(), "-CONT");
            b.paused = false;
        }
        p.kill9();
    }

    /// SIGSTOP broker `id`: it stays alive but does nothing (no fetches, no lease keep-alives).
    pub fn sigstop(&mut self, id: i32) {
        let b = self.broker_mut(id);
        let pid = b.process.as_ref().expect("running").pid();
        assert!(!b.paused, "broker {id} is already stopped");
        signal(pid, "-STOP");
        b.paused = true;
    }

    /// SIGCONT broker `id`.
    pub fn sigcont(&mut self, id: i32) {
        let b = self.broker_mut(id);
        let pid = b.process.as_ref().expect("running").pid();
        assert!(b.paused, "broker {id} is not stopped");
        signal(pid, "-CONT");
        b.paused = false;
    }

    /// SIGTERM broker `id` and wait for it to exit.
    pub fn stop(&mut self, id: i32) {
        let b = self.broker_mut(id);
        if b.paused {
            signal(b.process.as_ref().unwrap().pid(), "-CONT");
            b.paused = false;
        }
        let mut p = b.process.take().expect("running");
        p.stop();
    }

    /// Starts a killed or stopped broker again over the same data directory, listening on the
    /// same address (so clients and the registry find it where it was).
    pub fn restart(&mut self, id: i32) {
        assert!(
            !self.broker(id).running(),
            "broker {id} is still running; kill9 or stop it first"
        );
        let root = self.broker(id).root.clone();
        let addr = self.broker(id).addr.clone();
        let p = self.spawn(id, &root, &addr);
        assert_eq!(p.addr, addr, "broker {id} restarted on another address");
        self.broker_mut(id).process = Some(p);
    }

    /// `kill -9` every running broker at once (a frozen snapshot of every replica's disk).
    pub fn kill9_all(&mut self) {
        let ids: Vec<i32> = self
            .brokers
            .iter()
            .filter(|b| b.running())
            .map(|b| b.id)
            .collect();
        for id in ids {
            self.kill9(id);
        }
    }

    /// A gRPC client on broker `id`.
    pub async fn client(&self, id: i32) -> Client {
        Client::connect(&self.broker(id).addr)
            .await
            .unwrap_or_else(|e| panic!("connect to broker {id}: {e}"))
    }

    /// GetMetadata(topic) from the first serving broker that answers within a bound; `None` when
    /// none does or the topic is unknown to it.
    pub async fn metadata(&self, topic: &str) -> Option<v1::TopicMetadata> {
        for b in self.brokers.iter().filter(|b| b.serving()) {
            if let Some(t) = self.metadata_from(b.id, topic).await {
                return Some(t);
            }
        }
        None
    }

    /// GetMetadata(topic) from broker `id`'s registry view.
    pub async fn metadata_from(&self, id: i32, topic: &str) -> Option<v1::TopicMetadata> {
        let addr = self.broker(id).addr.clone();
        let call = async move {
            let mut c = Client::connect(&addr).await.ok()?;
            let t = c.topic_metadata(topic).await.ok()?;
            Some(t)
        };
        tokio::time::timeout(METADATA_CALL_TIMEOUT, call)
            .await
            .ok()
            .flatten()
    }

    pub async fn partition(&self, topic: &str, partition: u32) -> Option<v1::PartitionMetadata> {
        self.metadata(topic)
            .await?
            .partitions
            .into_iter()
            .find(|p| p.partition == partition)
    }

    /// The partition's leader, `None` when it has none (or no broker answered).
    pub async fn leader_of(&self, topic: &str, partition: u32) -> Option<i32> {
        self.partition(topic, partition)
            .await
            .map(|p| p.leader_id)
            .filter(|l| *l >= 0)
    }

    /// The partition's in-sync replicas, sorted (empty when no broker answered).
    pub async fn isr_of(&self, topic: &str, partition: u32) -> Vec<i32> {
        let mut isr = self
            .partition(topic, partition)
            .await
            .map(|p| p.isr)
            .unwrap_or_default();
        isr.sort_unstable();
        isr
    }

    /// The controller as the first serving broker that answers sees it.
    pub async fn controller(&self) -> Option<i32> {
        for b in self.brokers.iter().filter(|b| b.serving()) {
            let addr = b.addr.clone();
            let call = async move {
                let mut c = Client::connect(&addr).await.ok()?;
                let r = c
                    .registry
                    .list_brokers(v1::ListBrokersRequest {})
                    .await
                    .ok()?;
                Some(r.into_inner().controller_id)
            };
            if let Ok(Some(id)) = tokio::time::timeout(METADATA_CALL_TIMEOUT, call).await {
                return (id >= 0).then_some(id);
            }
        }
        None
    }

    /// Revokes broker `id`'s lease in etcd, as an expired session would: its registration goes
    /// at once, while the process runs on and notices at its next keep-alive (every third of
    /// the session timeout), then registers again under a new lease.
    pub async fn revoke_lease(&self, id: i32) {
        let mut etcd = etcd_client::Client::connect([self.etcd.endpoint()], None)
            .await
            .expect("connect to the test etcd");
        let key = format!("/sluiceway/brokers/{id}");
        let got = etcd
            .get(key.as_str(), None)
            .await
            .expect("read the registration");
        let lease = got
            .kvs()
            .first()
            .unwrap_or_else(|| panic!("{key} is not in etcd"))
            .lease();
        etcd.lease_revoke(lease).await.expect("revoke the lease");
    }

    /// Waits until the registry reports `n` live brokers.
    pub async fn wait_registered(&self, n: usize) {
        wait_until(
            &format!("{n} brokers are registered"),
            CONDITION_TIMEOUT,
            async || {
                for b in self.brokers.iter().filter(|b| b.serving()) {
                    let addr = b.addr.clone();
                    if !self.client_settings.is_empty() {
                        let mut map = vec![("bootstrap.servers".to_owned(), addr)];
                        map.extend(self.client_settings.iter().cloned());
                        let call = async move {
                            let admin = Admin::new(AdminConfig::from_map(map).ok()?).await.ok()?;
                            let c = admin.describe_cluster().await.ok()?;
                            Some(c.brokers.iter().filter(|b| b.alive).count())
                        };
                        if let Ok(Some(alive)) =
                            tokio::time::timeout(METADATA_CALL_TIMEOUT, call).await
                            && alive >= n
                        {
                            return true;
                        }
                        continue;
                    }
                    let call = async move {
                        let mut c = Client::connect(&addr).await.ok()?;
                        let r = c
                            .registry
                            .list_brokers(v1::ListBrokersRequest {})
                            .await
                            .ok()?;
                        Some(r.into_inner().brokers.iter().filter(|b| b.alive).count())
                    };
                    if let Ok(Some(alive)) = tokio::time::timeout(METADATA_CALL_TIMEOUT, call).await
                        && alive >= n
                    {
                        return true;
                    }
                }
                false
            },
        )
        .await;
    }

    /// Waits until every partition of `topic` has a leader and the full replica set in sync.
    pub async fn wait_fully_replicated(&self, topic: &str) {
        wait_reporting(
            &format!("every partition of {topic} has its whole replica set in sync"),
            CONDITION_TIMEOUT,
            async || {
                let t = self.metadata(topic).await.ok_or(None)?;
                let done = !t.partitions.is_empty()
                    && t.partitions
                        .iter()
                        .all(|p| p.leader_id >= 0 && p.isr.len() == p.replicas.len());
                if done { Ok(()) } else { Err(Some(t)) }
            },
        )
        .await;
    }

    /// Waits until `partition` has a leader other than `old_leader` at an epoch above
    /// `old_epoch`; returns (leader, epoch).
    pub async fn wait_new_leader(
        &self,
        topic: &str,
        partition: u32,
        old_leader: i32,
        old_epoch: i32,
    ) -> (i32, i32) {
        wait_for(
            &format!(
                "{topic}-{partition} to elect a leader other than {old_leader} above epoch \
                 {old_epoch}"
            ),
            CONDITION_TIMEOUT,
            async || {
                let p = self.partition(topic, partition).await?;
                (p.leader_id >= 0 && p.leader_id != old_leader && p.leader_epoch > old_epoch)
                    .then_some((p.leader_id, p.leader_epoch))
            },
        )
        .await
    }
}

/// Every record of one replica's copy of a partition, `offset → value`, read from its data
/// directory with the storage engine (the broker must not be running). The directory is copied
/// first so that recovery never touches the broker's own files.
pub fn read_replica(data_dir: &Path, topic: &str, partition: u32) -> ReplicaLog {
    let src = data_dir.join(PartitionLog::dir_name(topic, partition));
    let copy = tempfile::tempdir().unwrap();
    let dst = copy.path().join(PartitionLog::dir_name(topic, partition));
    std::fs::create_dir_all(&dst).unwrap();
    for entry in std::fs::read_dir(&src)
        .unwrap_or_else(|e| panic!("read replica directory {}: {e}", src.display()))
    {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
        }
    }
    let log = PartitionLog::open(&dst, LogConfig::default(), Arc::new(SystemClock))
        .unwrap_or_else(|e| panic!("open replica copy of {}: {e}", src.display()));
    let start = log.log_start_offset();
    let end = log.log_end_offset();
    let mut records = BTreeMap::new();
    let mut next = start;
    let mut scratch = Vec::new();
    while next < end {
        let r = log.read(next, 1 << 20, end).unwrap();
        let before = next;
        for_each_record(&r.bytes, &mut scratch, |rec| {
            if rec.offset >= before {
                records.insert(rec.offset.0, rec.value.unwrap_or_default().to_vec());
                next = Offset(rec.offset.0 + 1);
            }
        })
        .unwrap();
        assert!(
            next > before,
            "no progress reading {} at {before:?}",
            src.display()
        );
    }
    ReplicaLog {
        log_start_offset: start.0,
        log_end_offset: end.0,
        high_watermark: log.high_watermark().0,
        records,
    }
}

/// One replica's partition as read from disk.
#[derive(Debug)]
pub struct ReplicaLog {
    pub log_start_offset: u64,
    pub log_end_offset: u64,
    /// The replica's own checkpointed high watermark (may lag the leader's).
    pub high_watermark: u64,
    pub records: BTreeMap<u64, Vec<u8>>,
}

impl ReplicaLog {
    /// The records below `hw`.
    pub fn below(&self, hw: u64) -> BTreeMap<u64, Vec<u8>> {
        self.records
            .range(..hw)
            .map(|(o, v)| (*o, v.clone()))
            .collect()
    }
}

// ---- Workloads and checks shared by the cluster tests (`cluster.rs`, `partitions.rs`) ----

pub async fn admin(cluster: &TestCluster) -> Admin {
    Admin::new(AdminConfig::new(&cluster.bootstrap()))
        .await
        .expect("admin")
}

/// Creates `topic` with replication factor 3 and waits until every partition is fully in sync.
pub async fn create_rf3(
    cluster: &TestCluster,
    topic: &str,
    partitions: u32,
    configs: &[(&str, &str)],
) {
    let mut t = NewTopic::new(topic, partitions).replication_factor(3);
    for (k, v) in configs {
        t = t.config(*k, *v);
    }
    admin(cluster)
        .await
        .create_topic(t)
        .await
        .expect("create topic");
    cluster.wait_fully_replicated(topic).await;
}

pub async fn producer(bootstrap: &str, acks: Acks, extra: &[(&str, &str)]) -> Producer {
    let mut config = ProducerConfig::new(bootstrap)
        .acks(acks)
        .linger(Duration::from_millis(2));
    for (k, v) in extra {
        config.set(k, v).expect("producer config");
    }
    Producer::new(config).await.expect("producer")
}

/// One acknowledged record: where the broker said it landed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acked {
    pub partition: u32,
    pub offset: u64,
    pub value: String,
}

/// Sends `values` (keyless, sticky partitioning) and waits for every delivery; panics on a failed
/// one.
pub async fn send_all(p: &Producer, topic: &str, values: &[String]) -> Vec<Acked> {
    let futures = p
        .send_batch(
            values
                .iter()
                .map(|v| ProducerRecord::new(topic, v.clone()))
                .collect(),
        )
        .await
        .unwrap();
    let mut acked = Vec::with_capacity(values.len());
    for (f, v) in futures.into_futures().into_iter().zip(values) {
        let m = f
            .await
            .unwrap_or_else(|e| panic!("{v} was not delivered: {e}"));
        acked.push(Acked {
            partition: m.partition,
            offset: m.offset.expect("acks >= 1 gives an offset").0,
            value: v.clone(),
        });
    }
    acked
}

pub fn values(prefix: &str, range: std::ops::Range<u64>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i}")).collect()
}

/// Each partition's high watermark, as its leader reports it (`ListOffsets` latest).
pub async fn high_watermarks(cluster: &TestCluster, topic: &str, partitions: u32) -> Vec<u64> {
    let specs: Vec<_> = (0..partitions)
        .map(|p| (TopicPartition::new(topic, p), OffsetSpec::Latest))
        .collect();
    admin(cluster)
        .await
        .list_offsets(&specs)
        .await
        .into_iter()
        .enumerate()
        .map(|(p, r)| {
            let r = r.unwrap_or_else(|e| panic!("list offsets of {topic}-{p}: {e}"));
            r.high_watermark.0
        })
        .collect()
}

/// The high watermarks once they cover every acknowledged offset. Right after leadership
/// moves (a preferred leader returning), the new leader's high watermark can trail the old
/// one's until its followers' next fetch, as in Kafka; an acknowledged record that stays
/// above it is lost, and the wait fails.
pub async fn high_watermarks_covering(
    cluster: &TestCluster,
    topic: &str,
    partitions: u32,
    acked: &[Acked],
) -> Vec<u64> {
    sluiceway_testing::wait_for(
        "the high watermarks to cover every acknowledged offset",
        crate::support::CONDITION_TIMEOUT,
        async || {
            let hws = high_watermarks(cluster, topic, partitions).await;
            acked
                .iter()
                .all(|a| a.offset < hws[a.partition as usize])
                .then_some(hws)
        },
    )
    .await
}

pub fn consumer_config(bootstrap: &str) -> ConsumerConfig {
    ConsumerConfig::new(bootstrap)
        .auto_offset_reset(OffsetReset::Earliest)
        .fetch_max_wait(Duration::from_millis(100))
}

/// Reads every partition of `topic` from the beginning up to `hws` with a standalone consumer:
/// `(partition, offset) → value`. Panics if a record is read twice.
pub async fn read_up_to(bootstrap: &str, topic: &str, hws: &[u64]) -> BTreeMap<(u32, u64), String> {
    let c = Consumer::new(consumer_config(bootstrap))
        .await
        .expect("consumer");
    c.assign(
        (0..hws.len() as u32)
            .map(|p| TopicPartition::new(topic, p))
            .collect(),
    )
    .unwrap();
    let mut next = vec![0u64; hws.len()];
    let mut out = BTreeMap::new();
    while next.iter().zip(hws).any(|(n, hw)| n < hw) {
        for r in c.poll(Duration::from_secs(2)).await.expect("poll") {
            let v = String::from_utf8(r.value.as_deref().unwrap_or_default().to_vec()).unwrap();
            assert!(
                out.insert((r.partition, r.offset.0), v).is_none(),
                "{topic}-{} offset {} read twice",
                r.partition,
                r.offset.0
            );
            next[r.partition as usize] = next[r.partition as usize].max(r.offset.0 + 1);
        }
    }
    c.close(None).await.ok();
    out
}

/// Every acknowledged record is at its acknowledged offset in `log`.
pub fn assert_acked_present(what: &str, acked: &[Acked], log: &BTreeMap<(u32, u64), String>) {
    let mut missing = Vec::new();
    for a in acked {
        match log.get(&(a.partition, a.offset)) {
            Some(v) if *v == a.value => {}
            Some(v) => panic!(
                "{what}: offset {} of partition {} holds {v:?}, but {:?} was acknowledged there",
                a.offset, a.partition, a.value
            ),
            None => missing.push(a),
        }
    }
    assert!(
        missing.is_empty(),
        "{what}: {} acknowledged records are missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

/// Two acknowledgements never name the same offset (an offset that held two messages).
pub fn assert_acks_distinct(acked: &[Acked]) {
    let mut at: BTreeMap<(u32, u64), &str> = BTreeMap::new();
    for a in acked {
        if let Some(prev) = at.insert((a.partition, a.offset), &a.value) {
            panic!(
                "partition {} offset {} was acknowledged for {prev:?} and for {:?}",
                a.partition, a.offset, a.value
            );
        }
    }
}

/// Reads every running-or-not replica's copy of every partition from disk (the brokers must be
/// dead) and checks that the replicas hold identical records at identical offsets below `hws`,
/// with no gap. Returns the records below the high watermarks, `(partition, offset) → value`.
pub fn compare_replicas(
    cluster: &TestCluster,
    topic: &str,
    hws: &[u64],
) -> BTreeMap<(u32, u64), String> {
    assert!(
        cluster.brokers.iter().all(|b| !b.running()),
        "stop the brokers before reading their disks"
    );
    let mut all = BTreeMap::new();
    for (p, &hw) in hws.iter().enumerate() {
        let p = p as u32;
        let mut reference: Option<(i32, BTreeMap<u64, Vec<u8>>)> = None;
        for b in &cluster.brokers {
            let replica = read_replica(&b.data_dir(), topic, p);
            assert!(
                replica.log_end_offset >= hw,
                "broker {} has {topic}-{p} only up to {} but the high watermark is {hw}",
                b.id,
                replica.log_end_offset
            );
            let below = replica.below(hw);
            let expected: Vec<u64> = (replica.log_start_offset..hw).collect();
            let got: Vec<u64> = below.keys().copied().collect();
            assert!(
                got == expected,
                "broker {}: {topic}-{p} has gaps below the high watermark {hw}",
                b.id
            );
            match &reference {
                None => reference = Some((b.id, below)),
                Some((ref_id, ref_records)) => {
                    if let Some((o, v)) = below.iter().find(|(o, v)| ref_records.get(o) != Some(v))
                    {
                        panic!(
                            "{topic}-{p} offset {o}: broker {} holds {:?}, broker {ref_id} holds \
                             {:?} (below the high watermark {hw})",
                            b.id,
                            String::from_utf8_lossy(v),
                            ref_records
                                .get(o)
                                .map(|v| String::from_utf8_lossy(v).into_owned())
                        );
                    }
                    assert_eq!(
                        below.len(),
                        ref_records.len(),
                        "{topic}-{p}: brokers {} and {ref_id} differ below the high watermark",
                        b.id
                    );
                }
            }
        }
        for (o, v) in reference.expect("three replicas").1 {
            all.insert((p, o), String::from_utf8(v).unwrap());
        }
    }
    all
}

/// Values stored at more than one offset (producer retries after a lost answer), counted.
pub fn count_duplicates(log: &BTreeMap<(u32, u64), String>) -> usize {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for v in log.values() {
        *seen.entry(v).or_default() += 1;
    }
    seen.values().map(|n| n - 1).sum()
}

pub async fn partition_state(cluster: &TestCluster, topic: &str, p: u32) -> (i32, i32) {
    wait_for(
        &format!("{topic}-{p} to have a leader"),
        CONDITION_TIMEOUT,
        async || {
            let m = cluster.partition(topic, p).await?;
            (m.leader_id >= 0).then_some((m.leader_id, m.leader_epoch))
        },
    )
    .await
}

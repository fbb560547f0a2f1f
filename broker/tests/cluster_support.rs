//! Cluster test helpers: a real etcd ([`TestEtcd`]) and brokers registered in it
//! ([`TestCluster`]), with the faults the cluster tests inject — `kill -9`, SIGSTOP/SIGCONT,
//! restart in place — and bounded waits on what the registry says ([`wait_until`]).
//!
//! Every process is killed on drop (a stopped one is continued first, so nothing is left behind
//! stopped), every wait has a deadline, and a failing wait panics naming what it waited for and
//! the last state it saw.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::Client;
use sluiceway_core::format::for_each_record;
use sluiceway_core::storage::{LogConfig, PartitionLog, SystemClock};
use sluiceway_core::types::Offset;
use sluiceway_proto::v1;

use crate::support::TestBroker;

/// How long a condition on the cluster (a failover, an ISR change, a restart) may take before the
/// test fails. Generous: these are liveness bounds, never speed assertions.
pub const CONDITION_TIMEOUT: Duration = Duration::from_secs(30);

/// Registry session (etcd lease) of the test brokers: a dead broker is noticed within ~2 s.
pub const SESSION_TIMEOUT_MS: u64 = 2000;
/// `replica.lag.time.max.ms` of the test brokers.
pub const REPLICA_LAG_TIME_MAX_MS: u64 = 2000;

/// Bound on one metadata request to one broker (a stopped broker must not stall a wait).
const METADATA_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on etcd becoming healthy after a (re)start.
const ETCD_START_TIMEOUT: Duration = Duration::from_secs(30);

/// A loopback port nobody listens on now (the OS picks it; the listener is closed at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(ok.success(), "kill {sig} {pid} failed");
}

/// Waits until `f` returns true, polling every 100 ms; panics naming `what` after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `f` returns `Some`, polling every 100 ms; panics naming `what` after `timeout`.
pub async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A real `etcd` (Debian's etcd-server) on free loopback ports over a data directory of its own;
/// killed on drop.
#[derive(Debug)]
pub struct TestEtcd {
    child: Option<Child>,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

impl TestEtcd {
    /// Starts etcd over `<root>/etcd` and waits until it reports healthy.
    pub fn start(root: &Path) -> TestEtcd {
        let client_port = free_port();
        let mut peer_port = free_port();
        while peer_port == client_port {
            peer_port = free_port();
        }
        let mut etcd = TestEtcd {
            child: None,
            client_port,
            peer_port,
            data_dir: root.join("etcd"),
            log: root.join("etcd.log"),
        };
        etcd.spawn();
        etcd
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "etcd is already running");
        let bin = std::env::var("SLUICEWAY_TEST_ETCD").unwrap_or_else(|_| "etcd".to_owned());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(&bin)
            .args(["--name", "sluiceway-test", "--data-dir"])
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("sluiceway-test={peer}")])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {bin:?}: {e}. The cluster tests need a real etcd: run \
                     scripts/setup.sh (installs Debian's etcd-server), or point \
                     SLUICEWAY_TEST_ETCD at an etcd binary"
                )
            });
        self.child = Some(child);
        self.wait_healthy();
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + ETCD_START_TIMEOUT;
        loop {
            if self.healthy() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "etcd exited with {status} before it was healthy; log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "etcd on port {} was not healthy within {ETCD_START_TIMEOUT:?}; log:\n{}",
                self.client_port,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `GET /health` answered `{"health":"true"}`.
    pub fn healthy(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.client_port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
        let req = format!(
            "GET /health HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n",
            self.client_port
        );
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body.contains("\"health\":\"true\"")
    }

    /// `HOST:PORT` of the client endpoint.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// The broker's `--registry` value.
    pub fn registry_url(&self) -> String {
        format!("etcd://{}", self.endpoint())
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("etcd is running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Starts etcd again on the same ports over the same data directory.
    pub fn restart(&mut self) {
        self.spawn();
    }
}

impl Drop for TestEtcd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

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
    /// Flags given to every broker (registry, session, lag time, and the test's extras).
    args: Vec<String>,
    pub root: tempfile::TempDir,
}

impl TestCluster {
    /// Starts etcd and brokers 1..=n with `--registry etcd://…`, a 2 s session and a 2 s replica
    /// lag time (either can be overridden through `extra`), then waits until every broker is
    /// registered. Like every [`TestBroker`], the brokers have no initial rebalance delay unless
    /// `extra` gives `--group-initial-rebalance-delay-ms`.
    pub async fn start(n: usize, extra: &[&str]) -> TestCluster {
        let root = tempfile::tempdir().unwrap();
        let etcd = TestEtcd::start(root.path());
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
            args,
            root,
        };
        for id in 1..=n as i32 {
            let broker_root = cluster.root.path().join(format!("broker-{id}"));
            std::fs::create_dir_all(&broker_root).unwrap();
            let process = cluster.spawn(id, &broker_root, "127.0.0.1:0");
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
        TestBroker::start_on(root, listen, &args, &[])
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
        let mut last = None;
        let ok = tokio::time::timeout(CONDITION_TIMEOUT, async {
            loop {
                if let Some(t) = self.metadata(topic).await {
                    let done = !t.partitions.is_empty()
                        && t.partitions
                            .iter()
                            .all(|p| p.leader_id >= 0 && p.isr.len() == p.replicas.len());
                    last = Some(t);
                    if done {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        assert!(
            ok.is_ok(),
            "timed out after {CONDITION_TIMEOUT:?} waiting until every partition of {topic} has \
             its whole replica set in sync; last metadata: {last:?}"
        );
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

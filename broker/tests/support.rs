//! Test helpers: a real broker process on loopback, a raw gRPC [`Client`], and gRPC shorthands.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sluiceway_broker::errors::{error_from_status, from_proto};
use sluiceway_core::format::{Compression, MAGIC_V1, MessageSetBuilder, for_each_record};
use sluiceway_core::limits::RESPONSE_BYTES_MAX;
use sluiceway_core::{Error, ErrorCode, Result, TimestampMs};
use sluiceway_proto::v1;
use tonic::transport::Channel;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sluiceway")
}

/// `program`, run inside network namespace `netns` when given (`ip netns exec` switches, then
/// execs it: the child's pid is the program's).
pub fn command_in(netns: Option<&str>, program: &str) -> Command {
    match netns {
        None => Command::new(program),
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, program]);
            c
        }
    }
}

/// The broker flag every test broker gets unless the test sets it (see [`TestBroker::start_on`]).
const GROUP_DELAY_FLAG: &str = "--group-initial-rebalance-delay-ms";
const GROUP_DELAY_ENV: &str = "SLUICEWAY_GROUP_INITIAL_REBALANCE_DELAY_MS";

/// A `sluiceway broker` process on 127.0.0.1:0 over `data_dir`; killed on drop.
///
/// Test brokers run with no initial rebalance delay (`--group-initial-rebalance-delay-ms 0`,
/// as Kafka's own test setups do): with the default 3 s every test's first group join would
/// wait 3 s. A test that passes the flag or its environment variable itself gets its value;
/// [`TestBroker::start_with_broker_defaults`] starts one with the broker's own default.
#[derive(Debug)]
pub struct TestBroker {
    child: Option<Child>,
    pub addr: String,
    pub metrics_addr: Option<String>,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

impl TestBroker {
    /// Starts a broker over `<root>/data`, logging to `<root>/broker.log`.
    pub fn start(root: &Path) -> TestBroker {
        TestBroker::start_with(root, &[])
    }

    pub fn start_with(root: &Path, extra: &[&str]) -> TestBroker {
        TestBroker::start_full(root, extra, &[])
    }

    /// With extra flags and environment variables.
    pub fn start_full(root: &Path, extra: &[&str], env: &[(&str, &str)]) -> TestBroker {
        TestBroker::start_on(root, "127.0.0.1:0", extra, env)
    }

    /// Listening on `listen` (e.g. the address of a stopped broker, to restart it in place).
    /// Adds `--group-initial-rebalance-delay-ms 0` unless `extra` or `env` sets the delay. (A
    /// `--config` file's value would lose to the added flag: set it with the flag instead.)
    pub fn start_on(root: &Path, listen: &str, extra: &[&str], env: &[(&str, &str)]) -> TestBroker {
        TestBroker::start_in(None, root, listen, extra, env)
    }

    /// Like [`TestBroker::start_on`], inside network namespace `netns` when given (`ip netns
    /// exec`, which execs the broker: the child's pid is the broker's).
    pub fn start_in(
        netns: Option<&str>,
        root: &Path,
        listen: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> TestBroker {
        let mut args: Vec<&str> = Vec::with_capacity(extra.len() + 2);
        let sets_delay = extra.iter().any(|a| a.starts_with(GROUP_DELAY_FLAG))
            || env.iter().any(|(k, _)| *k == GROUP_DELAY_ENV);
        if !sets_delay {
            args.extend([GROUP_DELAY_FLAG, "0"]);
        }
        args.extend_from_slice(extra);
        TestBroker::spawn(netns, root, listen, &args, env)
    }

    /// With every setting at the broker's own default, including the 3 s initial rebalance
    /// delay: for tests of what users see when consumers start together.
    pub fn start_with_broker_defaults(root: &Path) -> TestBroker {
        TestBroker::spawn(None, root, "127.0.0.1:0", &[], &[])
    }

    fn spawn(
        netns: Option<&str>,
        root: &Path,
        listen: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> TestBroker {
        let data_dir = root.join("data");
        let log = root.join("broker.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut child = command_in(netns, bin())
            .args(["broker", "--data-dir"])
            .arg(&data_dir)
            .args(["--listen", listen, "--log", "info,sluiceway_broker=debug"])
            .args(extra)
            // Not inherited from the test's environment: the flag, `env` or the default decide.
            .env_remove(GROUP_DELAY_ENV)
            .envs(env.iter().copied())
            .env_remove("SLUICEWAY_BOOTSTRAP")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("spawn sluiceway broker");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout);
            loop {
                let mut line = String::new();
                match lines.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if tx.send(line.trim_end().to_owned()).is_err() {
                            // Keep draining so the broker never blocks on a full pipe.
                            continue;
                        }
                    }
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut metrics_addr = None;
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(a) = line.strip_prefix("listening on ") {
                        break a.to_owned();
                    }
                    if let Some(a) = line.strip_prefix("metrics on ") {
                        metrics_addr = Some(a.to_owned());
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "the broker did not print its address; log:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            }
        };
        TestBroker {
            child: Some(child),
            addr,
            metrics_addr,
            data_dir,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let ok = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the broker did not stop after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no chance to flush or close anything.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// A `sluiceway` command pointed at this broker through `SLUICEWAY_BOOTSTRAP`.
    pub fn cli(&self) -> Command {
        let mut c = Command::new(bin());
        c.env("SLUICEWAY_BOOTSTRAP", &self.addr);
        c
    }

    /// Runs the command line with `stdin` as its input.
    pub fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = self
            .cli()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        let data = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&data);
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        out
    }

    /// The broker's `/metrics` answer, status line and headers included (the broker must have
    /// been started with `--metrics-listen`).
    pub async fn metrics(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.metrics_addr.clone().expect("metrics address printed");
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).await.unwrap();
        body
    }

    /// The broker's count of handled requests of one kind (`produce`, `metadata`, …), from
    /// `/metrics` (the broker must have been started with `--metrics-listen`).
    pub async fn requests_handled(&self, kind: &str) -> u64 {
        let body = self.metrics().await;
        let prefix = format!("sluiceway_requests_total{{request=\"{kind}\"}} ");
        body.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("no {kind} counter in {body}"))
            .parse()
            .unwrap()
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.addr).await.expect("connect")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Raw gRPC clients on one channel to one broker, for tests that speak the wire protocol
/// directly (the command line and the client core never use this; they go through
/// `sluiceway_core::client`).
#[derive(Debug, Clone)]
pub struct Client {
    pub log: v1::log_client::LogClient<Channel>,
    pub admin: v1::admin_client::AdminClient<Channel>,
    pub registry: v1::registry_client::RegistryClient<Channel>,
    pub group: v1::group_client::GroupClient<Channel>,
}

impl Client {
    /// Connects to the first address of `addresses` (`HOST:PORT[,HOST:PORT…]`) that answers.
    pub async fn connect(addresses: &str) -> Result<Client> {
        let mut last = None;
        for address in addresses
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            match Client::connect_one(address).await {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::InvalidArgument("no bootstrap address given".into())))
    }

    async fn connect_one(address: &str) -> Result<Client> {
        let unavailable = |m: String| Error::Remote {
            code: ErrorCode::BrokerNotAvailable,
            message: m,
        };
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| Error::InvalidArgument(format!("bad address {address:?}: {e}")))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| unavailable(format!("cannot connect to {address}: {e}")))?;
        // No encoding limit on this side: the broker's decoding limit (`REQUEST_BYTES_MAX`) decides,
        // and its refusal arrives as a clean status (a client-side limit would reset the stream).
        let resp = RESPONSE_BYTES_MAX as usize;
        Ok(Client {
            log: v1::log_client::LogClient::new(channel.clone()).max_decoding_message_size(resp),
            admin: v1::admin_client::AdminClient::new(channel.clone())
                .max_decoding_message_size(resp),
            registry: v1::registry_client::RegistryClient::new(channel.clone())
                .max_decoding_message_size(resp),
            group: v1::group_client::GroupClient::new(channel).max_decoding_message_size(resp),
        })
    }

    /// The topic's metadata, or its error.
    pub async fn topic_metadata(&mut self, topic: &str) -> Result<v1::TopicMetadata> {
        let resp = self
            .registry
            .get_metadata(v1::GetMetadataRequest {
                topics: vec![topic.to_owned()],
            })
            .await
            .map_err(|s| error_from_status(&s))?
            .into_inner();
        let t = resp
            .topics
            .into_iter()
            .next()
            .ok_or_else(|| Error::Remote {
                code: ErrorCode::UnknownServerError,
                message: format!("the broker returned no metadata for {topic}"),
            })?;
        if t.error_code != 0 {
            return Err(Error::Remote {
                code: from_proto(t.error_code),
                message: t.error_message,
            });
        }
        Ok(t)
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// An uncompressed magic-1 set of `values` stamped now.
pub fn set_of<V: AsRef<[u8]>>(values: &[V]) -> Vec<u8> {
    let mut b = MessageSetBuilder::new(MAGIC_V1, Compression::None);
    let ts = TimestampMs(now_ms());
    for v in values {
        b.push(ts, None, Some(v.as_ref()));
    }
    b.finish().unwrap()
}

/// A set with explicit timestamps.
pub fn set_with_timestamps(messages: &[(i64, &[u8])]) -> Vec<u8> {
    let mut b = MessageSetBuilder::new(MAGIC_V1, Compression::None);
    for (ts, v) in messages {
        b.push(TimestampMs(*ts), None, Some(v));
    }
    b.finish().unwrap()
}

/// (offset, value) of every record of a fetched set at or after `from`.
pub fn records(set: &[u8], from: i64) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut scratch = Vec::new();
    for_each_record(set, &mut scratch, |r| {
        if r.offset.0 as i64 >= from {
            out.push((r.offset.0 as i64, r.value.unwrap_or_default().to_vec()));
        }
    })
    .unwrap();
    out
}

pub async fn create_topic(c: &mut Client, name: &str, partitions: u32, configs: &[(&str, &str)]) {
    c.admin
        .create_topic(v1::CreateTopicRequest {
            name: name.into(),
            partitions,
            replication_factor: 1,
            configs: configs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        })
        .await
        .unwrap();
}

pub fn produce_partition(topic: &str, partition: u32, set: Vec<u8>) -> v1::ProducePartition {
    v1::ProducePartition {
        topic: topic.into(),
        partition,
        message_set: set.into(),
        leader_epoch: None,
    }
}

/// Produces one set with acks=1 and returns its result.
pub async fn produce(
    c: &mut Client,
    topic: &str,
    partition: u32,
    set: Vec<u8>,
) -> v1::ProducePartitionResult {
    let resp = c
        .log
        .produce(v1::ProduceRequest {
            acks: 1,
            timeout_ms: 0,
            partitions: vec![produce_partition(topic, partition, set)],
        })
        .await
        .unwrap()
        .into_inner();
    resp.results.into_iter().next().unwrap()
}

pub fn fetch_partition(topic: &str, partition: u32, offset: i64) -> v1::FetchPartition {
    v1::FetchPartition {
        topic: topic.into(),
        partition,
        fetch_offset: offset,
        max_bytes: 0,
        leader_epoch: None,
    }
}

/// One fetch of one partition without waiting.
pub async fn fetch_once(
    c: &mut Client,
    topic: &str,
    partition: u32,
    offset: i64,
) -> v1::FetchPartitionResult {
    let resp = c
        .log
        .fetch(v1::FetchRequest {
            replica_id: None,
            max_wait_ms: 0,
            min_bytes: 1,
            max_bytes: 0,
            partitions: vec![fetch_partition(topic, partition, offset)],
        })
        .await
        .unwrap()
        .into_inner();
    resp.results.into_iter().next().unwrap()
}

/// Every record of a partition from `from` up to its high watermark.
pub async fn fetch_all(
    c: &mut Client,
    topic: &str,
    partition: u32,
    from: i64,
) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let r = fetch_once(c, topic, partition, next).await;
        assert_eq!(code(r.error_code), ErrorCode::None, "{}", r.error_message);
        let recs = records(&r.message_set, next);
        if let Some(last) = recs.last() {
            next = last.0 + 1;
        }
        out.extend(recs);
        if next >= r.high_watermark {
            return out;
        }
    }
}

pub fn code(c: i32) -> ErrorCode {
    from_proto(c)
}

/// The stable code carried by a request-level status.
pub fn status_code(s: &tonic::Status) -> ErrorCode {
    let d = sluiceway_proto::error_detail(s).unwrap_or_else(|| panic!("no ErrorDetail in {s:?}"));
    from_proto(d.code)
}

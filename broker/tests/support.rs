//! Test helpers: a raw gRPC [`Client`] on a real broker process ([`TestBroker`], from the shared
//! `sluiceway-testing` crate), and gRPC shorthands.

#![allow(dead_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluiceway_broker::errors::{error_from_status, from_proto};
use sluiceway_core::format::{Compression, MAGIC_V1, MessageSetBuilder, for_each_record};
use sluiceway_core::limits::RESPONSE_BYTES_MAX;
use sluiceway_core::{Error, ErrorCode, Result, TimestampMs};
use sluiceway_proto::v1;
use tonic::transport::Channel;

/// The process helpers live in the shared test-support crate (`testing/`), used by the core
/// crate's tests too; re-exported so that the modules here keep one import path (the
/// `partitions` binary uses only some of them).
#[allow(unused_imports)]
pub use sluiceway_testing::{
    CONDITION_TIMEOUT, TEST_TIMEOUT, TestBroker, bin, bounded, wait_for, wait_reporting, wait_until,
};

/// A raw gRPC [`Client`] on a [`TestBroker`] (the shared crate knows no gRPC: it does not depend
/// on the crates under test).
pub trait BrokerClient {
    fn client(&self) -> impl std::future::Future<Output = Client> + Send;
}

impl BrokerClient for TestBroker {
    async fn client(&self) -> Client {
        Client::connect(&self.addr).await.expect("connect")
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
        order_sequence: 0,
        order_since: 0,
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
            session: 0,
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

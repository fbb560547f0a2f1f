//! The producer against a scripted, in-process fake broker (tonic on loopback): the error paths
//! a single real broker cannot produce on demand — NOT_LEADER with a metadata refresh and a
//! retry, non-retriable codes, `retries = 0`, request-level statuses with an `ErrorDetail` —
//! and the request shape (one multi-partition Produce per leader, order kept across retries);
//! and the consumer's fetch retries.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use sluiceway_core::ErrorCode;
use sluiceway_core::client::{
    Consumer, ConsumerConfig, GroupMembership, OffsetReset, TopicPartition,
};
use sluiceway_core::client::{DeliveryFuture, Producer, ProducerConfig, ProducerRecord};
use sluiceway_core::format::{
    AppendOptions, Compression, MAGIC_V1, MessageSetBuilder, TimestampType, for_each_record,
    prepare_append,
};
use sluiceway_core::{Offset, TimestampMs};
use sluiceway_proto::v1;
use sluiceway_testing::{CONDITION_TIMEOUT, TEST_TIMEOUT, bounded, wait_until};
use tonic::{Request, Response, Status};

/// What the fake answers a produce with, per partition, one entry per Produce call (then NONE).
#[derive(Debug, Clone)]
enum Answer {
    Code(v1::ErrorCode),
    Status(v1::ErrorCode, &'static str),
}

#[derive(Debug, Default)]
struct FakeState {
    address: String,
    partitions: u32,
    metadata_calls: u32,
    /// Partitions named in each Produce call, in order.
    produce_calls: Vec<Vec<u32>>,
    script: VecDeque<Answer>,
    /// Codes answered to Fetch calls, one per call (then data).
    fetch_script: VecDeque<v1::ErrorCode>,
    /// Fetch answers to send with the last result missing (whatever partitions the fetch named,
    /// so the scenario happens however the consumer groups its partitions into fetches).
    fetch_short_answers: u32,
    fetch_calls: u32,
    log: HashMap<u32, Vec<String>>,
    /// How long a Produce call waits before it is answered (so the producer pipelines).
    produce_delay: Duration,
    /// Each Produce call's (partition, order_sequence, order_since), in order.
    produce_order: Vec<(u32, u64, u64)>,
    /// The broker's session rules (docs/FORMAT.md, "Pipelined produce requests"), per
    /// (session, partition): the request handled next (a later one waits for it), and the
    /// lowest failed one (a request sent behind it is refused).
    next_order: HashMap<(u64, u32), u64>,
    failed_order: HashMap<(u64, u32), u64>,
}

#[derive(Debug, Clone)]
struct Fake(Arc<Mutex<FakeState>>);

#[tonic::async_trait]
impl v1::registry_server::Registry for Fake {
    async fn list_brokers(
        &self,
        _: Request<v1::ListBrokersRequest>,
    ) -> Result<Response<v1::ListBrokersResponse>, Status> {
        let s = self.0.lock();
        Ok(Response::new(v1::ListBrokersResponse {
            brokers: vec![v1::BrokerInfo {
                broker_id: 0,
                address: s.address.clone(),
                alive: true,
            }],
            controller_id: 0,
        }))
    }

    async fn get_metadata(
        &self,
        r: Request<v1::GetMetadataRequest>,
    ) -> Result<Response<v1::GetMetadataResponse>, Status> {
        let mut s = self.0.lock();
        s.metadata_calls += 1;
        let wanted = r.into_inner().topics;
        let topics = if wanted.is_empty() || wanted.iter().any(|t| t == "t") {
            vec![v1::TopicMetadata {
                name: "t".into(),
                error_code: 0,
                error_message: String::new(),
                partitions: (0..s.partitions)
                    .map(|p| v1::PartitionMetadata {
                        partition: p,
                        error_code: 0,
                        leader_id: 0,
                        replicas: vec![0],
                        isr: vec![0],
                        leader_epoch: 0,
                    })
                    .collect(),
            }]
        } else {
            Vec::new()
        };
        Ok(Response::new(v1::GetMetadataResponse {
            brokers: vec![v1::BrokerInfo {
                broker_id: 0,
                address: s.address.clone(),
                alive: true,
            }],
            topics,
            controller_id: 0,
        }))
    }
}

#[tonic::async_trait]
impl v1::log_server::Log for Fake {
    async fn offset_for_leader_epoch(
        &self,
        _r: Request<v1::OffsetForLeaderEpochRequest>,
    ) -> Result<Response<v1::OffsetForLeaderEpochResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn init_producer_id(
        &self,
        _r: Request<v1::InitProducerIdRequest>,
    ) -> Result<Response<v1::InitProducerIdResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn produce(
        &self,
        r: Request<v1::ProduceRequest>,
    ) -> Result<Response<v1::ProduceResponse>, Status> {
        let delay = self.0.lock().produce_delay;
        tokio::time::sleep(delay).await;
        let req = r.into_inner();
        // Handled in the order the producer sent them, as the broker does.
        let turns: Vec<_> = req
            .partitions
            .iter()
            .map(|p| ((req.session, p.partition), p.order_sequence, p.order_since))
            .collect();
        loop {
            let ready = {
                let s = self.0.lock();
                turns.iter().all(|(order, seq, since)| {
                    *seq <= s.next_order.get(order).copied().unwrap_or(0).max(*since)
                })
            };
            if req.session == 0 || ready {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut s = self.0.lock();
        for (order, seq, _) in &turns {
            let next = s.next_order.entry(*order).or_default();
            *next = (*next).max(seq + 1);
        }
        s.produce_calls
            .push(req.partitions.iter().map(|p| p.partition).collect());
        for p in &req.partitions {
            s.produce_order
                .push((p.partition, p.order_sequence, p.order_since));
        }
        let answer = s.script.pop_front();
        if let Some(Answer::Status(code, msg)) = answer {
            return Err(sluiceway_proto::status(
                tonic::Code::InvalidArgument,
                code,
                msg,
            ));
        }
        let mut results = Vec::new();
        for p in req.partitions {
            let order = (req.session, p.partition);
            if s.failed_order
                .get(&order)
                .is_some_and(|f| p.order_since > *f)
            {
                s.failed_order.remove(&order);
            }
            let behind_failure = req.session != 0
                && s.failed_order
                    .get(&order)
                    .is_some_and(|f| p.order_sequence > *f);
            let code = match &answer {
                _ if behind_failure => v1::ErrorCode::OutOfOrderSequenceNumber,
                Some(Answer::Code(c)) => *c,
                _ => v1::ErrorCode::None,
            };
            if code != v1::ErrorCode::None && req.session != 0 {
                let f = s.failed_order.entry(order).or_insert(p.order_sequence);
                *f = (*f).min(p.order_sequence);
            }
            let mut r = v1::ProducePartitionResult {
                topic: p.topic.clone(),
                partition: p.partition,
                error_code: code as i32,
                error_message: if code == v1::ErrorCode::None {
                    String::new()
                } else {
                    format!("scripted {}", code.as_str_name())
                },
                base_offset: -1,
                log_append_time_ms: -1,
                log_start_offset: -1,
                batch_base_offsets: Vec::new(),
            };
            if code == v1::ErrorCode::None {
                let log = s.log.entry(p.partition).or_default();
                r.base_offset = log.len() as i64;
                for_each_record(&p.message_set, &mut Vec::new(), |rec| {
                    log.push(String::from_utf8(rec.value.unwrap_or_default().to_vec()).unwrap());
                })
                .unwrap();
            }
            results.push(r);
        }
        Ok(Response::new(v1::ProduceResponse { results }))
    }

    async fn fetch(
        &self,
        r: Request<v1::FetchRequest>,
    ) -> Result<Response<v1::FetchResponse>, Status> {
        let (code, results) = self.fetch_now(r);
        if code == v1::ErrorCode::None && results.iter().all(|r| r.message_set.is_empty()) {
            // A long poll with nothing to return: wait a little, as the broker would (the
            // fake's behaviour, not a synchronisation of the test).
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Without `next_offsets`, as a broker that does not send them: no pipelining.
        Ok(Response::new(v1::FetchResponse {
            results,
            next_offsets: Vec::new(),
        }))
    }

    async fn list_offsets(
        &self,
        _: Request<v1::ListOffsetsRequest>,
    ) -> Result<Response<v1::ListOffsetsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

impl Fake {
    /// The fetch answer, computed under the state lock (not held across the long-poll wait).
    fn fetch_now(
        &self,
        r: Request<v1::FetchRequest>,
    ) -> (v1::ErrorCode, Vec<v1::FetchPartitionResult>) {
        let mut s = self.0.lock();
        s.fetch_calls += 1;
        let code = s.fetch_script.pop_front().unwrap_or(v1::ErrorCode::None);
        let mut results = Vec::new();

        for p in r.into_inner().partitions {
            let log = s.log.get(&p.partition).cloned().unwrap_or_default();
            let mut message_set = Vec::new();
            if code == v1::ErrorCode::None && (p.fetch_offset as usize) < log.len() {
                let mut b = MessageSetBuilder::new(MAGIC_V1, Compression::None);
                for v in &log[p.fetch_offset as usize..] {
                    b.push(TimestampMs(1), None, Some(v.as_bytes()));
                }
                message_set = b.finish().unwrap();
                let opts = AppendOptions {
                    max_message_bytes: 1 << 20,
                    timestamp_type: TimestampType::CreateTime,
                    now: TimestampMs(1),
                    leader_epoch: 0,
                };
                let base = Offset(p.fetch_offset as u64);
                prepare_append(&mut message_set, base, &opts, &mut Vec::new()).unwrap();
            }
            results.push(v1::FetchPartitionResult {
                topic: p.topic,
                partition: p.partition,
                error_code: code as i32,
                error_message: String::new(),
                high_watermark: log.len() as i64,
                log_start_offset: 0,
                log_end_offset: log.len() as i64,
                message_set: message_set.into(),
                leader_epochs: Vec::new(),
            });
        }
        if s.fetch_short_answers > 0 && !results.is_empty() {
            s.fetch_short_answers -= 1;
            results.pop();
        }
        (code, results)
    }
}

async fn start(partitions: u32, script: Vec<Answer>) -> Fake {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let fake = Fake(Arc::new(Mutex::new(FakeState {
        address,
        partitions,
        script: script.into(),
        ..FakeState::default()
    })));
    let f = fake.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(v1::registry_server::RegistryServer::new(f.clone()))
            .add_service(v1::log_server::LogServer::new(f))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    fake
}

async fn producer(fake: &Fake, extra: &[(&str, &str)]) -> Producer {
    let address = fake.0.lock().address.clone();
    let mut map = vec![
        ("bootstrap.servers", address.as_str()),
        ("retry.backoff.ms", "10"),
        ("linger.ms", "20"),
    ];
    map.extend_from_slice(extra);
    Producer::new(ProducerConfig::from_map(map).unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_leader_refreshes_metadata_and_retries() {
    bounded(TEST_TIMEOUT, async {
        let fake = start(
            1,
            vec![
                Answer::Code(v1::ErrorCode::NotLeader),
                Answer::Code(v1::ErrorCode::NotLeader),
            ],
        )
        .await;
        let p = producer(&fake, &[]).await;
        let m = p
            .send(ProducerRecord::new("t", "v0"))
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(m.offset.unwrap().0, 0);
        assert_eq!(
            fake.0.lock().produce_calls.len(),
            3,
            "two NOT_LEADER answers, then success"
        );
        // The refresh NOT_LEADER asked for is rate-limited (CLIENT_METADATA_REFRESH_MS_MIN), so
        // on a fast run the retries can succeed before it goes out: wait for it (bounded by
        // the test's timeout) instead of expecting it before the delivery.
        wait_until("metadata fetched again", CONDITION_TIMEOUT, async || {
            fake.0.lock().metadata_calls >= 2
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_retriable_code_fails_at_once_with_the_brokers_message() {
    bounded(TEST_TIMEOUT, async {
        let fake = start(1, vec![Answer::Code(v1::ErrorCode::MessageTooLarge)]).await;
        let p = producer(&fake, &[]).await;
        let e = p
            .send(ProducerRecord::new("t", "v0"))
            .await
            .unwrap()
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::MessageTooLarge);
        assert!(e.to_string().contains("scripted MESSAGE_TOO_LARGE"), "{e}");
        assert_eq!(fake.0.lock().produce_calls.len(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_zero_gives_up_on_the_first_retriable_error() {
    bounded(TEST_TIMEOUT, async {
        let fake = start(1, vec![Answer::Code(v1::ErrorCode::NotLeader)]).await;
        let p = producer(&fake, &[("retries", "0")]).await;
        let e = p
            .send(ProducerRecord::new("t", "v0"))
            .await
            .unwrap()
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::NotLeader);
        assert_eq!(fake.0.lock().produce_calls.len(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_level_status_keeps_its_code_and_message() {
    bounded(TEST_TIMEOUT, async {
        let fake = start(
            2,
            vec![Answer::Status(
                v1::ErrorCode::InvalidRequest,
                "partition listed twice",
            )],
        )
        .await;
        let p = producer(&fake, &[]).await;
        let fs = p
            .send_batch(vec![
                ProducerRecord::new("t", "a").partition(0),
                ProducerRecord::new("t", "b").partition(1),
            ])
            .await
            .unwrap()
            .into_futures();
        for f in fs {
            let e = f.await.unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidRequest);
            assert!(e.to_string().contains("partition listed twice"), "{e}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_batches_for_one_leader_go_in_one_request() {
    bounded(TEST_TIMEOUT, async {
        let fake = start(4, vec![]).await;
        let p = producer(&fake, &[("linger.ms", "100")]).await;
        let fs = p
            .send_batch(
                (0..4)
                    .map(|i| ProducerRecord::new("t", format!("v{i}")).partition(i))
                    .collect(),
            )
            .await
            .unwrap()
            .into_futures();
        for f in fs {
            f.await.unwrap();
        }
        let calls = fake.0.lock().produce_calls.clone();
        assert_eq!(calls.len(), 1, "{calls:?}");
        let mut parts = calls[0].clone();
        parts.sort_unstable();
        assert_eq!(parts, [0, 1, 2, 3]);
    })
    .await;
}

/// Order within a partition survives a retry of its first requests, with several in flight
/// (answers are slow, so five go out before the first comes back): the leader refuses those
/// sent behind a failed one, and the producer resends all of them in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_within_a_partition_survives_retries() {
    bounded(TEST_TIMEOUT, async {
        let fake = start(
            1,
            vec![
                Answer::Code(v1::ErrorCode::NotLeader),
                Answer::Code(v1::ErrorCode::RequestTimedOut),
            ],
        )
        .await;
        fake.0.lock().produce_delay = Duration::from_millis(50);
        let p = producer(
            &fake,
            &[
                ("batch.size", "100"),
                ("linger.ms", "0"),
                ("max.in.flight.requests.per.connection", "5"),
            ],
        )
        .await;
        let mut fs: Vec<DeliveryFuture> = Vec::new();
        for i in 0..30 {
            fs.push(
                p.send(ProducerRecord::new("t", format!("v{i:02}")))
                    .await
                    .unwrap(),
            );
            // Spread out, so that the records go in several requests.
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        let mut offsets = Vec::new();
        for f in fs {
            offsets.push(f.await.unwrap().offset.unwrap().0);
        }
        assert_eq!(offsets, (0..30).collect::<Vec<_>>());
        let log = fake.0.lock().log.get(&0).cloned().unwrap();
        assert_eq!(log, (0..30).map(|i| format!("v{i:02}")).collect::<Vec<_>>());
        // Requests were pipelined: numbered in order, some sent while earlier ones were out.
        let order = fake.0.lock().produce_order.clone();
        let sequences: Vec<u64> = order.iter().map(|o| o.1).collect();
        assert!(sequences.is_sorted(), "{order:?}");
        assert!(order.iter().any(|(_, seq, since)| since < seq), "{order:?}");
        assert!(
            order.iter().all(|(_, seq, since)| since <= seq),
            "{order:?}"
        );
    })
    .await;
}

/// The consumer retries fetches answered NOT_LEADER / UNKNOWN_TOPIC_OR_PARTITION (refreshing
/// metadata) and keeps its position: every record arrives once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_retries_not_leader_fetches() {
    bounded(TEST_TIMEOUT, async {
        let fake = start(1, vec![]).await;
        fake.0
            .lock()
            .log
            .insert(0, (0..10).map(|i| format!("v{i}")).collect());
        fake.0.lock().fetch_script = vec![
            v1::ErrorCode::NotLeader,
            v1::ErrorCode::UnknownTopicOrPartition,
        ]
        .into();
        let address = fake.0.lock().address.clone();
        let config = ConsumerConfig::new(&address)
            .auto_offset_reset(OffsetReset::Earliest)
            .retry_backoff(Duration::from_millis(10));
        let c = Consumer::new(config).await.unwrap();
        let tp = TopicPartition::new("t", 0);
        c.assign(vec![tp.clone()]).unwrap();
        c.seek(&tp, Offset(0)).unwrap();
        let mut got = Vec::new();
        while got.len() < 10 {
            got.extend(c.poll(Duration::from_secs(5)).await.unwrap());
        }
        let offsets: Vec<u64> = got.iter().map(|r| r.offset.0).collect();
        assert_eq!(offsets, (0..10).collect::<Vec<_>>());
        let fetch_calls = fake.0.lock().fetch_calls;
        assert!(fetch_calls >= 3, "{fetch_calls} fetches");
        // The refresh is rate-limited and may go out after the retried fetch succeeded.
        wait_until("metadata fetched again", CONDITION_TIMEOUT, async || {
            fake.0.lock().metadata_calls >= 2
        })
        .await;
    })
    .await;
}

/// A fetch answer with fewer results than partitions asked is not matched up short (which
/// would leave the partition without a result stalled for good): it is retried as a whole, and
/// every record of every partition arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_answer_missing_a_partition_is_retried_not_trusted() {
    bounded(TEST_TIMEOUT, async {
        let fake = start(2, vec![]).await;
        for p in 0..2 {
            fake.0
                .lock()
                .log
                .insert(p, (0..10).map(|i| format!("p{p}-{i}")).collect());
        }
        fake.0.lock().fetch_short_answers = 3;
        let address = fake.0.lock().address.clone();
        let config = ConsumerConfig::new(&address)
            .auto_offset_reset(OffsetReset::Earliest)
            .retry_backoff(Duration::from_millis(10));
        let c = Consumer::new(config).await.unwrap();
        let tps = vec![TopicPartition::new("t", 0), TopicPartition::new("t", 1)];
        c.assign(tps.clone()).unwrap();
        for tp in &tps {
            c.seek(tp, Offset(0)).unwrap();
        }
        let mut got = Vec::new();
        while got.len() < 20 {
            got.extend(c.poll(Duration::from_secs(5)).await.unwrap());
        }
        for p in 0..2 {
            let offsets: Vec<u64> = got
                .iter()
                .filter(|r| r.partition == p)
                .map(|r| r.offset.0)
                .collect();
            assert_eq!(offsets, (0..10).collect::<Vec<_>>(), "partition {p}");
        }
        assert_eq!(
            fake.0.lock().fetch_short_answers,
            0,
            "short answers were sent"
        );
        c.close(None).await.unwrap();
    })
    .await;
}

/// The consumer-group keys: Kafka's names, bounds from `limits.rs`, the heartbeat (unless set)
/// Kafka's 3 s or a third of a shorter session, and clear errors naming the key.
#[test]
fn group_config_keys_parse_validate_and_derive_the_heartbeat() {
    use sluiceway_core::group::Assignor;
    let c = ConsumerConfig::from_map([
        ("bootstrap.servers", "h:1"),
        ("group.id", "g"),
        ("session.timeout.ms", "900"),
        ("partition.assignment.strategy", "roundrobin"),
        ("max.poll.interval.ms", "5000"),
    ])
    .expect("config");
    assert_eq!(c.session_timeout, Duration::from_millis(900));
    assert_eq!(c.effective_heartbeat_interval(), Duration::from_millis(300));
    assert_eq!(c.assignor, Assignor::RoundRobin);
    assert_eq!(c.max_poll_interval, Duration::from_millis(5000));

    let defaults = ConsumerConfig::new("h:1");
    assert_eq!(defaults.session_timeout, Duration::from_secs(45));
    // Not a third of the session (15 s): a joining member waits a heartbeat for its share
    // (issue 9).
    assert_eq!(
        defaults.effective_heartbeat_interval(),
        Duration::from_secs(3)
    );
    assert_eq!(defaults.assignor, Assignor::Range);

    let explicit = ConsumerConfig::new("h:1")
        .session_timeout(Duration::from_secs(10))
        .heartbeat_interval(Duration::from_secs(3));
    explicit.validate().unwrap();
    assert_eq!(
        explicit.effective_heartbeat_interval(),
        Duration::from_secs(3)
    );

    let bad = |k: &str, v: &str| {
        let e = ConsumerConfig::from_map([("bootstrap.servers", "h:1"), (k, v)]).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidConfig, "{k}={v}");
        assert!(e.to_string().contains(k), "{e}");
    };
    bad("session.timeout.ms", "499");
    bad("partition.assignment.strategy", "sticky");
    bad("heartbeat.interval.ms", "5");
    bad("max.poll.interval.ms", "0");
    // The heartbeat must be below the session timeout.
    let e = ConsumerConfig::new("h:1")
        .session_timeout(Duration::from_secs(1))
        .heartbeat_interval(Duration::from_secs(1))
        .validate()
        .unwrap_err();
    assert!(e.to_string().contains("heartbeat.interval.ms"), "{e}");
}

/// The benchmark's options are checked before anything connects, per mode.
#[cfg(feature = "bench")]
#[test]
fn bench_options_are_bounded() {
    use sluiceway_core::client::bench::{BenchKind, BenchOptions};
    let ok = BenchOptions {
        partitions: 1,
        messages: Some(10),
        in_flight: 10,
        ..BenchOptions::new("t")
    };
    for kind in [BenchKind::Produce, BenchKind::Consume, BenchKind::EndToEnd] {
        ok.validate(kind).unwrap();
    }
    BenchOptions {
        rate: Some(1000),
        producers: 2,
        consumers: 3,
        ..ok.clone()
    }
    .validate(BenchKind::EndToEnd)
    .unwrap();
    let cases = [
        (
            BenchKind::Produce,
            BenchOptions {
                messages: None,
                ..ok.clone()
            },
        ),
        (
            BenchKind::Produce,
            BenchOptions {
                messages: Some(0),
                ..ok.clone()
            },
        ),
        (
            BenchKind::Produce,
            BenchOptions {
                size: 2 << 20,
                ..ok.clone()
            },
        ),
        (
            BenchKind::Produce,
            BenchOptions {
                in_flight: 0,
                ..ok.clone()
            },
        ),
        (
            BenchKind::Produce,
            BenchOptions {
                partitions: 0,
                ..ok.clone()
            },
        ),
        (
            BenchKind::Produce,
            BenchOptions {
                rate: Some(0),
                ..ok.clone()
            },
        ),
        (
            BenchKind::Consume,
            BenchOptions {
                rate: Some(10),
                ..ok.clone()
            },
        ),
        (
            BenchKind::Produce,
            BenchOptions {
                producers: 0,
                ..ok.clone()
            },
        ),
        (
            BenchKind::EndToEnd,
            BenchOptions {
                consumers: 1000,
                ..ok.clone()
            },
        ),
        (
            BenchKind::EndToEnd,
            BenchOptions {
                size: 7,
                ..ok.clone()
            },
        ),
        (
            BenchKind::Produce,
            BenchOptions {
                producers: 11,
                ..ok.clone()
            },
        ),
        (
            BenchKind::Produce,
            BenchOptions {
                duration: Some(Duration::ZERO),
                ..ok.clone()
            },
        ),
    ];
    for (kind, bad) in cases {
        assert_eq!(
            bad.validate(kind).unwrap_err().code(),
            ErrorCode::InvalidArgument,
            "{kind:?} {bad:?}"
        );
    }
}

/// (member id, generation, [(partition, offset)]) of one CommitOffsets.
type Commit = (String, i32, Vec<(u32, i64)>);

/// A scripted group coordinator: joins hand out every partition of `t`, heartbeats answer the
/// code the test set (once), commits and leaves are recorded.
#[derive(Debug, Default)]
struct GroupState {
    /// (member id sent, generation answered) per JoinGroup.
    joins: Vec<(String, i32)>,
    next_heartbeat: Option<v1::ErrorCode>,
    heartbeats: u32,
    commits: Vec<Commit>,
    committed: HashMap<u32, i64>,
    leaves: Vec<String>,
    partitions: u32,
    /// Where FindCoordinator points: this fake itself.
    address: String,
}

#[derive(Debug, Clone)]
struct FakeGroup(Arc<Mutex<GroupState>>);

#[tonic::async_trait]
impl v1::group_server::Group for FakeGroup {
    async fn join_group(
        &self,
        r: Request<v1::JoinGroupRequest>,
    ) -> Result<Response<v1::JoinGroupResponse>, Status> {
        let req = r.into_inner();
        let mut s = self.0.lock();
        let generation = s.joins.len() as i32 + 1;
        let member_id = if req.member_id.is_empty() {
            format!("m{generation}")
        } else {
            req.member_id.clone()
        };
        s.joins.push((req.member_id, generation));
        Ok(Response::new(v1::JoinGroupResponse {
            member_id,
            generation,
            assignor: req.assignor,
            assignment: vec![v1::TopicPartitions {
                topic: "t".into(),
                partitions: (0..s.partitions).collect(),
            }],
        }))
    }

    async fn heartbeat(
        &self,
        _: Request<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        let mut s = self.0.lock();
        s.heartbeats += 1;
        match s.next_heartbeat.take() {
            Some(code) => Err(sluiceway_proto::status(
                tonic::Code::FailedPrecondition,
                code,
                "scripted",
            )),
            None => Ok(Response::new(v1::HeartbeatResponse {})),
        }
    }

    async fn leave_group(
        &self,
        r: Request<v1::LeaveGroupRequest>,
    ) -> Result<Response<v1::LeaveGroupResponse>, Status> {
        self.0.lock().leaves.push(r.into_inner().member_id);
        Ok(Response::new(v1::LeaveGroupResponse {}))
    }

    async fn commit_offsets(
        &self,
        r: Request<v1::CommitOffsetsRequest>,
    ) -> Result<Response<v1::CommitOffsetsResponse>, Status> {
        let req = r.into_inner();
        let mut s = self.0.lock();
        let offsets: Vec<(u32, i64)> = req
            .partitions
            .iter()
            .map(|p| (p.partition, p.offset))
            .collect();
        for (p, o) in &offsets {
            s.committed.insert(*p, *o);
        }
        s.commits
            .push((req.member_id, req.generation.unwrap_or(-1), offsets));
        Ok(Response::new(v1::CommitOffsetsResponse {
            results: req
                .partitions
                .into_iter()
                .map(|p| v1::CommitOffsetPartitionResult {
                    topic: p.topic,
                    partition: p.partition,
                    error_code: 0,
                    error_message: String::new(),
                })
                .collect(),
        }))
    }

    async fn fetch_offsets(
        &self,
        r: Request<v1::FetchOffsetsRequest>,
    ) -> Result<Response<v1::FetchOffsetsResponse>, Status> {
        let s = self.0.lock();
        let mut offsets = Vec::new();
        for t in r.into_inner().partitions {
            for p in t.partitions {
                offsets.push(v1::CommittedOffset {
                    topic: t.topic.clone(),
                    partition: p,
                    offset: s.committed.get(&p).copied().unwrap_or(-1),
                    metadata: String::new(),
                    commit_timestamp_ms: -1,
                    error_code: 0,
                    error_message: String::new(),
                });
            }
        }
        Ok(Response::new(v1::FetchOffsetsResponse { offsets }))
    }

    async fn list_groups(
        &self,
        _: Request<v1::ListGroupsRequest>,
    ) -> Result<Response<v1::ListGroupsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn describe_group(
        &self,
        _: Request<v1::DescribeGroupRequest>,
    ) -> Result<Response<v1::DescribeGroupResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn find_coordinator(
        &self,
        _: Request<v1::FindCoordinatorRequest>,
    ) -> Result<Response<v1::FindCoordinatorResponse>, Status> {
        let address = self.0.lock().address.clone();
        Ok(Response::new(v1::FindCoordinatorResponse {
            broker_id: 0,
            address,
        }))
    }
}

async fn start_with_group(partitions: u32, committed: HashMap<u32, i64>) -> (Fake, FakeGroup) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let fake = Fake(Arc::new(Mutex::new(FakeState {
        address: address.clone(),
        partitions,
        ..FakeState::default()
    })));
    let group = FakeGroup(Arc::new(Mutex::new(GroupState {
        partitions,
        committed,
        address,
        ..GroupState::default()
    })));
    let (f, g) = (fake.clone(), group.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(v1::registry_server::RegistryServer::new(f.clone()))
            .add_service(v1::log_server::LogServer::new(f))
            .add_service(v1::group_server::GroupServer::new(g))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    (fake, group)
}

/// The membership's reaction to each heartbeat error, against a scripted coordinator: a start
/// at the broker-committed offset; ILLEGAL_GENERATION → commit in the old generation, rejoin
/// with the same member id; UNKNOWN_MEMBER_ID → rejoin as a new member; `close` commits in the
/// current generation and leaves. No record is returned twice across the rejoins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_errors_drive_commit_and_rejoin() {
    bounded(TEST_TIMEOUT, async {
        let (fake, group) = start_with_group(1, HashMap::from([(0, 2)])).await;
        fake.0
            .lock()
            .log
            .insert(0, ["a", "b", "c", "d"].map(String::from).to_vec());
        let address = fake.0.lock().address.clone();
        let config = ConsumerConfig::new(&address)
            .group_id("g")
            .session_timeout(Duration::from_millis(600))
            .heartbeat_interval(Duration::from_millis(20))
            .fetch_max_wait(Duration::from_millis(20));
        let c = Consumer::new(config).await.unwrap();
        c.subscribe(["t"]).await.unwrap();
        let mut got = Vec::new();
        while got.len() < 2 {
            for r in c.poll(Duration::from_millis(50)).await.unwrap() {
                got.push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
            }
        }
        assert_eq!(got, ["c", "d"], "started at the group's committed offset 2");
        assert_eq!(
            c.group_membership(),
            Some(GroupMembership {
                member_id: "m1".into(),
                generation: 1
            })
        );

        group.0.lock().next_heartbeat = Some(v1::ErrorCode::IllegalGeneration);
        // The consumer has joined `n` times in all and holds a membership again.
        let rejoined = async |n: usize| {
            wait_until(&format!("join number {n}"), CONDITION_TIMEOUT, async || {
                group.0.lock().joins.len() == n
            })
            .await;
            wait_until("a membership", CONDITION_TIMEOUT, async || {
                c.group_membership().is_some()
            })
            .await;
        };
        rejoined(2).await;
        {
            let s = group.0.lock();
            assert_eq!(s.joins[1].0, "m1", "rejoined with its member id");
            assert_eq!(s.commits[0], ("m1".to_owned(), 1, vec![(0, 4)]));
        }
        group.0.lock().next_heartbeat = Some(v1::ErrorCode::UnknownMemberId);
        rejoined(3).await;
        assert_eq!(
            group.0.lock().joins[2].0,
            "",
            "joined again as a new member"
        );
        assert_eq!(
            c.group_membership(),
            Some(GroupMembership {
                member_id: "m3".into(),
                generation: 3
            })
        );
        // Nothing is read again after the rejoins (positions come from the commits).
        assert!(c.poll(Duration::from_millis(100)).await.unwrap().is_empty());
        c.close(None).await.unwrap();
        let s = group.0.lock();
        assert_eq!(s.leaves, ["m3"]);
        assert_eq!(
            s.commits.last().unwrap(),
            &("m3".to_owned(), 3, vec![(0, 4)])
        );
    })
    .await;
}

thread_local! {
    /// Raised by a test on its own thread only, so the process-wide interrupt check never
    /// fires for other tests' blocking calls.
    static INTERRUPT_THIS_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn interrupt_this_thread() -> bool {
    INTERRUPT_THIS_THREAD.with(|c| c.get())
}

/// A binding's interrupt check (Python's Ctrl-C) ends a blocking poll and a blocking delivery
/// wait with INTERRUPTED soon after it fires, long before their timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupt_check_ends_blocking_waits() {
    bounded(TEST_TIMEOUT, async {
        let fake = start(1, vec![]).await;
        let address = fake.0.lock().address.clone();
        sluiceway_core::client::set_interrupt_check(interrupt_this_thread);
        let c = Consumer::new(ConsumerConfig::new(&address)).await.unwrap();
        let tp = TopicPartition::new("t", 0);
        c.assign(vec![tp.clone()]).unwrap();
        // A position, so the poll only fetches (the fake has no offset lookups).
        c.seek(&tp, Offset(0)).unwrap();
        let p = producer(&fake, &[("linger.ms", "60000")]).await;
        let delivery = p.send(ProducerRecord::new("t", "v")).await.unwrap();
        tokio::task::spawn_blocking(move || {
            // Not raised: the wait runs to its timeout.
            let started = std::time::Instant::now();
            assert!(
                c.poll_blocking(Duration::from_millis(300))
                    .unwrap()
                    .is_empty()
            );
            assert!(started.elapsed() >= Duration::from_millis(300));
            INTERRUPT_THIS_THREAD.with(|f| f.set(true));
            let started = std::time::Instant::now();
            let e = c.poll_blocking(Duration::from_secs(20)).unwrap_err();
            assert!(matches!(e, sluiceway_core::Error::Interrupted), "{e:?}");
            let e = delivery.wait_blocking(Some(Duration::from_secs(20)));
            assert!(
                matches!(e, Some(Err(sluiceway_core::Error::Interrupted))),
                "{e:?}"
            );
            assert!(started.elapsed() < Duration::from_secs(2));
            INTERRUPT_THIS_THREAD.with(|f| f.set(false));
        })
        .await
        .unwrap();
    })
    .await;
}

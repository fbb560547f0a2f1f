//! The gRPC services against a real broker: produce/fetch at volume, long poll, offsets,
//! metadata, metrics.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sluiceway_core::ErrorCode;
use sluiceway_proto::v1;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_over_eight_partitions_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start(tmp.path());
    let mut c = b.client().await;
    create_topic(&mut c, "bulk", 8, &[]).await;
    const TOTAL: usize = 10_000;
    const PER_SET: usize = 125;
    // Message i goes to partition i % 8; each request carries all 8 partitions.
    let mut sent: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    let mut i = 0;
    while i < TOTAL {
        let mut by_partition: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for _ in 0..PER_SET * 8 {
            by_partition
                .entry((i % 8) as u32)
                .or_default()
                .push(format!("m{i}"));
            i += 1;
        }
        let partitions = by_partition
            .iter()
            .map(|(p, vals)| produce_partition("bulk", *p, set_of(vals)))
            .collect();
        let resp = c
            .log
            .produce(v1::ProduceRequest {
                acks: -1,
                timeout_ms: 0,
                session: 0,
                partitions,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.results.len(), 8);
        for r in &resp.results {
            assert_eq!(code(r.error_code), ErrorCode::None, "{}", r.error_message);
            assert_eq!(
                r.base_offset as usize,
                sent.get(&r.partition).map_or(0, Vec::len)
            );
            // A CreateTime topic: no append time comes back (Kafka's -1).
            assert_eq!(r.log_append_time_ms, -1);
        }
        for (p, vals) in by_partition {
            sent.entry(p).or_default().extend(vals);
        }
    }
    let mut received = 0;
    for p in 0..8u32 {
        let got = fetch_all(&mut c, "bulk", p, 0).await;
        let offsets: Vec<i64> = got.iter().map(|(o, _)| *o).collect();
        assert_eq!(
            offsets,
            (0..got.len() as i64).collect::<Vec<_>>(),
            "dense offsets in partition {p}"
        );
        let values: Vec<String> = got
            .into_iter()
            .map(|(_, v)| String::from_utf8(v).unwrap())
            .collect();
        assert_eq!(values, sent[&p], "partition {p} complete and in order");
        received += values.len();
    }
    assert_eq!(received, TOTAL);
    // The same through the command line: everything comes back.
    let o = b.run(
        &[
            "consume",
            "bulk",
            "--from-beginning",
            "--max-messages",
            "10000",
            "--timeout-ms",
            "5000",
        ],
        b"",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), TOTAL);
}

/// Kafka's rule for `log_append_time_ms`: -1 on a CreateTime topic, the broker's append time
/// (which every record of the set then carries) on a LogAppendTime topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_returns_the_append_time_only_for_log_append_time_topics() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start(tmp.path());
    let mut c = b.client().await;
    create_topic(&mut c, "create", 1, &[]).await;
    create_topic(
        &mut c,
        "append",
        1,
        &[("message.timestamp.type", "LogAppendTime")],
    )
    .await;
    let old = 1_000;
    let r = produce(&mut c, "create", 0, set_with_timestamps(&[(old, b"a")])).await;
    assert_eq!(code(r.error_code), ErrorCode::None, "{}", r.error_message);
    assert_eq!(r.log_append_time_ms, -1);

    let before = now_ms();
    let r = produce(&mut c, "append", 0, set_with_timestamps(&[(old, b"a")])).await;
    assert_eq!(code(r.error_code), ErrorCode::None, "{}", r.error_message);
    assert!(r.log_append_time_ms >= before, "{}", r.log_append_time_ms);
    let f = fetch_once(&mut c, "append", 0, 0).await;
    let mut stamps = Vec::new();
    sluiceway_core::format::for_each_record(&f.message_set, &mut Vec::new(), |rec| {
        stamps.push(rec.timestamp.0)
    })
    .unwrap();
    assert_eq!(stamps, [r.log_append_time_ms]);
}

/// The broker's gauge of fetches parked in their long poll.
const WAITING_FETCHES: &str = "sluiceway_waiting_fetches";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_wakes_on_new_data() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start_with(tmp.path(), &["--metrics-listen", "127.0.0.1:0"]);
    let mut c = b.client().await;
    create_topic(&mut c, "lp", 2, &[]).await;
    let mut waiter = c.clone();
    let fetch = tokio::spawn(async move {
        waiter
            .log
            .fetch(v1::FetchRequest {
                replica_id: None,
                // The longest wait the broker allows: the produce below must be what ends it.
                max_wait_ms: sluiceway_core::limits::FETCH_WAIT_MS_MAX,
                min_bytes: 1,
                max_bytes: 0,
                partitions: vec![fetch_partition("lp", 0, 0), fetch_partition("lp", 1, 0)],
            })
            .await
            .unwrap()
            .into_inner()
    });
    // The broker shows the fetch parked in its long poll (it read, found nothing, and waits).
    b.wait_metric(WAITING_FETCHES, "the fetch waits for data", |n| n == 1.0)
        .await;
    assert!(
        !fetch.is_finished(),
        "the fetch must wait while there is no data"
    );
    let r = produce(&mut c, "lp", 1, set_of(&["wake up"])).await;
    assert_eq!(code(r.error_code), ErrorCode::None);
    let resp = fetch.await.unwrap();
    // It returned because data arrived, with the data: it was waiting before the produce and
    // max_wait (the broker's longest) cannot have passed with the data unseen.
    assert_eq!(b.metric(WAITING_FETCHES).await, Some(0.0));
    assert!(resp.results[0].message_set.is_empty());
    assert_eq!(
        records(&resp.results[1].message_set, 0),
        vec![(0, b"wake up".to_vec())]
    );
    assert_eq!(resp.results[1].high_watermark, 1);

    // min_bytes not reached: the fetch waits out max_wait, then answers with what there is.
    let started = Instant::now();
    let resp = c
        .log
        .fetch(v1::FetchRequest {
            replica_id: None,
            max_wait_ms: 300,
            min_bytes: 1 << 20,
            max_bytes: 0,
            partitions: vec![fetch_partition("lp", 1, 0)],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(records(&resp.results[0].message_set, 0).len(), 1);

    // With no data the fetch answers empty once max_wait has passed.
    let started = Instant::now();
    let resp = c
        .log
        .fetch(v1::FetchRequest {
            replica_id: None,
            max_wait_ms: 200,
            min_bytes: 1,
            max_bytes: 0,
            partitions: vec![fetch_partition("lp", 0, 0)],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(resp.results[0].message_set.is_empty());
    assert_eq!(code(resp.results[0].error_code), ErrorCode::None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_earliest_latest_and_by_timestamp() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start(tmp.path());
    let mut c = b.client().await;
    create_topic(&mut c, "ts", 1, &[]).await;
    let base = 1_700_000_000_000i64;
    for chunk in [
        [(base, &b"a"[..]), (base + 1000, b"b")],
        [(base + 2000, b"c"), (base + 3000, b"d")],
    ] {
        let r = produce(&mut c, "ts", 0, set_with_timestamps(&chunk)).await;
        assert_eq!(code(r.error_code), ErrorCode::None, "{}", r.error_message);
    }
    let lookup = |spec: v1::OffsetSpec, ts: i64| v1::ListOffsetsPartition {
        topic: "ts".into(),
        partition: 0,
        spec: spec as i32,
        timestamp_ms: ts,
    };
    let resp = c
        .log
        .list_offsets(v1::ListOffsetsRequest {
            partitions: vec![
                lookup(v1::OffsetSpec::Earliest, 0),
                lookup(v1::OffsetSpec::Latest, 0),
                lookup(v1::OffsetSpec::Timestamp, base - 5),
                lookup(v1::OffsetSpec::Timestamp, base + 1500),
                lookup(v1::OffsetSpec::Timestamp, base + 3000),
                lookup(v1::OffsetSpec::Timestamp, base + 3001),
                lookup(v1::OffsetSpec::Timestamp, -7),
                lookup(v1::OffsetSpec::Unspecified, 0),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    let offsets: Vec<i64> = resp.results.iter().map(|r| r.offset).collect();
    assert_eq!(&offsets[..6], &[0, 4, 0, 2, 3, -1]);
    assert_eq!(
        code(resp.results[6].error_code),
        ErrorCode::InvalidTimestamp
    );
    assert_eq!(code(resp.results[7].error_code), ErrorCode::InvalidRequest);
    assert_eq!(resp.results[1].high_watermark, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_brokers_and_topic_lifecycle() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start_with(
        tmp.path(),
        &["--broker-id", "3", "--metrics-listen", "127.0.0.1:0"],
    );
    let mut c = b.client().await;
    create_topic(&mut c, "m", 2, &[("retention.ms", "-1")]).await;
    let brokers = c
        .registry
        .list_brokers(v1::ListBrokersRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(brokers.brokers.len(), 1);
    assert_eq!(brokers.brokers[0].broker_id, 3);
    assert_eq!(brokers.brokers[0].address, b.addr);
    assert_eq!(brokers.controller_id, 3);
    let meta = c
        .registry
        .get_metadata(v1::GetMetadataRequest {
            topics: vec!["m".into(), "absent".into(), "bad name".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.topics.len(), 3);
    let m = &meta.topics[0];
    assert_eq!(m.partitions.len(), 2);
    assert_eq!(
        (
            m.partitions[1].leader_id,
            m.partitions[1].replicas.clone(),
            m.partitions[1].isr.clone()
        ),
        (3, vec![3], vec![3])
    );
    assert_eq!(m.partitions[1].leader_epoch, 0);
    assert_eq!(
        code(meta.topics[1].error_code),
        ErrorCode::UnknownTopicOrPartition
    );
    assert_eq!(code(meta.topics[2].error_code), ErrorCode::InvalidTopic);

    let d = c
        .admin
        .describe_topic(v1::DescribeTopicRequest { name: "m".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        d.configs.get("retention.ms").map(String::as_str),
        Some("-1")
    );
    assert_eq!(
        d.effective_configs.get("flush.policy").map(String::as_str),
        Some("always")
    );

    // Delete wakes and fails waiting fetches; a re-created topic starts empty.
    assert_eq!(
        code(produce(&mut c, "m", 0, set_of(&["x"])).await.error_code),
        ErrorCode::None
    );
    let mut waiter = c.clone();
    let fetch = tokio::spawn(async move {
        waiter
            .log
            .fetch(v1::FetchRequest {
                replica_id: None,
                max_wait_ms: 10_000,
                min_bytes: 1,
                max_bytes: 0,
                partitions: vec![fetch_partition("m", 1, 0)],
            })
            .await
            .unwrap()
            .into_inner()
    });
    b.wait_metric(WAITING_FETCHES, "the fetch waits for data", |n| n == 1.0)
        .await;
    c.admin
        .delete_topic(v1::DeleteTopicRequest { name: "m".into() })
        .await
        .unwrap();
    let resp = fetch.await.unwrap();
    assert_eq!(
        code(resp.results[0].error_code),
        ErrorCode::UnknownTopicOrPartition
    );
    assert_eq!(
        code(produce(&mut c, "m", 0, set_of(&["x"])).await.error_code),
        ErrorCode::UnknownTopicOrPartition
    );
    create_topic(&mut c, "m", 1, &[]).await;
    let r = produce(&mut c, "m", 0, set_of(&["fresh"])).await;
    assert_eq!((code(r.error_code), r.base_offset), (ErrorCode::None, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_zero_is_answered_and_appended() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start(tmp.path());
    let mut c = b.client().await;
    create_topic(&mut c, "fire", 1, &[]).await;
    let resp = c
        .log
        .produce(v1::ProduceRequest {
            acks: 0,
            timeout_ms: 0,
            session: 0,
            partitions: vec![produce_partition("fire", 0, set_of(&["a", "b"]))],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.results[0].base_offset, -1);
    // The append completes in the background: a long poll sees it.
    let resp = c
        .log
        .fetch(v1::FetchRequest {
            replica_id: None,
            max_wait_ms: 5_000,
            min_bytes: 1,
            max_bytes: 0,
            partitions: vec![fetch_partition("fire", 0, 0)],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(records(&resp.results[0].message_set, 0).len(), 2);
    let o = b.run(&["produce", "fire", "--acks", "0"], b"c\n");
    assert!(o.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_reports_partitions_and_requests() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start_with(tmp.path(), &["--metrics-listen", "127.0.0.1:0"]);
    let mut c = b.client().await;
    create_topic(&mut c, "mt", 1, &[]).await;
    produce(&mut c, "mt", 0, set_of(&["a", "b", "c"])).await;
    fetch_once(&mut c, "mt", 0, 0).await;
    let body = b.metrics().await;
    assert!(body.starts_with("HTTP/1.1 200 OK\r\n"), "{body}");
    for want in [
        "sluiceway_partition_log_end_offset{topic=\"mt\",partition=\"0\"} 3",
        "sluiceway_partition_high_watermark{topic=\"mt\",partition=\"0\"} 3",
        "sluiceway_partition_size_bytes{topic=\"mt\",partition=\"0\"} ",
        "sluiceway_requests_total{request=\"produce\"} 1",
        "sluiceway_requests_total{request=\"fetch\"} 1",
        "sluiceway_request_duration_seconds_bucket{request=\"produce\",le=\"+Inf\"} 1",
        "sluiceway_request_duration_seconds_count{request=\"fetch\"} 1",
    ] {
        assert!(body.contains(want), "missing {want:?} in\n{body}");
    }
    let addr = b.metrics_addr.clone().expect("metrics address printed");
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /nope HTTP/1.1\r\n\r\n").await.unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    assert!(body.starts_with("HTTP/1.1 404"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_task_enforces_retention() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start_with(tmp.path(), &["--retention-check-interval-ms", "100"]);
    let mut c = b.client().await;
    create_topic(
        &mut c,
        "r",
        1,
        &[("segment.bytes", "1024"), ("retention.bytes", "2048")],
    )
    .await;
    for i in 0..100 {
        let r = produce(&mut c, "r", 0, set_of(&[format!("{i:0>100}")])).await;
        assert_eq!(code(r.error_code), ErrorCode::None, "{}", r.error_message);
    }
    let earliest = v1::ListOffsetsPartition {
        topic: "r".into(),
        partition: 0,
        spec: v1::OffsetSpec::Earliest as i32,
        timestamp_ms: 0,
    };
    wait_until(
        "retention moved the log start and data is readable from it",
        CONDITION_TIMEOUT,
        async || {
            let resp = c
                .log
                .list_offsets(v1::ListOffsetsRequest {
                    partitions: vec![earliest.clone()],
                })
                .await
                .unwrap()
                .into_inner();
            let start = resp.results[0].offset;
            if start == 0 {
                return false;
            }
            // Fetching below the new log start is out of range; from it, data is there —
            // unless the next pass moved the start on meanwhile (regression: the test raced
            // the 100 ms retention task), then look the start up again.
            let r = fetch_once(&mut c, "r", 0, 0).await;
            assert_eq!(code(r.error_code), ErrorCode::OffsetOutOfRange);
            let r = fetch_once(&mut c, "r", 0, start).await;
            if code(r.error_code) == ErrorCode::OffsetOutOfRange {
                return false;
            }
            assert_eq!(code(r.error_code), ErrorCode::None, "{}", r.error_message);
            assert!(!r.message_set.is_empty(), "data from the log start {start}");
            true
        },
    )
    .await;
}

/// Magic 2 (Kafka RecordBatch v2) over the wire: a batch with headers and producer fields is
/// produced beside magic 1 sets, fetched back with its headers, stamped with the leader epoch,
/// and found by timestamp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn magic_2_batches_are_produced_and_fetched_beside_magic_1() {
    use sluiceway_core::TimestampMs;
    use sluiceway_core::format::{BatchHeader, Compression, Entries, Header, RecordBatchBuilder};
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start(tmp.path());
    let mut c = b.client().await;
    create_topic(&mut c, "v2", 1, &[]).await;
    let base = 1_700_000_000_000i64;
    let batch = |first: i64, codec: Compression| {
        let mut rb = RecordBatchBuilder::new(codec);
        // Producer 77's sequences follow each other (a repeat would be answered as a duplicate).
        rb.producer_state(77, 2, 10 + first as i32);
        for i in first..first + 3 {
            let v = format!("v{i}");
            rb.push(
                TimestampMs(base + i * 1000),
                Some(b"key"),
                Some(v.as_bytes()),
                [
                    Header {
                        key: "trace",
                        value: Some(b"abc"),
                    },
                    Header {
                        key: "none",
                        value: None,
                    },
                ],
            );
        }
        rb.finish().unwrap()
    };
    let sets = [
        set_with_timestamps(&[(base - 2000, b"m0"), (base - 1000, b"m1")]),
        batch(0, Compression::None),
        batch(3, Compression::Lz4),
        set_with_timestamps(&[(base + 6000, b"m2")]),
    ];
    let mut bases = Vec::new();
    for s in sets {
        let r = produce(&mut c, "v2", 0, s).await;
        assert_eq!(code(r.error_code), ErrorCode::None, "{}", r.error_message);
        bases.push(r.base_offset);
    }
    assert_eq!(bases, [0, 2, 5, 8]);
    let values: Vec<Vec<u8>> = fetch_all(&mut c, "v2", 0, 0)
        .await
        .into_iter()
        .map(|r| r.1)
        .collect();
    let want: Vec<Vec<u8>> = ["m0", "m1", "v0", "v1", "v2", "v3", "v4", "v5", "m2"]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    assert_eq!(values, want);
    // Fetch from the middle of a v2 batch: the whole batch comes, the consumer skips below.
    let f = fetch_once(&mut c, "v2", 0, 3).await;
    assert_eq!(code(f.error_code), ErrorCode::None, "{}", f.error_message);
    let epoch = c.topic_metadata("v2").await.unwrap().partitions[0].leader_epoch;
    let mut headers = Vec::new();
    sluiceway_core::format::for_each_record(&f.message_set, &mut Vec::new(), |r| {
        if (3..8).contains(&r.offset.0) {
            headers.push(
                r.headers
                    .iter()
                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                    .collect::<Vec<_>>(),
            );
        }
    })
    .unwrap();
    assert_eq!(headers.len(), 5);
    for h in headers {
        assert_eq!(
            h,
            [
                ("trace".to_owned(), Some(b"abc".to_vec())),
                ("none".to_owned(), None)
            ]
        );
    }
    let first = Entries::new(&f.message_set).next().unwrap().unwrap();
    let h = BatchHeader::parse(first.bytes).unwrap();
    assert_eq!(
        (
            h.base_offset.0,
            h.partition_leader_epoch,
            h.producer_id,
            h.producer_epoch,
            h.base_sequence
        ),
        (2, epoch, 77, 2, 10)
    );
    // Seek by time lands inside a v2 batch.
    let resp = c
        .log
        .list_offsets(v1::ListOffsetsRequest {
            partitions: vec![v1::ListOffsetsPartition {
                topic: "v2".into(),
                partition: 0,
                spec: v1::OffsetSpec::Timestamp as i32,
                timestamp_ms: base + 1500,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.results[0].offset, 4);
    // A damaged v2 batch is refused with CORRUPT_MESSAGE and appends nothing.
    let mut bad = batch(0, Compression::None);
    let n = bad.len();
    bad[n - 1] ^= 1;
    let r = produce(&mut c, "v2", 0, bad).await;
    assert_eq!(
        code(r.error_code),
        ErrorCode::CorruptMessage,
        "{}",
        r.error_message
    );
    assert!(r.error_message.contains("CRC"), "{}", r.error_message);
    assert_eq!(fetch_once(&mut c, "v2", 0, 0).await.high_watermark, 9);
    // The client core's consumer returns the headers with each record.
    use sluiceway_core::client::{Consumer, RecordHeader, TopicPartition};
    let consumer = Consumer::new(crate::client::consumer_config(&b))
        .await
        .unwrap();
    consumer.assign(vec![TopicPartition::new("v2", 0)]).unwrap();
    let got = crate::client::poll_n(&consumer, 9).await;
    let trace = vec![
        RecordHeader {
            key: "trace".into(),
            value: Some(b"abc"[..].into()),
        },
        RecordHeader {
            key: "none".into(),
            value: None,
        },
    ];
    for r in &got {
        let v2 = (2..8).contains(&r.offset.0);
        assert_eq!(
            r.headers,
            if v2 { trace.clone() } else { Vec::new() },
            "offset {}",
            r.offset
        );
    }
    assert_eq!(got[3].timestamp, base + 1000);
    consumer.close(None).await.unwrap();
}

/// A producer with `message.format.version=2` writes Kafka RecordBatch v2 batches (every codec
/// here: none and lz4); the log holds only magic 2 entries and the consumer reads every value
/// in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_message_format_version_2_writes_record_batches() {
    use sluiceway_core::client::{Consumer, TopicPartition};
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start(tmp.path());
    let mut c = b.client().await;
    for codec in ["none", "lz4"] {
        let topic = format!("fmt2-{codec}");
        create_topic(&mut c, &topic, 1, &[]).await;
        let p = crate::client::producer(
            &b,
            &[("message.format.version", "2"), ("compression.type", codec)],
        )
        .await;
        let metas = crate::client::send_values(&p, &topic, 0..500).await;
        assert_eq!(
            metas.last().unwrap().offset,
            Some(sluiceway_core::Offset(499))
        );
        p.close(None).await.unwrap();
        let mut next = 0;
        while next < 500 {
            let f = fetch_once(&mut c, &topic, 0, next).await;
            for e in sluiceway_core::format::Entries::new(&f.message_set) {
                let e = e.unwrap();
                assert_eq!(e.magic(), 2, "{codec}: entry at offset {}", e.offset());
                next = e.last_offset().0 as i64 + 1;
            }
        }
        let consumer = Consumer::new(crate::client::consumer_config(&b))
            .await
            .unwrap();
        consumer
            .assign(vec![TopicPartition::new(&topic, 0)])
            .unwrap();
        let got = crate::client::poll_n(&consumer, 500).await;
        let values: Vec<String> = got.iter().map(crate::client::value).collect();
        assert_eq!(
            values,
            (0..500).map(|i| format!("v{i}")).collect::<Vec<_>>()
        );
        consumer.close(None).await.unwrap();
    }
    // Anything but 1 or 2 is refused by name.
    let err = sluiceway_core::client::ProducerConfig::from_map([
        ("bootstrap.servers", b.addr.as_str()),
        ("message.format.version", "0.10.0"),
    ])
    .unwrap_err();
    assert!(err.to_string().contains("message.format.version"), "{err}");
}

/// A producer with several requests in flight to a partition names a session and numbers
/// them: the leader appends them in that order whatever order they arrive in, and refuses
/// (retriably) one sent behind a request that failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_requests_to_a_partition_are_appended_in_the_order_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start_with(tmp.path(), &["--metrics-listen", "127.0.0.1:0"]);
    let mut c = b.client().await;
    create_topic(&mut c, "ordered", 1, &[]).await;
    // Request 1 arrives first; it waits for request 0, sent before it.
    let log = c.log.clone();
    let second = tokio::spawn(ordered(log, 1, 0, set_of(&["second"])));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "request 1 was answered before request 0 came"
    );
    // A request without a session is not held up meanwhile.
    assert_eq!(
        produce(&mut c, "ordered", 0, set_of(&["unordered"]))
            .await
            .base_offset,
        0
    );
    let first = ordered(c.log.clone(), 0, 0, set_of(&["first"])).await;
    assert_eq!(
        (code(first.error_code), first.base_offset),
        (ErrorCode::None, 1)
    );
    let second = second.await.unwrap();
    assert_eq!(
        (code(second.error_code), second.base_offset),
        (ErrorCode::None, 2)
    );
    // Request 2 fails (an empty set); request 3, sent while 2 was unanswered, is refused (out of
    // order: the producer sends it again) rather than appended ahead of 2's resend; request 4,
    // sent after, goes.
    let failed = ordered(c.log.clone(), 2, 2, Vec::new()).await;
    assert_eq!(code(failed.error_code), ErrorCode::InvalidRequest);
    let refused = ordered(c.log.clone(), 3, 2, set_of(&["behind the failed one"])).await;
    assert_eq!(
        code(refused.error_code),
        ErrorCode::OutOfOrderSequenceNumber
    );
    assert!(
        refused.error_message.contains("earlier request"),
        "{}",
        refused.error_message
    );
    let resent = ordered(c.log.clone(), 4, 4, set_of(&["resent"])).await;
    assert_eq!(
        (code(resent.error_code), resent.base_offset),
        (ErrorCode::None, 3)
    );
    // A request the producer says waits for a later one is malformed.
    let bad = ordered(c.log.clone(), 5, 6, set_of(&["x"])).await;
    assert_eq!(code(bad.error_code), ErrorCode::InvalidRequest);
    assert!(
        bad.error_message.contains("order_since"),
        "{}",
        bad.error_message
    );
    // A request whose predecessor never comes waits only until the request's timeout.
    let started = Instant::now();
    let lost = ordered(c.log.clone(), 9, 8, set_of(&["y"])).await;
    assert_eq!(code(lost.error_code), ErrorCode::OutOfOrderSequenceNumber);
    assert!(
        lost.error_message.contains("timeout"),
        "{}",
        lost.error_message
    );
    assert!(started.elapsed() >= Duration::from_millis(1_900));
    // A request refused as a whole (a bad acks) counts as failed for the ones behind it.
    let bad_acks = v1::ProduceRequest {
        acks: 7,
        timeout_ms: 2_000,
        session: 42,
        partitions: vec![v1::ProducePartition {
            order_sequence: 10,
            order_since: 10,
            ..produce_partition("ordered", 0, set_of(&["z"]))
        }],
    };
    let e = c.log.clone().produce(bad_acks).await.unwrap_err();
    assert_eq!(status_code(&e), ErrorCode::InvalidRequiredAcks);
    let behind = ordered(c.log.clone(), 11, 10, set_of(&["z"])).await;
    assert_eq!(code(behind.error_code), ErrorCode::OutOfOrderSequenceNumber);
    assert!(
        behind.error_message.contains("earlier request"),
        "{}",
        behind.error_message
    );
    let values: Vec<String> = fetch_all(&mut c, "ordered", 0, 0)
        .await
        .into_iter()
        .map(|(_, v)| String::from_utf8(v).unwrap())
        .collect();
    assert_eq!(values, ["unordered", "first", "second", "resent"]);
    // Operators see it: request 1 and the lost one waited; the two behind failures and the
    // lost one were refused.
    let body = b.metrics().await;
    for want in [
        "sluiceway_partition_produce_order_waits_total{topic=\"ordered\",partition=\"0\"} 2",
        "sluiceway_partition_produce_order_refusals_total{topic=\"ordered\",partition=\"0\"} 3",
    ] {
        assert!(body.contains(want), "missing {want:?} in\n{body}");
    }
}

/// Request `sequence` of session 42 to `ordered`-0 (`since`: the lowest still unanswered).
async fn ordered(
    mut log: v1::log_client::LogClient<tonic::transport::Channel>,
    sequence: u64,
    since: u64,
    set: Vec<u8>,
) -> v1::ProducePartitionResult {
    let request = v1::ProduceRequest {
        acks: 1,
        timeout_ms: 2_000,
        session: 42,
        partitions: vec![v1::ProducePartition {
            order_sequence: sequence,
            order_since: since,
            ..produce_partition("ordered", 0, set)
        }],
    };
    let answer = log.produce(request).await.unwrap().into_inner();
    answer.results.into_iter().next().unwrap()
}

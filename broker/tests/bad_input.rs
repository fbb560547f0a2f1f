//! Bad input: each answered with the right code and a message, while the broker keeps serving.

use sluiceway_core::ErrorCode;
use sluiceway_core::limits::{FETCH_WAIT_MS_MAX, MESSAGE_SET_BYTES_MAX, REQUEST_BYTES_MAX};
use sluiceway_proto::v1;

use crate::support::*;

async fn produce_err(
    c: &mut crate::support::Client,
    p: v1::ProducePartition,
) -> (ErrorCode, String) {
    let resp = c
        .log
        .produce(v1::ProduceRequest {
            acks: 1,
            timeout_ms: 0,
            session: 0,
            partitions: vec![p],
        })
        .await
        .unwrap()
        .into_inner();
    let r = &resp.results[0];
    (code(r.error_code), r.error_message.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_produce_requests_get_their_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start(tmp.path());
    let mut c = b.client().await;
    create_topic(&mut c, "t", 2, &[("max.message.bytes", "1000")]).await;

    // Corrupt CRC: flip one byte of the value.
    let mut set = set_of(&["hello"]);
    let last = set.len() - 1;
    set[last] ^= 0xff;
    let (code_, msg) = produce_err(&mut c, produce_partition("t", 0, set)).await;
    assert_eq!(code_, ErrorCode::CorruptMessage, "{msg}");
    assert!(msg.contains("CRC"), "{msg}");

    // Truncated set.
    let mut set = set_of(&["hello", "world"]);
    set.truncate(set.len() - 3);
    let (code_, msg) = produce_err(&mut c, produce_partition("t", 0, set)).await;
    assert_eq!(code_, ErrorCode::CorruptMessage, "{msg}");

    // Garbage and empty sets.
    let (code_, _) = produce_err(&mut c, produce_partition("t", 0, vec![0xAB; 40])).await;
    assert_eq!(code_, ErrorCode::CorruptMessage);
    let (code_, _) = produce_err(&mut c, produce_partition("t", 0, Vec::new())).await;
    assert_eq!(code_, ErrorCode::InvalidRequest);

    // A message above the topic's max.message.bytes.
    let (code_, msg) = produce_err(
        &mut c,
        produce_partition("t", 0, set_of(&[vec![b'x'; 2000]])),
    )
    .await;
    assert_eq!(code_, ErrorCode::MessageTooLarge, "{msg}");

    // A partition's set above the per-partition limit.
    let (code_, msg) = produce_err(
        &mut c,
        produce_partition("t", 0, vec![0; MESSAGE_SET_BYTES_MAX as usize + 1]),
    )
    .await;
    assert_eq!(code_, ErrorCode::RecordListTooLarge, "{msg}");

    // A request above the decoding limit: refused by the gRPC layer, mapped by the client.
    let huge = vec![
        produce_partition("t", 0, vec![0; REQUEST_BYTES_MAX as usize / 2 + 1]),
        produce_partition("t", 1, vec![0; REQUEST_BYTES_MAX as usize / 2 + 1]),
    ];
    let e = c
        .log
        .produce(v1::ProduceRequest {
            acks: 1,
            timeout_ms: 0,
            session: 0,
            partitions: huge,
        })
        .await
        .unwrap_err();
    assert_eq!(
        sluiceway_broker::errors::error_from_status(&e).code(),
        ErrorCode::RecordListTooLarge,
        "{e:?}"
    );

    // Unknown topic, unknown partition; the good partition in the same request still lands.
    let resp = c
        .log
        .produce(v1::ProduceRequest {
            acks: 1,
            timeout_ms: 0,
            session: 0,
            partitions: vec![
                produce_partition("nope", 0, set_of(&["a"])),
                produce_partition("t", 7, set_of(&["a"])),
                produce_partition("t", 1, set_of(&["good"])),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    let codes: Vec<ErrorCode> = resp.results.iter().map(|r| code(r.error_code)).collect();
    assert_eq!(
        codes,
        [
            ErrorCode::UnknownTopicOrPartition,
            ErrorCode::UnknownTopicOrPartition,
            ErrorCode::None
        ]
    );
    assert!(
        resp.results[1].error_message.contains("t-7"),
        "{}",
        resp.results[1].error_message
    );

    // Request-level: bad acks, duplicate partitions.
    let e = c
        .log
        .produce(v1::ProduceRequest {
            acks: 2,
            timeout_ms: 0,
            session: 0,
            partitions: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(status_code(&e), ErrorCode::InvalidRequiredAcks);
    let dup = vec![
        produce_partition("t", 1, set_of(&["a"])),
        produce_partition("t", 1, set_of(&["b"])),
    ];
    let e = c
        .log
        .produce(v1::ProduceRequest {
            acks: 1,
            timeout_ms: 0,
            session: 0,
            partitions: dup,
        })
        .await
        .unwrap_err();
    assert_eq!(status_code(&e), ErrorCode::InvalidRequest);
    assert_eq!(e.code(), tonic::Code::InvalidArgument);

    // acks=all with fewer in-sync replicas than min.insync.replicas; acks=1 is still accepted.
    create_topic(&mut c, "strict", 1, &[("min.insync.replicas", "2")]).await;
    let all = |acks| v1::ProduceRequest {
        acks,
        timeout_ms: 0,
        session: 0,
        partitions: vec![produce_partition("strict", 0, set_of(&["a"]))],
    };
    let resp = c.log.produce(all(-1)).await.unwrap().into_inner();
    assert_eq!(
        code(resp.results[0].error_code),
        ErrorCode::NotEnoughReplicas
    );
    assert!(
        resp.results[0]
            .error_message
            .contains("min.insync.replicas")
    );
    let resp = c.log.produce(all(1)).await.unwrap().into_inner();
    assert_eq!(code(resp.results[0].error_code), ErrorCode::None);

    // Stale leader epoch is fenced.
    let mut p = produce_partition("t", 1, set_of(&["a"]));
    p.leader_epoch = Some(5);
    assert_eq!(
        produce_err(&mut c, p).await.0,
        ErrorCode::UnknownLeaderEpoch
    );

    // Nothing bad was appended: partition 0 is empty, partition 1 holds only "good".
    assert!(fetch_all(&mut c, "t", 0, 0).await.is_empty());
    assert_eq!(
        fetch_all(&mut c, "t", 1, 0).await,
        vec![(0, b"good".to_vec())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_fetches_and_admin_requests_get_their_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start(tmp.path());
    let mut c = b.client().await;
    create_topic(&mut c, "t", 1, &[]).await;
    produce(&mut c, "t", 0, set_of(&["a", "b"])).await;

    for (offset, want) in [
        (3, ErrorCode::OffsetOutOfRange),
        (-1, ErrorCode::OffsetOutOfRange),
        (i64::MAX, ErrorCode::OffsetOutOfRange),
        (i64::MIN, ErrorCode::OffsetOutOfRange),
        (2, ErrorCode::None),
    ] {
        let r = fetch_once(&mut c, "t", 0, offset).await;
        assert_eq!(
            code(r.error_code),
            want,
            "offset {offset}: {}",
            r.error_message
        );
        if want != ErrorCode::None {
            assert!(
                r.error_message.contains("out of range"),
                "{}",
                r.error_message
            );
        }
    }
    let r = fetch_once(&mut c, "absent", 0, 0).await;
    assert_eq!(code(r.error_code), ErrorCode::UnknownTopicOrPartition);

    // max_wait beyond its limit.
    let e = c
        .log
        .fetch(v1::FetchRequest {
            replica_id: None,
            max_wait_ms: FETCH_WAIT_MS_MAX + 1,
            min_bytes: 1,
            max_bytes: 0,
            partitions: vec![fetch_partition("t", 0, 0)],
        })
        .await
        .unwrap_err();
    assert_eq!(status_code(&e), ErrorCode::InvalidRequest);
    assert!(e.message().contains("max_wait_ms"), "{}", e.message());

    // Admin.
    let bad_name = |name: &str| v1::CreateTopicRequest {
        name: name.into(),
        partitions: 1,
        replication_factor: 1,
        configs: Default::default(),
    };
    for name in ["", ".", "..", "a/b", "white space", &"x".repeat(250)] {
        let e = c.admin.create_topic(bad_name(name)).await.unwrap_err();
        assert_eq!(status_code(&e), ErrorCode::InvalidTopic, "{name:?}");
    }
    let e = c.admin.create_topic(bad_name("t")).await.unwrap_err();
    assert_eq!(status_code(&e), ErrorCode::TopicAlreadyExists);
    assert_eq!(e.code(), tonic::Code::AlreadyExists);
    let mut req = bad_name("cfg");
    req.configs.insert("retention.bytes".into(), "lots".into());
    let e = c.admin.create_topic(req).await.unwrap_err();
    assert_eq!(status_code(&e), ErrorCode::InvalidConfig);
    assert!(e.message().contains("retention.bytes"), "{}", e.message());
    let e = c
        .admin
        .describe_topic(v1::DescribeTopicRequest {
            name: "absent".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status_code(&e), ErrorCode::UnknownTopicOrPartition);
    assert_eq!(e.code(), tonic::Code::NotFound);

    // Still serving.
    assert_eq!(fetch_all(&mut c, "t", 0, 0).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connections_opened_and_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start_with(tmp.path(), &["--metrics-listen", "127.0.0.1:0"]);
    let mut c = b.client().await;
    create_topic(&mut c, "t", 1, &[]).await;
    let addr: std::net::SocketAddr = b.addr.parse().unwrap();
    // 1,000 concurrent raw connections: half say nothing, half send garbage instead of HTTP/2.
    let mut conns = Vec::with_capacity(1000);
    for i in 0..1000 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        if i % 2 == 1 {
            use tokio::io::AsyncWriteExt;
            let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\nnot http2 at all").await;
        }
        conns.push(s);
    }
    // While they are all open, a well-behaved client is still served.
    let r = produce(&mut c, "t", 0, set_of(&["during"])).await;
    assert_eq!(code(r.error_code), ErrorCode::None);
    drop(conns);
    // The broker has closed them all (only `c`'s connection is left open).
    b.wait_metric(
        "sluiceway_connections_open",
        "the dropped connections are closed",
        |n| n <= 1.0,
    )
    .await;
    // After they are gone: a new client connects and is served.
    let mut fresh = b.client().await;
    let r = produce(&mut fresh, "t", 0, set_of(&["after"])).await;
    assert_eq!((code(r.error_code), r.base_offset), (ErrorCode::None, 1));
    assert_eq!(fetch_all(&mut fresh, "t", 0, 0).await.len(), 2);
}

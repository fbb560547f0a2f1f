//! The client core (`sluiceway_core::client`) against the real broker binary: the conformance
//! scenarios (C1–C3, C5–C7, C10–C13 of `docs/CONFORMANCE.md`), fail-over between bootstrap
//! addresses, metadata refresh across a broker restart, and `check.crcs` against a byte changed
//! on the broker's disk.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use sluiceway_core::client::{
    Acks, Admin, AdminConfig, BatchDelivery, Compression, Consumer, ConsumerConfig, ConsumerRecord,
    NewTopic, OffsetReset, OffsetSpec, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
    SendSettings, TopicPartition,
};
use sluiceway_core::partitioner::partition_for_key;
use sluiceway_core::{Error, ErrorCode, Offset};

/// Every test is bounded ([`bounded`], [`TEST_TIMEOUT`]): a hang is a failure, not a stuck CI job.
use crate::support::{CONDITION_TIMEOUT, TEST_TIMEOUT, TestBroker, bounded, now_ms, wait_until};

pub(crate) async fn admin(b: &TestBroker) -> Admin {
    Admin::new(AdminConfig::new(&b.addr)).await.expect("admin")
}

pub(crate) async fn create(b: &TestBroker, topic: &str, partitions: u32) {
    admin(b)
        .await
        .create_topic(NewTopic::new(topic, partitions))
        .await
        .expect("create topic");
}

pub(crate) async fn producer(b: &TestBroker, extra: &[(&str, &str)]) -> Producer {
    let mut map: Vec<(&str, &str)> =
        vec![("bootstrap.servers", b.addr.as_str()), ("linger.ms", "2")];
    map.extend_from_slice(extra);
    Producer::new(ProducerConfig::from_map(map).expect("config"))
        .await
        .expect("producer")
}

pub(crate) fn consumer_config(b: &TestBroker) -> ConsumerConfig {
    ConsumerConfig::new(&b.addr)
        .auto_offset_reset(OffsetReset::Earliest)
        .fetch_max_wait(Duration::from_millis(100))
}

pub(crate) async fn deliver_all(batch: BatchDelivery) -> Vec<RecordMetadata> {
    batch
        .wait()
        .await
        .into_iter()
        .map(|r| r.expect("delivered"))
        .collect()
}

/// Sends `v{i}` for every `i` in `range` to `topic` (keyless) and waits for every delivery.
pub(crate) async fn send_values(
    p: &Producer,
    topic: &str,
    range: std::ops::Range<u32>,
) -> Vec<RecordMetadata> {
    deliver_all(
        p.send_batch(
            range
                .map(|i| ProducerRecord::new(topic, format!("v{i}")))
                .collect(),
        )
        .await
        .unwrap(),
    )
    .await
}

/// Polls until `n` records arrived (or the test times out).
pub(crate) async fn poll_n(c: &Consumer, n: usize) -> Vec<ConsumerRecord> {
    let mut out = Vec::new();
    while out.len() < n {
        out.extend(c.poll(Duration::from_secs(5)).await.expect("poll"));
    }
    out
}

pub(crate) fn value(r: &ConsumerRecord) -> String {
    String::from_utf8(r.value.as_deref().unwrap_or_default().to_vec()).unwrap()
}

pub(crate) fn tps(topic: &str, n: u32) -> Vec<TopicPartition> {
    (0..n).map(|p| TopicPartition::new(topic, p)).collect()
}

/// C1: 1,000 keyed values to 3 partitions, all read back once, in order within each partition;
/// each key's partition is Kafka's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c1_round_trip_keeps_order_per_partition() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path());
    bounded(TEST_TIMEOUT, async {
        create(&b, "t", 3).await;
        let p = producer(&b, &[]).await;
        let records = (0..1000)
            .map(|i| ProducerRecord::new("t", format!("v{i}")).key(format!("k{}", i % 7)))
            .collect();
        let metas = deliver_all(p.send_batch(records).await.unwrap()).await;
        for (i, m) in metas.iter().enumerate() {
            assert_eq!(
                m.partition,
                partition_for_key(format!("k{}", i % 7).as_bytes(), 3),
                "record {i}"
            );
            assert!(m.offset.is_some());
        }
        p.close(None).await.unwrap();

        let c = Consumer::new(consumer_config(&b)).await.unwrap();
        c.assign(tps("t", 3)).unwrap();
        let got = poll_n(&c, 1000).await;
        assert_eq!(got.len(), 1000, "nothing extra");
        let mut seen = vec![false; 1000];
        let mut last_offset: HashMap<u32, u64> = HashMap::new();
        let mut last_value_per_key: HashMap<String, usize> = HashMap::new();
        for r in &got {
            let i: usize = value(r)[1..].parse().unwrap();
            assert!(!seen[i], "v{i} read twice");
            seen[i] = true;
            if let Some(prev) = last_offset.insert(r.partition, r.offset.0) {
                assert_eq!(
                    r.offset.0,
                    prev + 1,
                    "offsets dense and in order in partition {}",
                    r.partition
                );
            }
            let key = String::from_utf8(r.key.as_deref().unwrap().to_vec()).unwrap();
            if let Some(prev) = last_value_per_key.insert(key.clone(), i) {
                assert!(i > prev, "key {key}: v{i} after v{prev}");
            }
            assert_eq!(metas[i].offset.unwrap(), r.offset);
            assert_eq!(metas[i].partition, r.partition);
        }
        assert!(seen.iter().all(|s| *s));
        assert!(c.poll(Duration::from_millis(200)).await.unwrap().is_empty());
        c.close(None).await.unwrap();
    })
    .await;
}

/// C2: keys land on Kafka's murmur2 partitions (vectors from Kafka's documented algorithm).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c2_keys_map_to_kafka_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path());
    bounded(TEST_TIMEOUT, async {
        create(&b, "keys", 6).await;
        let p = producer(&b, &[]).await;
        let want: &[(&str, u32)] = &[
            ("a", 4),
            ("b", 2),
            ("hello", 3),
            ("sluiceway", 4),
            ("0", 2),
            ("1", 3),
            ("2", 2),
            ("3", 5),
            ("4", 1),
            ("5", 0),
            ("6", 4),
            ("7", 3),
            ("8", 3),
            ("9", 5),
        ];
        for (k, part) in want {
            let m = p
                .send(ProducerRecord::new("keys", "x").key(*k))
                .await
                .unwrap()
                .await
                .unwrap();
            assert_eq!(m.partition, *part, "key {k}");
        }
        p.close(None).await.unwrap();
        let c = Consumer::new(consumer_config(&b)).await.unwrap();
        c.assign(tps("keys", 6)).unwrap();
        for r in poll_n(&c, want.len()).await {
            let k = String::from_utf8(r.key.as_deref().unwrap().to_vec()).unwrap();
            let (_, part) = want.iter().find(|(w, _)| *w == k).unwrap();
            assert_eq!(r.partition, *part, "key {k} read back from its partition");
        }
    })
    .await;
}

/// C3: an explicit partition is honoured and readable there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c3_explicit_partition() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path());
    bounded(TEST_TIMEOUT, async {
        create(&b, "t", 3).await;
        let p = producer(&b, &[]).await;
        let m = p
            .send(ProducerRecord::new("t", "to-two").key("a").partition(2))
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!((m.partition, m.offset.map(|o| o.0)), (2, Some(0)));
        let c = Consumer::new(consumer_config(&b)).await.unwrap();
        c.assign(vec![TopicPartition::new("t", 2)]).unwrap();
        let got = poll_n(&c, 1).await;
        assert_eq!(
            (got[0].partition, got[0].offset.0, value(&got[0]).as_str()),
            (2, 0, "to-two")
        );
    })
    .await;
}

/// Keyless records spread over every partition (sticky batches, rotated).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_records_spread_over_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path());
    bounded(TEST_TIMEOUT, async {
        create(&b, "spread", 4).await;
        let p = producer(&b, &[("batch.size", "1000")]).await;
        let records = (0..400)
            .map(|i| ProducerRecord::new("spread", format!("value-{i:04}")))
            .collect();
        let metas = deliver_all(p.send_batch(records).await.unwrap()).await;
        let mut per: BTreeMap<u32, usize> = BTreeMap::new();
        for m in &metas {
            *per.entry(m.partition).or_default() += 1;
        }
        assert_eq!(per.len(), 4, "{per:?}");
        assert!(per.values().all(|n| *n >= 50), "roughly even: {per:?}");
    })
    .await;
}

/// C5 + C6: consume 300 of 1,000 with a local store, close, reopen: resumes at 300 with no gap
/// and no repeat; then seek to the beginning replays offset 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c5_c6_local_offsets_resume_then_replay() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("offsets");
    let b = TestBroker::start(dir.path());
    bounded(TEST_TIMEOUT, async {
        create(&b, "log", 1).await;
        let p = producer(&b, &[]).await;
        send_values(&p, "log", 0..1000).await;
        let tp = TopicPartition::new("log", 0);
        let config = || {
            consumer_config(&b)
                .offset_store_dir(&store)
                .group_id("c5")
                .max_poll_records(1)
        };

        let c = Consumer::new(config()).await.unwrap();
        c.assign(vec![tp.clone()]).unwrap();
        let first = poll_n(&c, 300).await;
        assert_eq!(
            first.iter().map(|r| r.offset.0).collect::<Vec<_>>(),
            (0..300).collect::<Vec<_>>()
        );
        assert_eq!(c.position(&tp).await.unwrap(), Offset(300));
        c.close(None).await.unwrap(); // enable.auto.commit (default) commits on close
        assert!(store.join("c5.offsets").exists());
        // The store stays locked until the consumer is dropped (a shadowed one is not).
        drop(c);

        let c = Consumer::new(config().max_poll_records(500)).await.unwrap();
        assert_eq!(c.committed(&tp), Some(Offset(300)));
        c.assign(vec![tp.clone()]).unwrap();
        assert_eq!(c.position(&tp).await.unwrap(), Offset(300));
        let rest = poll_n(&c, 700).await;
        assert_eq!(
            rest.iter().map(|r| r.offset.0).collect::<Vec<_>>(),
            (300..1000).collect::<Vec<_>>(),
            "no gap, no repeat"
        );
        assert_eq!(value(&rest[0]), "v300");

        // C6: replay.
        c.seek_to_beginning(None).await.unwrap();
        let again = poll_n(&c, 1).await;
        assert_eq!(again[0].offset.0, 0);
        assert_eq!(value(&again[0]), "v0");
        c.commit().await.unwrap();
        assert_eq!(c.committed(&tp), Some(again.last().unwrap().offset.next()));
        c.close(None).await.unwrap();
    })
    .await;
}

/// A damaged store file stops the consumer with a clear error instead of resetting it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_offset_store_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("offsets");
    let b = TestBroker::start(dir.path());
    bounded(TEST_TIMEOUT, async {
        std::fs::create_dir_all(&store).unwrap();
        std::fs::write(
            store.join("standalone.offsets"),
            b"sluiceway-offsets 1\nt 0 12\n",
        )
        .unwrap();
        let e = Consumer::new(consumer_config(&b).offset_store_dir(&store))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("corrupt offset store"), "{e}");
    })
    .await;
}

/// `check.crcs`, end to end: a value byte changed on the broker's disk after the write (the
/// broker serves fetches without checking CRCs, as Kafka's does) is CORRUPT_MESSAGE for a
/// consumer that checks, with nothing at or past it returned, and is read as it is by one with
/// `check.crcs=false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_byte_changed_on_disk_is_refused_unless_check_crcs_is_false() {
    use std::io::{Read, Seek, SeekFrom, Write};
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path());
    bounded(TEST_TIMEOUT, async {
        create(&b, "crc", 1).await;
        let p = producer(&b, &[]).await;
        send_values(&p, "crc", 0..3).await;
        p.close(None).await.unwrap();
        // Magic 1 (the default): the segment ends with the last record's value, "v2".
        let log = b.data_dir.join("crc-0").join("00000000000000000000.log");
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&log)
            .unwrap();
        let end = f.seek(SeekFrom::End(-1)).unwrap();
        let mut last = [0u8];
        f.read_exact(&mut last).unwrap();
        assert_eq!(last[0], b'2', "the last value's last byte");
        f.seek(SeekFrom::Start(end)).unwrap();
        f.write_all(b"3").unwrap();
        drop(f);
        let tp = TopicPartition::new("crc", 0);

        let checked = Consumer::new(consumer_config(&b)).await.unwrap();
        checked.assign(vec![tp.clone()]).unwrap();
        let mut before = Vec::new();
        let e = loop {
            match checked.poll(Duration::from_secs(5)).await {
                Ok(records) => before.extend(records),
                Err(e) => break e,
            }
        };
        assert_eq!(e.code(), ErrorCode::CorruptMessage, "{e}");
        assert!(before.iter().all(|r| r.offset.0 < 2), "{before:?}");

        let unchecked = Consumer::new(consumer_config(&b).check_crcs(false))
            .await
            .unwrap();
        unchecked.assign(vec![tp]).unwrap();
        let got = poll_n(&unchecked, 3).await;
        assert_eq!(
            got.iter().map(value).collect::<Vec<_>>(),
            ["v0", "v1", "v3"]
        );
    })
    .await;
}

/// C7: seek by time lands on the first record at or after the time — the 501st.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c7_seek_by_time_lands_on_the_501st() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path());
    bounded(TEST_TIMEOUT, async {
        create(&b, "time", 1).await;
        let p = producer(&b, &[]).await;
        let t0 = now_ms() - 60_000;
        let first = (0..500)
            .map(|i| ProducerRecord::new("time", format!("v{i}")).timestamp(t0 + i / 10))
            .collect();
        deliver_all(p.send_batch(first).await.unwrap()).await;
        let t = t0 + 1_000;
        let second = (500..1000)
            .map(|i| ProducerRecord::new("time", format!("v{i}")).timestamp(t + (i - 500) / 10))
            .collect();
        deliver_all(p.send_batch(second).await.unwrap()).await;

        let tp = TopicPartition::new("time", 0);
        let c = Consumer::new(consumer_config(&b)).await.unwrap();
        c.assign(vec![tp.clone()]).unwrap();
        c.seek_to_timestamp(None, t).await.unwrap();
        let got = poll_n(&c, 1).await;
        assert_eq!((got[0].offset.0, value(&got[0]).as_str()), (500, "v500"));
        assert_eq!(got[0].timestamp, t);
        // After the last record: the end.
        c.seek_to_timestamp(None, now_ms() + 3_600_000)
            .await
            .unwrap();
        assert_eq!(c.position(&tp).await.unwrap(), Offset(1000));
        c.seek_to_end(None).await.unwrap();
        assert_eq!(c.position(&tp).await.unwrap(), Offset(1000));
    })
    .await;
}

/// Pipelined fetches (the broker's `next_offsets` let the next fetch of a partition go out while
/// an answer's sets are still arriving): with fetches of about 1 KiB, two partitions in each
/// request and a consumer that seeks and pauses while fetches are in flight, every record still
/// comes exactly once, in order, from where the last seek put the partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_small_fetches_keep_order_across_seeks_and_pauses() {
    const PER_PARTITION: u32 = 3000;
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start_with(dir.path(), &["--metrics-listen", "127.0.0.1:0"]);
    bounded(TEST_TIMEOUT, async {
        create(&b, "pipe", 2).await;
        let p = producer(&b, &[("batch.size", "1024")]).await;
        let batch = (0..2 * PER_PARTITION)
            .map(|i| ProducerRecord::new("pipe", format!("v{:05}", i / 2)).partition(i % 2))
            .collect();
        deliver_all(p.send_batch(batch).await.unwrap()).await;
        let c = Consumer::new(consumer_config(&b).max_partition_fetch_bytes(1024))
            .await
            .unwrap();
        let [p0, p1] = [0, 1].map(|i| TopicPartition::new("pipe", i));
        c.assign(vec![p0.clone(), p1.clone()]).unwrap();
        let fetches_before = b.requests_handled("fetch").await;
        // Per partition: the offsets polled, each record's value matching its offset.
        async fn take(c: &Consumer, n: usize) -> BTreeMap<u32, Vec<u64>> {
            let mut got: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
            for r in poll_n(c, n).await {
                assert_eq!(value(&r), format!("v{:05}", r.offset.0), "{r:?}");
                got.entry(r.partition).or_default().push(r.offset.0);
            }
            got
        }
        let all = take(&c, 2 * PER_PARTITION as usize).await;
        let every: Vec<u64> = (0..u64::from(PER_PARTITION)).collect();
        assert_eq!(all[&0], every);
        assert_eq!(all[&1], every);
        let fetches = b.requests_handled("fetch").await - fetches_before;
        assert!(
            fetches >= 100,
            "{fetches} fetches for 6000 records of ~40 bytes in ~1 KiB fetches"
        );
        // Seeks back while caught up, then again after a few polls (fetches in flight).
        c.seek(&p0, Offset(100)).unwrap();
        c.seek(&p1, Offset(2000)).unwrap();
        let got = take(&c, 50).await;
        let seen0 = got.get(&0).cloned().unwrap_or_default();
        assert_eq!(seen0, (100..100 + seen0.len() as u64).collect::<Vec<_>>());
        c.seek(&p0, Offset(1500)).unwrap();
        c.pause(std::slice::from_ref(&p1)).unwrap();
        let got = take(&c, (PER_PARTITION - 1500) as usize).await;
        assert_eq!(got.keys().copied().collect::<Vec<_>>(), [0], "p1 is paused");
        assert_eq!(
            got[&0],
            (1500..u64::from(PER_PARTITION)).collect::<Vec<_>>()
        );
        // p1 resumes where its position was, whatever it had in flight when paused.
        let position = c.position(&p1).await.unwrap().0;
        c.resume(std::slice::from_ref(&p1)).unwrap();
        let got = take(&c, (u64::from(PER_PARTITION) - position) as usize).await;
        assert_eq!(
            got[&1],
            (position..u64::from(PER_PARTITION)).collect::<Vec<_>>()
        );
        assert!(
            c.poll(Duration::from_millis(300)).await.unwrap().is_empty(),
            "nothing twice"
        );
        c.close(None).await.unwrap();
        p.close(None).await.unwrap();
    })
    .await;
}

/// C10: typed errors with the stable code and a clear message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c10_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path());
    bounded(TEST_TIMEOUT, async {
        create(&b, "t", 3).await;
        let p = producer(&b, &[]).await;
        // Send to a missing topic.
        let e = p
            .send(ProducerRecord::new("missing", "x"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::UnknownTopicOrPartition);
        assert!(e.to_string().contains("missing"), "{e}");
        // A partition the topic does not have.
        let e = p
            .send(ProducerRecord::new("t", "x").partition(9))
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::UnknownTopicOrPartition);
        // send_batch: the bad record fails alone.
        let fs = p
            .send_batch(vec![
                ProducerRecord::new("missing", "x"),
                ProducerRecord::new("t", "ok"),
            ])
            .await
            .unwrap();
        let mut fs = fs.into_futures().into_iter();
        assert_eq!(
            fs.next().unwrap().await.unwrap_err().code(),
            ErrorCode::UnknownTopicOrPartition
        );
        fs.next().unwrap().await.unwrap();

        // Seek a missing partition.
        let c = Consumer::new(consumer_config(&b)).await.unwrap();
        c.assign(vec![TopicPartition::new("t", 99)]).unwrap();
        let e = c.seek_to_beginning(None).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::UnknownTopicOrPartition);
        assert!(e.to_string().contains("99"), "{e}");
        // Seek on a partition that is not assigned is the caller's mistake.
        let e = c.seek(&TopicPartition::new("t", 0), Offset(0)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument);

        // A bad config value names the key.
        let e = ProducerConfig::from_map([("bootstrap.servers", b.addr.as_str()), ("acks", "2")])
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidConfig);
        assert!(e.to_string().contains("acks"), "{e}");

        // Broker-side errors keep their code and message.
        let e = admin(&b)
            .await
            .create_topic(NewTopic::new("t", 3))
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::TopicAlreadyExists);
        assert!(e.to_string().contains('t'), "{e}");
        let e = admin(&b)
            .await
            .create_topic(NewTopic::new("t2", 1).config("retention.ms", "soon"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidConfig);
        assert!(e.to_string().contains("retention.ms"), "{e}");

        // auto.offset.reset=none: poll says why instead of guessing a position.
        let c = Consumer::new(consumer_config(&b).auto_offset_reset(OffsetReset::Error))
            .await
            .unwrap();
        c.assign(vec![TopicPartition::new("t", 0)]).unwrap();
        let e = c.poll(Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::OffsetOutOfRange);

        // After close, send fails with a typed error.
        p.close(None).await.unwrap();
        let e = p.send(ProducerRecord::new("t", "late")).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::Closed);
        assert!(e.to_string().contains("closed"), "{e}");
    })
    .await;
}

/// An out-of-range position is reset by auto.offset.reset (earliest here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_position_applies_auto_offset_reset() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path());
    bounded(TEST_TIMEOUT, async {
        create(&b, "oor", 1).await;
        let p = producer(&b, &[]).await;
        send_values(&p, "oor", 0..5).await;
        let tp = TopicPartition::new("oor", 0);
        let c = Consumer::new(consumer_config(&b)).await.unwrap();
        c.assign(vec![tp.clone()]).unwrap();
        c.seek(&tp, Offset(1_000_000)).unwrap();
        let got = poll_n(&c, 5).await;
        assert_eq!(got[0].offset.0, 0);
    })
    .await;
}

/// Creates `topic` with one partition, sends `values` (keyless) through a producer with
/// `config`, checks they got offsets 0.. in order, reads them back in order, and checks that a
/// seek to `seek` lands on that record.
async fn one_partition_round_trip(
    b: &TestBroker,
    topic: &str,
    config: &[(&str, &str)],
    values: &[String],
    seek: u64,
) {
    create(b, topic, 1).await;
    let p = producer(b, config).await;
    let metas = deliver_all(
        p.send_batch(
            values
                .iter()
                .map(|v| ProducerRecord::new(topic, v.clone()))
                .collect(),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        metas
            .iter()
            .map(|m| m.offset.unwrap().0)
            .collect::<Vec<_>>(),
        (0..values.len() as u64).collect::<Vec<_>>(),
        "{topic}"
    );
    let tp = TopicPartition::new(topic, 0);
    let c = Consumer::new(consumer_config(b)).await.unwrap();
    c.assign(vec![tp.clone()]).unwrap();
    let got = poll_n(&c, values.len()).await;
    assert_eq!(got.iter().map(value).collect::<Vec<_>>(), values, "{topic}");
    assert!(got.iter().enumerate().all(|(i, r)| r.offset.0 == i as u64));
    c.seek(&tp, Offset(seek)).unwrap();
    let got = poll_n(&c, 1).await;
    assert_eq!(got[0].offset.0, seek, "{topic}");
    assert_eq!(value(&got[0]), values[seek as usize]);
    p.close(None).await.unwrap();
}

/// C11: every codec round-trips; a seek into the middle of a compressed wrapper skips the
/// records before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c11_every_codec_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path());
    bounded(TEST_TIMEOUT, async {
        for codec in Compression::ALL {
            let values: Vec<String> = (0..50)
                .map(|i| format!("{}-value-{i}-{}", codec.name(), "x".repeat(i)))
                .collect();
            let config = [
                ("compression.type", codec.name()),
                ("linger.ms", "50"),
                ("batch.size", "1000000"),
            ];
            let topic = format!("codec-{}", codec.name());
            one_partition_round_trip(&b, &topic, &config, &values, 25).await;
        }
    })
    .await;
}

/// A busy partition's queued batches travel together: with small batches and one request in
/// flight per partition, 3,000 records (60 batches) go out in far fewer requests than batches,
/// as one set per request (concatenated compressed wrappers too), and every record keeps its
/// offset and order; a seek into the middle of a later batch lands on its record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_batches_of_one_partition_share_a_request_for_every_codec() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start_with(dir.path(), &["--metrics-listen", "127.0.0.1:0"]);
    bounded(TEST_TIMEOUT, async {
        let values: Vec<String> = (0..3000)
            .map(|i| format!("{i:05}-{}", "v".repeat(60)))
            .collect();
        for codec in Compression::ALL {
            // About 50 records per 4 KB batch.
            let config = [
                ("compression.type", codec.name()),
                ("batch.size", "4000"),
                ("linger.ms", "20"),
            ];
            let before = b.requests_handled("produce").await;
            let topic = format!("many-{}", codec.name());
            one_partition_round_trip(&b, &topic, &config, &values, 2345).await;
            let requests = b.requests_handled("produce").await - before;
            assert!(
                requests <= 10,
                "{codec:?}: {requests} produce requests for 60 batches"
            );
        }
    })
    .await;
}

/// C12: a 1 MiB value comes back byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c12_one_mib_value() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path());
    bounded(TEST_TIMEOUT, async {
        create(&b, "big", 1).await;
        let big: Vec<u8> = (0..(1u32 << 20))
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let p = producer(&b, &[]).await;
        let m = p
            .send(ProducerRecord::new("big", big.clone()).key("k"))
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(m.offset.unwrap().0, 0);
        let c = Consumer::new(consumer_config(&b)).await.unwrap();
        c.assign(vec![TopicPartition::new("big", 0)]).unwrap();
        let got = poll_n(&c, 1).await;
        assert_eq!(got[0].value.as_deref().unwrap().len(), big.len());
        assert!(got[0].value.as_deref().unwrap() == big.as_slice());
    })
    .await;
}

/// C13: close with pending sends resolves every one of them — delivered when the broker is up,
/// failed (never hanging) when it is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c13_close_resolves_every_pending_send() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = TestBroker::start(dir.path());
    bounded(TEST_TIMEOUT, async {
        create(&b, "t", 3).await;
        // A long linger: nothing is sent until close flushes.
        let p = producer(&b, &[("linger.ms", "60000")]).await;
        let fs = p
            .send_batch(
                (0..200)
                    .map(|i| ProducerRecord::new("t", format!("v{i}")).key(format!("k{i}")))
                    .collect(),
            )
            .await
            .unwrap();
        p.close(None).await.unwrap();
        let metas = deliver_all(fs).await;
        assert_eq!(metas.len(), 200);

        // The broker goes away with sends pending: each fails within the delivery timeout.
        let p = producer(
            &b,
            &[
                ("linger.ms", "60000"),
                ("delivery.timeout.ms", "2000"),
                ("retry.backoff.ms", "50"),
            ],
        )
        .await;
        let fs = p
            .send_batch(
                (0..50)
                    .map(|i| ProducerRecord::new("t", format!("v{i}")))
                    .collect(),
            )
            .await
            .unwrap();
        b.stop();
        // Close reports what was not delivered: all 50, with the first error.
        match p.close(None).await {
            Err(Error::Undelivered {
                failed: 50,
                pending: 0,
                first_error: Some(e),
            }) => assert!(e.is_retriable() || e.code() == ErrorCode::Closed, "{e}"),
            other => panic!("close must report the 50 lost records: {other:?}"),
        }
        for r in fs.wait().await {
            let e = r.unwrap_err();
            assert!(e.is_retriable() || e.code() == ErrorCode::Closed, "{e}");
        }
        // Flush with nothing pending and nothing failed since the last report: Ok at once.
        p.flush(None).await.unwrap();
    })
    .await;
}

/// A closed loopback port: nothing listens there.
fn dead_address() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap().to_string();
    drop(l);
    a
}

/// Two bootstrap addresses, one dead: producer, consumer and admin still work, whichever order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_dead_bootstrap_address_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path());
    bounded(TEST_TIMEOUT, async {
        let dead = dead_address();
        for servers in [format!("{dead},{}", b.addr), format!("{},{dead}", b.addr)] {
            let admin = Admin::new(
                AdminConfig::from_map([("bootstrap.servers", servers.as_str())]).unwrap(),
            )
            .await
            .unwrap();
            let topic = format!(
                "t{}",
                servers.len() + usize::from(servers.starts_with(&dead))
            );
            admin
                .create_topic(NewTopic::new(topic.as_str(), 2))
                .await
                .unwrap();
            for _ in 0..3 {
                // Several calls, so the round-robin reaches the dead address too.
                assert!(
                    admin
                        .list_topics()
                        .await
                        .unwrap()
                        .iter()
                        .any(|t| t.name == topic)
                );
            }
            let p = Producer::new(
                ProducerConfig::from_map([("bootstrap.servers", servers.as_str())]).unwrap(),
            )
            .await
            .unwrap();
            let m = p
                .send(ProducerRecord::new(topic.as_str(), "hi").partition(1))
                .await
                .unwrap()
                .await
                .unwrap();
            assert_eq!(m.partition, 1);
            p.close(None).await.unwrap();
            let c = Consumer::new(
                ConsumerConfig::new(&servers).auto_offset_reset(OffsetReset::Earliest),
            )
            .await
            .unwrap();
            c.assign(vec![TopicPartition::new(topic.as_str(), 1)])
                .unwrap();
            assert_eq!(value(&poll_n(&c, 1).await[0]), "hi");
        }
        // Every address dead: a clear, retriable error rather than a hang.
        let e = Producer::new(ProducerConfig::new(&dead).request_timeout(Duration::from_secs(2)))
            .await
            .unwrap_err();
        assert!(e.code().is_retriable(), "{e}");
    })
    .await;
}

/// The broker restarts (same address): the producer and consumer reconnect, refresh their
/// metadata and carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_survive_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = TestBroker::start(dir.path());
    let addr = b.addr.clone();
    bounded(TEST_TIMEOUT, async {
        create(&b, "r", 2).await;
        let p = producer(
            &b,
            &[("retry.backoff.ms", "50"), ("metadata.max.age.ms", "500")],
        )
        .await;
        deliver_all(
            p.send_batch(
                (0..10)
                    .map(|i| ProducerRecord::new("r", format!("a{i}")).key(format!("{i}")))
                    .collect(),
            )
            .await
            .unwrap(),
        )
        .await;
        let c = Consumer::new(consumer_config(&b).retry_backoff(Duration::from_millis(50)))
            .await
            .unwrap();
        c.assign(tps("r", 2)).unwrap();
        assert_eq!(poll_n(&c, 10).await.len(), 10);

        b.stop();
        // Sends while the broker is down are retried until it is back.
        let pending = p
            .send_batch(
                (0..10)
                    .map(|i| ProducerRecord::new("r", format!("b{i}")).key(format!("{i}")))
                    .collect(),
            )
            .await
            .unwrap();
        // The scenario, not a synchronisation: the broker stays down a while, so the sends
        // fail and are retried (retry backoff 50 ms) before it is back.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let b2 = TestBroker::start_on(dir.path(), &addr, &[], &[]);
        let metas = deliver_all(pending).await;
        assert!(metas.iter().all(|m| m.offset.is_some()));
        let got = poll_n(&c, 10).await;
        assert!(
            got.iter().all(|r| value(r).starts_with('b')),
            "no repeat after the restart"
        );
        drop(b2);
    })
    .await;
}

/// Admin: list, describe, list offsets, list brokers, delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_operations() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path());
    bounded(TEST_TIMEOUT, async {
        let a = admin(&b).await;
        let meta = a
            .create_topic(NewTopic::new("adm", 2).config("retention.ms", "3600000"))
            .await
            .unwrap();
        assert_eq!(meta.partitions.len(), 2);
        let listed = a.list_topics().await.unwrap();
        assert_eq!(
            listed
                .iter()
                .map(|t| (t.name.as_str(), t.partitions))
                .collect::<Vec<_>>(),
            [("adm", 2)]
        );
        let d = a.describe_topic("adm").await.unwrap();
        assert_eq!(
            d.configs.get("retention.ms").map(String::as_str),
            Some("3600000")
        );
        assert!(d.effective_configs.contains_key("segment.bytes"));

        let p = producer(&b, &[("acks", "1")]).await;
        deliver_all(
            p.send_batch(
                (0..7)
                    .map(|i| ProducerRecord::new("adm", format!("v{i}")).partition(1))
                    .collect(),
            )
            .await
            .unwrap(),
        )
        .await;
        let tp = TopicPartition::new("adm", 1);
        let r = a
            .list_offsets(&[
                (tp.clone(), OffsetSpec::Earliest),
                (tp.clone(), OffsetSpec::Latest),
            ])
            .await;
        assert_eq!(r[0].as_ref().unwrap().offset, Some(Offset(0)));
        assert_eq!(r[1].as_ref().unwrap().offset, Some(Offset(7)));

        let cluster = a.describe_cluster().await.unwrap();
        assert_eq!(cluster.brokers.len(), 1);
        assert_eq!(cluster.brokers[0].address, b.addr);
        assert_eq!(cluster.controller_id, Some(cluster.brokers[0].broker_id));

        a.delete_topic("adm").await.unwrap();
        assert!(a.list_topics().await.unwrap().is_empty());
        let e = a.describe_topic("adm").await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::UnknownTopicOrPartition);
    })
    .await;
}

/// acks=0: delivered without offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_zero_has_no_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path());
    bounded(TEST_TIMEOUT, async {
        create(&b, "z", 1).await;
        let p = Producer::new(ProducerConfig::new(&b.addr).acks(Acks::None))
            .await
            .unwrap();
        let m = p
            .send(ProducerRecord::new("z", "fire"))
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(m.offset, None);
        let c = Consumer::new(consumer_config(&b)).await.unwrap();
        c.assign(vec![TopicPartition::new("z", 0)]).unwrap();
        assert_eq!(value(&poll_n(&c, 1).await[0]), "fire");
    })
    .await;
}

/// Per-send settings: one producer (acks=1, no compression) sends, all at once, a batch with
/// each `acks` level and each codec to one partition, in each `message.format.version`. Every
/// batch is delivered (offsets except with acks=0), comes back whole, and keeps its own order;
/// the offsets of the acked batches are distinct.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_batch_with_other_acks_and_codecs_through_one_producer() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path());
    bounded(TEST_TIMEOUT, async {
        for version in ["1", "2"] {
            mixed_settings_round_trip(&b, version).await;
        }
    })
    .await;
}

async fn mixed_settings_round_trip(b: &TestBroker, version: &str) {
    let topic = format!("mixed-v{version}");
    let topic = topic.as_str();
    create(b, topic, 1).await;
    let config = [
        ("acks", "1"),
        ("linger.ms", "20"),
        ("message.format.version", version),
    ];
    let p = producer(b, &config).await;
    let mut sends = Vec::new();
    for acks in [Acks::None, Acks::Leader, Acks::All] {
        for codec in Compression::ALL {
            let tag = format!("{}-{}", acks.name(), codec.name());
            let records = (0..20)
                .map(|i| ProducerRecord::new(topic, format!("{tag}-{i:02}-{}", "z".repeat(i))))
                .collect();
            let settings = SendSettings {
                acks,
                compression: codec,
            };
            sends.push((
                tag,
                acks,
                p.send_batch_with(records, settings).await.unwrap(),
            ));
        }
    }
    let mut offsets = std::collections::BTreeSet::new();
    for (tag, acks, batch) in sends {
        for m in deliver_all(batch).await {
            match acks {
                Acks::None => assert_eq!(m.offset, None, "{tag}"),
                _ => assert!(offsets.insert(m.offset.expect("an offset").0), "{tag}"),
            }
        }
    }
    p.close(None).await.unwrap();
    assert_eq!(offsets.len(), 2 * 5 * 20);

    let c = Consumer::new(consumer_config(b)).await.unwrap();
    c.assign(tps(topic, 1)).unwrap();
    let got = poll_n(&c, 3 * 5 * 20).await;
    let mut per_tag: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in &got {
        let v = value(r);
        let tag = v.rsplitn(3, '-').nth(2).unwrap().to_owned();
        per_tag.entry(tag).or_default().push(v);
    }
    assert_eq!(per_tag.len(), 15, "{:?}", per_tag.keys());
    for (tag, values) in per_tag {
        let want: Vec<String> = (0..20)
            .map(|i| format!("{tag}-{i:02}-{}", "z".repeat(i)))
            .collect();
        assert_eq!(values, want, "v{version} {tag}: whole and in order");
    }
}

#[allow(dead_code)] // its `main` is for `cargo run --example quickstart`
#[path = "../../examples/quickstart.rs"]
mod quickstart;

/// The Rust quickstart runs as written against a real broker (twice: the second run resumes
/// from the offsets the first committed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_example_runs() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path());
    let store = dir.path().join("quickstart-offsets");
    bounded(TEST_TIMEOUT, async {
        quickstart::run(&b.addr, store.to_str().unwrap())
            .await
            .expect("first run");
        quickstart::run(&b.addr, store.to_str().unwrap())
            .await
            .expect("second run");
        let c = Consumer::new(consumer_config(&b).offset_store_dir(&store))
            .await
            .unwrap();
        assert_eq!(
            c.committed(&TopicPartition::new("quickstart", 0)),
            Some(Offset(20))
        );
    })
    .await;
}

/// A smoke check of throughput (debug build): 100,000 records of 100 bytes produced in batches
/// of 1,000 and consumed back, timed. Prints figures; fails only if something is pathologically
/// slow (e.g. a round trip per record).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_smoke() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path());
    bounded(TEST_TIMEOUT, async {
        create(&b, "tp", 3).await;
        let p = producer(
            &b,
            &[("linger.ms", "5"), ("batch.size", "262144"), ("acks", "1")],
        )
        .await;
        let value = vec![b'x'; 100];
        let n = 100_000;
        let started = std::time::Instant::now();
        let mut pending = Vec::new();
        for chunk in 0..(n / 1000) {
            let records = (0..1000)
                .map(|i| {
                    ProducerRecord::new("tp", value.clone()).key(format!("{}", chunk * 1000 + i))
                })
                .collect();
            pending.push(p.send_batch(records).await.unwrap());
        }
        for batch in pending {
            deliver_all(batch).await;
        }
        let produce = started.elapsed();
        let c = Consumer::new(consumer_config(&b)).await.unwrap();
        c.assign(tps("tp", 3)).unwrap();
        let started = std::time::Instant::now();
        let mut got = 0;
        while got < n {
            got += c.poll(Duration::from_secs(5)).await.unwrap().len();
        }
        let consume = started.elapsed();
        eprintln!(
            "throughput_smoke: produce {:.0} msg/s, consume {:.0} msg/s",
            n as f64 / produce.as_secs_f64(),
            n as f64 / consume.as_secs_f64()
        );
        assert!(produce < Duration::from_secs(30) && consume < Duration::from_secs(30));
    })
    .await;
}

/// `buffer.memory` bounds what a producer holds: with the broker gone, `send` waits up to
/// `max.block.ms` for room and then fails with REQUEST_TIMED_OUT; the queued sends still
/// resolve on close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_buffer_blocks_then_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = TestBroker::start(dir.path());
    bounded(TEST_TIMEOUT, async {
        create(&b, "buf", 1).await;
        let min = sluiceway_core::limits::PRODUCER_BUFFER_BYTES_MIN.to_string();
        let p = producer(
            &b,
            &[
                ("buffer.memory", min.as_str()),
                ("max.block.ms", "300"),
                ("delivery.timeout.ms", "3000"),
                ("retry.backoff.ms", "50"),
            ],
        )
        .await;
        b.stop();
        let value = vec![7u8; 1 << 20];
        let mut queued = Vec::new();
        let err = loop {
            match p.send(ProducerRecord::new("buf", value.clone())).await {
                Ok(f) => queued.push(f),
                Err(e) => break e,
            }
            assert!(queued.len() < 64, "buffer.memory is not enforced");
        };
        assert_eq!(err.code(), ErrorCode::RequestTimedOut);
        assert!(err.to_string().contains("buffer.memory"), "{err}");
        assert!(queued.len() >= 16, "{} queued", queued.len());
        // The broker is gone: close reports every queued record as undelivered.
        match p.close(None).await {
            Err(Error::Undelivered { failed, .. }) => assert_eq!(failed, queued.len() as u64),
            other => panic!("{other:?}"),
        }
        for f in queued {
            assert!(f.await.is_err());
        }
    })
    .await;
}

/// `enable.auto.commit`: `poll` commits the positions reached by earlier polls every
/// `auto.commit.interval.ms`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_commit_commits_positions_from_poll() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("offsets");
    let b = TestBroker::start(dir.path());
    bounded(TEST_TIMEOUT, async {
        create(&b, "ac", 1).await;
        let p = producer(&b, &[]).await;
        send_values(&p, "ac", 0..20).await;
        let tp = TopicPartition::new("ac", 0);
        let c = Consumer::new(
            consumer_config(&b)
                .offset_store_dir(&store)
                .auto_commit_interval(Duration::from_millis(10))
                .max_poll_records(5),
        )
        .await
        .unwrap();
        c.assign(vec![tp.clone()]).unwrap();
        let first = poll_n(&c, 5).await;
        assert_eq!(
            c.committed(&tp),
            None,
            "nothing is committed before the interval passes"
        );
        // The scenario, not a synchronisation: longer than the 10 ms auto-commit interval.
        tokio::time::sleep(Duration::from_millis(20)).await;
        // This poll starts the commit in the background (it does not wait for it).
        let _ = c.poll(Duration::from_secs(5)).await.unwrap();
        let want = Some(first.last().unwrap().offset.next());
        wait_until("the auto-commit is done", CONDITION_TIMEOUT, async || {
            c.committed(&tp) == want
        })
        .await;
        // With auto commit off, nothing is written until commit().
        let c2 = Consumer::new(
            consumer_config(&b)
                .group_id("manual")
                .offset_store_dir(&store)
                .enable_auto_commit(false),
        )
        .await
        .unwrap();
        c2.assign(vec![tp.clone()]).unwrap();
        poll_n(&c2, 20).await;
        c2.close(None).await.unwrap();
        assert!(!store.join("manual.offsets").exists());
    })
    .await;
}

/// `metadata.max.age.ms`: cached metadata is refreshed on a timer, so a topic re-created with
/// more partitions is seen without any error having happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_refreshes_on_a_timer() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start_with(dir.path(), &["--metrics-listen", "127.0.0.1:0"]);
    bounded(TEST_TIMEOUT, async {
        let a = admin(&b).await;
        a.create_topic(NewTopic::new("grow", 1)).await.unwrap();
        let p = producer(&b, &[("metadata.max.age.ms", "200")]).await;
        // "hello" is partition 0 of 1, partition 3 of 6.
        let m = p
            .send(ProducerRecord::new("grow", "x").key("hello"))
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(m.partition, 0);
        a.delete_topic("grow").await.unwrap();
        a.create_topic(NewTopic::new("grow", 6)).await.unwrap();
        // No error tells the producer: only its timer can refresh the metadata. Wait until the
        // broker has answered three more metadata requests: the producer's refreshes are
        // sequential, so at least the second began after the re-creation and its answer was
        // applied before the third was sent.
        let before = b.requests_handled("metadata").await;
        wait_until(
            "the producer's timer refreshed the metadata",
            CONDITION_TIMEOUT,
            async || b.requests_handled("metadata").await >= before + 3,
        )
        .await;
        let m = p
            .send(ProducerRecord::new("grow", "x").key("hello"))
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(m.partition, 3);
    })
    .await;
}

/// RecordMetadata's timestamp is the broker's append time on a LogAppendTime topic and the
/// record's own create time otherwise (Kafka's rule).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_metadata_timestamp_follows_the_topic_timestamp_type() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path());
    bounded(TEST_TIMEOUT, async {
        let a = admin(&b).await;
        a.create_topic(NewTopic::new("created", 1))
            .await
            .expect("create");
        a.create_topic(
            NewTopic::new("appended", 1).config("message.timestamp.type", "LogAppendTime"),
        )
        .await
        .expect("create");
        let p = producer(&b, &[]).await;
        let sent_at = 1_000_000;
        let before = now_ms();
        let created = p
            .send(ProducerRecord::new("created", "v").timestamp(sent_at))
            .await
            .expect("queued")
            .await
            .expect("delivered");
        let appended = p
            .send(ProducerRecord::new("appended", "v").timestamp(sent_at))
            .await
            .expect("queued")
            .await
            .expect("delivered");
        assert_eq!(created.timestamp, sent_at);
        assert!(
            appended.timestamp >= before,
            "append time {} is the broker's clock, not {sent_at}",
            appended.timestamp
        );
        p.close(None).await.expect("close");
    })
    .await;
}

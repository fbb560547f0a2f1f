//! The idempotent producer (issue 14) against real brokers: batches carry a producer id from
//! InitProducerId and per-partition sequences; Kafka's rules for `enable.idempotence` are
//! checked; and with RF 3 and acks=all, three `kill -9`s of a leader during 50,000 sends while a
//! TCP proxy in front of every broker drops answers leave every message in the log exactly once,
//! in order per partition.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluiceway_core::client::{
    Acks, Consumer, Producer, ProducerConfig, ProducerRecord, SendSettings, TopicPartition,
};
use sluiceway_core::format::v2::BatchHeader;
use sluiceway_core::format::{Compression, Entries, MAGIC_V2};
use sluiceway_core::{Error, ErrorCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::client::{consumer_config, create, poll_n, producer, value};
use crate::cluster_support::{
    Acked, TestCluster, assert_acked_present, assert_acks_distinct, compare_replicas,
    count_duplicates, create_rf3, high_watermarks, partition_state, read_up_to, values,
};
use crate::support::{BrokerClient, TEST_TIMEOUT, TestBroker, bounded, fetch_once};

/// Every batch an idempotent producer wrote: magic 2, one producer id, epoch 0, and per
/// partition sequences that start at 0 and follow each other with no gap.
#[tokio::test]
async fn batches_carry_one_producer_id_and_gapless_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path());
    bounded(TEST_TIMEOUT, async {
        create(&b, "idem", 2).await;
        let p = producer(
            &b,
            &[("enable.idempotence", "true"), ("batch.size", "2048")],
        )
        .await;
        let records: Vec<ProducerRecord> = (0..3000)
            .map(|i| ProducerRecord::new("idem", format!("v{i}")).partition(i % 2))
            .collect();
        let results = p.send_batch(records).await.unwrap().wait().await;
        assert!(results.iter().all(Result::is_ok));
        // A second producer gets another id.
        let q = producer(&b, &[("enable.idempotence", "true")]).await;
        q.send(ProducerRecord::new("idem", "other").partition(0))
            .await
            .unwrap()
            .await
            .unwrap();

        let mut c = b.client().await;
        let mut ids = BTreeSet::new();
        for partition in 0..2 {
            let mut next_offset = 0i64;
            let mut next_sequence = BTreeMap::new();
            loop {
                let r = fetch_once(&mut c, "idem", partition, next_offset).await;
                let mut progressed = false;
                for entry in Entries::new(&r.message_set) {
                    let entry = entry.unwrap();
                    assert_eq!(entry.magic(), MAGIC_V2, "idempotent batches are magic 2");
                    let h = BatchHeader::parse(entry.bytes).unwrap();
                    assert!(h.producer_id >= 0, "{h:?}");
                    assert_eq!(h.producer_epoch, 0);
                    let expected = next_sequence.entry(h.producer_id).or_insert(0);
                    assert_eq!(h.base_sequence, *expected, "partition {partition}: {h:?}");
                    *expected += h.record_count as i32;
                    ids.insert(h.producer_id);
                    next_offset = h.last_offset().0 as i64 + 1;
                    progressed = true;
                }
                if !progressed || next_offset >= r.high_watermark {
                    break;
                }
            }
            assert_eq!(next_offset, if partition == 0 { 1501 } else { 1500 });
        }
        assert_eq!(ids.len(), 2, "two producers, two ids: {ids:?}");

        // The consumer sees the records as they were sent.
        let consumer = Consumer::new(consumer_config(&b)).await.unwrap();
        consumer
            .assign(vec![TopicPartition::new("idem", 1)])
            .unwrap();
        let got = poll_n(&consumer, 1500).await;
        for (i, r) in got.iter().enumerate() {
            assert_eq!(value(r), format!("v{}", 2 * i + 1));
        }
        consumer.close(None).await.unwrap();
        p.close(None).await.unwrap();
        q.close(None).await.unwrap();
    })
    .await;
}

/// Kafka's rules for `enable.idempotence`, each refused with the key it is about.
#[tokio::test]
async fn idempotence_refuses_settings_that_would_break_it() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path());
    bounded(TEST_TIMEOUT, async {
        let refused = |pairs: &[(&str, &str)]| {
            let mut config = ProducerConfig::new(&b.addr);
            for (k, v) in pairs {
                config.set(k, v).unwrap();
            }
            config.validate().unwrap_err()
        };
        for (pairs, key) in [
            (&[("enable.idempotence", "true"), ("acks", "1")][..], "acks"),
            (
                &[
                    ("enable.idempotence", "true"),
                    ("max.in.flight.requests.per.connection", "6"),
                ][..],
                "max.in.flight.requests.per.connection",
            ),
            (
                &[("enable.idempotence", "true"), ("retries", "0")][..],
                "retries",
            ),
        ] {
            let e = refused(pairs);
            assert!(
                matches!(&e, Error::InvalidConfig { key: k, .. } if k == key),
                "{pairs:?}: {e}"
            );
            assert!(e.to_string().contains("enable.idempotence"), "{e}");
        }
        let e = ProducerConfig::new(&b.addr)
            .set("enable.idempotence", "yes")
            .map(|_| ())
            .unwrap_err();
        assert!(e.to_string().contains("true, false"), "{e}");

        // One queue per partition keeps the sequence: a send with other settings is refused.
        create(&b, "idem-settings", 1).await;
        let p = producer(&b, &[("enable.idempotence", "true")]).await;
        let e = p
            .send_batch_with(
                vec![ProducerRecord::new("idem-settings", "x")],
                SendSettings {
                    acks: Acks::All,
                    compression: Compression::Gzip,
                },
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
        assert!(e.to_string().contains("idempotent"), "{e}");
        p.close(None).await.unwrap();
    })
    .await;
}

// ---- Leader kills and lost answers ----

/// How many chunks the broker sends pass between two dropped ones, and how many are dropped
/// at most (per proxy), while dropping is on.
const DROP_EVERY: u64 = 8;
const DROPS_MAX: u64 = 40;

/// A TCP proxy in front of one broker that, while dropping is on, swallows every
/// [`DROP_EVERY`]-th chunk the broker sends and cuts that connection: the requests it answered
/// were handled, but the client never hears so and sends them again.
struct AnswerDropper {
    addr: String,
    upstream: Arc<Mutex<String>>,
    dropping: Arc<AtomicBool>,
    drops: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl AnswerDropper {
    async fn start() -> AnswerDropper {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let upstream = Arc::new(Mutex::new(String::new()));
        let dropping = Arc::new(AtomicBool::new(false));
        let drops = Arc::new(AtomicU64::new(0));
        let chunks = Arc::new(AtomicU64::new(0));
        let (u, d, n) = (upstream.clone(), dropping.clone(), drops.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let target = u.lock().unwrap().clone();
                let (dropping, drops, chunks) = (d.clone(), n.clone(), chunks.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&target).await else {
                        return; // The broker is down: the client sees a refused connection.
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut cr, &mut sw).await;
                        let _ = sw.shutdown().await;
                    });
                    let mut buf = vec![0u8; 64 << 10];
                    loop {
                        let n = match sr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if dropping.load(Ordering::Relaxed)
                            && chunks.fetch_add(1, Ordering::Relaxed) % DROP_EVERY == DROP_EVERY - 1
                            && drops.load(Ordering::Relaxed) < DROPS_MAX
                        {
                            drops.fetch_add(1, Ordering::Relaxed);
                            break; // Swallowed; both sides are closed below.
                        }
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    up.abort();
                });
            }
        });
        AnswerDropper {
            addr,
            upstream,
            dropping,
            drops,
            task,
        }
    }
}

impl Drop for AnswerDropper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends `m-0..m-{MESSAGES}` in chunks, keeping a window of chunks in flight; `sent` counts
/// what was handed to the producer. Returns the acknowledged records and the failed ones.
async fn send_everything(
    p: Arc<Producer>,
    topic: &'static str,
    messages: u64,
    sent: Arc<AtomicU64>,
) -> (Vec<Acked>, Vec<(String, String)>) {
    const CHUNK: u64 = 500;
    const WINDOW: usize = 8;
    let mut acked = Vec::with_capacity(messages as usize);
    let mut failed = Vec::new();
    let mut window = VecDeque::new();
    let mut settle = async |(vs, d): (Vec<String>, sluiceway_core::client::BatchDelivery)| {
        for (v, r) in vs.into_iter().zip(d.wait().await) {
            match r {
                Ok(m) => acked.push(Acked {
                    partition: m.partition,
                    offset: m.offset.expect("acks=all gives offsets").0,
                    value: v,
                }),
                Err(e) => failed.push((v, e.to_string())),
            }
        }
    };
    let mut start = 0;
    while start < messages {
        let vs = values("m", start..(start + CHUNK).min(messages));
        let records = vs
            .iter()
            .map(|v| ProducerRecord::new(topic, v.clone()))
            .collect();
        let d = p.send_batch(records).await.expect("queue the chunk");
        start += vs.len() as u64;
        window.push_back((vs, d));
        sent.store(start, Ordering::Release);
        if window.len() >= WINDOW {
            settle(window.pop_front().unwrap()).await;
        }
    }
    while let Some(w) = window.pop_front() {
        settle(w).await;
    }
    (acked, failed)
}

/// The idempotent producers' retries the brokers answered as duplicates, from `/metrics`.
async fn duplicates_answered(broker: &TestBroker, topic: &str) -> u64 {
    let prefix = format!("sluiceway_partition_duplicate_batches_total{{topic=\"{topic}\"");
    broker
        .metrics()
        .await
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_kill9_three_times_and_lost_answers_during_50k_idempotent_sends_write_each_once() {
    const TOPIC: &str = "exactly-once";
    const PARTITIONS: u32 = 3;
    const MESSAGES: u64 = 50_000;
    const KILLS: u64 = 3;
    let proxies = vec![
        AnswerDropper::start().await,
        AnswerDropper::start().await,
        AnswerDropper::start().await,
    ];
    let mut cluster = TestCluster::start_advertising(
        3,
        &["--metrics-listen", "127.0.0.1:0"],
        proxies.iter().map(|p| p.addr.clone()).collect(),
    )
    .await;
    for (proxy, b) in proxies.iter().zip(&cluster.brokers) {
        *proxy.upstream.lock().unwrap() = b.addr.clone();
    }
    bounded(Duration::from_secs(900), async {
        create_rf3(&cluster, TOPIC, PARTITIONS, &[("min.insync.replicas", "2")]).await;
        let mut config = ProducerConfig::new(&cluster.bootstrap());
        for (k, v) in [
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "2"),
            ("delivery.timeout.ms", "300000"),
            ("request.timeout.ms", "10000"),
        ] {
            config.set(k, v).unwrap();
        }
        let p = Arc::new(Producer::new(config).await.expect("producer"));
        for proxy in &proxies {
            proxy.dropping.store(true, Ordering::Relaxed);
        }
        let sent = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(send_everything(p.clone(), TOPIC, MESSAGES, sent.clone()));
        let mut duplicates = 0;
        for kill in 0..KILLS {
            let at = (kill + 1) * MESSAGES / (KILLS + 1);
            crate::cluster_support::wait_until(
                &format!("the producer to hand over {at} messages"),
                Duration::from_secs(300),
                async || sent.load(Ordering::Acquire) >= at,
            )
            .await;
            let partition = (kill % u64::from(PARTITIONS)) as u32;
            let (leader, epoch) = partition_state(&cluster, TOPIC, partition).await;
            let victim = cluster.broker(leader).process.as_ref().expect("running");
            duplicates += duplicates_answered(victim, TOPIC).await;
            cluster.kill9(leader);
            let (new_leader, new_epoch) = cluster
                .wait_new_leader(TOPIC, partition, leader, epoch)
                .await;
            eprintln!(
                "kill {}: broker {leader} (leader of {TOPIC}-{partition} at epoch {epoch}) killed \
                 with {at} messages handed over; broker {new_leader} leads at epoch {new_epoch}",
                kill + 1
            );
            cluster.restart(leader);
            cluster.wait_fully_replicated(TOPIC).await;
        }
        let (acked, failed) = tokio::time::timeout(Duration::from_secs(300), task)
            .await
            .expect("every send settles")
            .expect("producer task");
        for proxy in &proxies {
            proxy.dropping.store(false, Ordering::Relaxed);
        }
        p.close(None).await.expect("close the producer");
        for b in &cluster.brokers {
            duplicates += duplicates_answered(b.process.as_ref().unwrap(), TOPIC).await;
        }
        let drops: u64 = proxies
            .iter()
            .map(|p| p.drops.load(Ordering::Relaxed))
            .sum();
        eprintln!(
            "{} acknowledged, {} failed; {drops} answers dropped by the proxies, {duplicates} \
             retries answered as duplicates",
            acked.len(),
            failed.len()
        );
        assert!(
            failed.is_empty(),
            "{} sends failed, e.g. {:?}",
            failed.len(),
            &failed[..failed.len().min(5)]
        );
        assert_eq!(acked.len() as u64, MESSAGES);
        assert_acks_distinct(&acked);
        assert!(drops >= 10, "the proxies dropped only {drops} answers");
        assert!(
            duplicates >= 1,
            "no retry reached a broker as a duplicate: the test did not exercise idempotence"
        );

        cluster.wait_fully_replicated(TOPIC).await;
        let hws = high_watermarks(&cluster, TOPIC, PARTITIONS).await;
        let read = read_up_to(&cluster.bootstrap(), TOPIC, &hws).await;
        // Exactly once: as many records as messages, each message once, each where acknowledged.
        assert_eq!(count_duplicates(&read), 0, "a message was written twice");
        assert_eq!(read.len() as u64, MESSAGES, "records in the log");
        assert_acked_present("consumed", &acked, &read);
        // In order per partition: each partition's messages in the order they were sent.
        for partition in 0..PARTITIONS {
            let ns: Vec<u64> = read
                .range((partition, 0)..(partition + 1, 0))
                .map(|(_, v)| v.strip_prefix("m-").unwrap().parse().unwrap())
                .collect();
            assert!(
                ns.windows(2).all(|w| w[0] < w[1]),
                "{TOPIC}-{partition} holds its messages out of order"
            );
        }

        cluster.kill9_all();
        let on_disk = compare_replicas(&cluster, TOPIC, &hws);
        assert_eq!(on_disk, read, "every replica holds what consumers read");
    })
    .await;
}

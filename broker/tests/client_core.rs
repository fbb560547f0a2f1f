//! What the client core gives language bindings (issue "client core ready for bindings"),
//! against the real broker: its own runtime (no ambient tokio, any thread, fork), blocking entry
//! points, one result handle per batch, `flush`/`close` reports, in-band rebalance events (C14),
//! pause/resume and a per-call record limit, a missing topic failing fast (C15), use after close
//! (C16), and `poll` keeping its timeout while an auto-commit is stuck.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use sluiceway_core::client::{
    Admin, AdminConfig, Consumer, ConsumerConfig, NewTopic, OffsetReset, OffsetSpec,
    PartitionOffset, Producer, ProducerConfig, ProducerRecord, RebalanceEvent, TopicPartition,
};
use sluiceway_core::{Error, ErrorCode, Offset};

use crate::client::{consumer_config, create, poll_n, producer, send_values, tps, value};
use crate::support::{CONDITION_TIMEOUT, TEST_TIMEOUT, TestBroker, bounded, wait_until};
use sluiceway_testing::wait_until_blocking;

fn records(topic: &str, n: u32) -> Vec<ProducerRecord> {
    (0..n)
        .map(|i| ProducerRecord::new(topic, format!("v{i}")))
        .collect()
}

/// A plain thread with no tokio runtime anywhere (what a Python or JVM thread is): every call
/// works through the blocking entry points, from several threads at once.
#[test]
fn clients_work_from_threads_without_a_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path());
    // Topic creation through the async Admin on a throwaway runtime of the test's own.
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(create(&b, "plain", 2));
    assert!(tokio::runtime::Handle::try_current().is_err());
    let producer = Producer::new_blocking(
        ProducerConfig::from_map([("bootstrap.servers", b.addr.as_str())]).unwrap(),
    )
    .expect("producer without a runtime");
    std::thread::scope(|s| {
        for t in 0..3 {
            let producer = &producer;
            s.spawn(move || {
                let batch = producer
                    .send_batch_blocking(records("plain", 100))
                    .expect("send_batch_blocking");
                let results = batch
                    .wait_blocking(Some(Duration::from_secs(30)))
                    .expect("resolved in time");
                assert_eq!(results.len(), 100, "thread {t}");
                assert!(results.iter().all(Result::is_ok), "thread {t}");
            });
        }
    });
    let one = producer
        .send_blocking(ProducerRecord::new("plain", "last").partition(1))
        .unwrap();
    let m = one
        .wait_blocking(Some(Duration::from_secs(30)))
        .expect("resolved")
        .expect("delivered");
    assert_eq!(m.partition, 1);
    assert!(one.is_done());
    producer.flush_blocking(None).expect("nothing failed");
    producer.close_blocking(None).expect("closed cleanly");

    let consumer = Consumer::new_blocking(
        ConsumerConfig::new(&b.addr).auto_offset_reset(OffsetReset::Earliest),
    )
    .expect("consumer without a runtime");
    consumer.assign(tps("plain", 2)).unwrap();
    let mut n = 0;
    wait_until_blocking("301 records polled", CONDITION_TIMEOUT, || {
        n += consumer
            .poll_blocking(Duration::from_secs(1))
            .expect("poll_blocking")
            .len();
        n >= 301
    });
    assert_eq!(n, 301);
    consumer
        .seek_to_beginning_blocking(None)
        .expect("seek without a runtime");
    assert_eq!(
        consumer
            .position_blocking(&TopicPartition::new("plain", 1))
            .unwrap(),
        Offset(0)
    );
    consumer.close_blocking(None).unwrap();
}

/// Polls `fut` to completion on this thread, parking between wake-ups: an executor that is not
/// tokio's (as UniFFI's foreign futures or another async runtime are).
fn plain<F: std::future::Future>(fut: F) -> F::Output {
    struct ThreadWaker(std::thread::Thread);
    impl std::task::Wake for ThreadWaker {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// `poll_columns_now`, what a binding calls on its event-loop thread: from a plain thread with
/// no runtime, it never waits, returns only what is fetched and decoded (or `None`), and
/// together with the waiting poll hands every record over once, in order; a bad `max_records`
/// and a closed consumer are the caller's errors.
#[test]
fn poll_columns_now_takes_what_is_ready_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path());
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        create(&b, "now", 1).await;
        let p = producer(&b, &[("batch.size", "4096")]).await;
        send_values(&p, "now", 0..3000).await;
        p.close(None).await.unwrap();
    });
    assert!(tokio::runtime::Handle::try_current().is_err());
    let c = Consumer::new_blocking(
        ConsumerConfig::new(&b.addr)
            .auto_offset_reset(OffsetReset::Earliest)
            .max_partition_fetch_bytes(16 << 10),
    )
    .unwrap();
    c.assign(tps("now", 1)).unwrap();
    let e = c.poll_columns_now(Some(0)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
    let mut offsets: Vec<u64> = Vec::new();
    let (mut at_once, mut waited) = (0, 0);
    wait_until_blocking("3000 records taken", CONDITION_TIMEOUT, || {
        let batch = match c.poll_columns_now(Some(100)).unwrap() {
            Some(b) => {
                at_once += 1;
                b
            }
            None => {
                waited += 1;
                plain(c.poll_columns(Duration::from_secs(1), Some(100))).unwrap()
            }
        };
        assert!(batch.records.len() <= 100);
        offsets.extend(&batch.records.offsets);
        offsets.len() >= 3000
    });
    assert_eq!(
        offsets,
        (0..3000).collect::<Vec<_>>(),
        "each once, in order"
    );
    assert!(
        at_once > 0,
        "{at_once} polls answered at once, {waited} waited"
    );
    assert!(
        c.poll_columns_now(None).unwrap().is_none(),
        "caught up: nothing ready"
    );
    c.close_blocking(None).unwrap();
    let e = c.poll_columns_now(None).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Closed, "{e}");
}

/// The admin client's async methods work outside tokio, like the producer's and consumer's:
/// each call is polled with the client runtime's context entered.
#[test]
fn admin_async_methods_work_from_another_executor() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path());
    assert!(tokio::runtime::Handle::try_current().is_err());
    let admin = plain(Admin::new(AdminConfig::new(&b.addr))).expect("admin");
    plain(admin.create_topic(NewTopic::new("foreign", 2))).expect("create");
    let d = plain(admin.describe_topic("foreign")).expect("describe");
    assert_eq!(d.topic.partitions.len(), 2);
    let listed = plain(admin.list_topics()).expect("list");
    assert!(listed.iter().any(|t| t.name == "foreign"));
    let tp = TopicPartition::new("foreign", 1);
    let offsets = plain(admin.list_offsets(&[(tp, OffsetSpec::Latest)]));
    assert_eq!(offsets[0].as_ref().expect("offset").offset, Some(Offset(0)));
    assert!(
        plain(admin.describe_cluster())
            .expect("cluster")
            .brokers
            .len()
            == 1
    );
    plain(admin.list_groups()).expect("groups");
    plain(admin.describe_group("nobody")).expect("a dead group");
    plain(admin.delete_topic("foreign")).expect("delete");
}

/// After `fork()` a client made in the parent fails at once in the child with CLOSED and a
/// message saying what to do; a client made in the child works (it gets its own runtime).
#[test]
#[allow(unsafe_code)] // fork() and waitpid() have no safe std wrapper.
fn a_client_from_before_fork_fails_clearly_in_the_child() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path());
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(create(&b, "forked", 1));
    let config = ProducerConfig::from_map([("bootstrap.servers", b.addr.as_str())]).unwrap();
    let parent = Producer::new_blocking(config.clone()).unwrap();
    parent
        .send_blocking(ProducerRecord::new("forked", "from the parent"))
        .unwrap()
        .wait_blocking(Some(Duration::from_secs(30)))
        .unwrap()
        .unwrap();
    // A record still lingering in the parent's producer when the process forks.
    let lingering = Producer::new_blocking(config.clone().linger(Duration::from_secs(60))).unwrap();
    let pending = lingering
        .send_batch_blocking(vec![ProducerRecord::new("forked", "lingering")])
        .unwrap();
    // SAFETY: the child only runs Rust code that allocates and starts threads, as a Python
    // child does after os.fork(); it leaves with _exit, never returning into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: a hang in the child (a wait that never returns) kills it instead of the test.
        unsafe { libc::alarm(30) };
        let code = (|| {
            // Waiting without a timeout in the child for what only the parent can send.
            match pending.wait_blocking(None).as_deref() {
                Some([Err(e)]) if e.code() == ErrorCode::Closed => {}
                _ => return 14,
            }
            let e = match parent.send_blocking(ProducerRecord::new("forked", "child")) {
                Err(e) => e,
                Ok(_) => return 10,
            };
            if e.code() != ErrorCode::Closed || !e.to_string().contains("after fork()") {
                return 11;
            }
            let Ok(child) = Producer::new_blocking(config) else {
                return 12;
            };
            let delivered = child
                .send_blocking(ProducerRecord::new("forked", "from the child"))
                .ok()
                .and_then(|f| f.wait_blocking(Some(Duration::from_secs(30))));
            if !matches!(delivered, Some(Ok(_))) {
                return 13;
            }
            0
        })();
        // SAFETY: ends the child without running the parent's destructors or test harness.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child failed its checks (status {status:#x}: exit code {})",
        libc::WEXITSTATUS(status)
    );
    // The parent's clients are unaffected.
    lingering
        .flush_blocking(None)
        .expect("the lingering record is delivered");
    assert!(pending.wait_blocking(None).unwrap()[0].is_ok());
    lingering.close_blocking(None).unwrap();
    parent
        .send_blocking(ProducerRecord::new("forked", "after"))
        .unwrap()
        .wait_blocking(Some(Duration::from_secs(30)))
        .unwrap()
        .unwrap();
    parent.close_blocking(None).unwrap();
}

/// One handle per batch: a result per record in order, an unknown topic's records failed in
/// their slots, and `flush` reporting the failures since the previous report once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_has_one_handle_and_flush_reports_failures() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path());
    bounded(TEST_TIMEOUT, async {
        create(&b, "t", 2).await;
        let p = producer(&b, &[]).await;
        let mut batch = records("t", 3);
        batch.insert(1, ProducerRecord::new("no-such-topic", "x"));
        batch.push(ProducerRecord::new("t", "p9").partition(9));
        let handle = p.send_batch(batch).await.unwrap();
        assert_eq!(handle.len(), 5);
        let results = handle.wait().await;
        assert!(handle.is_done());
        assert_eq!(handle.try_results().map(|r| r.len()), Some(5));
        assert!(results[0].is_ok() && results[2].is_ok() && results[3].is_ok());
        assert_eq!(
            results[1].as_ref().unwrap_err().code(),
            ErrorCode::UnknownTopicOrPartition
        );
        let e = results[4].as_ref().unwrap_err();
        assert_eq!(e.code(), ErrorCode::UnknownTopicOrPartition);
        assert!(e.to_string().contains("no partition 9"), "{e}");
        // Inside one topic's run (queued in one go) too: a record over the size limit fails
        // alone, a keyed one lands on Kafka's partition for its key, the rest in order.
        let mut run = records("t", 2);
        run.insert(1, ProducerRecord::new("t", vec![0u8; 17 << 20]));
        run.push(ProducerRecord::new("t", "keyed").key("hello"));
        let results = p.send_batch(run).await.unwrap().wait().await;
        assert_eq!(
            results[1].as_ref().unwrap_err().code(),
            ErrorCode::MessageTooLarge
        );
        assert!(results[0].is_ok() && results[2].is_ok());
        assert_eq!(
            results[3].as_ref().unwrap().partition,
            sluiceway_core::partitioner::partition_for_key(b"hello", 2)
        );
        // Records refused before queuing are the caller's to see in the results; nothing that
        // was queued failed, so flush is Ok.
        p.flush(None).await.expect("nothing queued failed");

        // A record that fails after queuing (too large for the topic's max.message.bytes) is
        // reported by the next flush, once.
        admin_create_small(&b).await;
        let f = p
            .send(ProducerRecord::new("small", vec![b'x'; 2048]))
            .await
            .unwrap();
        match p.flush(Some(Duration::from_secs(20))).await {
            Err(Error::Undelivered {
                failed: 1,
                pending: 0,
                first_error: Some(first),
            }) => assert_eq!(first.code(), ErrorCode::MessageTooLarge, "{first}"),
            other => panic!("flush must report the failed record: {other:?}"),
        }
        assert_eq!(f.await.unwrap_err().code(), ErrorCode::MessageTooLarge);
        p.flush(None).await.expect("reported once");
        p.close(None).await.unwrap();
        // Use after close: CLOSED, for the producer too.
        let e = p.send(ProducerRecord::new("t", "late")).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::Closed);
    })
    .await;
}

async fn admin_create_small(b: &TestBroker) {
    crate::client::admin(b)
        .await
        .create_topic(
            sluiceway_core::client::NewTopic::new("small", 1).config("max.message.bytes", "1024"),
        )
        .await
        .unwrap();
}

/// C15: a batch of 1,000 records to a topic that does not exist fails record by record with
/// UNKNOWN_TOPIC_OR_PARTITION after one metadata lookup (the broker counts them), well within
/// the metadata timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c15_a_missing_topic_fails_a_whole_batch_with_one_lookup() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start_with(dir.path(), &["--metrics-listen", "127.0.0.1:0"]);
    bounded(TEST_TIMEOUT, async {
        create(&b, "t", 1).await;
        let p = producer(&b, &[("max.block.ms", "10000")]).await;
        let before = b.requests_handled("metadata").await;
        let handle = tokio::time::timeout(
            Duration::from_secs(10),
            p.send_batch(records("mistyped", 1000)),
        )
        .await
        .expect("fails within max.block.ms")
        .unwrap();
        let results = handle.wait().await;
        assert_eq!(results.len(), 1000);
        for r in &results {
            let e = r.as_ref().unwrap_err();
            assert_eq!(e.code(), ErrorCode::UnknownTopicOrPartition, "{e}");
            assert!(e.to_string().contains("mistyped"), "{e}");
        }
        let lookups = b.requests_handled("metadata").await - before;
        assert!(
            lookups <= 2,
            "{lookups} metadata lookups for one missing topic"
        );
        p.close(None).await.unwrap();
    })
    .await;
}

/// C16: a closed consumer's `poll` (and commit, seek) fail at once with CLOSED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c16_a_closed_consumer_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path());
    bounded(TEST_TIMEOUT, async {
        create(&b, "t", 1).await;
        let c = Consumer::new(consumer_config(&b)).await.unwrap();
        c.assign(tps("t", 1)).unwrap();
        c.close(None).await.unwrap();
        for e in [
            c.poll(Duration::from_secs(30)).await.unwrap_err(),
            c.commit().await.unwrap_err(),
            c.seek_to_end(None).await.unwrap_err(),
        ] {
            assert_eq!(e.code(), ErrorCode::Closed, "{e}");
            assert!(e.to_string().contains("consumer is closed"), "{e}");
            assert!(!e.is_retriable());
        }
        c.close(None).await.expect("closing twice is harmless");
    })
    .await;
}

/// Pausing a partition stops its records until it is resumed, without losing or repeating
/// any; `poll_batch` takes a per-call record limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_a_per_call_record_limit() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path());
    bounded(TEST_TIMEOUT, async {
        create(&b, "pr", 2).await;
        let p = producer(&b, &[]).await;
        for part in 0..2 {
            let batch = (0..50)
                .map(|i| ProducerRecord::new("pr", format!("p{part}-{i}")).partition(part))
                .collect();
            crate::client::deliver_all(p.send_batch(batch).await.unwrap()).await;
        }
        let c = Consumer::new(consumer_config(&b)).await.unwrap();
        let (p0, p1) = (TopicPartition::new("pr", 0), TopicPartition::new("pr", 1));
        c.assign(vec![p0.clone(), p1.clone()]).unwrap();
        c.pause(std::slice::from_ref(&p0)).unwrap();
        assert_eq!(c.paused(), std::slice::from_ref(&p0));
        let mut got = Vec::new();
        while got.len() < 50 {
            let batch = c.poll_batch(Duration::from_secs(5), Some(7)).await.unwrap();
            assert!(batch.records.len() <= 7, "{}", batch.records.len());
            got.extend(batch.records);
        }
        assert!(got.iter().all(|r| r.partition == 1));
        assert!(
            c.poll(Duration::from_millis(300)).await.unwrap().is_empty(),
            "nothing from the paused partition"
        );
        c.resume(std::slice::from_ref(&p0)).unwrap();
        assert!(c.paused().is_empty());
        let rest = poll_n(&c, 50).await;
        let values: Vec<String> = rest.iter().map(value).collect();
        let want: Vec<String> = (0..50).map(|i| format!("p0-{i}")).collect();
        assert_eq!(
            values, want,
            "paused records come after resume, once, in order"
        );
        let e = c
            .poll_batch(Duration::from_millis(1), Some(0))
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
        assert!(e.to_string().contains("max_records 0"), "{e}");
        let e = c.pause(&[TopicPartition::new("pr", 7)]).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
        c.close(None).await.unwrap();
    })
    .await;
}

/// Headers (issue #14): records with headers go in magic 2 batches, records without stay magic
/// 1, both queued to one partition in one burst (the producer never joins batches of two magics
/// into one request: the broker would refuse the set); every record and header reads back in
/// order, a consumer caught up at the end of a magic 2 batch parks in its long poll (it once
/// took the batch's first offset for its last and fetched the batch again and again), and too
/// many headers is the caller's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_round_trip_beside_records_without() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start_with(dir.path(), &["--metrics-listen", "127.0.0.1:0"]);
    bounded(TEST_TIMEOUT, async {
        create(&b, "hdr", 1).await;
        // Small batches, so the burst makes many of them, alternating magics.
        let p = producer(&b, &[("batch.size", "512"), ("linger.ms", "20")]).await;
        let batch: Vec<ProducerRecord> = (0..300)
            .map(|i| {
                let r = ProducerRecord::new("hdr", format!("v{i}"));
                if (i / 50) % 2 == 1 {
                    r.header("trace", Some(format!("t{i}").into()))
                        .header("null", None)
                        .header("trace", Some("again".into()))
                } else {
                    r
                }
            })
            .collect();
        crate::client::deliver_all(p.send_batch(batch).await.unwrap()).await;
        let c = Consumer::new(consumer_config(&b)).await.unwrap();
        c.assign(vec![TopicPartition::new("hdr", 0)]).unwrap();
        let got = poll_n(&c, 300).await;
        for (i, r) in got.iter().enumerate() {
            assert_eq!(value(r), format!("v{i}"), "in order");
            let headers: Vec<(String, Option<Vec<u8>>)> = r
                .headers
                .iter()
                .map(|h| (h.key.clone(), h.value.as_ref().map(|v| v.to_vec())))
                .collect();
            if (i / 50) % 2 == 1 {
                assert_eq!(
                    headers,
                    [
                        ("trace".to_owned(), Some(format!("t{i}").into_bytes())),
                        ("null".to_owned(), None),
                        ("trace".to_owned(), Some(b"again".to_vec())),
                    ],
                    "record {i}"
                );
            } else {
                assert!(headers.is_empty(), "record {i}");
            }
        }
        // The last records (250..300) have headers: the log ends with magic 2 batches.
        b.wait_metric(
            "sluiceway_waiting_fetches",
            "the caught-up consumer's fetch parked in its long poll",
            |v| v >= 1.0,
        )
        .await;
        let mut r = ProducerRecord::new("hdr", "x");
        for i in 0..=sluiceway_core::limits::RECORD_HEADERS_MAX {
            r = r.header(format!("h{i}"), None);
        }
        let e = p.send(r).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
        assert!(e.to_string().contains("headers"), "{e}");
        c.close(None).await.unwrap();
        p.close(None).await.unwrap();
    })
    .await;
}

fn group_member(b: &TestBroker, group: &str, auto_commit: bool) -> ConsumerConfig {
    let mut c = ConsumerConfig::new(&b.addr)
        .group_id(group)
        .auto_offset_reset(OffsetReset::Earliest)
        .enable_auto_commit(auto_commit)
        .fetch_max_wait(Duration::from_millis(100))
        .max_poll_interval(Duration::from_secs(20));
    c.set("auto.commit.interval.ms", "100").unwrap();
    c
}

/// C14: member 1 owns all 4 partitions of a topic and commits nothing by itself; member 2
/// joins. Member 1 sees a revoke with its positions before its partitions move and commits in
/// it; member 2 gets an assignment starting exactly at those commits; nothing is read twice or
/// skipped, and each member gets its share within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c14_a_revoke_lets_the_member_commit_before_its_partitions_move() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path());
    bounded(TEST_TIMEOUT, async {
        create(&b, "rb", 4).await;
        let p = producer(&b, &[]).await;
        send_values(&p, "rb", 0..400).await;

        let one = Consumer::new(group_member(&b, "r", false)).await.unwrap();
        one.subscribe(["rb"]).await.unwrap();
        let mut read: Vec<String> = Vec::new();
        // Member 1 is assigned everything and reads part of it.
        let mut assigned = None;
        while assigned.is_none() || read.len() < 100 {
            let batch = one
                .poll_batch(Duration::from_secs(5), Some(20))
                .await
                .unwrap();
            for e in batch.events {
                if let RebalanceEvent::Assigned(ps) = e {
                    assigned = Some(ps);
                }
            }
            read.extend(batch.records.iter().map(value));
        }
        let assigned = assigned.unwrap();
        assert_eq!(assigned.len(), 4);
        assert!(
            assigned.iter().all(|p| p.offset.is_none()),
            "no commits yet"
        );

        let two = Consumer::new(group_member(&b, "r", false)).await.unwrap();
        two.subscribe(["rb"]).await.unwrap();
        // Member 1 keeps polling: the revoke arrives in band with its positions.
        let revoked = loop {
            let batch = one
                .poll_batch(Duration::from_secs(5), Some(20))
                .await
                .unwrap();
            read.extend(batch.records.iter().map(value));
            if let Some(ps) = batch.events.into_iter().find_map(|e| match e {
                RebalanceEvent::Revoked(ps) => Some(ps),
                RebalanceEvent::Assigned(_) => None,
            }) {
                break ps;
            }
        };
        let mut positions: Vec<PartitionOffset> = revoked.clone();
        positions.sort_by_key(|p| p.partition);
        let total: u64 = positions.iter().map(|p| p.offset.unwrap().0).sum();
        assert_eq!(
            total as usize,
            read.len(),
            "positions cover exactly what was read"
        );
        assert!(one.assignment().is_empty(), "revoked partitions are gone");
        // Commit in reaction to the revoke (commit() commits the revoked positions).
        one.commit()
            .await
            .expect("commit while the revoke is pending");

        // Both members get their share; member 2 starts exactly at member 1's commits.
        let mut two_start = Vec::new();
        let mut one_has = false;
        wait_until(
            "both members got partitions",
            CONDITION_TIMEOUT,
            async || {
                for (c, is_one) in [(&one, true), (&two, false)] {
                    let batch = c
                        .poll_batch(Duration::from_millis(200), None)
                        .await
                        .unwrap();
                    for e in batch.events {
                        if let RebalanceEvent::Assigned(ps) = e {
                            if is_one {
                                one_has = !ps.is_empty();
                            } else {
                                two_start = ps;
                            }
                        }
                    }
                    read.extend(batch.records.iter().map(value));
                }
                !two_start.is_empty() && one_has
            },
        )
        .await;
        for s in &two_start {
            let committed = positions
                .iter()
                .find(|p| p.partition == s.partition)
                .and_then(|p| p.offset);
            assert_eq!(s.offset, committed, "member 2 starts at the commit");
        }
        while read.len() < 400 {
            for c in [&one, &two] {
                read.extend(
                    c.poll(Duration::from_millis(200))
                        .await
                        .unwrap()
                        .iter()
                        .map(value),
                );
            }
        }
        let distinct: BTreeSet<&String> = read.iter().collect();
        assert_eq!(read.len(), 400, "nothing read twice");
        assert_eq!(distinct.len(), 400);
        one.close(None).await.unwrap();
        two.close(None).await.unwrap();
    })
    .await;
}

/// Regression (seen from the Kotlin tests): a revoke that wakes a poll already waiting must be
/// pending when that poll returns the event, so that `commit()` commits the revoked positions
/// and the next poll acknowledges it. Published in two steps, the member rejoined only after
/// half of `max.poll.interval.ms` (here 30 s) and the commit missed the revoked positions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_that_wakes_a_waiting_poll_is_acknowledged_by_the_next_poll() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path());
    bounded(TEST_TIMEOUT, async {
        create(&b, "rw", 2).await;
        let p = producer(&b, &[]).await;
        send_values(&p, "rw", 0..40).await;
        let config = || group_member(&b, "w", false).max_poll_interval(Duration::from_secs(60));

        let one = Consumer::new(config()).await.unwrap();
        one.subscribe(["rw"]).await.unwrap();
        let mut read = 0;
        while read < 40 {
            read += one
                .poll_batch(Duration::from_secs(5), None)
                .await
                .unwrap()
                .records
                .len();
        }
        // Member 1 waits in poll with nothing left to read when member 2 joins: the revoke
        // wakes that poll.
        let two = Consumer::new(config()).await.unwrap();
        let (batch, joined) = tokio::join!(
            one.poll_batch(Duration::from_secs(10), None),
            two.subscribe(["rw"])
        );
        joined.unwrap();
        let revoked = batch
            .unwrap()
            .events
            .into_iter()
            .find_map(|e| match e {
                RebalanceEvent::Revoked(ps) => Some(ps),
                RebalanceEvent::Assigned(_) => None,
            })
            .expect("the waiting poll returns the revoke");
        one.commit().await.unwrap();
        let started = Instant::now();
        let (mut one_has, mut two_start) = (false, Vec::new());
        while (!one_has || two_start.is_empty()) && started.elapsed() < Duration::from_secs(20) {
            for (c, is_one) in [(&one, true), (&two, false)] {
                for e in c
                    .poll_batch(Duration::from_millis(200), None)
                    .await
                    .unwrap()
                    .events
                {
                    if let RebalanceEvent::Assigned(ps) = e {
                        if is_one {
                            one_has = !ps.is_empty();
                        } else {
                            two_start = ps;
                        }
                    }
                }
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the rebalance took {:?}: the revoke was not acknowledged by the next poll",
            started.elapsed()
        );
        assert!(one_has && !two_start.is_empty());
        for s in &two_start {
            let end = revoked.iter().find(|r| r.partition == s.partition).unwrap();
            assert_eq!(
                s.offset, end.offset,
                "member 2 starts at the revoked position"
            );
        }
        one.close(None).await.unwrap();
        two.close(None).await.unwrap();
    })
    .await;
}

/// `poll(timeout)` returns within its timeout while the group coordinator does not answer an
/// auto-commit (the commit runs in the background).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_keeps_its_timeout_while_an_auto_commit_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path());
    bounded(TEST_TIMEOUT, async {
        create(&b, "ac", 1).await;
        let p = producer(&b, &[]).await;
        send_values(&p, "ac", 0..10).await;
        let c = Consumer::new(group_member(&b, "hang", true)).await.unwrap();
        c.subscribe(["ac"]).await.unwrap();
        poll_n(&c, 10).await;
        let stop = |sig: &str| {
            let ok = Command::new("kill")
                .args([sig, &b.pid().to_string()])
                .status()
                .unwrap()
                .success();
            assert!(ok, "kill {sig}");
        };
        stop("-STOP");
        // The scenario, not a synchronisation: longer than the 100 ms auto-commit interval,
        // so the next poll finds an auto-commit due (and the stopped broker never answers it).
        tokio::time::sleep(Duration::from_millis(150)).await;
        for _ in 0..3 {
            // Each of these starts or finds an auto-commit the stopped broker never answers
            // (request.timeout.ms is 30 s); the poll must not wait for it.
            let r =
                tokio::time::timeout(Duration::from_secs(5), c.poll(Duration::from_millis(200)))
                    .await;
            if r.is_err() {
                stop("-CONT");
                panic!("poll(200 ms) blocked on the auto-commit");
            }
        }
        stop("-CONT");
        c.close(None).await.ok();
    })
    .await;
}

/// A `poll` dropped before it returns (a `select!` or a timeout around it) takes no records:
/// calls are cancelled with their future, so every record still arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_poll_loses_no_records() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path());
    bounded(TEST_TIMEOUT, async {
        create(&b, "drop", 1).await;
        let p = producer(&b, &[]).await;
        let c = Consumer::new(consumer_config(&b)).await.unwrap();
        c.assign(tps("drop", 1)).unwrap();
        let mut got = Vec::new();
        // Records arrive while polls are being abandoned after a few milliseconds each.
        let sender = async {
            for i in 0..20 {
                send_values(&p, "drop", i * 10..(i + 1) * 10).await;
                // The scenario's pace (records keep arriving while polls are abandoned).
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        };
        let abandoning = async {
            for _ in 0..200 {
                if let Ok(r) =
                    tokio::time::timeout(Duration::from_millis(2), c.poll(Duration::from_secs(5)))
                        .await
                {
                    got.extend(r.unwrap().iter().map(value));
                }
            }
        };
        tokio::join!(sender, abandoning);
        while got.len() < 200 {
            got.extend(
                c.poll(Duration::from_secs(5))
                    .await
                    .unwrap()
                    .iter()
                    .map(value),
            );
        }
        let want: Vec<String> = (0..200).map(|i| format!("v{i}")).collect();
        assert_eq!(got, want, "every record once, in order");
        c.close(None).await.unwrap();
    })
    .await;
}

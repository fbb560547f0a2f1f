//! Restarts: every acknowledged message survives SIGTERM and `kill -9` (default flush policy).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sluiceway_core::ErrorCode;
use sluiceway_proto::v1;

use crate::support::*;

/// Acknowledged messages after which `kill -9` lands in the middle of the load.
const KILL_AFTER_ACKED: usize = 200;

async fn produce_batch(
    b: &TestBroker,
    topic: &str,
    partitions: u32,
    from: usize,
    n: usize,
) -> Vec<(u32, String)> {
    let mut c = b.client().await;
    let mut acked = Vec::new();
    for i in from..from + n {
        let p = (i as u32) % partitions;
        let v = format!("msg-{i}");
        let resp = c
            .log
            .produce(v1::ProduceRequest {
                acks: 1,
                timeout_ms: 0,
                session: 0,
                partitions: vec![produce_partition(topic, p, set_of(&[&v]))],
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            code(resp.results[0].error_code),
            ErrorCode::None,
            "{}",
            resp.results[0].error_message
        );
        acked.push((p, v));
    }
    acked
}

async fn assert_all_there(b: &TestBroker, topic: &str, partitions: u32, acked: &[(u32, String)]) {
    let mut c = b.client().await;
    for p in 0..partitions {
        let want: Vec<&str> = acked
            .iter()
            .filter(|(q, _)| *q == p)
            .map(|(_, v)| v.as_str())
            .collect();
        let got: Vec<String> = fetch_all(&mut c, topic, p, 0)
            .await
            .into_iter()
            .map(|(_, v)| String::from_utf8(v).unwrap())
            .collect();
        assert_eq!(got, want, "partition {p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_sigterm_and_after_kill_9_loses_nothing_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = TestBroker::start(tmp.path());
    {
        let mut c = b.client().await;
        create_topic(&mut c, "d", 3, &[("segment.bytes", "4096")]).await;
    }
    let mut acked = produce_batch(&b, "d", 3, 0, 300).await;

    // Graceful: SIGTERM exits 0 and marks the logs cleanly closed.
    let status = b.stop();
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        b.log_text()
    );
    assert!(b.log_text().contains("logs closed cleanly"));
    let log_len = b.log_text().len();
    let b = TestBroker::start(tmp.path());
    assert_all_there(&b, "d", 3, &acked).await;
    // A clean shutdown leaves nothing to recover.
    assert!(
        !b.log_text()[log_len..].contains("recovering the log"),
        "{}",
        b.log_text()
    );
    acked.extend(produce_batch(&b, "d", 3, 300, 300).await);
    assert_all_there(&b, "d", 3, &acked).await;

    // kill -9 right after the last acknowledgement.
    let mut b = b;
    b.kill9();
    let log_len = b.log_text().len();
    let b = TestBroker::start(tmp.path());
    assert_all_there(&b, "d", 3, &acked).await;
    // After kill -9 the active segments are recovered (CRC-checked from the last clean point).
    assert!(
        b.log_text()[log_len..].contains("recovering the log"),
        "{}",
        b.log_text()
    );
    // New appends continue after the recovered end.
    let mut c = b.client().await;
    let r = produce(&mut c, "d", 0, set_of(&["after"])).await;
    assert_eq!(
        r.base_offset,
        acked.iter().filter(|(p, _)| *p == 0).count() as i64
    );
    // Topics survive restarts too.
    let topics = c
        .admin
        .list_topics(v1::ListTopicsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        topics
            .topics
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>(),
        ["d"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_concurrent_load_keeps_every_acknowledged_message() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = TestBroker::start(tmp.path());
    let mut c = b.client().await;
    create_topic(&mut c, "load", 4, &[]).await;
    // Four producers (one per partition) run until the broker dies; record what was acknowledged.
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for p in 0..4u32 {
        let mut c = c.clone();
        let acknowledged = acknowledged.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0.. {
                let v = format!("p{p}-{i}");
                let r = c
                    .log
                    .produce(v1::ProduceRequest {
                        acks: 1,
                        timeout_ms: 0,
                        session: 0,
                        partitions: vec![produce_partition("load", p, set_of(&[&v]))],
                    })
                    .await;
                match r {
                    Ok(resp) if resp.get_ref().results[0].error_code == 0 => {
                        acked.push((p, v));
                        acknowledged.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => break,
                }
            }
            acked
        }));
    }
    // Kill it in the middle of the load: once every producer is running and some hundreds of
    // messages are acknowledged (the kill then lands between or during writes, under load).
    wait_until(
        "the producers have messages acknowledged",
        CONDITION_TIMEOUT,
        async || acknowledged.load(Ordering::Relaxed) >= KILL_AFTER_ACKED,
    )
    .await;
    b.kill9();
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    assert!(
        acked.len() >= KILL_AFTER_ACKED,
        "only {} messages acknowledged before the kill",
        acked.len()
    );
    let b = TestBroker::start(tmp.path());
    let mut c = b.client().await;
    for p in 0..4u32 {
        let want: Vec<&str> = acked
            .iter()
            .filter(|(q, _)| *q == p)
            .map(|(_, v)| v.as_str())
            .collect();
        let got: Vec<String> = fetch_all(&mut c, "load", p, 0)
            .await
            .into_iter()
            .map(|(_, v)| String::from_utf8(v).unwrap())
            .collect();
        // Every acknowledged message is there, in order; at most the one in flight at the kill
        // may also have been written without its acknowledgement arriving.
        assert!(
            got.len() >= want.len() && got.len() <= want.len() + 1,
            "partition {p}: {} vs {}",
            got.len(),
            want.len()
        );
        assert_eq!(&got[..want.len()], &want[..], "partition {p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_waiting_fetches_and_exits_promptly() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = TestBroker::start_with(tmp.path(), &["--metrics-listen", "127.0.0.1:0"]);
    let mut c = b.client().await;
    create_topic(&mut c, "w", 1, &[]).await;
    let mut waiter = c.clone();
    let fetch = tokio::spawn(async move {
        waiter
            .log
            .fetch(v1::FetchRequest {
                replica_id: None,
                max_wait_ms: 30_000,
                min_bytes: 1,
                max_bytes: 0,
                partitions: vec![fetch_partition("w", 0, 0)],
            })
            .await
    });
    // The fetch is parked in its long poll before the signal (the broker shows it waiting).
    b.wait_metric(
        "sluiceway_waiting_fetches",
        "the fetch waits in its long poll",
        |n| n == 1.0,
    )
    .await;
    let started = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        let s = b.stop();
        (s, b)
    })
    .await
    .unwrap();
    assert!(status.0.success(), "{}", status.1.log_text());
    // It did not wait for the 30 s long poll.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // The waiting fetch was answered before the broker exited: an empty answer without error
    // (shutdown ends the long poll like max_wait would), not a dropped connection.
    let resp = fetch
        .await
        .unwrap()
        .unwrap_or_else(|status| panic!("the waiting fetch was not answered: {status:?}"))
        .into_inner();
    assert_eq!(code(resp.results[0].error_code), ErrorCode::None);
    assert!(resp.results[0].message_set.is_empty());
}

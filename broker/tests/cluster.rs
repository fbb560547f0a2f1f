//! Clusters on etcd (issue #5's "Done means"): a real etcd and three real brokers
//! ([`TestCluster`]), faults injected with `kill -9`, SIGSTOP/SIGCONT and an etcd restart, and
//! the invariants checked on what clients read and on every replica's disk:
//!
//! - placement: replicas on distinct brokers, leaders spread, `topic describe` in Kafka's layout;
//! - 50,000 `acks=all` messages while the leader is killed three times: nothing acknowledged is
//!   lost, replicas are identical below the high watermark, no offset ever holds two messages
//!   (retry duplicates are counted and printed);
//! - a stopped follower leaves the in-sync set and rejoins after SIGCONT;
//! - consumers never read above the high watermark (followers stopped, acks=1 write invisible);
//! - `min.insync.replicas=2` with two replicas down refuses `acks=all` with NOT_ENOUGH_REPLICAS;
//! - a deposed leader acknowledges nothing and truncates when it rejoins;
//! - consumers and a group keep reading across a failover;
//! - etcd down for seconds does not stop produce and fetch on the existing leaders;
//! - `scripts/cluster.sh` starts three brokers and stops exactly what it started;
//! - group members that bootstrap from different brokers share one coordinator, whose commits
//!   survive its `kill -9`;
//! - preferred replicas lead again after a restart; a rolling restart with SIGTERM fails no
//!   acks=all send and loses nothing;
//! - magic 2 batches beside magic 1 sets replicate as stored, each keeping the epoch of the
//!   leader that appended it, across a leader's `kill -9`.
//!
//! Every test is bounded (a hang is a failure); waits are on conditions with generous deadlines
//! ([`CONDITION_TIMEOUT`]), never assertions on speed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluiceway_core::ErrorCode;
use sluiceway_core::client::{
    Acks, Consumer, DeliveryFuture, Producer, ProducerRecord, TopicPartition,
};
use sluiceway_proto::v1;

use crate::cluster_support::*;
use crate::support::{bin, code, fetch_once, produce_partition, records, set_of};

/// A raw produce of one value to partition 0 through `client` (no client retries, no routing).
async fn raw_produce(
    client: &mut crate::support::Client,
    topic: &str,
    acks: i32,
    value: &str,
    timeout_ms: u32,
) -> Result<ErrorCode, tonic::Status> {
    client
        .log
        .produce(v1::ProduceRequest {
            acks,
            timeout_ms,
            session: 0,
            partitions: vec![produce_partition(topic, 0, set_of(&[value]))],
        })
        .await
        .map(|r| code(r.into_inner().results[0].error_code))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_is_distinct_and_spread_and_describe_prints_kafka_layout() {
    let cluster = TestCluster::start(3, &[]).await;
    bounded(Duration::from_secs(120), async {
        let out = Command::new(bin())
            .env("SLUICEWAY_BOOTSTRAP", cluster.bootstrap())
            .args([
                "topic",
                "create",
                "placed",
                "--partitions",
                "6",
                "--replication-factor",
                "3",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_fully_replicated("placed").await;

        let t = cluster.metadata("placed").await.expect("metadata");
        assert_eq!(t.partitions.len(), 6);
        let mut leads: BTreeMap<i32, usize> = BTreeMap::new();
        for p in &t.partitions {
            let distinct: BTreeSet<i32> = p.replicas.iter().copied().collect();
            assert_eq!(
                distinct,
                BTreeSet::from([1, 2, 3]),
                "partition {}: replicas {:?} are not three distinct brokers",
                p.partition,
                p.replicas
            );
            assert_eq!(p.leader_id, p.replicas[0], "the first replica leads");
            let mut isr = p.isr.clone();
            isr.sort_unstable();
            assert_eq!(
                isr,
                [1, 2, 3],
                "partition {} starts fully in sync",
                p.partition
            );
            *leads.entry(p.leader_id).or_default() += 1;
        }
        assert_eq!(
            leads,
            BTreeMap::from([(1, 2), (2, 2), (3, 2)]),
            "each broker leads two of six partitions"
        );

        let out = Command::new(bin())
            .env("SLUICEWAY_BOOTSTRAP", cluster.bootstrap())
            .args(["topic", "describe", "placed"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("Partition:"))
            .collect();
        assert_eq!(lines.len(), 6, "{text}");
        for (line, p) in lines.iter().zip(&t.partitions) {
            let parsed = parse_describe_line(line)
                .unwrap_or_else(|| panic!("not in the kafka-topics layout: {line:?}"));
            let mut isr = parsed.isr.clone();
            isr.sort_unstable();
            assert_eq!(parsed.partition, p.partition as i32, "{line}");
            assert_eq!(parsed.leader, p.leader_id, "{line}");
            assert_eq!(parsed.replicas, p.replicas, "{line}");
            assert_eq!(isr, [1, 2, 3], "{line}");
            assert_eq!(parsed.leader_epoch, p.leader_epoch, "{line}");
        }
    })
    .await;
}

#[derive(Debug)]
struct DescribeLine {
    partition: i32,
    leader: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    leader_epoch: i32,
}

/// `Partition: 0  Leader: 2  Replicas: 2,3,1  Isr: 2,3,1  LeaderEpoch: 0`, exactly: fields
/// separated by two spaces, ids by commas, nothing else (what the regex
/// `^Partition: \d+  Leader: \d+  Replicas: \d+(,\d+)*  Isr: \d+(,\d+)*  LeaderEpoch: \d+$`
/// accepts; the broker's tests have no regex crate).
fn parse_describe_line(line: &str) -> Option<DescribeLine> {
    let fields: Vec<&str> = line.split("  ").collect();
    let [p, l, r, i, e] = fields.as_slice() else {
        return None;
    };
    let number = |s: &str| -> Option<i32> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
    };
    let list = |s: &str| -> Option<Vec<i32>> { s.split(',').map(number).collect() };
    Some(DescribeLine {
        partition: number(p.strip_prefix("Partition: ")?)?,
        leader: number(l.strip_prefix("Leader: ")?)?,
        replicas: list(r.strip_prefix("Replicas: ")?)?,
        isr: list(i.strip_prefix("Isr: ")?)?,
        leader_epoch: number(e.strip_prefix("LeaderEpoch: ")?)?,
    })
}

/// What the background producer of the kill test recorded.
#[derive(Debug, Default)]
struct Ledger {
    acked: Vec<Acked>,
    failed: Vec<(String, String)>,
}

/// Sends `m-<n>` for every n in `range` through `p` at a bounded pace, keeping a window of
/// sub-batches in flight, recording each outcome in `ledger` and counting settled records in
/// `settled`. When `signal` is given, it fires once the records below `signal.0` were handed to
/// the producer, and sending goes on: the test kills the leader at that moment, mid-stream.
/// When `stop` is given, sending also ends once it is set (the rest of `range` is not sent).
async fn produce_range(
    p: Arc<Producer>,
    topic: &'static str,
    range: std::ops::Range<u64>,
    mut signal: Option<(u64, tokio::sync::oneshot::Sender<()>)>,
    ledger: Arc<Mutex<Ledger>>,
    settled: Arc<AtomicU64>,
    stop: Option<Arc<std::sync::atomic::AtomicBool>>,
) {
    const SUB_BATCH: u64 = 100;
    const WINDOW: usize = 20;
    // A pace (at most 100 records per 20 ms) so that a round outlasts the moment of its kill
    // whatever the machine's speed: the kill always lands while records are still being sent.
    const PAUSE: Duration = Duration::from_millis(20);
    let mut window: VecDeque<(u64, Vec<DeliveryFuture>)> = VecDeque::new();
    async fn settle(
        (start, futures): (u64, Vec<DeliveryFuture>),
        ledger: &Mutex<Ledger>,
        settled: &AtomicU64,
    ) {
        for (i, f) in futures.into_iter().enumerate() {
            let value = format!("m-{}", start + i as u64);
            let outcome = f.await;
            let mut l = ledger.lock().unwrap();
            match outcome {
                Ok(m) => l.acked.push(Acked {
                    partition: m.partition,
                    offset: m.offset.expect("acks=all gives an offset").0,
                    value,
                }),
                Err(e) => l.failed.push((value, e.to_string())),
            }
            settled.fetch_add(1, Ordering::Relaxed);
        }
    }
    let mut start = range.start;
    while start < range.end && !stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
        let end = (start + SUB_BATCH).min(range.end);
        let records = (start..end)
            .map(|n| ProducerRecord::new(topic, format!("m-{n}")))
            .collect();
        window.push_back((start, p.send_batch(records).await.unwrap().into_futures()));
        if signal.as_ref().is_some_and(|(at, _)| end >= *at) {
            let _ = signal.take().unwrap().1.send(());
        }
        // Settle what is done without waiting; wait only when the window is full (a dead leader
        // stalls sending here until the failover).
        while window.len() > WINDOW {
            settle(window.pop_front().unwrap(), &ledger, &settled).await;
        }
        start = end;
        // The pace above (the scenario's load shape), not a synchronisation.
        tokio::time::sleep(PAUSE).await;
    }
    while let Some(w) = window.pop_front() {
        settle(w, &ledger, &settled).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_kill9_three_times_during_50k_acks_all_messages_loses_nothing_acknowledged() {
    const TOPIC: &str = "failover";
    const PARTITIONS: u32 = 3;
    const MESSAGES: u64 = 50_000;
    const KILLS: u64 = 3;
    // One round per kill plus a last quiet one; each kill happens a quarter into its round, while
    // the round's records are still being sent.
    const ROUND: u64 = MESSAGES / (KILLS + 1);
    let mut cluster = TestCluster::start(3, &[]).await;
    bounded(Duration::from_secs(900), async {
        create_rf3(&cluster, TOPIC, PARTITIONS, &[("min.insync.replicas", "2")]).await;
        let p = Arc::new(
            producer(
                &cluster.bootstrap(),
                Acks::All,
                &[("retries", "2147483647"), ("delivery.timeout.ms", "300000")],
            )
            .await,
        );
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let settled = Arc::new(AtomicU64::new(0));
        for round in 0..=KILLS {
            let range = round * ROUND..if round == KILLS {
                MESSAGES
            } else {
                (round + 1) * ROUND
            };
            let (tx, rx) = tokio::sync::oneshot::channel();
            let kill_at = range.start + ROUND / 4;
            let task = tokio::spawn(produce_range(
                p.clone(),
                TOPIC,
                range.clone(),
                (round < KILLS).then_some((kill_at, tx)),
                ledger.clone(),
                settled.clone(),
                None,
            ));
            if round < KILLS {
                tokio::time::timeout(Duration::from_secs(120), rx)
                    .await
                    .expect("the producer reached the kill point")
                    .expect("producer task");
                let partition = (round % u64::from(PARTITIONS)) as u32;
                let (leader, epoch) = partition_state(&cluster, TOPIC, partition).await;
                let killed = std::time::Instant::now();
                cluster.kill9(leader);
                eprintln!(
                    "kill {}: kill -9 broker {leader}, leader of {TOPIC}-{partition} at epoch \
                     {epoch}, with m-0..m-{kill_at} sent and {} settled",
                    round + 1,
                    settled.load(Ordering::Relaxed)
                );
                let (new_leader, new_epoch) = cluster
                    .wait_new_leader(TOPIC, partition, leader, epoch)
                    .await;
                eprintln!(
                    "kill {}: broker {new_leader} leads at epoch {new_epoch}; {} settled \
                     ({:?} after the kill)",
                    round + 1,
                    settled.load(Ordering::Relaxed),
                    killed.elapsed()
                );
                cluster.restart(leader);
                cluster.wait_fully_replicated(TOPIC).await;
                eprintln!(
                    "kill {}: broker {leader} is back in every ISR; {} settled ({:?} after the \
                     kill)",
                    round + 1,
                    settled.load(Ordering::Relaxed),
                    killed.elapsed()
                );
            }
            tokio::time::timeout(Duration::from_secs(300), task)
                .await
                .unwrap_or_else(|_| panic!("round {round}: deliveries did not settle"))
                .expect("producer task");
        }
        p.close(None).await.expect("close producer");

        let (acked, failed) = {
            let mut l = ledger.lock().unwrap();
            (std::mem::take(&mut l.acked), std::mem::take(&mut l.failed))
        };
        eprintln!(
            "{} acknowledged, {} failed of {MESSAGES}",
            acked.len(),
            failed.len()
        );
        assert!(
            failed.is_empty(),
            "{} sends failed although two of three replicas were always up after a failover, \
             e.g. {:?}",
            failed.len(),
            &failed[..failed.len().min(5)]
        );
        assert_acks_distinct(&acked);

        cluster.wait_fully_replicated(TOPIC).await;
        let hws = high_watermarks(&cluster, TOPIC, PARTITIONS).await;
        for a in &acked {
            assert!(
                a.offset < hws[a.partition as usize],
                "{a:?} was acknowledged but is not below the high watermark {hws:?}"
            );
        }
        let read = read_up_to(&cluster.bootstrap(), TOPIC, &hws).await;
        assert_acked_present("consumed", &acked, &read);

        cluster.kill9_all();
        let on_disk = compare_replicas(&cluster, TOPIC, &hws);
        assert_acked_present("every replica", &acked, &on_disk);
        assert_eq!(on_disk, read, "consumers read what the replicas hold");
        for v in on_disk.values() {
            let n: Option<u64> = v.strip_prefix("m-").and_then(|n| n.parse().ok());
            assert!(
                n.is_some_and(|n| n < MESSAGES),
                "a record nobody sent: {v:?}"
            );
        }
        let distinct: BTreeSet<&String> = on_disk.values().collect();
        assert_eq!(
            distinct.len() as u64,
            MESSAGES,
            "every message once or more"
        );
        eprintln!(
            "{} records below the high watermarks {hws:?}; duplicates from producer retries: {}",
            on_disk.len(),
            count_duplicates(&on_disk)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstopped_follower_leaves_the_isr_and_rejoins_after_sigcont() {
    const TOPIC: &str = "paused";
    // A long registry session: only the leader's lag rule (2 s) can take the stopped follower
    // out of the in-sync set, not the expiry of its lease.
    let mut cluster = TestCluster::start(3, &["--registry-session-timeout-ms", "60000"]).await;
    bounded(Duration::from_secs(300), async {
        create_rf3(&cluster, TOPIC, 1, &[("min.insync.replicas", "2")]).await;
        let p = producer(&cluster.bootstrap(), Acks::All, &[]).await;
        let mut acked = send_all(&p, TOPIC, &values("a", 0..1000)).await;
        let (leader, _) = partition_state(&cluster, TOPIC, 0).await;
        let follower = (1..=3).find(|id| *id != leader).unwrap();

        cluster.sigstop(follower);
        eprintln!("SIGSTOP broker {follower} (leader {leader})");
        // Producing with acks=all goes on: the first sends wait until the leader drops the
        // follower from the in-sync set, then everything is acknowledged by the other two.
        let more = tokio::time::timeout(
            CONDITION_TIMEOUT,
            send_all(&p, TOPIC, &values("b", 0..2000)),
        )
        .await
        .expect("acks=all stalled while a follower was stopped");
        acked.extend(more);
        // (The registry view of the broker answering may trail the leader's change by a moment.)
        wait_until(
            &format!("the stopped follower {follower} is out of the ISR"),
            CONDITION_TIMEOUT,
            async || !cluster.isr_of(TOPIC, 0).await.contains(&follower),
        )
        .await;
        assert_eq!(
            cluster.leader_of(TOPIC, 0).await,
            Some(leader),
            "leadership did not move"
        );

        cluster.sigcont(follower);
        eprintln!("SIGCONT broker {follower}");
        wait_until(
            &format!("broker {follower} rejoins the ISR"),
            CONDITION_TIMEOUT,
            async || cluster.isr_of(TOPIC, 0).await.contains(&follower),
        )
        .await;
        acked.extend(send_all(&p, TOPIC, &values("c", 0..500)).await);
        p.close(None).await.unwrap();
        cluster.wait_fully_replicated(TOPIC).await;
        let hws = high_watermarks(&cluster, TOPIC, 1).await;
        cluster.kill9_all();
        let on_disk = compare_replicas(&cluster, TOPIC, &hws);
        assert_acked_present(
            "every replica, the resumed follower included",
            &acked,
            &on_disk,
        );
    })
    .await;
}

/// Issue #17 (Kafka's KIP-841): a follower whose registration is gone catches up with the
/// leader before it registers again. The leader must not propose it for the ISR until it is
/// registered: before the fix the leader added it back, the controller removed it again (it is
/// not registered) and every round bumped the leader epoch — seen going from 2 to 15 within half
/// a second. Now the epoch moves once (the controller's removal) and the follower rejoins after
/// it registers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_caught_up_before_it_registers_again_does_not_make_the_isr_flap() {
    const TOPIC: &str = "flap";
    // A 6 s session: the broker renews its lease every 2 s, so after the revoke it stays
    // unregistered for up to 2 s while it goes on fetching from the leader at the new epoch.
    let mut cluster = TestCluster::start(3, &["--registry-session-timeout-ms", "6000"]).await;
    bounded(Duration::from_secs(300), async {
        create_rf3(&cluster, TOPIC, 1, &[]).await;
        let p = producer(&cluster.bootstrap(), Acks::All, &[]).await;
        let mut acked = send_all(&p, TOPIC, &values("a", 0..1000)).await;
        let (leader, epoch) = partition_state(&cluster, TOPIC, 0).await;
        let controller = cluster.controller().await;
        let follower = (1..=3)
            .find(|id| *id != leader && Some(*id) != controller)
            .expect("a follower that is not the controller");

        cluster.revoke_lease(follower).await;
        eprintln!("revoked the lease of broker {follower} (leader {leader}, epoch {epoch})");
        // The controller takes the unregistered follower out of the ISR: one epoch up.
        wait_for(
            "the controller to remove the unregistered follower",
            CONDITION_TIMEOUT,
            async || {
                let m = cluster.partition(TOPIC, 0).await?;
                (m.leader_epoch > epoch).then_some(())
            },
        )
        .await;
        acked.extend(send_all(&p, TOPIC, &values("b", 0..500)).await);
        // It registers again and the leader takes it back in, without another epoch.
        cluster.wait_registered(3).await;
        wait_until(
            &format!("broker {follower} back in the ISR"),
            CONDITION_TIMEOUT,
            async || cluster.isr_of(TOPIC, 0).await.len() == 3,
        )
        .await;
        acked.extend(send_all(&p, TOPIC, &values("c", 0..500)).await);
        let (after_leader, after_epoch) = partition_state(&cluster, TOPIC, 0).await;
        assert_eq!(after_leader, leader, "leadership did not move");
        assert_eq!(
            after_epoch,
            epoch + 1,
            "the leader epoch moved {} times; only the controller's removal of the \
             unregistered follower should change it (the ISR flapped)",
            after_epoch - epoch
        );
        p.close(None).await.unwrap();
        cluster.wait_fully_replicated(TOPIC).await;
        let hws = high_watermarks(&cluster, TOPIC, 1).await;
        cluster.kill9_all();
        let on_disk = compare_replicas(&cluster, TOPIC, &hws);
        assert_acked_present("every replica", &acked, &on_disk);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_insync_2_with_two_replicas_down_refuses_acks_all_and_loses_nothing_acknowledged() {
    const TOPIC: &str = "minisr";
    let mut cluster = TestCluster::start(3, &[]).await;
    bounded(Duration::from_secs(300), async {
        create_rf3(&cluster, TOPIC, 1, &[("min.insync.replicas", "2")]).await;
        let (leader, _) = partition_state(&cluster, TOPIC, 0).await;
        let followers: Vec<i32> = (1..=3).filter(|id| *id != leader).collect();
        let p = producer(&cluster.broker(leader).addr, Acks::All, &[]).await;
        let mut acked = send_all(&p, TOPIC, &values("a", 0..500)).await;

        // One follower down: two in sync, acks=all still succeeds.
        cluster.kill9(followers[0]);
        let mut two = vec![leader, followers[1]];
        two.sort_unstable();
        wait_until(
            &format!("the ISR shrinks to {two:?}"),
            CONDITION_TIMEOUT,
            async || cluster.isr_of(TOPIC, 0).await == two,
        )
        .await;
        acked.extend(send_all(&p, TOPIC, &values("b", 0..500)).await);
        p.close(None).await.unwrap();

        // The second follower down: only the leader is left.
        cluster.kill9(followers[1]);
        wait_until(
            &format!("the ISR shrinks to [{leader}]"),
            CONDITION_TIMEOUT,
            async || cluster.isr_of(TOPIC, 0).await == [leader],
        )
        .await;
        // Everything acknowledged so far is on the second follower's disk too (it was in sync
        // when each was acknowledged): on two brokers.
        let second = read_replica(&cluster.broker(followers[1]).data_dir(), TOPIC, 0);
        let second: BTreeMap<(u32, u64), String> = second
            .records
            .into_iter()
            .map(|(o, v)| ((0, o), String::from_utf8(v).unwrap()))
            .collect();
        assert_acked_present(
            &format!("the disk of follower {} (killed last)", followers[1]),
            &acked,
            &second,
        );

        // acks=all is refused with NOT_ENOUGH_REPLICAS — and never acknowledged.
        let mut raw = cluster.client(leader).await;
        let mut i = 0;
        wait_until(
            "acks=all is refused with NOT_ENOUGH_REPLICAS",
            CONDITION_TIMEOUT,
            async || {
                i += 1;
                match raw_produce(&mut raw, TOPIC, -1, &format!("x-{i}"), 3000).await {
                    Ok(ErrorCode::NotEnoughReplicas) => true,
                    Ok(ErrorCode::None) => {
                        panic!("acks=all acknowledged x-{i} with one replica in sync")
                    }
                    // The leader may still be applying the shrink: a timeout or
                    // NOT_ENOUGH_REPLICAS_AFTER_APPEND is an error too, which is what matters.
                    Ok(other) => {
                        eprintln!("x-{i}: {other}");
                        false
                    }
                    Err(s) => {
                        eprintln!("x-{i}: {s:?}");
                        false
                    }
                }
            },
        )
        .await;
        // Through the client core, without retries: the typed error code.
        let p = producer(&cluster.broker(leader).addr, Acks::All, &[("retries", "0")]).await;
        let e = p
            .send(ProducerRecord::new(TOPIC, "y-0").partition(0))
            .await
            .expect("send")
            .await
            .expect_err("acks=all with one replica in sync must fail");
        assert_eq!(e.code(), ErrorCode::NotEnoughReplicas, "{e}");
        p.close(None).await.ok();

        // Both followers back: they catch up, and nothing acknowledged is missing anywhere.
        cluster.restart(followers[0]);
        cluster.restart(followers[1]);
        cluster.wait_fully_replicated(TOPIC).await;
        let hws = high_watermarks(&cluster, TOPIC, 1).await;
        cluster.kill9_all();
        let on_disk = compare_replicas(&cluster, TOPIC, &hws);
        assert_acked_present("every replica after the restarts", &acked, &on_disk);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deposed_leader_acknowledges_nothing_and_truncates_when_it_rejoins() {
    const TOPIC: &str = "deposed";
    let mut cluster = TestCluster::start(3, &[]).await;
    bounded(Duration::from_secs(300), async {
        create_rf3(&cluster, TOPIC, 1, &[("min.insync.replicas", "2")]).await;
        let (old, epoch) = partition_state(&cluster, TOPIC, 0).await;
        let p = producer(&cluster.bootstrap(), Acks::All, &[]).await;
        let mut acked = send_all(&p, TOPIC, &values("a", 0..300)).await;
        p.close(None).await.unwrap();

        // Connected before the pause, so that requests can reach the paused leader's socket and
        // be handled the moment it wakes up, before it has heard of its deposition: an acks=all
        // write (must fail) and an acks=1 write (a stale leader may append and acknowledge it, as
        // Kafka's does; either way it creates a divergent tail that must be truncated).
        let mut to_old = cluster.client(old).await;
        let mut to_old_one = cluster.client(old).await;
        cluster.sigstop(old);
        eprintln!("SIGSTOP broker {old}, leader at epoch {epoch}");
        let pending = tokio::spawn(async move {
            let r = raw_produce(&mut to_old, TOPIC, -1, "deposed-0", 10_000).await;
            (r, to_old)
        });
        let pending_one =
            tokio::spawn(
                async move { raw_produce(&mut to_old_one, TOPIC, 1, "stale-0", 10_000).await },
            );

        let (new, new_epoch) = cluster.wait_new_leader(TOPIC, 0, old, epoch).await;
        eprintln!("broker {new} leads at epoch {new_epoch}");
        let p = producer(&cluster.bootstrap_without(old), Acks::All, &[]).await;
        acked.extend(send_all(&p, TOPIC, &values("b", 0..300)).await);

        cluster.sigcont(old);
        eprintln!("SIGCONT broker {old}");
        let (r, mut to_old) = tokio::time::timeout(Duration::from_secs(60), pending)
            .await
            .expect("the deposed leader never answered")
            .unwrap();
        match &r {
            Ok(ErrorCode::None) => {
                panic!("the deposed leader acknowledged an acks=all write it got while deposed")
            }
            Ok(c) => eprintln!("acks=all write queued at the deposed leader: {c}"),
            Err(s) => eprintln!("acks=all write queued at the deposed leader: {s:?}"),
        }
        let one = tokio::time::timeout(Duration::from_secs(60), pending_one)
            .await
            .expect("the deposed leader never answered")
            .unwrap();
        eprintln!("acks=1 write queued at the deposed leader: {one:?}");
        let r = raw_produce(&mut to_old, TOPIC, -1, "deposed-1", 5000).await;
        assert!(
            !matches!(r, Ok(ErrorCode::None)),
            "the deposed leader acknowledged an acks=all write after waking up"
        );

        // It becomes a follower of the new leader, truncates what it appended alone, catches up.
        wait_until(
            &format!("broker {old} follows broker {new} in sync"),
            CONDITION_TIMEOUT,
            async || {
                cluster.leader_of(TOPIC, 0).await != Some(old)
                    && cluster.isr_of(TOPIC, 0).await.contains(&old)
            },
        )
        .await;
        acked.extend(send_all(&p, TOPIC, &values("c", 0..300)).await);
        p.close(None).await.unwrap();
        cluster.wait_fully_replicated(TOPIC).await;
        let hws = high_watermarks(&cluster, TOPIC, 1).await;
        cluster.kill9_all();
        let on_disk = compare_replicas(&cluster, TOPIC, &hws);
        assert_acked_present("every replica", &acked, &on_disk);
        assert!(
            on_disk
                .values()
                .all(|v| !v.starts_with("deposed-") && !v.starts_with("stale-")),
            "a write sent to the deposed leader is below the high watermark"
        );
        let truncated = cluster
            .broker(old)
            .log_text()
            .contains("truncated the divergent tail");
        eprintln!("the deposed leader truncated a divergent tail: {truncated}");
    })
    .await;
}

/// Reads from `c` until every value of `want` was seen; returns every value read, in order.
async fn read_values(c: &Consumer, want: &BTreeSet<String>, what: &str) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut records = Vec::new();
    let ok = tokio::time::timeout(Duration::from_secs(90), async {
        while !want.is_subset(&seen) {
            match c.poll(Duration::from_secs(2)).await {
                Ok(rs) => {
                    for r in rs {
                        let v = String::from_utf8(r.value.as_deref().unwrap_or_default().to_vec())
                            .unwrap();
                        seen.insert(v.clone());
                        records.push(v);
                    }
                }
                // A poll may report the failover (the consumer keeps its positions and goes on).
                Err(e) => eprintln!("{what}: poll: {e}"),
            }
        }
    })
    .await;
    assert!(
        ok.is_ok(),
        "{what}: {} of {} values read before the deadline",
        want.intersection(&seen).count(),
        want.len()
    );
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_and_a_group_keep_reading_across_a_leader_failover() {
    const TOPIC: &str = "reads";
    let mut cluster = TestCluster::start(3, &[]).await;
    bounded(Duration::from_secs(300), async {
        create_rf3(&cluster, TOPIC, 3, &[]).await;
        let p = producer(&cluster.bootstrap(), Acks::All, &[]).await;
        let before = values("a", 0..600);
        send_all(&p, TOPIC, &before).await;

        let standalone = Consumer::new(consumer_config(&cluster.bootstrap()))
            .await
            .unwrap();
        standalone
            .assign((0..3).map(|p| TopicPartition::new(TOPIC, p)).collect())
            .unwrap();
        let group = Consumer::new(
            consumer_config(&cluster.bootstrap())
                .group_id("readers")
                .session_timeout(Duration::from_secs(6)),
        )
        .await
        .unwrap();
        group.subscribe([TOPIC]).await.unwrap();
        let want: BTreeSet<String> = before.iter().cloned().collect();
        let got = read_values(&standalone, &want, "standalone").await;
        assert_eq!(
            got.len(),
            600,
            "the standalone consumer reads each record once"
        );
        read_values(&group, &want, "group").await;

        let (leader, epoch) = partition_state(&cluster, TOPIC, 0).await;
        cluster.kill9(leader);
        eprintln!("kill -9 broker {leader}, leader of {TOPIC}-0");
        let after = values("b", 0..600);
        send_all(&p, TOPIC, &after).await;
        p.close(None).await.unwrap();
        cluster.wait_new_leader(TOPIC, 0, leader, epoch).await;

        let want: BTreeSet<String> = after.iter().cloned().collect();
        let got = read_values(&standalone, &want, "standalone").await;
        let reread = got.iter().filter(|v| !v.starts_with("b-")).count();
        assert_eq!(
            reread, 0,
            "the standalone consumer continues at its positions on the new leaders"
        );
        let got = read_values(&group, &want, "group").await;
        eprintln!(
            "group read {} records for 600 new values after the failover ({} re-read)",
            got.len(),
            got.iter().filter(|v| v.starts_with("a-")).count()
        );
        standalone.close(None).await.ok();
        group.close(None).await.ok();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_down_for_seconds_does_not_stop_produce_and_fetch_on_existing_leaders() {
    const TOPIC: &str = "noetcd";
    let mut cluster = TestCluster::start(3, &[]).await;
    bounded(Duration::from_secs(300), async {
        create_rf3(&cluster, TOPIC, 2, &[]).await;
        let all = producer(&cluster.bootstrap(), Acks::All, &[]).await;
        let one = producer(&cluster.bootstrap(), Acks::Leader, &[]).await;
        let mut acked = send_all(&all, TOPIC, &values("a", 0..200)).await;
        acked.extend(send_all(&one, TOPIC, &values("b", 0..200)).await);
        let c = Consumer::new(consumer_config(&cluster.bootstrap()))
            .await
            .unwrap();
        c.assign((0..2).map(|p| TopicPartition::new(TOPIC, p)).collect())
            .unwrap();
        let want = |acked: &[Acked]| acked.iter().map(|a| a.value.clone()).collect();
        read_values(&c, &want(&acked), "before the outage").await;
        let leaders = [
            cluster.leader_of(TOPIC, 0).await,
            cluster.leader_of(TOPIC, 1).await,
        ];

        cluster.etcd.kill9();
        eprintln!("etcd killed; leaders {leaders:?}");
        // The scenario, not a synchronisation: an outage longer than the brokers' 2 s session,
        // so keep-alives and watches fail meanwhile.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let during = tokio::time::timeout(CONDITION_TIMEOUT, async {
            let mut a = send_all(&all, TOPIC, &values("c", 0..200)).await;
            a.extend(send_all(&one, TOPIC, &values("d", 0..200)).await);
            // A client that starts during the outage: metadata comes from the brokers' snapshots.
            let fresh = producer(&cluster.bootstrap(), Acks::All, &[]).await;
            a.extend(send_all(&fresh, TOPIC, &values("e", 0..100)).await);
            fresh.close(None).await.unwrap();
            a
        })
        .await
        .expect("produce stalled while etcd was down");
        tokio::time::timeout(CONDITION_TIMEOUT, read_values(&c, &want(&during), "during"))
            .await
            .expect("fetch stalled while etcd was down");
        assert!(!cluster.etcd.healthy(), "etcd stayed down meanwhile");
        acked.extend(during);

        cluster.etcd.restart();
        eprintln!("etcd restarted");
        let after = send_all(&all, TOPIC, &values("f", 0..200)).await;
        read_values(&c, &want(&after), "after the outage").await;
        acked.extend(after);
        all.close(None).await.unwrap();
        one.close(None).await.unwrap();
        c.close(None).await.ok();
        // The registry comes back: every broker is still registered and in sync.
        cluster.wait_registered(3).await;
        cluster.wait_fully_replicated(TOPIC).await;
        eprintln!(
            "leaders after the outage: {:?}",
            [
                cluster.leader_of(TOPIC, 0).await,
                cluster.leader_of(TOPIC, 1).await
            ]
        );
        let hws = high_watermarks(&cluster, TOPIC, 2).await;
        cluster.kill9_all();
        let on_disk = compare_replicas(&cluster, TOPIC, &hws);
        // acks=1 records are not promised to survive a failover, but none happened here.
        assert_acked_present("every replica", &acked, &on_disk);
    })
    .await;
}

/// `scripts/cluster.sh start|status|stop` over a temporary directory: three brokers answer with
/// an RF=3 topic, `stop` leaves none of the recorded processes alive.
#[test]
fn cluster_script_starts_three_brokers_and_stops_exactly_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/cluster.sh");
    let run_with = |ports: &[String], cmd: &str| {
        Command::new("bash")
            .args([script, cmd])
            .arg(&dir)
            .env("SLUICEWAY_BIN", bin())
            .env("SLUICEWAY_CLUSTER_PORTS", ports.join(" "))
            .output()
            .unwrap()
    };
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let pids = || -> Vec<u32> {
        std::fs::read_dir(dir.join("run"))
            .map(|d| {
                d.filter_map(|e| {
                    let p = e.ok()?.path();
                    (p.extension()? == "pid")
                        .then(|| std::fs::read_to_string(&p).ok()?.trim().parse().ok())?
                })
                .collect()
            })
            .unwrap_or_default()
    };
    // The ports are picked free and released, so a test running alongside may take one before
    // the script binds it: that race is the test's, not the script's, so it picks other ports
    // (the script itself refused cleanly, naming the port).
    let mut attempt = 0;
    let (ports, started) = loop {
        attempt += 1;
        let ports: Vec<String> = (0..3).map(|_| free_port().to_string()).collect();
        let started = run_with(&ports, "start");
        let out = text(&started);
        if !started.status.success()
            && attempt < 3
            && (out.contains("is taken") || out.contains("in use"))
        {
            eprintln!("a port was taken meanwhile; retrying with others:\n{out}");
            continue;
        }
        break (ports, started);
    };
    let run = |cmd: &str| run_with(&ports, cmd);
    // Whatever happens below, nothing the script started outlives the test.
    struct StopOnDrop<'a>(&'a dyn Fn(&str) -> std::process::Output);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            let _ = (self.0)("stop");
        }
    }
    let _stop = StopOnDrop(&run);
    assert!(started.status.success(), "{}", text(&started));
    let out = text(&started);
    let bootstrap = out
        .lines()
        .find_map(|l| l.strip_prefix("bootstrap: "))
        .unwrap_or_else(|| panic!("no bootstrap line in:\n{out}"))
        .to_owned();
    let expected: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    assert_eq!(bootstrap, expected.join(","));
    let recorded = pids();
    assert_eq!(
        recorded.len(),
        4,
        "etcd and three brokers recorded: {recorded:?}"
    );

    let cli = |args: &[&str]| {
        let o = Command::new(bin())
            .env("SLUICEWAY_BOOTSTRAP", &bootstrap)
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    cli(&[
        "topic",
        "create",
        "scripted",
        "--partitions",
        "3",
        "--replication-factor",
        "3",
    ]);
    let described = cli(&["topic", "describe", "scripted"]);
    let lines: Vec<_> = described.lines().filter_map(parse_describe_line).collect();
    assert_eq!(lines.len(), 3, "{described}");
    assert!(lines.iter().all(|l| l.replicas.len() == 3), "{described}");

    let status = run("status");
    assert!(status.status.success(), "{}", text(&status));
    assert_eq!(
        text(&status).matches(" running ").count(),
        4,
        "{}",
        text(&status)
    );

    let stopped = run("stop");
    assert!(stopped.status.success(), "{}", text(&stopped));
    for pid in recorded {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z ")),
            "pid {pid} outlived `cluster.sh stop`"
        );
    }
}

/// Consumers never see a message above the high watermark: with both followers stopped (and a
/// lag time long enough to keep them in the in-sync set), an acks=1 write is in the leader's log
/// but invisible to fetch and to `ListOffsets`, until the followers resume and the watermark
/// passes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_never_read_above_the_high_watermark() {
    const TOPIC: &str = "hw";
    let mut cluster = TestCluster::start(
        3,
        &[
            "--registry-session-timeout-ms",
            "60000",
            "--replica-lag-time-max-ms",
            "60000",
        ],
    )
    .await;
    bounded(Duration::from_secs(300), async {
        create_rf3(&cluster, TOPIC, 1, &[]).await;
        let p = producer(&cluster.bootstrap(), Acks::All, &[]).await;
        let acked = send_all(&p, TOPIC, &values("a", 0..100)).await;
        p.close(None).await.unwrap();
        let (leader, _) = partition_state(&cluster, TOPIC, 0).await;
        let followers: Vec<i32> = (1..=3).filter(|id| *id != leader).collect();
        let c = Consumer::new(consumer_config(&cluster.bootstrap()))
            .await
            .unwrap();
        c.assign(vec![TopicPartition::new(TOPIC, 0)]).unwrap();
        let want = acked.iter().map(|a| a.value.clone()).collect();
        read_values(&c, &want, "before").await;

        for f in &followers {
            cluster.sigstop(*f);
        }
        let mut raw = cluster.client(leader).await;
        let r = raw
            .log
            .produce(v1::ProduceRequest {
                acks: 1,
                timeout_ms: 5000,
                session: 0,
                partitions: vec![produce_partition(TOPIC, 0, set_of(&["hidden-0"]))],
            })
            .await
            .unwrap()
            .into_inner()
            .results
            .remove(0);
        assert_eq!(code(r.error_code), ErrorCode::None, "{}", r.error_message);
        let hidden = r.base_offset;
        assert_eq!(hidden, 100, "appended after a-0..a-99");

        // Nothing at or above the watermark comes back, however often we ask.
        for _ in 0..10 {
            let f = fetch_once(&mut raw, TOPIC, 0, hidden).await;
            assert_eq!(code(f.error_code), ErrorCode::None, "{}", f.error_message);
            assert_eq!(
                f.high_watermark, hidden,
                "the followers have not fetched it"
            );
            assert!(f.log_end_offset > hidden, "the leader has it");
            assert!(
                records(&f.message_set, hidden).is_empty(),
                "a consumer fetch returned a record above the high watermark"
            );
            let polled = c.poll(Duration::from_millis(100)).await.unwrap();
            assert!(
                polled.is_empty(),
                "the consumer read above the watermark: {polled:?}"
            );
        }
        let latest = high_watermarks(&cluster, TOPIC, 1).await;
        assert_eq!(
            latest,
            [hidden as u64],
            "ListOffsets latest is the high watermark"
        );

        for f in &followers {
            cluster.sigcont(*f);
        }
        let got = read_values(&c, &BTreeSet::from(["hidden-0".to_owned()]), "after").await;
        assert_eq!(got, ["hidden-0"]);
        c.close(None).await.ok();
    })
    .await;
}

/// Polls `c` until `n` records were read in total; returns (partition, value) of each.
async fn read_n(c: &Consumer, n: usize, what: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let ok = tokio::time::timeout(Duration::from_secs(90), async {
        while out.len() < n {
            match c.poll(Duration::from_secs(1)).await {
                Ok(rs) => out.extend(rs.into_iter().map(|r| {
                    let v = String::from_utf8(r.value.as_deref().unwrap_or_default().to_vec());
                    (r.partition, v.unwrap())
                })),
                Err(e) => eprintln!("{what}: poll: {e}"),
            }
        }
    })
    .await;
    assert!(
        ok.is_ok(),
        "{what}: {} of {n} records before the deadline",
        out.len()
    );
    out
}

/// Waits until `group`'s membership record for `generation` is committed in its partition of
/// `__consumer_offsets` (read below the high watermark like any topic, decoded with core's
/// codec).
async fn wait_persisted(cluster: &TestCluster, group: &str, partition: u32, generation: i32) {
    use sluiceway_core::group::offsets::{RecordKey, decode_group_value, decode_record_key};
    let reader = Consumer::new(consumer_config(&cluster.bootstrap()))
        .await
        .unwrap();
    reader
        .assign(vec![TopicPartition::new(
            sluiceway_core::group::OFFSETS_TOPIC,
            partition,
        )])
        .unwrap();
    let mut last = None;
    wait_until(
        &format!("the membership of {group} in generation {generation} to be persisted"),
        CONDITION_TIMEOUT,
        async || {
            for r in reader
                .poll(Duration::from_millis(300))
                .await
                .unwrap_or_default()
            {
                let key = r.key.as_deref().map(decode_record_key);
                if let Some(Ok(Some(RecordKey::Group(g)))) = key
                    && g == group
                {
                    last = r
                        .value
                        .as_deref()
                        .map(|v| decode_group_value(v).unwrap().generation);
                }
            }
            last == Some(generation as u32)
        },
    )
    .await;
    reader.close(None).await.ok();
}

/// Group coordination on a cluster (issue #5's "consumer groups keep working across
/// failovers"): two members that bootstrap from *different* brokers still meet at one
/// coordinator (the leader of the group's `__consumer_offsets` partition) and split the
/// partitions; the group's membership and commits are replicated, so after the coordinator is
/// killed with `kill -9` the remaining member goes on in its generation at the new coordinator
/// and commits there, and a new member resumes exactly after those commits, neither re-reading
/// nor skipping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_members_on_different_brokers_share_one_coordinator_and_its_commits_survive_its_kill9()
 {
    const TOPIC: &str = "jobs";
    const GROUP: &str = "workers";
    let mut cluster = TestCluster::start(3, &[]).await;
    bounded(Duration::from_secs(300), async {
        create_rf3(&cluster, TOPIC, 4, &[]).await;
        let p = producer(&cluster.bootstrap(), Acks::All, &[]).await;
        send_all(&p, TOPIC, &values("a", 0..400)).await;

        let member = |bootstrap: String| async move {
            let c = Consumer::new(
                consumer_config(&bootstrap)
                    .group_id(GROUP)
                    .enable_auto_commit(false)
                    .session_timeout(Duration::from_secs(6)),
            )
            .await
            .unwrap();
            c.subscribe([TOPIC]).await.unwrap();
            c
        };
        let one = member(cluster.broker(1).addr.clone()).await;
        let three = member(cluster.broker(3).addr.clone()).await;
        // Poll both until they hold non-empty shares covering the topic and have read to its end
        // (positions add up to 400). Two coordinators would hand each member all 4 partitions.
        wait_until(
            "both members to hold a share and read it to the end",
            CONDITION_TIMEOUT * 3,
            async || {
                for c in [&one, &three] {
                    let _ = c.poll(Duration::from_millis(300)).await;
                }
                let (s1, s3) = (one.assignment(), three.assignment());
                if s1.is_empty() || s3.is_empty() || s1.len() + s3.len() < 4 {
                    return false;
                }
                let mut total = 0;
                for (c, share) in [(&one, &s1), (&three, &s3)] {
                    for tp in share {
                        total += c.position(tp).await.map_or(0, |o| o.0);
                    }
                }
                total >= 400
            },
        )
        .await;
        let a1: BTreeSet<u32> = one.assignment().iter().map(|tp| tp.partition).collect();
        let a3: BTreeSet<u32> = three.assignment().iter().map(|tp| tp.partition).collect();
        eprintln!("member via broker 1: {a1:?}; member via broker 3: {a3:?}");
        assert!(a1.is_disjoint(&a3), "one coordinator: disjoint assignments");
        assert_eq!(a1.union(&a3).count(), 4, "every partition assigned");
        one.commit().await.expect("commit via broker 1's member");
        three.commit().await.expect("commit via broker 3's member");

        // Kill the coordinator: the leader of the group's offsets partition.
        let op = sluiceway_core::group::offsets::partition_for_group(GROUP, 4);
        let offsets_topic = sluiceway_core::group::OFFSETS_TOPIC;
        let (coordinator, epoch) = partition_state(&cluster, offsets_topic, op).await;
        assert_eq!(
            cluster.isr_of(offsets_topic, op).await.len(),
            3,
            "{offsets_topic}-{op} is replicated on every broker"
        );
        // The command line finds the group at its coordinator from any broker, lists it once,
        // and keeps the internal topic out of the topic list.
        let other = (1..=3).find(|b| *b != coordinator).unwrap();
        let cli = |args: &[&str]| {
            let out = Command::new(bin())
                .env("SLUICEWAY_BOOTSTRAP", &cluster.broker(other).addr)
                .args(args)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            text
        };
        let described = cli(&["group", "describe", GROUP]);
        assert!(
            described.contains(&format!("Group: {GROUP}  State: Stable")),
            "{described}"
        );
        let rows = described.lines().filter(|l| l.starts_with(TOPIC)).count();
        assert_eq!(
            rows, 4,
            "one row per partition, each with its commit:\n{described}"
        );
        let listed = cli(&["group", "list"]);
        assert_eq!(
            listed.lines().filter(|l| l.starts_with(GROUP)).count(),
            1,
            "{listed}"
        );
        let topics = cli(&["topic", "list"]);
        assert!(
            !topics.contains(offsets_topic),
            "internal topics are not listed:\n{topics}"
        );

        // One member stays through the kill. Once it holds every partition and that generation
        // is persisted (the group's membership record is committed in its offsets partition),
        // the coordinator is killed: the new one restores the group, so the member goes on in
        // the same generation, without a rebalance, and reads what is produced after.
        three.close(None).await.ok();
        let before = wait_for(
            "the remaining member to hold every partition in a new generation",
            CONDITION_TIMEOUT,
            async || {
                let _ = one.poll(Duration::from_millis(200)).await;
                (one.assignment().len() == 4)
                    .then(|| one.group_membership())
                    .flatten()
            },
        )
        .await;
        wait_persisted(&cluster, GROUP, op, before.generation).await;
        cluster.kill9(coordinator);
        eprintln!("kill -9 broker {coordinator}, coordinator of {GROUP} ({offsets_topic}-{op})");
        let (next, _) = cluster
            .wait_new_leader(offsets_topic, op, coordinator, epoch)
            .await;
        eprintln!("broker {next} coordinates {GROUP} now");
        send_all(&p, TOPIC, &values("m", 0..100)).await;
        let want: BTreeSet<String> = values("m", 0..100).into_iter().collect();
        let got = read_values(&one, &want, "the member that stayed").await;
        eprintln!(
            "the member that stayed read {} records after the failover ({} re-read)",
            got.len(),
            got.iter().filter(|v| v.starts_with("a-")).count()
        );
        assert_eq!(
            one.group_membership(),
            Some(before.clone()),
            "the new coordinator restored the group: same member id and generation"
        );
        // Its commit reaches the new coordinator (retrying while the group rebalances).
        wait_until(
            "a commit at the new coordinator",
            CONDITION_TIMEOUT,
            async || match one.commit().await {
                Ok(()) => true,
                Err(e) => {
                    eprintln!("commit after the failover: {e}");
                    false
                }
            },
        )
        .await;
        one.close(None).await.ok();

        send_all(&p, TOPIC, &values("b", 0..100)).await;
        p.close(None).await.unwrap();
        let again = member(cluster.bootstrap_without(coordinator)).await;
        let got = match tokio::time::timeout(
            Duration::from_secs(60),
            read_n(&again, 100, "the new member"),
        )
        .await
        {
            Ok(got) => got,
            Err(_) => {
                for b in 1..=3 {
                    let log = cluster.broker(b).log_text();
                    let lines: Vec<&str> = log
                        .lines()
                        .filter(|l| l.contains(GROUP) || l.contains("offsets"))
                        .collect();
                    eprintln!("broker {b}:\n{}", lines.join("\n"));
                }
                panic!("the new member read nothing");
            }
        };
        let reread: Vec<&String> = got
            .iter()
            .map(|(_, v)| v)
            .filter(|v| !v.starts_with("b-"))
            .collect();
        assert!(
            reread.is_empty(),
            "the commits made before and after the coordinator's kill hold: nothing committed is \
             read again ({} were, e.g. {:?})",
            reread.len(),
            reread.first()
        );
        let distinct: BTreeSet<&String> = got.iter().map(|(_, v)| v).collect();
        assert_eq!(distinct.len(), 100, "every new record once");
        // Nothing more arrives (no duplicates trailing behind).
        let extra = again.poll(Duration::from_secs(1)).await.unwrap_or_default();
        assert!(
            extra.is_empty(),
            "{} records beyond the 100 new ones",
            extra.len()
        );
        again.close(None).await.ok();
    })
    .await;
}

/// Each partition's preferred leader (its first replica), in partition order.
async fn preferred_leaders(cluster: &TestCluster, topic: &str) -> Vec<i32> {
    let t = cluster.metadata(topic).await.expect("metadata");
    t.partitions.iter().map(|p| p.replicas[0]).collect()
}

/// Waits until every partition of `topic` is led by its preferred replica.
async fn wait_preferred_leaders(cluster: &TestCluster, topic: &str, preferred: &[i32]) {
    wait_until(
        "every partition to be led by its preferred replica again",
        CONDITION_TIMEOUT,
        async || {
            cluster.metadata(topic).await.is_some_and(|t| {
                t.partitions.iter().map(|p| p.leader_id).collect::<Vec<_>>() == preferred
            })
        },
    )
    .await;
}

/// Preferred leaders (Kafka's auto leader rebalance): after a failover and the old leader's
/// return, the controller hands each partition back to its first replica once that replica is
/// in sync again, so leadership is spread as placement made it; nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_broker_leads_its_preferred_partitions_again() {
    const TOPIC: &str = "spread";
    let mut cluster = TestCluster::start(3, &["--leader-rebalance-interval-ms", "500"]).await;
    bounded(Duration::from_secs(300), async {
        create_rf3(&cluster, TOPIC, 3, &[]).await;
        let preferred = preferred_leaders(&cluster, TOPIC).await;
        let p = producer(&cluster.bootstrap(), Acks::All, &[]).await;
        let mut acked = send_all(&p, TOPIC, &values("a", 0..300)).await;

        let victim = preferred[0];
        let (_, epoch) = partition_state(&cluster, TOPIC, 0).await;
        cluster.kill9(victim);
        cluster.wait_new_leader(TOPIC, 0, victim, epoch).await;
        acked.extend(send_all(&p, TOPIC, &values("b", 0..300)).await);
        cluster.restart(victim);
        eprintln!("kill -9 and restart of broker {victim}, preferred leader of {TOPIC}-0");
        wait_preferred_leaders(&cluster, TOPIC, &preferred).await;
        acked.extend(send_all(&p, TOPIC, &values("c", 0..300)).await);
        p.close(None).await.unwrap();
        let hws = high_watermarks_covering(&cluster, TOPIC, 3, &acked).await;
        let log = read_up_to(&cluster.bootstrap(), TOPIC, &hws).await;
        assert_acked_present("after the preferred leader returned", &acked, &log);
        assert_acks_distinct(&acked);
    })
    .await;
}

/// A rolling restart, the operator's everyday procedure: each broker in turn gets SIGTERM (a
/// graceful shutdown: it leaves the registry, so its leaderships move at once), is started again
/// over its data and waits until it is back in every ISR — while a producer keeps sending with
/// acks=all. No send fails, nothing acknowledged is lost or doubled, and the preferred leaders
/// lead again at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_restart_with_sigterm_fails_no_send_and_loses_nothing() {
    const TOPIC: &str = "rolling";
    let mut cluster = TestCluster::start(3, &["--leader-rebalance-interval-ms", "1000"]).await;
    bounded(Duration::from_secs(600), async {
        create_rf3(&cluster, TOPIC, 3, &[("min.insync.replicas", "2")]).await;
        let preferred = preferred_leaders(&cluster, TOPIC).await;
        let p = Arc::new(
            producer(
                &cluster.bootstrap(),
                Acks::All,
                &[("retries", "2147483647"), ("delivery.timeout.ms", "120000")],
            )
            .await,
        );
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Paced sending until the restarts are over (at most 100,000 records).
        let settled = Arc::new(AtomicU64::new(0));
        let sender = tokio::spawn(produce_range(
            p.clone(),
            TOPIC,
            0..100_000,
            None,
            ledger.clone(),
            settled.clone(),
            Some(stop.clone()),
        ));
        // The restarts begin once sends are being acknowledged.
        wait_until(
            "the first sends have settled",
            CONDITION_TIMEOUT,
            async || settled.load(Ordering::Relaxed) > 0,
        )
        .await;
        for id in 1..=3 {
            cluster.stop(id);
            eprintln!("broker {id} stopped with SIGTERM");
            // The scenario, not a synchronisation: the broker stays down a moment while the
            // sender goes on (its sends must wait for or fail over to the other brokers).
            tokio::time::sleep(Duration::from_millis(500)).await;
            cluster.restart(id);
            cluster.wait_fully_replicated(TOPIC).await;
            eprintln!("broker {id} restarted and back in every ISR");
        }
        wait_preferred_leaders(&cluster, TOPIC, &preferred).await;
        stop.store(true, Ordering::Relaxed);
        sender.await.unwrap();
        let ledger = std::mem::take(&mut *ledger.lock().unwrap());
        eprintln!(
            "{} acknowledged, {} failed",
            ledger.acked.len(),
            ledger.failed.len()
        );
        assert!(
            ledger.failed.is_empty(),
            "no send fails across a rolling restart: {:?}",
            &ledger.failed[..ledger.failed.len().min(5)]
        );
        assert_acks_distinct(&ledger.acked);
        let hws = high_watermarks_covering(&cluster, TOPIC, 3, &ledger.acked).await;
        let log = read_up_to(&cluster.bootstrap(), TOPIC, &hws).await;
        assert_acked_present("after the rolling restart", &ledger.acked, &log);
        eprintln!(
            "{} records below the high watermarks; duplicates from producer retries: {}",
            log.len(),
            count_duplicates(&log)
        );
    })
    .await;
}

/// A magic 2 batch of `values` with one header each, as a producer builds it.
fn batch_v2(values: &[String]) -> Vec<u8> {
    let mut b =
        sluiceway_core::format::RecordBatchBuilder::new(sluiceway_core::format::Compression::Lz4);
    for v in values {
        b.push(
            sluiceway_core::TimestampMs(1_700_000_000_000),
            None,
            Some(v.as_bytes()),
            [sluiceway_core::format::Header {
                key: "v",
                value: Some(v.as_bytes()),
            }],
        );
    }
    b.finish().unwrap()
}

/// Produces `set` with acks=all to partition 0 through `client`, expecting success.
async fn produce_all(client: &mut crate::support::Client, topic: &str, set: Vec<u8>) {
    let r = client
        .log
        .produce(v1::ProduceRequest {
            acks: -1,
            timeout_ms: 10_000,
            session: 0,
            partitions: vec![produce_partition(topic, 0, set)],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        code(r.results[0].error_code),
        ErrorCode::None,
        "{}",
        r.results[0].error_message
    );
}

/// Every shallow entry of a replica's partition below `hw`, read from its segment files as
/// stored: (last offset, magic, the entry's bytes after its offset field).
fn stored_entries(dir: &std::path::Path, topic: &str, hw: u64) -> Vec<(u64, u8, Vec<u8>)> {
    let dir = dir.join(sluiceway_core::storage::PartitionLog::dir_name(topic, 0));
    let mut logs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    let mut out = Vec::new();
    for path in logs {
        let bytes = std::fs::read(&path).unwrap();
        for e in sluiceway_core::format::Entries::new(&bytes) {
            let Ok(e) = e else { break }; // a torn tail above the high watermark
            if e.last_offset().0 < hw {
                out.push((e.last_offset().0, e.magic(), e.bytes[8..].to_vec()));
            }
        }
    }
    out
}

/// Magic 2 batches and magic 1 sets in one replicated partition: followers store the leader's
/// bytes as they are (each batch keeps the epoch of the leader that appended it, inside bytes
/// the CRC does not cover), a new leader after a kill -9 stamps its own epoch, and the
/// restarted old leader catches up to identical entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn magic_2_batches_replicate_as_stored_across_a_leader_kill9() {
    const TOPIC: &str = "magic2";
    let mut cluster = TestCluster::start(3, &[]).await;
    bounded(Duration::from_secs(300), async {
        create_rf3(&cluster, TOPIC, 1, &[("min.insync.replicas", "2")]).await;
        let (old, epoch) = partition_state(&cluster, TOPIC, 0).await;
        let mut c = cluster.client(old).await;
        for i in 0..20u64 {
            let vs = values(&format!("a{i}-"), 0..3);
            let set = if i % 2 == 0 {
                batch_v2(&vs)
            } else {
                set_of(&vs)
            };
            produce_all(&mut c, TOPIC, set).await;
        }
        cluster.kill9(old);
        let (new, new_epoch) = cluster.wait_new_leader(TOPIC, 0, old, epoch).await;
        let mut c = cluster.client(new).await;
        for i in 0..10u64 {
            produce_all(&mut c, TOPIC, batch_v2(&values(&format!("b{i}-"), 0..2))).await;
        }
        cluster.restart(old);
        cluster.wait_fully_replicated(TOPIC).await;
        let hws = high_watermarks(&cluster, TOPIC, 1).await;
        assert_eq!(hws, [80]);
        cluster.kill9_all();
        let on_disk = compare_replicas(&cluster, TOPIC, &hws);
        assert_eq!(on_disk.len(), 80);
        let mut reference = None;
        for b in &cluster.brokers {
            let entries = stored_entries(&b.data_dir(), TOPIC, hws[0]);
            let epochs: Vec<(u64, i32)> = entries
                .iter()
                .filter(|e| e.1 == 2)
                .map(|e| (e.0, i32::from_be_bytes(e.2[4..8].try_into().unwrap())))
                .collect();
            assert_eq!(epochs.len(), 20, "broker {}", b.id);
            assert!(
                epochs[..10].iter().all(|e| e.1 == epoch),
                "broker {}: {epochs:?}",
                b.id
            );
            assert!(
                epochs[10..].iter().all(|e| e.1 == new_epoch),
                "broker {}: {epochs:?}",
                b.id
            );
            match &reference {
                None => reference = Some(entries),
                Some(r) => assert!(r == &entries, "broker {} stores other bytes", b.id),
            }
        }
    })
    .await;
}

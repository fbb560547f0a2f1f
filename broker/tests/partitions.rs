//! Network partitions (issue #17): a real etcd and three real brokers, each in its own network
//! namespace on a bridge (`netns.rs`), links cut and healed with nftables while producers run,
//! and the invariants checked on what was acknowledged and on every replica's disk:
//!
//! - **0 acknowledged lost**: every `acks=all` acknowledgement is at its offset on every replica
//!   after healing; so is every `acks=1` acknowledgement made while the cluster was whole. (An
//!   `acks=1` write that only an isolated leader took is truncated when it returns — Kafka's
//!   semantics, and what `acks=1` promises; the count is printed.)
//! - replicas identical below the high watermark, with no gap; divergent tails truncated (every
//!   log ends at the high watermark once nothing is written and every ISR is whole);
//! - the whole ISR back within [`CONDITION_TIMEOUT`] after healing;
//! - a bounded number of leader-epoch changes ([`EPOCH_CHANGES_MAX`]): leadership moves once per
//!   fault, and an ISR does not flap (KIP-841).
//!
//! Scenarios: an isolated leader still reachable by clients (acks=all and acks=1 producers), an
//! isolated follower, a leader cut from etcd only, and a majority/minority split with etcd on the
//! minority side.
//!
//! This is its own test binary with its own `main` (`harness = false`): the process moves into
//! its client namespace before any thread exists, so every socket the test opens — the client
//! core's included — is inside the lab. Scenarios run one after another (three brokers each);
//! each is bounded and cleans its namespaces up even when it fails. Where namespaces cannot be
//! made (not root, or a container without the capability) the binary says why and skips.
//! Arguments: a substring filters scenarios by name (as `cargo test NAME` passes it).

mod cluster_support;
mod netns;
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sluiceway_core::client::{Acks, Producer};

use crate::cluster_support::*;
use crate::netns::{NetLab, Node};

/// How many times a partition's leader epoch may change over one scenario (fault, recovery,
/// and the controller's cleanup). A flapping ISR moves it dozens of times.
const EPOCH_CHANGES_MAX: i32 = 3;
/// Every scenario's bound (a hang is a failure).
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(240);
/// How long a fault is held before healing: longer than the brokers' 2 s registry session and
/// replica lag time, so leases expire and ISRs shrink.
const FAULT_HOLD: Duration = Duration::from_secs(6);

/// One scenario: its name and its body.
type Scenario = (
    &'static str,
    fn() -> std::pin::Pin<Box<dyn Future<Output = ()>>>,
);

fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let scenarios: Vec<Scenario> = vec![
        ("isolated_leader_reachable_by_clients", || {
            Box::pin(isolated_leader_reachable_by_clients())
        }),
        ("isolated_follower", || Box::pin(isolated_follower())),
        ("leader_cut_from_etcd_only", || {
            Box::pin(leader_cut_from_etcd_only())
        }),
        (
            "majority_minority_split_with_etcd_on_the_minority_side",
            || Box::pin(majority_minority_split()),
        ),
    ];
    let chosen: Vec<&Scenario> = scenarios
        .iter()
        .filter(|(name, _)| filter.as_deref().is_none_or(|f| name.contains(f)))
        .collect();
    if chosen.is_empty() {
        println!("partitions: no scenario matches {filter:?}");
        println!("0 passed, 0 failed");
        return;
    }
    if let Some(why) = netns::unavailable() {
        println!(
            "partitions: SKIPPED {} scenarios: {why}. They need root, iproute2 and nftables \
             (scripts/setup.sh installs both packages).",
            chosen.len()
        );
        println!("0 passed, 0 failed, {} skipped", chosen.len());
        return;
    }
    netns::remove_stale_namespaces();
    // Before any thread exists (see the module docs).
    netns::enter_client_namespace();
    let mut failed = Vec::new();
    for (name, body) in &chosen {
        println!("partitions: {name} ...");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runtime.block_on(bounded(SCENARIO_TIMEOUT, body()))
        }));
        runtime.shutdown_timeout(Duration::from_secs(5));
        match outcome {
            Ok(()) => println!("partitions: {name} ok"),
            Err(_) => {
                println!("partitions: {name} FAILED");
                failed.push(*name);
            }
        }
    }
    netns::remove_client_namespace();
    println!(
        "{} passed, {} failed",
        chosen.len() - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        println!("failed: {}", failed.join(", "));
        std::process::exit(1);
    }
}

/// A three-broker cluster in a fresh lab: 2 s sessions and lag time (the cluster tests'), and
/// a 3 s request timeout so that sends stuck on a cut-off leader are retried elsewhere soon.
async fn lab_cluster() -> TestCluster {
    TestCluster::start_in_namespaces(NetLab::new(3), 3, &[]).await
}

fn net(cluster: &TestCluster) -> &NetLab {
    cluster.net.as_ref().expect("a cluster in namespaces")
}

async fn lab_producer(cluster: &TestCluster, acks: Acks) -> Arc<Producer> {
    Arc::new(
        producer(
            &cluster.bootstrap(),
            acks,
            &[("request.timeout.ms", "3000"), ("retry.backoff.ms", "100")],
        )
        .await,
    )
}

/// Sends `n` values named `<prefix>-<i>` in batches of 100, in the background, each batch once
/// the previous one is acknowledged; the acknowledgements come back from the task.
fn send_in_background(
    p: &Arc<Producer>,
    topic: &'static str,
    prefix: &'static str,
    n: u64,
) -> tokio::task::JoinHandle<Vec<Acked>> {
    let p = p.clone();
    tokio::spawn(async move {
        let mut acked = Vec::new();
        for start in (0..n).step_by(100) {
            acked.extend(send_all(&p, topic, &values(prefix, start..(start + 100).min(n))).await);
        }
        acked
    })
}

/// `(leader, epoch)` of each partition as broker `id` sees it, when it answers and every
/// partition has a leader and its whole replica set in sync.
async fn whole_as_seen_by(
    cluster: &TestCluster,
    id: i32,
    topic: &str,
    partitions: u32,
) -> Option<Vec<(i32, i32)>> {
    let t = cluster.metadata_from(id, topic).await?;
    let states: Vec<(i32, i32)> = t
        .partitions
        .iter()
        .filter(|p| p.leader_id >= 0 && p.isr.len() == p.replicas.len())
        .map(|p| (p.leader_id, p.leader_epoch))
        .collect();
    (states.len() == partitions as usize).then_some(states)
}

/// Waits until every broker's registry view has every partition of `topic` led and whole, and
/// all three views agree (an isolated broker answers from a stale view, so one view is not
/// enough); returns each partition's `(leader, epoch)`.
async fn wait_whole_everywhere(
    cluster: &TestCluster,
    topic: &str,
    partitions: u32,
) -> Vec<(i32, i32)> {
    wait_for(
        &format!("every broker to see {topic} led and whole, the same way"),
        CONDITION_TIMEOUT,
        async || {
            let mut agreed: Option<Vec<(i32, i32)>> = None;
            for id in 1..=3 {
                let seen = whole_as_seen_by(cluster, id, topic, partitions).await?;
                match &agreed {
                    None => agreed = Some(seen),
                    Some(a) if *a == seen => {}
                    Some(_) => return None,
                }
            }
            agreed
        },
    )
    .await
}

/// Waits until broker `observer` (one that reaches etcd) sees a leader of partition 0 other
/// than `old`; returns it.
async fn wait_new_leader_seen_by(
    cluster: &TestCluster,
    observer: i32,
    topic: &str,
    old: i32,
) -> i32 {
    wait_for(
        &format!("broker {observer} to see a leader of {topic}-0 other than {old}"),
        CONDITION_TIMEOUT,
        async || {
            let t = cluster.metadata_from(observer, topic).await?;
            let p = t.partitions.first()?;
            (p.leader_id >= 0 && p.leader_id != old).then_some(p.leader_id)
        },
    )
    .await
}

/// After healing: every ISR whole again in every broker's view, epochs bounded; then the
/// brokers are killed and every replica's disk is compared. Returns the records below the high
/// watermarks and each partition's final `(leader, epoch)`. The producers must be closed.
async fn settle_and_check(
    cluster: &mut TestCluster,
    topic: &str,
    before: &[(i32, i32)],
    acked: &[Acked],
) -> (BTreeMap<(u32, u64), String>, Vec<(i32, i32)>) {
    let partitions = before.len() as u32;
    let after = wait_whole_everywhere(cluster, topic, partitions).await;
    for (p, ((_, before), (_, after))) in before.iter().zip(&after).enumerate() {
        println!("partitions: {topic}-{p} leader epoch {before} -> {after}");
        assert!(
            after - before <= EPOCH_CHANGES_MAX,
            "{topic}-{p}: the leader epoch moved {} times (from {before} to {after}); at most \
             {EPOCH_CHANGES_MAX} expected",
            after - before
        );
    }
    let hws = high_watermarks(cluster, topic, partitions).await;
    cluster.kill9_all();
    let on_disk = compare_replicas(cluster, topic, &hws);
    // Nothing is written any more and every ISR is whole, so every log ends at the high
    // watermark: a divergent tail left on a deposed leader would end it further.
    for b in &cluster.brokers {
        for (p, hw) in hws.iter().enumerate() {
            let end = read_replica(&b.data_dir(), topic, p as u32).log_end_offset;
            assert_eq!(
                end, *hw,
                "broker {}: {topic}-{p} ends at {end}, not at the high watermark {hw}",
                b.id
            );
        }
    }
    assert_acked_present("every replica after healing", acked, &on_disk);
    (on_disk, after)
}

/// How many of `acked` are not at their acknowledged offset in `log` (acks=1 writes an isolated
/// leader took, truncated on its return).
fn truncated(acked: &[Acked], log: &BTreeMap<(u32, u64), String>) -> usize {
    acked
        .iter()
        .filter(|a| log.get(&(a.partition, a.offset)) != Some(&a.value))
        .count()
}

/// The leader is cut from etcd and both followers but clients still reach it. acks=all sends
/// are never acknowledged by it (its followers stop fetching, it cannot shrink the ISR without
/// the registry) and move to the new leader; acks=1 sends it takes are truncated when it returns.
async fn isolated_leader_reachable_by_clients() {
    deposed_leader(
        "iso-leader",
        "from etcd and the other brokers",
        |lab, leader| {
            let others = [
                Node::Etcd,
                Node::Broker(1),
                Node::Broker(2),
                Node::Broker(3),
            ];
            lab.isolate(Node::Broker(leader), &others);
        },
    )
    .await;
}

/// The leader loses etcd only (brokers and clients still reach it): its lease expires and the
/// controller elects another in-sync replica; the old leader's followers move to the new one,
/// so it can acknowledge nothing with acks=all; healed, it learns it was deposed and truncates.
async fn leader_cut_from_etcd_only() {
    deposed_leader("etcd-cut", "from etcd", |lab, leader| {
        lab.cut(Node::Broker(leader), Node::Etcd)
    })
    .await;
}

/// A fault (`cut`, given the leader) that makes the controller elect another leader while the
/// old one still reaches clients, with acks=all and acks=1 producers running; held, healed and
/// checked (module docs). Prints how many acks=1 writes of the old leader were truncated.
async fn deposed_leader(topic: &'static str, what: &str, cut: fn(&NetLab, i32)) {
    let mut cluster = lab_cluster().await;
    create_rf3(&cluster, topic, 1, &[("min.insync.replicas", "2")]).await;
    let all = lab_producer(&cluster, Acks::All).await;
    let one = lab_producer(&cluster, Acks::Leader).await;
    let mut acked = send_all(&all, topic, &values("a", 0..500)).await;
    acked.extend(send_all(&one, topic, &values("a1", 0..500)).await);
    let before = wait_whole_everywhere(&cluster, topic, 1).await;
    let leader = before[0].0;
    cut(net(&cluster), leader);
    println!("partitions: cut leader {leader} {what}");
    let during_all = send_in_background(&all, topic, "b", 500);
    let during_one = send_in_background(&one, topic, "b1", 300);
    let observer = (1..=3).find(|b| *b != leader).unwrap();
    let new_leader = wait_new_leader_seen_by(&cluster, observer, topic, leader).await;
    println!("partitions: broker {new_leader} leads now");
    tokio::time::sleep(FAULT_HOLD).await; // Hold the fault: the writes go on meanwhile.
    net(&cluster).heal_all();
    acked.extend(during_all.await.expect("acks=all sender"));
    let risky = during_one.await.expect("acks=1 sender");
    acked.extend(send_all(&all, topic, &values("c", 0..500)).await);
    all.close(None).await.unwrap();
    one.close(None).await.unwrap();
    let (on_disk, _) = settle_and_check(&mut cluster, topic, &before, &acked).await;
    println!(
        "partitions: {} of {} acks=1 writes the old leader acknowledged during the fault were \
         truncated",
        truncated(&risky, &on_disk),
        risky.len()
    );
}

/// A follower is cut from everything: the leader shrinks the ISR and acks=all goes on with the
/// other two (min.insync.replicas=2); healed, it truncates nothing, catches up and rejoins.
async fn isolated_follower() {
    const TOPIC: &str = "iso-follower";
    let mut cluster = lab_cluster().await;
    create_rf3(&cluster, TOPIC, 1, &[("min.insync.replicas", "2")]).await;
    let all = lab_producer(&cluster, Acks::All).await;
    let mut acked = send_all(&all, TOPIC, &values("a", 0..500)).await;
    let before = wait_whole_everywhere(&cluster, TOPIC, 1).await;
    let leader = before[0].0;
    let follower = (1..=3).find(|b| *b != leader).unwrap();
    let everyone = [
        Node::Etcd,
        Node::Broker(1),
        Node::Broker(2),
        Node::Broker(3),
        Node::Client,
    ];
    net(&cluster).isolate(Node::Broker(follower), &everyone);
    println!("partitions: isolated follower {follower} (leader {leader})");
    let during = send_in_background(&all, TOPIC, "b", 1000);
    wait_until(
        &format!("follower {follower} out of the ISR"),
        CONDITION_TIMEOUT,
        async || {
            let Some(t) = cluster.metadata_from(leader, TOPIC).await else {
                return false;
            };
            t.partitions
                .first()
                .is_some_and(|p| !p.isr.contains(&follower))
        },
    )
    .await;
    tokio::time::sleep(FAULT_HOLD).await;
    net(&cluster).heal_all();
    acked.extend(during.await.expect("acks=all sender"));
    acked.extend(send_all(&all, TOPIC, &values("c", 0..500)).await);
    all.close(None).await.unwrap();
    let (_, after) = settle_and_check(&mut cluster, TOPIC, &before, &acked).await;
    assert_eq!(after[0].0, leader, "an isolated follower moved leadership");
}

/// {etcd, broker 1} | {brokers 2, 3}, clients reaching everyone. Brokers 2 and 3 lose their
/// sessions; what they lead stalls for acks=all (broker 1 stops fetching from them and they
/// cannot shrink an ISR without the registry) and moves to broker 1 where it is in sync.
async fn majority_minority_split() {
    const TOPIC: &str = "split";
    const PARTITIONS: u32 = 3;
    let mut cluster = lab_cluster().await;
    create_rf3(&cluster, TOPIC, PARTITIONS, &[("min.insync.replicas", "2")]).await;
    let all = lab_producer(&cluster, Acks::All).await;
    let mut acked = send_all(&all, TOPIC, &values("a", 0..900)).await;
    let before = wait_whole_everywhere(&cluster, TOPIC, PARTITIONS).await;
    let lab = net(&cluster);
    for minority in [Node::Etcd, Node::Broker(1)] {
        for majority in [Node::Broker(2), Node::Broker(3)] {
            lab.cut(minority, majority);
        }
    }
    println!("partitions: split {{etcd, broker 1}} | {{brokers 2, 3}}");
    let during = send_in_background(&all, TOPIC, "b", 900);
    tokio::time::sleep(FAULT_HOLD).await;
    lab.heal_all();
    acked.extend(during.await.expect("acks=all sender"));
    acked.extend(send_all(&all, TOPIC, &values("c", 0..900)).await);
    all.close(None).await.unwrap();
    settle_and_check(&mut cluster, TOPIC, &before, &acked).await;
}

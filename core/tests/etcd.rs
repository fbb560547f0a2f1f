//! The etcd registry against a real etcd (`/usr/bin/etcd`, Debian's etcd-server; scripts/setup.sh
//! installs it). Each test starts its own etcd on free loopback ports with a temporary data
//! directory ([`TestEtcd`] of the shared `sluiceway-testing` crate, killed on drop) and short
//! sessions (2 s) so lease expiry is quick.
//! Every wait polls with a deadline; nothing asserts how fast anything is.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use sluiceway_core::registry::{
    BrokerId, EtcdOptions, EtcdRegistry, EtcdSpec, NewTopic, Registry, TopicInfo,
};
use sluiceway_core::{Error, ErrorCode};
use sluiceway_testing::{CONDITION_TIMEOUT, TestEtcd, wait_for_blocking};

/// The registry spec of `etcd` (keys under `/test`).
fn spec(etcd: &TestEtcd) -> EtcdSpec {
    EtcdSpec::parse(&format!("etcd://{}/test", etcd.endpoint())).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn options() -> EtcdOptions {
    EtcdOptions {
        session_timeout_ms: 2_000,
        controller_reconcile_ms: 200,
        // Off: these tests check where failovers put leadership; handing it back to preferred
        // replicas is tested on a broker cluster (`cluster.rs`).
        leader_rebalance_interval_ms: 0,
    }
}

/// Connects and registers broker `id` (address `127.0.0.1:<9000 + id>`).
fn broker(rt: &tokio::runtime::Runtime, etcd: &TestEtcd, id: u32) -> Arc<EtcdRegistry> {
    let r = rt
        .block_on(EtcdRegistry::connect(&spec(etcd), BrokerId(id), options()))
        .unwrap();
    r.register_broker(BrokerId(id), &format!("127.0.0.1:{}", 9000 + id))
        .unwrap();
    r
}

/// Polls `f` until it answers `Some`, or panics naming `what` (the shared bounded wait).
fn wait_for<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    wait_for_blocking(what, CONDITION_TIMEOUT, f)
}

fn new_topic(name: &str, partitions: u32, replication_factor: u32) -> NewTopic {
    NewTopic {
        name: name.into(),
        partitions,
        replication_factor,
        configs: BTreeMap::new(),
    }
}

fn ids(brokers: &[BrokerId]) -> Vec<u32> {
    brokers.iter().map(|b| b.0).collect()
}

fn broker_ids(r: &EtcdRegistry) -> Vec<u32> {
    r.brokers().unwrap().iter().map(|b| b.id.0).collect()
}

/// All registries agree on one controller, and each sees every one of them registered (a topic
/// created right after places replicas on all of them): the controller is returned.
fn agreed_controller(registries: &[&Arc<EtcdRegistry>]) -> BrokerId {
    wait_for("every broker registered and seen by every broker", || {
        registries
            .iter()
            .all(|r| r.brokers().is_ok_and(|b| b.len() >= registries.len()))
            .then_some(())
    });
    wait_for("one controller seen by every broker", || {
        let seen: BTreeSet<Option<BrokerId>> = registries.iter().map(|r| r.controller()).collect();
        match seen.into_iter().collect::<Vec<_>>()[..] {
            [Some(c)] => Some(c),
            _ => None,
        }
    })
}

fn code(e: &Error) -> ErrorCode {
    e.code()
}

#[test]
fn etcd_brokers_see_each_other_elect_one_controller_and_place_topics() {
    let etcd = TestEtcd::start_temp();
    let rt = runtime();
    let (b1, b2, b3) = (
        broker(&rt, &etcd, 1),
        broker(&rt, &etcd, 2),
        broker(&rt, &etcd, 3),
    );
    for r in [&b1, &b2, &b3] {
        wait_for("every broker registered", || {
            (broker_ids(r) == [1, 2, 3]).then_some(())
        });
        assert!(r.is_cluster());
    }
    assert_eq!(b3.brokers().unwrap()[1].address, "127.0.0.1:9002");
    let controller = agreed_controller(&[&b1, &b2, &b3]);
    assert!((1..=3).contains(&controller.0));
    let epochs: BTreeSet<Option<i64>> = [&b1, &b2, &b3]
        .iter()
        .map(|r| r.controller_epoch())
        .collect();
    assert_eq!(epochs.len(), 1, "one controller epoch");

    // Placement: distinct brokers per partition, leaders spread evenly, the creator reads it.
    let created = b2.create_topic(&new_topic("orders", 6, 3)).unwrap();
    assert_eq!(b2.topic("orders").unwrap().unwrap(), created);
    let mut leaders = BTreeMap::new();
    for p in &created.partitions {
        assert_eq!(p.replicas.iter().collect::<BTreeSet<_>>().len(), 3);
        assert_eq!(p.leader, Some(p.replicas[0]));
        assert_eq!(p.isr, p.replicas);
        assert_eq!(p.leader_epoch, 0);
        *leaders.entry(p.leader.unwrap()).or_insert(0) += 1;
    }
    assert_eq!(leaders.values().copied().collect::<Vec<_>>(), [2, 2, 2]);
    for r in [&b1, &b3] {
        wait_for("the topic everywhere", || {
            (r.topic("orders").unwrap().as_ref() == Some(&created)).then_some(())
        });
    }
    assert!(matches!(
        b1.create_topic(&new_topic("orders", 1, 1)),
        Err(Error::TopicAlreadyExists(_))
    ));
    match b1.create_topic(&new_topic("wide", 1, 4)) {
        Err(Error::InvalidReplicationFactor(m)) => assert!(m.contains("(3)"), "{m}"),
        other => panic!("{other:?}"),
    }

    // More partitions than one etcd transaction may write.
    let big = b1.create_topic(&new_topic("big", 300, 2)).unwrap();
    assert_eq!(big.partitions.len(), 300);
    let stored = rt.block_on(async {
        let mut c = etcd_client::Client::connect([etcd.url()], None)
            .await
            .unwrap();
        c.get(
            "/test/partitions/big/",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only(),
            ),
        )
        .await
        .unwrap()
        .count()
    });
    assert_eq!(stored, 300);
    wait_for("the big topic everywhere", || {
        (b3.topic("big").unwrap().as_ref() == Some(&big)).then_some(())
    });

    let deleted = b3.delete_topic("orders").unwrap();
    assert_eq!(deleted, created);
    assert!(matches!(
        b3.delete_topic("orders"),
        Err(Error::UnknownTopicOrPartition(_))
    ));
    for r in [&b1, &b2, &b3] {
        wait_for("the topic gone everywhere", || {
            let names: Vec<String> = r.topics().unwrap().into_iter().map(|t| t.name).collect();
            (names == ["big"]).then_some(())
        });
    }
}

fn partition(r: &EtcdRegistry, topic: &str, p: u32) -> sluiceway_core::registry::PartitionInfo {
    r.topic(topic).unwrap().unwrap().partitions[p as usize].clone()
}

#[test]
fn etcd_dead_leader_is_replaced_by_an_isr_member_and_the_deposed_leader_is_fenced() {
    let etcd = TestEtcd::start_temp();
    let rt = runtime();
    let mut brokers: BTreeMap<u32, Arc<EtcdRegistry>> =
        (1..=3).map(|id| (id, broker(&rt, &etcd, id))).collect();
    let controller = agreed_controller(&brokers.values().collect::<Vec<_>>());
    let topic: TopicInfo = brokers[&1].create_topic(&new_topic("t", 3, 3)).unwrap();
    // A partition led by a broker that is not the controller.
    let before = topic
        .partitions
        .iter()
        .find(|p| p.leader != Some(controller))
        .unwrap()
        .clone();
    let victim = before.leader.unwrap();
    let survivor = brokers
        .keys()
        .copied()
        .find(|id| *id != victim.0 && *id != controller.0)
        .unwrap();
    // A crash: the tasks stop, the lease is not revoked and expires after the session timeout.
    drop(brokers.remove(&victim.0));
    let s = Arc::clone(&brokers[&survivor]);
    let after = wait_for("a new leader", || {
        // The topic was created through broker 1: this broker's view may not have it yet
        // (regression: unwrapping it here raced the watch).
        let p = s.topic("t").unwrap()?.partitions[before.partition as usize].clone();
        (p.leader != before.leader).then_some(p)
    });
    let new_leader = after.leader.expect("an in-sync replica is alive");
    assert!(before.isr.contains(&new_leader));
    assert_eq!(after.leader_epoch, before.leader_epoch + 1);
    assert!(!after.isr.contains(&victim), "{after:?}");
    assert_eq!(ids(&after.replicas), ids(&before.replicas));
    // Every partition drops the dead broker from its ISR.
    wait_for("the dead broker out of every ISR", || {
        s.topic("t")
            .unwrap()?
            .partitions
            .iter()
            .all(|p| !p.isr.contains(&victim) && p.leader.is_some())
            .then_some(())
    });
    assert!(!broker_ids(&s).contains(&victim.0));

    // The deposed leader's ISR change is fenced; so is a stale epoch of the new leader.
    let fenced = s
        .alter_isr(
            "t",
            before.partition,
            victim,
            before.leader_epoch,
            &[victim],
        )
        .unwrap_err();
    assert_eq!(code(&fenced), ErrorCode::FencedLeaderEpoch, "{fenced}");
    let after = partition(&s, "t", before.partition);
    let stale = s
        .alter_isr(
            "t",
            before.partition,
            new_leader,
            after.leader_epoch - 1,
            &[new_leader],
        )
        .unwrap_err();
    assert_eq!(code(&stale), ErrorCode::FencedLeaderEpoch);
    let other = brokers
        .keys()
        .copied()
        .find(|id| *id != new_leader.0)
        .unwrap();
    let not_leader = s
        .alter_isr(
            "t",
            before.partition,
            BrokerId(other),
            after.leader_epoch,
            &[BrokerId(other)],
        )
        .unwrap_err();
    assert_eq!(code(&not_leader), ErrorCode::NotLeader);
    let bad = s
        .alter_isr(
            "t",
            before.partition,
            new_leader,
            after.leader_epoch,
            &[BrokerId(other)],
        )
        .unwrap_err();
    assert_eq!(code(&bad), ErrorCode::InvalidRequest);
    assert!(matches!(
        s.alter_isr("t", 9, new_leader, 0, &[new_leader]),
        Err(Error::UnknownTopicOrPartition(_))
    ));

    // The new leader shrinks and expands its ISR; the epoch does not change; all brokers see it.
    let shrunk = s
        .alter_isr(
            "t",
            before.partition,
            new_leader,
            after.leader_epoch,
            &[new_leader],
        )
        .unwrap();
    assert_eq!(ids(&shrunk.isr), [new_leader.0]);
    assert_eq!(shrunk.leader_epoch, after.leader_epoch);
    assert_eq!(partition(&s, "t", before.partition), shrunk);
    let both = [new_leader, BrokerId(other)];
    let grown = s
        .alter_isr("t", before.partition, new_leader, after.leader_epoch, &both)
        .unwrap();
    assert_eq!(ids(&grown.isr), ids(&both));
    for r in brokers.values() {
        wait_for("the ISR change everywhere", || {
            (partition(r, "t", before.partition) == grown).then_some(())
        });
    }

    // KIP-841: the dead broker is a replica but not registered, so it cannot join the ISR (the
    // controller would remove it again at once, bumping the epoch); once it registers it can.
    assert!(!s.is_registered(victim));
    let all = [new_leader, BrokerId(other), victim];
    let fenced = s
        .alter_isr("t", before.partition, new_leader, after.leader_epoch, &all)
        .unwrap_err();
    assert_eq!(code(&fenced), ErrorCode::IneligibleReplica, "{fenced}");
    assert!(fenced.is_retriable());
    assert!(
        fenced
            .to_string()
            .contains(&format!("broker {victim} cannot join")),
        "{fenced}"
    );
    assert_eq!(partition(&s, "t", before.partition), grown);
    brokers.insert(victim.0, broker(&rt, &etcd, victim.0));
    wait_for("the restarted broker registered", || {
        s.is_registered(victim).then_some(())
    });
    let full = s
        .alter_isr("t", before.partition, new_leader, after.leader_epoch, &all)
        .unwrap();
    assert_eq!(full.leader_epoch, after.leader_epoch);
    assert_eq!(ids(&full.isr).len(), 3);
}

#[test]
fn etcd_controller_fails_over_on_shutdown_and_on_crash() {
    let etcd = TestEtcd::start_temp();
    let rt = runtime();
    let mut brokers: BTreeMap<u32, Arc<EtcdRegistry>> =
        (1..=3).map(|id| (id, broker(&rt, &etcd, id))).collect();
    let first = agreed_controller(&brokers.values().collect::<Vec<_>>());
    let first_epoch = brokers[&first.0].controller_epoch().unwrap();
    brokers[&1].create_topic(&new_topic("t", 3, 2)).unwrap();

    // Graceful: the lease is revoked, the controller key goes with it at once.
    brokers[&first.0].shutdown();
    brokers.remove(&first.0);
    // Right after the shutdown the others may not have seen the controller key go yet: wait
    // for them to agree on a new one (regression: this asserted on the stale view).
    let remaining: Vec<&Arc<EtcdRegistry>> = brokers.values().collect();
    let second = wait_for("a new controller seen by every remaining broker", || {
        let seen: BTreeSet<Option<BrokerId>> = remaining.iter().map(|r| r.controller()).collect();
        match seen.into_iter().collect::<Vec<_>>()[..] {
            [Some(c)] if c != first => Some(c),
            _ => None,
        }
    });
    assert_ne!(second, first);
    let any = Arc::clone(brokers.values().next().unwrap());
    assert!(any.controller_epoch().unwrap() > first_epoch);
    // The new controller moved leadership off the departed broker.
    wait_for("no partition led by the departed controller", || {
        any.topic("t")
            .unwrap()?
            .partitions
            .iter()
            .all(|p| p.leader.is_some() && p.leader != Some(first) && !p.isr.contains(&first))
            .then_some(())
    });

    // Crash of the second controller: the last broker takes over after the lease expires.
    drop(any);
    drop(brokers.remove(&second.0));
    let last = brokers.values().next().unwrap();
    let third = wait_for("the last broker as controller", || {
        last.controller().filter(|c| *c == last.broker_id())
    });
    assert_eq!(third, last.broker_id());
    wait_for("every partition led by the last broker", || {
        last.topic("t")
            .unwrap()
            .unwrap()
            .partitions
            .iter()
            .all(|p| {
                // A partition whose ISR held only dead brokers stays leaderless (no unclean
                // election by default); the others move to the last broker.
                p.leader == Some(third) && ids(&p.isr) == [third.0]
                    || p.leader.is_none() && !p.isr.contains(&third)
            })
            .then_some(())
    });
}

#[test]
fn etcd_reregistration_waits_for_the_old_lease_and_a_live_duplicate_is_refused() {
    let etcd = TestEtcd::start_temp();
    let rt = runtime();
    let old = broker(&rt, &etcd, 1);
    drop(old);
    // The earlier incarnation's lease has not expired yet: register_broker waits for it.
    let new = rt
        .block_on(EtcdRegistry::connect(&spec(&etcd), BrokerId(1), options()))
        .unwrap();
    new.register_broker(BrokerId(1), "127.0.0.1:7777").unwrap();
    assert_eq!(new.brokers().unwrap()[0].address, "127.0.0.1:7777");
    // Registering again with another address under the same session updates it.
    new.register_broker(BrokerId(1), "127.0.0.1:7778").unwrap();
    assert_eq!(new.brokers().unwrap()[0].address, "127.0.0.1:7778");
    assert!(matches!(
        new.register_broker(BrokerId(2), "x:1"),
        Err(Error::InvalidArgument(_))
    ));

    // A second live broker with the same id is refused after session timeout + 5 s.
    let duplicate = rt
        .block_on(EtcdRegistry::connect(&spec(&etcd), BrokerId(1), options()))
        .unwrap();
    match duplicate.register_broker(BrokerId(1), "127.0.0.1:8888") {
        Err(Error::InvalidConfig { key, reason }) => {
            assert_eq!(key, "broker_id");
            assert!(reason.contains("already registered"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(new.brokers().unwrap()[0].address, "127.0.0.1:7778");
}

#[test]
fn etcd_lost_lease_registers_again() {
    let etcd = TestEtcd::start_temp();
    let rt = runtime();
    let b1 = broker(&rt, &etcd, 1);
    let b2 = broker(&rt, &etcd, 2);
    agreed_controller(&[&b1, &b2]);
    // Revoke broker 1's lease behind its back (what etcd does when it hears nothing for a TTL).
    let lease_of_1 = |rt: &tokio::runtime::Runtime| {
        rt.block_on(async {
            let mut c = etcd_client::Client::connect([etcd.url()], None)
                .await
                .unwrap();
            let r = c.get("/test/brokers/1", None).await.unwrap();
            r.kvs().first().map(|kv| kv.lease())
        })
    };
    let old_lease = lease_of_1(&rt).unwrap();
    rt.block_on(async {
        let mut c = etcd_client::Client::connect([etcd.url()], None)
            .await
            .unwrap();
        c.lease_revoke(old_lease).await.unwrap();
    });
    wait_for("broker 1 registered again under a new lease", || {
        lease_of_1(&rt).filter(|l| *l != old_lease)
    });
    wait_for("broker 2 sees broker 1 again", || {
        (broker_ids(&b2) == [1, 2]).then_some(())
    });
    agreed_controller(&[&b1, &b2]);
}

#[test]
fn etcd_outage_reads_answer_writes_fail_retriably_and_the_watch_recovers() {
    let mut etcd = TestEtcd::start_temp();
    let rt = runtime();
    let b1 = broker(&rt, &etcd, 1);
    let t = b1.create_topic(&new_topic("kept", 2, 1)).unwrap();
    etcd.kill9();
    // Reads answer from the snapshot.
    assert_eq!(b1.topic("kept").unwrap().unwrap(), t);
    assert_eq!(broker_ids(&b1), [1]);
    // Writes fail with a retriable error naming etcd, after a bound.
    let e = b1.create_topic(&new_topic("new", 1, 1)).unwrap_err();
    assert_eq!(code(&e), ErrorCode::RequestTimedOut, "{e}");
    assert!(code(&e).is_retriable());
    assert!(e.to_string().contains("unreachable"), "{e}");

    etcd.restart();
    let created = wait_for("a write after etcd is back", || {
        b1.create_topic(&new_topic("new", 1, 1)).ok()
    });
    // The watch resumed: a change made through another broker reaches this one.
    let b2 = broker(&rt, &etcd, 2);
    assert_eq!(b2.topic("new").unwrap().unwrap(), created);
    b2.delete_topic("kept").unwrap();
    wait_for("the deletion seen by broker 1", || {
        b1.topic("kept").unwrap().is_none().then_some(())
    });
    wait_for("broker 1 registered", || {
        (broker_ids(&b1) == [1, 2]).then_some(())
    });
}

#[test]
fn etcd_producer_id_blocks_are_disjoint_across_brokers() {
    let etcd = TestEtcd::start_temp();
    let rt = runtime();
    let registries: Vec<Arc<EtcdRegistry>> = (1..=3).map(|id| broker(&rt, &etcd, id)).collect();
    // Every broker allocates at once, several times: guarded writes that conflict retry.
    let blocks: Vec<i64> = std::thread::scope(|s| {
        let handles: Vec<_> = registries
            .iter()
            .map(|r| {
                s.spawn(move || {
                    (0..4)
                        .map(|_| r.allocate_producer_ids(1000))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .filter_map(|r| r.ok())
            .collect()
    });
    assert!(blocks.len() >= 4, "most allocations succeed: {blocks:?}");
    let distinct: BTreeSet<i64> = blocks.iter().copied().collect();
    assert_eq!(distinct.len(), blocks.len(), "blocks overlap: {blocks:?}");
    assert!(
        blocks.iter().all(|b| b % 1000 == 0 && *b >= 0),
        "{blocks:?}"
    );
    // A new session continues after every block handed out.
    let later = broker(&rt, &etcd, 4).allocate_producer_ids(10).unwrap();
    assert!(
        blocks.iter().all(|b| later >= b + 1000),
        "{later} vs {blocks:?}"
    );
}

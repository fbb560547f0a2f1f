//! The consumer-group coordinator, driven exactly: scripted joins, heartbeats and ticks with
//! explicit times, no sockets and no clock.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use sluiceway_core::ErrorCode;
use sluiceway_core::group::{
    Action, Assignor, Coordinator, GroupConfig, GroupState, JoinRequest, TopicPartition,
};

const SESSION_MS: u64 = 1_000;
const REBALANCE_MS: u64 = 5_000;

fn topics(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn req(member_id: Option<&str>, client: &str, subscribed: &[&str]) -> JoinRequest {
    JoinRequest {
        member_id: member_id.map(str::to_owned),
        client_id: client.to_owned(),
        topics: topics(subscribed),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        assignor: Assignor::Range,
    }
}

fn group(partitions: &[(&str, u32)]) -> Coordinator {
    let mut c = Coordinator::new("g", "i1", GroupConfig::default());
    c.set_topic_partitions(
        0,
        partitions
            .iter()
            .map(|(t, n)| (t.to_string(), *n))
            .collect(),
    );
    c
}

/// Renders the join answers of a batch of actions as `member: gen [t-p, …]` lines.
fn render(actions: &[Action]) -> String {
    let mut lines: Vec<String> = actions
        .iter()
        .map(|a| match a {
            Action::JoinComplete {
                member_id,
                generation,
                assignment,
            } => {
                let parts: Vec<String> = assignment
                    .iter()
                    .map(|tp| format!("{}-{}", tp.topic, tp.partition))
                    .collect();
                format!("{member_id}: gen {generation} [{}]", parts.join(", "))
            }
            Action::JoinFailed { member_id, code } => format!("{member_id}: failed {code}"),
        })
        .collect();
    lines.sort();
    lines.join("\n")
}

fn subs(entries: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
    entries
        .iter()
        .map(|(m, t)| (m.to_string(), topics(t)))
        .collect()
}

#[test]
fn range_assignor_matches_kafka() {
    // Kafka's RangeAssignor javadoc example: C0, C1 subscribed to t0 and t1, 3 partitions each.
    let s = subs(&[("C0", &["t0", "t1"]), ("C1", &["t0", "t1"])]);
    let p: BTreeMap<String, u32> = [("t0".to_string(), 3), ("t1".to_string(), 3)].into();
    let a = Assignor::Range.assign(&s, &p);
    assert_eq!(
        a["C0"],
        vec![
            TopicPartition::new("t0", 0),
            TopicPartition::new("t0", 1),
            TopicPartition::new("t1", 0),
            TopicPartition::new("t1", 1)
        ]
    );
    assert_eq!(
        a["C1"],
        vec![TopicPartition::new("t0", 2), TopicPartition::new("t1", 2)]
    );
}

#[test]
fn round_robin_assignor_matches_kafka() {
    // Kafka's RoundRobinAssignor javadoc example: same inputs give t0p0, t0p2, t1p1 / t0p1, t1p0, t1p2.
    let s = subs(&[("C0", &["t0", "t1"]), ("C1", &["t0", "t1"])]);
    let p: BTreeMap<String, u32> = [("t0".to_string(), 3), ("t1".to_string(), 3)].into();
    let a = Assignor::RoundRobin.assign(&s, &p);
    assert_eq!(
        a["C0"],
        vec![
            TopicPartition::new("t0", 0),
            TopicPartition::new("t0", 2),
            TopicPartition::new("t1", 1)
        ]
    );
    assert_eq!(
        a["C1"],
        vec![
            TopicPartition::new("t0", 1),
            TopicPartition::new("t1", 0),
            TopicPartition::new("t1", 2)
        ]
    );
}

#[test]
fn round_robin_skips_members_not_subscribed() {
    let s = subs(&[("A", &["t0"]), ("B", &["t0", "t1"])]);
    let p: BTreeMap<String, u32> = [("t0".to_string(), 2), ("t1".to_string(), 2)].into();
    let a = Assignor::RoundRobin.assign(&s, &p);
    assert_eq!(a["A"], vec![TopicPartition::new("t0", 0)]);
    assert_eq!(
        a["B"],
        vec![
            TopicPartition::new("t0", 1),
            TopicPartition::new("t1", 0),
            TopicPartition::new("t1", 1)
        ]
    );
}

proptest! {
    /// Every partition of a subscribed topic goes to exactly one member subscribed to it.
    #[test]
    fn assignors_give_each_partition_to_exactly_one_member(
        members in 1usize..8,
        counts in proptest::collection::vec(0u32..20, 1..4),
        masks in proptest::collection::vec(1u8..16, 8),
        round_robin in any::<bool>(),
    ) {
        let topic_names: Vec<String> = (0..counts.len()).map(|i| format!("t{i}")).collect();
        let partitions: BTreeMap<String, u32> = topic_names.iter().cloned().zip(counts.iter().copied()).collect();
        let subscriptions: BTreeMap<String, BTreeSet<String>> = (0..members)
            .map(|m| {
                let mut t: BTreeSet<String> = topic_names.iter().enumerate()
                    .filter(|(i, _)| masks[m] & (1 << (i % 4)) != 0).map(|(_, t)| t.clone()).collect();
                if t.is_empty() { t.insert(topic_names[0].clone()); }
                (format!("m{m}"), t)
            })
            .collect();
        let assignor = if round_robin { Assignor::RoundRobin } else { Assignor::Range };
        let a = assignor.assign(&subscriptions, &partitions);
        let mut seen = BTreeSet::new();
        for (member, tps) in &a {
            for tp in tps {
                prop_assert!(subscriptions[member].contains(&tp.topic), "{member} got {tp:?} without subscribing");
                prop_assert!(seen.insert(tp.clone()), "{tp:?} assigned twice");
            }
        }
        let expected: usize = partitions.iter()
            .filter(|(t, _)| subscriptions.values().any(|s| s.contains(*t)))
            .map(|(_, n)| *n as usize).sum();
        prop_assert_eq!(seen.len(), expected);
    }
}

#[test]
fn three_members_split_six_partitions() {
    let mut g = group(&[("t", 6)]);
    let a = g.join(0, req(None, "c", &["t"])).unwrap();
    // The first member completes alone at once (no initial delay configured).
    assert_eq!(
        render(&g.take_actions()),
        "c-i1-1: gen 1 [t-0, t-1, t-2, t-3, t-4, t-5]"
    );
    let b = g.join(10, req(None, "c", &["t"])).unwrap();
    let c = g.join(20, req(None, "c", &["t"])).unwrap();
    assert!(
        g.take_actions().is_empty(),
        "new members wait for the existing member to rejoin"
    );
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    assert_eq!(g.heartbeat(30, &a, 1), Err(ErrorCode::RebalanceInProgress));
    g.join(40, req(Some(&a), "c", &["t"])).unwrap();
    assert_eq!(
        render(&g.take_actions()),
        "c-i1-1: gen 2 [t-0, t-1]\nc-i1-2: gen 2 [t-2, t-3]\nc-i1-3: gen 2 [t-4, t-5]"
    );
    assert_eq!(g.state(), GroupState::Stable);
    for m in [&a, &b, &c] {
        assert_eq!(g.heartbeat(50, m, 2), Ok(()));
    }
}

#[test]
fn missed_heartbeats_expire_a_member_and_move_its_partitions() {
    let mut g = group(&[("t", 4)]);
    let a = g.join(0, req(None, "a", &["t"])).unwrap();
    g.take_actions();
    let b = g.join(0, req(None, "b", &["t"])).unwrap();
    g.join(0, req(Some(&a), "a", &["t"])).unwrap();
    assert_eq!(
        render(&g.take_actions()),
        "a-i1-1: gen 2 [t-0, t-1]\nb-i1-2: gen 2 [t-2, t-3]"
    );
    // a keeps heartbeating; b goes silent.
    g.heartbeat(600, &a, 2).unwrap();
    g.tick(999);
    assert_eq!(
        g.state(),
        GroupState::Stable,
        "b's session has not expired yet"
    );
    g.tick(1_000);
    assert_eq!(
        g.state(),
        GroupState::PreparingRebalance,
        "b expired at 0 + 1000 ms"
    );
    assert_eq!(g.heartbeat(1_100, &b, 2), Err(ErrorCode::UnknownMemberId));
    assert_eq!(
        g.heartbeat(1_100, &a, 2),
        Err(ErrorCode::RebalanceInProgress)
    );
    g.join(1_200, req(Some(&a), "a", &["t"])).unwrap();
    assert_eq!(
        render(&g.take_actions()),
        "a-i1-1: gen 3 [t-0, t-1, t-2, t-3]"
    );
    // b's late commit is refused: it is no longer a member.
    assert_eq!(
        g.validate_commit(Some(&b), Some(2)),
        Err(ErrorCode::UnknownMemberId)
    );
}

#[test]
fn a_member_that_does_not_rejoin_is_removed_at_the_rebalance_deadline() {
    let mut g = group(&[("t", 2)]);
    let a = g.join(0, req(None, "a", &["t"])).unwrap();
    g.take_actions();
    // b joins; a keeps heartbeating (so its session never expires) but never rejoins: the
    // rebalance deadline removes it.
    let _b = g.join(100, req(None, "b", &["t"])).unwrap();
    for t in (600..REBALANCE_MS + 100).step_by(500) {
        assert_eq!(g.heartbeat(t, &a, 1), Err(ErrorCode::RebalanceInProgress));
        g.tick(t);
    }
    g.tick(REBALANCE_MS + 99);
    assert!(g.take_actions().is_empty());
    g.tick(REBALANCE_MS + 100);
    assert_eq!(render(&g.take_actions()), "b-i1-2: gen 2 [t-0, t-1]");
    assert_eq!(
        g.validate_commit(Some(&a), Some(1)),
        Err(ErrorCode::UnknownMemberId)
    );
}

#[test]
fn a_stale_generation_cannot_commit() {
    let mut g = group(&[("t", 2)]);
    let a = g.join(0, req(None, "a", &["t"])).unwrap();
    g.take_actions();
    assert_eq!(g.validate_commit(Some(&a), Some(1)), Ok(()));
    let b = g.join(10, req(None, "b", &["t"])).unwrap();
    // During the rebalance a commits its progress for the generation it owned.
    assert_eq!(g.validate_commit(Some(&a), Some(1)), Ok(()));
    g.join(20, req(Some(&a), "a", &["t"])).unwrap();
    g.take_actions();
    assert_eq!(
        g.validate_commit(Some(&a), Some(1)),
        Err(ErrorCode::IllegalGeneration)
    );
    assert_eq!(g.validate_commit(Some(&b), Some(2)), Ok(()));
    assert_eq!(
        g.validate_commit(None, None),
        Err(ErrorCode::UnknownMemberId),
        "standalone commits only to an empty group"
    );
}

#[test]
fn leaving_rebalances_at_once() {
    let mut g = group(&[("t", 2)]);
    let a = g.join(0, req(None, "a", &["t"])).unwrap();
    let b = g.join(0, req(None, "b", &["t"])).unwrap();
    g.join(0, req(Some(&a), "a", &["t"])).unwrap();
    assert_eq!(
        render(&g.take_actions()),
        "a-i1-1: gen 1 [t-0, t-1]\na-i1-1: gen 2 [t-0]\nb-i1-2: gen 2 [t-1]"
    );
    g.leave(10, &b).unwrap();
    g.join(20, req(Some(&a), "a", &["t"])).unwrap();
    assert_eq!(render(&g.take_actions()), "a-i1-1: gen 3 [t-0, t-1]");
    g.leave(30, &a).unwrap();
    assert_eq!(g.state(), GroupState::Empty);
    assert_eq!(g.validate_commit(None, None), Ok(()));
    assert_eq!(g.leave(40, &a), Err(ErrorCode::UnknownMemberId));
}

/// Plays `script` against a group of `partitions` partitions of topic `t` whose initial
/// rebalance delay is `delay_ms`, and renders what happened. One event per line:
/// `<ms> join <client>` (a new member; its id is `<client>-i1-<n>`), `<ms> rejoin <member id>`,
/// `<ms> leave <member id>`, `<ms> tick`. Each event renders as `<ms> <event>: <state> next
/// <next_deadline_ms or ->`, followed by the join answers it produced, indented.
fn play(delay_ms: u64, partitions: u32, script: &str) -> String {
    let config = GroupConfig {
        initial_rebalance_delay_ms: delay_ms,
        ..GroupConfig::default()
    };
    let mut g = Coordinator::new("g", "i1", config);
    g.set_topic_partitions(0, [("t".to_string(), partitions)].into());
    let mut out = Vec::new();
    for line in script.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let now: u64 = words[0].parse().unwrap();
        match words[1..] {
            ["join", client] => {
                g.join(now, req(None, client, &["t"])).unwrap();
            }
            ["rejoin", id] => {
                g.join(now, req(Some(id), id, &["t"])).unwrap();
            }
            ["leave", id] => g.leave(now, id).unwrap(),
            ["tick"] => g.tick(now),
            _ => panic!("bad script line {line:?}"),
        }
        let next = g
            .next_deadline_ms()
            .map_or("-".to_string(), |d| d.to_string());
        out.push(format!("{line}: {} next {next}", g.state().name()));
        let answers = render(&g.take_actions());
        out.extend(answers.lines().map(|a| format!("  {a}")));
    }
    out.join("\n")
}

/// Regression: with a non-zero initial delay, a group whose members had all joined asked to be
/// ticked only at the rebalance deadline (5 s here, 300 s for real consumers), so the delay
/// never ended in the broker. It ends when its window does, with every member in the generation.
#[test]
fn initial_delay_completes_when_it_passes_with_every_member() {
    assert_eq!(
        play(
            300,
            2,
            "
            0 join a
            299 tick
            300 tick"
        ),
        "\
0 join a: PreparingRebalance next 300
299 tick: PreparingRebalance next 300
300 tick: Stable next 1300
  a-i1-1: gen 1 [t-0, t-1]"
    );
    // b joins during the first window: a second window starts when it ends.
    assert_eq!(
        play(
            300,
            2,
            "
            0 join a
            100 join b
            300 tick
            599 tick
            600 tick"
        ),
        "\
0 join a: PreparingRebalance next 300
100 join b: PreparingRebalance next 300
300 tick: PreparingRebalance next 600
599 tick: PreparingRebalance next 600
600 tick: Stable next 1600
  a-i1-1: gen 1 [t-0]
  b-i1-2: gen 1 [t-1]"
    );
}

/// Each window in which a newcomer joined buys another window, but all of them together end at
/// the rebalance timeout (5 s: the last window is cut short, and d, who joined in it, is in the
/// generation without a further window). A member that leaves during the delay is simply gone.
#[test]
fn initial_delay_extends_on_later_joins_up_to_the_rebalance_timeout() {
    assert_eq!(
        play(
            2_000,
            4,
            "
            0 join a
            1000 join b
            1500 join x
            1600 leave x-i1-3
            2000 tick
            3000 join c
            4000 tick
            4500 join d
            5000 tick"
        ),
        "\
0 join a: PreparingRebalance next 2000
1000 join b: PreparingRebalance next 2000
1500 join x: PreparingRebalance next 2000
1600 leave x-i1-3: PreparingRebalance next 2000
  x-i1-3: failed UNKNOWN_MEMBER_ID
2000 tick: PreparingRebalance next 4000
3000 join c: PreparingRebalance next 4000
4000 tick: PreparingRebalance next 5000
4500 join d: PreparingRebalance next 5000
5000 tick: Stable next 6000
  a-i1-1: gen 1 [t-0]
  b-i1-2: gen 1 [t-1]
  c-i1-4: gen 1 [t-2]
  d-i1-5: gen 1 [t-3]"
    );
    // A delay longer than the rebalance timeout is cut to it; a late tick still completes.
    assert_eq!(
        play(
            60_000,
            1,
            "
            0 join a
            9000 tick"
        ),
        "\
0 join a: PreparingRebalance next 5000
9000 tick: Stable next 10000
  a-i1-1: gen 1 [t-0]"
    );
}

/// The delay is for a group that was empty: a member joining a stable group (and the rejoin
/// that follows) completes the rebalance as soon as every member has rejoined. Once every
/// member has left, the group is empty again and the next first join waits once more.
#[test]
fn no_initial_delay_for_a_group_with_members() {
    assert_eq!(
        play(
            300,
            2,
            "
            0 join a
            300 tick
            1000 join b
            1100 rejoin a-i1-1
            1200 leave a-i1-1
            1250 rejoin b-i1-2
            1300 leave b-i1-2
            2000 join c
            2300 tick"
        ),
        "\
0 join a: PreparingRebalance next 300
300 tick: Stable next 1300
  a-i1-1: gen 1 [t-0, t-1]
1000 join b: PreparingRebalance next 1300
1100 rejoin a-i1-1: Stable next 2100
  a-i1-1: gen 2 [t-0]
  b-i1-2: gen 2 [t-1]
1200 leave a-i1-1: PreparingRebalance next 2100
1250 rejoin b-i1-2: Stable next 2250
  b-i1-2: gen 3 [t-0, t-1]
1300 leave b-i1-2: Empty next -
2000 join c: PreparingRebalance next 2300
2300 tick: Stable next 3300
  c-i1-3: gen 5 [t-0, t-1]"
    );
}

#[test]
fn a_stable_member_rejoining_unchanged_keeps_its_assignment() {
    let mut g = group(&[("t", 2)]);
    let a = g.join(0, req(None, "a", &["t"])).unwrap();
    g.take_actions();
    g.join(10, req(Some(&a), "a", &["t"])).unwrap();
    assert_eq!(render(&g.take_actions()), "a-i1-1: gen 1 [t-0, t-1]");
    assert_eq!(g.state(), GroupState::Stable);
}

#[test]
fn more_partitions_start_a_rebalance() {
    let mut g = group(&[("t", 1)]);
    let a = g.join(0, req(None, "a", &["t"])).unwrap();
    g.take_actions();
    g.set_topic_partitions(10, [("t".to_string(), 3)].into());
    assert_eq!(g.heartbeat(20, &a, 1), Err(ErrorCode::RebalanceInProgress));
    g.join(30, req(Some(&a), "a", &["t"])).unwrap();
    assert_eq!(render(&g.take_actions()), "a-i1-1: gen 2 [t-0, t-1, t-2]");
}

#[test]
fn bad_joins_are_refused_with_their_codes() {
    let mut g = group(&[("t", 1)]);
    let mut r = req(None, "a", &["t"]);
    r.session_timeout_ms = 10;
    assert_eq!(g.join(0, r), Err(ErrorCode::InvalidSessionTimeout));
    assert_eq!(
        g.join(0, req(None, "a", &[])),
        Err(ErrorCode::InvalidRequest)
    );
    assert_eq!(
        g.join(0, req(Some("nobody"), "a", &["t"])),
        Err(ErrorCode::UnknownMemberId)
    );
    g.join(0, req(None, "a", &["t"])).unwrap();
    let mut rr = req(None, "b", &["t"]);
    rr.assignor = Assignor::RoundRobin;
    assert_eq!(g.join(1, rr), Err(ErrorCode::InconsistentGroupProtocol));
}

/// Regression: a member that dies while the group rebalances (it never rejoins and never
/// heartbeats) is removed one session timeout after its last heartbeat, and the rebalance
/// completes without it — the coordinator asks to be ticked then, not at the much later
/// rebalance deadline.
#[test]
fn a_member_dead_during_a_rebalance_expires_after_its_session() {
    let mut g = group(&[("t", 2)]);
    let a = g.join(0, req(None, "a", &["t"])).unwrap();
    g.take_actions();
    let b = g.join(100, req(None, "b", &["t"])).unwrap();
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    // a last heartbeated at 0 (its join) and is gone.
    assert_eq!(g.next_deadline_ms(), Some(SESSION_MS));
    g.tick(SESSION_MS);
    assert_eq!(g.state(), GroupState::Stable);
    let members: Vec<String> = g.members().into_iter().map(|m| m.member_id).collect();
    assert_eq!(members, [b]);
    assert!(!members.contains(&a));
}

/// A stable group's snapshot restored by another coordinator continues its generation: the
/// members' heartbeats and commits are accepted as before, a member that never comes back is
/// expired after its session and the group rebalances; counts learned after the restore start
/// a rebalance only when the restored assignment does not cover them.
#[test]
fn a_restored_group_continues_its_generation() {
    let mut g = group(&[("t", 4)]);
    let a = g.join(0, req(None, "a", &["t"])).unwrap();
    let b = g.join(0, req(None, "b", &["t"])).unwrap();
    assert_eq!(
        g.snapshot(),
        None,
        "a rebalance in progress is not persisted"
    );
    g.join(1, req(Some(&a), "a", &["t"])).unwrap();
    assert_eq!(g.state(), GroupState::Stable);
    let snapshot = g.snapshot().expect("stable");
    assert_eq!(snapshot.generation, 2);
    assert_eq!(snapshot.members.len(), 2);

    let counts: BTreeMap<String, u32> = [("t".to_string(), 4)].into();
    let mut r = Coordinator::restore(
        "g",
        "i2",
        GroupConfig::default(),
        snapshot.clone(),
        100,
        counts,
    );
    assert_eq!(r.state(), GroupState::Stable);
    assert_eq!(r.generation(), 2);
    assert_eq!(r.members(), g.members(), "same members and assignments");
    r.heartbeat(200, &a, 2).unwrap();
    r.validate_commit(Some(&b), Some(2)).unwrap();
    // b never comes back: expired one session after the restore; a must rejoin.
    r.tick(100 + SESSION_MS + 1);
    assert_eq!(r.state(), GroupState::PreparingRebalance);
    assert_eq!(
        r.heartbeat(1_200, &a, 1),
        Err(ErrorCode::RebalanceInProgress)
    );

    // Restored before the partition counts were known (one broker restarting): the first
    // counts are adopted when the assignment covers them...
    let mut r = Coordinator::restore(
        "g",
        "i3",
        GroupConfig::default(),
        snapshot.clone(),
        0,
        BTreeMap::new(),
    );
    r.set_topic_partitions(1, [("t".to_string(), 4)].into());
    assert_eq!(r.state(), GroupState::Stable);
    // ... and rebalance when the topic grew meanwhile.
    let mut r = Coordinator::restore(
        "g",
        "i4",
        GroupConfig::default(),
        snapshot,
        0,
        BTreeMap::new(),
    );
    r.set_topic_partitions(1, [("t".to_string(), 6)].into());
    assert_eq!(r.state(), GroupState::PreparingRebalance);
}

mod offsets {
    use std::sync::Arc;

    use sluiceway_core::group::offsets::{
        decode_key, decode_value, encode_key, encode_value, partition_for_group,
    };
    use sluiceway_core::group::{GroupOffsetStore, OffsetCommit, TopicPartition};
    use sluiceway_core::storage::{LogConfig, SystemClock};
    use sluiceway_core::{Offset, TimestampMs};

    fn commit(offset: u64, metadata: &str) -> OffsetCommit {
        OffsetCommit {
            offset: Offset(offset),
            metadata: metadata.to_owned(),
            commit_timestamp: TimestampMs(1_700_000_000_000),
        }
    }

    fn open(dir: &std::path::Path) -> GroupOffsetStore {
        GroupOffsetStore::open(dir, 3, LogConfig::default(), Arc::new(SystemClock)).unwrap()
    }

    #[test]
    fn records_use_kafkas_offset_commit_schema() {
        let key = encode_key("g", &TopicPartition::new("t", 7));
        // version 1 · "g" · "t" · partition 7
        assert_eq!(key, [0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 7]);
        let value = encode_value(&OffsetCommit {
            offset: Offset(258),
            metadata: "m".into(),
            commit_timestamp: TimestampMs(5),
        });
        let mut want = vec![0, 1];
        want.extend_from_slice(&258i64.to_be_bytes());
        want.extend_from_slice(&[0, 1, b'm']);
        want.extend_from_slice(&5i64.to_be_bytes());
        want.extend_from_slice(&(-1i64).to_be_bytes());
        assert_eq!(value, want);
        assert_eq!(
            decode_key(&key).unwrap(),
            Some(("g".to_string(), TopicPartition::new("t", 7)))
        );
        assert_eq!(decode_value(&value).unwrap().offset, Offset(258));
        // Kafka's group-metadata records (key version 2) are skipped, not errors.
        assert_eq!(decode_key(&[0, 2, 0, 1, b'g']).unwrap(), None);
        // Truncated records are errors, never panics.
        for cut in 0..key.len() - 1 {
            let _ = decode_key(&key[..cut]);
        }
        for cut in 0..value.len() {
            assert!(decode_value(&value[..cut]).is_err());
        }
    }

    #[test]
    fn commits_survive_a_restart_and_tombstones_delete() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let store = open(tmp.path());
            store
                .commit(
                    "g1",
                    &[
                        (TopicPartition::new("a", 0), commit(10, "")),
                        (TopicPartition::new("a", 1), commit(20, "x")),
                    ],
                )
                .unwrap();
            store
                .commit("g1", &[(TopicPartition::new("a", 0), commit(15, ""))])
                .unwrap();
            store
                .commit("g2", &[(TopicPartition::new("b", 0), commit(1, ""))])
                .unwrap();
            store.close().unwrap();
        }
        {
            let store = open(tmp.path());
            let g1 = store.fetch("g1", None).unwrap();
            assert_eq!(
                g1[&TopicPartition::new("a", 0)].offset,
                Offset(15),
                "the later commit wins on replay"
            );
            assert_eq!(g1[&TopicPartition::new("a", 1)], commit(20, "x"));
            assert_eq!(store.groups(), vec!["g1".to_string(), "g2".to_string()]);
            assert_eq!(
                store
                    .fetch("g1", Some(&[TopicPartition::new("a", 1)]))
                    .unwrap()
                    .len(),
                1
            );
            store.forget_topic("a").unwrap();
            assert!(store.fetch("g1", None).unwrap().is_empty());
            // Not closed cleanly this time: replay after recovery must give the same answer.
        }
        let store = open(tmp.path());
        assert!(
            store.fetch("g1", None).unwrap().is_empty(),
            "tombstones replay too"
        );
        assert_eq!(
            store.fetch("g2", None).unwrap()[&TopicPartition::new("b", 0)].offset,
            Offset(1)
        );
        assert_eq!(partition_for_group("g1", 3), partition_for_group("g1", 3));
        assert!(
            store
                .commit("", &[(TopicPartition::new("a", 0), commit(1, ""))])
                .is_err()
        );
    }

    fn open_compacting(
        dir: &std::path::Path,
        partitions: u32,
        compact_bytes: u64,
    ) -> GroupOffsetStore {
        let config = LogConfig {
            segment_bytes: 64 << 10,
            ..LogConfig::default()
        };
        GroupOffsetStore::open_with_compaction(
            dir,
            partitions,
            config,
            Arc::new(SystemClock),
            compact_bytes,
        )
        .unwrap()
    }

    type State = std::collections::BTreeMap<
        String,
        std::collections::BTreeMap<TopicPartition, OffsetCommit>,
    >;

    fn state(store: &GroupOffsetStore, groups: &[String]) -> State {
        groups
            .iter()
            .map(|g| (g.clone(), store.fetch(g, None).unwrap()))
            .filter(|(_, m)| !m.is_empty())
            .collect()
    }

    #[test]
    fn compaction_keeps_the_state_and_bounds_the_log() {
        const BOUND: u64 = 32 << 10;
        let tmp = tempfile::tempdir().unwrap();
        let groups: Vec<String> = (0..8).map(|g| format!("group-{g}")).collect();
        let mut model = State::new();
        {
            let store = open_compacting(tmp.path(), 2, BOUND);
            let mut largest = 0;
            for round in 0..2_000u64 {
                let group = &groups[(round % 8) as usize];
                let tp = TopicPartition::new(format!("topic-{}", round % 5), (round % 3) as u32);
                let c = commit(round, &"m".repeat((round % 50) as usize));
                store.commit(group, &[(tp.clone(), c.clone())]).unwrap();
                model.entry(group.clone()).or_default().insert(tp, c);
                largest = largest.max(store.size_bytes());
                if round == 1_000 {
                    // A deleted topic's tombstones are compacted away too.
                    store.forget_topic("topic-4").unwrap();
                    for m in model.values_mut() {
                        m.retain(|tp, _| tp.topic != "topic-4");
                    }
                    model.retain(|_, m| !m.is_empty());
                }
            }
            // Each of the 2 partitions holds at most the bound, one commit and one small
            // snapshot (the live state is a few KiB).
            assert!(largest <= 2 * (BOUND + (16 << 10)), "{largest} bytes");
            assert_eq!(state(&store, &groups), model);
            // Not closed: replay after recovery gives the same map.
        }
        let store = open_compacting(tmp.path(), 2, BOUND);
        assert_eq!(state(&store, &groups), model);
        // A forced compaction of everything replays the same too, and leaves only the snapshots.
        store.compact().unwrap();
        assert_eq!(state(&store, &groups), model);
        let compacted = store.size_bytes();
        assert!(compacted < 16 << 10, "{compacted} bytes");
        store.close().unwrap();
        let store = open_compacting(tmp.path(), 2, BOUND);
        assert_eq!(state(&store, &groups), model);
        assert_eq!(store.size_bytes(), compacted);
    }

    #[test]
    fn a_snapshot_larger_than_one_set_is_split_and_replays() {
        let tmp = tempfile::tempdir().unwrap();
        // One group, 9000 partitions with 200-byte metadata: about 2.3 MiB of live state, so the
        // snapshot takes several sets of at most OFFSETS_SNAPSHOT_SET_BYTES_MAX.
        let offsets: Vec<(TopicPartition, OffsetCommit)> = (0..9_000u32)
            .map(|p| {
                (
                    TopicPartition::new("wide", p),
                    commit(u64::from(p), &"z".repeat(200)),
                )
            })
            .collect();
        let want: std::collections::BTreeMap<TopicPartition, OffsetCommit> =
            offsets.iter().cloned().collect();
        {
            let store = open_compacting(tmp.path(), 1, 1 << 20);
            store.commit("big", &offsets).unwrap();
            assert_eq!(store.fetch("big", None).unwrap(), want);
            // Over the bound already: the commit compacted.
            let after_first = store.size_bytes();
            store.commit("big", &offsets[..10]).unwrap();
            // The bound is now twice the snapshot, so one more small commit does not compact again.
            assert!(store.size_bytes() > after_first);
            store.compact().unwrap();
            assert_eq!(store.fetch("big", None).unwrap(), want);
            store.close().unwrap();
        }
        let store = open_compacting(tmp.path(), 1, 1 << 20);
        assert_eq!(store.fetch("big", None).unwrap(), want);
        let empty = tempfile::tempdir().unwrap();
        let store = open_compacting(empty.path(), 1, 1 << 20);
        store.compact().unwrap();
        assert!(store.groups().is_empty());
    }

    /// Group memberships are Kafka's group-metadata records (key version 2, value version 3,
    /// consumer protocol), byte for byte; they replay after a restart, an older generation never
    /// overwrites a newer one, and a tombstone forgets the group.
    #[test]
    fn group_membership_records_use_kafkas_schema_and_replay() {
        use sluiceway_core::group::offsets::{
            RecordKey, decode_group_value, decode_record_key, encode_group_key, encode_group_value,
        };
        use sluiceway_core::group::{Assignor, GroupSnapshot, SnapshotMember};

        let key = encode_group_key("g");
        assert_eq!(key, [0, 2, 0, 1, b'g']);
        assert_eq!(
            decode_record_key(&key).unwrap(),
            Some(RecordKey::Group("g".into()))
        );
        let snapshot = GroupSnapshot {
            generation: 7,
            assignor: Assignor::Range,
            members: vec![SnapshotMember {
                member_id: "m".into(),
                client_id: "c".into(),
                topics: ["t".to_string()].into(),
                session_timeout_ms: 10,
                rebalance_timeout_ms: 20,
                assignment: vec![TopicPartition::new("t", 1)],
            }],
        };
        let value = encode_group_value(&snapshot);
        let mut want: Vec<u8> = vec![0, 3]; // version 3
        want.extend_from_slice(&[0, 8]);
        want.extend_from_slice(b"consumer");
        want.extend_from_slice(&7i32.to_be_bytes());
        want.extend_from_slice(&[0, 5]);
        want.extend_from_slice(b"range");
        want.extend_from_slice(&[0, 1, b'm']); // leader
        want.extend_from_slice(&(-1i64).to_be_bytes()); // current_state_timestamp
        want.extend_from_slice(&1i32.to_be_bytes()); // one member
        want.extend_from_slice(&[0, 1, b'm']);
        want.extend_from_slice(&(-1i16).to_be_bytes()); // group_instance_id: null
        want.extend_from_slice(&[0, 1, b'c']);
        want.extend_from_slice(&[0, 0]); // client_host ""
        want.extend_from_slice(&20i32.to_be_bytes());
        want.extend_from_slice(&10i32.to_be_bytes());
        let subscription: Vec<u8> = [
            &[0u8, 0][..],
            &1i32.to_be_bytes(),
            &[0, 1, b't'],
            &(-1i32).to_be_bytes(),
        ]
        .concat();
        want.extend_from_slice(&(subscription.len() as i32).to_be_bytes());
        want.extend_from_slice(&subscription);
        let assignment: Vec<u8> = [
            &[0u8, 0][..],
            &1i32.to_be_bytes(),
            &[0, 1, b't'],
            &1i32.to_be_bytes(),
            &1i32.to_be_bytes(),
            &(-1i32).to_be_bytes(),
        ]
        .concat();
        want.extend_from_slice(&(assignment.len() as i32).to_be_bytes());
        want.extend_from_slice(&assignment);
        assert_eq!(value, want);
        assert_eq!(decode_group_value(&value).unwrap(), snapshot);
        for cut in 0..value.len() {
            assert!(decode_group_value(&value[..cut]).is_err(), "cut at {cut}");
        }

        let tmp = tempfile::tempdir().unwrap();
        {
            let store = open(tmp.path());
            store.store_group("g", Some(&snapshot)).unwrap();
            let older = GroupSnapshot {
                generation: 6,
                ..snapshot.clone()
            };
            store.store_group("g", Some(&older)).unwrap();
            store
                .commit("g", &[(TopicPartition::new("t", 1), commit(5, ""))])
                .unwrap();
            store.close().unwrap();
        }
        let store = open(tmp.path());
        let p = partition_for_group("g", 3);
        assert_eq!(
            store.group_snapshots(p),
            vec![("g".to_string(), snapshot.clone())],
            "replayed; the older generation did not overwrite the newer"
        );
        store.compact().unwrap();
        assert_eq!(store.group_snapshots(p).len(), 1, "compaction keeps it");
        store.store_group("g", None).unwrap();
        store.close().unwrap();
        let store = open(tmp.path());
        assert!(
            store.group_snapshots(p).is_empty(),
            "the tombstone forgets it"
        );
        assert_eq!(
            store.fetch("g", None).unwrap()[&TopicPartition::new("t", 1)]
                .offset
                .0,
            5,
            "offsets are separate from membership"
        );
    }

    /// An offsets partition whose committed appends can be made to fail, as a cluster leader's
    /// do when its replicas are missing or it lost the partition.
    #[derive(Debug)]
    struct FlakyLog {
        log: sluiceway_core::storage::PartitionLog,
        fail: std::sync::atomic::AtomicBool,
    }

    impl sluiceway_core::group::OffsetsLog for FlakyLog {
        fn log(&self) -> &sluiceway_core::storage::PartitionLog {
            &self.log
        }

        fn append_committed(
            &self,
            set: &mut [u8],
        ) -> sluiceway_core::Result<sluiceway_core::storage::AppendInfo> {
            // Appended, but not committed: as a leader whose followers never confirm.
            let info = self.log.append(set)?;
            if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(sluiceway_core::Error::CoordinatorNotAvailable(
                    "replicas did not confirm".into(),
                ));
            }
            self.log.set_high_watermark(info.last_offset.next());
            Ok(info)
        }
    }

    /// A cluster's store: partitions are served only while loaded (the broker leads them);
    /// every other group is NOT_COORDINATOR; a commit whose append is not committed changes
    /// nothing a reader sees; a new load replays what the log holds.
    #[test]
    fn only_loaded_partitions_are_coordinated_and_uncommitted_appends_are_not_applied() {
        use sluiceway_core::ErrorCode;
        use sluiceway_core::storage::PartitionLog;

        let store = GroupOffsetStore::unloaded(1 << 20);
        let tp = TopicPartition::new("t", 0);
        assert_eq!(
            store.check_coordinator("g").unwrap_err().code(),
            ErrorCode::CoordinatorNotAvailable,
            "no partition count yet: the offsets topic does not exist"
        );
        store.set_partition_count(4);
        // Two groups in different partitions of the offsets topic.
        let mine = "g";
        let p = partition_for_group(mine, 4);
        let other = (0..100)
            .map(|i| format!("other-{i}"))
            .find(|g| partition_for_group(g, 4) != p)
            .unwrap();
        assert_eq!(
            store.check_coordinator(mine).unwrap_err().code(),
            ErrorCode::NotCoordinator
        );

        let tmp = tempfile::tempdir().unwrap();
        let open_log = || {
            PartitionLog::open(
                tmp.path()
                    .join(PartitionLog::dir_name("__consumer_offsets", p)),
                LogConfig::default(),
                Arc::new(SystemClock),
            )
            .unwrap()
        };
        let log = Arc::new(FlakyLog {
            log: open_log(),
            fail: false.into(),
        });
        store.load(p, log.clone(), 7).unwrap();
        assert_eq!(store.loaded_term(p), Some(7));
        store.check_coordinator(mine).unwrap();
        assert_eq!(
            store
                .commit(&other, &[(tp.clone(), commit(1, ""))])
                .unwrap_err()
                .code(),
            ErrorCode::NotCoordinator,
            "a group of a partition this broker does not lead"
        );
        assert_eq!(
            store.fetch(&other, None).unwrap_err().code(),
            ErrorCode::NotCoordinator
        );

        store
            .commit(mine, &[(tp.clone(), commit(10, "a"))])
            .unwrap();
        log.fail.store(true, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            store
                .commit(mine, &[(tp.clone(), commit(20, "b"))])
                .unwrap_err()
                .code(),
            ErrorCode::CoordinatorNotAvailable
        );
        assert_eq!(
            store.fetch(mine, None).unwrap()[&tp],
            commit(10, "a"),
            "an append the replicas did not confirm is not applied"
        );

        store.unload(p);
        assert_eq!(store.loaded_term(p), None);
        assert_eq!(
            store
                .commit(mine, &[(tp.clone(), commit(30, ""))])
                .unwrap_err()
                .code(),
            ErrorCode::NotCoordinator,
            "an unloaded partition's groups are not coordinated here"
        );
        assert!(store.groups().is_empty());

        // Leading it again replays the log: the unconfirmed record is in this leader's log, so
        // (as in Kafka) it becomes the committed value once this leader's log is the one kept.
        log.fail.store(false, std::sync::atomic::Ordering::SeqCst);
        store.load(p, log.clone(), 8).unwrap();
        assert_eq!(store.fetch(mine, None).unwrap()[&tp].offset.0, 20);
        assert_eq!(store.groups(), vec![mine.to_string()]);
    }
}

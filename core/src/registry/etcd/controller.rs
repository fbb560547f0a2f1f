//! The controller's decisions, as pure functions: [`reconcile`] looks at a [`Snapshot`] and the
//! live brokers and returns the partition changes to write. The I/O part (`etcd.rs`) writes each
//! change with a transaction guarded by the controller epoch and the partition key's revision,
//! so a decision taken on a stale view is simply not applied.
//!
//! Rules (Kafka's controller, rack-unaware, `docs/FORMAT.md` "Cluster metadata in etcd"):
//! - The leader is dead (not registered, or in `failed`: its registration disappeared since the
//!   last pass, even if a new incarnation registered again) → the new leader is the first
//!   replica, in replica order, that is in the ISR and alive; ISR := ISR minus the dead.
//!   With none alive in the ISR: with `unclean.leader.election.enable=true` the first alive
//!   replica leads with ISR := [it]; otherwise leader := none and the ISR is kept as it is
//!   (Kafka keeps the last ISR so the data's last owners stay known).
//! - No leader and some ISR member alive → it leads; ISR := ISR minus the dead.
//! - The leader is alive but the ISR holds dead brokers → they are removed.
//! - Every change bumps the leader epoch by one; a leaderless partition that stays leaderless is
//!   not changed again (the epoch is bumped once when it loses its leader, not on every pass).
//!
//! - *Preferred leaders* ([`preferred_leader_changes`], Kafka's `auto.leader.rebalance.enable`,
//!   run every `leader_rebalance_interval_ms` rather than on every pass): a partition whose
//!   first replica (its preferred leader, which placement spread evenly) is alive and in the ISR
//!   but does not lead gets it back as leader; the ISR is kept and the epoch bumped. Without it,
//!   leadership piles up on the brokers that survived the last failovers.
//!
//! **Architecture Invariant**: only ISR members are elected unless the topic opts into unclean
//! election, so no acknowledged write (on every ISR member) is lost by a failover.

use std::collections::BTreeSet;

use super::state::{PartitionValue, PartitionView, Snapshot, TopicEntry};
use crate::registry::{BrokerId, PartitionInfo};

/// Kafka's topic config that allows electing an out-of-sync replica (data loss for availability).
pub const UNCLEAN_LEADER_ELECTION_ENABLE: &str = "unclean.leader.election.enable";

/// One partition state to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PartitionChange {
    pub topic: String,
    pub partition: u32,
    /// The topic key's create revision (the write is refused if the topic was re-created).
    pub topic_revision: i64,
    /// The partition key's mod revision the decision was taken on (0: absent).
    pub seen_mod_revision: i64,
    pub before: PartitionInfo,
    pub after: PartitionValue,
}

/// Every change the controller should make now. Deterministic: topics in name order, partitions
/// in number order.
pub(crate) fn reconcile(
    snapshot: &Snapshot,
    live: &BTreeSet<BrokerId>,
    failed: &[BrokerId],
) -> Vec<PartitionChange> {
    let alive = |b: BrokerId| live.contains(&b) && !failed.contains(&b);
    let mut changes = Vec::new();
    for (name, entry) in &snapshot.topics {
        let unclean = entry
            .value
            .configs
            .get(UNCLEAN_LEADER_ELECTION_ENABLE)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        for view in snapshot.partition_views(name, entry) {
            if let Some((leader, isr)) = next_state(&view.info, unclean, &alive) {
                changes.push(change(name, entry, view, leader, &isr));
            }
        }
    }
    changes
}

/// Every partition led by an alive broker other than its alive, in-sync preferred replica: the
/// change that hands leadership back to the preferred replica (module docs). Partitions that
/// [`reconcile`] would change are left to it.
pub(crate) fn preferred_leader_changes(
    snapshot: &Snapshot,
    live: &BTreeSet<BrokerId>,
    failed: &[BrokerId],
) -> Vec<PartitionChange> {
    let alive = |b: BrokerId| live.contains(&b) && !failed.contains(&b);
    let mut changes = Vec::new();
    for (name, entry) in &snapshot.topics {
        for view in snapshot.partition_views(name, entry) {
            let p = &view.info;
            let (Some(leader), Some(&preferred)) = (p.leader, p.replicas.first()) else {
                continue;
            };
            let healthy = alive(leader) && p.isr.iter().all(|b| alive(*b));
            if !healthy || leader == preferred || !alive(preferred) || !p.isr.contains(&preferred) {
                continue;
            }
            let isr = p.isr.clone();
            changes.push(change(name, entry, view, Some(preferred), &isr));
        }
    }
    changes
}

/// The write that gives partition `view` of topic `name` this leader and ISR, one epoch up.
fn change(
    name: &str,
    entry: &TopicEntry,
    view: PartitionView,
    leader: Option<BrokerId>,
    isr: &[BrokerId],
) -> PartitionChange {
    PartitionChange {
        topic: name.to_owned(),
        partition: view.info.partition,
        topic_revision: entry.create_revision,
        seen_mod_revision: view.mod_revision,
        after: PartitionValue {
            leader: leader.map(|b| b.0),
            leader_epoch: view.info.leader_epoch.saturating_add(1),
            isr: isr.iter().map(|b| b.0).collect(),
        },
        before: view.info,
    }
}

/// The new `(leader, isr)` of one partition, or `None` when it should not change.
pub(crate) fn next_state(
    p: &PartitionInfo,
    unclean: bool,
    alive: &dyn Fn(BrokerId) -> bool,
) -> Option<(Option<BrokerId>, Vec<BrokerId>)> {
    let live_isr: Vec<BrokerId> = p.isr.iter().copied().filter(|b| alive(*b)).collect();
    match p.leader {
        Some(l) if alive(l) => (live_isr.len() != p.isr.len()).then_some((Some(l), live_isr)),
        leader => {
            let candidate = p
                .replicas
                .iter()
                .copied()
                .find(|b| live_isr.contains(b))
                // An ISR member that is not a replica breaks the invariants; elect it anyway
                // rather than leave the partition without a leader.
                .or_else(|| live_isr.first().copied());
            if let Some(c) = candidate {
                return Some((Some(c), live_isr));
            }
            if unclean && let Some(r) = p.replicas.iter().copied().find(|b| alive(*b)) {
                return Some((Some(r), vec![r]));
            }
            // Nobody can lead. Bump the epoch once, when the leader is lost; a partition that is
            // already leaderless stays as it is.
            leader.map(|_| (None, p.isr.clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::registry::etcd::state::{TopicEntry, TopicValue};

    fn b(ids: &[u32]) -> Vec<BrokerId> {
        ids.iter().copied().map(BrokerId).collect()
    }

    fn part(leader: Option<u32>, replicas: &[u32], isr: &[u32], epoch: u32) -> PartitionInfo {
        PartitionInfo {
            partition: 0,
            leader: leader.map(BrokerId),
            replicas: b(replicas),
            isr: b(isr),
            leader_epoch: epoch,
        }
    }

    fn run(p: &PartitionInfo, live: &[u32], unclean: bool) -> Option<(Option<u32>, Vec<u32>)> {
        let live = b(live);
        next_state(p, unclean, &|x| live.contains(&x))
            .map(|(l, isr)| (l.map(|x| x.0), isr.iter().map(|x| x.0).collect()))
    }

    #[test]
    fn leader_dead_elects_first_live_isr_replica_in_replica_order() {
        let p = part(Some(1), &[1, 2, 3], &[3, 1, 2], 4);
        assert_eq!(run(&p, &[2, 3], false), Some((Some(2), vec![3, 2])));
        // Out-of-sync replicas are never elected cleanly.
        let p = part(Some(1), &[1, 2, 3], &[1, 3], 4);
        assert_eq!(run(&p, &[2, 3], false), Some((Some(3), vec![3])));
    }

    #[test]
    fn healthy_partition_is_left_alone_and_dead_followers_leave_the_isr() {
        let p = part(Some(1), &[1, 2, 3], &[1, 2, 3], 0);
        assert_eq!(run(&p, &[1, 2, 3], false), None);
        assert_eq!(run(&p, &[1, 3], false), Some((Some(1), vec![1, 3])));
        // A dead replica outside the ISR changes nothing.
        let p = part(Some(1), &[1, 2, 3], &[1, 3], 0);
        assert_eq!(run(&p, &[1, 3], false), None);
    }

    #[test]
    fn no_live_isr_member_means_leaderless_once_or_unclean_election() {
        let p = part(Some(1), &[1, 2, 3], &[1], 4);
        assert_eq!(run(&p, &[2, 3], false), Some((None, vec![1])));
        let leaderless = part(None, &[1, 2, 3], &[1], 5);
        assert_eq!(run(&leaderless, &[2, 3], false), None, "bumped only once");
        assert_eq!(run(&p, &[2, 3], true), Some((Some(2), vec![2])));
        assert_eq!(run(&leaderless, &[3], true), Some((Some(3), vec![3])));
        assert_eq!(run(&leaderless, &[], true), None);
        // The last ISR member comes back: it leads again.
        assert_eq!(run(&leaderless, &[1], false), Some((Some(1), vec![1])));
    }

    /// (leader, replicas, isr, leader epoch) of one partition.
    type Part<'a> = (Option<u32>, &'a [u32], &'a [u32], u32);

    fn snapshot_with(partitions: &[Part]) -> Snapshot {
        use crate::registry::etcd::state::PartitionEntry;
        let mut s = Snapshot::default();
        s.topics.insert(
            "t".into(),
            TopicEntry {
                value: TopicValue {
                    replication_factor: 3,
                    configs: BTreeMap::new(),
                    replicas: partitions.iter().map(|p| p.1.to_vec()).collect(),
                },
                create_revision: 3,
            },
        );
        for (i, (leader, _, isr, epoch)) in partitions.iter().enumerate() {
            s.partitions.entry("t".into()).or_default().insert(
                i as u32,
                PartitionEntry {
                    value: PartitionValue {
                        leader: *leader,
                        leader_epoch: *epoch,
                        isr: isr.to_vec(),
                    },
                    mod_revision: 10 + i as i64,
                },
            );
        }
        s
    }

    #[test]
    fn preferred_replica_back_in_sync_leads_again() {
        let s = snapshot_with(&[
            // 0: led by 2 after a failover; preferred 1 is back in the ISR → 1 leads again.
            (Some(2), &[1, 2, 3], &[2, 3, 1], 4),
            // 1: preferred 2 leads already.
            (Some(2), &[2, 3, 1], &[2, 3, 1], 0),
            // 2: preferred 3 is alive but not yet in sync → no change.
            (Some(1), &[3, 1, 2], &[1, 2], 2),
            // 3: led by 3, preferred 1 in sync → 1 leads again (unless 3 is dead: see below).
            (Some(3), &[1, 3, 2], &[3, 1, 2], 1),
        ]);
        let all: BTreeSet<BrokerId> = b(&[1, 2, 3]).into_iter().collect();
        let changes = preferred_leader_changes(&s, &all, &[]);
        let moved: Vec<u32> = changes.iter().map(|c| c.partition).collect();
        assert_eq!(moved, [0, 3], "{changes:?}");
        assert_eq!(changes[0].seen_mod_revision, 10);
        assert_eq!(
            changes[0].after,
            PartitionValue {
                leader: Some(1),
                leader_epoch: 5,
                isr: vec![2, 3, 1]
            }
        );
        // With broker 3 dead, partition 3's leader is reconcile's business, and partition 0
        // (whose ISR holds the dead 3) waits for reconcile to shrink the ISR first.
        let without_3: BTreeSet<BrokerId> = b(&[1, 2]).into_iter().collect();
        let changes = preferred_leader_changes(&s, &without_3, &[]);
        assert!(changes.is_empty(), "{changes:?}");
        // A preferred replica whose old incarnation just failed is not trusted yet.
        assert!(preferred_leader_changes(&s, &all, &b(&[1])).is_empty());
    }

    #[test]
    fn reconcile_treats_failed_brokers_as_dead_and_bumps_the_epoch_once() {
        let mut s = Snapshot::default();
        s.topics.insert(
            "t".into(),
            TopicEntry {
                value: TopicValue {
                    replication_factor: 2,
                    configs: BTreeMap::new(),
                    replicas: vec![vec![1, 2], vec![2, 1]],
                },
                create_revision: 9,
            },
        );
        let live: BTreeSet<BrokerId> = b(&[1, 2]).into_iter().collect();
        assert!(reconcile(&s, &live, &[]).is_empty());
        // Broker 1 re-registered already, but its old incarnation failed: treat it as dead.
        let changes = reconcile(&s, &live, &b(&[1]));
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[0].partition, 0);
        assert_eq!(changes[0].seen_mod_revision, 0);
        assert_eq!(changes[0].topic_revision, 9);
        assert_eq!(
            changes[0].after,
            PartitionValue {
                leader: Some(2),
                leader_epoch: 1,
                isr: vec![2]
            }
        );
        assert_eq!(
            changes[1].after,
            PartitionValue {
                leader: Some(2),
                leader_epoch: 1,
                isr: vec![2]
            }
        );
    }
}

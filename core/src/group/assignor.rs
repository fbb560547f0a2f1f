//! Partition assignors, as Kafka defines them (`RangeAssignor`, `RoundRobinAssignor`), so a
//! group's split looks the same as it would under Kafka for the same members and topics.
//!
//! Both are pure functions of (member ids, each member's subscription, partition counts) and
//! sort their inputs, so every broker computes the same assignment.

use std::collections::{BTreeMap, BTreeSet};

use super::TopicPartition;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Assignor {
    /// Per topic, the partitions in contiguous ranges over the subscribed members in member-id
    /// order; the first `partitions % members` members get one extra. Kafka's default.
    #[default]
    Range,
    /// All subscribed topic-partitions, sorted, dealt one at a time over the members in
    /// member-id order, skipping members not subscribed to the partition's topic.
    RoundRobin,
}

impl Assignor {
    /// Kafka's `partition.assignment.strategy` short names.
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "roundrobin",
        }
    }

    pub fn from_name(name: &str) -> Option<Assignor> {
        match name {
            "range" => Some(Assignor::Range),
            "roundrobin" => Some(Assignor::RoundRobin),
            _ => None,
        }
    }

    /// Assigns partitions. `subscriptions` maps member id → subscribed topics;
    /// `partitions` maps topic → partition count (topics missing from it are skipped: they do not
    /// exist yet). Every member appears in the result, possibly with nothing.
    pub fn assign(
        self,
        subscriptions: &BTreeMap<String, BTreeSet<String>>,
        partitions: &BTreeMap<String, u32>,
    ) -> BTreeMap<String, Vec<TopicPartition>> {
        let mut out: BTreeMap<String, Vec<TopicPartition>> = subscriptions
            .keys()
            .map(|m| (m.clone(), Vec::new()))
            .collect();
        match self {
            Assignor::Range => {
                let topics: BTreeSet<&String> = subscriptions.values().flatten().collect();
                for topic in topics {
                    let Some(&count) = partitions.get(topic) else {
                        continue;
                    };
                    let members: Vec<&String> = subscriptions
                        .iter()
                        .filter(|(_, t)| t.contains(topic))
                        .map(|(m, _)| m)
                        .collect();
                    if members.is_empty() {
                        continue;
                    }
                    let n = members.len() as u32;
                    let (per, extra) = (count / n, count % n);
                    let mut next = 0u32;
                    for (i, member) in members.into_iter().enumerate() {
                        let take = per + u32::from((i as u32) < extra);
                        let assigned = out.get_mut(member).expect("every member has an entry");
                        assigned.extend((next..next + take).map(|p| TopicPartition::new(topic, p)));
                        next += take;
                    }
                }
            }
            Assignor::RoundRobin => {
                let members: Vec<&String> = subscriptions.keys().collect();
                if members.is_empty() {
                    return out;
                }
                let topics: BTreeSet<&String> = subscriptions.values().flatten().collect();
                let mut turn = 0usize;
                for topic in topics {
                    let Some(&count) = partitions.get(topic) else {
                        continue;
                    };
                    for p in 0..count {
                        // Skip members not subscribed to this topic; at least one is.
                        loop {
                            let member = members[turn % members.len()];
                            turn += 1;
                            if subscriptions[member].contains(topic) {
                                out.get_mut(member)
                                    .expect("every member has an entry")
                                    .push(TopicPartition::new(topic, p));
                                break;
                            }
                        }
                    }
                }
            }
        }
        out
    }
}

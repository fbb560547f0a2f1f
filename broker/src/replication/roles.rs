//! Partition roles from the registry: which partitions this broker hosts, leads and follows.
//!
//! The broker's role loop (`crate::broker`) waits on `Registry::subscribe()` (and re-checks every
//! `ROLE_RECHECK_INTERVAL_MS`, so a partition whose log failed to open is retried) and applies
//! the registry's snapshot in one pass ([`ReplicaManager::apply_registry`], serialized with
//! CreateTopic / DeleteTopic by the broker's admin lock). The pass returns what the layers
//! above need to follow up on ([`Applied`]: the group coordinators' topic counts, deleted
//! topics):
//! - **Hosting**: every partition whose replicas include this broker gets its log and its
//!   leader-epoch history opened (created when new). Topics that vanished from the registry are
//!   deleted here (their logs closed, their directories removed). At the first pass in a
//!   cluster, partition directories of topics the registry does not assign to this broker are
//!   removed too (a topic deleted while this broker was down).
//! - **Leader** iff the registry names this broker leader. A new leadership (or a new epoch)
//!   records the epoch's start offset in the history (`epoch_cache.assign(epoch, log_end)`) and
//!   starts core's `LeaderState` from the registry's ISR. Within one epoch the leader alone
//!   changes the ISR (through `alter_isr`); a registry ISR is adopted only when it is a superset
//!   of the leader's (a write whose answer was lost), since adopting a smaller one from a stale
//!   snapshot could let the HW pass data a real ISR member lacks.
//! - **Follower** otherwise: `Follower { leader, epoch }`; a new leader or epoch means the
//!   fetcher truncates by leader epochs again before fetching ([`super::fetcher`]). A deposed
//!   leader becomes a follower: its pending acks=all waits answer NOT_LEADER (they watch the
//!   leadership term) and nothing it appends later can be acknowledged.
//! - No leader: [`Role::None`] (produce and fetch answer NOT_LEADER).
//!
//! Snapshot epochs only grow: a partition state with an epoch below the one applied is stale
//! and ignored. Role changes hold the partition's append gate exclusively.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use sluiceway_core::registry::{PartitionInfo, TopicInfo};
use sluiceway_core::replication::LeaderState;
use sluiceway_core::storage::PartitionLog;
use sluiceway_core::topic::{TopicConfig, validate_topic_name};
use sluiceway_core::{Error, Result};
use tracing::{info, warn};

use super::{
    FollowerRole, Partition, ReplicaManager, Role, Topic, open_partition, remove_topic_data,
};
use crate::topics::is_internal_topic;

/// What a pass over the registry changed that the layers above follow up on.
#[derive(Debug, Default)]
pub struct Applied {
    /// The partition counts of the registry's topics changed, or hosted topics went away: the
    /// group coordinators re-read [`ReplicaManager::topic_partition_counts`].
    pub topics_changed: bool,
    /// Topics that left the registry since the previous pass (their commits are tombstoned).
    pub deleted: Vec<String>,
}

impl ReplicaManager {
    /// Applies the registry's snapshot: hosting, roles, deletions (module docs), then starts
    /// the fetchers the follower roles need. Blocking (file I/O); the caller holds the broker's
    /// admin lock. `first` marks the pass at start.
    pub fn apply_registry(self: &Arc<Self>, first: bool) -> Result<Applied> {
        let me = self.config.broker_id;
        let infos = self.registry.topics()?;
        let mut known = BTreeMap::new();
        let mut mine_topics = HashSet::new();
        let mut followers_changed = false;
        for info in &infos {
            known.insert(info.name.clone(), info.partitions.len() as u32);
            let mine: Vec<&PartitionInfo> = info
                .partitions
                .iter()
                .filter(|p| p.replicas.contains(&me))
                .collect();
            if mine.is_empty() {
                continue;
            }
            mine_topics.insert(info.name.clone());
            let topic = match self.host(info, &mine) {
                Ok(t) => t,
                Err(e) => {
                    warn!(topic = %info.name, error = %e, "cannot host the topic's partitions; retrying later");
                    continue;
                }
            };
            for pinfo in mine {
                if let Some(p) = topic.partitions.get(&pinfo.partition) {
                    followers_changed |= self.apply_role(p, pinfo);
                }
            }
        }
        if first && self.registry.is_cluster() {
            self.remove_unassigned_dirs(&infos);
        }
        let gone: Vec<(String, Arc<Topic>)> = {
            let mut topics = self.topics.write();
            let names: Vec<String> = topics
                .keys()
                .filter(|n| !mine_topics.contains(*n))
                .cloned()
                .collect();
            names
                .into_iter()
                .filter_map(|n| topics.remove(&n).map(|t| (n, t)))
                .collect()
        };
        for (name, topic) in &gone {
            info!(topic = %name, "the topic left the registry; deleting its local data");
            if let Err(e) = remove_topic_data(topic) {
                warn!(topic = %name, error = %e, "deleting the topic's data failed");
            }
        }
        let (counts_changed, deleted) = {
            let mut k = self.known.write();
            let changed = *k != known;
            let deleted: Vec<String> = k
                .keys()
                .filter(|n| !known.contains_key(*n))
                .cloned()
                .collect();
            *k = known;
            (changed, deleted)
        };
        if followers_changed {
            self.follower_roles.send_modify(|v| *v += 1);
        }
        self.ensure_fetchers();
        Ok(Applied {
            topics_changed: counts_changed || !gone.is_empty(),
            deleted,
        })
    }

    /// Opens the partitions of `info` assigned to this broker that are not open yet.
    fn host(&self, info: &TopicInfo, mine: &[&PartitionInfo]) -> Result<Arc<Topic>> {
        let existing = self.topic(&info.name);
        if let Some(t) = &existing
            && mine.iter().all(|p| t.partitions.contains_key(&p.partition))
        {
            return Ok(t.clone());
        }
        let config = match &existing {
            Some(t) => t.config.clone(),
            None => TopicConfig::parse(&self.config.topic_defaults, &info.configs)?,
        };
        let mut partitions = existing
            .as_ref()
            .map(|t| t.partitions.clone())
            .unwrap_or_default();
        for p in mine {
            if partitions.contains_key(&p.partition) {
                continue;
            }
            let part = open_partition(
                &self.config.data_dir,
                &self.clock,
                &info.name,
                p.partition,
                &config,
            )?;
            info!(partition = %part.name(), log_end_offset = part.log.log_end_offset().0, "hosting a replica");
            partitions.insert(p.partition, part);
        }
        let topic = Arc::new(Topic {
            config,
            partition_count: info.partitions.len() as u32,
            partitions,
        });
        self.topics.write().insert(info.name.clone(), topic.clone());
        Ok(topic)
    }

    /// Sets one partition's role from its registry state. Returns whether a follower role
    /// changed (the fetchers re-read their partitions then).
    pub fn apply_role(&self, p: &Partition, state: &PartitionInfo) -> bool {
        let me = self.config.broker_id;
        let epoch = state.leader_epoch;
        p.set_replica_count(state.replicas.len() as u32);
        if epoch < p.leader_epoch() {
            return false;
        }
        let _gate = p.role_change_gate();
        let mut role = p.role();
        p.set_leader_epoch(epoch);
        if state.leader == Some(me) {
            if let Role::Leader(ls) = &mut *role
                && ls.leader_epoch() == epoch
            {
                if ls.pending_isr().is_none()
                    && state.isr != ls.isr()
                    && ls.isr().iter().all(|b| state.isr.contains(b))
                    && let Some(hw) = ls.isr_committed(&state.isr)
                {
                    p.advance_high_watermark(hw);
                }
                return false;
            }
            let was_leader = matches!(*role, Role::Leader(_));
            let was_follower = matches!(*role, Role::Follower(_));
            let log_end = p.log.log_end_offset();
            if let Err(e) = p.epoch_cache().assign(epoch, log_end) {
                // Without the history a follower could not truncate correctly against us.
                warn!(partition = %p.name(), epoch, error = %e, "cannot record the leader epoch; not leading");
                *role = Role::None;
                drop(role);
                p.wake_all();
                return was_follower;
            }
            let mut isr = state.isr.clone();
            if !isr.contains(&me) {
                isr.insert(0, me);
            }
            let mut ls = LeaderState::new(
                me,
                epoch,
                &state.replicas,
                &isr,
                log_end,
                p.log.high_watermark().min(log_end),
                log_end,
                self.replication,
                self.now_ms(),
            );
            let hw = ls.on_append(log_end);
            *role = Role::Leader(Box::new(ls));
            if !was_leader {
                p.start_leadership();
            }
            if let Some(hw) = hw {
                p.advance_high_watermark(hw);
            }
            drop(role);
            info!(partition = %p.name(), epoch, log_end_offset = log_end.0, isr = ?isr, "leading");
            p.wake_all();
            return was_follower;
        }
        let next = match state.leader {
            Some(leader) => Role::Follower(FollowerRole {
                leader,
                epoch,
                truncated: false,
                paused_until: None,
            }),
            None => Role::None,
        };
        match (&mut *role, &next) {
            (Role::Follower(f), Role::Follower(n))
                if f.leader == n.leader && f.epoch == n.epoch =>
            {
                // A registry change ends a pause; truncate again to be safe (cheap).
                if f.paused_until.take().is_some() {
                    f.truncated = false;
                    return true;
                }
                false
            }
            (Role::None, Role::None) => false,
            _ => {
                let was_leader = matches!(*role, Role::Leader(_));
                *role = next;
                drop(role);
                if was_leader {
                    info!(partition = %p.name(), epoch, leader = ?state.leader, "no longer leading");
                } else {
                    info!(partition = %p.name(), epoch, leader = ?state.leader, "following");
                }
                p.wake_all();
                true
            }
        }
    }

    /// Removes partition directories the registry does not assign to this broker (a topic
    /// deleted, or re-created elsewhere, while it was down). `__consumer_offsets` is local.
    fn remove_unassigned_dirs(&self, infos: &[TopicInfo]) {
        let me = self.config.broker_id;
        let assigned: HashSet<String> = infos
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .filter(|p| p.replicas.contains(&me))
                    .map(|p| PartitionLog::dir_name(&t.name, p.partition))
            })
            .collect();
        let dir = &self.config.data_dir;
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let Some((topic, number)) = name.rsplit_once('-') else {
                continue;
            };
            let is_partition_dir = entry.file_type().is_ok_and(|t| t.is_dir())
                && !number.is_empty()
                && number.bytes().all(|b| b.is_ascii_digit())
                && validate_topic_name(topic).is_ok()
                && !is_internal_topic(topic);
            if !is_partition_dir || assigned.contains(&name) {
                continue;
            }
            warn!(dir = %entry.path().display(), "removing a partition directory the registry does not assign to this broker");
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                warn!(error = %Error::io("remove partition directory", entry.path(), e), "removal failed");
            }
        }
    }
}

//! Partition roles from the registry: which partitions this broker hosts, leads and follows.
//!
//! The role loop ([`run_role_loop`]) waits on `Registry::subscribe()` (and re-checks every
//! `ROLE_RECHECK_INTERVAL_MS`, so a partition whose log failed to open is retried) and applies
//! the registry's snapshot in one pass ([`Broker::apply_registry`], serialized with
//! CreateTopic / DeleteTopic by the admin lock):
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
//!   fetcher truncates by leader epochs again before fetching ([`crate::fetcher`]). A deposed
//!   leader becomes a follower: its pending acks=all waits answer NOT_LEADER (they watch the
//!   leadership term) and nothing it appends later can be acknowledged.
//! - No leader: [`Role::None`] (produce and fetch answer NOT_LEADER).
//!
//! Snapshot epochs only grow: a partition state with an epoch below the one applied is stale
//! and ignored. Role changes hold the partition's append gate exclusively.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use sluiceway_core::registry::{PartitionInfo, TopicInfo};
use sluiceway_core::replication::LeaderState;
use sluiceway_core::storage::PartitionLog;
use sluiceway_core::topic::{TopicConfig, validate_topic_name};
use sluiceway_core::{Error, Result};
use tracing::{info, warn};

use crate::broker::{Broker, Topic, open_partition, remove_topic_data};
use crate::groups::is_internal_topic;
use crate::partition::{FollowerRole, Partition, Role};

/// The role loop re-applies the registry this often even without a change (retries logs that
/// failed to open; cheap: reads come from the registry's in-memory snapshot).
pub const ROLE_RECHECK_INTERVAL_MS: u64 = 5_000;

impl Broker {
    /// Applies the registry's snapshot: hosting, roles, deletions (module docs). Blocking (file
    /// I/O); the caller holds the admin lock. `first` marks the pass at start.
    pub fn apply_registry(self: &Arc<Self>, first: bool) -> Result<()> {
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
            let mut topics = self.topics.write().unwrap_or_else(|e| e.into_inner());
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
            let mut k = self.known.write().unwrap_or_else(|e| e.into_inner());
            let changed = *k != known;
            let deleted: Vec<String> = k
                .keys()
                .filter(|n| !known.contains_key(*n))
                .cloned()
                .collect();
            *k = known;
            (changed, deleted)
        };
        if counts_changed || !gone.is_empty() {
            self.groups.topics_changed(self.topic_partition_counts());
        }
        if self.registry.is_cluster() {
            self.sync_group_coordination();
            // Every coordinator tombstones the commits of a deleted topic in the offsets
            // partitions it leads (in the background: the appends wait for replicas).
            if !first
                && !deleted.is_empty()
                && let Ok(rt) = tokio::runtime::Handle::try_current()
            {
                let groups = self.groups.clone();
                rt.spawn(async move {
                    for topic in deleted {
                        groups.forget_topic(&topic).await;
                    }
                });
            }
        }
        if followers_changed {
            self.follower_roles.send_modify(|v| *v += 1);
        }
        self.ensure_fetchers();
        self.applied.send_modify(|v| *v += 1);
        Ok(())
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
            None => TopicConfig::parse(self.topic_defaults(), &info.configs)?,
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
        self.topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(info.name.clone(), topic.clone());
        Ok(topic)
    }

    /// Sets one partition's role from its registry state. Returns whether a follower role
    /// changed (the fetchers re-read their partitions then).
    pub(crate) fn apply_role(&self, p: &Partition, state: &PartitionInfo) -> bool {
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

/// Applies the registry on every change (and every `ROLE_RECHECK_INTERVAL_MS`) until shutdown.
pub async fn run_role_loop(broker: Arc<Broker>) {
    let mut changes = broker.registry.subscribe();
    let mut shutdown = broker.shutdown_receiver();
    loop {
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            () = tokio::time::sleep(Duration::from_millis(ROLE_RECHECK_INTERVAL_MS)) => {}
            _ = shutdown.changed() => return,
        }
        changes.borrow_and_update();
        let admin = broker.admin_lock.lock().await;
        let b = broker.clone();
        match tokio::task::spawn_blocking(move || b.apply_registry(false)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                warn!(error = %e, "applying the registry failed; retrying on the next change")
            }
            Err(e) => warn!(error = %e, "the role pass failed"),
        }
        drop(admin);
    }
}

//! One consumer group's coordinator state machine. Sans-IO: time comes in as `now_ms`
//! arguments, answers to joins go out as [`Action`]s the caller drains with
//! [`Coordinator::take_actions`]. See the module docs of `group` for the protocol.
//!
//! **Initial rebalance delay** (Kafka's `group.initial.rebalance.delay.ms`, the classic
//! coordinator's `InitialDelayedJoin`): a rebalance that starts from an empty group does not
//! complete as soon as every member has joined (that would be at once: the only members are
//! the ones joining), but waits in windows of [`GroupConfig::initial_rebalance_delay_ms`] so that
//! consumers started together land in one generation and split the partitions, instead of the
//! first one taking everything and handing it back a moment later. When a window ends and a
//! new member joined during it, another window starts; otherwise the generation forms. The
//! windows together never outlast the rebalance timeout (the largest `rebalance_timeout_ms`, i.e.
//! `max.poll.interval.ms`, of the members when the rebalance started), so a stream of joiners
//! cannot hold the group back for longer than a member is prepared to wait for its answer.
//! Unlike Kafka, the first window is cut to that bound as well. Rebalances of a group that has
//! members (a join, leave or expiry in a stable group) never wait: they complete once every
//! member has rejoined. A delay of 0 turns this off.
//!
//! Not thread-safe by itself: the broker keeps each group behind its own lock.

use std::collections::{BTreeMap, BTreeSet};

use super::assignor::Assignor;
use super::{MemberDescription, TopicPartition};
use crate::error::ErrorCode;
use crate::limits::{
    GROUP_MEMBERS_MAX, GROUP_SESSION_TIMEOUT_MS_MAX, GROUP_SESSION_TIMEOUT_MS_MIN,
};

/// Coordinator-wide settings (the broker's `group.*` configuration).
#[derive(Clone, Debug)]
pub struct GroupConfig {
    /// How long a group that was empty waits for more members before its first generation, and
    /// again after each window in which a new member joined (Kafka's
    /// `group.initial.rebalance.delay.ms`; see the module docs), so a fleet starting together
    /// rebalances once. The default here is 0 (off), which tests of the state machine rely on;
    /// the broker's setting defaults to Kafka's 3 s (`GROUP_INITIAL_REBALANCE_DELAY_MS_DEFAULT`).
    pub initial_rebalance_delay_ms: u64,
    pub session_timeout_ms_min: u64,
    pub session_timeout_ms_max: u64,
}

impl Default for GroupConfig {
    fn default() -> GroupConfig {
        GroupConfig {
            initial_rebalance_delay_ms: 0,
            session_timeout_ms_min: GROUP_SESSION_TIMEOUT_MS_MIN,
            session_timeout_ms_max: GROUP_SESSION_TIMEOUT_MS_MAX,
        }
    }
}

/// A member's request to join (or rejoin) the group.
#[derive(Clone, Debug)]
pub struct JoinRequest {
    /// `None` for a new member; the id the coordinator gave it for a rejoin.
    pub member_id: Option<String>,
    pub client_id: String,
    pub topics: BTreeSet<String>,
    pub session_timeout_ms: u64,
    /// How long the coordinator waits for this member to rejoin during a rebalance.
    pub rebalance_timeout_ms: u64,
    pub assignor: Assignor,
}

/// What the caller must do after feeding an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Answer the pending join of `member_id`: it is in `generation` and owns `assignment`.
    JoinComplete {
        member_id: String,
        generation: u32,
        assignment: Vec<TopicPartition>,
    },
    /// Answer the pending join of `member_id` with an error (it was removed while waiting).
    JoinFailed { member_id: String, code: ErrorCode },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    /// No members.
    Empty,
    /// Waiting for the members to (re)join before the next generation.
    PreparingRebalance,
    /// Every member has its assignment for the current generation.
    Stable,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// A stable group's membership as the coordinator persists it (`__consumer_offsets`, Kafka's
/// group-metadata record), so a coordinator that takes the group over after a failover
/// continues the generation instead of forcing every member to rejoin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupSnapshot {
    pub generation: u32,
    pub assignor: Assignor,
    /// Sorted by member id.
    pub members: Vec<SnapshotMember>,
}

/// One member of a [`GroupSnapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotMember {
    pub member_id: String,
    pub client_id: String,
    pub topics: BTreeSet<String>,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    pub assignment: Vec<TopicPartition>,
}

/// The waiting of a rebalance that started from an empty group (see the module docs).
#[derive(Clone, Copy, Debug)]
struct InitialDelay {
    /// The current window ends at this time (never after the rebalance deadline).
    window_end_ms: u64,
    /// A new member joined during the current window: when it ends, another one starts.
    member_joined: bool,
}

#[derive(Debug)]
struct Member {
    client_id: String,
    topics: BTreeSet<String>,
    session_timeout_ms: u64,
    rebalance_timeout_ms: u64,
    assignor: Assignor,
    last_heartbeat_ms: u64,
    /// Has joined in the current rebalance and awaits its assignment.
    awaiting_join: bool,
    assignment: Vec<TopicPartition>,
}

/// One group's coordinator.
#[derive(Debug)]
pub struct Coordinator {
    group_id: String,
    config: GroupConfig,
    /// Distinguishes member ids minted by this coordinator from those of an earlier broker run.
    incarnation: String,
    next_member: u64,
    generation: u32,
    state: GroupState,
    members: BTreeMap<String, Member>,
    /// The rebalance completes by this time even if some members have not rejoined.
    rebalance_deadline_ms: u64,
    /// `Some` while a rebalance that started from an empty group waits for more members.
    initial_delay: Option<InitialDelay>,
    assignor: Option<Assignor>,
    topic_partitions: BTreeMap<String, u32>,
    actions: Vec<Action>,
}

impl Coordinator {
    pub fn new(
        group_id: impl Into<String>,
        incarnation: impl Into<String>,
        config: GroupConfig,
    ) -> Coordinator {
        Coordinator {
            group_id: group_id.into(),
            config,
            incarnation: incarnation.into(),
            next_member: 0,
            generation: 0,
            state: GroupState::Empty,
            members: BTreeMap::new(),
            rebalance_deadline_ms: 0,
            initial_delay: None,
            assignor: None,
            topic_partitions: BTreeMap::new(),
            actions: Vec::new(),
        }
    }

    /// A coordinator taking over a stable group from its persisted [`GroupSnapshot`]: same
    /// generation, members and assignments. Every member's session starts at `now_ms` (it
    /// has not heard from them yet); those that do not heartbeat within their session timeout
    /// are removed and the group rebalances, as for any expired member.
    pub fn restore(
        group_id: impl Into<String>,
        incarnation: impl Into<String>,
        config: GroupConfig,
        snapshot: GroupSnapshot,
        now_ms: u64,
        topic_partitions: BTreeMap<String, u32>,
    ) -> Coordinator {
        let mut c = Coordinator::new(group_id, incarnation, config);
        c.topic_partitions = topic_partitions;
        if snapshot.members.is_empty() {
            c.generation = snapshot.generation;
            return c;
        }
        c.generation = snapshot.generation;
        c.assignor = Some(snapshot.assignor);
        c.state = GroupState::Stable;
        for m in snapshot.members {
            c.members.insert(
                m.member_id,
                Member {
                    client_id: m.client_id,
                    topics: m.topics,
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    assignor: snapshot.assignor,
                    last_heartbeat_ms: now_ms,
                    awaiting_join: false,
                    assignment: m.assignment,
                },
            );
        }
        c
    }

    /// The state to persist: `Some` for a stable group (members, generation, assignments),
    /// `None` otherwise (a rebalance in progress is not worth restoring; an empty group has
    /// nothing to restore).
    pub fn snapshot(&self) -> Option<GroupSnapshot> {
        if self.state != GroupState::Stable {
            return None;
        }
        Some(GroupSnapshot {
            generation: self.generation,
            assignor: self.assignor.unwrap_or_default(),
            members: self
                .members
                .iter()
                .map(|(id, m)| SnapshotMember {
                    member_id: id.clone(),
                    client_id: m.client_id.clone(),
                    topics: m.topics.clone(),
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    assignment: m.assignment.clone(),
                })
                .collect(),
        })
    }

    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    pub fn generation(&self) -> u32 {
        self.generation
    }

    pub fn assignor(&self) -> Option<Assignor> {
        self.assignor
    }

    pub fn members(&self) -> Vec<MemberDescription> {
        self.members
            .iter()
            .map(|(id, m)| MemberDescription {
                member_id: id.clone(),
                client_id: m.client_id.clone(),
                topics: m.topics.iter().cloned().collect(),
                assignment: m.assignment.clone(),
            })
            .collect()
    }

    /// The actions produced since the last call.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// When the caller should call [`Coordinator::tick`] next, if anything is time-bound.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        match self.state {
            GroupState::Empty => None,
            // The end of the initial delay's current window (every member of a group that was
            // empty has joined: they are all new), else the rebalance's deadline (a rebalance
            // whose members have all rejoined has completed already), or earlier the session
            // expiry of a member that has not rejoined yet: a member that died mid-rebalance is
            // removed after its session timeout (then the rebalance completes without it), not
            // after the much longer rebalance timeout.
            GroupState::PreparingRebalance => {
                let rebalance = self
                    .initial_delay
                    .map_or(self.rebalance_deadline_ms, |d| d.window_end_ms);
                let expiry = self
                    .members
                    .values()
                    .filter(|m| !m.awaiting_join)
                    .map(|m| m.last_heartbeat_ms + m.session_timeout_ms)
                    .min();
                Some(expiry.map_or(rebalance, |e| e.min(rebalance)))
            }
            GroupState::Stable => self
                .members
                .values()
                .map(|m| m.last_heartbeat_ms + m.session_timeout_ms)
                .min(),
        }
    }

    /// The partition counts of the topics members subscribe to. A change to a subscribed topic
    /// starts a rebalance (partitions were added, or a topic appeared).
    pub fn set_topic_partitions(&mut self, now_ms: u64, topic_partitions: BTreeMap<String, u32>) {
        let subscribed: BTreeSet<&String> = self.members.values().flat_map(|m| &m.topics).collect();
        let changed = if self.topic_partitions.is_empty() && self.state == GroupState::Stable {
            // Restored before the counts were known: a change is a topic whose partitions the
            // restored assignment does not cover exactly.
            let mut assigned: BTreeMap<&str, u32> = BTreeMap::new();
            for tp in self.members.values().flat_map(|m| &m.assignment) {
                *assigned.entry(tp.topic.as_str()).or_default() += 1;
            }
            subscribed.iter().any(|t| {
                assigned.get(t.as_str()).copied().unwrap_or(0)
                    != topic_partitions.get(*t).copied().unwrap_or(0)
            })
        } else {
            subscribed
                .iter()
                .any(|t| self.topic_partitions.get(*t) != topic_partitions.get(*t))
        };
        self.topic_partitions = topic_partitions;
        if changed && self.state == GroupState::Stable {
            self.begin_rebalance(now_ms);
        }
    }

    /// A member joins or rejoins. Returns its member id; its assignment comes later as
    /// [`Action::JoinComplete`] (possibly already among the actions when this returns).
    pub fn join(&mut self, now_ms: u64, req: JoinRequest) -> Result<String, ErrorCode> {
        if req.session_timeout_ms < self.config.session_timeout_ms_min
            || req.session_timeout_ms > self.config.session_timeout_ms_max
        {
            return Err(ErrorCode::InvalidSessionTimeout);
        }
        if req.topics.is_empty() {
            return Err(ErrorCode::InvalidRequest);
        }
        // Every member must agree on the assignor (Kafka's protocol selection); a member asking
        // for another one while the group has members is refused rather than silently overruled.
        let others = self
            .members
            .keys()
            .filter(|id| Some(id.as_str()) != req.member_id.as_deref())
            .count();
        if others > 0 && self.assignor.is_some_and(|a| a != req.assignor) {
            return Err(ErrorCode::InconsistentGroupProtocol);
        }
        let member_id = match req.member_id {
            Some(id) if self.members.contains_key(&id) => id,
            Some(_) => return Err(ErrorCode::UnknownMemberId),
            None => {
                if self.members.len() >= GROUP_MEMBERS_MAX {
                    return Err(ErrorCode::GroupMaxSizeReached);
                }
                // A newcomer while the group waits for its first members buys everyone another
                // window. (The member that starts the rebalance joins an empty group: the
                // delay has not begun yet, so it does not count.)
                if let Some(d) = &mut self.initial_delay {
                    d.member_joined = true;
                }
                self.next_member += 1;
                format!(
                    "{}-{}-{}",
                    req.client_id, self.incarnation, self.next_member
                )
            }
        };
        self.assignor = Some(req.assignor);
        let unchanged = self
            .members
            .get(&member_id)
            .is_some_and(|m| m.topics == req.topics);
        let member = self
            .members
            .entry(member_id.clone())
            .or_insert_with(|| Member {
                client_id: req.client_id.clone(),
                topics: BTreeSet::new(),
                session_timeout_ms: req.session_timeout_ms,
                rebalance_timeout_ms: req.rebalance_timeout_ms,
                assignor: req.assignor,
                last_heartbeat_ms: now_ms,
                awaiting_join: false,
                assignment: Vec::new(),
            });
        member.client_id = req.client_id;
        member.topics = req.topics;
        member.session_timeout_ms = req.session_timeout_ms;
        member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        member.assignor = req.assignor;
        member.last_heartbeat_ms = now_ms;
        member.awaiting_join = true;

        match self.state {
            // A stable member that rejoins with the same subscription (say, after a lost
            // response) gets its current assignment back without disturbing the others.
            GroupState::Stable if unchanged => {
                let member = self.members.get_mut(&member_id).expect("inserted above");
                member.awaiting_join = false;
                self.actions.push(Action::JoinComplete {
                    member_id: member_id.clone(),
                    generation: self.generation,
                    assignment: member.assignment.clone(),
                });
            }
            GroupState::Stable | GroupState::Empty => self.begin_rebalance(now_ms),
            GroupState::PreparingRebalance => {}
        }
        self.try_complete_rebalance(now_ms);
        Ok(member_id)
    }

    /// A member's heartbeat. `Err(RebalanceInProgress)` tells it to stop fetching, commit and
    /// rejoin; `Err(UnknownMemberId)` that it was removed and must join as a new member.
    pub fn heartbeat(
        &mut self,
        now_ms: u64,
        member_id: &str,
        generation: u32,
    ) -> Result<(), ErrorCode> {
        let member = self
            .members
            .get_mut(member_id)
            .ok_or(ErrorCode::UnknownMemberId)?;
        member.last_heartbeat_ms = now_ms;
        if self.state == GroupState::PreparingRebalance {
            return Err(ErrorCode::RebalanceInProgress);
        }
        if generation != self.generation {
            return Err(ErrorCode::IllegalGeneration);
        }
        Ok(())
    }

    /// A member leaves on purpose (a clean close): the group rebalances at once instead of
    /// waiting for its session to time out.
    pub fn leave(&mut self, now_ms: u64, member_id: &str) -> Result<(), ErrorCode> {
        let member = self
            .members
            .remove(member_id)
            .ok_or(ErrorCode::UnknownMemberId)?;
        if member.awaiting_join {
            self.actions.push(Action::JoinFailed {
                member_id: member_id.to_owned(),
                code: ErrorCode::UnknownMemberId,
            });
        }
        self.after_removal(now_ms);
        Ok(())
    }

    /// Whether an offset commit from `member_id` in `generation` may be written.
    /// `None` for both is a standalone consumer using the group only for storage, allowed
    /// while the group has no members (Kafka's rule).
    pub fn validate_commit(
        &self,
        member_id: Option<&str>,
        generation: Option<u32>,
    ) -> Result<(), ErrorCode> {
        match (member_id, generation) {
            (None, None) if self.members.is_empty() => Ok(()),
            (None, None) => Err(ErrorCode::UnknownMemberId),
            (Some(id), Some(g)) => {
                self.members.get(id).ok_or(ErrorCode::UnknownMemberId)?;
                // A member may commit during a rebalance (that is when it commits, before it
                // rejoins), but only for the generation it owned partitions in.
                if g != self.generation {
                    return Err(ErrorCode::IllegalGeneration);
                }
                Ok(())
            }
            _ => Err(ErrorCode::InvalidRequest),
        }
    }

    /// Advances time: removes members whose session expired, completes a rebalance whose
    /// deadline passed.
    pub fn tick(&mut self, now_ms: u64) {
        let expired: Vec<String> = self
            .members
            .iter()
            // A member waiting for its join answer is not heartbeating; the rebalance deadline
            // bounds its wait instead.
            .filter(|(_, m)| {
                !m.awaiting_join && now_ms >= m.last_heartbeat_ms + m.session_timeout_ms
            })
            .map(|(id, _)| id.clone())
            .collect();
        if !expired.is_empty() {
            for id in &expired {
                tracing::info!(group = %self.group_id, member = %id, "member session expired");
                self.members.remove(id);
            }
            self.after_removal(now_ms);
        }
        self.try_complete_rebalance(now_ms);
    }

    fn after_removal(&mut self, now_ms: u64) {
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.assignor = None;
            self.initial_delay = None;
            // A new generation number fences commits from members that are gone.
            self.generation += 1;
        } else if self.state == GroupState::Stable {
            self.begin_rebalance(now_ms);
        } else {
            self.try_complete_rebalance(now_ms);
        }
    }

    fn begin_rebalance(&mut self, now_ms: u64) {
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0);
        self.rebalance_deadline_ms = now_ms + timeout;
        let delay = self.config.initial_rebalance_delay_ms;
        self.initial_delay = (self.state == GroupState::Empty && delay > 0).then(|| InitialDelay {
            window_end_ms: (now_ms + delay).min(self.rebalance_deadline_ms),
            member_joined: false,
        });
        self.state = GroupState::PreparingRebalance;
        tracing::info!(group = %self.group_id, generation = self.generation, "rebalance started");
    }

    /// Whether the initial delay (if any) is over at `now_ms`: moves through the windows that
    /// ended by then, starting another one after each window in which a new member joined,
    /// until the rebalance deadline.
    fn initial_delay_over(&mut self, now_ms: u64) -> bool {
        let delay = self.config.initial_rebalance_delay_ms;
        let deadline = self.rebalance_deadline_ms;
        let Some(d) = &mut self.initial_delay else {
            return true;
        };
        // A late tick may find a window that ended and the next one too: a join counts for the
        // window it came in, so the first turn may start another window and the second ends it.
        while now_ms >= d.window_end_ms {
            if d.member_joined && d.window_end_ms < deadline {
                d.member_joined = false;
                d.window_end_ms = (d.window_end_ms + delay).min(deadline);
            } else {
                self.initial_delay = None;
                return true;
            }
        }
        false
    }

    fn try_complete_rebalance(&mut self, now_ms: u64) {
        if self.state != GroupState::PreparingRebalance || !self.initial_delay_over(now_ms) {
            return;
        }
        let all_joined = self.members.values().all(|m| m.awaiting_join);
        if !all_joined && now_ms < self.rebalance_deadline_ms {
            return;
        }
        // Members that did not rejoin in time are out: they may still be fetching, but their
        // commits now carry a stale generation and are refused.
        self.members.retain(|_, m| m.awaiting_join);
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.assignor = None;
            return;
        }
        self.generation += 1;
        let subscriptions: BTreeMap<String, BTreeSet<String>> = self
            .members
            .iter()
            .map(|(id, m)| (id.clone(), m.topics.clone()))
            .collect();
        let mut assignment = self
            .assignor
            .unwrap_or_default()
            .assign(&subscriptions, &self.topic_partitions);
        for (id, member) in self.members.iter_mut() {
            member.assignment = assignment.remove(id).unwrap_or_default();
            member.awaiting_join = false;
            member.last_heartbeat_ms = now_ms;
            self.actions.push(Action::JoinComplete {
                member_id: id.clone(),
                generation: self.generation,
                assignment: member.assignment.clone(),
            });
        }
        self.state = GroupState::Stable;
        tracing::info!(group = %self.group_id, generation = self.generation, members = self.members.len(), "rebalance complete");
    }
}

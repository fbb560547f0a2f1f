//! The consumer-group coordinator over the wire: owns one sans-IO [`Coordinator`] per group and
//! the [`GroupOffsetStore`] (`__consumer_offsets`), performs the coordinator's actions and drives
//! its time.
//!
//! - **Groups**: a map group id → entry, each entry behind its own lock (the coordinator and the
//!   pending joins' answer channels). An entry is created by the first JoinGroup and forgotten
//!   by the timer once the group is empty again (its committed offsets stay in the store).
//!   Lock order: the map, then one entry; never two entries at once, never the map while holding
//!   an entry. A forgotten entry is marked `removed` under its own lock, so a request that looked
//!   it up just before retries with the new one instead of acting on a dead coordinator.
//! - **Member ids** carry an incarnation: the broker's start time in ms and the entry's sequence
//!   number on this broker (`client-<start ms>.<seq>-<n>`), so an id from an earlier run or from
//!   a forgotten incarnation of the same group is never mistaken for a live member.
//! - **Joins** are long-running: the handler registers a oneshot channel keyed by member id and
//!   waits; [`Action::JoinComplete`] / [`Action::JoinFailed`] are delivered to it under the entry's
//!   lock right after the event that produced them. A join whose caller goes away (cancelled,
//!   disconnected, or past the backstop `GROUP_REBALANCE_TIMEOUT_MS_MAX + GROUP_JOIN_SLACK_MS`)
//!   leaves the group, so the rebalance does not wait for a member that will never hear its
//!   answer. Shutdown answers pending joins with SHUTTING_DOWN.
//! - **Time**: the coordinator's clock is this broker's monotonic clock in ms since start. The
//!   timer task ([`Groups::run_timer`]) sleeps until the earliest `next_deadline_ms()` of any
//!   group, is woken early by joins, leaves and topic changes, and calls `tick(now)`.
//! - **Topics**: the coordinators learn partition counts from the broker's hosted topics, on
//!   every join and whenever a topic is created or deleted ([`Groups::topics_changed`]).
//! - **Commits** are validated against the coordinator (`validate_commit`) and then appended on
//!   a blocking thread. The coordinator's lock is not held across the append (an fsync must not
//!   stall heartbeats), so a rebalance that completes in between does not refuse a commit that
//!   was valid when it arrived — the same window Kafka has.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sluiceway_core::group::{
    Action, Assignor, Coordinator, GroupConfig, GroupOffsetStore, GroupState, JoinRequest,
    OffsetCommit, OffsetsLog, TopicPartition,
};
use sluiceway_core::limits::{
    CLIENT_ID_BYTES_MAX, GROUP_COMMIT_OFFSETS_MAX, GROUP_ID_BYTES_MAX, GROUP_JOIN_SLACK_MS,
    GROUP_METADATA_BYTES_MAX, GROUP_REBALANCE_TIMEOUT_MS_MAX, GROUPS_MAX,
    OFFSETS_TOPIC_COMPACT_BYTES, OFFSETS_TOPIC_PARTITIONS_DEFAULT, REQUEST_PARTITIONS_MAX,
    TOPICS_MAX,
};
use sluiceway_core::storage::{Clock, LogConfig};
use sluiceway_core::topic::validate_topic_name;
use sluiceway_core::{ErrorCode, Offset, Result, TimestampMs};
use sluiceway_proto::v1;
use tokio::sync::{Notify, oneshot, watch};
use tonic::Status;
use tracing::{debug, info, warn};

use parking_lot::Mutex;

use crate::errors::{blocking, status, status_from_error, to_proto};

pub mod coordination;

/// The answer a pending join gets.
type JoinAnswer = std::result::Result<Joined, (ErrorCode, String)>;

#[derive(Debug)]
struct Joined {
    generation: u32,
    assignment: Vec<TopicPartition>,
}

#[derive(Debug)]
struct Waiter {
    /// Distinguishes this join call from a later one of the same member.
    token: u64,
    tx: oneshot::Sender<JoinAnswer>,
}

#[derive(Debug)]
struct Entry {
    coordinator: Coordinator,
    /// Pending joins by member id.
    waiters: HashMap<String, Waiter>,
    /// The last generation counted as a completed rebalance (metrics).
    counted_generation: u32,
    /// The generation whose membership was last sent to the store (`None`: none, or the
    /// group's record was deleted since).
    persisted: Option<u32>,
    /// Forgotten by the timer: look the group up again.
    removed: bool,
}

/// See the module docs.
#[derive(Debug)]
pub struct Groups {
    started: Instant,
    /// The broker's start time in ms since the Unix epoch: the first half of every incarnation.
    started_ms: i64,
    next_entry: AtomicU64,
    next_token: AtomicU64,
    config: GroupConfig,
    groups: Mutex<HashMap<String, Arc<Mutex<Entry>>>>,
    /// Partition counts of the hosted topics, as the coordinators see them.
    topic_partitions: Mutex<BTreeMap<String, u32>>,
    pub offsets: Arc<GroupOffsetStore>,
    wake: Notify,
    /// Rebalances completed since start (metrics).
    pub rebalances: AtomicU64,
}

/// Group ids: non-empty and bounded.
pub(crate) fn check_group_id(group: &str) -> std::result::Result<(), Status> {
    if group.is_empty() {
        return Err(status(
            ErrorCode::InvalidRequest,
            "a group id must not be empty",
        ));
    }
    if group.len() > GROUP_ID_BYTES_MAX {
        return Err(status(
            ErrorCode::InvalidRequest,
            format!(
                "a group id of {} bytes is longer than the limit of {GROUP_ID_BYTES_MAX}",
                group.len()
            ),
        ));
    }
    Ok(())
}

/// Partitions grouped by topic, topics sorted, partitions ascending.
pub fn by_topic(tps: &[TopicPartition]) -> Vec<v1::TopicPartitions> {
    let mut map: BTreeMap<&str, BTreeSet<u32>> = BTreeMap::new();
    for tp in tps {
        map.entry(tp.topic.as_str())
            .or_default()
            .insert(tp.partition);
    }
    map.into_iter()
        .map(|(topic, ps)| v1::TopicPartitions {
            topic: topic.to_owned(),
            partitions: ps.into_iter().collect(),
        })
        .collect()
}

fn committed(tp: &TopicPartition, c: Option<&OffsetCommit>) -> v1::CommittedOffset {
    v1::CommittedOffset {
        topic: tp.topic.clone(),
        partition: tp.partition,
        offset: c.map_or(-1, |c| c.offset.0 as i64),
        metadata: c.map(|c| c.metadata.clone()).unwrap_or_default(),
        commit_timestamp_ms: c.map_or(-1, |c| c.commit_timestamp.0),
        error_code: 0,
        error_message: String::new(),
    }
}

/// Leaves the group if the join call it guards ends without its answer (the caller went away).
struct JoinGuard<'a> {
    groups: &'a Groups,
    group: String,
    member_id: String,
    token: u64,
    armed: bool,
}

impl Drop for JoinGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (member, token) = (self.member_id.clone(), self.token);
        let left = self.groups.with_entry(&self.group, false, |e| {
            if e.waiters.get(&member).is_some_and(|w| w.token == token) {
                e.waiters.remove(&member);
                let now = self.groups.now_ms();
                e.coordinator.leave(now, &member).is_ok()
            } else {
                false
            }
        });
        if matches!(left, Ok(Some(true))) {
            info!(group = %self.group, member = %self.member_id, "a pending join was abandoned; the member left");
            self.groups.wake.notify_one();
        }
    }
}

impl Groups {
    /// One broker: opens `__consumer_offsets` under `data_dir` (replaying it) with the broker's
    /// default log configuration (its flush policy), and coordinates every group. In a cluster
    /// (`cluster`), the offsets topic is a replicated topic in the registry: nothing is opened
    /// here, and the role pass loads each partition this broker leads ([`Groups::load`]).
    /// `initial_rebalance_delay_ms` is the broker's `group_initial_rebalance_delay_ms`.
    pub fn open(
        data_dir: &std::path::Path,
        log_config: LogConfig,
        clock: Arc<dyn Clock>,
        cluster: bool,
        initial_rebalance_delay_ms: u64,
    ) -> Result<Groups> {
        let started_ms = clock.now_ms().0;
        let offsets = if cluster {
            GroupOffsetStore::unloaded(OFFSETS_TOPIC_COMPACT_BYTES)
        } else {
            let offsets = GroupOffsetStore::open(
                data_dir,
                OFFSETS_TOPIC_PARTITIONS_DEFAULT,
                log_config,
                clock,
            )?;
            info!(
                partitions = offsets.partition_count(),
                groups = offsets.groups().len(),
                "opened the group offsets"
            );
            offsets
        };
        let groups = Groups {
            started: Instant::now(),
            started_ms,
            next_entry: AtomicU64::new(0),
            next_token: AtomicU64::new(0),
            config: GroupConfig {
                initial_rebalance_delay_ms,
                ..GroupConfig::default()
            },
            groups: Mutex::new(HashMap::new()),
            topic_partitions: Mutex::new(BTreeMap::new()),
            offsets: Arc::new(offsets),
            wake: Notify::new(),
            rebalances: AtomicU64::new(0),
        };
        // One broker owns every offsets partition: its groups continue after a restart.
        for p in 0..groups.offsets.partition_count() {
            groups.restore_groups(p);
        }
        Ok(groups)
    }

    /// Whether this broker coordinates `group` (in a cluster: leads its offsets partition and
    /// has loaded it); NOT_COORDINATOR / COORDINATOR_NOT_AVAILABLE otherwise.
    fn check_coordinator(&self, group: &str) -> std::result::Result<(), Status> {
        check_group_id(group)?;
        self.offsets
            .check_coordinator(group)
            .map_err(|e| status_from_error(&e))
    }

    /// This broker now leads `__consumer_offsets`-`p` (term `term`): replays it and
    /// coordinates its groups. Blocking (reads the log).
    pub fn load(&self, p: u32, log: Arc<dyn OffsetsLog>, term: u64) -> Result<()> {
        let started = Instant::now();
        self.offsets.load(p, log, term)?;
        self.restore_groups(p);
        info!(
            partition = p,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "coordinating the groups of this offsets partition"
        );
        Ok(())
    }

    /// This broker no longer leads `__consumer_offsets`-`p`: forgets its groups (their pending
    /// joins answer NOT_COORDINATOR, so the members find the new coordinator and rejoin there).
    pub fn unload(&self, p: u32) {
        if !self.offsets.unload(p) {
            return;
        }
        let mut map = self.groups.lock();
        let moved: Vec<String> = map
            .keys()
            .filter(|g| self.offsets.partition_of(g) == Some(p))
            .cloned()
            .collect();
        for group in moved {
            let Some(e) = map.remove(&group) else {
                continue;
            };
            let mut g = e.lock();
            g.removed = true;
            for (_, w) in g.waiters.drain() {
                let _ = w.tx.send(Err((
                    ErrorCode::NotCoordinator,
                    format!(
                        "this broker stopped coordinating group {group}; find the coordinator again"
                    ),
                )));
            }
        }
        drop(map);
        info!(
            partition = p,
            "no longer coordinating the groups of this offsets partition"
        );
        self.wake.notify_one();
    }

    /// The coordinators' clock: ms since this broker started (monotonic).
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The entry of `group`, created if asked.
    fn entry(
        &self,
        group: &str,
        create: bool,
    ) -> std::result::Result<Option<Arc<Mutex<Entry>>>, Status> {
        let mut map = self.groups.lock();
        if let Some(e) = map.get(group) {
            return Ok(Some(e.clone()));
        }
        if !create {
            return Ok(None);
        }
        if map.len() >= GROUPS_MAX {
            return Err(status(
                ErrorCode::GroupMaxSizeReached,
                format!("the broker already coordinates {GROUPS_MAX} groups"),
            ));
        }
        let seq = self.next_entry.fetch_add(1, Ordering::Relaxed);
        let incarnation = format!("{}.{seq}", self.started_ms);
        let entry = Arc::new(Mutex::new(Entry {
            coordinator: Coordinator::new(group, incarnation, self.config.clone()),
            waiters: HashMap::new(),
            counted_generation: 0,
            persisted: None,
            removed: false,
        }));
        map.insert(group.to_owned(), entry.clone());
        Ok(Some(entry))
    }

    /// Runs `f` on the live entry of `group` (created if asked), then performs the actions it
    /// produced. `None` when the group has no entry and `create` is false.
    fn with_entry<T>(
        &self,
        group: &str,
        create: bool,
        f: impl FnOnce(&mut Entry) -> T,
    ) -> std::result::Result<Option<T>, Status> {
        let mut f = Some(f);
        loop {
            let Some(e) = self.entry(group, create)? else {
                return Ok(None);
            };
            let mut g = e.lock();
            if g.removed {
                continue;
            }
            let f = f.take().expect("called once: the loop returns right after");
            let r = f(&mut g);
            self.perform(&mut g);
            return Ok(Some(r));
        }
    }

    /// Delivers the coordinator's actions to the pending joins; counts completed rebalances;
    /// persists each new stable generation's membership (and forgets it once the group is
    /// empty) so a coordinator that takes the group over continues it. As Kafka does before
    /// answering SyncGroup, the answers of a new generation are sent only after its record was
    /// written (or failed to be), so no member runs in a generation a successor cannot restore.
    fn perform(&self, e: &mut Entry) {
        let mut answers: Vec<(oneshot::Sender<JoinAnswer>, JoinAnswer)> = Vec::new();
        for action in e.coordinator.take_actions() {
            match action {
                Action::JoinComplete {
                    member_id,
                    generation,
                    assignment,
                } => {
                    if let Some(w) = e.waiters.remove(&member_id) {
                        answers.push((
                            w.tx,
                            Ok(Joined {
                                generation,
                                assignment,
                            }),
                        ));
                    }
                }
                Action::JoinFailed { member_id, code } => {
                    if let Some(w) = e.waiters.remove(&member_id) {
                        let _ = w.tx.send(Err((
                            code,
                            format!(
                                "member {member_id} was removed from group {} while it waited to join",
                                e.coordinator.group_id()
                            ),
                        )));
                    }
                }
            }
        }
        if e.coordinator.state() == GroupState::Stable
            && e.coordinator.generation() != e.counted_generation
        {
            e.counted_generation = e.coordinator.generation();
            self.rebalances.fetch_add(1, Ordering::Relaxed);
        }
        let record = match e.coordinator.state() {
            GroupState::Stable if e.persisted != Some(e.coordinator.generation()) => {
                e.persisted = Some(e.coordinator.generation());
                Some(e.coordinator.snapshot())
            }
            GroupState::Empty if e.persisted.is_some() => {
                e.persisted = None;
                Some(None)
            }
            _ => None,
        };
        match record {
            Some(snapshot) => self.persist(e.coordinator.group_id(), snapshot, answers),
            None => {
                for (tx, answer) in answers {
                    let _ = tx.send(answer);
                }
            }
        }
    }

    /// Writes a group's membership record on a blocking thread (it waits for replicas, and the
    /// caller holds the entry's lock), then sends `answers`. Best effort: a failed write only
    /// means a new coordinator rebalances the group instead of continuing its generation.
    fn persist(
        &self,
        group: &str,
        snapshot: Option<sluiceway_core::group::GroupSnapshot>,
        answers: Vec<(oneshot::Sender<JoinAnswer>, JoinAnswer)>,
    ) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            for (tx, answer) in answers {
                let _ = tx.send(answer);
            }
            return;
        };
        let (offsets, group) = (self.offsets.clone(), group.to_owned());
        runtime.spawn_blocking(move || {
            if let Err(e) = offsets.store_group(&group, snapshot.as_ref()) {
                debug!(group = %group, error = %e, "persisting the group's membership failed");
            }
            for (tx, answer) in answers {
                let _ = tx.send(answer);
            }
        });
    }

    /// Recreates the coordinators of partition `p`'s groups from their persisted membership
    /// (after [`GroupOffsetStore::load`]): same generation, members and assignments, sessions
    /// starting now.
    fn restore_groups(&self, p: u32) {
        let topic_partitions = self.topic_partitions.lock().clone();
        let now = self.now_ms();
        let mut map = self.groups.lock();
        let mut restored = 0;
        for (group, snapshot) in self.offsets.group_snapshots(p) {
            if map.contains_key(&group) || snapshot.members.is_empty() {
                continue;
            }
            let seq = self.next_entry.fetch_add(1, Ordering::Relaxed);
            let generation = snapshot.generation;
            let coordinator = Coordinator::restore(
                group.clone(),
                format!("{}.{seq}", self.started_ms),
                self.config.clone(),
                snapshot,
                now,
                topic_partitions.clone(),
            );
            map.insert(
                group,
                Arc::new(Mutex::new(Entry {
                    coordinator,
                    waiters: HashMap::new(),
                    counted_generation: generation,
                    persisted: Some(generation),
                    removed: false,
                })),
            );
            restored += 1;
        }
        drop(map);
        if restored > 0 {
            info!(
                partition = p,
                groups = restored,
                "restored the groups' membership"
            );
            self.wake.notify_one();
        }
    }

    fn entries(&self) -> Vec<Arc<Mutex<Entry>>> {
        self.groups.lock().values().cloned().collect()
    }

    /// The hosted topics changed (created, deleted, resized): every coordinator learns the new
    /// partition counts; a group subscribed to a changed topic rebalances.
    pub fn topics_changed(&self, topic_partitions: BTreeMap<String, u32>) {
        *self.topic_partitions.lock() = topic_partitions.clone();
        let now = self.now_ms();
        for e in self.entries() {
            let mut g = e.lock();
            if g.removed {
                continue;
            }
            g.coordinator
                .set_topic_partitions(now, topic_partitions.clone());
            self.perform(&mut g);
        }
        self.wake.notify_one();
    }

    /// (group count, member count) for metrics.
    pub fn counts(&self) -> (usize, usize) {
        let entries = self.entries();
        let members = entries
            .iter()
            .map(|e| e.lock().coordinator.members().len())
            .sum();
        (entries.len(), members)
    }

    /// Drives every coordinator's time until shutdown: sleeps until the earliest deadline (or a
    /// wake-up), ticks the groups that are due, and forgets groups that became empty.
    pub async fn run_timer(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let now = self.now_ms();
            let mut next: Option<u64> = None;
            for e in self.entries() {
                let mut g = e.lock();
                if g.removed {
                    continue;
                }
                if g.coordinator.next_deadline_ms().is_some_and(|d| d <= now) {
                    g.coordinator.tick(now);
                    self.perform(&mut g);
                }
                if let Some(d) = g.coordinator.next_deadline_ms() {
                    // At least 1 ms ahead, so a deadline that tick did not clear cannot spin.
                    let d = d.max(now + 1);
                    next = Some(next.map_or(d, |n| n.min(d)));
                }
            }
            self.forget_empty();
            let sleep = async {
                match next {
                    Some(d) => {
                        tokio::time::sleep_until((self.started + Duration::from_millis(d)).into())
                            .await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = sleep => {}
                () = self.wake.notified() => {}
                r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
            }
        }
    }

    /// Forgets the entries of groups without members and without pending joins.
    fn forget_empty(&self) {
        let mut map = self.groups.lock();
        map.retain(|_, e| match e.try_lock() {
            Some(mut g) => {
                let empty = g.coordinator.state() == GroupState::Empty && g.waiters.is_empty();
                if empty {
                    g.removed = true;
                }
                !empty
            }
            // Busy: it is in use, so not forgettable now.
            None => true,
        });
    }

    // ---- Requests ----

    /// JoinGroup: answered when the rebalance completes (see the module docs).
    pub async fn join(
        &self,
        req: v1::JoinGroupRequest,
        mut shutdown: watch::Receiver<bool>,
    ) -> std::result::Result<v1::JoinGroupResponse, Status> {
        self.check_coordinator(&req.group_id)?;
        let bad = |m: String| status(ErrorCode::InvalidRequest, m);
        if req.client_id.len() > CLIENT_ID_BYTES_MAX {
            return Err(bad(format!(
                "a client id of {} bytes is longer than the limit of {CLIENT_ID_BYTES_MAX}",
                req.client_id.len()
            )));
        }
        if req.topics.is_empty() {
            return Err(bad("a member must subscribe to at least one topic".into()));
        }
        if req.topics.len() > TOPICS_MAX {
            return Err(bad(format!(
                "{} topics exceeds the limit of {TOPICS_MAX}",
                req.topics.len()
            )));
        }
        for t in &req.topics {
            validate_topic_name(t).map_err(|e| status_from_error(&e))?;
        }
        let assignor = if req.assignor.is_empty() {
            Assignor::default()
        } else {
            Assignor::from_name(&req.assignor).ok_or_else(|| {
                bad(format!(
                    "assignor {:?} is not \"range\" or \"roundrobin\"",
                    req.assignor
                ))
            })?
        };
        if u64::from(req.rebalance_timeout_ms) > GROUP_REBALANCE_TIMEOUT_MS_MAX {
            return Err(bad(format!(
                "rebalance_timeout_ms {} exceeds the limit of {GROUP_REBALANCE_TIMEOUT_MS_MAX}",
                req.rebalance_timeout_ms
            )));
        }
        if *shutdown.borrow() {
            return Err(status(
                ErrorCode::ShuttingDown,
                "the broker is shutting down",
            ));
        }
        let session_timeout_ms = u64::from(req.session_timeout_ms);
        let rebalance_timeout_ms = match req.rebalance_timeout_ms {
            0 => session_timeout_ms,
            ms => u64::from(ms),
        };
        let join = JoinRequest {
            member_id: (!req.member_id.is_empty()).then(|| req.member_id.clone()),
            client_id: if req.client_id.is_empty() {
                "sluiceway".to_owned()
            } else {
                req.client_id.clone()
            },
            topics: req.topics.iter().cloned().collect(),
            session_timeout_ms,
            rebalance_timeout_ms,
            assignor,
        };
        let topic_partitions = self.topic_partitions.lock().clone();
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let now = self.now_ms();
        let group = req.group_id.clone();
        let joined = self
            .with_entry(&group, true, |e| {
                e.coordinator.set_topic_partitions(now, topic_partitions);
                let member_id = e.coordinator.join(now, join)?;
                if let Some(old) = e.waiters.insert(member_id.clone(), Waiter { token, tx }) {
                    let _ = old.tx.send(Err((
                        ErrorCode::RebalanceInProgress,
                        format!("a newer join of member {member_id} superseded this one"),
                    )));
                }
                Ok::<_, ErrorCode>(member_id)
            })?
            .expect("created on demand");
        let member_id = joined.map_err(|code| {
            let message = match code {
                ErrorCode::InvalidSessionTimeout => format!(
                    "session_timeout_ms {session_timeout_ms} is outside [{}, {}]",
                    self.config.session_timeout_ms_min, self.config.session_timeout_ms_max
                ),
                ErrorCode::UnknownMemberId => format!(
                    "member {} is not in group {group}; join with an empty member id",
                    req.member_id
                ),
                ErrorCode::InconsistentGroupProtocol => format!(
                    "group {group} uses another assignor than {:?}",
                    assignor.name()
                ),
                ErrorCode::GroupMaxSizeReached => format!("group {group} is full"),
                other => format!("join refused: {other}"),
            };
            status(code, message)
        })?;
        self.wake.notify_one();
        let mut guard = JoinGuard {
            groups: self,
            group: group.clone(),
            member_id: member_id.clone(),
            token,
            armed: true,
        };
        // The coordinator answers every join by the deadline of the rebalance it joined, at most
        // GROUP_REBALANCE_TIMEOUT_MS_MAX away; the initial delay ends by that deadline too.
        let backstop = Duration::from_millis(GROUP_REBALANCE_TIMEOUT_MS_MAX + GROUP_JOIN_SLACK_MS);
        let answer = tokio::select! {
            r = rx => match r {
                Ok(answer) => {
                    guard.armed = false;
                    answer
                }
                Err(_) => Err((ErrorCode::UnknownServerError, "the join was dropped".to_owned())),
            },
            () = tokio::time::sleep(backstop) => {
                Err((ErrorCode::RequestTimedOut, format!("group {group} did not complete its rebalance in time")))
            }
            _ = shutdown.wait_for(|s| *s) => {
                Err((ErrorCode::ShuttingDown, "the broker is shutting down".to_owned()))
            }
        };
        // An armed guard (timeout, shutdown) takes the member out as it drops.
        drop(guard);
        match answer {
            Ok(j) => Ok(v1::JoinGroupResponse {
                member_id,
                generation: j.generation as i32,
                assignor: assignor.name().to_owned(),
                assignment: by_topic(&j.assignment),
            }),
            Err((code, message)) => Err(status(code, message)),
        }
    }

    /// Heartbeat.
    pub fn heartbeat(&self, req: &v1::HeartbeatRequest) -> std::result::Result<(), Status> {
        self.check_coordinator(&req.group_id)?;
        let unknown = || {
            status(
                ErrorCode::UnknownMemberId,
                format!("member {} is not in group {}", req.member_id, req.group_id),
            )
        };
        let now = self.now_ms();
        let r = self
            .with_entry(&req.group_id, false, |e| {
                // A negative generation never matches: ILLEGAL_GENERATION (after the checks for
                // an unknown member and a rebalance, which come first).
                let generation = u32::try_from(req.generation).unwrap_or(u32::MAX);
                e.coordinator.heartbeat(now, &req.member_id, generation)
            })?
            .ok_or_else(unknown)?;
        r.map_err(|code| match code {
            ErrorCode::UnknownMemberId => unknown(),
            ErrorCode::RebalanceInProgress => status(
                code,
                format!("group {} is rebalancing: rejoin", req.group_id),
            ),
            ErrorCode::IllegalGeneration => status(
                code,
                format!(
                    "generation {} of group {} is not current",
                    req.generation, req.group_id
                ),
            ),
            other => status(other, format!("heartbeat refused: {other}")),
        })
    }

    /// LeaveGroup.
    pub fn leave(&self, req: &v1::LeaveGroupRequest) -> std::result::Result<(), Status> {
        self.check_coordinator(&req.group_id)?;
        let now = self.now_ms();
        let r = self
            .with_entry(&req.group_id, false, |e| {
                e.coordinator.leave(now, &req.member_id)
            })?
            .unwrap_or(Err(ErrorCode::UnknownMemberId));
        self.wake.notify_one();
        r.map_err(|code| {
            status(
                code,
                format!("member {} is not in group {}", req.member_id, req.group_id),
            )
        })
    }

    /// CommitOffsets. `exists` says whether a (topic, partition) is hosted.
    pub async fn commit(
        &self,
        req: v1::CommitOffsetsRequest,
        exists: impl Fn(&str, u32) -> bool,
        now: TimestampMs,
    ) -> std::result::Result<v1::CommitOffsetsResponse, Status> {
        self.check_coordinator(&req.group_id)?;
        let bad = |m: String| status(ErrorCode::InvalidRequest, m);
        if req.partitions.len() > GROUP_COMMIT_OFFSETS_MAX {
            return Err(bad(format!(
                "{} offsets in one commit exceeds the limit of {GROUP_COMMIT_OFFSETS_MAX}",
                req.partitions.len()
            )));
        }
        let mut seen = BTreeSet::new();
        for p in &req.partitions {
            if !seen.insert((p.topic.as_str(), p.partition)) {
                return Err(bad(format!(
                    "partition {}-{} appears more than once in the request",
                    p.topic, p.partition
                )));
            }
        }
        let member = (!req.member_id.is_empty()).then_some(req.member_id.as_str());
        let generation = match req.generation {
            None | Some(-1) => None,
            Some(g) if g < 0 => return Err(bad(format!("generation {g} is not valid"))),
            Some(g) => Some(g as u32),
        };
        let validated = self
            .with_entry(&req.group_id, false, |e| {
                e.coordinator.validate_commit(member, generation)
            })?
            .unwrap_or(match (member, generation) {
                // No coordinator: the group has no members, so only a standalone commit is valid.
                (None, None) => Ok(()),
                (Some(_), _) => Err(ErrorCode::UnknownMemberId),
                (None, Some(_)) => Err(ErrorCode::InvalidRequest),
            });
        validated.map_err(|code| {
            let message = match code {
                ErrorCode::UnknownMemberId if member.is_none() => format!(
                    "group {} has members: a commit without a member id is refused",
                    req.group_id
                ),
                ErrorCode::UnknownMemberId => {
                    format!("member {} is not in group {}", req.member_id, req.group_id)
                }
                ErrorCode::IllegalGeneration => format!(
                    "generation {} of group {} is not current",
                    req.generation.unwrap_or(-1),
                    req.group_id
                ),
                ErrorCode::InvalidRequest => {
                    "a member commit needs both member_id and generation; a standalone one neither"
                        .to_owned()
                }
                other => format!("commit refused: {other}"),
            };
            status(code, message)
        })?;
        let mut results = Vec::with_capacity(req.partitions.len());
        let mut valid = Vec::with_capacity(req.partitions.len());
        for p in &req.partitions {
            let problem = if p.offset < 0 {
                Some((
                    ErrorCode::InvalidRequest,
                    format!(
                        "offset {} for {}-{} is negative",
                        p.offset, p.topic, p.partition
                    ),
                ))
            } else if p.metadata.len() > GROUP_METADATA_BYTES_MAX {
                Some((
                    ErrorCode::InvalidRequest,
                    format!(
                        "metadata for {}-{} is {} bytes, over the limit of {GROUP_METADATA_BYTES_MAX}",
                        p.topic,
                        p.partition,
                        p.metadata.len()
                    ),
                ))
            } else if !exists(&p.topic, p.partition) {
                Some((
                    ErrorCode::UnknownTopicOrPartition,
                    format!("unknown topic or partition {}-{}", p.topic, p.partition),
                ))
            } else {
                None
            };
            let (error_code, error_message) = match problem {
                Some((code, message)) => (to_proto(code), message),
                None => {
                    valid.push((
                        TopicPartition::new(p.topic.clone(), p.partition),
                        OffsetCommit {
                            offset: Offset(p.offset as u64),
                            metadata: p.metadata.clone(),
                            commit_timestamp: now,
                        },
                    ));
                    (0, String::new())
                }
            };
            results.push(v1::CommitOffsetPartitionResult {
                topic: p.topic.clone(),
                partition: p.partition,
                error_code,
                error_message,
            });
        }
        if !valid.is_empty() {
            let offsets = self.offsets.clone();
            let group = req.group_id.clone();
            blocking(move || offsets.commit(&group, &valid))
                .await
                .map_err(|e| status_from_error(&e))?;
        }
        Ok(v1::CommitOffsetsResponse { results })
    }

    /// FetchOffsets. `exists` says whether a (topic, partition) is hosted.
    pub async fn fetch_offsets(
        &self,
        req: v1::FetchOffsetsRequest,
        exists: impl Fn(&str, u32) -> bool,
    ) -> std::result::Result<v1::FetchOffsetsResponse, Status> {
        self.check_coordinator(&req.group_id)?;
        let wanted: Vec<TopicPartition> = req
            .partitions
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| TopicPartition::new(t.topic.clone(), *p))
            })
            .collect();
        if wanted.len() > REQUEST_PARTITIONS_MAX {
            return Err(status(
                ErrorCode::InvalidRequest,
                format!(
                    "{} partitions in one request exceeds the limit of {REQUEST_PARTITIONS_MAX}",
                    wanted.len()
                ),
            ));
        }
        let offsets = self.offsets.clone();
        let group = req.group_id.clone();
        let all = blocking(move || offsets.fetch(&group, None))
            .await
            .map_err(|e| status_from_error(&e))?;
        if wanted.is_empty() {
            return Ok(v1::FetchOffsetsResponse {
                offsets: all.iter().map(|(tp, c)| committed(tp, Some(c))).collect(),
            });
        }
        let offsets = wanted
            .iter()
            .map(|tp| {
                let mut c = committed(tp, all.get(tp));
                if c.offset < 0 && !exists(&tp.topic, tp.partition) {
                    c.error_code = to_proto(ErrorCode::UnknownTopicOrPartition);
                    c.error_message =
                        format!("unknown topic or partition {}-{}", tp.topic, tp.partition);
                }
                c
            })
            .collect();
        Ok(v1::FetchOffsetsResponse { offsets })
    }

    /// ListGroups: groups with an entry (members) or with committed offsets — in a cluster, the
    /// groups this broker coordinates (a client lists every broker, as Kafka's admin does).
    pub async fn list(&self) -> std::result::Result<v1::ListGroupsResponse, Status> {
        let mut out: BTreeMap<String, v1::GroupListing> = BTreeMap::new();
        for e in self.entries() {
            let g = e.lock();
            if g.removed {
                continue;
            }
            let c = &g.coordinator;
            out.insert(
                c.group_id().to_owned(),
                v1::GroupListing {
                    group_id: c.group_id().to_owned(),
                    state: c.state().name().to_owned(),
                    members: c.members().len() as u32,
                    generation: c.generation() as i32,
                },
            );
        }
        let offsets = self.offsets.clone();
        for group in blocking(move || Ok(offsets.groups()))
            .await
            .map_err(|e| status_from_error(&e))?
        {
            out.entry(group.clone()).or_insert(v1::GroupListing {
                group_id: group,
                state: GroupState::Empty.name().to_owned(),
                members: 0,
                generation: 0,
            });
        }
        Ok(v1::ListGroupsResponse {
            groups: out.into_values().collect(),
        })
    }

    /// DescribeGroup.
    pub async fn describe(
        &self,
        group: &str,
    ) -> std::result::Result<v1::DescribeGroupResponse, Status> {
        self.check_coordinator(group)?;
        let mut out = self
            .with_entry(group, false, |e| {
                let c = &e.coordinator;
                v1::DescribeGroupResponse {
                    group_id: group.to_owned(),
                    state: c.state().name().to_owned(),
                    generation: c.generation() as i32,
                    assignor: if c.members().is_empty() {
                        String::new()
                    } else {
                        c.assignor()
                            .map(|a| a.name().to_owned())
                            .unwrap_or_default()
                    },
                    members: c
                        .members()
                        .into_iter()
                        .map(|m| v1::GroupMember {
                            member_id: m.member_id,
                            client_id: m.client_id,
                            topics: m.topics,
                            assignment: by_topic(&m.assignment),
                        })
                        .collect(),
                    offsets: Vec::new(),
                }
            })?
            .unwrap_or_else(|| v1::DescribeGroupResponse {
                group_id: group.to_owned(),
                state: GroupState::Empty.name().to_owned(),
                ..Default::default()
            });
        let offsets = self.offsets.clone();
        let g = group.to_owned();
        let all = blocking(move || offsets.fetch(&g, None))
            .await
            .map_err(|e| status_from_error(&e))?;
        out.offsets = all.iter().map(|(tp, c)| committed(tp, Some(c))).collect();
        if out.members.is_empty() && out.offsets.is_empty() && out.generation == 0 {
            out.state = "Dead".to_owned();
        }
        Ok(out)
    }

    /// Tombstones every commit on a deleted topic.
    pub async fn forget_topic(&self, topic: &str) {
        let offsets = self.offsets.clone();
        let t = topic.to_owned();
        if let Err(e) = blocking(move || offsets.forget_topic(&t)).await {
            warn!(topic, error = %e, "forgetting the deleted topic's group offsets failed");
        }
    }

    /// Closes `__consumer_offsets` (clean shutdown).
    pub fn close(&self) {
        if let Err(e) = self.offsets.close() {
            warn!(error = %e, "closing the group offsets failed");
        }
    }

    /// The logs' periodic work (interval flushes, age rolls).
    pub fn tick(&self) {
        if let Err(e) = self.offsets.tick() {
            warn!(error = %e, "group offsets tick failed");
        }
    }
}

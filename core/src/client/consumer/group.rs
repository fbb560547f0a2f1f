//! A consumer's group membership: the client side of the `Group` service (Kafka's eager
//! rebalance protocol, the coordinator computing assignments itself).
//!
//! One task per subscribed consumer ([`run`]) loops over generations:
//! 1. **Join**: `JoinGroup` at the group's coordinator ([`Cluster::coordinator_for`]), answered
//!    only when the rebalance completes, with the member id, the generation and this member's
//!    partitions. The request's timeout covers the rebalance timeout (`max.poll.interval.ms`).
//! 2. **Assign**: the broker-committed offsets of the new partitions (`FetchOffsets`) become
//!    their positions; partitions without one fall back to the local store, then to
//!    `auto.offset.reset` (the consumer's usual resolution).
//! 3. **Heartbeat** every `heartbeat.interval.ms` (default 3 s, or `session.timeout.ms` / 3 when
//!    that is shorter).
//!    REBALANCE_IN_PROGRESS or ILLEGAL_GENERATION: rejoin with the member id; UNKNOWN_MEMBER_ID:
//!    rejoin as a new member. Connection errors are retried (another coordinator address) until
//!    a session timeout has passed without a successful heartbeat; then the member assumes it
//!    was removed and rejoins.
//!    The new assignment is announced to the application as an `Assigned` event.
//! 4. **Revoke** before every rejoin ([`revoke`]): every partition is taken from the fetcher and
//!    its buffered records dropped (under the lock `poll` drains with, so no record of a
//!    revoked partition is returned afterwards and no fetch for it starts), then, with
//!    `enable.auto.commit`, the positions reached are committed to the broker (still in the old
//!    generation, which the coordinator accepts during the rebalance) and to the local store.
//!    A `Revoked` event with those positions goes to the application, and the member waits
//!    for its next poll (at most half of the smaller of `session.timeout.ms` and
//!    `max.poll.interval.ms`: it does not heartbeat meanwhile), keeping its generation so the
//!    application can commit.
//!    The coordinator hands those partitions to others only after this member rejoined, i.e.
//!    after it stopped fetching and everything was committed.
//!
//! Errors that retrying cannot fix (INVALID_SESSION_TIMEOUT, INCONSISTENT_GROUP_PROTOCOL,
//! GROUP_MAX_SIZE_REACHED, INVALID_REQUEST, …) end the task and are reported by the next `poll`.
//! Retries are bounded (per request: `request.timeout.ms` in all and
//! [`CONSUMER_GROUP_RETRIES_MAX`] attempts) and spaced by `retry.backoff.ms`, doubling up to
//! [`CONSUMER_GROUP_BACKOFF_MS_MAX`]; a coordinator that moved is found again between attempts.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluiceway_proto::v1;

use super::{Inner, PartitionOffset, PendingRevoke, RebalanceEvent};
use crate::client::cluster::{coordinator_moved, is_connection_error};
use crate::error::{Error, ErrorCode, Result};
use crate::group::TopicPartition;
use crate::limits::{
    CONSUMER_GROUP_BACKOFF_MS_MAX, CONSUMER_GROUP_RETRIES_MAX, GROUP_JOIN_SLACK_MS,
};
use crate::types::Offset;
use crate::wire::{code_from_proto, error_from_status, partition_error};

/// The membership of a subscribed consumer.
#[derive(Clone, Debug)]
pub(super) struct Member {
    pub(super) group_id: String,
    /// Sorted, deduplicated.
    pub(super) topics: Vec<String>,
    /// Empty until the coordinator gave one (and again after UNKNOWN_MEMBER_ID).
    pub(super) member_id: String,
    /// The generation whose assignment the consumer holds; `None` while (re)joining.
    pub(super) generation: Option<i32>,
}

/// Errors that mean "the group moved on": the caller rejoins rather than failing.
pub(super) fn is_rebalance_error(e: &Error) -> bool {
    matches!(
        e.code(),
        ErrorCode::RebalanceInProgress | ErrorCode::IllegalGeneration | ErrorCode::UnknownMemberId
    )
}

fn retriable(e: &Error) -> bool {
    is_connection_error(e) || (e.code().is_retriable() && !is_rebalance_error(e))
}

/// Why the heartbeat loop ended.
enum Rejoin {
    /// Rejoin with the same member id.
    SameMember,
    /// The coordinator no longer knows this member: join as a new one.
    NewMember,
}

/// The membership task (see the module docs). Ends only on a non-retriable error; `close`,
/// `unsubscribe` and a new `subscribe` abort it.
pub(super) async fn run(inner: Arc<Inner>) {
    let base = inner
        .config
        .common
        .retry_backoff
        .max(Duration::from_millis(1));
    let mut backoff = base;
    loop {
        let joined = match join(&inner).await {
            Ok(j) => j,
            Err(e) if e.code() == ErrorCode::UnknownMemberId => {
                set_member_id(&inner, String::new());
                continue;
            }
            Err(e) if retriable(&e) || is_rebalance_error(&e) => {
                tracing::info!(error = %e, "joining the group failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(CONSUMER_GROUP_BACKOFF_MS_MAX));
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "joining the group failed; the subscription ends");
                inner.state.lock().group_error = Some(e);
                inner.data.notify_waiters();
                return;
            }
        };
        backoff = base;
        let (member_id, generation, assignment) = joined;
        tracing::info!(member = %member_id, generation, partitions = assignment.len(), "joined the group");
        let committed = match fetch_committed(&inner, &assignment).await {
            Ok(c) => c,
            Err(e) => {
                // Starting without the group's offsets could re-read or skip what another
                // member committed: give the generation up and rejoin instead.
                tracing::warn!(error = %e, "could not read the group's committed offsets; rejoining");
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        {
            let mut m = inner.member.lock();
            let Some(m) = m.as_mut() else { return };
            m.member_id = member_id;
            m.generation = Some(generation);
        }
        let event = RebalanceEvent::Assigned(
            assignment
                .iter()
                .map(|tp| PartitionOffset::new(tp, committed.get(tp).copied().map(Offset)))
                .collect(),
        );
        if inner.set_assignment(assignment, &committed).is_err() {
            return; // closed
        }
        inner.state.lock().push_event(event);
        inner.data.notify_waiters();
        let why = heartbeat_loop(&inner).await;
        revoke(&inner, true).await;
        if matches!(why, Rejoin::NewMember) {
            set_member_id(&inner, String::new());
        }
    }
}

fn set_member_id(inner: &Inner, id: String) {
    if let Some(m) = inner.member.lock().as_mut() {
        m.member_id = id;
        m.generation = None;
    }
}

/// Stops fetching every partition, drops their buffered records, (with `enable.auto.commit`)
/// commits the positions reached to the broker and the local store, and hands a `Revoked`
/// event to the application; with `wait_for_ack` waits for the application's next poll (see
/// the module docs). Leaves the membership without a generation.
pub(super) async fn revoke(inner: &Inner, wait_for_ack: bool) {
    let positions = inner.revoke_all();
    if inner.config.enable_auto_commit && !positions.is_empty() {
        if let Err(e) = commit_to_group(inner, &positions).await {
            // Fenced (the group moved on without us): another member may own these partitions
            // already, so our positions must not overwrite its commits.
            tracing::warn!(error = %e, "committing revoked partitions to the group failed");
        }
        if let Err(e) = inner.commit_local(positions.clone()).await {
            tracing::warn!(error = %e, "committing revoked partitions to the local store failed");
        }
    }
    if !positions.is_empty() {
        // The event and the pending revoke appear together, under one lock: a poll that takes
        // the event must find the revoke to mark it delivered (else nothing would ever
        // acknowledge it).
        let acked = {
            let mut st = inner.state.lock();
            st.push_event(RebalanceEvent::Revoked(
                positions
                    .iter()
                    .map(|(tp, o)| PartitionOffset::new(tp, Some(Offset(*o))))
                    .collect(),
            ));
            st.events_wanted.then(|| {
                st.revoke = Some(PendingRevoke {
                    positions,
                    delivered: false,
                });
                inner.revoke_acked.notified()
            })
        };
        inner.data.notify_waiters();
        if let Some(acked) = acked {
            if wait_for_ack {
                // The member does not heartbeat while it waits: stay well inside both the
                // session (the coordinator would remove it) and the rebalance timeout.
                let bound = inner
                    .config
                    .max_poll_interval
                    .min(inner.config.session_timeout)
                    / 2;
                tokio::pin!(acked);
                acked.as_mut().enable();
                if inner.state.lock().revoke.is_some()
                    && tokio::time::timeout(bound, acked).await.is_err()
                {
                    tracing::warn!(
                        "the application did not poll within half of the session timeout after a revoke; rejoining"
                    );
                }
            }
            // Not acknowledged (not waited for, or the time ran out): the generation ends here,
            // so the revoked positions are no longer committable as this member's.
            inner.state.lock().revoke = None;
        }
    }
    if let Some(m) = inner.member.lock().as_mut() {
        m.generation = None;
    }
}

/// Runs one group request at the coordinator, retrying connection and retriable errors —
/// finding the coordinator again after NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE or a lost
/// connection — for at most `request.timeout.ms` in all (Kafka's commitSync likewise retries
/// through a coordinator failover until its API timeout), backing off from `retry.backoff.ms`
/// doubling to [`CONSUMER_GROUP_BACKOFF_MS_MAX`], and at most [`CONSUMER_GROUP_RETRIES_MAX`]
/// attempts.
async fn at_coordinator<T, F, Fut>(inner: &Inner, group_id: &str, mut f: F) -> Result<T>
where
    F: FnMut(v1::group_client::GroupClient<crate::client::security::AuthChannel>) -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, tonic::Status>>,
{
    let cluster = &inner.cluster;
    let deadline = Instant::now() + inner.config.common.request_timeout;
    let mut backoff = inner
        .config
        .common
        .retry_backoff
        .max(Duration::from_millis(1));
    let mut attempt = 0;
    loop {
        let result = match cluster.coordinator_client(group_id).await {
            Ok(client) => f(client).await.map_err(|s| error_from_status(&s)),
            Err(e) => Err(e),
        };
        attempt += 1;
        match result {
            Err(e)
                if retriable(&e)
                    && attempt < CONSUMER_GROUP_RETRIES_MAX
                    && Instant::now() + backoff < deadline =>
            {
                if coordinator_moved(&e) {
                    cluster.coordinator_failed(group_id);
                }
                tracing::debug!(error = %e, attempt, "group request failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(CONSUMER_GROUP_BACKOFF_MS_MAX));
            }
            other => return other,
        }
    }
}

fn member_snapshot(inner: &Inner) -> Result<Member> {
    inner
        .member
        .lock()
        .clone()
        .ok_or_else(|| Error::InvalidArgument("the consumer is not subscribed to a group".into()))
}

async fn join(inner: &Inner) -> Result<(String, i32, Vec<TopicPartition>)> {
    let m = member_snapshot(inner)?;
    let cfg = &inner.config;
    let request = v1::JoinGroupRequest {
        group_id: m.group_id.clone(),
        member_id: m.member_id.clone(),
        client_id: cfg.common.client_id.clone(),
        topics: m.topics.clone(),
        session_timeout_ms: cfg.session_timeout.as_millis() as u32,
        rebalance_timeout_ms: cfg.max_poll_interval.as_millis() as u32,
        assignor: cfg.assignor.name().to_owned(),
    };
    // The answer comes when the rebalance completes: at most the rebalance timeout (the
    // coordinator's bound), plus the broker's slack.
    let wait =
        cfg.max_poll_interval.max(cfg.session_timeout) + Duration::from_millis(GROUP_JOIN_SLACK_MS);
    let r = at_coordinator(inner, &m.group_id, |mut c| {
        let req = inner.cluster.request(request.clone(), wait);
        async move { c.join_group(req).await.map(|r| r.into_inner()) }
    })
    .await?;
    let assignment = r
        .assignment
        .into_iter()
        .flat_map(|t| {
            let topic = t.topic;
            t.partitions
                .into_iter()
                .map(move |p| TopicPartition::new(topic.clone(), p))
        })
        .collect();
    Ok((r.member_id, r.generation, assignment))
}

async fn heartbeat_loop(inner: &Inner) -> Rejoin {
    let interval = inner.config.effective_heartbeat_interval();
    let session = inner.config.session_timeout;
    let mut last_ok = Instant::now();
    loop {
        tokio::time::sleep(interval).await;
        let Ok(m) = member_snapshot(inner) else {
            return Rejoin::SameMember;
        };
        let request = v1::HeartbeatRequest {
            group_id: m.group_id.clone(),
            member_id: m.member_id.clone(),
            generation: m.generation.unwrap_or(-1),
        };
        let mut c = match inner.cluster.coordinator_client(&m.group_id).await {
            Ok(c) => c,
            // No coordinator right now (a failover in progress): keep the assignment and try
            // again at the next interval; only a whole session without one ends the membership,
            // since the new coordinator may well restore this member.
            Err(e) if last_ok.elapsed() < session && (coordinator_moved(&e) || retriable(&e)) => {
                tracing::debug!(error = %e, "no group coordinator yet; heartbeating again later");
                inner.cluster.coordinator_failed(&m.group_id);
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "no group coordinator address");
                return Rejoin::SameMember;
            }
        };
        // One heartbeat may take at most the session timeout: past it the session is gone.
        let mut req = tonic::Request::new(request);
        req.set_timeout(session.min(inner.config.common.request_timeout));
        match c.heartbeat(req).await.map_err(|s| error_from_status(&s)) {
            Ok(_) => last_ok = Instant::now(),
            Err(e) => match e.code() {
                ErrorCode::RebalanceInProgress | ErrorCode::IllegalGeneration => {
                    tracing::info!(code = %e.code().name(), "the group is rebalancing; rejoining");
                    return Rejoin::SameMember;
                }
                ErrorCode::UnknownMemberId => {
                    tracing::info!("the coordinator removed this member; joining again");
                    return Rejoin::NewMember;
                }
                _ => {
                    if coordinator_moved(&e) {
                        inner.cluster.coordinator_failed(&m.group_id);
                    }
                    if last_ok.elapsed() >= session {
                        tracing::warn!(error = %e, "no successful heartbeat for a session timeout; rejoining");
                        return Rejoin::SameMember;
                    }
                    tracing::debug!(error = %e, "heartbeat failed; retrying");
                }
            },
        }
    }
}

/// The group's committed offsets for `partitions` (those with none are absent).
async fn fetch_committed(
    inner: &Inner,
    partitions: &[TopicPartition],
) -> Result<HashMap<TopicPartition, u64>> {
    if partitions.is_empty() {
        return Ok(HashMap::new());
    }
    let m = member_snapshot(inner)?;
    let mut by_topic: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for tp in partitions {
        by_topic.entry(&tp.topic).or_default().push(tp.partition);
    }
    let request = v1::FetchOffsetsRequest {
        group_id: m.group_id.clone(),
        partitions: by_topic
            .into_iter()
            .map(|(topic, mut partitions)| {
                partitions.sort_unstable();
                v1::TopicPartitions {
                    topic: topic.to_owned(),
                    partitions,
                }
            })
            .collect(),
    };
    let r = at_coordinator(inner, &m.group_id, |mut c| {
        let req = inner.cluster.request(request.clone(), Duration::ZERO);
        async move { c.fetch_offsets(req).await.map(|r| r.into_inner()) }
    })
    .await?;
    let mut out = HashMap::new();
    for o in r.offsets {
        // A per-partition error (the topic was deleted meanwhile) leaves the partition to the
        // local store / auto.offset.reset, as a partition never committed.
        if code_from_proto(o.error_code) == ErrorCode::None && o.offset >= 0 {
            out.insert(TopicPartition::new(o.topic, o.partition), o.offset as u64);
        }
    }
    Ok(out)
}

/// Commits `offsets` to the broker as this member in its current generation.
pub(super) async fn commit_to_group(
    inner: &Inner,
    offsets: &[(TopicPartition, u64)],
) -> Result<()> {
    if offsets.is_empty() {
        return Ok(());
    }
    let m = member_snapshot(inner)?;
    let Some(generation) = m.generation else {
        return Err(Error::Remote {
            code: ErrorCode::RebalanceInProgress,
            message: format!("group {} is rebalancing: nothing to commit in", m.group_id),
        });
    };
    let request = v1::CommitOffsetsRequest {
        group_id: m.group_id.clone(),
        member_id: m.member_id.clone(),
        generation: Some(generation),
        partitions: offsets
            .iter()
            .map(|(tp, o)| v1::CommitOffsetPartition {
                topic: tp.topic.clone(),
                partition: tp.partition,
                offset: *o as i64,
                metadata: String::new(),
            })
            .collect(),
    };
    let r = at_coordinator(inner, &m.group_id, |mut c| {
        let req = inner.cluster.request(request.clone(), Duration::ZERO);
        async move { c.commit_offsets(req).await.map(|r| r.into_inner()) }
    })
    .await?;
    for p in r.results {
        if code_from_proto(p.error_code) != ErrorCode::None {
            let tp = TopicPartition::new(p.topic, p.partition);
            return Err(partition_error(p.error_code, &p.error_message, &tp));
        }
    }
    Ok(())
}

/// Sends LeaveGroup when the member has an id (bounded by the request timeout; one attempt,
/// since the coordinator removes a silent member after its session anyway).
pub(super) async fn leave(inner: &Inner) -> Result<()> {
    let Ok(m) = member_snapshot(inner) else {
        return Ok(());
    };
    if m.member_id.is_empty() {
        return Ok(());
    }
    let request = v1::LeaveGroupRequest {
        group_id: m.group_id.clone(),
        member_id: m.member_id.clone(),
    };
    let mut c = inner.cluster.coordinator_client(&m.group_id).await?;
    match c
        .leave_group(inner.cluster.request(request, Duration::ZERO))
        .await
        .map_err(|s| error_from_status(&s))
    {
        Ok(_) => Ok(()),
        // Already removed (session expired): nothing to leave.
        Err(e) if e.code() == ErrorCode::UnknownMemberId => Ok(()),
        Err(e) => Err(e),
    }
}

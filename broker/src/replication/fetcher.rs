//! The follower's side of replication: one fetcher task per source broker (a leader of some
//! partition this broker follows), started by the role pass ([`ReplicaManager::ensure_fetchers`]) and
//! idle while it has nothing to fetch. Followers pull; leaders never push.
//!
//! Each round of a fetcher:
//! 1. **Truncate** the partitions that have a new leader or epoch (KIP-101/279): ask the leader
//!    (OffsetForLeaderEpoch) where our latest epoch ends in its log, apply core's
//!    `truncation_step` (truncate the log and the epoch history), and repeat while it says
//!    `AskAgain`. A partition with no epoch history fetches from its log end without asking.
//! 2. **Fetch** every truncated partition in one `Fetch` with `replica_id` = this replicas, each at
//!    our log end with the epoch we follow, as a long poll of `replica_fetch_wait_max_ms`.
//!    The fetch is abandoned when a follower role changes meanwhile.
//! 3. **Apply** each partition's answer on a blocking thread, under the append gate and only if
//!    the role is unchanged: `append_as_follower` (with flush policy `always` the data is on
//!    disk before the next fetch reports it to the leader), then record the leader-epoch entries
//!    that start inside the appended range, then HW = min(leader HW, our log end), then drop
//!    whole segments below the leader's log start (as Kafka's followers do).
//!    OFFSET_OUT_OF_RANGE below the leader's log start empties the log and restarts it there;
//!    above the leader's log end truncates again. FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH,
//!    NOT_LEADER and the like **pause** the partition until the next registry change — bounded
//!    (`REPLICA_PAUSE_MS` / `REPLICA_RETRY_MS`), because the leader may simply not have applied
//!    the registry change yet and our registry will not change again.
//!
//! Connection failures back off from `REPLICA_BACKOFF_MS_MIN` to `REPLICA_BACKOFF_MS_MAX`.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sluiceway_core::client::security::AuthChannel;
use sluiceway_core::limits::{
    HTTP2_CONNECTION_WINDOW_BYTES, HTTP2_FRAME_BYTES_MAX, HTTP2_STREAM_WINDOW_BYTES,
    REPLICA_BACKOFF_MS_MAX, REPLICA_BACKOFF_MS_MIN, REPLICA_CONNECT_TIMEOUT_MS,
    REPLICA_FETCH_PARTITION_BYTES, REPLICA_FETCH_RESPONSE_BYTES, REPLICA_IDLE_WAIT_MS,
    REPLICA_PAUSE_MS, REPLICA_REQUEST_SLACK_MS, REPLICA_RETRY_MS, RESPONSE_BYTES_MAX,
};
use sluiceway_core::registry::BrokerId;
use sluiceway_core::replication::{EpochEntry, TruncationStep, truncation_step};
use sluiceway_core::{ErrorCode, Offset};
use sluiceway_proto::v1;
use tracing::{debug, info, warn};

use super::{FollowerRole, Partition, ReplicaManager, Role};
use crate::errors::from_proto;

/// One followed partition as a fetcher round sees it.
type Followed = (Arc<Partition>, FollowerRole);

impl ReplicaManager {
    /// Starts a fetcher for every source broker a followed partition needs (module docs).
    pub fn ensure_fetchers(self: &Arc<Self>) {
        if self.is_shutting_down() {
            return;
        }
        let sources: HashSet<BrokerId> = self
            .hosted_partitions()
            .iter()
            .filter_map(|p| match &*p.role() {
                Role::Follower(f) => Some(f.leader),
                _ => None,
            })
            .collect();
        let mut running = self.fetchers.lock();
        for source in sources {
            if running.insert(source) {
                info!(source = %source, "starting a replica fetcher");
                tokio::spawn(run_fetcher(self.clone(), source));
            }
        }
    }

    /// The partitions this broker follows from `source`, with their follower state.
    fn followed_from(&self, source: BrokerId) -> Vec<Followed> {
        self.hosted_partitions()
            .into_iter()
            .filter_map(|p| {
                let f = match &*p.role() {
                    Role::Follower(f) if f.leader == source => *f,
                    _ => return None,
                };
                Some((p, f))
            })
            .collect()
    }
}

/// Runs `op` on the partition's follower state if it still follows `f.leader` at `f.epoch`.
fn update_follower(p: &Partition, f: &FollowerRole, op: impl FnOnce(&mut FollowerRole)) -> bool {
    match &mut *p.role() {
        Role::Follower(now) if now.leader == f.leader && now.epoch == f.epoch => {
            op(now);
            true
        }
        _ => false,
    }
}

fn pause(p: &Partition, f: &FollowerRole, ms: u64, why: &str) {
    debug!(partition = %p.name(), leader = %f.leader, epoch = f.epoch, why, "pausing replication of the partition");
    update_follower(p, f, |now| {
        now.paused_until = Some(Instant::now() + Duration::from_millis(ms));
    });
}

/// The channel to `source`, (re)made when its registered address changed.
fn channel(
    replicas: &ReplicaManager,
    source: BrokerId,
    conn: &mut Option<(String, AuthChannel)>,
) -> Result<AuthChannel, String> {
    let address = replicas
        .registry
        .brokers()
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|b| b.id == source)
        .map(|b| b.address)
        .ok_or_else(|| format!("broker {source} is not registered"))?;
    if let Some((a, c)) = conn
        && *a == address
    {
        return Ok(c.clone());
    }
    // TLS and credentials as the listener's settings say (`security::inter_broker_connector`).
    let connector = replicas
        .config
        .security
        .inter_broker_connector()
        .map_err(|e| format!("cannot connect to broker {source} at {address:?}: {e}"))?;
    let endpoint = connector
        .endpoint(
            "address",
            &address,
            Duration::from_millis(REPLICA_CONNECT_TIMEOUT_MS),
        )
        .map_err(|e| format!("cannot connect to broker {source} at {address:?}: {e}"))?
        .tcp_nodelay(true)
        .initial_stream_window_size(HTTP2_STREAM_WINDOW_BYTES)
        .initial_connection_window_size(HTTP2_CONNECTION_WINDOW_BYTES)
        .max_frame_size(HTTP2_FRAME_BYTES_MAX);
    let c = connector.intercept(endpoint.connect_lazy());
    *conn = Some((address, c.clone()));
    Ok(c)
}

/// Fetches from `source` until shutdown (module docs).
pub async fn run_fetcher(replicas: Arc<ReplicaManager>, source: BrokerId) {
    let me = replicas.config.broker_id;
    let mut roles = replicas.follower_roles.subscribe();
    let mut shutdown = replicas.shutdown_receiver();
    let mut backoff = REPLICA_BACKOFF_MS_MIN;
    let mut failing = false;
    let mut conn: Option<(String, AuthChannel)> = None;
    loop {
        if *shutdown.borrow() {
            return;
        }
        roles.borrow_and_update();
        let now = Instant::now();
        let mut to_truncate = Vec::new();
        let mut to_fetch = Vec::new();
        let mut wake: Option<Instant> = None;
        for (p, mut f) in replicas.followed_from(source) {
            if let Some(until) = f.paused_until {
                if until > now {
                    wake = Some(wake.map_or(until, |w| w.min(until)));
                    continue;
                }
                // The pause ended without a registry change: truncate again, then fetch.
                update_follower(&p, &f, |n| {
                    n.paused_until = None;
                    n.truncated = false;
                });
                f.paused_until = None;
                f.truncated = false;
            }
            if f.truncated {
                to_fetch.push((p, f));
            } else {
                to_truncate.push((p, f));
            }
        }
        if to_truncate.is_empty() && to_fetch.is_empty() {
            let until = wake.unwrap_or_else(|| now + Duration::from_millis(REPLICA_IDLE_WAIT_MS));
            tokio::select! {
                r = roles.changed() => if r.is_err() { return },
                () = tokio::time::sleep_until(until.into()) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        let result = match channel(&replicas, source, &mut conn) {
            Err(e) => Err(e),
            Ok(channel) => {
                let mut client = v1::log_client::LogClient::new(channel)
                    .max_decoding_message_size(RESPONSE_BYTES_MAX as usize);
                if !to_truncate.is_empty() {
                    truncate(&replicas, &mut client, me, to_truncate).await
                } else {
                    let wait = replicas.config.replica_fetch_wait_max_ms;
                    let mut request = tonic::Request::new(v1::FetchRequest {
                        max_wait_ms: wait,
                        min_bytes: 1,
                        max_bytes: REPLICA_FETCH_RESPONSE_BYTES,
                        partitions: to_fetch
                            .iter()
                            .map(|(p, f)| v1::FetchPartition {
                                topic: p.topic.to_string(),
                                partition: p.partition,
                                fetch_offset: p.log.log_end_offset().0 as i64,
                                max_bytes: REPLICA_FETCH_PARTITION_BYTES,
                                leader_epoch: Some(f.epoch as i32),
                            })
                            .collect(),
                        replica_id: Some(me.0 as i32),
                    });
                    request.set_timeout(Duration::from_millis(
                        u64::from(wait) + REPLICA_REQUEST_SLACK_MS,
                    ));
                    let offsets: Vec<Offset> = to_fetch
                        .iter()
                        .map(|(p, _)| p.log.log_end_offset())
                        .collect();
                    replicas
                        .metrics
                        .replica_fetches
                        .fetch_add(1, Ordering::Relaxed);
                    tokio::select! {
                        r = client.fetch(request) => match r {
                            Ok(resp) => {
                                let b = replicas.clone();
                                let results = resp.into_inner().results;
                                let _ = tokio::task::spawn_blocking(move || {
                                    apply_fetched(&b, to_fetch, offsets, results)
                                })
                                .await;
                                Ok(())
                            }
                            Err(s) => Err(format!("fetch from broker {source} failed: {}", s.message())),
                        },
                        // A follower role changed: re-read the partitions (drops the request).
                        _ = roles.changed() => Ok(()),
                        _ = shutdown.changed() => return,
                    }
                }
            }
        };
        match result {
            Ok(()) => {
                if failing {
                    info!(source = %source, "replica fetching works again");
                }
                failing = false;
                backoff = REPLICA_BACKOFF_MS_MIN;
            }
            Err(e) => {
                replicas
                    .metrics
                    .replica_fetch_errors
                    .fetch_add(1, Ordering::Relaxed);
                if failing {
                    debug!(source = %source, error = %e, backoff_ms = backoff, "replica fetch failed");
                } else {
                    warn!(source = %source, error = %e, "replica fetch failed; backing off");
                }
                failing = true;
                // Forget the channel: the next round reconnects (to a new address if it moved).
                conn = None;
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(backoff)) => {}
                    _ = roles.changed() => {}
                    _ = shutdown.changed() => return,
                }
                backoff = (backoff * 2).min(REPLICA_BACKOFF_MS_MAX);
            }
        }
    }
}

/// One truncation round (module docs, step 1). Errors are transport failures.
async fn truncate(
    replicas: &Arc<ReplicaManager>,
    client: &mut v1::log_client::LogClient<AuthChannel>,
    me: BrokerId,
    parts: Vec<Followed>,
) -> Result<(), String> {
    let mut ask = Vec::new();
    for (p, f) in parts {
        let latest = p.epoch_cache().latest();
        match latest {
            // No history: nothing to compare; fetch from the log end.
            None => {
                update_follower(&p, &f, |n| n.truncated = true);
            }
            Some(latest) => ask.push((p, f, latest.epoch)),
        }
    }
    if ask.is_empty() {
        return Ok(());
    }
    let request = v1::OffsetForLeaderEpochRequest {
        replica_id: me.0 as i32,
        partitions: ask
            .iter()
            .map(|(p, f, requested)| v1::OffsetForLeaderEpochPartition {
                topic: p.topic.to_string(),
                partition: p.partition,
                current_leader_epoch: f.epoch as i32,
                leader_epoch: *requested as i32,
            })
            .collect(),
    };
    let mut request = tonic::Request::new(request);
    request.set_timeout(Duration::from_millis(REPLICA_REQUEST_SLACK_MS));
    let results = client
        .offset_for_leader_epoch(request)
        .await
        .map_err(|s| format!("OffsetForLeaderEpoch failed: {}", s.message()))?
        .into_inner()
        .results;
    let b = replicas.clone();
    let _ = tokio::task::spawn_blocking(move || {
        for ((p, f, requested), r) in ask.into_iter().zip(results) {
            if r.topic != *p.topic || r.partition != p.partition {
                warn!(partition = %p.name(), "OffsetForLeaderEpoch answered out of order; retrying");
                continue;
            }
            match from_proto(r.error_code) {
                ErrorCode::None => {
                    let answer = (r.leader_epoch >= 0 && r.end_offset >= 0).then_some(EpochEntry {
                        epoch: r.leader_epoch as u32,
                        start_offset: Offset(r.end_offset as u64),
                    });
                    apply_truncation(&b, &p, &f, requested, answer);
                }
                ErrorCode::FencedLeaderEpoch => pause(&p, &f, REPLICA_PAUSE_MS, &r.error_message),
                _ => pause(&p, &f, REPLICA_RETRY_MS, &r.error_message),
            }
        }
    })
    .await;
    Ok(())
}

/// Applies one OffsetForLeaderEpoch answer: truncates the log and the epoch history, and marks
/// the partition ready to fetch when the step is `Done`.
fn apply_truncation(
    replicas: &ReplicaManager,
    p: &Partition,
    f: &FollowerRole,
    requested: u32,
    answer: Option<EpochEntry>,
) {
    let _gate = p.append_gate();
    if replicas.is_shutting_down() || !update_follower(p, f, |_| {}) {
        return;
    }
    let step = {
        let mut cache = p.epoch_cache();
        if cache.latest().map(|e| e.epoch) != Some(requested) {
            return; // The history changed since we asked: ask again.
        }
        let log_end = p.log.log_end_offset();
        let step = truncation_step(&cache, log_end, p.log.high_watermark(), requested, answer);
        let to = step.truncate_to();
        if to < log_end {
            if let Err(e) = p.log.truncate_to(to) {
                warn!(partition = %p.name(), error = %e, "truncating the log failed");
                drop(cache);
                pause(p, f, REPLICA_PAUSE_MS, "truncation failed");
                return;
            }
            info!(partition = %p.name(), leader = %f.leader, epoch = f.epoch, from = log_end.0,
                to = p.log.log_end_offset().0, "truncated the divergent tail");
        }
        if let Err(e) = cache.truncate_from_end(p.log.log_end_offset()) {
            warn!(partition = %p.name(), error = %e, "truncating the leader-epoch history failed");
            drop(cache);
            pause(p, f, REPLICA_PAUSE_MS, "truncation failed");
            return;
        }
        step
    };
    p.refresh_watches();
    if let TruncationStep::Done { .. } = step {
        update_follower(p, f, |n| n.truncated = true);
    }
}

/// Applies one fetch answer (module docs, step 3). `offsets` are the fetch offsets sent.
fn apply_fetched(
    replicas: &ReplicaManager,
    parts: Vec<Followed>,
    offsets: Vec<Offset>,
    results: Vec<v1::FetchPartitionResult>,
) {
    for (((p, f), fetch_offset), r) in parts.into_iter().zip(offsets).zip(results) {
        if r.topic != *p.topic || r.partition != p.partition {
            warn!(partition = %p.name(), "the leader answered a fetch out of order; retrying");
            continue;
        }
        match from_proto(r.error_code) {
            ErrorCode::None => append_fetched(replicas, &p, &f, fetch_offset, &r),
            ErrorCode::OffsetOutOfRange => {
                let _gate = p.append_gate();
                if replicas.is_shutting_down()
                    || !update_follower(&p, &f, |_| {})
                    || p.log.log_end_offset() != fetch_offset
                {
                    continue;
                }
                let (start, end) = (r.log_start_offset, r.log_end_offset);
                if start >= 0 && fetch_offset.0 < start as u64 {
                    // We are behind the leader's retention: start over at its log start.
                    let leader_start = Offset(start as u64);
                    let reset = p
                        .log
                        .truncate_fully_and_start_at(leader_start)
                        .and_then(|()| p.epoch_cache().clear());
                    match reset {
                        Ok(()) => {
                            info!(partition = %p.name(), from = fetch_offset.0, to = leader_start.0,
                                "behind the leader's log start; restarted the log there")
                        }
                        Err(e) => {
                            warn!(partition = %p.name(), error = %e, "restarting the log failed");
                            pause(&p, &f, REPLICA_PAUSE_MS, "log restart failed");
                        }
                    }
                    p.refresh_watches();
                } else if end >= 0 && fetch_offset.0 > end as u64 {
                    // Past the leader's end: our tail diverged; truncate by epochs again.
                    update_follower(&p, &f, |n| n.truncated = false);
                } else {
                    pause(&p, &f, REPLICA_RETRY_MS, &r.error_message);
                }
            }
            ErrorCode::FencedLeaderEpoch => pause(&p, &f, REPLICA_PAUSE_MS, &r.error_message),
            code => {
                if !matches!(
                    code,
                    ErrorCode::UnknownLeaderEpoch
                        | ErrorCode::NotLeader
                        | ErrorCode::UnknownTopicOrPartition
                ) {
                    warn!(partition = %p.name(), leader = %f.leader, %code, message = %r.error_message, "replica fetch refused");
                }
                pause(&p, &f, REPLICA_RETRY_MS, &r.error_message);
            }
        }
    }
}

/// Appends one partition's fetched data as a follower and takes the leader's HW.
fn append_fetched(
    replicas: &ReplicaManager,
    p: &Partition,
    f: &FollowerRole,
    fetch_offset: Offset,
    r: &v1::FetchPartitionResult,
) {
    let _gate = p.append_gate();
    if replicas.is_shutting_down() {
        return; // The logs are being closed.
    }
    match &*p.role() {
        Role::Follower(now)
            if now.leader == f.leader
                && now.epoch == f.epoch
                && now.truncated
                && now.paused_until.is_none() => {}
        _ => return,
    }
    if p.log.log_end_offset() != fetch_offset {
        return; // The log moved meanwhile (a truncation): the next fetch starts from its end.
    }
    if !r.message_set.is_empty() {
        let info = match p.log.append_as_follower(&r.message_set) {
            Ok(info) => info,
            Err(e) => {
                warn!(partition = %p.name(), leader = %f.leader, error = %e, "appending the leader's data failed");
                update_follower(p, f, |n| {
                    n.truncated = false;
                    n.paused_until = Some(Instant::now() + Duration::from_millis(REPLICA_PAUSE_MS));
                });
                return;
            }
        };
        let end = info.last_offset.next();
        {
            let mut cache = p.epoch_cache();
            for e in &r.leader_epochs {
                if e.epoch < 0 || e.start_offset < 0 {
                    continue;
                }
                let start = Offset(e.start_offset as u64).max(fetch_offset);
                if start < end
                    && let Err(err) = cache.assign(e.epoch as u32, start)
                {
                    warn!(partition = %p.name(), error = %err, "recording a leader epoch failed");
                }
            }
        }
        let n = r.message_set.len() as u64;
        p.replicated_bytes.fetch_add(n, Ordering::Relaxed);
        replicas
            .metrics
            .replica_fetched_bytes
            .fetch_add(n, Ordering::Relaxed);
        p.publish_log_end();
    }
    if r.high_watermark >= 0 {
        let hw = Offset(r.high_watermark as u64).min(p.log.log_end_offset());
        p.advance_high_watermark(hw);
    }
    // Follow the leader's log start (Kafka's maybeIncrementLogStartOffset on followers): what
    // the leader dropped — `__consumer_offsets` compaction, for one — goes here too, in whole
    // segments and never past our high watermark, so a follower's copy stays bounded like the
    // leader's.
    if r.log_start_offset > p.log.log_start_offset().0 as i64
        && let Err(e) = p
            .log
            .delete_segments_before(Offset(r.log_start_offset as u64))
    {
        warn!(partition = %p.name(), error = %e, "following the leader's log start failed");
    }
}

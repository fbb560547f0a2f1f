//! Fetch (consumers read below the high watermark, followers up to the log end; both long-poll),
//! ListOffsets and OffsetForLeaderEpoch. A replica fetch calls the partition's replication
//! hooks (fencing, `on_replica_fetch`, `epochs_covering`) and submits the ISR changes they
//! propose.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use sluiceway_core::limits::{
    FETCH_BYTES_MAX, FETCH_PARTITION_BYTES_DEFAULT, FETCH_RESPONSE_BYTES_DEFAULT, FETCH_WAIT_MS_MAX,
};
use sluiceway_core::registry::BrokerId;
use sluiceway_core::{ErrorCode, Offset, TimestampMs};
use sluiceway_proto::v1;
use tokio::sync::watch;
use tracing::debug;

use super::{Broker, check_duplicates, check_partition_count};
use crate::errors::{PartitionError, blocking, status, to_proto};
use crate::metrics::WaitingFetch;
use crate::replication::{IsrProposal, Partition};

impl Broker {
    // ---- Fetch ----

    pub async fn fetch(&self, req: v1::FetchRequest) -> Result<v1::FetchResponse, tonic::Status> {
        if req.max_wait_ms > FETCH_WAIT_MS_MAX {
            return Err(status(
                ErrorCode::InvalidRequest,
                format!(
                    "max_wait_ms {} exceeds the limit of {FETCH_WAIT_MS_MAX} ms",
                    req.max_wait_ms
                ),
            ));
        }
        check_partition_count(req.partitions.len())?;
        check_duplicates(
            req.partitions
                .iter()
                .map(|p| (p.topic.as_str(), p.partition)),
        )?;
        let replica = match req.replica_id {
            None => None,
            Some(id) if id < 0 || id as u32 == self.config.broker_id.0 => {
                return Err(status(
                    ErrorCode::InvalidRequest,
                    format!("replica_id {id} is not another broker's id"),
                ));
            }
            Some(id) => Some(BrokerId(id as u32)),
        };
        let _permit = self.permit(&self.fetches).await?;
        let deadline = Instant::now() + Duration::from_millis(u64::from(req.max_wait_ms));
        let min_bytes = u64::from(req.min_bytes.max(1));
        let response_max = if req.max_bytes == 0 {
            FETCH_RESPONSE_BYTES_DEFAULT
        } else {
            req.max_bytes.min(FETCH_BYTES_MAX)
        };
        let requests = Arc::new(req.partitions);
        let mut shutdown = self.shutdown_receiver();
        loop {
            // Subscribe before reading, so an append that lands between the read and the wait
            // still wakes us (no lost wake-up). Consumers wait for the high watermark; followers
            // for the log end (they must get data before it can be committed).
            let resolved: Vec<Result<Arc<Partition>, PartitionError>> = requests
                .iter()
                .map(|p| self.replicas.partition(&p.topic, p.partition))
                .collect();
            let mut receivers: Vec<watch::Receiver<u64>> = resolved
                .iter()
                .filter_map(|r| r.as_ref().ok())
                .map(|p| {
                    if replica.is_some() {
                        p.subscribe_end()
                    } else {
                        p.subscribe()
                    }
                })
                .collect();
            let reqs = requests.clone();
            let now_ms = self.replicas.now_ms();
            // A follower the registry does not have registered (fenced) may fetch but is never
            // proposed for an ISR (KIP-841); asked on every round, so it rejoins once registered.
            let follower = replica.map(|id| ReplicaFetch {
                id,
                isr_eligible: self.registry.is_registered(id),
            });
            let (results, next_offsets, bytes, failed, proposals) =
                tokio::task::spawn_blocking(move || {
                    read_partitions(&reqs, &resolved, response_max, follower, now_ms)
                })
                .await
                .map_err(|e| {
                    status(
                        ErrorCode::UnknownServerError,
                        format!("fetch task failed: {e}"),
                    )
                })?;
            for proposal in proposals {
                self.replicas.submit_isr(proposal);
            }
            if let Some(r) = replica {
                self.metrics
                    .replica_fetches_served
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                debug!(replica = %r, bytes, "served a replica fetch");
            }
            if bytes >= min_bytes || failed || Instant::now() >= deadline || *shutdown.borrow() {
                return Ok(v1::FetchResponse {
                    results,
                    next_offsets,
                });
            }
            // Wait for any partition's watch to move, the deadline, or shutdown.
            let mut changes: Vec<Pin<Box<dyn Future<Output = ()> + Send + '_>>> = receivers
                .iter_mut()
                .map(|rx| -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
                    Box::pin(async move {
                        if rx.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    })
                })
                .collect();
            let any_change = poll_fn(|cx| {
                for f in changes.iter_mut() {
                    if f.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(());
                    }
                }
                Poll::Pending
            });
            let _waiting = WaitingFetch::enter(&self.metrics.waiting_fetches);
            tokio::select! {
                () = any_change => {}
                () = tokio::time::sleep_until(deadline.into()) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    // ---- ListOffsets ----

    pub async fn list_offsets(
        &self,
        req: v1::ListOffsetsRequest,
    ) -> Result<v1::ListOffsetsResponse, tonic::Status> {
        check_partition_count(req.partitions.len())?;
        let _permit = self.permit(&self.requests).await?;
        let mut results = Vec::with_capacity(req.partitions.len());
        for p in req.partitions {
            let mut r = v1::ListOffsetsPartitionResult {
                topic: p.topic.clone(),
                partition: p.partition,
                error_code: 0,
                error_message: String::new(),
                offset: -1,
                log_start_offset: -1,
                high_watermark: -1,
            };
            match self.list_offset(&p).await {
                Ok((offset, partition)) => {
                    r.offset = offset;
                    r.log_start_offset = partition.log.log_start_offset().0 as i64;
                    r.high_watermark = partition.log.high_watermark().0 as i64;
                }
                Err(PartitionError { code, message }) => {
                    r.error_code = to_proto(code);
                    r.error_message = message;
                }
            }
            results.push(r);
        }
        Ok(v1::ListOffsetsResponse { results })
    }

    async fn list_offset(
        &self,
        p: &v1::ListOffsetsPartition,
    ) -> Result<(i64, Arc<Partition>), PartitionError> {
        let partition = self.replicas.led_partition(&p.topic, p.partition)?;
        let spec = v1::OffsetSpec::try_from(p.spec).unwrap_or(v1::OffsetSpec::Unspecified);
        let offset = match spec {
            v1::OffsetSpec::Unspecified => {
                return Err(PartitionError::new(
                    ErrorCode::InvalidRequest,
                    format!(
                        "offset spec {} is not EARLIEST, LATEST or TIMESTAMP",
                        p.spec
                    ),
                ));
            }
            v1::OffsetSpec::Earliest => partition.log.log_start_offset().0 as i64,
            v1::OffsetSpec::Latest => partition.log.high_watermark().0 as i64,
            v1::OffsetSpec::Timestamp => {
                if p.timestamp_ms < 0 {
                    return Err(PartitionError::new(
                        ErrorCode::InvalidTimestamp,
                        format!("timestamp {} is negative", p.timestamp_ms),
                    ));
                }
                let ts = TimestampMs(p.timestamp_ms);
                let part = partition.clone();
                let found = blocking(move || part.log.offset_for_timestamp(ts))
                    .await
                    .map_err(PartitionError::from)?;
                // Consumers see nothing at or above the high watermark.
                match found {
                    Some(o) if o < partition.log.high_watermark() => o.0 as i64,
                    _ => -1,
                }
            }
        };
        Ok((offset, partition))
    }

    /// OffsetForLeaderEpoch: where the asked epochs end in this leader's log.
    pub async fn offset_for_leader_epoch(
        &self,
        req: v1::OffsetForLeaderEpochRequest,
    ) -> Result<v1::OffsetForLeaderEpochResponse, tonic::Status> {
        check_partition_count(req.partitions.len())?;
        let _permit = self.permit(self.requests()).await?;
        Ok(v1::OffsetForLeaderEpochResponse {
            results: self.replicas.offset_for_leader_epoch(req.partitions),
        })
    }
}

/// The follower behind a replica fetch.
#[derive(Clone, Copy, Debug)]
struct ReplicaFetch {
    id: BrokerId,
    /// Registered in the registry now: only then may the leader propose it for an ISR.
    isr_eligible: bool,
}

/// Reads every requested partition once. Returns the results; their
/// `FetchResponse.next_offsets` (one past a set's last message, from the log's read, which
/// walks the entries anyway; -1 for an empty set or a failed partition); the bytes read;
/// whether any partition failed (a failure answers the fetch at once, as Kafka does); and the
/// ISR changes that replica fetches proposed.
fn read_partitions(
    requests: &[v1::FetchPartition],
    resolved: &[Result<Arc<Partition>, PartitionError>],
    response_max: u32,
    replica: Option<ReplicaFetch>,
    now_ms: u64,
) -> (
    Vec<v1::FetchPartitionResult>,
    Vec<i64>,
    u64,
    bool,
    Vec<IsrProposal>,
) {
    let mut budget = response_max;
    let mut total = 0u64;
    let mut failed = false;
    let mut proposals = Vec::new();
    let mut results = Vec::with_capacity(requests.len());
    let mut next_offsets = Vec::with_capacity(requests.len());
    for (req, part) in requests.iter().zip(resolved) {
        let mut r = v1::FetchPartitionResult {
            topic: req.topic.clone(),
            partition: req.partition,
            error_code: 0,
            error_message: String::new(),
            high_watermark: -1,
            log_start_offset: -1,
            log_end_offset: -1,
            message_set: Default::default(),
            leader_epochs: Vec::new(),
        };
        let outcome = part.clone().and_then(|p| {
            if p.is_deleted() {
                return Err(PartitionError::unknown(&req.topic, req.partition));
            }
            match replica {
                None => {
                    if !p.is_leader() {
                        return Err(p.not_leader());
                    }
                    p.check_epoch(req.leader_epoch)?;
                }
                Some(_) => p.check_replica_fetch(req.leader_epoch)?,
            }
            if req.fetch_offset < 0 {
                return Err(PartitionError::new(
                    ErrorCode::OffsetOutOfRange,
                    format!(
                        "offset {} is out of range: the log holds [{}, {})",
                        req.fetch_offset,
                        p.log.log_start_offset(),
                        p.log.log_end_offset()
                    ),
                ));
            }
            let want = if req.max_bytes == 0 {
                FETCH_PARTITION_BYTES_DEFAULT
            } else {
                req.max_bytes.min(FETCH_BYTES_MAX)
            };
            let max = want.min(budget);
            // Consumers read below the high watermark; followers up to the log end.
            let upper = match replica {
                None => p.log.high_watermark(),
                Some(_) => p.log.log_end_offset(),
            };
            let read = if max == 0 && total > 0 {
                // The response is full: report positions only.
                None
            } else {
                Some(
                    p.log
                        .read(Offset(req.fetch_offset as u64), max.max(1), upper)
                        .map_err(PartitionError::from)?,
                )
            };
            let (mut hw, start, end, bytes, last) = match read {
                None => (
                    p.log.high_watermark(),
                    p.log.log_start_offset(),
                    p.log.log_end_offset(),
                    Vec::new(),
                    None,
                ),
                Some(read) => {
                    // The log returns at least one whole entry even above `max` (KIP-74). Only
                    // the first partition with data may overshoot that way, so the response
                    // stays bounded.
                    let (bytes, last) = if total > 0 && read.bytes.len() > max as usize {
                        (Vec::new(), None)
                    } else {
                        (read.bytes, read.last_offset)
                    };
                    (
                        read.high_watermark,
                        read.log_start_offset,
                        read.log_end_offset,
                        bytes,
                        last,
                    )
                }
            };
            let mut epochs = Vec::new();
            if let Some(follower) = replica {
                let fetched = p.on_replica_fetch(
                    follower.id,
                    Offset(req.fetch_offset as u64),
                    end,
                    now_ms,
                    follower.isr_eligible,
                )?;
                if let Some(proposal) = fetched {
                    proposals.push(proposal);
                }
                hw = p.log.high_watermark();
                epochs = p.epochs_covering(Offset(req.fetch_offset as u64), end);
            }
            Ok((hw, start, end, bytes, last, epochs, p))
        });
        match outcome {
            Ok((hw, start, end, bytes, last, epochs, p)) => {
                next_offsets.push(last.map_or(-1, |l| l.0 as i64 + 1));
                r.high_watermark = hw.0 as i64;
                r.log_start_offset = start.0 as i64;
                r.log_end_offset = end.0 as i64;
                let n = bytes.len() as u64;
                let counter = if replica.is_some() {
                    &p.replicated_bytes
                } else {
                    &p.fetched_bytes
                };
                counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                total += n;
                budget = budget.saturating_sub(u32::try_from(n).unwrap_or(u32::MAX));
                r.message_set = bytes.into();
                r.leader_epochs = epochs;
            }
            Err(PartitionError { code, message }) => {
                next_offsets.push(-1);
                failed = true;
                r.error_code = to_proto(code);
                r.error_message = message;
                // A follower needs the leader's range to recover from OFFSET_OUT_OF_RANGE.
                if replica.is_some()
                    && let Ok(p) = part
                {
                    r.log_start_offset = p.log.log_start_offset().0 as i64;
                    r.log_end_offset = p.log.log_end_offset().0 as i64;
                    r.high_watermark = p.log.high_watermark().0 as i64;
                }
            }
        }
        results.push(r);
    }
    (results, next_offsets, total, failed, proposals)
}

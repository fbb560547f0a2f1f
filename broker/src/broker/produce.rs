//! Produce: validation, the leader append on the blocking pool, and the acks (module docs of
//! [`crate::broker`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluiceway_core::format::TimestampType;
use sluiceway_core::limits::{
    ACKS_ALL_TIMEOUT_MS_DEFAULT, MESSAGE_SET_BYTES_MAX, PRODUCE_TIMEOUT_MS_MAX,
};
use sluiceway_core::{Error, ErrorCode};
use sluiceway_proto::v1;
use tracing::{debug, warn};

use super::{Broker, check_duplicates, check_partition_count};
use crate::errors::{PartitionError, status, to_proto};
use crate::replication::Partition;
use crate::topics::is_internal_topic;

impl Broker {
    pub async fn produce(
        &self,
        req: v1::ProduceRequest,
    ) -> Result<v1::ProduceResponse, tonic::Status> {
        let session = req.session;
        let timeout_ms = if req.timeout_ms == 0 {
            ACKS_ALL_TIMEOUT_MS_DEFAULT
        } else {
            u64::from(req.timeout_ms)
        };
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        let checked = match check_request(&req) {
            Ok(()) => self.permit(&self.requests).await,
            Err(e) => Err(e),
        };
        let permit = match checked {
            Ok(p) => p,
            Err(e) => {
                // Requests the producer pipelined behind this one must not be appended first.
                for p in &req.partitions {
                    self.abandon_turn(session, p);
                }
                return Err(e);
            }
        };
        let acks = req.acks;
        let mut results = Vec::with_capacity(req.partitions.len());
        let mut pending = Vec::new();
        for (i, p) in req.partitions.into_iter().enumerate() {
            let mut result = v1::ProducePartitionResult {
                topic: p.topic.clone(),
                partition: p.partition,
                error_code: 0,
                error_message: String::new(),
                base_offset: -1,
                log_append_time_ms: -1,
                log_start_offset: -1,
                batch_base_offsets: Vec::new(),
            };
            match self.check_produce(&p, acks) {
                Err(PartitionError { code, message }) => {
                    self.abandon_turn(session, &p);
                    result.error_code = to_proto(code);
                    result.error_message = message;
                }
                Ok(partition) => {
                    // A pipelining producer's earlier requests to the partition go first.
                    let turn = partition
                        .produce_order
                        .turn(session, p.order_sequence, p.order_since, deadline, || {
                            partition.name()
                        })
                        .await;
                    match turn {
                        Err(PartitionError { code, message }) => {
                            result.error_code = to_proto(code);
                            result.error_message = message;
                        }
                        Ok(turn) => {
                            // The one copy of a produced set: the log rewrites its offset
                            // fields in place.
                            let mut set = Vec::from(p.message_set);
                            let handle = tokio::task::spawn_blocking(move || {
                                let r = partition.leader_append(&mut set, acks);
                                turn.end(r.is_ok());
                                (partition, r)
                            });
                            pending.push((i, handle));
                        }
                    }
                }
            }
            results.push(result);
        }
        if acks == 0 {
            // Answer now; the appends finish in the background, still holding the in-flight slot.
            tokio::spawn(async move {
                for (_, h) in pending {
                    if let Ok((p, Err(e))) = h.await {
                        warn!(topic = %p.topic, partition = p.partition, error = ?e, "acks=0 append failed");
                    }
                }
                drop(permit);
            });
            return Ok(v1::ProduceResponse { results });
        }
        let mut appended = Vec::new();
        for (i, h) in pending {
            let r = &mut results[i];
            match h.await {
                Ok((p, Ok((info, leadership)))) => {
                    r.base_offset = info.base_offset.0 as i64;
                    // Kafka's rule: the append time only when the topic stamps it
                    // (LogAppendTime); -1 for CreateTime topics, whose records keep the
                    // producer's timestamps.
                    if p.log.config().timestamp_type == TimestampType::LogAppendTime {
                        r.log_append_time_ms = info.log_append_time.0;
                    }
                    r.log_start_offset = p.log.log_start_offset().0 as i64;
                    r.batch_base_offsets =
                        info.batch_base_offsets.iter().map(|o| o.0 as i64).collect();
                    appended.push((i, p, info.last_offset, leadership));
                }
                Ok((p, Err(PartitionError { code, message }))) => {
                    debug!(topic = %p.topic, partition = p.partition, %message, "append refused");
                    r.error_code = to_proto(code);
                    r.error_message = message;
                }
                Err(e) => {
                    r.error_code = to_proto(ErrorCode::UnknownServerError);
                    r.error_message = format!("append task failed: {e}");
                }
            }
        }
        if acks == -1 {
            for (i, p, last, leadership) in appended {
                if let Err(PartitionError { code, message }) = p
                    .wait_for_replicas(
                        last,
                        leadership,
                        deadline,
                        timeout_ms,
                        self.shutdown_receiver(),
                    )
                    .await
                {
                    let r = &mut results[i];
                    r.error_code = to_proto(code);
                    r.error_message = message;
                    r.base_offset = -1;
                    r.log_append_time_ms = -1;
                    r.log_start_offset = -1;
                    r.batch_base_offsets.clear();
                }
            }
        }
        drop(permit);
        Ok(v1::ProduceResponse { results })
    }

    /// A request of `session` to `p` refused before its turn: the ones pipelined behind it
    /// are refused too rather than appended ahead of its resend (`produce_order`).
    fn abandon_turn(&self, session: u64, p: &v1::ProducePartition) {
        if session != 0
            && let Ok(partition) = self.replicas.led_partition(&p.topic, p.partition)
        {
            partition.produce_order.abandon(session, p.order_sequence);
        }
    }

    fn check_produce(
        &self,
        p: &v1::ProducePartition,
        acks: i32,
    ) -> Result<Arc<Partition>, PartitionError> {
        if is_internal_topic(&p.topic) {
            return Err(PartitionError::new(
                ErrorCode::InvalidTopic,
                format!(
                    "{} is an internal topic: clients cannot produce to it",
                    p.topic
                ),
            ));
        }
        let partition = self.replicas.led_partition(&p.topic, p.partition)?;
        partition.check_epoch(p.leader_epoch)?;
        if acks == -1 {
            partition.check_min_insync()?;
        }
        if p.message_set.len() > MESSAGE_SET_BYTES_MAX as usize {
            return Err(PartitionError::from(Error::RecordListTooLarge {
                size: p.message_set.len() as u64,
                max: u64::from(MESSAGE_SET_BYTES_MAX),
            }));
        }
        if p.message_set.is_empty() {
            return Err(PartitionError::new(
                ErrorCode::InvalidRequest,
                format!("empty message set for {}", partition.name()),
            ));
        }
        Ok(partition)
    }
}

/// The request-level checks: `acks`, partition count, timeout, each partition once.
fn check_request(req: &v1::ProduceRequest) -> Result<(), tonic::Status> {
    if !matches!(req.acks, -1..=1) {
        return Err(status(
            ErrorCode::InvalidRequiredAcks,
            format!("acks {} is not one of -1 (all), 0, 1", req.acks),
        ));
    }
    check_partition_count(req.partitions.len())?;
    if req.timeout_ms > PRODUCE_TIMEOUT_MS_MAX {
        return Err(status(
            ErrorCode::InvalidRequest,
            format!(
                "timeout_ms {} exceeds the limit of {PRODUCE_TIMEOUT_MS_MAX}",
                req.timeout_ms
            ),
        ));
    }
    check_duplicates(
        req.partitions
            .iter()
            .map(|p| (p.topic.as_str(), p.partition)),
    )
}

//! The order of one producer's pipelined Produce requests to a partition.
//!
//! A Kafka broker handles a connection's requests one at a time, so a producer with several
//! requests in flight to a partition has them appended in the order it sent them. Requests on
//! one gRPC connection are handled concurrently, so two sets sent in order could reach the
//! partition's log swapped. A producer that pipelines therefore names a `session` (random, per
//! producer) and numbers its requests per partition (`order_sequence`), telling the leader
//! which earlier ones were still unanswered when it sent each (`order_since`); see the
//! `ProducePartition` fields in `log.proto`. [`ProduceOrder::turn`] makes a request wait until
//! those earlier ones were handled here, and refuses it with OUT_OF_ORDER_SEQUENCE_NUMBER
//! (nothing appended; the producer sends it again, in order, as a Kafka producer retries a
//! batch refused behind a failed one) when one of them failed, so a retry can never put a set
//! behind one sent after it.
//!
//! State per session is one number and the lowest failed request, for at most
//! [`PRODUCE_ORDER_SESSIONS_MAX`] sessions per partition (the least recently used one is
//! forgotten; its next request is then taken as it comes). A session unknown here (new, or
//! forgotten, or a new leader) starts at `order_since`: nothing before it is waited for.
//! Waiting is bounded by the request's deadline, and a turn whose request is dropped counts as
//! failed, so no request waits on one that will never come for longer than that.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use sluiceway_core::ErrorCode;
use sluiceway_core::limits::PRODUCE_ORDER_SESSIONS_MAX;
use tokio::sync::Notify;

use crate::errors::PartitionError;

/// One session's progress on a partition.
#[derive(Debug)]
struct Session {
    /// Every request numbered below this was handled here (or was not waited for).
    next: u64,
    /// The lowest request of the session that failed here, while later ones may still come.
    failed: Option<u64>,
    /// For forgetting the least recently used session.
    used: u64,
}

/// The sessions of one partition (module docs).
#[derive(Debug, Default)]
pub struct ProduceOrder {
    state: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The sessions, and a clock counting turns (for least recently used).
    sessions: Mutex<(HashMap<u64, Session>, u64)>,
    /// Woken whenever a turn ends.
    turned: Notify,
    /// Requests that waited for an earlier one, and requests refused (behind a failure, or
    /// their predecessors not handled in time): the broker's metrics.
    waited: AtomicU64,
    refused: AtomicU64,
}

/// A request's turn at the partition: end it with [`Turn::end`] once its append finished;
/// dropped without that, it counts as failed.
#[derive(Debug)]
pub struct Turn {
    /// `None`: no session, nothing to end.
    state: Option<Arc<State>>,
    session: u64,
    sequence: u64,
}

impl ProduceOrder {
    /// Waits until request `sequence` of `session` may be appended (`since`: the lowest
    /// request unanswered when it was sent). Session 0 (no ordering) goes at once. Fails with
    /// OUT_OF_ORDER_SEQUENCE_NUMBER when one of the earlier requests failed here, or when they
    /// were not all handled by `deadline`.
    pub async fn turn(
        &self,
        session: u64,
        sequence: u64,
        since: u64,
        deadline: Instant,
        name: impl Fn() -> String,
    ) -> Result<Turn, PartitionError> {
        if session == 0 {
            return Ok(Turn {
                state: None,
                session,
                sequence,
            });
        }
        if since > sequence {
            return Err(PartitionError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "order_since {since} is above order_sequence {sequence} for {}: it \
                     names the lowest request still unanswered, this one included",
                    name()
                ),
            ));
        }
        let mut waited = false;
        loop {
            // Registered before looking, so a turn ending in between still wakes this one.
            let turned = self.state.turned.notified();
            tokio::pin!(turned);
            turned.as_mut().enable();
            {
                let mut guard = self.state.sessions.lock();
                let (sessions, clock) = &mut *guard;
                *clock += 1;
                let used = *clock;
                if !sessions.contains_key(&session) && sessions.len() >= PRODUCE_ORDER_SESSIONS_MAX
                {
                    let oldest = sessions
                        .iter()
                        .min_by_key(|(_, s)| s.used)
                        .map(|(id, _)| *id);
                    if let Some(id) = oldest {
                        sessions.remove(&id);
                    }
                }
                let s = sessions.entry(session).or_insert(Session {
                    next: since,
                    failed: None,
                    used,
                });
                s.used = used;
                // The requests below `since` were answered: none is waited for any more.
                s.next = s.next.max(since);
                if let Some(f) = s.failed {
                    if since > f {
                        s.failed = None;
                    } else if sequence > f {
                        self.state.refused.fetch_add(1, Ordering::Relaxed);
                        return Err(PartitionError::new(
                            ErrorCode::OutOfOrderSequenceNumber,
                            format!(
                                "not appended to {}: an earlier request of this producer to \
                                 it failed, so this one would land out of order (the producer \
                                 sends both again, in order)",
                                name()
                            ),
                        ));
                    }
                }
                if sequence <= s.next {
                    return Ok(Turn {
                        state: Some(self.state.clone()),
                        session,
                        sequence,
                    });
                }
            }
            if !waited {
                waited = true;
                self.state.waited.fetch_add(1, Ordering::Relaxed);
            }
            if tokio::time::timeout_at(deadline.into(), turned)
                .await
                .is_err()
            {
                self.state.refused.fetch_add(1, Ordering::Relaxed);
                return Err(PartitionError::new(
                    ErrorCode::OutOfOrderSequenceNumber,
                    format!(
                        "not appended to {}: this producer's earlier requests to it were not \
                         handled before the request's timeout",
                        name()
                    ),
                ));
            }
        }
    }

    /// How many requests waited for an earlier one of their session, and how many were
    /// refused (behind a failed one, or their predecessors not handled before the deadline).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.state.waited.load(Ordering::Relaxed),
            self.state.refused.load(Ordering::Relaxed),
        )
    }

    /// Request `sequence` of `session` will not be appended (refused before its turn): the
    /// requests sent after it while it was unanswered are refused as well.
    pub fn abandon(&self, session: u64, sequence: u64) {
        if session != 0 {
            self.state.end(session, sequence, false);
        }
    }
}

impl State {
    fn end(&self, session: u64, sequence: u64, appended: bool) {
        {
            let mut guard = self.sessions.lock();
            let (sessions, clock) = &mut *guard;
            let s = sessions.entry(session).or_insert(Session {
                next: 0,
                failed: None,
                used: *clock,
            });
            s.next = s.next.max(sequence.saturating_add(1));
            if !appended {
                s.failed = Some(s.failed.map_or(sequence, |f| f.min(sequence)));
            }
        }
        self.turned.notify_waiters();
    }
}

impl Turn {
    /// The request's append finished (`appended`: it succeeded); later requests may go.
    pub fn end(mut self, appended: bool) {
        if let Some(state) = self.state.take() {
            state.end(self.session, self.sequence, appended);
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            state.end(self.session, self.sequence, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn soon(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    #[tokio::test]
    async fn a_request_waits_for_the_earlier_ones_of_its_session_only() {
        let order = Arc::new(ProduceOrder::default());
        // Request 1 arrives first and waits for request 0.
        let o = order.clone();
        let second = tokio::spawn(async move {
            let t = o.turn(7, 1, 0, soon(5_000), || "t-0".into()).await.unwrap();
            t.end(true);
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!second.is_finished(), "request 1 went before request 0");
        // Another session, and session 0, are not held up.
        order
            .turn(8, 3, 3, soon(100), || "t-0".into())
            .await
            .unwrap()
            .end(true);
        order
            .turn(0, 9, 0, soon(100), || "t-0".into())
            .await
            .unwrap()
            .end(true);
        assert!(!second.is_finished());
        order
            .turn(7, 0, 0, soon(100), || "t-0".into())
            .await
            .unwrap()
            .end(true);
        second.await.unwrap();
        assert_eq!(order.counts(), (1, 0), "one request waited");
        // A request whose predecessors were all answered (`since` = itself) goes at once.
        order
            .turn(7, 5, 5, soon(100), || "t-0".into())
            .await
            .unwrap()
            .end(true);
    }

    #[tokio::test]
    async fn a_failed_request_refuses_the_later_ones_sent_before_it_was_answered() {
        let order = ProduceOrder::default();
        order
            .turn(1, 0, 0, soon(100), || "t-0".into())
            .await
            .unwrap()
            .end(false);
        let e = order
            .turn(1, 1, 0, soon(100), || "t-0".into())
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::OutOfOrderSequenceNumber, "{}", e.message);
        assert!(e.message.contains("earlier request"), "{}", e.message);
        // A turn dropped without ending counts as failed too.
        drop(
            order
                .turn(1, 2, 2, soon(100), || "t-0".into())
                .await
                .unwrap(),
        );
        assert!(
            order
                .turn(1, 3, 2, soon(100), || "t-0".into())
                .await
                .is_err()
        );
        // The resend, sent once everything before it was answered, goes.
        order
            .turn(1, 4, 4, soon(100), || "t-0".into())
            .await
            .unwrap()
            .end(true);
        order
            .turn(1, 5, 4, soon(100), || "t-0".into())
            .await
            .unwrap()
            .end(true);
    }

    #[tokio::test]
    async fn a_missing_request_is_waited_for_until_the_deadline_only() {
        let order = ProduceOrder::default();
        let e = order
            .turn(1, 2, 1, soon(50), || "t-0".into())
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::OutOfOrderSequenceNumber);
        assert!(e.message.contains("timeout"), "{}", e.message);
        let e = order
            .turn(1, 2, 3, soon(50), || "t-0".into())
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
    }

    #[tokio::test]
    async fn sessions_beyond_the_limit_forget_the_least_recently_used() {
        let order = ProduceOrder::default();
        for session in 1..=PRODUCE_ORDER_SESSIONS_MAX as u64 + 1 {
            order
                .turn(session, 0, 0, soon(100), || "t-0".into())
                .await
                .unwrap()
                .end(session != 1);
        }
        assert_eq!(
            order.state.sessions.lock().0.len(),
            PRODUCE_ORDER_SESSIONS_MAX
        );
        // Session 1's failure was forgotten with it: its request 1 is not refused for it, but
        // waits for request 0 (which this leader no longer knows it handled)...
        let e = order
            .turn(1, 1, 0, soon(50), || "t-0".into())
            .await
            .unwrap_err();
        assert!(e.message.contains("timeout"), "{}", e.message);
        // ... and goes once the producer says request 0 was answered.
        order
            .turn(1, 2, 1, soon(100), || "t-0".into())
            .await
            .unwrap_err();
        order
            .turn(1, 3, 3, soon(100), || "t-0".into())
            .await
            .unwrap()
            .end(true);
    }
}

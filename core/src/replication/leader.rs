//! The leader's view of one partition: each follower's log end offset and lastCaughtUpTime, the
//! in-sync replica set (ISR) and the high watermark (HW). Kafka's `Partition` leader logic,
//! without the log, the clock or the controller: times come in as arguments (ms, monotonic) and
//! ISR changes go out as proposals the broker writes to the registry.
//!
//! Rules (Kafka's, with the KIP numbers that introduced them):
//! - **High watermark** = the minimum log end offset over the *maximal* ISR — the committed ISR
//!   together with the members of a pending proposal (KIP-497's `maximalIsr`) — and the leader's
//!   own log end. Counting a pending expansion's new member before the registry confirms it
//!   means the HW never advances past data that member lacks, so once the expansion commits the
//!   ISR really does hold everything below the HW; a pending shrink still counts the member being
//!   removed until the registry confirms, because until then a new leader may be chosen from it.
//! - An ISR follower whose end offset is **unknown** (it has not fetched since this leader state
//!   began) **holds the HW** where it is: the HW starts at the value the caller passes in and
//!   cannot move until every ISR follower has fetched once.
//! - The HW **never goes backwards** (a smaller minimum is ignored).
//! - **lastCaughtUpTime**: a fetch at or past the leader's current log end makes the follower
//!   caught up *now*; a fetch at or past the leader's log end *at its previous fetch* makes it
//!   caught up *as of that previous fetch*. A follower whose log end equals the leader's is never
//!   out of sync. Followers in the ISR when this state is created count as caught up at creation.
//! - **Shrink**: an ISR follower not caught up for more than `replica_lag_time_max_ms` is
//!   proposed out. **Expand**: a non-ISR follower whose fetch offset is `>=` the HW and `>=`
//!   the leader's epoch start offset (so it holds this leader's whole history up to the HW) is
//!   proposed in — provided it is **eligible** (KIP-841): the registry has it registered, with a
//!   live session. A fenced broker that catches up is not proposed; its next fetch after it
//!   registers again is. (Proposing it anyway made the ISR flap: the controller removed it at
//!   once, bumping the leader epoch on every round.)
//! - At most one proposal is pending; none is made while one is. The leader never proposes an
//!   ISR without itself. Proposals list their members in assignment (`replicas`) order.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::registry::BrokerId;
use crate::types::Offset;

/// Replication settings, named as Kafka's broker configs.
#[derive(Clone, Copy, Debug)]
pub struct ReplicationConfig {
    /// Kafka's `replica.lag.time.max.ms`: how long an ISR follower may go without being caught
    /// up before it is proposed out of the ISR.
    pub replica_lag_time_max_ms: u64,
}

impl ReplicationConfig {
    /// Kafka's default `replica.lag.time.max.ms`.
    pub const REPLICA_LAG_TIME_MAX_MS_DEFAULT: u64 = 30_000;
}

impl Default for ReplicationConfig {
    fn default() -> ReplicationConfig {
        ReplicationConfig {
            replica_lag_time_max_ms: ReplicationConfig::REPLICA_LAG_TIME_MAX_MS_DEFAULT,
        }
    }
}

/// What a follower fetch changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchOutcome {
    /// `Some(new)` when the high watermark moved.
    pub high_watermark: Option<Offset>,
    /// An ISR expansion to write to the registry (then report with
    /// [`LeaderState::isr_committed`] or [`LeaderState::isr_proposal_failed`]).
    pub propose_isr: Option<Vec<BrokerId>>,
}

/// What the leader knows about one follower.
#[derive(Clone, Copy, Debug)]
struct Follower {
    /// Its log end offset as of its last fetch; `None` until it fetches.
    end: Option<Offset>,
    /// The last time it was caught up (Kafka's lastCaughtUpTimeMs).
    last_caught_up_ms: u64,
    /// The leader's log end and the time at its previous fetch, for the lastCaughtUpTime rule.
    last_fetch: Option<(Offset, u64)>,
}

/// The leader's view of one partition. See the module docs for the rules.
#[derive(Debug)]
pub struct LeaderState {
    me: BrokerId,
    leader_epoch: u32,
    replicas: Vec<BrokerId>,
    /// The ISR as the registry holds it.
    isr: Vec<BrokerId>,
    /// Our proposal being written to the registry, if any.
    pending_isr: Option<Vec<BrokerId>>,
    log_end: Offset,
    high_watermark: Offset,
    epoch_start_offset: Offset,
    config: ReplicationConfig,
    followers: BTreeMap<BrokerId, Follower>,
}

impl LeaderState {
    /// `isr` as the registry has it (it must contain `me`); follower end offsets start unknown,
    /// so the HW does not move past `high_watermark` until every ISR follower has fetched once.
    /// `epoch_start_offset` is the leader's log end when it became leader at `leader_epoch`.
    #[allow(clippy::too_many_arguments)] // The contract's shape: one call per leadership change.
    pub fn new(
        me: BrokerId,
        leader_epoch: u32,
        replicas: &[BrokerId],
        isr: &[BrokerId],
        log_end: Offset,
        high_watermark: Offset,
        epoch_start_offset: Offset,
        config: ReplicationConfig,
        now_ms: u64,
    ) -> LeaderState {
        debug_assert!(isr.contains(&me), "ISR {isr:?} lacks the leader {me}");
        debug_assert!(
            high_watermark <= log_end,
            "HW {high_watermark} > log end {log_end}"
        );
        debug_assert!(epoch_start_offset <= log_end);
        let followers = replicas
            .iter()
            .filter(|r| **r != me)
            .map(|r| {
                let follower = Follower {
                    end: None,
                    // Kafka: an ISR member gets the benefit of the doubt for one lag time.
                    last_caught_up_ms: if isr.contains(r) { now_ms } else { 0 },
                    last_fetch: None,
                };
                (*r, follower)
            })
            .collect();
        LeaderState {
            me,
            leader_epoch,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            pending_isr: None,
            log_end,
            high_watermark,
            epoch_start_offset,
            config,
            followers,
        }
    }

    pub fn leader_epoch(&self) -> u32 {
        self.leader_epoch
    }

    /// The committed ISR (as the registry holds it).
    pub fn isr(&self) -> &[BrokerId] {
        &self.isr
    }

    /// Our ISR proposal in flight, if any.
    pub fn pending_isr(&self) -> Option<&[BrokerId]> {
        self.pending_isr.as_deref()
    }

    pub fn high_watermark(&self) -> Offset {
        self.high_watermark
    }

    /// The leader's log end offset as last reported.
    pub fn log_end(&self) -> Offset {
        self.log_end
    }

    /// `replica`'s log end offset as of its last fetch; `None` before its first fetch (and for
    /// the leader itself or a non-replica).
    pub fn follower_end_offset(&self, r: BrokerId) -> Option<Offset> {
        self.followers.get(&r).and_then(|f| f.end)
    }

    /// The leader appended; its log end is now `log_end`. `Some(new HW)` when the HW moved (which
    /// happens when the ISR is the leader alone).
    pub fn on_append(&mut self, log_end: Offset) -> Option<Offset> {
        self.set_log_end(log_end);
        self.maybe_advance_high_watermark()
    }

    /// Follower `replica` fetched from `fetch_offset`, its log end (everything below is on its
    /// disk); the leader's log end at the time is `leader_log_end`. Updates its lastCaughtUpTime
    /// (module docs), may move the HW, and proposes an expansion when a non-ISR follower qualifies,
    /// is `isr_eligible` (registered in the registry now) and no proposal is pending.
    ///
    /// Errors ([`Error::InvalidRequest`]): `replica` is not a replica of the partition or is the
    /// leader; `fetch_offset` is past `leader_log_end` (the broker's read already refuses that
    /// with OFFSET_OUT_OF_RANGE; this is a backstop, and nothing changes).
    pub fn on_follower_fetch(
        &mut self,
        replica: BrokerId,
        fetch_offset: Offset,
        leader_log_end: Offset,
        now_ms: u64,
        isr_eligible: bool,
    ) -> Result<FetchOutcome> {
        if replica == self.me {
            return Err(Error::InvalidRequest(format!(
                "replica fetch from broker {replica}, which is this partition's leader"
            )));
        }
        if !self.followers.contains_key(&replica) {
            return Err(Error::InvalidRequest(format!(
                "broker {replica} is not a replica of this partition (replicas {:?})",
                self.replicas
            )));
        }
        if fetch_offset > leader_log_end {
            return Err(Error::InvalidRequest(format!(
                "replica {replica} fetched from {fetch_offset}, past the leader's log end {leader_log_end}"
            )));
        }
        let follower = self
            .followers
            .get_mut(&replica)
            .expect("checked above: a follower of this partition");

        // Kafka's lastCaughtUpTime rule (Replica.updateFetchState).
        if fetch_offset >= leader_log_end {
            follower.last_caught_up_ms = follower.last_caught_up_ms.max(now_ms);
        } else if let Some((prev_leader_end, prev_fetch_ms)) = follower.last_fetch
            && fetch_offset >= prev_leader_end
        {
            follower.last_caught_up_ms = follower.last_caught_up_ms.max(prev_fetch_ms);
        }
        follower.last_fetch = Some((leader_log_end, now_ms));
        follower.end = Some(fetch_offset);

        self.set_log_end(leader_log_end);
        let high_watermark = self.maybe_advance_high_watermark();
        let propose_isr = if isr_eligible {
            self.maybe_expand_isr(replica, fetch_offset)
        } else {
            None
        };
        Ok(FetchOutcome {
            high_watermark,
            propose_isr,
        })
    }

    /// The ISR followers not caught up within the lag time, as `Some(smaller ISR)` to write to
    /// the registry. Never proposes an ISR without the leader; `None` while a proposal is pending.
    pub fn maybe_shrink_isr(&mut self, now_ms: u64) -> Option<Vec<BrokerId>> {
        if self.pending_isr.is_some() {
            return None;
        }
        let lag_max_ms = self.config.replica_lag_time_max_ms;
        let out_of_sync = |r: &BrokerId| {
            self.followers.get(r).is_some_and(|f| {
                f.end != Some(self.log_end)
                    && now_ms.saturating_sub(f.last_caught_up_ms) > lag_max_ms
            })
        };
        if !self.isr.iter().any(out_of_sync) {
            return None;
        }
        let proposal: Vec<BrokerId> = self
            .in_assignment_order(|r| r == self.me || (self.isr.contains(&r) && !out_of_sync(&r)));
        self.pending_isr = Some(proposal.clone());
        Some(proposal)
    }

    /// The registry now holds `isr` (our proposal succeeded, or the broker re-read it). Clears
    /// the pending proposal. `Some(new HW)` when the HW moved.
    pub fn isr_committed(&mut self, isr: &[BrokerId]) -> Option<Offset> {
        debug_assert!(isr.contains(&self.me), "ISR {isr:?} lacks the leader");
        self.isr = isr.to_vec();
        self.pending_isr = None;
        self.maybe_advance_high_watermark()
    }

    /// The proposal failed (fenced, or the registry was unreachable): a new one may be made
    /// later. The HW is not recomputed here; the next append or fetch does it.
    pub fn isr_proposal_failed(&mut self) {
        self.pending_isr = None;
    }

    fn set_log_end(&mut self, log_end: Offset) {
        // A leader's log only grows: it truncates only on becoming a follower.
        debug_assert!(
            log_end >= self.log_end,
            "leader log end went from {} to {log_end}",
            self.log_end
        );
        self.log_end = self.log_end.max(log_end);
    }

    /// Recomputes the HW over the maximal ISR; `Some(new)` when it advanced.
    fn maybe_advance_high_watermark(&mut self) -> Option<Offset> {
        let maximal = self
            .isr
            .iter()
            .chain(self.pending_isr.iter().flatten())
            .filter(|r| **r != self.me);
        let mut candidate = self.log_end;
        for r in maximal {
            // A member we know nothing about (unknown end, or not even a replica) holds the HW.
            match self.followers.get(r).and_then(|f| f.end) {
                Some(end) => candidate = candidate.min(end),
                None => return None,
            }
        }
        if candidate > self.high_watermark {
            self.high_watermark = candidate;
            debug_assert!(self.high_watermark <= self.log_end);
            Some(candidate)
        } else {
            None
        }
    }

    /// Proposes adding `replica` when it is out of the ISR, no proposal is pending, and its log
    /// holds everything up to the HW and this epoch's start (Kafka's `isFollowerInSync`).
    fn maybe_expand_isr(
        &mut self,
        replica: BrokerId,
        fetch_offset: Offset,
    ) -> Option<Vec<BrokerId>> {
        if self.pending_isr.is_some()
            || self.isr.contains(&replica)
            || fetch_offset < self.high_watermark
            || fetch_offset < self.epoch_start_offset
        {
            return None;
        }
        let proposal = self.in_assignment_order(|r| r == replica || self.isr.contains(&r));
        self.pending_isr = Some(proposal.clone());
        Some(proposal)
    }

    /// The replicas satisfying `keep`, in assignment order (the leader first if kept and not
    /// listed, which a well-formed assignment never needs).
    fn in_assignment_order(&self, keep: impl Fn(BrokerId) -> bool) -> Vec<BrokerId> {
        let mut out: Vec<BrokerId> = Vec::with_capacity(self.replicas.len());
        if !self.replicas.contains(&self.me) && keep(self.me) {
            out.push(self.me);
        }
        out.extend(self.replicas.iter().copied().filter(|r| keep(*r)));
        out
    }
}

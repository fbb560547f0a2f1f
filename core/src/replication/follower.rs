//! Follower log truncation by leader epoch (KIP-101, made iterative by KIP-279).
//!
//! On becoming a follower, a replica must cut its log back to the last offset it shares with the
//! new leader before fetching; truncating to its high watermark (the pre-KIP-101 rule) can both
//! lose committed data and leave divergent data in place. The follower asks the leader
//! (OffsetsForLeaderEpoch) where the follower's latest epoch ends in the leader's log; the leader
//! answers with the largest epoch it has that is `<=` the asked one and that epoch's end offset
//! ([`super::LeaderEpochCache::end_offset_for`]). [`truncation_step`] turns one answer into one
//! truncation; the broker repeats while it says [`TruncationStep::AskAgain`]:
//!
//! ```text
//! loop {
//!     let requested = cache.latest()?.epoch;        // empty cache: no question, fetch from the log end
//!     let answer = leader.offset_for_leader_epoch(requested);
//!     let step = truncation_step(&cache, log.end(), log.high_watermark(), requested, answer);
//!     log.truncate_to(step.truncate_to()); cache.truncate_from_end(step.truncate_to());
//!     if let TruncationStep::Done { .. } = step { break }   // fetch from the new log end
//! }
//! ```
//!
//! Each `AskAgain` leaves the follower's latest epoch strictly smaller than the one it asked
//! about, so the loop ends. Invariant: a step never truncates above the local log end.

use crate::types::Offset;

use super::epoch_cache::{EpochEntry, LeaderEpochCache};

/// What to do with one OffsetsForLeaderEpoch answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TruncationStep {
    /// Truncate the log (and the epoch cache) to `truncate_to`, then fetch from there.
    Done { truncate_to: Offset },
    /// Truncate to `truncate_to`, then ask again with our (new) latest epoch.
    AskAgain { truncate_to: Offset },
}

impl TruncationStep {
    /// The offset to truncate the log and the epoch cache to, whichever the step.
    pub fn truncate_to(self) -> Offset {
        match self {
            TruncationStep::Done { truncate_to } | TruncationStep::AskAgain { truncate_to } => {
                truncate_to
            }
        }
    }
}

/// One step of KIP-101/279 follower truncation.
///
/// The follower (epoch cache `local`, log end `local_log_end`, high watermark
/// `local_high_watermark`) asked the leader for the end offset of `requested`, its latest epoch.
/// `answer` is the leader's reply: the largest epoch `<= requested` the leader has, with that
/// epoch's **end** offset in `start_offset` (as [`LeaderEpochCache::end_offset_for`] returns it),
/// or `None` for UNDEFINED.
///
/// - `answer.epoch == requested`: both logs agree up to the end of that epoch in the shorter one:
///   `Done { min(answer end, local_log_end) }`.
/// - `answer.epoch < requested`: the leader never had our later epochs. Find our own end for
///   `answer.epoch` (the largest local epoch `<=` it): if it is exactly that epoch,
///   `Done { min(answer end, our end, local_log_end) }`; otherwise we lack the leader's epoch
///   too, so cut back to where our older epoch ends, `AskAgain { min(answer end, our end) }`.
///   When we have no epoch `<= answer.epoch` at all, everything from our first entry on was
///   written in epochs the leader does not have: `Done { min(answer end, our first entry's start,
///   local_log_end) }` (Kafka keeps up to `min(answer end, local_log_end)` here, trusting data of
///   untracked epochs; cutting at our first entry is the safe reading, and an empty local cache
///   never asks).
/// - `answer` is `None` (the leader has no epoch `<= requested`, e.g. its history starts later)
///   or names an epoch **newer** than `requested` (a broken reply): the legacy pre-KIP-101
///   fallback, `Done { min(local_high_watermark, local_log_end) }`.
///
/// An empty local cache is the caller's case, not this function's: it does not ask and fetches
/// from its log end (a replica that never recorded an epoch has nothing to compare).
pub fn truncation_step(
    local: &LeaderEpochCache,
    local_log_end: Offset,
    local_high_watermark: Offset,
    requested: u32,
    answer: Option<EpochEntry>,
) -> TruncationStep {
    let legacy = TruncationStep::Done {
        truncate_to: local_high_watermark.min(local_log_end),
    };
    let Some(answer) = answer else {
        return legacy;
    };
    let leader_end = answer.start_offset;
    if answer.epoch > requested {
        return legacy;
    }
    if answer.epoch == requested {
        return TruncationStep::Done {
            truncate_to: leader_end.min(local_log_end),
        };
    }
    match local.end_offset_for(answer.epoch, local_log_end) {
        Some(ours) if ours.epoch == answer.epoch => TruncationStep::Done {
            truncate_to: leader_end.min(ours.start_offset).min(local_log_end),
        },
        // `ours` is never past the local log end in a consistent cache; the extra `min` keeps
        // the "never above the log end" invariant even if it is not.
        Some(ours) => TruncationStep::AskAgain {
            truncate_to: leader_end.min(ours.start_offset).min(local_log_end),
        },
        None => {
            let first_start = local
                .entries()
                .first()
                .map_or(local_log_end, |e| e.start_offset);
            TruncationStep::Done {
                truncate_to: leader_end.min(first_start).min(local_log_end),
            }
        }
    }
}

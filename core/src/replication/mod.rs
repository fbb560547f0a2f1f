//! Replication, as sans-IO state machines: the caller (the broker) feeds events and times in and
//! performs what comes out. No clock, socket or thread inside; the only I/O is the leader-epoch
//! checkpoint file that [`LeaderEpochCache`] persists, because Kafka keeps it beside the log.
//!
//! - [`epoch_cache`] — [`LeaderEpochCache`], Kafka's `leader-epoch-checkpoint` (KIP-101): for
//!   each leader epoch, the first offset written in it. Answers OffsetsForLeaderEpoch
//!   ([`LeaderEpochCache::end_offset_for`]) and follows the log when it is truncated at either end.
//!   **Invariant:** epochs strictly increase and start offsets never decrease along the entries;
//!   the file always matches memory (a change that fails to persist is not applied).
//! - [`leader`] — [`LeaderState`], the leader's view of one partition: each follower's log end
//!   offset and lastCaughtUpTime, the in-sync replica set (committed, and at most one pending
//!   proposal), and the high watermark.
//!   **Invariants:** the HW is the minimum log end offset over the *maximal* ISR (committed ∪
//!   pending, KIP-497) together with the leader's own log end; an ISR follower whose end offset
//!   is still unknown holds the HW where it is; the HW never goes backwards; the leader is never
//!   proposed out of the ISR; at most one ISR proposal is in flight.
//!   A follower is caught up by Kafka's lastCaughtUpTime rule (see [`LeaderState::on_follower_fetch`])
//!   and is proposed out when it has not been caught up for `replica.lag.time.max.ms`.
//! - [`follower`] — [`truncation_step`], the follower's KIP-101 / KIP-279 log truncation on
//!   becoming a follower: one OffsetsForLeaderEpoch answer in, "truncate to X, then fetch" or
//!   "truncate to X, then ask again" out, repeated until the logs agree.
//!
//! What the broker does with these (an outline; the broker is authoritative):
//! 1. On becoming leader at epoch `e`: `cache.assign(e, log_end)`, then
//!    `LeaderState::new(…, epoch_start_offset = log_end, …)`.
//! 2. On each append: `on_append`; on each follower fetch (after the read succeeded):
//!    `on_follower_fetch`; periodically `maybe_shrink_isr`. Any `Some(isr)` is written to the
//!    registry with the leader epoch as a fence, and the result reported with `isr_committed` or
//!    `isr_proposal_failed`. Any `Some(hw)` goes to the partition log.
//! 3. On becoming a follower: ask the leader for the end of our latest epoch, apply
//!    `truncation_step` until it says `Done`, truncating the log and `cache.truncate_from_end` at
//!    each step, then fetch from the log end. Magic 0/1 entries carry no leader epoch, so the
//!    leader sends the epoch entries covering each fetched range and the follower `assign`s them.

pub mod epoch_cache;
pub mod follower;
pub mod leader;

pub use epoch_cache::{EPOCH_CHECKPOINT_FILE, EpochEntry, LeaderEpochCache};
pub use follower::{TruncationStep, truncation_step};
pub use leader::{FetchOutcome, LeaderState, ReplicationConfig};

//! Consumer groups: the coordinator that lives in the broker, as a sans-IO state machine.
//!
//! Features: [`TopicPartition`] and [`assignor`] are always compiled (the client uses both); the
//! coordinator and [`offsets`] are behind `server`.
//!
//! - [`Coordinator`] (`coordinator.rs`) — one group's membership, generations, heartbeats,
//!   session timeouts and rebalances. Events in ([`Coordinator::join`], [`Coordinator::heartbeat`],
//!   [`Coordinator::leave`], [`Coordinator::tick`]), [`Action`]s out. No clock, socket or file
//!   inside: the broker feeds it time and performs the actions, so tests drive it exactly.
//! - [`assignor`] — the range and round-robin partition assignors.
//! - [`offsets`] — committed group offsets in the internal `__consumer_offsets` topic.
//!
//! The protocol is Kafka's eager rebalance with the assignment computed by the coordinator
//! (Kafka lets the group leader compute it; Sluiceway's clients are all one core, so the broker
//! can do it and the client stays simple):
//! 1. A join, a leave, a member's missed session timeout or a change in a subscribed topic's
//!    partition count starts a rebalance: the generation's members learn it from their next
//!    heartbeat (`REBALANCE_IN_PROGRESS`), stop fetching, commit, and join again.
//! 2. The rebalance completes when every member of the old generation has rejoined, or when the
//!    rebalance timeout passes (members that did not rejoin are removed). The coordinator then
//!    bumps the generation, computes the assignment and answers every pending join with it.
//!    A rebalance that starts from an empty group first waits for more members (the initial
//!    rebalance delay, Kafka's `group.initial.rebalance.delay.ms`, extended by each newcomer and
//!    bounded by the rebalance timeout; see `coordinator.rs`).
//! 3. Offset commits carry the generation; a commit from an older generation is refused
//!    (`ILLEGAL_GENERATION`), which fences a member that was expelled but keeps running.
//!
//! **Invariant:** in a stable generation each partition of the subscribed topics is assigned to
//! exactly one member, and no member of the new generation receives its assignment before every
//! member of the previous generation has rejoined (and so given up its partitions) or been
//! removed.

pub mod assignor;
#[cfg(feature = "server")]
mod coordinator;
#[cfg(feature = "server")]
pub mod offsets;

pub use assignor::Assignor;
#[cfg(feature = "server")]
pub use coordinator::{
    Action, Coordinator, GroupConfig, GroupSnapshot, GroupState, JoinRequest, SnapshotMember,
};
#[cfg(feature = "server")]
pub use offsets::{GroupOffsetStore, LocalOffsetsLog, OFFSETS_TOPIC, OffsetCommit, OffsetsLog};

/// A member as `group describe` shows it (the coordinator describes, the admin client reads).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub client_id: String,
    pub topics: Vec<String>,
    pub assignment: Vec<TopicPartition>,
}

/// A partition of a topic. Shared by the coordinator and the client, so it lives here rather than
/// in `coordinator.rs` (which only the `server` feature compiles).

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: u32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: u32) -> TopicPartition {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

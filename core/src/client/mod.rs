//! The one native client core that every language binding wraps (Python, Node, Kotlin, Swift):
//! bindings convert types and errors only; batching, retries, partitioning, positions, defaults
//! and rebalance handling live here. Feature `client`.
//!
//! - `runtime` — the process's own client runtime: every task and async call runs there, so a
//!   client works from any thread and executor; blocking twins (`*_blocking`) for synchronous
//!   APIs; a client used in a forked child fails with CLOSED.
//! - [`config`] — Kafka-named configuration from a string map or typed builders, validated.
//! - `cluster` — tonic channels per broker, round-robin metadata with fail-over, the metadata
//!   cache (missing topics cached briefly); statuses become errors in [`crate::wire`].
//! - `accumulator` — per-partition batching, the [`DeliveryFuture`]s of `send` and the
//!   [`BatchDelivery`] of `send_batch`.
//! - [`Producer`] — partitioning (explicit, Kafka murmur2 of the key, sticky), one
//!   multi-partition Produce per broker, acks, retries, ordering, `flush`/`close` that report
//!   undelivered records.
//! - [`Consumer`] — assign, prefetching poll ([`Consumer::poll_batch`] with
//!   [`RebalanceEvent`]s), seeks, pause/resume, positions, commits.
//! - [`security`] — `security.protocol`, TLS (`ssl.*`) and credentials (`sasl.*`): the
//!   [`security::Connector`] every channel is made with.
//! - [`offset_store`] — the consumer's local offset store (atomic file per consumer id, locked).
//! - [`Consumer::subscribe`] — consumer groups (`consumer/group.rs`): join, heartbeats, eager
//!   rebalances with revoke-then-commit, commits to the broker's coordinator.
//! - [`Admin`] — topics, offsets, the cluster, groups (plain types).
//! - `bench` (feature `bench`) — the measurement loops of `sluiceway bench produce|consume`.
//!
//! **API boundary:** everything public here is what bindings expose; types are plain Rust
//! (`bytes::Bytes`, `Arc<str>`, [`crate::Offset`], structs with named fields), never prost or
//! tonic types. Every error is a [`crate::Error`] whose [`crate::Error::code`] is the stable
//! wire code and whose [`crate::Error::is_retriable`] is the client's own retry rule.

mod accumulator;
mod admin;
#[cfg(feature = "bench")]
pub mod bench;
mod cluster;
pub mod config;
mod consumer;
mod fetch_call;
pub mod offset_store;
mod produce_call;
mod producer;
mod runtime;
pub mod security;

pub use crate::format::{Compression, TimestampType};
pub use crate::group::{MemberDescription, TopicPartition};
pub use crate::types::Offset;
pub use crate::wire::{PartitionMetadata, TopicMetadata};
pub use accumulator::{BatchDelivery, DeliveryFuture, Failures, RecordMetadata};
pub use admin::{
    Admin, ClusterDescription, CommittedOffset, GroupDescription, GroupListing, GroupPartitionLag,
    GroupState, NewTopic, TopicDescription, TopicListing, UserListing,
};
pub use cluster::{BrokerInfo, ListedOffset, OffsetSpec};
pub use config::{
    Acks, AdminConfig, CommonConfig, ConsumerConfig, OffsetReset, ProducerConfig, SendSettings,
};
pub use consumer::{
    Consumer, ConsumerRecord, GroupMembership, PartitionOffset, PollBatch, PollColumns,
    RebalanceEvent, RecordColumns, RecordHeader,
};
pub use offset_store::OffsetStore;
pub use producer::{Producer, ProducerRecord};
pub use runtime::{SpawnedTask, set_interrupt_check, spawn};

// Language bindings share clients across threads and move futures between them: keep every
// public client type `Send + Sync` (checked at compile time).
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Producer>();
    send_sync::<Consumer>();
    send_sync::<Admin>();
    send_sync::<DeliveryFuture>();
    send_sync::<BatchDelivery>();
    send_sync::<RecordMetadata>();
    send_sync::<ConsumerRecord>();
};

//! Sluiceway's core: everything that is not a socket or a language binding.
//!
//! - [`format`](mod@format) — the on-disk and on-the-wire message format (magic 0/1 entries, compressed
//!   wrapper sets), encode, decode and validate. See `docs/FORMAT.md`.
//! - [`storage`] — the partition log: segments, sparse offset and time indexes, recovery,
//!   retention, flush policy with group commit.
//! - [`group`] — the consumer-group coordinator, a sans-IO state machine, and the assignors.
//! - [`limits`] — every bound in one place, with compile-time checks of how they relate.
//! - [`error`] — the internal [`Error`] and the stable wire [`ErrorCode`].
//! - [`registry`] — the [`registry::Registry`] trait (brokers, topic and partition metadata) and
//!   its embedded backend.
//! - [`topic`] — topic-name validation and topic configuration (Kafka's keys → `LogConfig`).
//! - [`partitioner`] — Kafka's murmur2 key partitioner and round-robin.
//! - [`client`] — the one native client (producer, standalone consumer, local offset store,
//!   admin) that every language binding wraps. The only module that uses tokio and tonic.
//! - [`atomic_file`] — temp + fsync + rename + fsync-dir replacement of small state files.
//! - [`types`] — newtypes for kinds of integers (`Offset`, `RelativeOffset`, `FilePosition`).
//! - [`wire`] — the one conversion point between the wire contract (prost, tonic) and core's
//!   types and errors, used by the broker and the client alike.

pub mod atomic_file;
pub mod client;
pub mod error;
pub mod format;
pub mod group;
pub mod limits;
pub mod partitioner;
pub mod registry;
pub mod replication;
pub mod storage;
pub mod topic;
pub mod types;
pub mod wire;

pub use error::{Error, ErrorCode, Result};
pub use types::{FilePosition, Offset, RelativeOffset, TimestampMs};

//! Sluiceway's core: everything that is not a socket or a language binding.
//!
//! Cargo features split it in two, so that a client links none of the broker's machinery
//! (contents, users and crate counts: `docs/ARCHITECTURE.md`, "Cargo features"):
//! - always: [`format`](mod@format), [`types`], [`limits`], [`error`], [`partitioner`],
//!   [`atomic_file`], [`file_io`], [`group::TopicPartition`] and [`group::assignor`],
//!   [`topic::validate_topic_name`] and the topic-config key names.
//! - `client`: the `client` module without `client::bench` (tokio, tonic's `channel`,
//!   `sluiceway-proto/client`). The broker and every language binding.
//! - `server`: `storage` (memmap2), `replication`, `registry` with the etcd backend, the group
//!   coordinator and `group::offsets`, `topic::TopicConfig` (→ `LogConfig`), and
//!   `sluiceway-proto/server`. The broker.
//! - `bench`: `client::bench` (hdrhistogram); implies `client`. The broker's `sluiceway bench`.
//!
//! `default` is `client` + `server`. Bindings take `default-features = false, features =
//! ["client"]`. `server` builds without `client` too: the broker side never calls the client.
//!
//! - [`format`](mod@format) — the on-disk and on-the-wire message format (magic 0/1 entries, compressed
//!   wrapper sets), encode, decode and validate. See `docs/FORMAT.md`.
//! - `storage` (`server`) — the partition log: segments, sparse offset and time indexes, recovery,
//!   retention, flush policy with group commit.
//! - `replication` (`server`) — leader and follower state, the leader-epoch cache.
//! - [`group`] — the consumer-group coordinator (`server`), a sans-IO state machine, and the
//!   assignors (always).
//! - [`limits`] — every bound in one place, with compile-time checks of how they relate.
//! - [`error`] — the internal [`Error`] and the stable wire [`ErrorCode`].
//! - `registry` (`server`) — the `Registry` trait (brokers, topic and partition metadata) and
//!   its embedded and etcd backends.
//! - [`topic`] — topic-name validation (always) and topic configuration (Kafka's keys →
//!   `LogConfig`, `server`).
//! - [`partitioner`] — the producer's partitioning: explicit, Kafka's murmur2 of the key, sticky.
//! - `client` (`client`) — the one native client (producer, standalone consumer, local offset
//!   store, admin) that every language binding wraps. With the registry (tokio) and `wire`
//!   (tonic's statuses), the only modules that use tokio and tonic.
//! - [`acl`] — Kafka's ACL model and the authorization decision (always: the admin client
//!   sends bindings).
//! - `scram` (`server`) — SCRAM-SHA-256 stored credentials (PBKDF2-HMAC-SHA-256).
//! - [`atomic_file`] — temp + fsync + rename + fsync-dir replacement of small state files.
//! - [`file_io`] — the file seam under storage and atomic files: the `FileSystem` trait, the
//!   real one, and (`server`) a fault-injecting one for tests.
//! - [`types`] — newtypes for kinds of integers (`Offset`, `RelativeOffset`, `FilePosition`).
//! - [`wire`] — the one conversion point between the wire contract (prost, tonic) and core's
//!   types and errors, used by the broker and the client alike.

pub mod acl;
pub mod atomic_file;
#[cfg(feature = "client")]
pub mod client;
pub mod error;
pub mod file_io;
pub mod format;
pub mod group;
pub mod limits;
pub mod partitioner;
#[cfg(feature = "server")]
pub mod registry;
#[cfg(feature = "server")]
pub mod replication;
#[cfg(feature = "server")]
pub mod scram;
#[cfg(feature = "server")]
pub mod storage;
pub mod topic;
pub mod types;
#[cfg(any(feature = "client", feature = "server"))]
pub mod wire;

pub use error::{Error, ErrorCode, Result};
pub use types::{FilePosition, Offset, RelativeOffset, TimestampMs};

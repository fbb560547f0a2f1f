//! The Sluiceway broker and the `sluiceway` command line, in one-way layers (each imports only
//! the ones listed after it; docs/ARCHITECTURE.md has the map and the invariants):
//!
//! - [`cli`] — the command line, one file per subcommand (`sluiceway broker` runs [`server`]).
//! - [`server`] — binding, bounded connections, housekeeping, graceful shutdown; the tonic
//!   services (Log, Admin, Registry, Group: thin wrappers over [`broker`]) and the metrics
//!   endpoint.
//! - [`security`] — TLS settings, request principals (mTLS / SASL), ACL checks, inter-broker
//!   connections.
//! - [`broker`] — the broker's state and request logic (produce, long-poll fetch, list offsets,
//!   topic administration, metadata, FindCoordinator) and the role pass that ties
//!   [`replication`] and [`groups`] together.
//! - [`groups`] — the consumer-group coordinators (core's sans-IO `Coordinator`, driven by a
//!   timer task), `__consumer_offsets`, and in a cluster its replication (`coordination`).
//! - [`replication`] — the hosted partitions (Kafka's `ReplicaManager`): logs, leader-epoch
//!   histories, roles from the registry, the leader's side (ISR, OffsetForLeaderEpoch) and the
//!   follower's fetchers.
//! - Leaves: [`config`] (flags + `SLUICEWAY_*` environment + TOML file → one validated
//!   `BrokerConfig`), [`metrics`] (counters and the Prometheus text format), [`errors`] (core
//!   errors ↔ gRPC statuses, `PartitionError`, `blocking`), [`topics`] (internal topic names).

pub mod broker;
pub mod cli;
pub mod config;
pub mod errors;
pub mod groups;
pub mod metrics;
pub mod replication;
pub mod security;
pub mod server;
pub mod topics;

/// `sluiceway bench`, kept at its old path for the tests and benchmarks that call it.
pub use cli::bench;

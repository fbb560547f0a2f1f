//! The Sluiceway broker and the `sluiceway` command line.
//!
//! - [`config`] — flags + `SLUICEWAY_*` environment + TOML file → one validated `BrokerConfig`.
//! - [`broker`] — the broker's state and request logic (produce, long-poll fetch, list offsets,
//!   topic administration) over core's `PartitionLog` and `Registry`.
//! - [`partition`] — one hosted partition: its log, leader-epoch history, replication role and
//!   the high-watermark / log-end notifications.
//! - [`roles`] — the role loop: hosting, leading and following partitions as the registry says.
//! - [`replica`] — replication, leader side: replica fetches, OffsetForLeaderEpoch, the ISR.
//! - [`fetcher`] — replication, follower side: one fetcher task per leader broker.
//! - [`groups`] — the consumer-group coordinators (core's sans-IO `Coordinator`, driven by a
//!   timer task) and `__consumer_offsets`.
//! - [`coordination`] — in a cluster: `__consumer_offsets` as a replicated topic, which broker
//!   coordinates which group (FindCoordinator), commits acknowledged once replicated.
//! - [`service`] — the tonic services (Log, Admin, Registry, Group), thin wrappers over
//!   [`broker`] and [`groups`].
//! - [`security`] — TLS settings, request principals (mTLS / SASL), inter-broker connections.
//! - [`server`] — binding, bounded connections, housekeeping, graceful shutdown.
//! - [`metrics`] — Prometheus text endpoint.
//! - [`errors`] — core errors ↔ gRPC statuses and proto codes.
//! - [`cli`] — the command line.

pub mod bench;
pub mod broker;
pub mod cli;
pub mod config;
pub mod coordination;
pub mod errors;
pub mod fetcher;
pub mod groups;
pub mod metrics;
pub mod partition;
mod producer_ids;
pub mod replica;
pub mod roles;
pub mod security;
pub mod server;
pub mod service;

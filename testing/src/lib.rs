//! Test support shared by the integration tests of `sluiceway-core` and `sluiceway-broker`
//! (`publish = false`, a dev-dependency only).
//!
//! - [`wait`]: bounded waits on conditions ([`wait_until`], [`wait_for`], their blocking twins)
//!   and [`bounded`], the deadline around a whole test. A test never sleeps to let something
//!   happen; it waits until the system *shows* it happened (a metric, a registry answer, a
//!   file), with a generous deadline that only turns a hang into a failure.
//! - [`etcd::TestEtcd`]: a real etcd on free loopback ports.
//! - [`broker::TestBroker`]: a real `sluiceway broker` process on loopback, and its `/metrics`
//!   ([`metrics`]), the conditions tests wait on (for example `sluiceway_waiting_fetches`).
//! - [`process`]: free ports, signals, commands run inside a network namespace.
//!
//! Nothing here depends on `sluiceway-core`: the processes are driven through their command
//! lines, ports and files, so one copy serves both crates (the broker's tests add their raw
//! gRPC client and the cluster on top, in `broker/tests/support.rs` and `cluster_support.rs`).

pub mod broker;
pub mod etcd;
pub mod metrics;
pub mod process;
pub mod wait;

pub use broker::{TestBroker, bin};
pub use etcd::TestEtcd;
pub use process::{command_in, free_port, signal};
pub use wait::{
    CONDITION_TIMEOUT, TEST_TIMEOUT, bounded, wait_for, wait_for_blocking, wait_reporting,
    wait_until, wait_until_blocking,
};

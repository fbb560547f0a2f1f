//! One integration-test binary for the core crate. Each module needs the features of what it
//! tests, so `--no-default-features --features client` still builds and runs the rest.
#[cfg(feature = "client")]
mod client_unit;
#[cfg(feature = "server")]
mod etcd;
mod format;
#[cfg(feature = "server")]
mod group;
#[cfg(feature = "client")]
mod offset_store_lock;
#[cfg(feature = "server")]
mod producer_state;
#[cfg(feature = "server")]
mod replication;
#[cfg(feature = "server")]
mod storage;
#[cfg(feature = "server")]
mod storage_faults;

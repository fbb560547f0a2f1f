//! One integration-test binary for the core crate.
mod client_unit;
mod etcd;
mod format;
mod group;
mod offset_store_lock;
mod replication;
mod storage;

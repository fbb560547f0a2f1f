//! One integration-test binary for the core crate.
mod client_unit;
mod etcd;
mod format;
mod group;
mod replication;
mod storage;

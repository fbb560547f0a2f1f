//! One integration-test binary for the core crate.
mod format;
mod group;
mod storage;
mod client_unit;

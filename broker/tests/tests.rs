//! The broker's integration tests: one binary (`autotests = false`), modules by area. Every test
//! runs the real `sluiceway` binary on a free loopback port with a temporary data directory
//! ([`support::TestBroker`]).

mod cluster_support;
mod netns;
mod support;

mod bad_input;
mod cli;
mod client;
mod client_core;
mod client_groups;
mod cluster;
mod durability;
mod groups;
mod grpc;
mod idempotence;
mod security;

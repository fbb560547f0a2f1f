//! Sluiceway's wire contract: the gRPC services and messages generated (prost + tonic) from
//! `proto/sluiceway/v1/*.proto`, package `sluiceway.v1`.
//!
//! **Compatibility surface**: field numbers and enum numbers are append-only (a removed field's
//! number is reserved, never reused). The `ErrorCode` enum mirrors `sluiceway_core::ErrorCode`
//! number for number; the broker crate checks that in a test.
//!
//! Services: `Registry` (ListBrokers, GetMetadata), `Admin` (CreateTopic, DeleteTopic,
//! ListTopics, DescribeTopic), `Log` (Produce, Fetch, ListOffsets), `Group` (JoinGroup,
//! Heartbeat, LeaveGroup, CommitOffsets, FetchOffsets, ListGroups, DescribeGroup). Request-level errors are a
//! `tonic::Status` whose `details` hold an encoded [`v1::ErrorDetail`]; see [`status`] and
//! [`error_detail`].
//!
//! Cargo features choose the generated stubs: `client` (`v1::*_client`, over tonic's `Channel`)
//! and `server` (`v1::*_server`, with tonic's transport server). The messages are always there.

/// Generated code for `sluiceway.v1`.
#[allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("sluiceway.v1");
}

pub use prost;
pub use tonic;

use prost::Message as _;

/// A request-level error: the given gRPC code, with an encoded [`v1::ErrorDetail`] carrying the
/// stable Sluiceway code and message in the status details.
pub fn status(grpc: tonic::Code, code: v1::ErrorCode, message: impl Into<String>) -> tonic::Status {
    let message = message.into();
    let detail = v1::ErrorDetail {
        code: code as i32,
        message: message.clone(),
    };
    tonic::Status::with_details(grpc, message, detail.encode_to_vec().into())
}

/// The [`v1::ErrorDetail`] a status carries, if any (a status from a proxy or from the gRPC
/// machinery itself carries none).
pub fn error_detail(status: &tonic::Status) -> Option<v1::ErrorDetail> {
    if status.details().is_empty() {
        return None;
    }
    v1::ErrorDetail::decode(status.details()).ok()
}

//! Errors, a leaf of the crate (it imports nothing from it).
//!
//! Error mapping between core and the wire lives in `sluiceway_core::wire`, shared with the
//! client so both ends of a connection read a status the same way; it is re-exported here under
//! the names the broker's modules use. Beside it: [`PartitionError`], the failure of one
//! partition inside a request that carries several (answered in that partition's result, not as
//! the request's status), [`internal`] for a failure inside the broker itself, and [`blocking`],
//! the one way the broker runs blocking work (storage, registry) off tokio's workers.

use sluiceway_core::{Error, ErrorCode, Result};

pub use sluiceway_core::wire::{
    code_from_proto as from_proto, code_to_proto as to_proto, error_from_status, grpc_code, status,
    status_from_error,
};

/// A per-partition failure: the code and message put in that partition's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionError {
    pub code: ErrorCode,
    pub message: String,
}

impl PartitionError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> PartitionError {
        PartitionError {
            code,
            message: message.into(),
        }
    }

    /// UNKNOWN_TOPIC_OR_PARTITION for `topic-partition`.
    pub fn unknown(topic: &str, partition: u32) -> PartitionError {
        PartitionError::new(
            ErrorCode::UnknownTopicOrPartition,
            format!("unknown topic or partition {topic}-{partition}"),
        )
    }
}

impl From<&Error> for PartitionError {
    fn from(e: &Error) -> PartitionError {
        PartitionError::new(e.code(), e.to_string())
    }
}

impl From<Error> for PartitionError {
    fn from(e: Error) -> PartitionError {
        PartitionError::from(&e)
    }
}

/// An unexpected failure inside the broker (a panicked task), as UNKNOWN_SERVER_ERROR.
pub fn internal(message: String) -> Error {
    Error::Remote {
        code: ErrorCode::UnknownServerError,
        message,
    }
}

/// Runs blocking work (file I/O, a registry call) on tokio's blocking pool. A task that
/// panicked is an [`internal`] error.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| internal(format!("internal task failed: {e}")))?
}

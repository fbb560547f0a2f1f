//! Mapping between core's errors and the wire: [`ErrorCode`] ↔ the proto enum, and request-level
//! errors ↔ `tonic::Status` with an `ErrorDetail`. The gRPC status code is chosen by an
//! exhaustive `match` (no `_` arm) so a new code forces a decision.

use sluiceway_core::{Error, ErrorCode};
use sluiceway_proto::v1;
use tonic::{Code, Status};

/// The proto value of a core code. The two enums have the same numbers (checked by a test), so
/// the fallback never happens for a code core knows.
pub fn to_proto(code: ErrorCode) -> i32 {
    v1::ErrorCode::try_from(code.as_i32())
        .map_or(v1::ErrorCode::UnknownServerError as i32, |c| c as i32)
}

/// A wire code as core's, `UNKNOWN_SERVER_ERROR` for a number this build does not know.
pub fn from_proto(code: i32) -> ErrorCode {
    ErrorCode::from_i32(code).unwrap_or(ErrorCode::UnknownServerError)
}

/// The gRPC status code used when `code` is a request-level error.
pub fn grpc_code(code: ErrorCode) -> Code {
    match code {
        ErrorCode::None => Code::Ok,
        ErrorCode::UnknownServerError | ErrorCode::KafkaStorageError => Code::Internal,
        ErrorCode::OffsetOutOfRange => Code::OutOfRange,
        ErrorCode::CorruptMessage
        | ErrorCode::InvalidFetchSize
        | ErrorCode::MessageTooLarge
        | ErrorCode::InvalidTopic
        | ErrorCode::RecordListTooLarge
        | ErrorCode::InvalidRequiredAcks
        | ErrorCode::InvalidSessionTimeout
        | ErrorCode::InconsistentGroupProtocol
        | ErrorCode::InvalidTimestamp
        | ErrorCode::InvalidPartitions
        | ErrorCode::InvalidReplicationFactor
        | ErrorCode::InvalidConfig
        | ErrorCode::InvalidRequest
        | ErrorCode::UnsupportedCompressionType
        | ErrorCode::InvalidArgument => Code::InvalidArgument,
        ErrorCode::UnknownTopicOrPartition | ErrorCode::UnknownMemberId => Code::NotFound,
        ErrorCode::TopicAlreadyExists => Code::AlreadyExists,
        ErrorCode::NotLeader
        | ErrorCode::NotCoordinator
        | ErrorCode::IllegalGeneration
        | ErrorCode::FencedLeaderEpoch
        | ErrorCode::UnknownLeaderEpoch => Code::FailedPrecondition,
        ErrorCode::RequestTimedOut => Code::DeadlineExceeded,
        ErrorCode::LeaderNotAvailable
        | ErrorCode::BrokerNotAvailable
        | ErrorCode::NetworkException
        | ErrorCode::CoordinatorNotAvailable
        | ErrorCode::NotEnoughReplicas
        | ErrorCode::NotEnoughReplicasAfterAppend
        | ErrorCode::RebalanceInProgress
        | ErrorCode::ShuttingDown => Code::Unavailable,
        ErrorCode::GroupMaxSizeReached => Code::ResourceExhausted,
    }
}

/// A request-level error as a `Status` carrying an `ErrorDetail`.
pub fn status(code: ErrorCode, message: impl Into<String>) -> Status {
    let wire = v1::ErrorCode::try_from(to_proto(code)).unwrap_or(v1::ErrorCode::UnknownServerError);
    sluiceway_proto::status(grpc_code(code), wire, message)
}

/// A core error as a request-level `Status`.
pub fn status_from_error(e: &Error) -> Status {
    status(e.code(), e.to_string())
}

/// A `Status` received by a client, as core's error. Without an `ErrorDetail` (the gRPC machinery
/// itself answered) the gRPC code is mapped to the closest stable code.
pub fn error_from_status(s: &Status) -> Error {
    if let Some(d) = sluiceway_proto::error_detail(s) {
        return Error::Remote {
            code: from_proto(d.code),
            message: d.message,
        };
    }
    let code = match s.code() {
        Code::Unavailable => ErrorCode::BrokerNotAvailable,
        Code::DeadlineExceeded | Code::Cancelled => ErrorCode::RequestTimedOut,
        // tonic's own answer to a request above the decoding limit.
        Code::OutOfRange | Code::ResourceExhausted if s.message().contains("too large") => {
            ErrorCode::RecordListTooLarge
        }
        Code::InvalidArgument => ErrorCode::InvalidRequest,
        _ => ErrorCode::UnknownServerError,
    };
    Error::Remote {
        code,
        message: format!("{} ({:?})", s.message(), s.code()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The proto enum and core's enum agree number for number and name for name.
    #[test]
    fn every_core_code_is_on_the_wire() {
        for &code in ErrorCode::ALL {
            let wire = v1::ErrorCode::try_from(code.as_i32())
                .unwrap_or_else(|_| panic!("{code} missing from the proto"));
            assert_eq!(wire.as_str_name(), code.name());
            assert_eq!(from_proto(to_proto(code)), code);
        }
    }

    #[test]
    fn status_round_trip() {
        let s = status_from_error(&Error::UnknownTopicOrPartition("t-3".into()));
        assert_eq!(s.code(), Code::NotFound);
        match error_from_status(&s) {
            Error::Remote { code, message } => {
                assert_eq!(code, ErrorCode::UnknownTopicOrPartition);
                assert!(message.contains("t-3"));
            }
            other => panic!("{other:?}"),
        }
    }
}

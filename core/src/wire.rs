//! The one place where the wire contract (`sluiceway-proto`: prost messages, tonic statuses)
//! meets core's types. The broker and the client both convert here, so a status means the same
//! thing on both sides of a connection, and no prost or tonic type appears in the client's
//! public API (**API boundary**: `client` returns the plain types made here).
//!
//! - Error codes: [`code_to_proto`] / [`code_from_proto`] (the two enums have the same numbers,
//!   checked by a test; a number this build does not know is UNKNOWN_SERVER_ERROR).
//! - Request-level errors: a `tonic::Status` whose details carry an encoded `ErrorDetail`
//!   ([`status`], [`status_from_error`]); its gRPC code is chosen by [`grpc_code`], an
//!   exhaustive `match` (no `_` arm), so a new code forces a decision.
//! - [`error_from_status`]: a received status as [`Error`]. With an `ErrorDetail`:
//!   `Error::Remote { code, message }` with the peer's message kept. Without one the status
//!   came from the transport (connection refused or reset, an h2 error, a deadline):
//!   [`Error::Network`] / [`Error::TimedOut`], which every retry loop treats as "try again,
//!   maybe elsewhere" ([`Error::is_retriable`]).
//! - Per-partition errors in responses ([`partition_error`]) and metadata
//!   ([`TopicMetadata::from_proto`]).

use std::collections::VecDeque;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use sluiceway_proto::v1;
use tonic::{Code, Status};

use crate::error::{Error, ErrorCode, Result};
use crate::group::TopicPartition;

/// One partition's placement, as the registry describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionMetadata {
    pub partition: u32,
    /// NONE, or why the partition is unusable now (LEADER_NOT_AVAILABLE …).
    pub error: ErrorCode,
    /// `None` when the partition has no leader.
    pub leader_id: Option<i32>,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// One topic's placement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicMetadata {
    pub name: String,
    pub partitions: Vec<PartitionMetadata>,
}

impl TopicMetadata {
    /// A topic's metadata from the wire.
    pub fn from_proto(t: v1::TopicMetadata) -> TopicMetadata {
        TopicMetadata {
            name: t.name,
            partitions: t
                .partitions
                .into_iter()
                .map(|p| PartitionMetadata {
                    partition: p.partition,
                    error: code_from_proto(p.error_code),
                    leader_id: (p.leader_id >= 0).then_some(p.leader_id),
                    leader_epoch: p.leader_epoch,
                    replicas: p.replicas,
                    isr: p.isr,
                })
                .collect(),
        }
    }
}

/// The proto value of a core code (same numbers, so the fallback never happens for a code
/// core knows).
pub fn code_to_proto(code: ErrorCode) -> i32 {
    v1::ErrorCode::try_from(code.as_i32())
        .map_or(v1::ErrorCode::UnknownServerError as i32, |c| c as i32)
}

/// A wire code as core's; UNKNOWN_SERVER_ERROR for a number this build does not know.
pub fn code_from_proto(code: i32) -> ErrorCode {
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
        | ErrorCode::UnknownLeaderEpoch
        | ErrorCode::IneligibleReplica
        | ErrorCode::OutOfOrderSequenceNumber
        | ErrorCode::DuplicateSequenceNumber
        | ErrorCode::InvalidProducerEpoch
        | ErrorCode::Closed => Code::FailedPrecondition,
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
        ErrorCode::TopicAuthorizationFailed
        | ErrorCode::GroupAuthorizationFailed
        | ErrorCode::ClusterAuthorizationFailed => Code::PermissionDenied,
        ErrorCode::SaslAuthenticationFailed => Code::Unauthenticated,
    }
}

/// A request-level error as a `Status` carrying an `ErrorDetail`.
pub fn status(code: ErrorCode, message: impl Into<String>) -> Status {
    let wire =
        v1::ErrorCode::try_from(code_to_proto(code)).unwrap_or(v1::ErrorCode::UnknownServerError);
    sluiceway_proto::status(grpc_code(code), wire, message)
}

/// A core error as a request-level `Status`.
pub fn status_from_error(e: &Error) -> Status {
    status(e.code(), e.to_string())
}

/// The causes of a transport failure, `: a: b` (a TLS alert such as "received fatal alert:
/// UnknownCA" is only there), skipping any that repeat the status's message.
fn transport_causes(s: &Status) -> String {
    let mut out = String::new();
    let mut cur = std::error::Error::source(s);
    let mut depth = 0;
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.message().contains(&text) && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = c.source();
        depth += 1;
        // Error chains are short; the bound only guards against a cycle.
        if depth == 16 {
            break;
        }
    }
    out
}

/// A received `Status` as core's error (see the module docs).
pub fn error_from_status(s: &Status) -> Error {
    if let Some(d) = sluiceway_proto::error_detail(s) {
        return Error::Remote {
            code: code_from_proto(d.code),
            message: d.message,
        };
    }
    match s.code() {
        // tonic reports connection refused / reset / h2 errors as Unavailable, Unknown or
        // Internal ("h2 protocol error", a stream reset by a broker going away). A broker's own
        // errors always carry an ErrorDetail, handled above, so without one these are
        // transport failures: retriable against another broker.
        Code::Unavailable | Code::Unknown | Code::Internal => Error::Network(format!(
            "{}{} ({:?})",
            s.message(),
            transport_causes(s),
            s.code()
        )),
        Code::DeadlineExceeded | Code::Cancelled => Error::TimedOut(format!(
            "{}{} ({:?})",
            s.message(),
            transport_causes(s),
            s.code()
        )),
        // tonic's own answer to a message above the decoding limit.
        Code::OutOfRange | Code::ResourceExhausted if s.message().contains("too large") => {
            Error::Remote {
                code: ErrorCode::RecordListTooLarge,
                message: s.message().to_owned(),
            }
        }
        Code::InvalidArgument => Error::Remote {
            code: ErrorCode::InvalidRequest,
            message: s.message().to_owned(),
        },
        other => Error::Remote {
            code: ErrorCode::UnknownServerError,
            message: format!("{} ({other:?})", s.message()),
        },
    }
}

/// A per-partition error of a response as [`Error`] (the broker's message kept; the partition
/// named when the broker gave no message).
pub fn partition_error(code: i32, message: &str, tp: &TopicPartition) -> Error {
    let message = if message.is_empty() {
        format!("{}-{}", tp.topic, tp.partition)
    } else {
        message.to_owned()
    };
    Error::Remote {
        code: code_from_proto(code),
        message,
    }
}

/// An ACL binding as the wire carries it.
pub fn acl_to_proto(a: &crate::acl::AclBinding) -> v1::AclBinding {
    v1::AclBinding {
        resource_type: a.pattern.resource_type.name().to_owned(),
        resource_name: a.pattern.name.clone(),
        pattern_type: a.pattern.pattern_type.name().to_owned(),
        principal: a.entry.principal.clone(),
        host: a.entry.host.clone(),
        operation: a.entry.operation.name().to_owned(),
        permission: a.entry.permission.name().to_owned(),
    }
}

/// A wire ACL binding, parsed and validated (INVALID_ARGUMENT naming the bad field).
pub fn acl_from_proto(a: &v1::AclBinding) -> Result<crate::acl::AclBinding> {
    use crate::acl::*;
    let b = AclBinding {
        pattern: ResourcePattern {
            resource_type: ResourceType::parse("resource type", &a.resource_type)?,
            name: a.resource_name.clone(),
            pattern_type: PatternType::parse("pattern type", &a.pattern_type)?,
        },
        entry: AclEntry {
            principal: a.principal.clone(),
            host: a.host.clone(),
            operation: AclOperation::parse("operation", &a.operation)?,
            permission: AclPermission::parse("permission", &a.permission)?,
        },
    };
    b.validate()?;
    Ok(b)
}

/// The DATA frames of an HTTP/2 body (a gRPC request or answer), read as one buffer: h2 hands
/// each frame over as a `Bytes` slice of the buffer it read the socket into, so decoding a
/// message from `Frames` gives its `bytes` fields (message sets) as slices of those frames, not
/// copies, when a field lies within one frame (see `copy_to_bytes`). Tonic's decoder instead
/// gathers the frames into one buffer first.
#[derive(Debug, Default)]
pub struct Frames {
    chunks: VecDeque<Bytes>,
    remaining: usize,
}

impl Frames {
    /// Appends the next frame.
    pub fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.remaining += chunk.len();
            self.chunks.push_back(chunk);
        }
    }

    /// Copies the first bytes into `dst` without consuming them; returns how many (all of
    /// `dst` unless fewer remain).
    pub fn peek(&self, dst: &mut [u8]) -> usize {
        let mut n = 0;
        for chunk in &self.chunks {
            if n == dst.len() {
                break;
            }
            let take = chunk.len().min(dst.len() - n);
            dst[n..n + take].copy_from_slice(&chunk[..take]);
            n += take;
        }
        n
    }
}

impl Buf for Frames {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.chunks.front().map_or(&[], |c| &c[..])
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.remaining, "advance past the end of the frames");
        self.remaining -= cnt;
        while cnt > 0 {
            let front = self
                .chunks
                .front_mut()
                .expect("remaining counts the chunks");
            if cnt < front.len() {
                front.advance(cnt);
                return;
            }
            cnt -= front.len();
            self.chunks.pop_front();
        }
    }

    /// A slice of the frame when the bytes lie in one (no copy), else a copy.
    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        assert!(
            len <= self.remaining,
            "copy_to_bytes past the end of the frames"
        );
        if let Some(front) = self.chunks.front_mut()
            && len <= front.len()
        {
            let out = front.split_to(len);
            if front.is_empty() {
                self.chunks.pop_front();
            }
            self.remaining -= len;
            return out;
        }
        let mut out = BytesMut::with_capacity(len);
        out.put((&mut *self).take(len));
        out.freeze()
    }
}

impl FromIterator<Bytes> for Frames {
    fn from_iter<I: IntoIterator<Item = Bytes>>(frames: I) -> Frames {
        let mut f = Frames::default();
        for frame in frames {
            f.push(frame);
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_within_one_frame_are_sliced_and_across_frames_copied() {
        let mut f: Frames = [&b"abcdef"[..], b"", b"ghij", b"k"]
            .into_iter()
            .map(Bytes::from_static)
            .collect();
        assert_eq!(f.remaining(), 11);
        let front_ptr = f.chunk().as_ptr();
        let a = f.copy_to_bytes(3);
        assert_eq!(&a[..], b"abc");
        assert_eq!(a.as_ptr(), front_ptr, "a slice of the frame, not a copy");
        assert_eq!(&f.copy_to_bytes(5)[..], b"defgh");
        f.advance(1);
        assert_eq!(f.chunk(), b"j");
        assert_eq!(&f.copy_to_bytes(2)[..], b"jk");
        assert_eq!(f.remaining(), 0);
        assert!(f.chunk().is_empty());
    }

    /// A produced set that spans frames is gathered once: the broker's `Vec::from` (the buffer
    /// the log assigns offsets in) takes that gathered buffer over rather than copying it again.
    #[test]
    fn a_value_gathered_across_frames_becomes_a_vec_without_another_copy() {
        let mut f: Frames = [vec![1u8; 70_000], vec![2u8; 70_000]]
            .into_iter()
            .map(Bytes::from)
            .collect();
        let gathered = f.copy_to_bytes(140_000);
        let at = gathered.as_ptr();
        let v = Vec::from(gathered);
        assert_eq!(v.as_ptr(), at, "the same buffer");
        assert_eq!((v[69_999], v[70_000], v.len()), (1, 2, 140_000));
    }

    #[test]
    fn peek_copies_the_first_bytes_across_frames_without_consuming() {
        let f: Frames = [&b"ab"[..], b"cde"]
            .into_iter()
            .map(Bytes::from_static)
            .collect();
        let mut dst = [0u8; 4];
        assert_eq!(f.peek(&mut dst), 4);
        assert_eq!(&dst, b"abcd");
        let mut big = [0u8; 9];
        assert_eq!(f.peek(&mut big), 5);
        assert_eq!(&big[..5], b"abcde");
        assert_eq!(f.remaining(), 5);
    }

    /// The proto enum and core's enum agree number for number and name for name.
    #[test]
    fn every_core_code_is_on_the_wire() {
        for &code in ErrorCode::ALL {
            let wire = v1::ErrorCode::try_from(code.as_i32())
                .unwrap_or_else(|_| panic!("{code} missing from the proto"));
            assert_eq!(wire.as_str_name(), code.name());
            assert_eq!(code_from_proto(code_to_proto(code)), code);
        }
    }

    #[test]
    fn a_status_round_trips_with_code_and_message() {
        let s = status_from_error(&Error::UnknownTopicOrPartition("t-3".into()));
        assert_eq!(s.code(), Code::NotFound);
        match error_from_status(&s) {
            Error::Remote { code, message } => {
                assert_eq!(code, ErrorCode::UnknownTopicOrPartition);
                assert_eq!(message, "unknown topic or partition: t-3");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn transport_statuses_are_retriable_network_errors() {
        for s in [
            Status::unavailable("connection refused"),
            Status::unknown("h2 protocol error"),
            Status::internal("stream reset"),
        ] {
            let e = error_from_status(&s);
            assert_eq!(e.code(), ErrorCode::NetworkException, "{s:?}");
            assert!(e.is_retriable());
        }
        let e = error_from_status(&Status::deadline_exceeded("slow"));
        assert_eq!(e.code(), ErrorCode::RequestTimedOut);
        assert!(e.is_retriable());
    }

    /// A broker going away answers SHUTTING_DOWN: the client retries it like a lost
    /// connection, and `is_retriable` says so too; the client's own closure is not retriable.
    #[test]
    fn retriable_agrees_with_what_the_client_retries() {
        let remote = error_from_status(&status(ErrorCode::ShuttingDown, "restarting"));
        assert!(remote.is_retriable());
        assert!(!Error::Closed("producer").is_retriable());
        assert_eq!(Error::Closed("producer").code(), ErrorCode::Closed);
    }
}

//! Errors, in two layers.
//!
//! - [`Error`]: the internal error, with context (paths, positions, offsets). Never crosses the
//!   wire as such.
//! - [`ErrorCode`]: the stable wire code. **Append-only**: a code's number never changes and is
//!   never reused; the name may. Where Kafka has the same concept we use Kafka's number, so an
//!   operator's knowledge (and tooling) carries over; Sluiceway's own codes start at 1000.
//!
//! [`Error::code`] maps one to the other with an exhaustive `match` (no `_` arm), so adding an
//! internal variant forces a decision about its code.

use std::io;
use std::path::PathBuf;

use crate::types::{FilePosition, Offset};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error with its causes, `a: b: c` (TLS and transport errors keep the useful part, such as
/// "received fatal alert: UnknownCA", in a cause).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The stable wire error code. See the module docs for the numbering rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum ErrorCode {
    None = 0,
    UnknownServerError = -1,
    OffsetOutOfRange = 1,
    CorruptMessage = 2,
    UnknownTopicOrPartition = 3,
    InvalidFetchSize = 4,
    LeaderNotAvailable = 5,
    NotLeader = 6,
    RequestTimedOut = 7,
    BrokerNotAvailable = 8,
    MessageTooLarge = 10,
    NetworkException = 13,
    CoordinatorNotAvailable = 15,
    NotCoordinator = 16,
    InvalidTopic = 17,
    RecordListTooLarge = 18,
    NotEnoughReplicas = 19,
    NotEnoughReplicasAfterAppend = 20,
    InvalidRequiredAcks = 21,
    IllegalGeneration = 22,
    InconsistentGroupProtocol = 23,
    UnknownMemberId = 25,
    InvalidSessionTimeout = 26,
    RebalanceInProgress = 27,
    /// The principal may not perform the operation on the topic (an ACL denies it or none allows it); the message names principal, operation and topic.
    TopicAuthorizationFailed = 29,
    /// The principal may not perform the operation on the consumer group.
    GroupAuthorizationFailed = 30,
    /// The principal may not perform the operation on the cluster (create topics, manage users and ACLs).
    ClusterAuthorizationFailed = 31,
    InvalidTimestamp = 32,
    /// An idempotent producer's batch does not follow its previous one (a gap or a step back).
    OutOfOrderSequenceNumber = 45,
    /// An idempotent producer's batch is already in the log (answered as success by the broker).
    DuplicateSequenceNumber = 46,
    /// An idempotent producer's epoch is older than the current one: it has been fenced.
    InvalidProducerEpoch = 47,
    TopicAlreadyExists = 36,
    InvalidPartitions = 37,
    InvalidReplicationFactor = 38,
    InvalidConfig = 40,
    InvalidRequest = 42,
    KafkaStorageError = 56,
    /// The request carried no credentials, or a wrong username or password, to a broker that authenticates every request.
    SaslAuthenticationFailed = 58,
    FencedLeaderEpoch = 74,
    UnknownLeaderEpoch = 75,
    UnsupportedCompressionType = 76,
    GroupMaxSizeReached = 81,
    /// The registry refused to add a broker to a partition's in-sync replicas because it is not
    /// registered (fenced, KIP-841). Retriable: the leader proposes it again once it registers.
    IneligibleReplica = 107,
    /// Sluiceway: the client itself was misused (closed producer, bad argument).
    InvalidArgument = 1000,
    /// Sluiceway: the broker (or a storage component) is shutting down; a client retries
    /// elsewhere or later (a restart, a rolling upgrade).
    ShuttingDown = 1001,
    /// Sluiceway: a client object was used after `close()` (or in a child process after
    /// `fork()`, where its threads do not exist); records it still held fail with this code.
    Closed = 1002,
}

impl ErrorCode {
    /// Every code, for tests that check each binding maps them all.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::None,
        ErrorCode::UnknownServerError,
        ErrorCode::OffsetOutOfRange,
        ErrorCode::CorruptMessage,
        ErrorCode::UnknownTopicOrPartition,
        ErrorCode::InvalidFetchSize,
        ErrorCode::LeaderNotAvailable,
        ErrorCode::NotLeader,
        ErrorCode::RequestTimedOut,
        ErrorCode::BrokerNotAvailable,
        ErrorCode::MessageTooLarge,
        ErrorCode::NetworkException,
        ErrorCode::CoordinatorNotAvailable,
        ErrorCode::NotCoordinator,
        ErrorCode::InvalidTopic,
        ErrorCode::RecordListTooLarge,
        ErrorCode::NotEnoughReplicas,
        ErrorCode::NotEnoughReplicasAfterAppend,
        ErrorCode::InvalidRequiredAcks,
        ErrorCode::IllegalGeneration,
        ErrorCode::InconsistentGroupProtocol,
        ErrorCode::UnknownMemberId,
        ErrorCode::InvalidSessionTimeout,
        ErrorCode::RebalanceInProgress,
        ErrorCode::TopicAuthorizationFailed,
        ErrorCode::GroupAuthorizationFailed,
        ErrorCode::ClusterAuthorizationFailed,
        ErrorCode::InvalidTimestamp,
        ErrorCode::OutOfOrderSequenceNumber,
        ErrorCode::DuplicateSequenceNumber,
        ErrorCode::InvalidProducerEpoch,
        ErrorCode::TopicAlreadyExists,
        ErrorCode::InvalidPartitions,
        ErrorCode::InvalidReplicationFactor,
        ErrorCode::InvalidConfig,
        ErrorCode::InvalidRequest,
        ErrorCode::KafkaStorageError,
        ErrorCode::SaslAuthenticationFailed,
        ErrorCode::FencedLeaderEpoch,
        ErrorCode::UnknownLeaderEpoch,
        ErrorCode::UnsupportedCompressionType,
        ErrorCode::GroupMaxSizeReached,
        ErrorCode::IneligibleReplica,
        ErrorCode::InvalidArgument,
        ErrorCode::ShuttingDown,
        ErrorCode::Closed,
    ];

    pub fn as_i32(self) -> i32 {
        self as i32
    }

    pub fn from_i32(code: i32) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| c.as_i32() == code)
    }

    /// The wire name, `SCREAMING_SNAKE_CASE`, as Kafka prints it.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::None => "NONE",
            ErrorCode::UnknownServerError => "UNKNOWN_SERVER_ERROR",
            ErrorCode::OffsetOutOfRange => "OFFSET_OUT_OF_RANGE",
            ErrorCode::CorruptMessage => "CORRUPT_MESSAGE",
            ErrorCode::UnknownTopicOrPartition => "UNKNOWN_TOPIC_OR_PARTITION",
            ErrorCode::InvalidFetchSize => "INVALID_FETCH_SIZE",
            ErrorCode::LeaderNotAvailable => "LEADER_NOT_AVAILABLE",
            ErrorCode::NotLeader => "NOT_LEADER",
            ErrorCode::RequestTimedOut => "REQUEST_TIMED_OUT",
            ErrorCode::BrokerNotAvailable => "BROKER_NOT_AVAILABLE",
            ErrorCode::MessageTooLarge => "MESSAGE_TOO_LARGE",
            ErrorCode::NetworkException => "NETWORK_EXCEPTION",
            ErrorCode::CoordinatorNotAvailable => "COORDINATOR_NOT_AVAILABLE",
            ErrorCode::NotCoordinator => "NOT_COORDINATOR",
            ErrorCode::InvalidTopic => "INVALID_TOPIC",
            ErrorCode::RecordListTooLarge => "RECORD_LIST_TOO_LARGE",
            ErrorCode::NotEnoughReplicas => "NOT_ENOUGH_REPLICAS",
            ErrorCode::NotEnoughReplicasAfterAppend => "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
            ErrorCode::InvalidRequiredAcks => "INVALID_REQUIRED_ACKS",
            ErrorCode::IllegalGeneration => "ILLEGAL_GENERATION",
            ErrorCode::InconsistentGroupProtocol => "INCONSISTENT_GROUP_PROTOCOL",
            ErrorCode::UnknownMemberId => "UNKNOWN_MEMBER_ID",
            ErrorCode::InvalidSessionTimeout => "INVALID_SESSION_TIMEOUT",
            ErrorCode::RebalanceInProgress => "REBALANCE_IN_PROGRESS",
            ErrorCode::TopicAuthorizationFailed => "TOPIC_AUTHORIZATION_FAILED",
            ErrorCode::GroupAuthorizationFailed => "GROUP_AUTHORIZATION_FAILED",
            ErrorCode::ClusterAuthorizationFailed => "CLUSTER_AUTHORIZATION_FAILED",
            ErrorCode::InvalidTimestamp => "INVALID_TIMESTAMP",
            ErrorCode::OutOfOrderSequenceNumber => "OUT_OF_ORDER_SEQUENCE_NUMBER",
            ErrorCode::DuplicateSequenceNumber => "DUPLICATE_SEQUENCE_NUMBER",
            ErrorCode::InvalidProducerEpoch => "INVALID_PRODUCER_EPOCH",
            ErrorCode::TopicAlreadyExists => "TOPIC_ALREADY_EXISTS",
            ErrorCode::InvalidPartitions => "INVALID_PARTITIONS",
            ErrorCode::InvalidReplicationFactor => "INVALID_REPLICATION_FACTOR",
            ErrorCode::InvalidConfig => "INVALID_CONFIG",
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::KafkaStorageError => "KAFKA_STORAGE_ERROR",
            ErrorCode::SaslAuthenticationFailed => "SASL_AUTHENTICATION_FAILED",
            ErrorCode::FencedLeaderEpoch => "FENCED_LEADER_EPOCH",
            ErrorCode::UnknownLeaderEpoch => "UNKNOWN_LEADER_EPOCH",
            ErrorCode::UnsupportedCompressionType => "UNSUPPORTED_COMPRESSION_TYPE",
            ErrorCode::GroupMaxSizeReached => "GROUP_MAX_SIZE_REACHED",
            ErrorCode::IneligibleReplica => "INELIGIBLE_REPLICA",
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::ShuttingDown => "SHUTTING_DOWN",
            ErrorCode::Closed => "CLOSED",
        }
    }

    /// Whether a client may retry the same request and expect it to succeed later. The client
    /// core retries exactly these itself (plus lost connections, [`Error::is_retriable`]).
    pub fn is_retriable(self) -> bool {
        match self {
            ErrorCode::LeaderNotAvailable
            | ErrorCode::NotLeader
            | ErrorCode::RequestTimedOut
            | ErrorCode::BrokerNotAvailable
            | ErrorCode::NetworkException
            | ErrorCode::CoordinatorNotAvailable
            | ErrorCode::NotCoordinator
            | ErrorCode::NotEnoughReplicas
            | ErrorCode::NotEnoughReplicasAfterAppend
            | ErrorCode::RebalanceInProgress
            | ErrorCode::FencedLeaderEpoch
            | ErrorCode::UnknownLeaderEpoch
            | ErrorCode::IneligibleReplica
            | ErrorCode::KafkaStorageError
            | ErrorCode::UnknownTopicOrPartition
            | ErrorCode::ShuttingDown => true,
            ErrorCode::None
            | ErrorCode::UnknownServerError
            | ErrorCode::OffsetOutOfRange
            | ErrorCode::CorruptMessage
            | ErrorCode::InvalidFetchSize
            | ErrorCode::MessageTooLarge
            | ErrorCode::InvalidTopic
            | ErrorCode::RecordListTooLarge
            | ErrorCode::InvalidRequiredAcks
            | ErrorCode::IllegalGeneration
            | ErrorCode::InconsistentGroupProtocol
            | ErrorCode::GroupMaxSizeReached
            | ErrorCode::TopicAuthorizationFailed
            | ErrorCode::GroupAuthorizationFailed
            | ErrorCode::ClusterAuthorizationFailed
            | ErrorCode::SaslAuthenticationFailed
            | ErrorCode::UnknownMemberId
            | ErrorCode::InvalidSessionTimeout
            | ErrorCode::InvalidTimestamp
            | ErrorCode::OutOfOrderSequenceNumber
            | ErrorCode::DuplicateSequenceNumber
            | ErrorCode::InvalidProducerEpoch
            | ErrorCode::TopicAlreadyExists
            | ErrorCode::InvalidPartitions
            | ErrorCode::InvalidReplicationFactor
            | ErrorCode::InvalidConfig
            | ErrorCode::InvalidRequest
            | ErrorCode::UnsupportedCompressionType
            | ErrorCode::InvalidArgument
            | ErrorCode::Closed => false,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Sluiceway's internal error. Each variant carries the context a person needs to act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A message or message set received from outside failed validation (framing, CRC, magic,
    /// attributes, compressed payload).
    #[error("corrupt message at byte {position} of the set: {reason}")]
    CorruptMessage { position: usize, reason: String },

    /// Data already on disk is damaged somewhere other than the tail, so it cannot be truncated
    /// away without losing valid entries after it.
    #[error("corrupt log segment {} at position {position}: {reason}", path.display())]
    CorruptSegment {
        path: PathBuf,
        position: FilePosition,
        reason: String,
    },

    #[error("message of {size} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge { size: u64, max: u64 },

    #[error("message set of {size} bytes exceeds the limit of {max} bytes")]
    RecordListTooLarge { size: u64, max: u64 },

    #[error("unsupported compression codec {codec} (attributes bits 0-2)")]
    UnsupportedCompression { codec: u8 },

    #[error(
        "offset {offset} is out of range: the log holds [{log_start_offset}, {log_end_offset})"
    )]
    OffsetOutOfRange {
        offset: u64,
        log_start_offset: Offset,
        log_end_offset: Offset,
    },

    /// A previous fsync failed: the partition refuses all further writes (after EIO the kernel may
    /// have dropped dirty pages, so retrying could report data durable that is not).
    #[error("partition log {} is offline after a failed fsync: {reason}", path.display())]
    LogOffline { path: PathBuf, reason: String },

    #[error("invalid config {key}: {reason}")]
    InvalidConfig { key: String, reason: String },

    #[error("invalid request: {0}")]
    InvalidRequest(String),

    #[error("invalid timestamp: {0}")]
    InvalidTimestamp(String),

    #[error("unknown topic or partition: {0}")]
    UnknownTopicOrPartition(String),

    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopic { name: String, reason: String },

    #[error("topic {0} already exists")]
    TopicAlreadyExists(String),

    #[error("invalid partitions: {0}")]
    InvalidPartitions(String),

    #[error("invalid replication factor: {0}")]
    InvalidReplicationFactor(String),

    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    #[error("shutting down")]
    ShuttingDown,

    /// A client-side wait ran out (delivery timeout, a full producer buffer, a request timeout).
    #[error("timed out: {0}")]
    TimedOut(String),

    /// A connection to a broker failed or broke (the client retries these).
    #[error("network error: {0}")]
    Network(String),

    /// A client object was used after `close()`.
    #[error("{0} is closed")]
    Closed(&'static str),

    /// A client object created before `fork()` was used in the child process, where the
    /// client's runtime threads do not exist.
    #[error(
        "this {what} was created in process {parent} and cannot be used in process {child} after fork(): create a new client in the child"
    )]
    Forked {
        what: &'static str,
        parent: u32,
        child: u32,
    },

    /// `flush` or `close` found records that were not delivered: `failed` records failed since
    /// the previous report (the first error kept), `pending` were still undelivered when the
    /// time ran out.
    #[error("{}", undelivered_message(*failed, *pending, first_error.as_deref()))]
    Undelivered {
        failed: u64,
        pending: u64,
        first_error: Option<Box<Error>>,
    },

    /// The consumer's local offset store file is damaged: it is reported, never silently reset.
    #[error("corrupt offset store {}: {reason}", path.display())]
    CorruptOffsetStore { path: PathBuf, reason: String },

    /// This broker does not coordinate the group (it does not lead the group's partition of
    /// `__consumer_offsets`): the client finds the coordinator again.
    #[error("not the group coordinator: {0}")]
    NotCoordinator(String),

    /// The group's coordinator cannot serve it now (the offsets topic does not exist yet, or
    /// its replicas did not confirm a commit in time): retriable.
    #[error("group coordinator not available: {0}")]
    CoordinatorNotAvailable(String),

    /// A blocking call was cut short by the interrupt check a binding installed
    /// (`client::set_interrupt_check`, e.g. Python's Ctrl-C). The binding replaces it with its
    /// own interrupt (Python's pending `KeyboardInterrupt`); its code says the wait did not
    /// complete.
    #[error("interrupted while waiting")]
    Interrupted,

    /// The idempotent producer's state refused a batch (sequence or epoch, `storage::producer_state`).
    #[error("{code}: {message}")]
    ProducerState { code: ErrorCode, message: String },

    /// An error that arrived over the wire: its code and the peer's message.
    #[error("{code}: {message}")]
    Remote { code: ErrorCode, message: String },
}

impl Error {
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub fn corrupt(position: usize, reason: impl Into<String>) -> Error {
        Error::CorruptMessage {
            position,
            reason: reason.into(),
        }
    }

    /// Whether retrying the same call may succeed: the code is retriable, or a connection to a
    /// broker failed or timed out. The client core's own retry loops use exactly this rule.
    pub fn is_retriable(&self) -> bool {
        matches!(self, Error::Network(_) | Error::TimedOut(_)) || self.code().is_retriable()
    }

    /// The stable wire code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Io { .. } => ErrorCode::KafkaStorageError,
            Error::CorruptMessage { .. } => ErrorCode::CorruptMessage,
            Error::CorruptSegment { .. } => ErrorCode::KafkaStorageError,
            Error::MessageTooLarge { .. } => ErrorCode::MessageTooLarge,
            Error::RecordListTooLarge { .. } => ErrorCode::RecordListTooLarge,
            Error::UnsupportedCompression { .. } => ErrorCode::UnsupportedCompressionType,
            Error::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            Error::LogOffline { .. } => ErrorCode::KafkaStorageError,
            Error::InvalidConfig { .. } => ErrorCode::InvalidConfig,
            Error::InvalidRequest(_) => ErrorCode::InvalidRequest,
            Error::InvalidTimestamp(_) => ErrorCode::InvalidTimestamp,
            Error::UnknownTopicOrPartition(_) => ErrorCode::UnknownTopicOrPartition,
            Error::InvalidTopic { .. } => ErrorCode::InvalidTopic,
            Error::TopicAlreadyExists(_) => ErrorCode::TopicAlreadyExists,
            Error::InvalidPartitions(_) => ErrorCode::InvalidPartitions,
            Error::InvalidReplicationFactor(_) => ErrorCode::InvalidReplicationFactor,
            Error::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Error::ShuttingDown => ErrorCode::ShuttingDown,
            Error::TimedOut(_) => ErrorCode::RequestTimedOut,
            Error::Network(_) => ErrorCode::NetworkException,
            Error::Closed(_) | Error::Forked { .. } => ErrorCode::Closed,
            Error::Undelivered {
                first_error: Some(e),
                ..
            } => e.code(),
            Error::Undelivered {
                first_error: None, ..
            } => ErrorCode::RequestTimedOut,
            Error::CorruptOffsetStore { .. } => ErrorCode::KafkaStorageError,
            Error::NotCoordinator(_) => ErrorCode::NotCoordinator,
            Error::CoordinatorNotAvailable(_) => ErrorCode::CoordinatorNotAvailable,
            Error::Interrupted => ErrorCode::RequestTimedOut,
            Error::ProducerState { code, .. } | Error::Remote { code, .. } => *code,
        }
    }
}

fn undelivered_message(failed: u64, pending: u64, first: Option<&Error>) -> String {
    let mut m = String::new();
    if failed > 0 {
        m.push_str(&format!("{failed} record(s) failed"));
        if let Some(e) = first {
            m.push_str(&format!(" (first: {e})"));
        }
    }
    if pending > 0 {
        if !m.is_empty() {
            m.push_str(", ");
        }
        m.push_str(&format!(
            "{pending} record(s) still pending when the time ran out"
        ));
    }
    m
}

//! Every bound in Sluiceway, in one place, each named with its unit last, with compile-time
//! checks of how they relate. A queue, buffer, retry loop or in-flight map gets its bound here.

/// Bytes of the per-entry log overhead: offset (8) + size (4).
pub const LOG_OVERHEAD_BYTES: u32 = 12;

/// Smallest valid message: crc 4 + magic 1 + attributes 1 + key length 4 + value length 4 (magic 0).
pub const MESSAGE_V0_HEADER_BYTES: u32 = 14;
/// Magic 1 adds an 8-byte timestamp.
pub const MESSAGE_V1_HEADER_BYTES: u32 = 22;

/// Magic 2 (Kafka's RecordBatch v2): bytes of a batch's header, from its base offset to its
/// first record. A batch's `batchLength` is therefore at least this minus [`LOG_OVERHEAD_BYTES`].
pub const RECORD_BATCH_HEADER_BYTES: u32 = 61;
/// Most headers one magic 2 record may carry. Bounds the work of decoding one record; Kafka
/// has no such bound, but a record with more headers than this is not a real use.
pub const RECORD_HEADERS_MAX: u32 = 1 << 16;

/// Largest single message (the entry's `size` field) any decoder accepts, whatever the topic says.
/// Bounds the memory a decoder will ever allocate for one entry.
pub const MESSAGE_BYTES_MAX: u32 = 16 << 20;

/// Default per-topic `max.message.bytes`: large enough for a 1 MiB value with its framing.
pub const MESSAGE_BYTES_DEFAULT: u32 = (1 << 20) + (64 << 10);

/// Largest message set a producer may send for one partition in one request.
pub const MESSAGE_SET_BYTES_MAX: u32 = 16 << 20;

/// Largest decompressed size of one compressed wrapper's inner set. Bounds the memory a
/// decompression may allocate (a "zip bomb" is refused, not expanded).
pub const DECOMPRESSED_BYTES_MAX: u32 = 64 << 20;

/// Most inner messages one compressed wrapper may hold (relative offsets are dense from 0), and
/// the most offsets one magic 2 batch may span (its lastOffsetDelta + 1, and its recordCount).
pub const WRAPPER_MESSAGES_MAX: u32 = 1 << 20;

/// Default segment size before a roll (Kafka's `segment.bytes` default, 1 GiB).
pub const SEGMENT_BYTES_DEFAULT: u64 = 1 << 30;
/// Largest configurable segment size. Positions in a segment are `u32`, and one set may overshoot
/// the configured size (a set larger than a whole segment gets a segment of its own).
pub const SEGMENT_BYTES_MAX: u64 = 1 << 31;
/// Smallest configurable segment size (tests use small segments to exercise rolling).
pub const SEGMENT_BYTES_MIN: u64 = 1024;

/// Default age before the active segment rolls (Kafka's `segment.ms` default, 7 days).
pub const SEGMENT_MS_DEFAULT: u64 = 7 * 24 * 3600 * 1000;

/// Bytes of log between two sparse offset-index entries (Kafka's `index.interval.bytes`).
pub const INDEX_INTERVAL_BYTES_DEFAULT: u32 = 4096;

/// Size each `.index` / `.timeindex` file is preallocated to; a full index rolls the segment
/// (Kafka's `segment.index.bytes`).
pub const INDEX_BYTES_MAX_DEFAULT: u32 = 10 << 20;
/// One offset-index entry: relative offset u32 + position u32.
pub const OFFSET_INDEX_ENTRY_BYTES: u32 = 8;
/// One time-index entry: timestamp i64 + relative offset u32.
pub const TIME_INDEX_ENTRY_BYTES: u32 = 12;

/// Smallest configurable `segment.index.bytes`: room for a few time-index entries, one of which
/// is kept free for the entry written when a segment is sealed. Tests use tiny indexes to
/// exercise rolling on a full index.
pub const INDEX_BYTES_MIN: u32 = 4 * TIME_INDEX_ENTRY_BYTES;
/// Largest configurable `segment.index.bytes` (the index is memory-mapped whole).
pub const INDEX_BYTES_MAX: u32 = 1 << 30;

/// Default `retention.ms` (Kafka's default, 7 days).
pub const RETENTION_MS_DEFAULT: u64 = 7 * 24 * 3600 * 1000;

/// Bytes the log reads at a time when it walks entry headers (recovery, index lookups, seeks by
/// time). An entry larger than this is read whole, bounded by [`MESSAGE_BYTES_MAX`].
pub const SCAN_CHUNK_BYTES: u32 = 64 << 10;

/// Largest read a fetch may ask of one partition.
pub const FETCH_BYTES_MAX: u32 = 64 << 20;

/// Default interval for the `interval` flush policy.
pub const FLUSH_INTERVAL_MS_DEFAULT: u64 = 1000;

const _: () = assert!(MESSAGE_BYTES_DEFAULT <= MESSAGE_BYTES_MAX);
const _: () = assert!(MESSAGE_BYTES_MAX <= MESSAGE_SET_BYTES_MAX);
const _: () = assert!(MESSAGE_SET_BYTES_MAX <= DECOMPRESSED_BYTES_MAX);
// A segment at its largest configured size plus one set that overshoots it must still be
// addressable by a u32 file position.
const _: () = assert!(SEGMENT_BYTES_MAX + MESSAGE_SET_BYTES_MAX as u64 <= u32::MAX as u64);
const _: () = assert!(
    SEGMENT_BYTES_MIN <= SEGMENT_BYTES_DEFAULT && SEGMENT_BYTES_DEFAULT <= SEGMENT_BYTES_MAX
);
const _: () = assert!(INDEX_BYTES_MAX_DEFAULT.is_multiple_of(OFFSET_INDEX_ENTRY_BYTES));
const _: () = assert!(MESSAGE_V0_HEADER_BYTES + LOG_OVERHEAD_BYTES <= MESSAGE_BYTES_MAX);
const _: () = assert!(MESSAGE_V0_HEADER_BYTES <= RECORD_BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES);
const _: () = assert!(FETCH_BYTES_MAX >= MESSAGE_SET_BYTES_MAX);
const _: () = assert!(
    INDEX_BYTES_MIN <= INDEX_BYTES_MAX_DEFAULT && INDEX_BYTES_MAX_DEFAULT <= INDEX_BYTES_MAX
);
const _: () = assert!(
    INDEX_BYTES_MIN >= 2 * TIME_INDEX_ENTRY_BYTES
        && INDEX_BYTES_MIN >= 2 * OFFSET_INDEX_ENTRY_BYTES
);
const _: () = assert!(SCAN_CHUNK_BYTES >= LOG_OVERHEAD_BYTES + MESSAGE_V1_HEADER_BYTES);

// ---- Topics, the broker's request path, connections (the broker and its registry) ----

/// Longest topic name (Kafka's bound, so `<topic>-<partition>` fits a 255-byte file name).
pub const TOPIC_NAME_BYTES_MAX: usize = 249;
/// Most partitions one topic may have.
pub const PARTITIONS_PER_TOPIC_MAX: u32 = 4096;
/// Largest replication factor a topic may ask for.
pub const REPLICATION_FACTOR_MAX: u32 = 16;
/// Most topics one registry holds (bounds the registry state and metadata answers).
pub const TOPICS_MAX: usize = 10_000;
/// Largest registry state file the embedded backend will read.
pub const REGISTRY_STATE_BYTES_MAX: u64 = 64 << 20;

// ---- The etcd registry (`registry/etcd.rs`) ----

/// `--registry-session-timeout-ms`: how long a broker may go without reaching etcd before its
/// lease expires and it counts as dead (Kafka's `zookeeper.session.timeout.ms` role). The lease
/// TTL is this rounded up to whole seconds; etcd's smallest TTL is about 2 s.
pub const REGISTRY_SESSION_TIMEOUT_MS_DEFAULT: u64 = 6_000;
pub const REGISTRY_SESSION_TIMEOUT_MS_MIN: u64 = 2_000;
pub const REGISTRY_SESSION_TIMEOUT_MS_MAX: u64 = 300_000;
/// How often the controller re-checks every partition even when nothing changed.
pub const REGISTRY_RECONCILE_MS_DEFAULT: u64 = 1_000;
pub const REGISTRY_RECONCILE_MS_MIN: u64 = 10;
pub const REGISTRY_RECONCILE_MS_MAX: u64 = 60_000;
/// How often the controller moves leadership back to in-sync preferred replicas (Kafka's
/// `leader.imbalance.check.interval.seconds` default, 300 s), and the bounds of the setting.
pub const LEADER_REBALANCE_INTERVAL_MS_DEFAULT: u64 = 300_000;
pub const LEADER_REBALANCE_INTERVAL_MS_MIN: u64 = 100;
pub const LEADER_REBALANCE_INTERVAL_MS_MAX: u64 = 86_400_000;
/// Longest one etcd request (get, transaction, lease grant, keep-alive) may take before it fails
/// with a retriable REQUEST_TIMED_OUT naming etcd as unreachable.
pub const REGISTRY_REQUEST_TIMEOUT_MS: u64 = 5_000;
/// Longest a TCP connection to an etcd endpoint may take to open.
pub const REGISTRY_CONNECT_TIMEOUT_MS: u64 = 3_000;
/// Pause between two attempts of a background registry loop (re-registration, watch and
/// keep-alive reconnection) and of `register_broker` while the id is still taken.
pub const REGISTRY_RETRY_MS: u64 = 500;
/// How much longer than the session timeout `register_broker` waits for an earlier
/// incarnation's registration to expire before refusing the id.
pub const REGISTRY_REGISTER_GRACE_MS: u64 = 5_000;
/// Largest value the registry writes or accepts under one key (a topic's placement with the
/// most partitions and the largest replication factor fits; etcd's own request limit is 1.5 MiB).
pub const REGISTRY_VALUE_BYTES_MAX: usize = 1 << 20;
/// Most operations the registry puts in one etcd transaction (etcd's default `--max-txn-ops`).
pub const REGISTRY_TXN_OPS_MAX: usize = 128;
/// Keys per page when the whole cluster state is loaded (pages are read at one revision).
pub const REGISTRY_GET_PAGE_KEYS: i64 = 64;
/// Largest gRPC message the registry decodes from etcd (a page of the largest values, or one
/// watch response).
pub const REGISTRY_MESSAGE_BYTES_MAX: usize =
    2 * REGISTRY_GET_PAGE_KEYS as usize * REGISTRY_VALUE_BYTES_MAX;
/// Most brokers a cluster's registry tracks.
pub const REGISTRY_BROKERS_MAX: usize = 1_024;
/// Most etcd endpoints one `etcd://` spec may list.
pub const REGISTRY_ENDPOINTS_MAX: usize = 16;
/// Attempts of `alter_isr`'s read-check-write when another write to the same partition raced it.
pub const REGISTRY_CAS_ATTEMPTS_MAX: u32 = 3;
const _: () = assert!(REGISTRY_SESSION_TIMEOUT_MS_MIN <= REGISTRY_SESSION_TIMEOUT_MS_DEFAULT);
const _: () = assert!(REGISTRY_SESSION_TIMEOUT_MS_DEFAULT <= REGISTRY_SESSION_TIMEOUT_MS_MAX);
const _: () = assert!(REGISTRY_RECONCILE_MS_MIN <= REGISTRY_RECONCILE_MS_DEFAULT);
const _: () = assert!(REGISTRY_RECONCILE_MS_DEFAULT <= REGISTRY_RECONCILE_MS_MAX);
// Keep-alives go every TTL/3; each must be able to fail and be retried within one session.
const _: () = assert!(REGISTRY_RETRY_MS * 3 <= REGISTRY_SESSION_TIMEOUT_MS_MIN);
// A topic value: up to PARTITIONS_PER_TOPIC_MAX lists of REPLICATION_FACTOR_MAX ids of at most
// 10 digits and a comma, plus brackets and the configs.
const _: () = assert!(
    (PARTITIONS_PER_TOPIC_MAX as usize) * (REPLICATION_FACTOR_MAX as usize * 11 + 3) + (64 << 10)
        <= REGISTRY_VALUE_BYTES_MAX
);
const _: () = assert!(REGISTRY_MESSAGE_BYTES_MAX as u64 <= REGISTRY_STATE_BYTES_MAX * 2);

/// Largest gRPC request the broker decodes (tonic's `max_decoding_message_size`). Larger than
/// one partition's set so a produce can carry several partitions; a single partition's set is
/// still bounded by [`MESSAGE_SET_BYTES_MAX`] and answered with RECORD_LIST_TOO_LARGE.
pub const REQUEST_BYTES_MAX: u32 = 2 * MESSAGE_SET_BYTES_MAX + (1 << 20);
/// Default (and largest useful) bytes a fetch returns for one partition when the request says 0
/// (Kafka's `max.partition.fetch.bytes` default).
pub const FETCH_PARTITION_BYTES_DEFAULT: u32 = 1 << 20;
/// Default bytes of a whole fetch response when the request says 0 (Kafka's `fetch.max.bytes`).
pub const FETCH_RESPONSE_BYTES_DEFAULT: u32 = 50 << 20;
/// Largest gRPC response the broker encodes: a full fetch plus one oversized first entry
/// (KIP-74: the first entry is returned whole even when larger than the fetch's max bytes).
pub const RESPONSE_BYTES_MAX: u32 = FETCH_BYTES_MAX + MESSAGE_BYTES_MAX + (1 << 20);
/// Longest `max_wait_ms` a fetch may ask for; larger values are INVALID_REQUEST.
pub const FETCH_WAIT_MS_MAX: u32 = 30_000;
/// Most partitions one produce, fetch or list-offsets request may name.
pub const REQUEST_PARTITIONS_MAX: usize = 4096;
/// Longest `timeout_ms` a produce may ask for.
pub const PRODUCE_TIMEOUT_MS_MAX: u32 = 300_000;

/// Most client connections the broker holds open at once; further connections wait in the
/// kernel's accept backlog until one closes.
pub const CONNECTIONS_MAX: usize = 4096;
/// A new connection must send its first bytes (the HTTP/2 preface) within this time or it is
/// closed, so idle sockets cannot hold connection slots.
pub const CONNECTION_FIRST_BYTES_TIMEOUT_MS: u64 = 10_000;
/// Most concurrent gRPC streams (requests) on one connection (HTTP/2 `max_concurrent_streams`).
pub const STREAMS_PER_CONNECTION_MAX: u32 = 256;
/// HTTP/2 flow-control windows every client, broker and follower connection advertises: one
/// stream may have this many bytes unacknowledged (a 1 MiB produce request or a multi-MiB fetch
/// answer then flows without waiting for a WINDOW_UPDATE round trip; hyper's defaults are
/// 1 MiB on a server and 2 MiB on a client), and the connection as a whole, for the requests in
/// flight together. Credit, not memory: bytes are held only while a reader lags.
pub const HTTP2_STREAM_WINDOW_BYTES: u32 = 8 << 20;
pub const HTTP2_CONNECTION_WINDOW_BYTES: u32 = 32 << 20;
/// Largest HTTP/2 frame every broker, client and follower connection accepts: HTTP/2's
/// largest. The default 16 KiB cuts a 1 MiB request or fetch answer into 64 frames, and the
/// receiver then reads the socket in pieces of at most a frame (~8 KB per `recv` on a consumer
/// reading a backlog). With this a fetched message set goes out as one DATA frame (the broker
/// sends each set as a frame of its own, as far as the flow-control window allows), which the
/// client decodes without copying (`client/fetch_call.rs`). A frame is still bounded by the
/// windows below, so this adds no memory.
pub const HTTP2_FRAME_BYTES_MAX: u32 = (1 << 24) - 1;
/// Most produce, list-offsets and admin requests the broker works on at once, over all
/// connections (acks=0 appends still running in the background count too).
pub const IN_FLIGHT_REQUESTS_MAX: usize = 1024;
/// Most fetches waiting (long poll) or reading at once, over all connections.
pub const IN_FLIGHT_FETCHES_MAX: usize = 4096;
/// How long a request may wait for an in-flight slot before REQUEST_TIMED_OUT.
pub const IN_FLIGHT_WAIT_MS_MAX: u64 = 30_000;
/// Producer sessions whose request order a partition's leader tracks
/// (`ProduceRequest.session`); beyond it the least recently used one is forgotten.
pub const PRODUCE_ORDER_SESSIONS_MAX: usize = 256;
/// How long a graceful shutdown waits for in-flight requests before closing the logs anyway.
pub const SHUTDOWN_GRACE_MS: u64 = 30_000;

/// How often the broker calls `PartitionLog::tick` (age rolls, interval flushes).
pub const LOG_TICK_INTERVAL_MS: u64 = 200;
/// Default interval between retention passes (Kafka's `log.retention.check.interval.ms` is 5 min).
pub const RETENTION_CHECK_INTERVAL_MS_DEFAULT: u64 = 60_000;

/// Most concurrent connections to the metrics endpoint.
pub const METRICS_CONNECTIONS_MAX: usize = 16;
/// Largest HTTP request head the metrics endpoint reads.
pub const METRICS_REQUEST_BYTES_MAX: usize = 8 << 10;
/// How long the metrics endpoint waits for a request head.
pub const METRICS_REQUEST_TIMEOUT_MS: u64 = 5_000;

/// glibc malloc settings of the `sluiceway` process (broker and command-line clients). With
/// glibc's defaults every buffer of a fetched or produced set (~1 MiB) is above the mmap
/// threshold or freed into a heap top above the trim threshold, so its memory goes back to the
/// kernel and the next set faults fresh zeroed pages in: a consumer reading 2 GB took 250-470k
/// page faults, ~19 % of its CPU. Allocations below `MALLOC_MMAP_THRESHOLD_BYTES` come from the
/// heap, and up to `MALLOC_TRIM_THRESHOLD_BYTES` of free heap top is kept for reuse.
pub const MALLOC_MMAP_THRESHOLD_BYTES: usize = 32 << 20;
pub const MALLOC_TRIM_THRESHOLD_BYTES: usize = 128 << 20;
/// glibc refuses an mmap threshold above HEAP_MAX_SIZE / 2 (32 MiB on 64-bit).
const _: () = assert!(MALLOC_MMAP_THRESHOLD_BYTES <= 32 << 20);
const _: () = assert!(MALLOC_MMAP_THRESHOLD_BYTES >= FETCH_PARTITION_BYTES_DEFAULT as usize * 2);
const _: () = assert!(MALLOC_TRIM_THRESHOLD_BYTES >= MALLOC_MMAP_THRESHOLD_BYTES);

/// The command-line producer: most messages in one partition's set.
pub const CLI_BATCH_MESSAGES_MAX: usize = 10_000;
/// Messages `sluiceway produce` has sent but not seen acknowledged before it waits for the
/// oldest: bounds the delivery futures held (the producer's `buffer.memory` bounds the bytes).
pub const CLI_UNACKED_MESSAGES_MAX: usize = 4 * CLI_BATCH_MESSAGES_MAX;
/// The command-line producer: most bytes of messages in one produce request.
pub const CLI_BATCH_BYTES_MAX: usize = 1 << 20;

const _: () = assert!(REQUEST_BYTES_MAX > MESSAGE_SET_BYTES_MAX);
const _: () = assert!(FETCH_PARTITION_BYTES_DEFAULT <= FETCH_RESPONSE_BYTES_DEFAULT);
// A default-sized partition's set fits in one frame, and in the stream's window.
const _: () = assert!(FETCH_PARTITION_BYTES_DEFAULT < HTTP2_FRAME_BYTES_MAX);
const _: () = assert!(FETCH_PARTITION_BYTES_DEFAULT < HTTP2_STREAM_WINDOW_BYTES);
const _: () = assert!(FETCH_RESPONSE_BYTES_DEFAULT <= FETCH_BYTES_MAX);
const _: () =
    assert!(RESPONSE_BYTES_MAX as u64 >= FETCH_BYTES_MAX as u64 + MESSAGE_BYTES_MAX as u64);
const _: () = assert!((FETCH_WAIT_MS_MAX as u64) < IN_FLIGHT_WAIT_MS_MAX + SHUTDOWN_GRACE_MS);
const _: () = assert!(CLI_BATCH_BYTES_MAX as u64 <= MESSAGE_SET_BYTES_MAX as u64);
// A partition directory `<topic>-<partition>` must fit a 255-byte file name: partition numbers
// below PARTITIONS_PER_TOPIC_MAX have at most 5 digits.
const _: () = assert!(PARTITIONS_PER_TOPIC_MAX < 100_000 && TOPIC_NAME_BYTES_MAX + 1 + 5 <= 255);

/// How long an acks=all produce waits for the in-sync replicas when its `timeout_ms` is 0.
pub const ACKS_ALL_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// How long CreateTopic / DeleteTopic in a cluster wait for the receiving broker to apply the
/// change (so the next request to that broker sees it); the change is made either way.
pub const ADMIN_APPLY_WAIT_MS: u64 = 5_000;
/// Connections accepted (and past their first-bytes check) that may queue for the gRPC server
/// before the accept loop waits; the connection slots ([`CONNECTIONS_MAX`]) bound them anyway.
pub const SERVER_ACCEPTED_QUEUE_CONNECTIONS: usize = 64;
/// Pause of the accept loop after a failed `accept` (out of file descriptors and the like), so
/// it backs off instead of spinning.
pub const SERVER_ACCEPT_RETRY_MS: u64 = 50;
/// HTTP/2 keep-alive pings on a broker's connections: the interval, and how long an
/// unanswered ping waits before the connection is closed.
pub const SERVER_KEEPALIVE_INTERVAL_MS: u64 = 30_000;
pub const SERVER_KEEPALIVE_TIMEOUT_MS: u64 = 10_000;
/// How long one poll of `sluiceway consume` waits when `--timeout-ms` is not given (the loop
/// then runs until a signal or `--max-messages`).
pub const CLI_CONSUME_POLL_MS: u64 = 1_000;
const _: () = assert!(ACKS_ALL_TIMEOUT_MS_DEFAULT <= PRODUCE_TIMEOUT_MS_MAX as u64);
const _: () = assert!(SERVER_ACCEPTED_QUEUE_CONNECTIONS <= CONNECTIONS_MAX);
const _: () = assert!(SERVER_KEEPALIVE_TIMEOUT_MS < SERVER_KEEPALIVE_INTERVAL_MS);

// ---- Replication (the broker's `replication/`) ----

/// `--replica-lag-time-max-ms` (Kafka's `replica.lag.time.max.ms`): how long an ISR follower
/// may go without being caught up before the leader proposes it out; default and bounds.
pub const REPLICA_LAG_TIME_MAX_MS_DEFAULT: u64 = 30_000;
pub const REPLICA_LAG_TIME_MAX_MS_MIN: u64 = 100;
pub const REPLICA_LAG_TIME_MAX_MS_MAX: u64 = 3_600_000;
/// `--replica-fetch-wait-max-ms` default (Kafka's `replica.fetch.wait.max.ms`): the long-poll
/// wait of a follower's fetch. Below the lag time, so an idle caught-up follower stays in sync.
pub const REPLICA_FETCH_WAIT_MAX_MS_DEFAULT: u32 = 500;
/// The role loop re-applies the registry this often even without a change (retries logs that
/// failed to open; cheap: reads come from the registry's in-memory snapshot).
pub const ROLE_RECHECK_INTERVAL_MS: u64 = 5_000;
/// Bounds of the ISR shrink check's period (Kafka checks every lag/2; bounded so a short lag
/// time is honoured promptly without spinning, and a long one does not stall the check).
pub const ISR_CHECK_INTERVAL_MS_MIN: u64 = 10;
pub const ISR_CHECK_INTERVAL_MS_MAX: u64 = 1_000;
/// Back-off of a follower's fetcher after a failed request to a leader: doubles from the
/// minimum to the maximum.
pub const REPLICA_BACKOFF_MS_MIN: u64 = 100;
pub const REPLICA_BACKOFF_MS_MAX: u64 = 1_000;
/// A partition the leader fenced (we are behind) waits for the next registry change, at most
/// this long.
pub const REPLICA_PAUSE_MS: u64 = 1_000;
/// A partition the leader does not (yet) lead at our epoch retries after this long.
pub const REPLICA_RETRY_MS: u64 = 200;
/// Longest a fetcher with nothing to fetch sleeps before looking again (a role change wakes it
/// earlier).
pub const REPLICA_IDLE_WAIT_MS: u64 = 3_600_000;
/// Kafka's `replica.fetch.max.bytes` (per partition) and `replica.fetch.response.max.bytes`.
pub const REPLICA_FETCH_PARTITION_BYTES: u32 = 1 << 20;
pub const REPLICA_FETCH_RESPONSE_BYTES: u32 = 10 << 20;
/// Connecting to a leader gives up after this long (then backs off and retries).
pub const REPLICA_CONNECT_TIMEOUT_MS: u64 = 3_000;
/// A follower's request deadline beyond its long-poll wait (and OffsetForLeaderEpoch's).
pub const REPLICA_REQUEST_SLACK_MS: u64 = 10_000;
const _: () = assert!(REPLICA_LAG_TIME_MAX_MS_MIN <= REPLICA_LAG_TIME_MAX_MS_DEFAULT);
const _: () = assert!(REPLICA_LAG_TIME_MAX_MS_DEFAULT <= REPLICA_LAG_TIME_MAX_MS_MAX);
const _: () = assert!((REPLICA_FETCH_WAIT_MAX_MS_DEFAULT as u64) < REPLICA_LAG_TIME_MAX_MS_DEFAULT);
const _: () = assert!(REPLICA_FETCH_WAIT_MAX_MS_DEFAULT <= FETCH_WAIT_MS_MAX);
const _: () = assert!(ISR_CHECK_INTERVAL_MS_MIN <= ISR_CHECK_INTERVAL_MS_MAX);
const _: () = assert!(REPLICA_FETCH_PARTITION_BYTES <= REPLICA_FETCH_RESPONSE_BYTES);
const _: () = assert!(REPLICA_FETCH_RESPONSE_BYTES <= FETCH_BYTES_MAX);
const _: () = assert!(REPLICA_BACKOFF_MS_MIN <= REPLICA_BACKOFF_MS_MAX);

/// Most members one consumer group may hold (Kafka's `group.max.size`).
pub const GROUP_MEMBERS_MAX: usize = 1000;
/// Bounds on a member's `session.timeout.ms` (Kafka's `group.min/max.session.timeout.ms`; the
/// minimum is lower than Kafka's 6 s so tests and small deployments can detect failures fast).
pub const GROUP_SESSION_TIMEOUT_MS_MIN: u64 = 500;
pub const GROUP_SESSION_TIMEOUT_MS_MAX: u64 = 30 * 60 * 1000;
const _: () = assert!(GROUP_SESSION_TIMEOUT_MS_MIN < GROUP_SESSION_TIMEOUT_MS_MAX);
/// Most offsets one group commit may carry.
pub const GROUP_COMMIT_OFFSETS_MAX: usize = 10_000;
/// Largest `metadata` string attached to one committed offset (Kafka's
/// `offset.metadata.max.bytes` default).
pub const GROUP_METADATA_BYTES_MAX: usize = 4096;
/// Default partition count of `__consumer_offsets` (Kafka uses 50; a Sluiceway broker is often
/// alone and each partition is a directory of files, so fewer).
pub const OFFSETS_TOPIC_PARTITIONS_DEFAULT: u32 = 4;
/// Replication factor of `__consumer_offsets` in a cluster (Kafka's
/// `offsets.topic.replication.factor` default): created only once this many brokers are alive.
pub const OFFSETS_TOPIC_REPLICATION_FACTOR_DEFAULT: u32 = 3;
/// How long a group commit (or an offsets snapshot) waits for the in-sync replicas of its
/// `__consumer_offsets` partition before it fails as COORDINATOR_NOT_AVAILABLE (Kafka's
/// `offsets.commit.timeout.ms`).
pub const OFFSETS_COMMIT_TIMEOUT_MS: u64 = 5_000;
/// Longest group id.
pub const GROUP_ID_BYTES_MAX: usize = 255;
/// Longest `rebalance_timeout_ms` a member may ask for (Kafka's `max.poll.interval.ms` has no
/// bound; ours keeps every pending join answered within a known time).
pub const GROUP_REBALANCE_TIMEOUT_MS_MAX: u64 = GROUP_SESSION_TIMEOUT_MS_MAX;
/// `--group-initial-rebalance-delay-ms`: how long a rebalance that starts from an empty group
/// waits for more members, again after each window in which one joined (Kafka's
/// `group.initial.rebalance.delay.ms` and its default), so consumers started together share the
/// partitions from their first generation. The windows together never outlast the rebalance
/// timeout, so a longer setting than the longest rebalance timeout would have no effect.
pub const GROUP_INITIAL_REBALANCE_DELAY_MS_DEFAULT: u64 = 3_000;
pub const GROUP_INITIAL_REBALANCE_DELAY_MS_MAX: u64 = GROUP_REBALANCE_TIMEOUT_MS_MAX;
const _: () =
    assert!(GROUP_INITIAL_REBALANCE_DELAY_MS_DEFAULT <= GROUP_INITIAL_REBALANCE_DELAY_MS_MAX);
// Consumers with the default max.poll.interval.ms get the whole default delay.
const _: () =
    assert!(GROUP_INITIAL_REBALANCE_DELAY_MS_DEFAULT < CONSUMER_MAX_POLL_INTERVAL_MS_DEFAULT);
/// Extra time a pending JoinGroup waits beyond the longest possible rebalance before the broker
/// gives up on it (REQUEST_TIMED_OUT). A backstop only: the coordinator's own deadline answers
/// every join before it.
pub const GROUP_JOIN_SLACK_MS: u64 = 5_000;
/// Most consumer groups one broker coordinates at once (a new group beyond it is refused with
/// GROUP_MAX_SIZE_REACHED); empty groups are forgotten, so this bounds live groups only.
pub const GROUPS_MAX: usize = 10_000;
/// A `__consumer_offsets` partition log larger than this is compacted: the partition's current
/// state is appended as a snapshot and every segment wholly before it is deleted. The log then
/// holds at most about this bound plus one snapshot (the bound is raised to twice the last
/// snapshot's size when the live state itself is large, so compaction never runs back to back).
pub const OFFSETS_TOPIC_COMPACT_BYTES: u64 = 64 << 20;
/// Largest message set of a `__consumer_offsets` snapshot (a snapshot is written as several).
pub const OFFSETS_SNAPSHOT_SET_BYTES_MAX: u32 = 1 << 20;
const _: () = assert!(OFFSETS_SNAPSHOT_SET_BYTES_MAX <= MESSAGE_SET_BYTES_MAX);
// One record (key with the longest group id and topic, value with the longest metadata) fits a
// snapshot set with room to spare.
const _: () = assert!(
    (LOG_OVERHEAD_BYTES + MESSAGE_V1_HEADER_BYTES) as usize
        + 2
        + 2
        + GROUP_ID_BYTES_MAX
        + 2
        + TOPIC_NAME_BYTES_MAX
        + 4
        + 2
        + 8
        + 2
        + GROUP_METADATA_BYTES_MAX
        + 16
        < OFFSETS_SNAPSHOT_SET_BYTES_MAX as usize / 16
);
const _: () = assert!(GROUP_ID_BYTES_MAX == CLIENT_ID_BYTES_MAX);

// ---- The client core (`client/`): producer, consumer, offset store, admin ----

/// Most addresses `bootstrap.servers` may list.
pub const CLIENT_BOOTSTRAP_SERVERS_MAX: usize = 64;
/// Longest `client.id` and `group.id`.
pub const CLIENT_ID_BYTES_MAX: usize = 255;
/// `request.timeout.ms`: default (Kafka's) and bounds.
pub const CLIENT_REQUEST_TIMEOUT_MS_DEFAULT: u64 = 30_000;
pub const CLIENT_REQUEST_TIMEOUT_MS_MIN: u64 = 10;
pub const CLIENT_REQUEST_TIMEOUT_MS_MAX: u64 = 300_000;
/// `retry.backoff.ms`: default (Kafka's) and largest.
pub const CLIENT_RETRY_BACKOFF_MS_DEFAULT: u64 = 100;
pub const CLIENT_RETRY_BACKOFF_MS_MAX: u64 = 60_000;
/// `metadata.max.age.ms`: default (Kafka's) and bounds.
pub const CLIENT_METADATA_MAX_AGE_MS_DEFAULT: u64 = 300_000;
pub const CLIENT_METADATA_MAX_AGE_MS_MIN: u64 = 100;
pub const CLIENT_METADATA_MAX_AGE_MS_MAX: u64 = 24 * 3600 * 1000;
/// Shortest interval between two metadata refreshes triggered by errors, so a burst of
/// NOT_LEADER answers costs one round trip, not one per batch.
pub const CLIENT_METADATA_REFRESH_MS_MIN: u64 = 50;
/// Most topics a client's metadata cache tracks.
pub const CLIENT_METADATA_TOPICS_MAX: usize = TOPICS_MAX;

/// `linger.ms`: default (Kafka ≥ 4.0's) and largest.
pub const PRODUCER_LINGER_MS_DEFAULT: u64 = 5;
pub const PRODUCER_LINGER_MS_MAX: u64 = 60_000;
/// `batch.size`: default (Kafka's) and largest (one partition's set in one request).
pub const PRODUCER_BATCH_BYTES_DEFAULT: u32 = 16 << 10;
pub const PRODUCER_BATCH_BYTES_MAX: u32 = MESSAGE_SET_BYTES_MAX;
/// `buffer.memory`: bytes of records a producer holds queued or in flight (Kafka's default);
/// `send` waits up to `max.block.ms` for room, then fails with REQUEST_TIMED_OUT.
pub const PRODUCER_BUFFER_BYTES_DEFAULT: u64 = 32 << 20;
pub const PRODUCER_BUFFER_BYTES_MIN: u64 = MESSAGE_BYTES_MAX as u64 + (1 << 20);
pub const PRODUCER_BUFFER_BYTES_MAX: u64 = 4 << 30;
/// `max.block.ms`: longest `send` waits for metadata or buffer room.
pub const PRODUCER_MAX_BLOCK_MS_DEFAULT: u64 = 60_000;
pub const PRODUCER_MAX_BLOCK_MS_MAX: u64 = 3_600_000;
/// `retries`: Kafka's default (effectively "until delivery.timeout.ms").
pub const PRODUCER_RETRIES_DEFAULT: u32 = i32::MAX as u32;
/// `delivery.timeout.ms`: default (Kafka's) and largest. Every retry loop ends by this deadline.
pub const PRODUCER_DELIVERY_TIMEOUT_MS_DEFAULT: u64 = 120_000;
pub const PRODUCER_DELIVERY_TIMEOUT_MS_MAX: u64 = 24 * 3600 * 1000;
/// `max.in.flight.requests.per.connection`: default (Kafka's) and largest.
pub const PRODUCER_IN_FLIGHT_PER_BROKER_DEFAULT: u32 = 5;
pub const PRODUCER_IN_FLIGHT_PER_BROKER_MAX: u32 = 64;
/// `max.in.flight.requests.per.connection` an idempotent producer allows (Kafka's bound: the
/// broker remembers a producer's last 5 batches per partition).
pub const PRODUCER_IDEMPOTENT_IN_FLIGHT_MAX: u32 = PRODUCER_BATCHES_RETAINED as u32;
/// Most bytes of sets the producer puts in one Produce request (below the broker's decoding limit):
/// the largest `max.request.size`.
pub const PRODUCER_REQUEST_BYTES_MAX: u32 = REQUEST_BYTES_MAX - (1 << 20);
/// `max.request.size`: default (Kafka's) and smallest. A partition's queued batches go out in one
/// request up to this many bytes (one in flight per partition keeps order), so a single busy
/// partition moves a request of this size per round trip instead of one batch.
pub const PRODUCER_REQUEST_BYTES_DEFAULT: u32 = 1 << 20;
pub const PRODUCER_REQUEST_BYTES_MIN: u32 = 1 << 10;
/// Most batches `close()` waits for is bounded by `buffer.memory`; this bounds how long it waits
/// beyond `delivery.timeout.ms` before failing what is left with SHUTTING_DOWN.
pub const PRODUCER_CLOSE_GRACE_MS: u64 = 5_000;

/// Consumer defaults (Kafka's) and bounds.
pub const CONSUMER_AUTO_COMMIT_INTERVAL_MS_DEFAULT: u64 = 5_000;
pub const CONSUMER_AUTO_COMMIT_INTERVAL_MS_MIN: u64 = 1;
pub const CONSUMER_AUTO_COMMIT_INTERVAL_MS_MAX: u64 = 24 * 3600 * 1000;
pub const CONSUMER_FETCH_MIN_BYTES_DEFAULT: u32 = 1;
pub const CONSUMER_FETCH_MAX_WAIT_MS_DEFAULT: u32 = 500;
pub const CONSUMER_MAX_POLL_RECORDS_DEFAULT: u32 = 500;
/// How long a poll waits for records when the application names no wait (the Node client's
/// `run()` without `maxWaitTimeInMs`, kafkajs's default): long enough that an idle consumer
/// wakes rarely, short enough that a loop notices it was stopped.
pub const CONSUMER_POLL_TIMEOUT_MS_DEFAULT: u32 = 5_000;
pub const CONSUMER_MAX_POLL_RECORDS_MAX: u32 = 1_000_000;
/// Kafka's default `session.timeout.ms` (since 3.0).
pub const CONSUMER_SESSION_TIMEOUT_MS_DEFAULT: u64 = 45_000;
/// Smallest `heartbeat.interval.ms` (and the floor of the derived one).
pub const CONSUMER_HEARTBEAT_INTERVAL_MS_MIN: u64 = 10;
/// Kafka's default `heartbeat.interval.ms`; with a session timeout under three times this,
/// a third of the session is used instead. It also bounds how long a stable member takes to
/// notice a rebalance (its next heartbeat answers REBALANCE_IN_PROGRESS), i.e. how long a
/// member joining a group waits for its partitions.
pub const CONSUMER_HEARTBEAT_INTERVAL_MS_DEFAULT: u64 = 3_000;
/// Kafka's default `max.poll.interval.ms`, sent as the join's rebalance timeout.
pub const CONSUMER_MAX_POLL_INTERVAL_MS_DEFAULT: u64 = 300_000;
/// Attempts of one group request (join, commit, fetch offsets, describe) on connection or
/// retriable errors before the error is returned; the attempts also stop at
/// `request.timeout.ms`. With the backoff doubling from 100 ms to 5 s, 12 attempts span about
/// 30 s: a coordinator failover (a lease timeout plus an election) fits.
pub const CONSUMER_GROUP_RETRIES_MAX: u32 = 12;
/// Longest wait between two attempts to rejoin a group after a failure.
pub const CONSUMER_GROUP_BACKOFF_MS_MAX: u64 = 5_000;
/// Topics one `subscribe` may name.
pub const CONSUMER_SUBSCRIBE_TOPICS_MAX: usize = 1_000;
/// Largest `--messages` and in-flight window of `sluiceway bench`.
pub const BENCH_MESSAGES_MAX: u64 = 1_000_000_000;
pub const BENCH_IN_FLIGHT_MAX: usize = 100_000;
/// Largest `--size` of a benchmark message.
pub const BENCH_MESSAGE_BYTES_MAX: usize = 1 << 20;
/// Highest `--rate` (messages/s) of `sluiceway bench`.
pub const BENCH_RATE_MAX: u64 = 100_000_000;
/// Most producers, and most consumers, one `sluiceway bench` run starts.
pub const BENCH_CLIENTS_MAX: usize = 64;
/// Bytes of fetched, not yet polled data the consumer buffers (beyond this it stops
/// prefetching until `poll` drains it); `fetch.max.bytes` above this is clamped to it.
pub const CONSUMER_BUFFER_BYTES_MAX: u64 = FETCH_BYTES_MAX as u64;
/// Largest local offset-store file the consumer reads.
pub const OFFSET_STORE_BYTES_MAX: u64 = 16 << 20;
/// How long opening a local offset store waits for its lock before reporting it in use. A
/// consumer closed or dropped a moment ago releases its store only when its last in-flight
/// fetch ends (up to `fetch.max.wait.ms`, 500 ms by default), and a restarted process may start
/// before the old one has exited; a store held for longer belongs to a live consumer.
pub const OFFSET_STORE_LOCK_WAIT_MS: u64 = 2_000;
/// Pause between two attempts to take that lock.
pub const OFFSET_STORE_LOCK_RETRY_MS: u64 = 10;

const _: () = assert!(PRODUCER_BATCH_BYTES_DEFAULT <= PRODUCER_BATCH_BYTES_MAX);
const _: () = assert!(PRODUCER_BATCH_BYTES_MAX as u64 <= PRODUCER_BUFFER_BYTES_MIN);
const _: () = assert!(PRODUCER_BUFFER_BYTES_MIN <= PRODUCER_BUFFER_BYTES_DEFAULT);
const _: () = assert!(PRODUCER_BUFFER_BYTES_DEFAULT <= PRODUCER_BUFFER_BYTES_MAX);
const _: () = assert!(PRODUCER_REQUEST_BYTES_MAX >= MESSAGE_SET_BYTES_MAX);
const _: () = assert!(PRODUCER_REQUEST_BYTES_MIN <= PRODUCER_REQUEST_BYTES_DEFAULT);
const _: () = assert!(PRODUCER_REQUEST_BYTES_DEFAULT <= PRODUCER_REQUEST_BYTES_MAX);
const _: () = assert!(CLIENT_REQUEST_TIMEOUT_MS_DEFAULT <= CLIENT_REQUEST_TIMEOUT_MS_MAX);
const _: () = assert!(CLIENT_METADATA_REFRESH_MS_MIN <= CLIENT_METADATA_MAX_AGE_MS_MIN);
const _: () = assert!(CONSUMER_FETCH_MAX_WAIT_MS_DEFAULT <= FETCH_WAIT_MS_MAX);
const _: () = assert!(CONSUMER_FETCH_MAX_WAIT_MS_DEFAULT <= CONSUMER_POLL_TIMEOUT_MS_DEFAULT);
const _: () = assert!(CONSUMER_BUFFER_BYTES_MAX >= FETCH_RESPONSE_BYTES_DEFAULT as u64);
const _: () = assert!(CONSUMER_SESSION_TIMEOUT_MS_DEFAULT >= GROUP_SESSION_TIMEOUT_MS_MIN);
const _: () = assert!(CONSUMER_SESSION_TIMEOUT_MS_DEFAULT <= GROUP_SESSION_TIMEOUT_MS_MAX);
const _: () = assert!(CONSUMER_MAX_POLL_INTERVAL_MS_DEFAULT <= GROUP_REBALANCE_TIMEOUT_MS_MAX);
const _: () = assert!(CONSUMER_HEARTBEAT_INTERVAL_MS_MIN * 3 <= GROUP_SESSION_TIMEOUT_MS_MIN);
const _: () = assert!(CONSUMER_HEARTBEAT_INTERVAL_MS_MIN <= CONSUMER_HEARTBEAT_INTERVAL_MS_DEFAULT);
const _: () =
    assert!(CONSUMER_HEARTBEAT_INTERVAL_MS_DEFAULT * 3 <= CONSUMER_SESSION_TIMEOUT_MS_DEFAULT);
const _: () = assert!(OFFSET_STORE_LOCK_RETRY_MS < OFFSET_STORE_LOCK_WAIT_MS);

// ---- The client core's runtime and boundary ----

/// Most worker threads of the client runtime (`client/runtime.rs`): clients are I/O-bound, so
/// more threads would add wake-ups, not throughput.
pub const CLIENT_RUNTIME_WORKER_THREADS_MAX: usize = 4;
/// How often a blocking client call asks a binding's interrupt check (`client/runtime.rs`)
/// whether to give up (Python's Ctrl-C): short enough to feel immediate, long enough to cost
/// nothing.
pub const CLIENT_INTERRUPT_CHECK_INTERVAL_MS: u64 = 100;
/// How long a topic the registry said does not exist is answered from the client's cache
/// ("missing") before it is asked about again: a batch of sends to a mistyped topic costs one
/// lookup, and a topic created a moment later is found soon after.
pub const CLIENT_MISSING_TOPIC_TTL_MS: u64 = 1_000;
const _: () = assert!(CLIENT_MISSING_TOPIC_TTL_MS >= CLIENT_METADATA_REFRESH_MS_MIN);
/// Rebalance events a consumer keeps for its next `poll_batch` (one rebalance makes two).
pub const CONSUMER_EVENTS_MAX: usize = 64;

// ---- The idempotent producer's state on the broker (`storage/producer_state.rs`) ----

/// Runs of batches remembered per producer for duplicate detection (Kafka's
/// `NUM_BATCHES_TO_RETAIN`, of batches: a Kafka producer has at most this many requests in
/// flight per partition, one batch each; a run is the batches one of ours sends together,
/// `storage/producer_state.rs`).
pub const PRODUCER_BATCHES_RETAINED: usize = 5;
/// Producer ids a broker takes from the registry at once (Kafka's KIP-730 block size): one
/// registry write per this many `InitProducerId` requests.
pub const PRODUCER_ID_BLOCK_SIZE: u32 = 1_000;
/// Idempotent producers one partition tracks at once: bounds the table's memory (about 300 bytes
/// a producer) and a snapshot's size. A new producer past it evicts the least recent one.
pub const PRODUCER_STATE_PRODUCERS_MAX: usize = 65_536;
/// Bytes per read when the producer state is rebuilt from the log (on open after a crash, or a
/// truncation): the replay's memory bound.
pub const PRODUCER_STATE_REPLAY_BYTES: u32 = 1 << 20;

// ---- Security (TLS, SASL credentials, ACLs) ----

/// Longest `sasl.username` (bytes of UTF-8), on clients and in the broker's credential store.
pub const SASL_USERNAME_BYTES_MAX: usize = 256;
/// Longest `sasl.password` (bytes of UTF-8).
pub const SASL_PASSWORD_BYTES_MAX: usize = 1024;
/// Largest PEM file (CA bundle, certificate chain, key) a client or broker reads.
pub const SSL_PEM_FILE_BYTES_MAX: u64 = 1 << 20;
/// Salt of a new SCRAM credential (random bytes).
pub const SCRAM_SALT_BYTES: usize = 16;
/// PBKDF2 iterations of a new credential: Kafka's minimum and `kafka-configs` default.
pub const SCRAM_ITERATIONS_DEFAULT: u32 = 4096;
/// Kafka's bounds on SCRAM iterations.
pub const SCRAM_ITERATIONS_MIN: u32 = 4096;
pub const SCRAM_ITERATIONS_MAX: u32 = 16384;
const _: () = assert!(SCRAM_ITERATIONS_MIN <= SCRAM_ITERATIONS_DEFAULT);
const _: () = assert!(SCRAM_ITERATIONS_DEFAULT <= SCRAM_ITERATIONS_MAX);
/// Successful password checks a broker remembers (user + hash of the password), so PBKDF2 runs
/// once per user and password, not per request. Cleared when full.
pub const AUTH_CACHE_ENTRIES_MAX: usize = 4096;
/// Longest ACL resource name or principal name (bytes).
pub const ACL_NAME_BYTES_MAX: usize = 512;
/// Most ACL bindings a cluster stores (every request scans the matching ones).
pub const ACLS_MAX: usize = 10_000;
/// Most users with stored credentials.
pub const USERS_MAX: usize = 10_000;

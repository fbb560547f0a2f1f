//! Every bound in Sluiceway, in one place, each named with its unit last, with compile-time
//! checks of how they relate. A queue, buffer, retry loop or in-flight map gets its bound here.

/// Bytes of the per-entry log overhead: offset (8) + size (4).
pub const LOG_OVERHEAD_BYTES: u32 = 12;

/// Smallest valid message: crc 4 + magic 1 + attributes 1 + key length 4 + value length 4 (magic 0).
pub const MESSAGE_V0_HEADER_BYTES: u32 = 14;
/// Magic 1 adds an 8-byte timestamp.
pub const MESSAGE_V1_HEADER_BYTES: u32 = 22;

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

/// Most inner messages one compressed wrapper may hold (relative offsets are dense from 0).
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
const _: () = assert!(SEGMENT_BYTES_MIN <= SEGMENT_BYTES_DEFAULT && SEGMENT_BYTES_DEFAULT <= SEGMENT_BYTES_MAX);
const _: () = assert!(INDEX_BYTES_MAX_DEFAULT % OFFSET_INDEX_ENTRY_BYTES == 0);
const _: () = assert!(MESSAGE_V0_HEADER_BYTES + LOG_OVERHEAD_BYTES <= MESSAGE_BYTES_MAX);
const _: () = assert!(FETCH_BYTES_MAX >= MESSAGE_SET_BYTES_MAX);
const _: () = assert!(INDEX_BYTES_MIN <= INDEX_BYTES_MAX_DEFAULT && INDEX_BYTES_MAX_DEFAULT <= INDEX_BYTES_MAX);
const _: () = assert!(INDEX_BYTES_MIN >= 2 * TIME_INDEX_ENTRY_BYTES && INDEX_BYTES_MIN >= 2 * OFFSET_INDEX_ENTRY_BYTES);
const _: () = assert!(SCAN_CHUNK_BYTES >= LOG_OVERHEAD_BYTES + MESSAGE_V1_HEADER_BYTES);

//! Per-partition log configuration, with Kafka's topic-config names in every error so an
//! operator can map a rejection to the key they set (`segment.bytes`, `retention.ms`, …).

use crate::error::{Error, Result};
use crate::format::TimestampType;
use crate::limits::{
    FLUSH_INTERVAL_MS_DEFAULT, INDEX_BYTES_MAX, INDEX_BYTES_MAX_DEFAULT, INDEX_BYTES_MIN,
    INDEX_INTERVAL_BYTES_DEFAULT, MESSAGE_BYTES_DEFAULT, MESSAGE_BYTES_MAX,
    MESSAGE_V0_HEADER_BYTES, RETENTION_MS_DEFAULT, SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_MAX,
    SEGMENT_BYTES_MIN, SEGMENT_MS_DEFAULT,
};

/// When appended data is forced to disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum FlushPolicy {
    /// fsync before an append returns; concurrent appends share one fsync (group commit).
    #[default]
    Always,
    /// fsync when at least `ms` milliseconds have passed since the last flush, checked on append
    /// and on [`tick`](super::PartitionLog::tick) (Kafka's `flush.ms`).
    Interval { ms: u64 },
    /// Leave it to the page cache (Kafka's default); fsync only on roll, flush and close.
    Os,
}

impl FlushPolicy {
    /// The `interval` policy at its default period.
    pub fn interval_default() -> FlushPolicy {
        FlushPolicy::Interval {
            ms: FLUSH_INTERVAL_MS_DEFAULT,
        }
    }
}

/// A partition log's configuration. Field names are Kafka's keys in snake case; see
/// [`LogConfig::validate`] for the bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes`: roll the active segment before it would grow past this.
    pub segment_bytes: u64,
    /// `segment.ms`: roll the active segment once it is this old (counted from its first append).
    pub segment_ms: u64,
    /// `retention.ms`: delete sealed segments whose newest message is older; `None` keeps forever.
    pub retention_ms: Option<u64>,
    /// `retention.bytes`: delete the oldest sealed segments while the log is larger; `None` = no bound.
    pub retention_bytes: Option<u64>,
    /// `index.interval.bytes`: bytes of log between two sparse offset-index entries.
    pub index_interval_bytes: u32,
    /// `segment.index.bytes`: size each index file is preallocated to; a full index rolls.
    pub index_bytes_max: u32,
    /// `max.message.bytes`: the largest (shallow) message accepted.
    pub max_message_bytes: u32,
    /// `message.timestamp.type`.
    pub timestamp_type: TimestampType,
    /// `flush.policy` (Sluiceway's; Kafka spreads it over `flush.ms` / `flush.messages`).
    pub flush: FlushPolicy,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            segment_ms: SEGMENT_MS_DEFAULT,
            retention_ms: Some(RETENTION_MS_DEFAULT),
            retention_bytes: None,
            index_interval_bytes: INDEX_INTERVAL_BYTES_DEFAULT,
            index_bytes_max: INDEX_BYTES_MAX_DEFAULT,
            max_message_bytes: MESSAGE_BYTES_DEFAULT,
            timestamp_type: TimestampType::CreateTime,
            flush: FlushPolicy::Always,
        }
    }
}

fn invalid(key: &str, reason: String) -> Error {
    Error::InvalidConfig {
        key: key.to_owned(),
        reason,
    }
}

impl LogConfig {
    /// Checks every field against the named limits. Errors name the Kafka key.
    pub fn validate(&self) -> Result<()> {
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return Err(invalid(
                "segment.bytes",
                format!(
                    "{} is outside [{SEGMENT_BYTES_MIN}, {SEGMENT_BYTES_MAX}]",
                    self.segment_bytes
                ),
            ));
        }
        if self.segment_ms == 0 {
            return Err(invalid("segment.ms", "must be at least 1".into()));
        }
        // Offsets relative to a segment's base are u32 in the indexes, and the age arithmetic is
        // done in i64 milliseconds: keep the durations representable.
        for (key, v) in [
            ("segment.ms", Some(self.segment_ms)),
            ("retention.ms", self.retention_ms),
        ] {
            if let Some(v) = v
                && v > i64::MAX as u64
            {
                return Err(invalid(
                    key,
                    format!("{v} does not fit a signed 64-bit millisecond count"),
                ));
            }
        }
        if u64::from(self.index_interval_bytes) > SEGMENT_BYTES_MAX {
            return Err(invalid(
                "index.interval.bytes",
                format!(
                    "{} exceeds the largest segment ({SEGMENT_BYTES_MAX})",
                    self.index_interval_bytes
                ),
            ));
        }
        if !(INDEX_BYTES_MIN..=INDEX_BYTES_MAX).contains(&self.index_bytes_max) {
            return Err(invalid(
                "segment.index.bytes",
                format!(
                    "{} is outside [{INDEX_BYTES_MIN}, {INDEX_BYTES_MAX}]",
                    self.index_bytes_max
                ),
            ));
        }
        if !(MESSAGE_V0_HEADER_BYTES..=MESSAGE_BYTES_MAX).contains(&self.max_message_bytes) {
            return Err(invalid(
                "max.message.bytes",
                format!(
                    "{} is outside [{MESSAGE_V0_HEADER_BYTES}, {MESSAGE_BYTES_MAX}]",
                    self.max_message_bytes
                ),
            ));
        }
        if let FlushPolicy::Interval { ms } = self.flush
            && (ms == 0 || ms > i64::MAX as u64)
        {
            return Err(invalid(
                "flush.ms",
                format!("{ms} must be at least 1 and fit a signed 64-bit count"),
            ));
        }
        Ok(())
    }
}

//! The partition log. (Being written: the public API is final, bodies are not.)
#![allow(unused_variables, dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::clock::Clock;
use super::config::LogConfig;
use crate::error::Result;
use crate::types::{Offset, TimestampMs};

/// What an append did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: Offset,
    pub last_offset: Offset,
    pub message_count: u64,
    /// The broker's time used for this append (always set, whatever the timestamp type).
    pub log_append_time: TimestampMs,
    pub max_timestamp: TimestampMs,
}

/// What a read returned.
#[derive(Debug)]
pub struct ReadResult {
    /// Whole entries only; may be empty.
    pub bytes: Vec<u8>,
    pub high_watermark: Offset,
    pub log_start_offset: Offset,
    pub log_end_offset: Offset,
}

/// One partition's log. All methods take `&self` and are safe to call from many threads:
/// appends are serialized inside, reads run concurrently with appends.
#[derive(Debug)]
pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    clock: Arc<dyn Clock>,
}

impl PartitionLog {
    /// `"<topic>-<partition>"`, Kafka's directory name.
    pub fn dir_name(topic: &str, partition: u32) -> String {
        format!("{topic}-{partition}")
    }

    /// Opens (creating if absent) and recovers the log in `dir`.
    pub fn open(dir: impl Into<PathBuf>, config: LogConfig, clock: Arc<dyn Clock>) -> Result<PartitionLog> {
        unimplemented!()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> LogConfig {
        self.config.clone()
    }

    pub fn append(&self, set: &mut [u8]) -> Result<AppendInfo> {
        unimplemented!()
    }

    pub fn read(&self, offset: Offset, max_bytes: u32, upper: Offset) -> Result<ReadResult> {
        unimplemented!()
    }

    pub fn offset_for_timestamp(&self, ts: TimestampMs) -> Result<Option<Offset>> {
        unimplemented!()
    }

    pub fn log_start_offset(&self) -> Offset {
        unimplemented!()
    }

    pub fn log_end_offset(&self) -> Offset {
        unimplemented!()
    }

    pub fn high_watermark(&self) -> Offset {
        unimplemented!()
    }

    pub fn set_high_watermark(&self, hw: Offset) {
        unimplemented!()
    }

    pub fn recovery_point(&self) -> Offset {
        unimplemented!()
    }

    pub fn size_bytes(&self) -> u64 {
        unimplemented!()
    }

    pub fn segment_count(&self) -> usize {
        unimplemented!()
    }

    pub fn enforce_retention(&self) -> Result<usize> {
        unimplemented!()
    }

    pub fn tick(&self) -> Result<()> {
        unimplemented!()
    }

    pub fn flush(&self) -> Result<()> {
        unimplemented!()
    }

    pub fn close(&self) -> Result<()> {
        unimplemented!()
    }

    pub fn delete(self) -> Result<()> {
        unimplemented!()
    }
}

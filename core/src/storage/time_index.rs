//! `TimeIndex`: a segment's sparse `.timeindex` file, Kafka's `TimeIndex`.
//!
//! Format: a flat array of 12-byte entries, `timestamp i64 BE · relative offset u32 BE`. An
//! entry `(T, O)` says: the largest timestamp among the segment's messages up to and including
//! offset `O` is `T`, and it is carried by the entry with offset `O`. So every message at an
//! offset ≤ `O` has a timestamp ≤ `T`.
//!
//! Entries are added alongside offset-index entries, only when the segment's running maximum
//! timestamp has grown, plus one final entry when the segment is sealed. So both columns
//! strictly increase, and a sealed segment's last entry is its largest timestamp (which is how
//! retention by time learns a sealed segment's age without reading its log).
//!
//! Lookup for a target `t` takes the last entry with `T < t`: every message at or before its
//! `O` is older than `t`, so the first message with timestamp ≥ `t` lies after `O`. (Using
//! `T ≤ t` could skip an earlier message whose timestamp equals `t`.)
//!
//! One slot of the preallocated file is kept free for the sealing entry; "full" means only that
//! slot is left. Derived data, rebuilt from the `.log` like the offset index. Not thread-safe:
//! the segment holds it behind a lock.

use std::path::PathBuf;

use super::offset_index::IndexFile;
use crate::error::Result;
use crate::file_io::FileSystem;
use crate::limits::TIME_INDEX_ENTRY_BYTES;
use crate::types::{Offset, RelativeOffset, TimestampMs};

const ENTRY: usize = TIME_INDEX_ENTRY_BYTES as usize;

#[derive(Debug)]
pub(crate) struct TimeIndex {
    base_offset: Offset,
    file: IndexFile,
}

impl TimeIndex {
    pub(crate) fn open(
        fs: &dyn FileSystem,
        path: PathBuf,
        base_offset: Offset,
        capacity_bytes: Option<u32>,
    ) -> Result<TimeIndex> {
        Ok(TimeIndex {
            base_offset,
            file: IndexFile::open(fs, path, ENTRY, capacity_bytes)?,
        })
    }

    pub(crate) fn create(
        fs: &dyn FileSystem,
        path: PathBuf,
        base_offset: Offset,
        capacity_bytes: u32,
    ) -> Result<TimeIndex> {
        Ok(TimeIndex {
            base_offset,
            file: IndexFile::create(fs, path, ENTRY, capacity_bytes)?,
        })
    }

    /// Full for ordinary appends: only the slot reserved for the sealing entry is left.
    pub(crate) fn is_full(&self) -> bool {
        self.file.entries + 1 >= self.file.capacity
    }

    fn entry(&self, i: usize) -> (TimestampMs, RelativeOffset) {
        let b = self.file.slot(i);
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[..8]);
        (
            TimestampMs(i64::from_be_bytes(ts)),
            RelativeOffset(u32::from_be_bytes([b[8], b[9], b[10], b[11]])),
        )
    }

    pub(crate) fn last_entry(&self) -> Option<(TimestampMs, Offset)> {
        let i = self.file.entries.checked_sub(1)?;
        let (ts, rel) = self.entry(i);
        Some((ts, rel.absolute(self.base_offset)))
    }

    /// Adds `(timestamp, offset)` if `timestamp` is larger than the last entry's (and, unless
    /// `sealing`, if the index is not full). Returns whether it was added.
    pub(crate) fn maybe_append(
        &mut self,
        timestamp: TimestampMs,
        offset: Offset,
        sealing: bool,
    ) -> bool {
        if timestamp == TimestampMs::NONE || timestamp.0 < 0 {
            // No timestamp (magic 0) is never an index entry: nothing can be found by it.
            return false;
        }
        if let Some((last_ts, last_offset)) = self.last_entry()
            && (timestamp <= last_ts || offset <= last_offset)
        {
            return false;
        }
        let full = if sealing {
            self.file.entries >= self.file.capacity
        } else {
            self.is_full()
        };
        if full {
            return false;
        }
        let rel = offset
            .relative_to(self.base_offset)
            .expect("time index entry offset fits the segment");
        let mut entry = [0u8; ENTRY];
        entry[..8].copy_from_slice(&timestamp.0.to_be_bytes());
        entry[8..].copy_from_slice(&rel.0.to_be_bytes());
        self.file.push(&entry);
        true
    }

    /// The offset of the last entry whose timestamp is strictly below `target`, or `None` when
    /// every entry is at or above it (scan from the segment's start).
    pub(crate) fn lookup(&self, target: TimestampMs) -> Option<Offset> {
        let (mut lo, mut hi) = (0usize, self.file.entries);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.entry(mid).0 < target {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let i = lo.checked_sub(1)?;
        Some(self.entry(i).1.absolute(self.base_offset))
    }

    /// Both columns strictly increase and every offset is below `next_offset`.
    pub(crate) fn sanity_check(&self, next_offset: Offset) -> std::result::Result<(), String> {
        let mut prev: Option<(TimestampMs, RelativeOffset)> = None;
        for i in 0..self.file.entries {
            let (ts, rel) = self.entry(i);
            if rel.absolute(self.base_offset) >= next_offset {
                return Err(format!(
                    "entry {i} has offset {} at or past the segment's end {next_offset}",
                    rel.absolute(self.base_offset)
                ));
            }
            if ts.0 < 0 {
                return Err(format!("entry {i} has a negative timestamp {}", ts.0));
            }
            if let Some((p_ts, p_rel)) = prev
                && (ts <= p_ts || rel <= p_rel)
            {
                return Err(format!("entry {i} does not increase"));
            }
            prev = Some((ts, rel));
        }
        Ok(())
    }

    pub(crate) fn flush(&self) -> Result<()> {
        self.file.flush()
    }

    pub(crate) fn trim(&mut self) -> Result<()> {
        self.file.trim()
    }

    pub(crate) fn grow(&mut self, capacity_bytes: u32) -> Result<()> {
        self.file.grow(capacity_bytes)
    }
}

//! The leader-epoch cache: for each leader epoch, the first offset written in it (Kafka's
//! `LeaderEpochFileCache`, KIP-101). A leader answers OffsetsForLeaderEpoch from it and a
//! follower uses its own copy to find where its log diverges from the leader's
//! ([`super::truncation_step`]).
//!
//! File: `<partition dir>/leader-epoch-checkpoint` ([`EPOCH_CHECKPOINT_FILE`]), Kafka's text
//! checkpoint format, so an operator's tools read it (see `docs/FORMAT.md`, "Leader epoch
//! checkpoint"):
//!
//! ```text
//! 0                          version
//! 2                          number of entries
//! 0 0                        <epoch> <start_offset>, one line per entry, epochs increasing
//! 3 1500
//! ```
//!
//! Invariants:
//! - Epochs strictly increase and start offsets never decrease along [`LeaderEpochCache::entries`].
//!   (Two epochs may start at the same offset when the first one wrote nothing.)
//! - Every change replaces the whole file atomically and durably ([`crate::atomic_file`]) before
//!   memory changes: when the write fails the cache is as it was, and the error is returned.
//!   Calls that change nothing do not write.
//! - A missing file is an empty cache. A file that does not parse is an [`Error::Io`] with kind
//!   `InvalidData`, naming the file and the line — never silently treated as empty, because an
//!   empty cache makes a follower fall back to truncating at its high watermark. (Kafka likewise
//!   fails with "Malformed line in checkpoint file".)
//!
//! Not thread-safe: `&mut self` mutators; the broker keeps it beside the log under one lock.

use std::fs::File;
use std::io::{self, ErrorKind, Read};
use std::path::{Path, PathBuf};

use crate::atomic_file::write_atomically;
use crate::error::{Error, Result};
use crate::types::Offset;

/// The file name inside a partition directory (Kafka's).
pub const EPOCH_CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";

/// The only layout version (Kafka's `LeaderEpochCheckpointFile` version 0).
const VERSION: u32 = 0;

/// Largest checkpoint file `open` reads. One line is at most 31 bytes (`u32`, space, `i64::MAX`,
/// newline), so this holds over 130,000 epochs; a larger file is damaged, and bounding the read
/// keeps a damaged file from exhausting memory. (Local rather than in `limits.rs` only because
/// that file belongs to another change in flight; it may move there.)
const EPOCH_CHECKPOINT_BYTES_MAX: u64 = 4 << 20;

/// One entry: leader epoch `epoch` started at `start_offset`.
///
/// [`LeaderEpochCache::end_offset_for`] and [`super::truncation_step`] reuse this type for an
/// OffsetsForLeaderEpoch *answer*, where `start_offset` holds the epoch's **end** offset (the
/// first offset after it); their docs say so where it applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: u32,
    pub start_offset: Offset,
}

/// Kafka's leader-epoch-checkpoint, in memory and on disk. See the module docs.
#[derive(Debug)]
pub struct LeaderEpochCache {
    path: PathBuf,
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    /// Reads `<dir>/leader-epoch-checkpoint`. A missing file is an empty cache; a malformed one
    /// is an error naming the file and the line.
    pub fn open(dir: &Path) -> Result<LeaderEpochCache> {
        let path = dir.join(EPOCH_CHECKPOINT_FILE);
        let text = match read_bounded(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Ok(LeaderEpochCache {
                    path,
                    entries: Vec::new(),
                });
            }
            Err(e) => return Err(Error::io("read leader epoch checkpoint", &path, e)),
        };
        let entries = parse(&text)
            .map_err(|reason| Error::io("parse leader epoch checkpoint", &path, reason))?;
        Ok(LeaderEpochCache { path, entries })
    }

    /// The entries, oldest epoch first (see the module invariants).
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// Records that `epoch` starts at `start_offset`. A no-op (`Ok(false)`) when `epoch` is not
    /// newer than the latest epoch. When `start_offset` is below the latest entry's start, the
    /// entries starting at or after `start_offset` are dropped first, as Kafka does, so start
    /// offsets stay non-decreasing (their data is being overwritten by the new epoch). Persists
    /// when changed; returns whether it changed.
    pub fn assign(&mut self, epoch: u32, start_offset: Offset) -> Result<bool> {
        if self.latest().is_some_and(|l| epoch <= l.epoch) {
            return Ok(false);
        }
        // Kafka drops the entries at or after a start offset that moved backwards: their data is
        // being overwritten in the new epoch. An equal start offset keeps the latest entry (an
        // epoch that wrote nothing), so start offsets stay non-decreasing either way.
        let mut next = self.entries.clone();
        if self.latest().is_some_and(|l| start_offset < l.start_offset) {
            next.retain(|e| e.start_offset < start_offset);
        }
        next.push(EpochEntry {
            epoch,
            start_offset,
        });
        self.replace(next)?;
        Ok(true)
    }

    /// The leader's answer to OffsetsForLeaderEpoch(`requested`): the largest epoch `<=
    /// requested` with its **end offset** in the `start_offset` field — the next entry's start
    /// offset, or `log_end` when it is the latest epoch. `None` (Kafka's UNDEFINED_EPOCH) when
    /// no entry has an epoch `<= requested`.
    ///
    /// Unlike Kafka, a `requested` epoch newer than every entry is answered with the latest entry
    /// and `log_end` rather than UNDEFINED: the broker fences a follower whose epoch is newer
    /// than the leader's before asking (UNKNOWN_LEADER_EPOCH), so this case does not reach here.
    pub fn end_offset_for(&self, requested: u32, log_end: Offset) -> Option<EpochEntry> {
        let i = self.entries.partition_point(|e| e.epoch <= requested);
        let found = self.entries.get(i.checked_sub(1)?)?;
        let end = self
            .entries
            .get(i)
            .map_or(log_end, |next| next.start_offset);
        Some(EpochEntry {
            epoch: found.epoch,
            start_offset: end,
        })
    }

    /// After the log was truncated to end at `end`: drops the entries with `start_offset >=
    /// end`. Persists when changed.
    pub fn truncate_from_end(&mut self, end: Offset) -> Result<()> {
        if !self.entries.iter().any(|e| e.start_offset >= end) {
            return Ok(());
        }
        let next = self
            .entries
            .iter()
            .copied()
            .filter(|e| e.start_offset < end)
            .collect();
        self.replace(next)
    }

    /// After the segments below `start` were deleted (the log now starts at `start`): drops the
    /// entries wholly below `start`, and moves the entry covering `start` to start there, as
    /// Kafka does. Persists when changed.
    pub fn truncate_from_start(&mut self, start: Offset) -> Result<()> {
        // The entries starting at or below `start`; the last of them covers `start`.
        let at_or_below = self.entries.partition_point(|e| e.start_offset <= start);
        let Some(covering) = at_or_below.checked_sub(1).map(|i| self.entries[i]) else {
            return Ok(());
        };
        if at_or_below == 1 && covering.start_offset == start {
            return Ok(());
        }
        let mut next = Vec::with_capacity(self.entries.len() - at_or_below + 1);
        next.push(EpochEntry {
            epoch: covering.epoch,
            start_offset: start,
        });
        next.extend_from_slice(&self.entries[at_or_below..]);
        self.replace(next)
    }

    /// Forgets every entry (the log was truncated fully). Persists when changed.
    pub fn clear(&mut self) -> Result<()> {
        if self.entries.is_empty() {
            return Ok(());
        }
        self.replace(Vec::new())
    }

    /// Writes `next` to the file, then adopts it (so a failed write changes nothing).
    fn replace(&mut self, next: Vec<EpochEntry>) -> Result<()> {
        debug_assert!(
            is_monotonic(&next),
            "epoch cache entries out of order: {next:?}"
        );
        write_atomically(&self.path, encode(&next).as_bytes())?;
        self.entries = next;
        Ok(())
    }
}

/// The file's text for `entries` (see the module docs).
fn encode(entries: &[EpochEntry]) -> String {
    let mut s = format!("{VERSION}\n{}\n", entries.len());
    for e in entries {
        s.push_str(&format!("{} {}\n", e.epoch, e.start_offset.0));
    }
    s
}

fn read_bounded(path: &Path) -> io::Result<String> {
    let mut text = String::new();
    File::open(path)?
        .take(EPOCH_CHECKPOINT_BYTES_MAX + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > EPOCH_CHECKPOINT_BYTES_MAX {
        return Err(io::Error::new(
            ErrorKind::InvalidData,
            format!("larger than {EPOCH_CHECKPOINT_BYTES_MAX} bytes"),
        ));
    }
    Ok(text)
}

/// Parses the file's text; the error names the (1-based) line and what is wrong with it.
fn parse(text: &str) -> Result<Vec<EpochEntry>, io::Error> {
    let bad = |line: usize, reason: String| {
        io::Error::new(ErrorKind::InvalidData, format!("line {line}: {reason}"))
    };
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    let mut next_line = |what: &str| {
        lines
            .next()
            .ok_or_else(|| bad(text.lines().count() + 1, format!("missing {what}")))
    };

    let (n, version) = next_line("version")?;
    if version != VERSION.to_string() {
        return Err(bad(n, format!("version {version:?}, expected {VERSION:?}")));
    }
    let (n, count) = next_line("entry count")?;
    let count: usize = count
        .parse()
        .map_err(|_| bad(n, format!("entry count {count:?} is not a number")))?;

    let mut entries: Vec<EpochEntry> = Vec::new();
    for _ in 0..count {
        let (n, line) = next_line("entry")?;
        let parsed = line.split_once(' ').and_then(|(epoch, offset)| {
            let epoch: u32 = epoch.parse().ok()?;
            let offset: u64 = offset.parse().ok().filter(|o| *o <= Offset::MAX.0)?;
            Some(EpochEntry {
                epoch,
                start_offset: Offset(offset),
            })
        });
        let entry = parsed.ok_or_else(|| {
            bad(
                n,
                format!("expected `<epoch> <start_offset>` (non-negative), found {line:?}"),
            )
        })?;
        if let Some(prev) = entries.last()
            && (entry.epoch <= prev.epoch || entry.start_offset < prev.start_offset)
        {
            return Err(bad(
                n,
                format!(
                    "entry {line:?} does not follow epoch {} at {}: epochs must increase and \
                     start offsets must not decrease",
                    prev.epoch, prev.start_offset
                ),
            ));
        }
        entries.push(entry);
    }
    if let Some((n, line)) = lines.next() {
        return Err(bad(
            n,
            format!("{line:?} after the {count} entries the header announced"),
        ));
    }
    Ok(entries)
}

fn is_monotonic(entries: &[EpochEntry]) -> bool {
    entries
        .windows(2)
        .all(|w| w[0].epoch < w[1].epoch && w[0].start_offset <= w[1].start_offset)
}

//! Loading a partition directory: what `PartitionLog::open` does before the log is shared.
//!
//! 1. Remove the clean-shutdown marker (durably) before anything else, so a crash from here on
//!    is never mistaken for a clean state. Read the checkpoint.
//! 2. Tidy the directory: delete leftover `*.tmp` files, index files whose `.log` is gone, empty
//!    `.log` files that are not the last segment (a roll that crashed before its first append
//!    leaves an empty *last* segment, which is simply the active one), and whole segments below
//!    the checkpointed `log_start_offset` (retention checkpoints before it deletes files).
//! 3. Segments before the one containing the recovery point are trusted: their trimmed indexes
//!    are opened and sanity-checked. After a clean shutdown every segment is trusted, and the
//!    active one's entries after its last index entry are validated (a cheap tail check).
//!    Any trusted segment whose index files are missing or fail the check is recovered instead,
//!    together with every segment after it.
//! 4. Recovery walks each remaining segment from its first byte checking framing, CRC, message
//!    layout and offset continuity, and writes fresh indexes (they are derived data).
//!
//! # Torn tail or damage in the middle?
//!
//! When recovery meets a bad entry at position `P` of segment `S`, it searches every byte
//! position after `P` — the rest of `S` and all later segments — for a *valid entry*: a
//! plausible header (size within limits and inside the file, magic 0 or 1, valid attributes),
//! an offset in the window the log could have reached by then (at least the offset the bad entry
//! should have had, at most that plus `WRAPPER_MESSAGES_MAX` per byte searched), a matching
//! CRC-32 and a well-formed message.
//!
//! - None found: the damage is a **torn tail** (a write cut short by a crash, or garbage the
//!   filesystem left past the last complete write). `S` is truncated to `P`, later segments are
//!   deleted, and a warning is logged. Nothing acknowledged as durable can be lost this way
//!   unless the disk itself damaged the tail, which is indistinguishable.
//! - One found: valid data follows the damage, so cutting at `P` would silently discard it.
//!   `open` fails with `Error::CorruptSegment` naming `S` and `P`; an operator decides.
//!
//! One exception: when the next segment starts above the checkpoint's recovery point, `S` was
//! sealed by a roll whose fsync (done after the writer lock, `PartitionLog::flush_rolled`) had
//! not been checkpointed, so after a power loss it may end early. Every fsync syncs the
//! segments in order, so nothing in a later segment was acknowledged as durable while `S` was
//! not synced whole: only `S` is searched, and an early end of `S` (clean, with the next
//! segment's base beyond it, or bad) is a torn tail.
//!
//! The search costs one header test per byte and a CRC only for the rare candidate that passes
//! it; a random 32-bit CRC match (2^-32 per candidate) is the only way to mistake garbage for
//! data, and then the log refuses to open rather than losing anything.
//!
//! Known limit of the rule: after a power loss (not a process crash) under the `os` or
//! `interval` policy, the page cache may have written an unflushed tail back out of order,
//! leaving a hole followed by valid entries that were never fsynced. The rule reports that as
//! `CorruptSegment` too: it cannot tell such a hole from damage to acknowledged data, and it
//! prefers refusing to open over guessing. (Under `always`, at most the sets in flight at the
//! crash can be affected.)
//!
//! After recovery everything kept is fsynced, so the recovery point becomes the log end offset.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::checkpoint::{self, CHECKPOINT_FILE, CLEAN_SHUTDOWN_FILE, Checkpoint};
use super::segment::{
    INDEX_SUFFIX, LOG_SUFFIX, ScanEnd, Segment, SegmentConfig, TIME_INDEX_SUFFIX, file_path,
    plausible_header,
};
use crate::error::{Error, Result};
use crate::file_io::{FileSystem, OpenMode};
use crate::format::{Entry, MAGIC_POS};
use crate::limits::{
    LOG_OVERHEAD_BYTES, MESSAGE_V0_HEADER_BYTES, SCAN_CHUNK_BYTES, WRAPPER_MESSAGES_MAX,
};
use crate::types::{FilePosition, Offset, TimestampMs};

/// What loading found.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) segments: Vec<Arc<Segment>>,
    pub(crate) log_start_offset: Offset,
    pub(crate) high_watermark: Offset,
    pub(crate) recovery_point: Offset,
}

/// Which of a segment's files exist.
#[derive(Debug, Default, Clone, Copy)]
struct Files {
    log: bool,
    index: bool,
    time_index: bool,
}

fn remove(fs: &dyn FileSystem, path: &Path) -> Result<()> {
    match fs.remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

fn remove_segment_files(fs: &dyn FileSystem, dir: &Path, base: Offset) -> Result<()> {
    for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
        remove(fs, &file_path(dir, base, suffix))?;
    }
    Ok(())
}

/// Lists the directory's segments, removing temp files and orphaned index files.
fn list_segments(fs: &dyn FileSystem, dir: &Path) -> Result<BTreeMap<Offset, Files>> {
    let mut found: BTreeMap<Offset, Files> = BTreeMap::new();
    let entries = fs::read_dir(dir).map_err(|e| Error::io("list partition directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list partition directory", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            tracing::warn!(dir = %dir.display(), name = ?name, "ignoring a file with a non-UTF-8 name");
            continue;
        };
        // The leader-epoch checkpoint belongs to replication, which keeps it beside the log.
        if name == CHECKPOINT_FILE
            || name == CLEAN_SHUTDOWN_FILE
            || name == crate::replication::EPOCH_CHECKPOINT_FILE
        {
            continue;
        }
        if name.ends_with(".tmp") {
            // A checkpoint (or other) replacement that crashed before its rename.
            tracing::info!(path = %entry.path().display(), "removing a leftover temporary file");
            remove(fs, &entry.path())?;
            continue;
        }
        let parsed = name.split_once('.').and_then(|(stem, ext)| {
            let base = (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
                .then(|| stem.parse::<u64>().ok())??;
            Some((Offset(base), ext))
        });
        let Some((base, ext)) = parsed else {
            tracing::warn!(path = %entry.path().display(), "ignoring an unknown file in a partition directory");
            continue;
        };
        let files = found.entry(base).or_default();
        match ext {
            LOG_SUFFIX => files.log = true,
            INDEX_SUFFIX => files.index = true,
            TIME_INDEX_SUFFIX => files.time_index = true,
            // Producer state snapshots: read by the log after recovery (`producer_state`).
            super::producer_state::SNAPSHOT_SUFFIX => {}
            _ => {
                tracing::warn!(path = %entry.path().display(), "ignoring an unknown file in a partition directory")
            }
        }
    }
    let orphans: Vec<Offset> = found
        .iter()
        .filter(|(_, f)| !f.log)
        .map(|(b, _)| *b)
        .collect();
    for base in orphans {
        tracing::info!(dir = %dir.display(), base_offset = base.0, "removing index files without a log");
        remove_segment_files(fs, dir, base)?;
        found.remove(&base);
    }
    Ok(found)
}

/// Loads (and if needed recovers) the partition in `dir`, which must exist.
pub(crate) fn load(
    fs: &Arc<dyn FileSystem>,
    dir: &Path,
    config: SegmentConfig,
    now: TimestampMs,
) -> Result<Loaded> {
    let clean = checkpoint::take_clean_shutdown(&**fs, dir)?;
    let saved = checkpoint::read(dir)?;
    let found = list_segments(&**fs, dir)?;
    let mut bases: Vec<Offset> = found.keys().copied().collect();

    // Empty logs that are not last carry nothing (see the module docs).
    let mut i = 0;
    while i + 1 < bases.len() {
        let path = file_path(dir, bases[i], LOG_SUFFIX);
        let len = fs::metadata(&path)
            .map_err(|e| Error::io("stat segment", &path, e))?
            .len();
        if len == 0 {
            tracing::warn!(path = %path.display(), "removing an empty segment that is not the last");
            remove_segment_files(&**fs, dir, bases[i])?;
            bases.remove(i);
        } else {
            i += 1;
        }
    }

    if bases.is_empty() {
        let base = saved.map_or(Offset(0), |c| c.log_start_offset);
        let segment = Segment::create(fs, dir, base, config)?;
        checkpoint::sync_dir(&**fs, dir)?;
        let loaded = Loaded {
            segments: vec![Arc::new(segment)],
            log_start_offset: base,
            high_watermark: base,
            recovery_point: base,
        };
        write_checkpoint(&**fs, dir, &loaded)?;
        return Ok(loaded);
    }

    // Retention checkpoints the new log start before deleting files; finish a deletion a crash
    // interrupted. A segment is wholly below the start when the next one begins at or before it.
    let log_start = saved.map_or(bases[0], |c| c.log_start_offset.max(bases[0]));
    while bases.len() > 1 && bases[1] <= log_start {
        tracing::info!(dir = %dir.display(), base_offset = bases[0].0, "removing a segment below the log start offset");
        remove_segment_files(&**fs, dir, bases[0])?;
        bases.remove(0);
    }

    let recover_from = match (clean, saved) {
        (true, Some(_)) => bases.len(),
        (_, Some(c)) => bases
            .partition_point(|b| *b <= c.recovery_point)
            .saturating_sub(1),
        (_, None) => 0,
    };
    if recover_from < bases.len() {
        tracing::info!(dir = %dir.display(), from_base_offset = bases[recover_from].0, "recovering the log (no clean shutdown)");
    }

    let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(bases.len());
    let mut from = bases.len();
    for (i, &base) in bases.iter().enumerate().take(recover_from.min(bases.len())) {
        let files = found.get(&base).copied().unwrap_or_default();
        let opened = if files.index && files.time_index {
            Segment::open_trusted(fs, dir, base, config, bases.get(i + 1).copied(), now)?
        } else {
            Err("an index file is missing".to_owned())
        };
        match opened {
            Ok(segment) => segments.push(Arc::new(segment)),
            Err(reason) => {
                tracing::warn!(path = %file_path(dir, base, LOG_SUFFIX).display(), %reason, "rebuilding the segment's indexes from its log");
                from = i;
                break;
            }
        }
    }
    if recover_from < from {
        from = recover_from;
    }

    // A segment followed by one starting above the checkpointed recovery point may have been
    // sealed without its fsync having finished (a roll fsyncs after the writer lock, see
    // `PartitionLog::roll_locked`); after a power loss it can end early. Nothing after such an
    // early end was ever acknowledged as durable: every fsync syncs the segments in order, so
    // an `always` append in a later segment was acknowledged only after this one was synced
    // whole. So an early end there is a torn tail, even with valid entries in later segments.
    let unsynced_seal = |next_base: Offset| saved.is_some_and(|c| next_base > c.recovery_point);
    let mut i = from;
    while i < bases.len() {
        let (segment, end) = Segment::recover(fs, dir, bases[i], config, now)?;
        match end {
            ScanEnd::Clean => {
                if let Some(&next_base) = bases.get(i + 1) {
                    if next_base != segment.next_offset() && unsynced_seal(next_base) {
                        tracing::warn!(
                            path = %segment.log_path().display(),
                            ends_at = segment.next_offset().0,
                            next_base = next_base.0,
                            "a sealed segment lost the tail it had not fsynced; removing the segments after it"
                        );
                        remove_segments_after(&**fs, dir, &mut bases, i)?;
                        segment.sync()?;
                        segments.push(Arc::new(segment));
                        break;
                    }
                    if next_base != segment.next_offset() {
                        return Err(Error::CorruptSegment {
                            path: file_path(dir, next_base, LOG_SUFFIX),
                            position: FilePosition(0),
                            reason: format!(
                                "the segment's base offset does not follow the previous segment, which ends at offset {}",
                                segment.next_offset()
                            ),
                        });
                    }
                    segment.sync()?;
                    segment.seal()?;
                } else {
                    segment.sync()?;
                    // Bytes past the last whole entry cannot exist after a clean scan, but a
                    // log longer than u32 positions could; nothing else to cut.
                }
                segments.push(Arc::new(segment));
                i += 1;
            }
            ScanEnd::Bad { position, reason } => {
                let expected = segment.next_offset();
                // Only this segment is searched when the next one starts above the recovery
                // point (see `unsynced_seal`).
                let search = match bases.get(i + 1) {
                    Some(&next_base) if unsynced_seal(next_base) => &bases[i..=i],
                    _ => &bases[i..],
                };
                if let Some((path, at)) =
                    find_valid_entry_after(&**fs, dir, search, position, expected)?
                {
                    return Err(Error::CorruptSegment {
                        path: segment.log_path().to_owned(),
                        position: FilePosition(position),
                        reason: format!(
                            "{reason}; a valid entry follows at {} position {at}, so this is not a torn tail and is not truncated",
                            path.display()
                        ),
                    });
                }
                let file_len = segment.file_len()?;
                tracing::warn!(
                    path = %segment.log_path().display(),
                    position,
                    bytes_dropped = file_len - u64::from(position),
                    %reason,
                    "truncating a torn tail to the last valid entry"
                );
                segment.truncate_file(position)?;
                remove_segments_after(&**fs, dir, &mut bases, i)?;
                segments.push(Arc::new(segment));
                break;
            }
        }
    }
    checkpoint::sync_dir(&**fs, dir)?;

    let last = segments.last().expect("at least one segment");
    let log_end = last.next_offset();
    let first_base = segments[0].base_offset();
    let log_start_offset = log_start.max(first_base).min(log_end);
    let high_watermark = saved
        .map_or(log_start_offset, |c| c.high_watermark)
        .max(log_start_offset)
        .min(log_end);
    let loaded = Loaded {
        segments,
        log_start_offset,
        high_watermark,
        // Trusted segments were flushed before their checkpoint; recovered ones were just synced.
        recovery_point: log_end,
    };
    write_checkpoint(&**fs, dir, &loaded)?;
    Ok(loaded)
}

/// Removes every segment after `bases[i]` (after a torn tail) and forgets them.
fn remove_segments_after(
    fs: &dyn FileSystem,
    dir: &Path,
    bases: &mut Vec<Offset>,
    i: usize,
) -> Result<()> {
    for &later in &bases[i + 1..] {
        tracing::warn!(path = %file_path(dir, later, LOG_SUFFIX).display(), "removing a segment after a truncated tail");
        remove_segment_files(fs, dir, later)?;
    }
    bases.truncate(i + 1);
    Ok(())
}

fn write_checkpoint(fs: &dyn FileSystem, dir: &Path, l: &Loaded) -> Result<()> {
    checkpoint::write(
        fs,
        dir,
        &Checkpoint {
            log_start_offset: l.log_start_offset,
            high_watermark: l.high_watermark,
            recovery_point: l.recovery_point,
        },
    )
}

/// Searches segment `bases[0]` after `bad_position`, then every later segment, for a valid entry
/// (see the module docs). Returns where one was found.
fn find_valid_entry_after(
    fs: &dyn FileSystem,
    dir: &Path,
    bases: &[Offset],
    bad_position: u32,
    expected: Offset,
) -> Result<Option<(PathBuf, u64)>> {
    let mut ranges = Vec::with_capacity(bases.len());
    let mut total = 0u64;
    for (k, &base) in bases.iter().enumerate() {
        let path = file_path(dir, base, LOG_SUFFIX);
        let len = fs::metadata(&path)
            .map_err(|e| Error::io("stat segment", &path, e))?
            .len();
        let start = if k == 0 {
            u64::from(bad_position) + 1
        } else {
            0
        };
        total += len.saturating_sub(start);
        ranges.push((path, start, len));
    }
    let lo = expected.0;
    let hi = lo.saturating_add(total.saturating_mul(u64::from(WRAPPER_MESSAGES_MAX)));
    let smallest = u64::from(LOG_OVERHEAD_BYTES + MESSAGE_V0_HEADER_BYTES);
    // plausible_header reads the offset, size, magic and attributes: the first 18 bytes.
    let header = MAGIC_POS + 2;
    let mut buf = Vec::new();
    for (path, start, len) in ranges {
        let file = fs
            .open(&path, OpenMode::Existing)
            .map_err(|e| Error::io("open segment", &path, e))?;
        let mut p = start;
        while p + smallest <= len {
            let n = u64::from(SCAN_CHUNK_BYTES).min(len - p) as usize;
            buf.resize(n, 0);
            file.read_exact_at(&mut buf, p)
                .map_err(|e| Error::io("read segment", &path, e))?;
            let mut q = 0usize;
            while q + header <= n && p + q as u64 + smallest <= len {
                if let Some((offset, size)) = plausible_header(&buf[q..q + header]) {
                    let at = p + q as u64;
                    let total = u64::from(LOG_OVERHEAD_BYTES) + u64::from(size);
                    if (lo..=hi).contains(&offset.0) && at + total <= len {
                        let mut bytes = vec![0u8; total as usize];
                        file.read_exact_at(&mut bytes, at)
                            .map_err(|e| Error::io("read segment", &path, e))?;
                        let entry = Entry {
                            position: 0,
                            bytes: &bytes,
                        };
                        if entry.check_crc().is_ok() && entry.info().is_ok() {
                            return Ok(Some((path, at)));
                        }
                    }
                }
                q += 1;
            }
            // Positions from q on were not tested (too close to the chunk's end): start there.
            p += q as u64;
            if q == 0 {
                break;
            }
        }
    }
    Ok(None)
}

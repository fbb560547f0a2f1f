//! `Segment`: one `{base_offset:020}.log` file with its `.index` and `.timeindex`, Kafka's
//! `LogSegment`.
//!
//! The `.log` is a plain concatenation of entries in the notes' format (see `crate::format`):
//! `offset · size · message`, the next entry at `position + 12 + size`. Every entry's offset
//! field is at least the segment's base offset and fits a `u32` relative to it; offsets strictly
//! increase (dense across the log: an uncompressed entry is exactly one past the previous entry's
//! offset, a compressed wrapper carries its last inner offset).
//!
//! Concurrency: one writer (the log's append lock) and any number of readers. The writer writes
//! bytes at the end with a positional write, *then* updates the indexes, *then* publishes the new
//! `size` and `next_offset` with release stores. Readers load `size` with acquire and never look
//! past it, so they never see a partially written entry. Index lookups take a read lock on the
//! segment's state; the writer takes the write lock only to add index entries.
//!
//! A segment is *active* (the last one: indexes preallocated and growing) or *sealed* (indexes
//! trimmed to their entries, log fsynced). Positions are `u32`: `limits::SEGMENT_BYTES_MAX`
//! plus one overshooting set still fits.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};

use parking_lot::RwLock;

use super::offset_index::OffsetIndex;
use super::time_index::TimeIndex;
use crate::error::{Error, Result};
use crate::file_io::{DataFile, FileSystem, OpenMode};
use crate::format::{Compression, Entry, MAGIC_POS, MAGIC_V0, MAGIC_V1, MAGIC_V2, SIZE_POS};
use crate::limits::{
    LOG_OVERHEAD_BYTES, MESSAGE_BYTES_MAX, MESSAGE_V0_HEADER_BYTES, RECORD_BATCH_HEADER_BYTES,
    SCAN_CHUNK_BYTES,
};
use crate::types::{FilePosition, Offset, TimestampMs};

pub(crate) const LOG_SUFFIX: &str = "log";
pub(crate) const INDEX_SUFFIX: &str = "index";
pub(crate) const TIME_INDEX_SUFFIX: &str = "timeindex";

/// `{base_offset:020}.{suffix}` in `dir`.
pub(crate) fn file_path(dir: &Path, base: Offset, suffix: &str) -> PathBuf {
    dir.join(format!("{:020}.{suffix}", base.0))
}

/// The parts of the log's configuration a segment needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SegmentConfig {
    pub(crate) index_interval_bytes: u32,
    pub(crate) index_bytes_max: u32,
}

/// State only the writer changes (under the write lock) and index lookups read.
#[derive(Debug)]
struct SegmentState {
    offset_index: OffsetIndex,
    time_index: TimeIndex,
    /// Log bytes appended since the last offset-index entry (Kafka's `bytesSinceLastIndexEntry`).
    bytes_since_index: u64,
    /// Running largest timestamp and the offset of the entry carrying it.
    max_timestamp: TimestampMs,
    offset_of_max_timestamp: Offset,
    /// When the segment took its first append (by the log's clock); `segment.ms` counts from here.
    rolling_base_ms: Option<i64>,
    sealed: bool,
}

#[derive(Debug)]
pub(crate) struct Segment {
    base_offset: Offset,
    log_path: PathBuf,
    /// The `.log`, through the file seam (`crate::file_io`).
    log: Box<dyn DataFile>,
    fs: Arc<dyn FileSystem>,
    config: SegmentConfig,
    /// Published bytes of whole entries.
    size: AtomicU32,
    /// Published offset after the last entry.
    next_offset: AtomicU64,
    /// Published largest timestamp (`-1` when none), for retention and seeks by time.
    max_timestamp: AtomicI64,
    state: RwLock<SegmentState>,
}

/// What a scan of entries concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScanEnd {
    /// Every entry up to the end of the log was valid.
    Clean,
    /// The entry at `position` failed validation; everything before it is valid.
    Bad { position: u32, reason: String },
}

/// Checks one entry read back from disk: CRC, layout (magic 0/1: attributes, key and value
/// lengths; magic 2: the batch header), and that its offsets continue the segment
/// (`expected_next` is the offset the next message must have). Returns the entry's timestamp
/// for the indexes (a magic 2 batch's maxTimestamp); the caller continues from
/// [`Entry::last_offset`].
pub(crate) fn validate_entry(
    entry: &Entry<'_>,
    base: Offset,
    expected_next: Offset,
) -> std::result::Result<TimestampMs, String> {
    let reason = |e: Error| match e {
        Error::CorruptMessage { reason, .. } => reason,
        other => other.to_string(),
    };
    let info = entry.info().map_err(reason)?;
    entry.check_crc().map_err(reason)?;
    let offset = info.last_offset;
    if offset.relative_to(base).is_none() {
        return Err(format!(
            "offset {offset} does not fit the segment with base offset {base}"
        ));
    }
    let ok = match info.first_offset {
        // An uncompressed magic 0/1 message, or a magic 2 batch: its first offset is known.
        Some(first) => first == expected_next,
        // A wrapper carries its last inner offset, at least one past the previous entry.
        None => offset >= expected_next,
    };
    if !ok {
        let first = info.first_offset.unwrap_or(offset);
        return Err(format!(
            "offset {first} does not follow the previous entry (expected {expected_next})"
        ));
    }
    Ok(info.timestamp)
}

/// Reads a file's entries sequentially through a buffer, so walking headers costs one read per
/// [`SCAN_CHUNK_BYTES`] rather than one per entry.
pub(crate) struct Scanner<'a> {
    file: &'a dyn DataFile,
    path: &'a Path,
    /// Bytes of the file that may be read.
    end: u64,
    buf: Vec<u8>,
    buf_start: u64,
}

impl std::fmt::Debug for Scanner<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scanner")
            .field("path", &self.path)
            .field("end", &self.end)
            .finish()
    }
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(file: &'a dyn DataFile, path: &'a Path, end: u64) -> Scanner<'a> {
        Scanner {
            file,
            path,
            end,
            buf: Vec::new(),
            buf_start: 0,
        }
    }

    /// The bytes `[pos, pos + len)`, which the caller has checked lie within `end`.
    pub(crate) fn bytes(&mut self, pos: u64, len: usize) -> Result<&[u8]> {
        debug_assert!(pos + len as u64 <= self.end);
        let have =
            pos >= self.buf_start && pos + len as u64 <= self.buf_start + self.buf.len() as u64;
        if !have {
            let want = (len as u64)
                .max(u64::from(SCAN_CHUNK_BYTES))
                .min(self.end - pos);
            self.buf.resize(want as usize, 0);
            self.file
                .read_exact_at(&mut self.buf, pos)
                .map_err(|e| Error::io("read segment", self.path, e))?;
            self.buf_start = pos;
        }
        let at = (pos - self.buf_start) as usize;
        Ok(&self.buf[at..at + len])
    }

    /// The entry at `pos` if its framing holds (header present, size within limits, all bytes
    /// inside `end`); otherwise why not. `Ok(None)` at exactly `end`.
    pub(crate) fn entry(
        &mut self,
        pos: u32,
    ) -> Result<Option<std::result::Result<Entry<'_>, String>>> {
        let p = u64::from(pos);
        if p >= self.end {
            return Ok(None);
        }
        let left = self.end - p;
        if left < u64::from(LOG_OVERHEAD_BYTES) {
            return Ok(Some(Err(format!(
                "{left} bytes left, fewer than the 12-byte entry header"
            ))));
        }
        let header = self.bytes(p, LOG_OVERHEAD_BYTES as usize)?;
        let size = u32::from_be_bytes([
            header[SIZE_POS],
            header[SIZE_POS + 1],
            header[SIZE_POS + 2],
            header[SIZE_POS + 3],
        ]);
        if !(MESSAGE_V0_HEADER_BYTES..=MESSAGE_BYTES_MAX).contains(&size) {
            return Ok(Some(Err(format!(
                "entry size {size} is outside [{MESSAGE_V0_HEADER_BYTES}, {MESSAGE_BYTES_MAX}]"
            ))));
        }
        let total = u64::from(LOG_OVERHEAD_BYTES) + u64::from(size);
        if total > left {
            return Ok(Some(Err(format!(
                "entry of {total} bytes runs past the end of the log ({left} bytes left)"
            ))));
        }
        let bytes = self.bytes(p, total as usize)?;
        Ok(Some(Ok(Entry {
            position: pos as usize,
            bytes,
        })))
    }
}

impl Segment {
    fn open_log(fs: &dyn FileSystem, path: &Path, create_new: bool) -> Result<Box<dyn DataFile>> {
        let mode = if create_new {
            OpenMode::CreateNew
        } else {
            OpenMode::Existing
        };
        fs.open(path, mode).map_err(|e| {
            Error::io(
                if create_new {
                    "create segment"
                } else {
                    "open segment"
                },
                path,
                e,
            )
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn with_state(
        fs: &Arc<dyn FileSystem>,
        dir: &Path,
        base: Offset,
        log: Box<dyn DataFile>,
        config: SegmentConfig,
        state: SegmentState,
        size: u32,
        next: Offset,
    ) -> Segment {
        Segment {
            base_offset: base,
            log_path: file_path(dir, base, LOG_SUFFIX),
            log,
            fs: Arc::clone(fs),
            config,
            size: AtomicU32::new(size),
            next_offset: AtomicU64::new(next.0),
            max_timestamp: AtomicI64::new(state.max_timestamp.0),
            state: RwLock::new(state),
        }
    }

    /// Creates a new, empty active segment (its `.log` must not exist yet).
    pub(crate) fn create(
        fs: &Arc<dyn FileSystem>,
        dir: &Path,
        base: Offset,
        config: SegmentConfig,
    ) -> Result<Segment> {
        let log = Segment::open_log(&**fs, &file_path(dir, base, LOG_SUFFIX), true)?;
        let state = SegmentState {
            offset_index: OffsetIndex::create(
                &**fs,
                file_path(dir, base, INDEX_SUFFIX),
                base,
                config.index_bytes_max,
            )?,
            time_index: TimeIndex::create(
                &**fs,
                file_path(dir, base, TIME_INDEX_SUFFIX),
                base,
                config.index_bytes_max,
            )?,
            bytes_since_index: 0,
            max_timestamp: TimestampMs::NONE,
            offset_of_max_timestamp: base,
            rolling_base_ms: None,
            sealed: false,
        };
        Ok(Segment::with_state(
            fs, dir, base, log, config, state, 0, base,
        ))
    }

    /// Opens a segment whose files are trusted (it lies before the recovery point, or the log was
    /// shut down cleanly), using its trimmed indexes. A sealed segment's end is `next_base` (the
    /// next segment's base offset). The active segment (`next_base == None`) finds its end by
    /// validating the entries after its last index entry — a cheap check of the tail.
    ///
    /// `Ok(Err(reason))` means the files cannot be trusted after all: recover the segment.
    pub(crate) fn open_trusted(
        fs: &Arc<dyn FileSystem>,
        dir: &Path,
        base: Offset,
        config: SegmentConfig,
        next_base: Option<Offset>,
        now: TimestampMs,
    ) -> Result<std::result::Result<Segment, String>> {
        let log_path = file_path(dir, base, LOG_SUFFIX);
        let log = Segment::open_log(&**fs, &log_path, false)?;
        let len = log
            .file_len()
            .map_err(|e| Error::io("stat segment", &log_path, e))?;
        let Ok(size) = u32::try_from(len) else {
            return Ok(Err(format!(
                "log of {len} bytes is larger than a segment can be"
            )));
        };
        let active = next_base.is_none();
        let cap = active.then_some(config.index_bytes_max);
        let offset_index =
            OffsetIndex::open(&**fs, file_path(dir, base, INDEX_SUFFIX), base, None)?;
        let time_index =
            TimeIndex::open(&**fs, file_path(dir, base, TIME_INDEX_SUFFIX), base, None)?;
        let (max_ts, offset_of_max) = time_index.last_entry().unwrap_or((TimestampMs::NONE, base));
        let mut state = SegmentState {
            offset_index,
            time_index,
            bytes_since_index: 0,
            max_timestamp: max_ts,
            offset_of_max_timestamp: offset_of_max,
            rolling_base_ms: None,
            sealed: !active,
        };
        let (index_offset, index_pos) = state
            .offset_index
            .last_entry()
            .unwrap_or((base, FilePosition(0)));
        let next = match next_base {
            Some(next) => {
                // Check the last index entry points at an entry with its offset: one read that
                // catches most damaged-but-plausible index files.
                if state.offset_index.entries() > 0 {
                    let mut scan = Scanner::new(&*log, &log_path, len);
                    match scan.entry(index_pos.0)? {
                        Some(Ok(e)) if e.last_offset() == index_offset => {}
                        _ => {
                            return Ok(Err(format!(
                                "last index entry ({index_offset}, {index_pos}) does not point at its entry"
                            )));
                        }
                    }
                }
                next
            }
            None => {
                let mut scan = Scanner::new(&*log, &log_path, len);
                let mut pos = index_pos.0;
                let mut expected = if state.offset_index.entries() > 0 {
                    index_offset
                } else {
                    base
                };
                while let Some(entry) = scan.entry(pos)? {
                    let entry = match entry {
                        Ok(e) => e,
                        Err(reason) => return Ok(Err(format!("tail entry at {pos}: {reason}"))),
                    };
                    // The indexed entry itself carries `index_offset`, so it is expected there.
                    let ts = match validate_entry(&entry, base, expected) {
                        Ok(ts) => ts,
                        Err(reason) => return Ok(Err(format!("tail entry at {pos}: {reason}"))),
                    };
                    if ts > state.max_timestamp {
                        state.max_timestamp = ts;
                        state.offset_of_max_timestamp = entry.last_offset();
                    }
                    expected = entry.last_offset().next();
                    pos += entry.len() as u32;
                }
                state.bytes_since_index = u64::from(size - index_pos.0);
                if size > 0 {
                    state.rolling_base_ms = Some(now.0);
                }
                expected
            }
        };
        if let Err(reason) = state.offset_index.sanity_check(next, size.max(1)) {
            return Ok(Err(format!("offset index: {reason}")));
        }
        if let Err(reason) = state.time_index.sanity_check(next) {
            return Ok(Err(format!("time index: {reason}")));
        }
        if let Some(cap) = cap {
            state.offset_index.grow(cap)?;
            state.time_index.grow(cap)?;
        }
        Ok(Ok(Segment::with_state(
            fs, dir, base, log, config, state, size, next,
        )))
    }

    /// Rebuilds a segment from its `.log`: validates every entry from the start (framing, CRC,
    /// layout, offsets) and writes fresh indexes. Stops at the first bad entry, leaving the
    /// segment's published state at the last valid entry (the file itself is not cut here).
    pub(crate) fn recover(
        fs: &Arc<dyn FileSystem>,
        dir: &Path,
        base: Offset,
        config: SegmentConfig,
        now: TimestampMs,
    ) -> Result<(Segment, ScanEnd)> {
        let log_path = file_path(dir, base, LOG_SUFFIX);
        let log = Segment::open_log(&**fs, &log_path, false)?;
        let len = log
            .file_len()
            .map_err(|e| Error::io("stat segment", &log_path, e))?;
        let mut state = SegmentState {
            offset_index: OffsetIndex::create(
                &**fs,
                file_path(dir, base, INDEX_SUFFIX),
                base,
                config.index_bytes_max,
            )?,
            time_index: TimeIndex::create(
                &**fs,
                file_path(dir, base, TIME_INDEX_SUFFIX),
                base,
                config.index_bytes_max,
            )?,
            bytes_since_index: 0,
            max_timestamp: TimestampMs::NONE,
            offset_of_max_timestamp: base,
            rolling_base_ms: None,
            sealed: false,
        };
        // Positions are u32: anything past that cannot be ours.
        let end = len.min(u64::from(u32::MAX));
        let mut scan = Scanner::new(&*log, &log_path, end);
        let mut pos = 0u32;
        let mut expected = base;
        let outcome = loop {
            let entry = match scan.entry(pos)? {
                None => break ScanEnd::Clean,
                Some(Err(reason)) => {
                    break ScanEnd::Bad {
                        position: pos,
                        reason,
                    };
                }
                Some(Ok(e)) => e,
            };
            match validate_entry(&entry, base, expected) {
                Ok(ts) => {
                    let len = entry.len() as u32;
                    let offset = entry.last_offset();
                    state.track(&config, offset, FilePosition(pos), len, ts);
                    expected = offset.next();
                    pos += len;
                }
                Err(reason) => {
                    break ScanEnd::Bad {
                        position: pos,
                        reason,
                    };
                }
            }
        };
        if len > u64::from(u32::MAX) && outcome == ScanEnd::Clean {
            return Ok((
                Segment::with_state(fs, dir, base, log, config, state, pos, expected),
                ScanEnd::Bad {
                    position: pos,
                    reason: format!("log of {len} bytes is larger than a segment can be"),
                },
            ));
        }
        if pos > 0 {
            state.rolling_base_ms = Some(now.0);
        }
        Ok((
            Segment::with_state(fs, dir, base, log, config, state, pos, expected),
            outcome,
        ))
    }

    pub(crate) fn base_offset(&self) -> Offset {
        self.base_offset
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Published size in bytes.
    pub(crate) fn size(&self) -> u32 {
        self.size.load(Ordering::Acquire)
    }

    pub(crate) fn next_offset(&self) -> Offset {
        Offset(self.next_offset.load(Ordering::Acquire))
    }

    pub(crate) fn max_timestamp(&self) -> TimestampMs {
        TimestampMs(self.max_timestamp.load(Ordering::Acquire))
    }

    /// Lowers the published end before the file is cut (truncation), so readers that load the
    /// size from now on never look past the cut.
    pub(crate) fn shrink_published(&self, size: u32, next: Offset) {
        debug_assert!(size <= self.size() && next <= self.next_offset());
        self.size.store(size, Ordering::Release);
        self.next_offset.store(next.0, Ordering::Release);
    }

    /// Cuts the `.log` at `size` (the published size, already lowered) and fsyncs it.
    pub(crate) fn truncate_file(&self, size: u32) -> Result<()> {
        debug_assert_eq!(size, self.size());
        self.log
            .set_len(u64::from(size))
            .map_err(|e| Error::io("truncate segment", &self.log_path, e))?;
        self.sync()
    }

    /// The file's length on disk (may exceed the published size after a failed write).
    pub(crate) fn file_len(&self) -> Result<u64> {
        self.log
            .file_len()
            .map_err(|e| Error::io("stat segment", &self.log_path, e))
    }

    /// Whether appending `bytes` more bytes ending at `last_offset` needs a new segment first
    /// (Kafka's `shouldRoll`): never for an empty segment, else on size, age, a full index, or
    /// an offset that no longer fits the index's u32 relative offsets.
    pub(crate) fn should_roll(
        &self,
        bytes: u64,
        last_offset: Offset,
        now: TimestampMs,
        segment_bytes: u64,
        segment_ms: u64,
    ) -> bool {
        let size = u64::from(self.size());
        if size == 0 {
            return false;
        }
        let state = self.state.read();
        let too_old = state.rolling_base_ms.is_some_and(|start| {
            now.0.saturating_sub(start) >= i64::try_from(segment_ms).unwrap_or(i64::MAX)
        });
        size + bytes > segment_bytes
            || too_old
            || state.offset_index.is_full()
            || state.time_index.is_full()
            || last_offset.relative_to(self.base_offset).is_none()
    }

    /// Whether the segment holds data and has lived past `segment.ms`.
    pub(crate) fn is_due_for_roll(&self, now: TimestampMs, segment_ms: u64) -> bool {
        self.size() > 0 && self.should_roll(0, self.next_offset(), now, u64::MAX, segment_ms)
    }

    /// Appends a validated set whose offsets are assigned (the writer only). `entries` are the
    /// set's shallow entries as (last offset, length, timestamp).
    pub(crate) fn append(
        &self,
        set: &[u8],
        entries: &[(Offset, u32, TimestampMs)],
        now: TimestampMs,
    ) -> Result<()> {
        let pos = self.size();
        let len = u32::try_from(set.len()).expect("a set fits a segment");
        let end = pos
            .checked_add(len)
            .expect("a segment's positions fit a u32 (limits::SEGMENT_BYTES_MAX)");
        // A positional write at the published end: a failed (partial) write leaves bytes past
        // the published size, which the log then cuts off (`discard_unpublished`).
        self.log
            .write_all_at(set, u64::from(pos))
            .map_err(|e| Error::io("write segment", &self.log_path, e))?;
        let mut state = self.state.write();
        debug_assert!(!state.sealed, "append to a sealed segment");
        let mut at = pos;
        let mut last = self.next_offset();
        for &(offset, entry_len, ts) in entries {
            state.track(&self.config, offset, FilePosition(at), entry_len, ts);
            at += entry_len;
            last = offset;
        }
        debug_assert_eq!(at, end);
        state.rolling_base_ms.get_or_insert(now.0);
        // Publish after the bytes and the index entries are in place (see the module docs).
        // The maximum timestamp goes last so that a reader that sees it also sees the size that
        // includes its entry (seeks by time load it first).
        self.next_offset.store(last.0 + 1, Ordering::Release);
        self.size.store(end, Ordering::Release);
        self.max_timestamp
            .store(state.max_timestamp.0, Ordering::Release);
        Ok(())
    }

    /// Cuts the `.log` back to the published size after a failed write. Part of the failed set
    /// may have landed; left there, a shorter set appended next would leave whole stale entries
    /// behind the new end, which recovery takes for valid data after damage (and refuses to
    /// open).
    pub(crate) fn discard_unpublished(&self) -> Result<()> {
        self.log
            .set_len(u64::from(self.size()))
            .map_err(|e| Error::io("cut a failed write from segment", &self.log_path, e))
    }

    /// fsync the `.log` (data and the length that makes it readable).
    pub(crate) fn sync(&self) -> Result<()> {
        self.log
            .sync_data()
            .map_err(|e| Error::io("fsync segment", &self.log_path, e))
    }

    /// Flushes both index maps (they are trusted on a clean open).
    pub(crate) fn flush_indexes(&self) -> Result<()> {
        let state = self.state.read();
        state.offset_index.flush()?;
        state.time_index.flush()
    }

    /// Seals the segment: write the time index's final entry (the segment's largest timestamp)
    /// and trim both indexes to their entries. The caller fsyncs the log first (and decides what
    /// a failed fsync means).
    pub(crate) fn seal(&self) -> Result<()> {
        let mut state = self.state.write();
        if state.sealed {
            return Ok(());
        }
        let (ts, offset) = (state.max_timestamp, state.offset_of_max_timestamp);
        state.time_index.maybe_append(ts, offset, true);
        state.offset_index.trim()?;
        state.time_index.trim()?;
        state.sealed = true;
        Ok(())
    }

    /// Trims the indexes for a clean shutdown without sealing the log for good: the next open
    /// grows them again.
    pub(crate) fn trim_indexes(&self) -> Result<()> {
        let mut state = self.state.write();
        state.offset_index.trim()?;
        state.time_index.trim()
    }

    /// Reads `len` bytes at `pos` (within the published size) into a new buffer, without
    /// zeroing it first: on the fetch path that memset cost as much as the read's own copy.
    pub(crate) fn read_at(&self, pos: u32, len: u32) -> Result<Vec<u8>> {
        let mut buf: Vec<u8> = Vec::with_capacity(len as usize);
        self.log
            .read_exact_uninit_at(buf.spare_capacity_mut(), u64::from(pos))
            .map_err(|e| Error::io("read segment", &self.log_path, e))?;
        // SAFETY: `read_exact_uninit_at` returned Ok, so it initialised all `len` bytes of the
        // spare capacity (which holds at least `len`).
        #[allow(unsafe_code)]
        unsafe {
            buf.set_len(len as usize)
        };
        Ok(buf)
    }

    fn corrupt(&self, position: u32, reason: String) -> Error {
        Error::CorruptSegment {
            path: self.log_path.clone(),
            position: FilePosition(position),
            reason,
        }
    }

    /// The position of the first entry whose (last) offset is ≥ `target`, looking only below
    /// `size` (a published size); `None` if every entry there is below `target`.
    pub(crate) fn position_of(&self, target: Offset, size: u32) -> Result<Option<u32>> {
        let start = self.state.read().offset_index.lookup(target).0;
        if start >= size {
            // The index ran ahead of this reader's snapshot; scan from the start instead.
            return self.scan_for(target, 0, size);
        }
        self.scan_for(target, start, size)
    }

    fn scan_for(&self, target: Offset, start: u32, size: u32) -> Result<Option<u32>> {
        let mut scan = Scanner::new(&*self.log, &self.log_path, u64::from(size));
        let mut pos = start;
        while let Some(entry) = scan.entry(pos)? {
            let entry = entry.map_err(|reason| self.corrupt(pos, reason))?;
            if entry.last_offset() >= target {
                return Ok(Some(pos));
            }
            pos += entry.len() as u32;
        }
        Ok(None)
    }

    /// Whole entries from `start` (an entry boundary): at least the first one (KIP-74), then as
    /// many as fit `max_bytes`, none whose offset is ≥ `upper`, none past `size`; with the
    /// (last) offset of the last entry returned (`None` when none is), which the walk that cuts
    /// the read finds anyway.
    pub(crate) fn read_entries(
        &self,
        start: u32,
        max_bytes: u32,
        upper: Offset,
        size: u32,
    ) -> Result<(Vec<u8>, Option<Offset>)> {
        // One read of what max_bytes could hold, then cut at the last whole entry that is
        // allowed. Only a first entry larger than max_bytes needs a second read.
        let want = max_bytes
            .min(size - start)
            .max(LOG_OVERHEAD_BYTES.min(size - start));
        let mut buf = self.read_at(start, want)?;
        let mut end = 0usize;
        let mut last = None;
        loop {
            let rest = &buf[end..];
            if rest.len() < LOG_OVERHEAD_BYTES as usize {
                break;
            }
            // The entry's last offset (a magic 2 batch's offset field is its first); when a v2
            // header is cut short here, its base offset stands in (the entry is then the first
            // and is read whole, or it ends the read anyway).
            let offset = Entry {
                position: 0,
                bytes: rest,
            }
            .last_offset();
            let msg = u32::from_be_bytes(rest[8..12].try_into().expect("4 bytes"));
            if !(MESSAGE_V0_HEADER_BYTES..=MESSAGE_BYTES_MAX).contains(&msg) {
                return Err(self.corrupt(
                    start + end as u32,
                    format!("entry size {msg} out of range on read"),
                ));
            }
            if offset >= upper {
                break;
            }
            let total = (LOG_OVERHEAD_BYTES + msg) as usize;
            if u64::from(start) + (end + total) as u64 > u64::from(size) {
                return Err(self.corrupt(
                    start + end as u32,
                    "entry runs past the segment's published end".into(),
                ));
            }
            if total > rest.len() {
                if end == 0 {
                    // KIP-74: the first entry is returned whole even when larger than max_bytes.
                    buf = self.read_at(start, total as u32)?;
                    end = total;
                    // Its header may have been cut short above; now it is whole.
                    last = Some(
                        Entry {
                            position: 0,
                            bytes: &buf,
                        }
                        .last_offset(),
                    );
                }
                break;
            }
            // A whole entry: `offset` came from its full header.
            last = Some(offset);
            end += total;
        }
        buf.truncate(end);
        // No CRC check here (Kafka's broker does none on fetch either): every reader checks
        // what it receives — consumers in `for_each_record`, followers in `append_as_follower`
        // — and recovery checks from the last clean point. Checking here too cost the fetch
        // path about a tenth of the broker's CPU (a second CRC pass over every byte served).
        Ok((buf, last))
    }

    /// The first offset at or after `start` whose timestamp is ≥ `target`, scanning below
    /// `size`. A compressed wrapper is decoded to find its first inner message that qualifies.
    pub(crate) fn offset_for_timestamp(
        &self,
        target: TimestampMs,
        size: u32,
        scratch: &mut Vec<u8>,
    ) -> Result<Option<Offset>> {
        let start = {
            let state = self.state.read();
            match state.time_index.lookup(target) {
                Some(offset) => state.offset_index.lookup(offset).0,
                None => 0,
            }
        };
        let start = if start >= size { 0 } else { start };
        let mut scan = Scanner::new(&*self.log, &self.log_path, u64::from(size));
        let mut pos = start;
        while let Some(entry) = scan.entry(pos)? {
            let entry = entry.map_err(|reason| self.corrupt(pos, reason))?;
            let info = entry.info().map_err(|e| self.corrupt(pos, e.to_string()))?;
            if info.timestamp >= target {
                if info.magic != MAGIC_V2 && info.compression == Compression::None {
                    return Ok(Some(entry.offset()));
                }
                let mut found = None;
                crate::format::for_each_record(entry.bytes, scratch, |r| {
                    if found.is_none() && r.timestamp >= target {
                        found = Some(r.offset);
                    }
                })
                .map_err(|e| self.corrupt(pos, e.to_string()))?;
                if found.is_some() {
                    return Ok(found);
                }
            }
            pos += entry.len() as u32;
        }
        Ok(None)
    }

    /// Deletes the segment's three files (the open handles stay valid for readers holding them).
    pub(crate) fn delete_files(&self) -> Result<()> {
        let dir = self.log_path.parent().unwrap_or(Path::new("."));
        for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
            let path = file_path(dir, self.base_offset, suffix);
            match self.fs.remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("delete segment file", &path, e)),
            }
        }
        Ok(())
    }
}

impl SegmentState {
    /// Records one appended entry in the running maximum timestamp and, every
    /// `index.interval.bytes`, in both indexes (Kafka's `LogSegment.append`).
    fn track(
        &mut self,
        config: &SegmentConfig,
        offset: Offset,
        position: FilePosition,
        len: u32,
        ts: TimestampMs,
    ) {
        if ts > self.max_timestamp {
            self.max_timestamp = ts;
            self.offset_of_max_timestamp = offset;
        }
        if self.bytes_since_index > u64::from(config.index_interval_bytes) {
            self.offset_index.append(offset, position);
            self.time_index
                .maybe_append(self.max_timestamp, self.offset_of_max_timestamp, false);
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += u64::from(len);
    }
}

/// Whether `bytes` (at least 18 long) could start an entry: plausible size, magic and
/// attributes. A cheap filter before a CRC check when searching damaged data.
pub(crate) fn plausible_header(bytes: &[u8]) -> Option<(Offset, u32)> {
    let offset = Offset(u64::from_be_bytes(bytes[..8].try_into().ok()?));
    let size = u32::from_be_bytes(bytes[8..12].try_into().ok()?);
    if !(MESSAGE_V0_HEADER_BYTES..=MESSAGE_BYTES_MAX).contains(&size) {
        return None;
    }
    match bytes[MAGIC_POS] {
        MAGIC_V0 | MAGIC_V1 => {
            crate::format::Attributes::from_byte(bytes[MAGIC_POS + 1]).ok()?;
        }
        // A batch's attributes lie past the 18 bytes looked at; its CRC check decides.
        MAGIC_V2 if size >= RECORD_BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES => {}
        _ => return None,
    }
    Some((offset, size))
}

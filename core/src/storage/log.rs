//! `PartitionLog`: one partition's log, Kafka's `UnifiedLog`/`LocalLog`.
//!
//! Owns the partition directory and its segments (sorted by base offset, the last one active),
//! and the four offsets that describe the log:
//!
//! - `log_start_offset` — the first offset still readable (moved up by retention and by
//!   `delete_segments_before`, which only delete whole sealed segments below the high watermark);
//! - `high_watermark` — the offset consumers may read up to (moved up by replication; only a
//!   truncation brings it down);
//! - `log_end_offset` — the offset the next message will get;
//! - `recovery_point` — every offset below it is fsynced.
//!
//! **Invariant** (checked with `debug_assert!` after every change):
//! `log_start_offset <= high_watermark <= log_end_offset`, and `recovery_point <= log_end_offset`.
//!
//! Locks, always taken in this order: `writer` (serializes append, roll, retention,
//! truncation, close) → `hw_lock` (serializes the high watermark's movers) → `flush_lock`
//! (serializes fsyncs: group commit) → `checkpoint_lock`. Readers take none of them:
//! they load `log_end_offset` (acquire), then a snapshot of the segment list, then each segment's
//! published size, so they see only whole entries.
//!
//! Offsets are assigned in exactly one place: [`PartitionLog::append`] calling
//! [`format::prepare_append`] under the writer lock. [`PartitionLog::append_as_follower`]
//! keeps the offsets a leader assigned, after checking they continue the log densely; and
//! the two truncations are the only other ways the log end moves.
//!
//! Group commit (`FlushPolicy::Always`): an appender writes under the writer lock, releases it,
//! then calls `sync_to(its last offset + 1)`. That takes `flush_lock`; if the recovery point has
//! meanwhile passed its target (another appender's fsync covered its bytes) it returns at once,
//! else it fsyncs everything published so far and raises the recovery point to the log end it
//! read *before* the fsync. So N concurrent appenders cost about two fsyncs, not N.
//!
//! Rolling does not fsync the sealed segment under the writer lock: the appender (or `roll`,
//! `tick`) that rolled does it once the lock is released (`flush_rolled`), and writes a
//! checkpoint whose recovery point covers it; appends to the new segment go on meanwhile. Under
//! `os`/`interval` a failure there takes the log offline without failing the append that
//! triggered it (the set is already published, and those policies promise it no fsync).
//!
//! A failed fsync (or msync, or checkpoint write) puts the log offline for good: after EIO the
//! kernel may have dropped the dirty pages, so a retry could succeed without the data. A failed
//! segment write refuses its set and cuts the file back to the published end (offline if even
//! that fails). Both are tested through the file seam (`crate::file_io`,
//! `core/tests/storage_faults.rs`).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use super::checkpoint::{self, Checkpoint};
use super::clock::Clock;
use super::config::{FlushPolicy, LogConfig};
use super::producer_state::{self, ProducerStateTable, SequenceCheck, next_sequence};
use super::recovery;
use super::segment::{Segment, SegmentConfig};
use crate::error::{Error, Result};
use crate::file_io::{FileSystem, OsFileSystem};
use crate::format::v2::{BatchHeader, NO_PRODUCER_ID};
use crate::format::{self, AppendOptions, Entries, MAGIC_V2};
use crate::limits::{MESSAGE_SET_BYTES_MAX, PRODUCER_STATE_REPLAY_BYTES};
use crate::types::{FilePosition, Offset, TimestampMs};

/// What an append did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: Offset,
    pub last_offset: Offset,
    pub message_count: u64,
    /// The broker's time used for this append (always set, whatever the timestamp type).
    pub log_append_time: TimestampMs,
    pub max_timestamp: TimestampMs,
    /// The set was an idempotent producer's retry of batches all already in the log: nothing
    /// was appended, and the offsets (and `max_timestamp`) are the ones they got the first time.
    pub duplicate: bool,
    /// How many of the set's batches were answered as duplicates (a prefix of the set).
    pub duplicate_batches: u32,
    /// Each batch's first offset, in set order, when they are not consecutive from
    /// `base_offset` (a retry answered partly with earlier offsets); empty otherwise.
    pub batch_base_offsets: Vec<Offset>,
}

/// What a read returned.
#[derive(Debug)]
pub struct ReadResult {
    /// Whole entries only; may be empty.
    pub bytes: Vec<u8>,
    /// The (last) offset of the last entry in `bytes`; `None` when it is empty. The next read
    /// of this log starts after it.
    pub last_offset: Option<Offset>,
    pub high_watermark: Offset,
    pub log_start_offset: Offset,
    pub log_end_offset: Offset,
}

/// State only the appender touches, reused between appends.
#[derive(Debug, Default)]
struct Writer {
    /// Decompression buffer for validating wrappers.
    scratch: Vec<u8>,
    /// The set's shallow entries: (offset, length, timestamp).
    entries: Vec<(Offset, u32, TimestampMs)>,
    /// The idempotent producers' state (`producer_state`): checked and updated under this lock.
    producers: ProducerStateTable,
}

/// One partition's log. All methods take `&self` and are safe to call from many threads:
/// appends are serialized inside, reads run concurrently with appends.
///
/// Dropping a log without [`close`](Self::close) is, for the next `open`, a crash: it recovers.
#[derive(Debug)]
pub struct PartitionLog {
    dir: PathBuf,
    /// Every file operation goes through this seam (`crate::file_io`): the real file system, or
    /// a fault-injecting one in tests.
    fs: Arc<dyn FileSystem>,
    config: LogConfig,
    segment_config: SegmentConfig,
    clock: Arc<dyn Clock>,
    writer: Mutex<Writer>,
    /// Copy-on-write list: readers clone the `Arc`, the writer replaces it.
    segments: RwLock<Arc<Vec<Arc<Segment>>>>,
    log_start_offset: AtomicU64,
    high_watermark: AtomicU64,
    log_end_offset: AtomicU64,
    recovery_point: AtomicU64,
    /// The recovery point in the checkpoint file (the last one written).
    checkpointed_recovery_point: AtomicU64,
    /// Serializes the high watermark's movers (see `truncate_to`).
    hw_lock: Mutex<()>,
    flush_lock: Mutex<()>,
    last_flush_ms: AtomicI64,
    checkpoint_lock: Mutex<()>,
    /// Why the log went offline; set once, never cleared.
    offline: Mutex<Option<String>>,
    is_offline: AtomicBool,
    closed: AtomicBool,
}

impl PartitionLog {
    /// `"<topic>-<partition>"`, Kafka's directory name.
    pub fn dir_name(topic: &str, partition: u32) -> String {
        format!("{topic}-{partition}")
    }

    /// Opens (creating if absent) and recovers the log in `dir`. See `recovery.rs` for what
    /// happens without a clean shutdown; `Error::CorruptSegment` when damage is found that is not
    /// a torn tail.
    pub fn open(
        dir: impl Into<PathBuf>,
        config: LogConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<PartitionLog> {
        PartitionLog::open_with_file_system(dir, config, clock, OsFileSystem::shared())
    }

    /// [`open`](Self::open) with every file operation going through `fs` (tests put a
    /// fault-injecting file system here: `crate::file_io::faulty`).
    pub fn open_with_file_system(
        dir: impl Into<PathBuf>,
        config: LogConfig,
        clock: Arc<dyn Clock>,
        fs: Arc<dyn FileSystem>,
    ) -> Result<PartitionLog> {
        config.validate()?;
        let dir = dir.into();
        if !dir.is_dir() {
            fs.create_dir_all(&dir)
                .map_err(|e| Error::io("create partition directory", &dir, e))?;
            if let Some(parent) = dir.parent() {
                checkpoint::sync_dir(&*fs, parent)?;
            }
        }
        let segment_config = SegmentConfig {
            index_interval_bytes: config.index_interval_bytes,
            index_bytes_max: config.index_bytes_max,
        };
        let now = clock.now_ms();
        let loaded = recovery::load(&fs, &dir, segment_config, now)?;
        let log_end = loaded
            .segments
            .last()
            .expect("at least one segment")
            .next_offset();
        let log = PartitionLog {
            dir,
            fs,
            config,
            segment_config,
            clock,
            writer: Mutex::new(Writer::default()),
            segments: RwLock::new(Arc::new(loaded.segments)),
            log_start_offset: AtomicU64::new(loaded.log_start_offset.0),
            high_watermark: AtomicU64::new(loaded.high_watermark.0),
            log_end_offset: AtomicU64::new(log_end.0),
            recovery_point: AtomicU64::new(loaded.recovery_point.0),
            checkpointed_recovery_point: AtomicU64::new(loaded.recovery_point.0),
            hw_lock: Mutex::new(()),
            flush_lock: Mutex::new(()),
            last_flush_ms: AtomicI64::new(now.0),
            checkpoint_lock: Mutex::new(()),
            offline: Mutex::new(None),
            is_offline: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        };
        log.check_invariants();
        let producers = log.load_producer_state()?;
        log.writer.lock().producers = producers;
        Ok(log)
    }

    /// The producer state at the log end: the newest snapshot at or below it, then every
    /// idempotent batch after the snapshot read back from the log. Without a readable snapshot
    /// (a log written before snapshots existed, or every one damaged) only the last two
    /// segments are read, as Kafka does on that path: opening never scans a whole large log, and
    /// a producer whose state is older is treated as new (accepted at any sequence).
    fn load_producer_state(&self) -> Result<ProducerStateTable> {
        let end = self.log_end_offset();
        let segments = self.segments();
        let fallback = segments[segments.len().saturating_sub(2)].base_offset();
        let (mut table, mut at) =
            producer_state::load_snapshot(&*self.fs, &self.dir, end, fallback)?;
        at = at.max(self.log_start_offset());
        while at < end {
            let read = self.read(at, PRODUCER_STATE_REPLAY_BYTES, end)?;
            let Some(last) = read.last_offset else {
                break;
            };
            table.record_set(&read.bytes, at, self.create_time())?;
            at = last.next();
        }
        Ok(table)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> LogConfig {
        self.config.clone()
    }

    /// The topic's timestamps are create times (its duplicate answers carry no append time):
    /// the producer state joins consecutive batches into runs whatever their timestamps.
    fn create_time(&self) -> bool {
        self.config.timestamp_type != format::TimestampType::LogAppendTime
    }

    fn segments(&self) -> Arc<Vec<Arc<Segment>>> {
        Arc::clone(&self.segments.read())
    }

    fn active(&self) -> Arc<Segment> {
        Arc::clone(self.segments.read().last().expect("at least one segment"))
    }

    fn check_invariants(&self) {
        // Loaded in this order because each only grows and the later ones bound the earlier.
        let ls = self.log_start_offset();
        let hw = self.high_watermark();
        let le = self.log_end_offset();
        debug_assert!(
            ls <= hw && hw <= le,
            "log_start_offset {ls} <= high_watermark {hw} <= log_end_offset {le}"
        );
        debug_assert!(self.recovery_point() <= self.log_end_offset());
    }

    fn offline_error(&self) -> Error {
        let reason = self.offline.lock().clone().unwrap_or_default();
        Error::LogOffline {
            path: self.dir.clone(),
            reason,
        }
    }

    fn check_online(&self) -> Result<()> {
        if self.is_offline.load(Ordering::Acquire) {
            return Err(self.offline_error());
        }
        Ok(())
    }

    fn check_writable(&self) -> Result<()> {
        self.check_online()?;
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        Ok(())
    }

    /// Runs a durability step (fsync, msync, checkpoint). Its failure takes the log offline for
    /// good (see the module docs).
    fn durable<T>(&self, step: Result<T>) -> Result<T> {
        step.map_err(|e| {
            let reason = e.to_string();
            tracing::error!(dir = %self.dir.display(), %reason, "a durability step failed: the partition log goes offline");
            let mut offline = self.offline.lock();
            offline.get_or_insert(reason);
            self.is_offline.store(true, Ordering::Release);
            drop(offline);
            self.offline_error()
        })
    }

    /// Validates (every CRC, framing, size limits), assigns offsets, appends; rolls the segment
    /// first if needed. With `FlushPolicy::Always` it returns only after the data is fsynced
    /// (concurrent appends share one fsync: group commit). Does not move the high watermark.
    /// On error nothing was appended (the caller's buffer may have had offsets rewritten).
    pub fn append(&self, set: &mut [u8]) -> Result<AppendInfo> {
        self.append_in_epoch(set, 0)
    }

    /// [`append`](Self::append) by the leader of `leader_epoch`, which is written into every
    /// magic 2 batch's partitionLeaderEpoch field (magic 0/1 entries have none).
    pub fn append_in_epoch(&self, set: &mut [u8], leader_epoch: u32) -> Result<AppendInfo> {
        self.check_writable()?;
        check_set_size(set)?;
        let mut w = self.writer.lock();
        self.check_writable()?;
        let now = self.clock.now_ms();
        let idempotent = idempotent_batches(set)?;
        let base = self.log_end_offset();
        let opts = AppendOptions {
            max_message_bytes: self.config.max_message_bytes,
            timestamp_type: self.config.timestamp_type,
            now,
            leader_epoch: i32::try_from(leader_epoch).unwrap_or(i32::MAX),
        };
        let mut summary = format::prepare_append(set, base, &opts, &mut w.scratch)?;
        // Sequences are checked after validation (Kafka's order): a damaged retry is
        // CORRUPT_MESSAGE, never a duplicate. A retry may repeat batches the log has (its answer
        // was lost) before new ones: those are answered with their first offsets and only the
        // rest is appended.
        let duplicates = check_sequences(&w.producers, &idempotent)?;
        let mut batch_base_offsets = Vec::new();
        let mut from = 0;
        if !duplicates.is_empty() {
            batch_base_offsets.extend(duplicates.iter().map(|d| d.0));
            if duplicates.len() == idempotent.len() {
                let first = duplicates[0].0;
                let last = duplicates[duplicates.len() - 1].1;
                let max_timestamp = duplicates
                    .iter()
                    .map(|d| d.2)
                    .max()
                    .unwrap_or(TimestampMs::NONE);
                if batch_base_offsets.len() == 1 {
                    batch_base_offsets.clear();
                }
                return Ok(AppendInfo {
                    base_offset: first,
                    last_offset: last,
                    message_count: 0,
                    log_append_time: max_timestamp,
                    max_timestamp,
                    duplicate: true,
                    duplicate_batches: duplicates.len() as u32,
                    batch_base_offsets,
                });
            }
            // Offsets again, for the new batches only.
            from = idempotent[duplicates.len()].0;
            summary = format::prepare_append(&mut set[from..], base, &opts, &mut w.scratch)?;
        }
        let set = &mut set[from..];
        w.entries.clear();
        for entry in Entries::new(set) {
            // prepare_append checked framing and layout of every entry.
            let entry = entry.expect("a validated set is framed");
            let timestamp = entry.info().expect("a validated entry parses").timestamp;
            w.entries
                .push((entry.last_offset(), entry.len() as u32, timestamp));
            if !batch_base_offsets.is_empty() {
                batch_base_offsets.push(entry.offset());
            }
        }
        self.write_locked(&w, set, summary.last_offset, now)?;
        if !idempotent.is_empty() {
            // The batches now carry their offsets: remember them for a retry.
            w.producers.record_set(set, base, self.create_time())?;
        }
        drop(w);
        self.after_append(summary.last_offset, now)?;
        Ok(AppendInfo {
            base_offset: batch_base_offsets
                .first()
                .copied()
                .unwrap_or(summary.base_offset),
            last_offset: summary.last_offset,
            message_count: summary.message_count,
            log_append_time: now,
            max_timestamp: summary.max_timestamp,
            duplicate: false,
            duplicate_batches: duplicates.len() as u32,
            batch_base_offsets,
        })
    }

    /// Appends a set whose offsets were assigned by the partition's leader (Kafka's
    /// `appendAsFollower`): the one append that does not assign offsets. Checks framing, every
    /// CRC (inner ones too) and that the offsets continue this log densely from its log end;
    /// timestamps are kept as the leader wrote them. Rolls, indexes and flushes like
    /// [`append`](Self::append). On error nothing was appended.
    pub fn append_as_follower(&self, set: &[u8]) -> Result<AppendInfo> {
        self.check_writable()?;
        check_set_size(set)?;
        if set.is_empty() {
            return Err(Error::InvalidRequest("empty message set".into()));
        }
        let mut w = self.writer.lock();
        self.check_writable()?;
        let now = self.clock.now_ms();
        let base = self.log_end_offset();
        let mut expected = base;
        let mut max_timestamp = TimestampMs::NONE;
        let Writer {
            scratch, entries, ..
        } = &mut *w;
        entries.clear();
        for entry in Entries::new(set) {
            let entry = entry?;
            let at = |e: Error| match e {
                Error::CorruptMessage { reason, .. } => Error::corrupt(entry.position, reason),
                other => other,
            };
            entry.check_crc().map_err(at)?;
            let info = entry.info().map_err(at)?;
            // Decoding checks the inner entries of a wrapper and yields their absolute offsets.
            let mut offsets = (None, Offset(0));
            format::for_each_record(entry.bytes, scratch, |r| {
                offsets.0.get_or_insert(r.offset);
                offsets.1 = r.offset;
            })
            .map_err(at)?;
            let (first, last) = (offsets.0.unwrap_or(info.last_offset), offsets.1);
            // A magic 2 batch's records need not reach lastOffsetDelta (Kafka's compaction
            // removes records but keeps the batch's offset range), so its range is the header's.
            let (first, last) = match info.first_offset {
                Some(f) if info.magic == format::MAGIC_V2 => (f, info.last_offset),
                _ => (first, last),
            };
            if first != expected || last != info.last_offset {
                return Err(Error::corrupt(
                    entry.position,
                    format!(
                        "entry holds offsets {first}..={last} where offset {expected} comes next in this log"
                    ),
                ));
            }
            max_timestamp = max_timestamp.max(info.timestamp);
            entries.push((info.last_offset, entry.len() as u32, info.timestamp));
            expected = last.next();
        }
        let last_offset = Offset(expected.0 - 1);
        self.write_locked(&w, set, last_offset, now)?;
        // A follower keeps the leader's producer state too, so a new leader rejects duplicates.
        w.producers.record_set(set, base, self.create_time())?;
        drop(w);
        self.after_append(last_offset, now)?;
        Ok(AppendInfo {
            base_offset: base,
            last_offset,
            message_count: expected.0 - base.0,
            log_append_time: now,
            max_timestamp,
            duplicate: false,
            duplicate_batches: 0,
            batch_base_offsets: Vec::new(),
        })
    }

    /// With the writer lock held: rolls if needed, writes the validated `set` (its shallow
    /// entries in `w.entries`), publishes the new log end.
    fn write_locked(
        &self,
        w: &Writer,
        set: &[u8],
        last_offset: Offset,
        now: TimestampMs,
    ) -> Result<()> {
        let active = self.active();
        let active = if active.should_roll(
            set.len() as u64,
            last_offset,
            now,
            self.config.segment_bytes,
            self.config.segment_ms,
        ) {
            self.roll_locked(&active, &w.producers)?
        } else {
            active
        };
        if let Err(e) = active.append(set, &w.entries, now) {
            // Nothing was published; cut off whatever part of the set landed. If even that
            // fails, the log cannot vouch for its tail any more: offline, like a failed fsync.
            self.durable(active.discard_unpublished())?;
            return Err(e);
        }
        self.log_end_offset
            .store(last_offset.0 + 1, Ordering::Release);
        self.check_invariants();
        Ok(())
    }

    /// After the writer lock is released: what the flush policy asks of an append.
    ///
    /// Under `os` and `interval` (when no flush is due) that is only the fsync a roll left
    /// ([`Self::flush_rolled`]). The append itself is done and published by then, and these
    /// policies promise no fsync to it, so a failure there is not its error: it takes the log
    /// offline (as a failed fsync always does) and the next operation reports that, as
    /// Kafka's background flush does.
    fn after_append(&self, last_offset: Offset, now: TimestampMs) -> Result<()> {
        match self.config.flush {
            FlushPolicy::Always => {
                self.sync_to(last_offset.next())?;
                self.flush_rolled()
            }
            FlushPolicy::Interval { ms } if self.flush_due(now, ms) => self.flush(),
            FlushPolicy::Interval { .. } | FlushPolicy::Os => {
                if let Err(e) = self.flush_rolled() {
                    tracing::error!(dir = %self.dir.display(), error = %e, "fsync of a rolled segment failed; the log is offline");
                }
                Ok(())
            }
        }
    }

    /// Removes every message at offset ≥ `target` (Kafka's `truncateTo`, for a follower whose
    /// log diverged from its leader). A compressed wrapper holding `target` goes whole, so the
    /// new log end may be below `target`; it is never above. The high watermark and recovery
    /// point come down with the log end if they were above it (the one case where the high
    /// watermark decreases). `target` at or past the log end does nothing; `target` below the
    /// log start empties the log and restarts it at `target`
    /// ([`truncate_fully_and_start_at`](Self::truncate_fully_and_start_at)).
    ///
    /// A reader racing the truncation may see an I/O error (it read past the cut) and retries.
    pub fn truncate_to(&self, target: Offset) -> Result<()> {
        self.check_writable()?;
        let mut w = self.writer.lock();
        // The offsets move down here, so nothing may move them up meanwhile: hold the locks of
        // everyone else who changes them (set_high_watermark, the group-commit fsync).
        let _hw = self.hw_lock.lock();
        let _flushing = self.flush_lock.lock();
        self.check_writable()?;
        if target >= self.log_end_offset() {
            return Ok(());
        }
        if target < self.log_start_offset() {
            return self.truncate_fully_locked(target, &mut w.producers);
        }
        let segments = self.segments();
        // Keep the segments that start below the target (at least the first); the last kept
        // one is cut at the entry holding the target.
        let keep = segments
            .partition_point(|s| s.base_offset() < target)
            .max(1);
        let last = &segments[keep - 1];
        let position = last
            .position_of(target, last.size())?
            .unwrap_or(last.size());
        // Readers first: no new read looks at the doomed range.
        self.lower_offsets_to(target);
        last.shrink_published(position, target.min(last.next_offset()));
        for segment in &segments[keep..] {
            segment.shrink_published(0, segment.base_offset());
        }
        *self.segments.write() = Arc::new(segments[..keep].to_vec());
        self.durable(last.truncate_file(position))?;
        for segment in &segments[keep..] {
            tracing::info!(path = %segment.log_path().display(), "truncation deletes a segment");
            segment.delete_files()?;
        }
        // Rebuild the cut segment's indexes and running maximum from what is left: simple, and
        // truncation is rare (leadership changes).
        let (rebuilt, end) = Segment::recover(
            &self.fs,
            &self.dir,
            last.base_offset(),
            self.segment_config,
            self.clock.now_ms(),
        )?;
        if let super::segment::ScanEnd::Bad { position, reason } = end {
            return Err(Error::CorruptSegment {
                path: last.log_path().to_owned(),
                position: FilePosition(position),
                reason,
            });
        }
        let new_end = rebuilt.next_offset();
        {
            let mut list = self.segments.write();
            let mut next = list.to_vec();
            *next.last_mut().expect("kept at least one segment") = Arc::new(rebuilt);
            *list = Arc::new(next);
        }
        self.lower_offsets_to(new_end);
        self.durable(checkpoint::sync_dir(&*self.fs, &self.dir))?;
        self.write_checkpoint()?;
        // The producer state of the cut log: its batches past the cut are forgotten, and those a
        // retained window had pushed out come back (rebuilt from a snapshot and the log).
        w.producers = self.load_producer_state()?;
        tracing::info!(dir = %self.dir.display(), target = target.0, log_end_offset = new_end.0, "truncated the log");
        Ok(())
    }

    /// Deletes every segment and restarts the log empty at `offset` (Kafka's
    /// `truncateFullyAndStartAt`, for a follower too far behind its leader's log start).
    /// All four offsets become `offset`.
    pub fn truncate_fully_and_start_at(&self, offset: Offset) -> Result<()> {
        self.check_writable()?;
        let mut w = self.writer.lock();
        let _hw = self.hw_lock.lock();
        let _flushing = self.flush_lock.lock();
        self.check_writable()?;
        self.truncate_fully_locked(offset, &mut w.producers)
    }

    /// With the writer, high-watermark and flush locks held.
    fn truncate_fully_locked(
        &self,
        offset: Offset,
        producers: &mut ProducerStateTable,
    ) -> Result<()> {
        if offset > Offset::MAX {
            return Err(Error::InvalidArgument(format!(
                "offset {offset} exceeds the largest offset"
            )));
        }
        let old = self.segments();
        for segment in old.iter() {
            segment.shrink_published(0, segment.base_offset());
        }
        // The new segment may reuse an old one's name: delete first.
        for segment in old.iter() {
            segment.delete_files()?;
        }
        producer_state::delete_snapshots(&*self.fs, &self.dir, |_| true)?;
        *producers = ProducerStateTable::new();
        let segment = Arc::new(Segment::create(
            &self.fs,
            &self.dir,
            offset,
            self.segment_config,
        )?);
        self.durable(checkpoint::sync_dir(&*self.fs, &self.dir))?;
        *self.segments.write() = Arc::new(vec![segment]);
        // Every writer of these offsets is locked out, so the order of the stores is free.
        self.log_end_offset.store(offset.0, Ordering::Release);
        self.log_start_offset.store(offset.0, Ordering::Release);
        self.high_watermark.store(offset.0, Ordering::Release);
        self.recovery_point.store(offset.0, Ordering::Release);
        self.write_checkpoint()?;
        self.check_invariants();
        tracing::info!(dir = %self.dir.display(), offset = offset.0, "emptied the log and restarted it");
        Ok(())
    }

    /// Truncation, with the writer, high-watermark and flush locks held: the log end, and the
    /// high watermark and recovery point where above it, come down to `end`.
    fn lower_offsets_to(&self, end: Offset) {
        if self.log_start_offset() > end {
            // A wrapper straddling the log start was cut whole.
            self.log_start_offset.store(end.0, Ordering::Release);
        }
        self.high_watermark.fetch_min(end.0, Ordering::AcqRel);
        self.recovery_point.fetch_min(end.0, Ordering::AcqRel);
        self.log_end_offset.fetch_min(end.0, Ordering::AcqRel);
        self.check_invariants();
    }

    fn flush_due(&self, now: TimestampMs, ms: u64) -> bool {
        now.0
            .saturating_sub(self.last_flush_ms.load(Ordering::Acquire))
            >= i64::try_from(ms).unwrap_or(i64::MAX)
    }

    /// Seals `old` (the active segment) and starts a new one at the log end. Called with the
    /// writer lock held. The sealed segment is fsynced whatever the flush policy, but not here:
    /// the caller does it once it has released the writer lock ([`Self::flush_rolled`]), so
    /// appends to the new segment do not wait for up to `segment.bytes` of writeback (Kafka
    /// flushes a rolled segment in the background too). Until then the checkpoint's recovery
    /// point stays below the new segment, and recovery after a crash walks the sealed one again
    /// (and accepts that it lost an unsynced tail: see `recovery`).
    fn roll_locked(
        &self,
        old: &Arc<Segment>,
        producers: &ProducerStateTable,
    ) -> Result<Arc<Segment>> {
        let base = self.log_end_offset();
        debug_assert_eq!(base, old.next_offset());
        self.durable(old.seal())?;
        // The producer state of everything below the new segment: recovery replays from here.
        self.durable(producer_state::write_snapshot(
            &*self.fs, &self.dir, base, producers,
        ))?;
        let segment = Arc::new(Segment::create(
            &self.fs,
            &self.dir,
            base,
            self.segment_config,
        )?);
        // The new file's directory entry must be durable before data in it is reported durable.
        self.durable(checkpoint::sync_dir(&*self.fs, &self.dir))?;
        {
            let mut list = self.segments.write();
            let mut next = Vec::with_capacity(list.len() + 1);
            next.extend(list.iter().cloned());
            next.push(Arc::clone(&segment));
            *list = Arc::new(next);
        }
        tracing::debug!(dir = %self.dir.display(), base_offset = base.0, "rolled a new segment");
        self.write_checkpoint()?;
        Ok(segment)
    }

    /// After the writer lock is released: once a roll has sealed a segment, fsyncs it (with
    /// everything else published, unless an `always` append's fsync already did) and writes a
    /// checkpoint whose recovery point covers it, so recovery treats damage in it as damage
    /// again (see `recovery`). One caller does it; others that find it under way return at
    /// once, so appends carry on meanwhile.
    fn flush_rolled(&self) -> Result<()> {
        let base = self.active().base_offset();
        let checkpointed = || Offset(self.checkpointed_recovery_point.load(Ordering::Acquire));
        if checkpointed() >= base {
            return Ok(());
        }
        {
            let Some(_flushing) = self.flush_lock.try_lock() else {
                return Ok(());
            };
            if checkpointed() >= base {
                return Ok(());
            }
            if self.recovery_point() < base {
                self.sync_published()?;
            }
        }
        self.write_checkpoint()
    }

    /// fsyncs every segment holding data above the recovery point, then raises the recovery
    /// point to the log end read before the fsyncs. Returns at once if `target` is already
    /// durable, which is how concurrent appenders share one fsync.
    fn sync_to(&self, target: Offset) -> Result<()> {
        if self.recovery_point() >= target {
            return Ok(());
        }
        let _flushing = self.flush_lock.lock();
        if self.recovery_point() >= target {
            return Ok(());
        }
        self.sync_published()
    }

    /// With `flush_lock` held: fsync everything published so far.
    fn sync_published(&self) -> Result<()> {
        self.check_online()?;
        let end = self.log_end_offset();
        let durable = self.recovery_point();
        for segment in self.segments().iter().filter(|s| s.next_offset() > durable) {
            self.durable(segment.sync())?;
        }
        self.recovery_point.fetch_max(end.0, Ordering::AcqRel);
        Ok(())
    }

    /// Reads whole entries starting with the entry that contains `offset`, up to `max_bytes`
    /// (but always at least one whole entry if one exists below `upper`, KIP-74), never
    /// returning an entry whose (last) offset is ≥ `upper` (pass the high watermark for
    /// consumers, the log end offset for replicas). Entries come from one segment at a time, as
    /// in Kafka: a read that reaches a segment's end returns what it has.
    ///
    /// `offset` below the log start or above the log end → `Error::OffsetOutOfRange`;
    /// `offset` equal to the log end → empty bytes.
    pub fn read(&self, offset: Offset, max_bytes: u32, upper: Offset) -> Result<ReadResult> {
        self.check_online()?;
        let log_start_offset = self.log_start_offset();
        let high_watermark = self.high_watermark();
        let log_end_offset = self.log_end_offset();
        let out_of_range = |ls: Offset| Error::OffsetOutOfRange {
            offset: offset.0,
            log_start_offset: ls,
            log_end_offset,
        };
        if offset < log_start_offset || offset > log_end_offset {
            return Err(out_of_range(log_start_offset));
        }
        let result = |(bytes, last_offset): (Vec<u8>, Option<Offset>)| ReadResult {
            bytes,
            last_offset,
            high_watermark,
            log_start_offset,
            log_end_offset,
        };
        let upper = upper.min(log_end_offset);
        if offset >= upper {
            return Ok(result((Vec::new(), None)));
        }
        let segments = self.segments();
        if offset < segments[0].base_offset() {
            // Retention removed the segment between our loads: the offset is gone now.
            return Err(out_of_range(self.log_start_offset()));
        }
        let first = segments.partition_point(|s| s.base_offset() <= offset) - 1;
        for segment in &segments[first..] {
            let size = segment.size();
            if let Some(position) = segment.position_of(offset, size)? {
                return Ok(result(
                    segment.read_entries(position, max_bytes, upper, size)?,
                ));
            }
        }
        Ok(result((Vec::new(), None)))
    }

    /// The first offset whose message timestamp is ≥ `ts` (`None` if no such message). Segments
    /// whose largest timestamp is below `ts` are skipped whole; in the first other one the time
    /// index gives a starting point, and a compressed wrapper is decoded to find its first inner
    /// message at or after `ts`.
    pub fn offset_for_timestamp(&self, ts: TimestampMs) -> Result<Option<Offset>> {
        self.check_online()?;
        let mut scratch = Vec::new();
        for segment in self.segments().iter() {
            if segment.max_timestamp() < ts {
                continue;
            }
            let size = segment.size();
            if let Some(offset) = segment.offset_for_timestamp(ts, size, &mut scratch)? {
                return Ok(Some(offset.max(self.log_start_offset())));
            }
        }
        Ok(None)
    }

    pub fn log_start_offset(&self) -> Offset {
        Offset(self.log_start_offset.load(Ordering::Acquire))
    }

    pub fn log_end_offset(&self) -> Offset {
        Offset(self.log_end_offset.load(Ordering::Acquire))
    }

    pub fn high_watermark(&self) -> Offset {
        Offset(self.high_watermark.load(Ordering::Acquire))
    }

    /// Moves the high watermark: monotonic (a lower value is ignored) and clamped to
    /// `[log_start_offset, log_end_offset]`. Checkpointed on flush, roll, retention and close.
    pub fn set_high_watermark(&self, hw: Offset) {
        // Serialized with truncation, the one place the high watermark comes down.
        let _hw = self.hw_lock.lock();
        let clamped = hw.min(self.log_end_offset()).max(self.log_start_offset());
        self.high_watermark.fetch_max(clamped.0, Ordering::AcqRel);
        self.check_invariants();
    }

    /// Every offset below this is fsynced.
    pub fn recovery_point(&self) -> Offset {
        Offset(self.recovery_point.load(Ordering::Acquire))
    }

    /// Bytes of all segments' published entries.
    pub fn size_bytes(&self) -> u64 {
        self.segments().iter().map(|s| u64::from(s.size())).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.read().len()
    }

    /// Deletes whole sealed segments, oldest first, while the oldest is past `retention.ms` (its
    /// largest timestamp, or its file's modification time when it has no timestamps, is older
    /// than now − retention.ms) or the log is larger than `retention.bytes`. Never the active
    /// segment, and — as in Kafka — only segments wholly below the high watermark, so retention
    /// never removes data consumers or replicas have not been allowed to see. Advances and
    /// checkpoints `log_start_offset` before deleting files. Returns how many were deleted.
    pub fn enforce_retention(&self) -> Result<usize> {
        self.check_writable()?;
        if self.config.retention_ms.is_none() && self.config.retention_bytes.is_none() {
            return Ok(0);
        }
        let _w = self.writer.lock();
        self.check_writable()?;
        let now = self.clock.now_ms();
        let segments = self.segments();
        let high_watermark = self.high_watermark();
        let mut total: u64 = segments.iter().map(|s| u64::from(s.size())).sum();
        let mut count = 0usize;
        for (i, segment) in segments[..segments.len() - 1].iter().enumerate() {
            if segments[i + 1].base_offset() > high_watermark {
                break;
            }
            let expired = match self.config.retention_ms {
                Some(ms) => {
                    let newest = match segment.max_timestamp() {
                        t if t.0 >= 0 => t.0,
                        _ => modified_ms(segment.log_path()).unwrap_or(now.0),
                    };
                    now.0.saturating_sub(newest) > i64::try_from(ms).unwrap_or(i64::MAX)
                }
                None => false,
            };
            let oversize = self.config.retention_bytes.is_some_and(|max| total > max);
            if !(expired || oversize) {
                break;
            }
            total -= u64::from(segment.size());
            count += 1;
        }
        self.delete_leading_segments_locked(&segments, count, "retention")
    }

    /// Deletes every whole sealed segment whose offsets all lie below `offset` (its next
    /// segment's base is `<= offset`), and only below the high watermark, as retention does.
    /// Kafka's `maybeIncrementLogStartOffset` with segment granularity: `log_start_offset` moves
    /// to the base of the first remaining segment (never into the middle of one), is checkpointed
    /// before any file goes, and never past the high watermark. Never deletes the active segment:
    /// call [`roll`](Self::roll) first so that `offset` starts a segment of its own. Returns how
    /// many segments were deleted. Used by `__consumer_offsets` compaction (`group::offsets`).
    pub fn delete_segments_before(&self, offset: Offset) -> Result<usize> {
        self.check_writable()?;
        let _w = self.writer.lock();
        self.check_writable()?;
        let segments = self.segments();
        let bound = offset.min(self.high_watermark());
        let count = segments
            .windows(2)
            .take_while(|pair| pair[1].base_offset() <= bound)
            .count();
        self.delete_leading_segments_locked(&segments, count, "delete_segments_before")
    }

    /// Seals the active segment and starts a new one at the log end, unless the active segment
    /// is empty (then the next append starts it anyway). Afterwards the next appended offset is
    /// the base of the active segment. Returns whether it rolled.
    pub fn roll(&self) -> Result<bool> {
        self.check_writable()?;
        let w = self.writer.lock();
        self.check_writable()?;
        let active = self.active();
        if active.size() == 0 {
            return Ok(false);
        }
        self.roll_locked(&active, &w.producers)?;
        drop(w);
        self.flush_rolled()?;
        Ok(true)
    }

    /// With the writer lock held: deletes `segments[..count]` (the oldest, all sealed). Advances
    /// and checkpoints `log_start_offset` before deleting files.
    fn delete_leading_segments_locked(
        &self,
        segments: &Arc<Vec<Arc<Segment>>>,
        count: usize,
        why: &'static str,
    ) -> Result<usize> {
        if count == 0 {
            return Ok(0);
        }
        debug_assert!(
            count < segments.len(),
            "the active segment is never deleted"
        );
        let new_start = segments[count].base_offset();
        self.log_start_offset
            .fetch_max(new_start.0, Ordering::AcqRel);
        self.recovery_point.fetch_max(new_start.0, Ordering::AcqRel);
        // The new start must be durable before any file goes: a crash in between then finishes
        // the deletion on open instead of resurrecting a partial log.
        self.write_checkpoint()?;
        *self.segments.write() = Arc::new(segments[count..].to_vec());
        for segment in &segments[..count] {
            tracing::info!(path = %segment.log_path().display(), why, "deleting a segment");
            segment.delete_files()?;
        }
        producer_state::delete_snapshots(&*self.fs, &self.dir, |o| o < new_start)?;
        self.check_invariants();
        Ok(count)
    }

    /// Rolls by age if `segment.ms` has passed; flushes if the `interval` policy is due.
    /// The broker calls this from a periodic task (cheap when nothing is due).
    pub fn tick(&self) -> Result<()> {
        self.check_writable()?;
        let now = self.clock.now_ms();
        if self.active().is_due_for_roll(now, self.config.segment_ms) {
            {
                let w = self.writer.lock();
                self.check_writable()?;
                let active = self.active();
                if active.is_due_for_roll(now, self.config.segment_ms) {
                    self.roll_locked(&active, &w.producers)?;
                }
            }
            self.flush_rolled()?;
        }
        if let FlushPolicy::Interval { ms } = self.config.flush
            && self.flush_due(now, ms)
        {
            self.flush()?;
        }
        Ok(())
    }

    /// fsync everything, advance the recovery point, write the checkpoint.
    pub fn flush(&self) -> Result<()> {
        self.check_online()?;
        {
            let _flushing = self.flush_lock.lock();
            self.sync_published()?;
            self.durable(self.active().flush_indexes())?;
            self.last_flush_ms
                .store(self.clock.now_ms().0, Ordering::Release);
        }
        self.write_checkpoint()
    }

    fn write_checkpoint(&self) -> Result<()> {
        let _g = self.checkpoint_lock.lock();
        let c = Checkpoint {
            log_start_offset: self.log_start_offset(),
            high_watermark: self.high_watermark(),
            recovery_point: self.recovery_point(),
        };
        self.durable(checkpoint::write(&*self.fs, &self.dir, &c))?;
        self.checkpointed_recovery_point
            .store(c.recovery_point.0, Ordering::Release);
        Ok(())
    }

    /// Flushes and marks the log cleanly closed, so the next open skips recovery. Later appends
    /// fail with `Error::ShuttingDown`; reads keep working. Closing twice is harmless; closing
    /// an offline log is `Error::LogOffline`.
    pub fn close(&self) -> Result<()> {
        let w = self.writer.lock();
        // An offline log never reports a clean close, not even when a first close got as far
        // as marking it closed before its last fsync failed.
        self.check_online()?;
        if self.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        self.flush()?;
        // The state at the log end, so the next open reads no segment to rebuild it.
        self.durable(producer_state::write_snapshot(
            &*self.fs,
            &self.dir,
            self.log_end_offset(),
            &w.producers,
        ))?;
        self.durable(self.active().trim_indexes())?;
        self.closed.store(true, Ordering::Release);
        self.durable(checkpoint::write_clean_shutdown(&*self.fs, &self.dir))?;
        tracing::debug!(dir = %self.dir.display(), log_end_offset = self.log_end_offset().0, "closed the partition log");
        Ok(())
    }

    /// Removes the log's directory (topic deletion).
    pub fn delete(self) -> Result<()> {
        let _w = self.writer.lock();
        self.closed.store(true, Ordering::Release);
        self.fs
            .remove_dir_all(&self.dir)
            .map_err(|e| Error::io("delete partition directory", &self.dir, e))?;
        if let Some(parent) = self.dir.parent() {
            checkpoint::sync_dir(&*self.fs, parent)?;
        }
        Ok(())
    }
}

fn check_set_size(set: &[u8]) -> Result<()> {
    if set.len() > MESSAGE_SET_BYTES_MAX as usize {
        return Err(Error::RecordListTooLarge {
            size: set.len() as u64,
            max: u64::from(MESSAGE_SET_BYTES_MAX),
        });
    }
    Ok(())
}

/// A file's modification time in ms since the epoch.
fn modified_ms(path: &Path) -> Option<i64> {
    let modified = fs::metadata(path).ok()?.modified().ok()?;
    let ms = modified
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_millis();
    i64::try_from(ms).ok()
}

/// The position and header of each batch of a set from an idempotent producer; empty when the
/// set has no idempotent batch. Such a set holds only magic 2 batches of that one producer id
/// (as a Kafka producer's request holds one batch of it per partition).
fn idempotent_batches(set: &[u8]) -> Result<Vec<(usize, BatchHeader)>> {
    let mut batches = Vec::new();
    let mut plain = 0usize;
    let mut entries = Entries::new(set);
    loop {
        let position = entries.position();
        let Some(entry) = entries.next() else { break };
        let entry = entry?;
        if entry.magic() == MAGIC_V2 {
            let h = BatchHeader::parse(entry.bytes)?;
            if h.producer_id != NO_PRODUCER_ID {
                batches.push((position, h));
                continue;
            }
        }
        plain += 1;
    }
    if batches.is_empty() {
        return Ok(batches);
    }
    let producer = batches[0].1.producer_id;
    if plain > 0 || batches.iter().any(|(_, h)| h.producer_id != producer) {
        return Err(Error::InvalidRequest(format!(
            "a set with an idempotent producer's batch holds only that producer's batches \
             (producer {producer}; this set also has {plain} other entries or other producers)"
        )));
    }
    Ok(batches)
}

/// The leader's check of an idempotent set's batches, in order: the first ones may repeat
/// batches already in the log (returned with their first and last offsets and max timestamp);
/// the rest must be new, each following the one before (same epoch, the next sequence).
/// Errors as [`ProducerStateTable::check`], or OUT_OF_ORDER_SEQUENCE_NUMBER for a gap inside
/// the set.
fn check_sequences(
    table: &ProducerStateTable,
    batches: &[(usize, BatchHeader)],
) -> Result<Vec<(Offset, Offset, TimestampMs)>> {
    let mut duplicates = Vec::new();
    let mut previous: Option<(i16, i32)> = None;
    for (_, h) in batches {
        let last = next_sequence(h.base_sequence, h.last_offset_delta as i32);
        match previous {
            None => match table.check(h.producer_id, h.producer_epoch, h.base_sequence, last)? {
                SequenceCheck::Duplicate {
                    first_offset,
                    last_offset,
                    max_timestamp,
                } => duplicates.push((first_offset, last_offset, max_timestamp)),
                SequenceCheck::Append => previous = Some((h.producer_epoch, last)),
            },
            Some((epoch, before)) => {
                let expected = next_sequence(before, 1);
                if h.producer_epoch != epoch || h.base_sequence != expected {
                    return Err(Error::ProducerState {
                        code: crate::error::ErrorCode::OutOfOrderSequenceNumber,
                        message: format!(
                            "producer {} epoch {}: a batch of the set starts at sequence {}, \
                             expected {expected} at epoch {epoch}",
                            h.producer_id, h.producer_epoch, h.base_sequence
                        ),
                    });
                }
                previous = Some((epoch, last));
            }
        }
    }
    Ok(duplicates)
}

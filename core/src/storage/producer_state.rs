//! The idempotent producer's state of one partition (Kafka's `ProducerStateManager`): for each
//! producer id, its epoch and the metadata of its last [`PRODUCER_BATCHES_RETAINED`] runs of
//! batches (sequence range and offsets), so a retried batch is recognised and answered with the
//! offsets it got the first time instead of being written twice.
//!
//! A *run* is one batch, or consecutive batches of the producer that the log holds back to back
//! (the next sequence at the next offset, nothing of another producer between): Kafka keeps 5
//! batches because its producers send one batch per partition per request, and ours send up to
//! `max.request.size` of batches in one, which a retry repeats whole. Within a run a batch's
//! offsets follow from its sequences, so any batch of the last 5 runs is recognised. On a
//! `LogAppendTime` topic, whose duplicate answers carry the batch's append time, only batches
//! with the same timestamp (one append) join a run.
//!
//! Pure state, no I/O: the log feeds it every magic 2 batch carrying a producer id — the leader
//! after [`ProducerStateTable::check`] accepted it, a follower and recovery as they append or
//! scan — and persists it with [`ProducerStateTable::encode_snapshot`] beside the segments
//! (`{offset:020}.snapshot`, format in `docs/FORMAT.md`).
//!
//! Rules (Kafka's `ProducerAppendInfo.checkSequence`, idempotence without transactions):
//! - an epoch **older** than the producer's current one is fenced: INVALID_PRODUCER_EPOCH;
//! - a batch whose epoch matches and whose sequence range lies within one of the retained runs
//!   is a **duplicate**: [`SequenceCheck::Duplicate`] with that batch's offsets (the broker
//!   answers success with them, as Kafka answers DUPLICATE_SEQUENCE_NUMBER);
//! - a **newer** epoch must start at sequence 0;
//! - within an epoch the first sequence must follow the last one (wrapping from `i32::MAX` to
//!   0); anything else is OUT_OF_ORDER_SEQUENCE_NUMBER;
//! - a producer id with **no state** (new, or its state was lost with old segments) is accepted
//!   at any sequence, as Kafka accepts it.

use std::collections::{BTreeMap, VecDeque};

use std::fs;
use std::path::{Path, PathBuf};

use crate::atomic_file::write_atomically_with;
use crate::error::{Error, ErrorCode, Result};
use crate::file_io::FileSystem;
pub use crate::format::v2::next_sequence;
use crate::format::v2::{BatchHeader, NO_PRODUCER_ID};
use crate::format::{Entries, MAGIC_V2};
use crate::limits::{PRODUCER_BATCHES_RETAINED, PRODUCER_STATE_PRODUCERS_MAX};
use crate::types::{Offset, TimestampMs};

/// How many sequence numbers from `from` to `to` (`to` after `from`, wrapping past `i32::MAX`
/// as sequences do).
fn sequences_between(from: i32, to: i32) -> u64 {
    if to >= from {
        (to - from) as u64
    } else {
        (i64::from(i32::MAX) - i64::from(from) + 1 + i64::from(to)) as u64
    }
}

/// Records in one run at most: well below the 2^31 sequences, so positions within a run are
/// unambiguous across the wrap.
const PRODUCER_RUN_RECORDS_MAX: u64 = 1 << 30;

/// What the log knows of one idempotent batch: who wrote it, its sequence range, where it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerBatch {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub first_offset: Offset,
    pub last_offset: Offset,
    pub max_timestamp: TimestampMs,
}

impl ProducerBatch {
    /// The batch's producer metadata from its header (offsets as the header has them: assigned
    /// ones once in the log); `None` for a batch without a producer id (not idempotent).
    pub fn from_header(h: &BatchHeader) -> Option<ProducerBatch> {
        (h.producer_id != NO_PRODUCER_ID).then(|| ProducerBatch {
            producer_id: h.producer_id,
            producer_epoch: h.producer_epoch,
            first_sequence: h.base_sequence,
            last_sequence: next_sequence(h.base_sequence, h.last_offset_delta as i32),
            first_offset: h.base_offset,
            last_offset: h.last_offset(),
            max_timestamp: h.max_timestamp,
        })
    }
}

/// The verdict on a batch a producer sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Append it.
    Append,
    /// Already in the log at these offsets: answer success with them, append nothing.
    Duplicate {
        first_offset: Offset,
        last_offset: Offset,
        /// The batch's largest timestamp in the log (its append time on a LogAppendTime topic).
        max_timestamp: TimestampMs,
    },
}

/// One retained batch of a producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BatchMeta {
    first_sequence: i32,
    last_sequence: i32,
    first_offset: Offset,
    last_offset: Offset,
    max_timestamp: TimestampMs,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ProducerEntry {
    epoch: i16,
    /// Oldest first, at most [`PRODUCER_BATCHES_RETAINED`].
    batches: VecDeque<BatchMeta>,
}

/// Every producer's state in one partition. See the module docs for the rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerStateTable {
    producers: BTreeMap<i64, ProducerEntry>,
}

impl ProducerStateTable {
    pub fn new() -> ProducerStateTable {
        ProducerStateTable::default()
    }

    /// Producers with state.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// The leader's check of a producer's batch before it is appended (its offsets are not
    /// assigned yet: only the producer fields and the record count matter).
    pub fn check(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        first_sequence: i32,
        last_sequence: i32,
    ) -> Result<SequenceCheck> {
        if producer_id < 0 || producer_epoch < 0 || first_sequence < 0 {
            return Err(Error::InvalidRequest(format!(
                "an idempotent batch needs a producer id, epoch and base sequence >= 0 \
                 (got {producer_id}, {producer_epoch}, {first_sequence})"
            )));
        }
        let Some(entry) = self.producers.get(&producer_id) else {
            return Ok(SequenceCheck::Append);
        };
        if producer_epoch < entry.epoch {
            return Err(Error::ProducerState {
                code: ErrorCode::InvalidProducerEpoch,
                message: format!(
                    "producer {producer_id} at epoch {producer_epoch} is fenced: epoch {} has \
                     taken over",
                    entry.epoch
                ),
            });
        }
        if producer_epoch == entry.epoch
            && let Some((b, skip)) = entry.batches.iter().find_map(|b| {
                let skip = sequences_between(b.first_sequence, first_sequence);
                let inside = skip + sequences_between(first_sequence, last_sequence)
                    <= sequences_between(b.first_sequence, b.last_sequence);
                inside.then_some((b, skip))
            })
        {
            let first_offset = Offset(b.first_offset.0 + skip);
            return Ok(SequenceCheck::Duplicate {
                first_offset,
                last_offset: Offset(
                    first_offset.0 + sequences_between(first_sequence, last_sequence),
                ),
                max_timestamp: b.max_timestamp,
            });
        }
        let expected = if producer_epoch > entry.epoch {
            0
        } else {
            match entry.batches.back() {
                Some(last) => next_sequence(last.last_sequence, 1),
                // A new epoch recorded without batches cannot happen (`record` adds one).
                None => 0,
            }
        };
        if first_sequence != expected {
            return Err(Error::ProducerState {
                code: ErrorCode::OutOfOrderSequenceNumber,
                message: format!(
                    "producer {producer_id} epoch {producer_epoch}: batch starts at sequence \
                     {first_sequence}, expected {expected}"
                ),
            });
        }
        Ok(SequenceCheck::Append)
    }

    /// Records a batch now in the log (leader after appending, follower, recovery): it extends
    /// the producer's last run when it follows it in sequence and offset (and, unless
    /// `create_time` — the topic's timestamps are create times — has its timestamp), otherwise
    /// starts a run. A newer epoch replaces the producer's runs; at most
    /// [`PRODUCER_BATCHES_RETAINED`] are kept.
    /// A new producer beyond [`PRODUCER_STATE_PRODUCERS_MAX`] evicts the one that wrote least
    /// recently (the lowest last offset: the same choice on every replica, since they hold the
    /// same log); the evicted producer's next batch is accepted as a new producer's would be.
    pub fn record(&mut self, b: &ProducerBatch, create_time: bool) {
        if !self.producers.contains_key(&b.producer_id)
            && self.producers.len() >= PRODUCER_STATE_PRODUCERS_MAX
            && let Some(oldest) = self
                .producers
                .iter()
                .min_by_key(|(_, e)| e.batches.back().map(|b| b.last_offset))
                .map(|(id, _)| *id)
        {
            self.producers.remove(&oldest);
        }
        let entry = self.producers.entry(b.producer_id).or_default();
        if b.producer_epoch > entry.epoch || entry.batches.is_empty() {
            entry.epoch = b.producer_epoch;
            entry.batches.clear();
        } else if b.producer_epoch < entry.epoch {
            // An older epoch's batch (a replay before a fencing one): nothing to remember.
            return;
        }
        if let Some(run) = entry.batches.back_mut()
            && b.first_sequence == next_sequence(run.last_sequence, 1)
            && b.first_offset.0 == run.last_offset.0 + 1
            && (create_time || b.max_timestamp == run.max_timestamp)
            && b.last_offset.0 - run.first_offset.0 < PRODUCER_RUN_RECORDS_MAX
        {
            run.last_sequence = b.last_sequence;
            run.last_offset = b.last_offset;
            run.max_timestamp = run.max_timestamp.max(b.max_timestamp);
            return;
        }
        entry.batches.push_back(BatchMeta {
            first_sequence: b.first_sequence,
            last_sequence: b.last_sequence,
            first_offset: b.first_offset,
            last_offset: b.last_offset,
            max_timestamp: b.max_timestamp,
        });
        while entry.batches.len() > PRODUCER_BATCHES_RETAINED {
            entry.batches.pop_front();
        }
    }

    /// Records every idempotent batch of a message set as the log holds it (offsets assigned):
    /// what a follower appends, or what recovery reads back. Entries ending below `from` are
    /// skipped (a read returns the entry holding its start offset whole). `create_time` as in
    /// [`ProducerStateTable::record`].
    pub fn record_set(&mut self, set: &[u8], from: Offset, create_time: bool) -> Result<()> {
        for entry in Entries::new(set) {
            let entry = entry?;
            if entry.magic() != MAGIC_V2 || entry.last_offset() < from {
                continue;
            }
            if let Some(b) = ProducerBatch::from_header(&BatchHeader::parse(entry.bytes)?) {
                self.record(&b, create_time);
            }
        }
        Ok(())
    }

    /// Forgets every batch at or after `offset` (the log was truncated there; a run across it
    /// keeps its part below); producers left without batches are dropped. What was forgotten
    /// beyond the retained window cannot come back: rebuild from a snapshot below `offset` and
    /// the log instead when that matters.
    pub fn truncate_to(&mut self, offset: Offset) {
        self.producers.retain(|_, e| {
            e.batches.retain_mut(|b| {
                if b.first_offset < offset && offset <= b.last_offset {
                    let kept = offset.0 - 1 - b.first_offset.0;
                    b.last_offset = Offset(offset.0 - 1);
                    b.last_sequence = next_sequence(b.first_sequence, kept as i32);
                }
                b.last_offset < offset
            });
            !e.batches.is_empty()
        });
    }

    /// The table as the bytes of a snapshot file (`docs/FORMAT.md`, "Producer state
    /// snapshots"): `SLPS`, version 1, CRC-32C of the rest, then each producer.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(4 + self.producers.len() * 64);
        body.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        for (id, e) in &self.producers {
            body.extend_from_slice(&id.to_be_bytes());
            body.extend_from_slice(&e.epoch.to_be_bytes());
            body.push(e.batches.len() as u8);
            for b in &e.batches {
                body.extend_from_slice(&b.first_sequence.to_be_bytes());
                body.extend_from_slice(&b.last_sequence.to_be_bytes());
                body.extend_from_slice(&b.first_offset.0.to_be_bytes());
                body.extend_from_slice(&b.last_offset.0.to_be_bytes());
                body.extend_from_slice(&b.max_timestamp.0.to_be_bytes());
            }
        }
        let mut out = Vec::with_capacity(SNAPSHOT_HEADER_BYTES + body.len());
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Reads a snapshot written by [`ProducerStateTable::encode_snapshot`]. Any damage (magic,
    /// version, CRC, lengths, bounds) is CORRUPT_MESSAGE: the caller rebuilds from the log.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<ProducerStateTable> {
        let bad = |why: String| Error::corrupt(0, format!("producer state snapshot: {why}"));
        if bytes.len() < SNAPSHOT_HEADER_BYTES || &bytes[..4] != SNAPSHOT_MAGIC {
            return Err(bad("not a snapshot (magic)".into()));
        }
        let version = u16::from_be_bytes([bytes[4], bytes[5]]);
        if version != SNAPSHOT_VERSION {
            return Err(bad(format!("unknown version {version}")));
        }
        let crc = u32::from_be_bytes(bytes[6..10].try_into().expect("4 bytes"));
        let body = &bytes[SNAPSHOT_HEADER_BYTES..];
        if crc32c::crc32c(body) != crc {
            return Err(bad("CRC mismatch".into()));
        }
        let mut r = Cursor { buf: body, at: 0 };
        let count = r.u32()? as usize;
        if count > PRODUCER_STATE_PRODUCERS_MAX {
            return Err(bad(format!("{count} producers")));
        }
        let mut table = ProducerStateTable::new();
        for _ in 0..count {
            let id = r.i64()?;
            let epoch = r.i16()?;
            let n = r.u8()? as usize;
            if id < 0 || epoch < 0 || n == 0 || n > PRODUCER_BATCHES_RETAINED {
                return Err(bad(format!("producer {id} epoch {epoch} with {n} batches")));
            }
            let mut batches = VecDeque::with_capacity(n);
            for _ in 0..n {
                batches.push_back(BatchMeta {
                    first_sequence: r.i32()?,
                    last_sequence: r.i32()?,
                    first_offset: Offset(r.i64()? as u64),
                    last_offset: Offset(r.i64()? as u64),
                    max_timestamp: TimestampMs(r.i64()?),
                });
            }
            if table
                .producers
                .insert(id, ProducerEntry { epoch, batches })
                .is_some()
            {
                return Err(bad(format!("producer {id} listed twice")));
            }
        }
        if r.at != body.len() {
            return Err(bad(format!(
                "{} bytes after the last producer",
                body.len() - r.at
            )));
        }
        Ok(table)
    }
}

/// The suffix of snapshot files: `{offset:020}.snapshot` holds the state of every batch below
/// `offset` (written when a segment rolls, at `offset` = the new segment's base, and on a clean
/// close, at the log end).
pub(crate) const SNAPSHOT_SUFFIX: &str = "snapshot";

pub(crate) fn snapshot_path(dir: &Path, offset: Offset) -> PathBuf {
    dir.join(format!("{:020}.{SNAPSHOT_SUFFIX}", offset.0))
}

/// The offsets of the snapshot files in `dir`, ascending.
pub(crate) fn snapshot_offsets(dir: &Path) -> Result<Vec<Offset>> {
    let entries = fs::read_dir(dir).map_err(|e| Error::io("list partition directory", dir, e))?;
    let mut offsets = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list partition directory", dir, e))?;
        let name = entry.file_name();
        let Some((stem, SNAPSHOT_SUFFIX)) = name.to_str().and_then(|n| n.split_once('.')) else {
            continue;
        };
        if stem.len() == 20
            && stem.bytes().all(|b| b.is_ascii_digit())
            && let Ok(offset) = stem.parse::<u64>()
        {
            offsets.push(Offset(offset));
        }
    }
    offsets.sort_unstable();
    Ok(offsets)
}

/// Writes `table` as the snapshot at `offset`, atomically and durably.
pub(crate) fn write_snapshot(
    fs: &dyn FileSystem,
    dir: &Path,
    offset: Offset,
    table: &ProducerStateTable,
) -> Result<()> {
    write_atomically_with(fs, &snapshot_path(dir, offset), &table.encode_snapshot())
}

/// Deletes the snapshot files whose offset `doomed` selects.
pub(crate) fn delete_snapshots(
    fs: &dyn FileSystem,
    dir: &Path,
    doomed: impl Fn(Offset) -> bool,
) -> Result<()> {
    for offset in snapshot_offsets(dir)?.into_iter().filter(|o| doomed(*o)) {
        let path = snapshot_path(dir, offset);
        match fs.remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("delete producer state snapshot", &path, e)),
        }
    }
    Ok(())
}

/// The newest readable snapshot at or below `at_most` and its offset, or an empty table at
/// `otherwise` when there is none. A damaged snapshot is deleted with a warning (the state is
/// rebuilt from the log instead), and so is every snapshot above `at_most` (the log was cut
/// below it).
pub(crate) fn load_snapshot(
    fs: &dyn FileSystem,
    dir: &Path,
    at_most: Offset,
    otherwise: Offset,
) -> Result<(ProducerStateTable, Offset)> {
    delete_snapshots(fs, dir, |o| o > at_most)?;
    for offset in snapshot_offsets(dir)?.into_iter().rev() {
        let path = snapshot_path(dir, offset);
        let loaded = fs::read(&path)
            .map_err(|e| Error::io("read producer state snapshot", &path, e))
            .and_then(|bytes| ProducerStateTable::decode_snapshot(&bytes));
        match loaded {
            Ok(table) => return Ok((table, offset)),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "removing an unreadable producer state snapshot; the state is rebuilt from the log");
                delete_snapshots(fs, dir, |o| o == offset)?;
            }
        }
    }
    Ok((ProducerStateTable::new(), otherwise))
}

const SNAPSHOT_MAGIC: &[u8; 4] = b"SLPS";
const SNAPSHOT_VERSION: u16 = 1;
/// Magic, version, CRC.
const SNAPSHOT_HEADER_BYTES: usize = 4 + 2 + 4;

/// A bounds-checked big-endian reader over a snapshot body.
struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N]> {
        let end = self.at + N;
        let bytes = self.buf.get(self.at..end).ok_or_else(|| {
            Error::corrupt(self.at, "producer state snapshot: cut short".to_owned())
        })?;
        self.at = end;
        Ok(bytes.try_into().expect("N bytes"))
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take::<1>()?[0])
    }
    fn i16(&mut self) -> Result<i16> {
        Ok(i16::from_be_bytes(self.take()?))
    }
    fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.take()?))
    }
    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(self.take()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(pid: i64, epoch: i16, first: i32, count: i32, offset: u64) -> ProducerBatch {
        ProducerBatch {
            producer_id: pid,
            producer_epoch: epoch,
            first_sequence: first,
            last_sequence: next_sequence(first, count - 1),
            first_offset: Offset(offset),
            last_offset: Offset(offset + count as u64 - 1),
            max_timestamp: TimestampMs(1_000 + offset as i64),
        }
    }

    fn code(r: Result<SequenceCheck>) -> ErrorCode {
        r.unwrap_err().code()
    }

    #[test]
    fn in_order_batches_append_and_a_retry_is_a_duplicate_with_the_first_offsets() {
        let mut t = ProducerStateTable::new();
        assert_eq!(t.check(7, 0, 0, 9).unwrap(), SequenceCheck::Append);
        t.record(&batch(7, 0, 0, 10, 100), false);
        assert_eq!(t.check(7, 0, 10, 14).unwrap(), SequenceCheck::Append);
        t.record(&batch(7, 0, 10, 5, 110), false);
        // The first batch again (its answer was lost): the offsets it got, nothing appended.
        assert_eq!(
            t.check(7, 0, 0, 9).unwrap(),
            SequenceCheck::Duplicate {
                first_offset: Offset(100),
                last_offset: Offset(109),
                max_timestamp: TimestampMs(1_100),
            }
        );
        // Their timestamps differ (`create_time` false: append times), so they are two runs.
        assert_eq!(
            t.check(7, 0, 10, 14).unwrap(),
            SequenceCheck::Duplicate {
                first_offset: Offset(110),
                last_offset: Offset(114),
                max_timestamp: TimestampMs(1_110),
            }
        );
        // A gap, a repeat running past what the log holds, a step back into a new range.
        assert_eq!(
            code(t.check(7, 0, 16, 20)),
            ErrorCode::OutOfOrderSequenceNumber
        );
        assert_eq!(
            code(t.check(7, 0, 12, 16)),
            ErrorCode::OutOfOrderSequenceNumber
        );
        assert_eq!(
            code(t.check(7, 0, 14, 15)),
            ErrorCode::OutOfOrderSequenceNumber
        );
        let e = t.check(7, 0, 16, 20).unwrap_err().to_string();
        assert!(e.contains("expected 15"), "{e}");
    }

    #[test]
    fn batches_back_to_back_form_one_run_so_a_retry_of_many_is_recognised() {
        let mut t = ProducerStateTable::new();
        // A request's 8 batches, appended together, and another producer's batch after them.
        for i in 0..8 {
            t.record(&batch(4, 0, i * 3, 3, 30 + i as u64 * 3), true);
        }
        t.record(&batch(5, 0, 0, 1, 54), true);
        // Then 4 more runs of producer 4 (another producer's records between each).
        for i in 0..4u64 {
            t.record(&batch(4, 0, 24 + i as i32, 1, 60 + 2 * i), true);
            t.record(&batch(5, 0, 1 + i as i32, 1, 61 + 2 * i), true);
        }
        // The first run is still one of the last five: each of its batches has its offsets.
        for i in 0..8 {
            assert_eq!(
                t.check(4, 0, i * 3, i * 3 + 2).unwrap(),
                SequenceCheck::Duplicate {
                    first_offset: Offset(30 + i as u64 * 3),
                    last_offset: Offset(32 + i as u64 * 3),
                    max_timestamp: TimestampMs(1_051),
                }
            );
        }
        // One more run pushes it out.
        t.record(&batch(4, 0, 28, 1, 70), true);
        assert_eq!(
            code(t.check(4, 0, 0, 2)),
            ErrorCode::OutOfOrderSequenceNumber
        );
        // Truncation drops the runs at or after the cut.
        t.truncate_to(Offset(63));
        assert!(matches!(
            t.check(4, 0, 25, 25),
            Ok(SequenceCheck::Duplicate { .. })
        ));
        assert_eq!(t.check(4, 0, 26, 26).unwrap(), SequenceCheck::Append);
        // A run across the sequence wrap.
        let mut t = ProducerStateTable::new();
        t.record(&batch(6, 0, i32::MAX - 1, 2, 0), true);
        t.record(&batch(6, 0, 0, 3, 2), true);
        assert_eq!(
            t.check(6, 0, 1, 2).unwrap(),
            SequenceCheck::Duplicate {
                first_offset: Offset(3),
                last_offset: Offset(4),
                max_timestamp: TimestampMs(1_002),
            }
        );
        assert_eq!(t.check(6, 0, 3, 3).unwrap(), SequenceCheck::Append);
        // Truncation inside a run keeps the part below the cut.
        t.truncate_to(Offset(3));
        assert!(matches!(
            t.check(6, 0, 0, 0),
            Ok(SequenceCheck::Duplicate {
                first_offset: Offset(2),
                ..
            })
        ));
        assert_eq!(t.check(6, 0, 1, 1).unwrap(), SequenceCheck::Append);
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut t = ProducerStateTable::new();
        for i in 0..7 {
            t.record(&batch(1, 0, i * 2, 2, 10 * i as u64), false);
        }
        // Batches 0 and 1 fell out of the window: their retry is out of order, not a duplicate.
        assert_eq!(
            code(t.check(1, 0, 0, 1)),
            ErrorCode::OutOfOrderSequenceNumber
        );
        assert!(matches!(
            t.check(1, 0, 4, 5),
            Ok(SequenceCheck::Duplicate { .. })
        ));
        assert_eq!(t.check(1, 0, 14, 15).unwrap(), SequenceCheck::Append);
    }

    #[test]
    fn epochs_fence_older_ones_and_a_new_epoch_starts_at_zero() {
        let mut t = ProducerStateTable::new();
        t.record(&batch(3, 2, 0, 4, 0), false);
        assert_eq!(code(t.check(3, 1, 4, 7)), ErrorCode::InvalidProducerEpoch);
        assert_eq!(
            code(t.check(3, 3, 4, 7)),
            ErrorCode::OutOfOrderSequenceNumber
        );
        assert_eq!(t.check(3, 3, 0, 3).unwrap(), SequenceCheck::Append);
        t.record(&batch(3, 3, 0, 4, 4), false);
        // The old epoch's batches are gone with it.
        assert_eq!(code(t.check(3, 2, 0, 3)), ErrorCode::InvalidProducerEpoch);
        // A replayed old-epoch batch (recovery) does not disturb the new epoch.
        t.record(&batch(3, 2, 4, 1, 8), false);
        assert_eq!(t.check(3, 3, 4, 4).unwrap(), SequenceCheck::Append);
    }

    #[test]
    fn unknown_producers_start_anywhere_and_sequences_wrap() {
        let mut t = ProducerStateTable::new();
        assert_eq!(t.check(9, 0, 500, 509).unwrap(), SequenceCheck::Append);
        t.record(&batch(9, 0, i32::MAX - 1, 4, 0), false);
        assert_eq!(
            t.check(9, 0, 2, 3).unwrap(),
            SequenceCheck::Append,
            "wrapped past i32::MAX"
        );
        assert_eq!(next_sequence(i32::MAX, 1), 0);
        assert!(matches!(
            t.check(-1, 0, 0, 0),
            Err(Error::InvalidRequest(_))
        ));
    }

    #[test]
    fn truncation_forgets_batches_at_or_after_the_offset() {
        let mut t = ProducerStateTable::new();
        t.record(&batch(1, 0, 0, 5, 0), false);
        t.record(&batch(1, 0, 5, 5, 5), false);
        t.record(&batch(2, 0, 0, 5, 10), false);
        t.truncate_to(Offset(5));
        assert_eq!(t.len(), 1, "producer 2 had only batches past 5");
        assert_eq!(t.check(1, 0, 5, 9).unwrap(), SequenceCheck::Append);
    }

    #[test]
    fn snapshots_round_trip_and_damage_is_refused() {
        let mut t = ProducerStateTable::new();
        for i in 0..6 {
            t.record(&batch(11, 1, i * 3, 3, 3 * i as u64), false);
        }
        t.record(&batch(12, 0, 0, 1, 100), false);
        let bytes = t.encode_snapshot();
        assert_eq!(ProducerStateTable::decode_snapshot(&bytes).unwrap(), t);
        assert_eq!(
            ProducerStateTable::decode_snapshot(&ProducerStateTable::new().encode_snapshot())
                .unwrap(),
            ProducerStateTable::new()
        );
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(
                ProducerStateTable::decode_snapshot(&bad).is_err(),
                "a flip at byte {i} went unnoticed"
            );
        }
        for cut in 0..bytes.len() {
            assert!(ProducerStateTable::decode_snapshot(&bytes[..cut]).is_err());
        }
    }
}

//! The partition log against real files in temp directories: append/read across segments,
//! lookups by offset and time at segment boundaries, compressed wrappers, retention and
//! `delete_segments_before`, restart,
//! crash damage (cut and flipped bytes, lost and garbage indexes), bad input, concurrency, and
//! a property test against a `Vec` model.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proptest::prelude::*;
use sluiceway_core::format::{self, Compression, Entries, MAGIC_V1, MessageSetBuilder};
use sluiceway_core::storage::{
    Clock, FlushPolicy, LogConfig, ManualClock, PartitionLog, ReadResult, TimestampType,
};
use sluiceway_core::{Error, Offset, TimestampMs};

const T0: i64 = 1_700_000_000_000;

/// Small segments and a dense index so a few hundred messages cover many segments.
fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 100,
        flush: FlushPolicy::Os,
        retention_ms: None,
        ..LogConfig::default()
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    clock: Arc<ManualClock>,
    config: LogConfig,
}

impl Fixture {
    fn new(config: LogConfig) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(PartitionLog::dir_name("events", 0));
        Fixture {
            _tmp: tmp,
            dir,
            clock: Arc::new(ManualClock::new(TimestampMs(T0))),
            config,
        }
    }

    fn open(&self) -> PartitionLog {
        self.try_open().unwrap()
    }

    fn try_open(&self) -> Result<PartitionLog, Error> {
        let clock: Arc<dyn Clock> = self.clock.clone();
        PartitionLog::open(&self.dir, self.config.clone(), clock)
    }

    /// Copies the partition directory into a fresh fixture (to damage a copy).
    fn copy(&self) -> Fixture {
        let f = Fixture::new(self.config.clone());
        fs::create_dir_all(&f.dir).unwrap();
        for e in fs::read_dir(&self.dir).unwrap() {
            let e = e.unwrap();
            fs::copy(e.path(), f.dir.join(e.file_name())).unwrap();
        }
        f.clock.set(self.clock.now_ms());
        f
    }

    fn files(&self, suffix: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == suffix))
            .collect();
        v.sort();
        v
    }

    fn bases(&self) -> Vec<u64> {
        self.files("log")
            .iter()
            .map(|p| p.file_stem().unwrap().to_str().unwrap().parse().unwrap())
            .collect()
    }
}

fn value(i: u64) -> Vec<u8> {
    format!("value-{i:06}-{}", "x".repeat((i % 7) as usize)).into_bytes()
}

fn ts(i: u64) -> i64 {
    T0 + 10 * i as i64
}

/// One set of uncompressed messages `first..first+n` (value and timestamp derived from the index).
fn set(first: u64, n: u64) -> Vec<u8> {
    let mut b = MessageSetBuilder::new(MAGIC_V1, Compression::None);
    for i in first..first + n {
        b.push(TimestampMs(ts(i)), Some(b"k"), Some(&value(i)));
    }
    b.finish().unwrap()
}

fn compressed(first: u64, n: u64, codec: Compression) -> Vec<u8> {
    let mut b = MessageSetBuilder::new(MAGIC_V1, codec);
    for i in first..first + n {
        b.push(TimestampMs(ts(i)), None, Some(&value(i)));
    }
    b.finish().unwrap()
}

/// (offset, timestamp, value) of every logical message in `bytes`.
fn records(bytes: &[u8]) -> Vec<(u64, i64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut scratch = Vec::new();
    format::for_each_record(bytes, &mut scratch, |r| {
        out.push((
            r.offset.0,
            r.timestamp.0,
            r.value.unwrap_or_default().to_vec(),
        ))
    })
    .unwrap();
    out
}

/// Every message from the log start to `upper`, read in small fetches.
fn read_all(log: &PartitionLog, upper: Offset) -> Vec<(u64, i64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut next = log.log_start_offset();
    while next < upper {
        let r = log.read(next, 700, upper).unwrap();
        assert_last_offset(&r);
        let recs: Vec<_> = records(&r.bytes)
            .into_iter()
            .filter(|r| r.0 >= next.0)
            .collect();
        assert!(!recs.is_empty(), "no progress reading at {next}");
        next = Offset(recs.last().unwrap().0 + 1);
        out.extend(recs);
    }
    out
}

/// A read's `last_offset` is what walking its bytes gives (the broker sends it as the next
/// fetch offset, and the consumer checks it against the set).
fn assert_last_offset(r: &ReadResult) {
    assert_eq!(r.last_offset, format::last_offset_of(&r.bytes).unwrap());
}

fn expected(range: std::ops::Range<u64>) -> Vec<(u64, i64, Vec<u8>)> {
    range.map(|i| (i, ts(i), value(i))).collect()
}

/// Appends messages 0..n one set of `per` at a time.
fn fill(log: &PartitionLog, n: u64, per: u64) {
    let mut i = 0;
    while i < n {
        let k = per.min(n - i);
        let info = log.append(&mut set(i, k)).unwrap();
        assert_eq!(
            (info.base_offset, info.last_offset, info.message_count),
            (Offset(i), Offset(i + k - 1), k)
        );
        i += k;
    }
}

/// (position, offset, length) of each entry in a `.log` file.
fn entries_of(path: &Path) -> Vec<(usize, u64, usize)> {
    let bytes = fs::read(path).unwrap();
    Entries::new(&bytes)
        .map(|e| e.unwrap())
        .map(|e| (e.position, e.offset().0, e.len()))
        .collect()
}

fn first_offset(log: &PartitionLog, offset: u64) -> u64 {
    records(
        &log.read(Offset(offset), 1, log.log_end_offset())
            .unwrap()
            .bytes,
    )
    .into_iter()
    .find(|r| r.0 >= offset)
    .unwrap()
    .0
}

#[test]
fn append_and_read_across_many_segments() {
    let f = Fixture::new(small_config());
    let log = f.open();
    fill(&log, 300, 1);
    assert!(
        log.segment_count() > 10,
        "only {} segments",
        log.segment_count()
    );
    assert_eq!(log.log_end_offset(), Offset(300));
    assert_eq!(read_all(&log, log.log_end_offset()), expected(0..300));
    for o in 0..300 {
        let r = log.read(Offset(o), 1, Offset(300)).unwrap();
        let recs = records(&r.bytes);
        assert_eq!(recs.len(), 1, "KIP-74: exactly one entry for max_bytes 1");
        assert_eq!(recs[0], (o, ts(o), value(o)));
    }
    // Segment file names are the 20-digit base offsets, and each segment's first entry has it.
    for (path, base) in f.files("log").iter().zip(f.bases()) {
        assert_eq!(
            path.file_name().unwrap().to_str().unwrap(),
            format!("{base:020}.log")
        );
        assert_eq!(entries_of(path)[0].1, base);
    }
    assert_eq!(
        log.size_bytes(),
        f.files("log")
            .iter()
            .map(|p| fs::metadata(p).unwrap().len())
            .sum::<u64>()
    );
}

#[test]
fn lookups_at_segment_boundaries() {
    let f = Fixture::new(small_config());
    let log = f.open();
    fill(&log, 200, 3);
    let bases = f.bases();
    assert!(bases.len() > 5);
    for &b in &bases[1..] {
        // First offset of a segment and last offset of the previous one.
        assert_eq!(first_offset(&log, b), b);
        assert_eq!(first_offset(&log, b - 1), b - 1);
        assert_eq!(
            log.offset_for_timestamp(TimestampMs(ts(b))).unwrap(),
            Some(Offset(b))
        );
        assert_eq!(
            log.offset_for_timestamp(TimestampMs(ts(b - 1))).unwrap(),
            Some(Offset(b - 1))
        );
        assert_eq!(
            log.offset_for_timestamp(TimestampMs(ts(b - 1) + 1))
                .unwrap(),
            Some(Offset(b))
        );
    }
    for o in 0..200 {
        assert_eq!(
            log.offset_for_timestamp(TimestampMs(ts(o))).unwrap(),
            Some(Offset(o)),
            "timestamp of {o}"
        );
    }
    assert_eq!(
        log.offset_for_timestamp(TimestampMs(0)).unwrap(),
        Some(Offset(0))
    );
    assert_eq!(
        log.offset_for_timestamp(TimestampMs(ts(199) + 1)).unwrap(),
        None
    );
}

#[test]
fn read_bounds_and_kip74() {
    let f = Fixture::new(LogConfig {
        flush: FlushPolicy::Os,
        ..LogConfig::default()
    });
    let log = f.open();
    fill(&log, 10, 1);
    // offset == log end: empty; past it or below the start: out of range with context.
    assert!(
        log.read(Offset(10), 1000, Offset(10))
            .unwrap()
            .bytes
            .is_empty()
    );
    match log.read(Offset(11), 1000, Offset(11)) {
        Err(Error::OffsetOutOfRange {
            offset: 11,
            log_start_offset: Offset(0),
            log_end_offset: Offset(10),
        }) => {}
        other => panic!("{other:?}"),
    }
    // Never past `upper` (the high watermark for consumers).
    log.set_high_watermark(Offset(4));
    let r = log.read(Offset(0), 1 << 20, log.high_watermark()).unwrap();
    assert_eq!(
        records(&r.bytes).iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    assert_eq!(
        (r.high_watermark, r.log_start_offset, r.log_end_offset),
        (Offset(4), Offset(0), Offset(10))
    );
    assert!(
        log.read(Offset(4), 1000, Offset(4))
            .unwrap()
            .bytes
            .is_empty()
    );
    // The high watermark is monotonic and clamped to the log end.
    log.set_high_watermark(Offset(2));
    assert_eq!(log.high_watermark(), Offset(4));
    log.set_high_watermark(Offset(99));
    assert_eq!(log.high_watermark(), Offset(10));
    // max_bytes cuts at whole entries.
    let one = log.read(Offset(0), 1, Offset(10)).unwrap();
    assert_eq!(one.last_offset, Some(Offset(0)));
    let one = one.bytes.len();
    let r = log
        .read(Offset(0), (2 * one + one / 2) as u32, Offset(10))
        .unwrap();
    assert_eq!(records(&r.bytes).len(), 2);
    assert_eq!(r.last_offset, Some(Offset(1)));
    assert_eq!(
        log.read(Offset(10), 1000, Offset(10)).unwrap().last_offset,
        None
    );
}

#[test]
fn compressed_wrappers_read_from_the_middle() {
    let f = Fixture::new(LogConfig {
        segment_bytes: 2048,
        ..small_config()
    });
    let log = f.open();
    let codecs = [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    let mut next = 0;
    for k in 0..24 {
        let n = 5 + k % 4;
        let info = log
            .append(&mut compressed(next, n, codecs[k as usize % 4]))
            .unwrap();
        assert_eq!(
            (info.base_offset, info.last_offset),
            (Offset(next), Offset(next + n - 1))
        );
        assert_eq!(info.max_timestamp, TimestampMs(ts(next + n - 1)));
        next += n;
    }
    assert!(log.segment_count() > 2);
    assert_eq!(read_all(&log, log.log_end_offset()), expected(0..next));
    for o in 0..next {
        // The returned entry is the wrapper containing `o`; it decodes to include `o`.
        let recs = records(&log.read(Offset(o), 1, Offset(next)).unwrap().bytes);
        assert!(
            recs.first().unwrap().0 <= o && recs.last().unwrap().0 >= o,
            "offset {o}: {:?}",
            recs.iter().map(|r| r.0).collect::<Vec<_>>()
        );
        // Seek by time finds the inner message, not just its wrapper.
        assert_eq!(
            log.offset_for_timestamp(TimestampMs(ts(o))).unwrap(),
            Some(Offset(o))
        );
    }
    // A wrapper straddling `upper` is not returned (its last offset is ≥ upper).
    let r = log.read(Offset(0), 1 << 20, Offset(3)).unwrap();
    assert!(r.bytes.is_empty());
    // Survives a restart with recovery (indexes rebuilt from wrappers).
    drop(log);
    let log = f.open();
    assert_eq!(read_all(&log, log.log_end_offset()), expected(0..next));
}

#[test]
fn rolls_by_segment_ms_and_full_index() {
    let f = Fixture::new(LogConfig {
        segment_ms: 60_000,
        ..LogConfig {
            flush: FlushPolicy::Os,
            ..LogConfig::default()
        }
    });
    let log = f.open();
    log.append(&mut set(0, 1)).unwrap();
    f.clock.advance(59_999);
    log.tick().unwrap();
    assert_eq!(log.segment_count(), 1);
    f.clock.advance(1);
    log.tick().unwrap();
    assert_eq!(log.segment_count(), 2);
    // An empty active segment never rolls, however old.
    f.clock.advance(10 * 60_000);
    log.tick().unwrap();
    assert_eq!(log.segment_count(), 2);
    // Age also rolls on append.
    log.append(&mut set(1, 1)).unwrap();
    f.clock.advance(60_000);
    log.append(&mut set(2, 1)).unwrap();
    assert_eq!(log.segment_count(), 3);
    assert_eq!(f.bases(), vec![0, 1, 2]);

    // A tiny index fills up and rolls the segment.
    let g = Fixture::new(LogConfig {
        index_bytes_max: 48,
        index_interval_bytes: 0,
        ..LogConfig {
            flush: FlushPolicy::Os,
            ..LogConfig::default()
        }
    });
    let log = g.open();
    fill(&log, 40, 1);
    assert!(log.segment_count() >= 5, "{} segments", log.segment_count());
    assert_eq!(read_all(&log, log.log_end_offset()), expected(0..40));
    for o in 0..40 {
        assert_eq!(
            log.offset_for_timestamp(TimestampMs(ts(o))).unwrap(),
            Some(Offset(o))
        );
    }
}

#[test]
fn retention_by_time() {
    let f = Fixture::new(LogConfig {
        retention_ms: Some(3_600_000),
        ..small_config()
    });
    let log = f.open();
    // Messages stamped with the clock: 0..100 an hour and a half ago, 100..200 now.
    let msgs = |first: u64, n: u64, at: i64| {
        for i in first..first + n {
            let mut b = MessageSetBuilder::new(MAGIC_V1, Compression::None);
            b.push(TimestampMs(at), None, Some(&value(i)));
            log.append(&mut b.finish().unwrap()).unwrap();
        }
    };
    msgs(0, 100, T0);
    f.clock.advance(90 * 60_000);
    msgs(100, 100, T0 + 90 * 60_000);
    let segments = log.segment_count();
    // Retention never deletes above the high watermark.
    assert_eq!(log.enforce_retention().unwrap(), 0);
    log.set_high_watermark(log.log_end_offset());
    let deleted = log.enforce_retention().unwrap();
    assert!(deleted > 0);
    assert_eq!(log.segment_count(), segments - deleted);
    let start = log.log_start_offset();
    assert!(start.0 <= 100 && start.0 + 25 > 100, "log start {start}");
    assert_eq!(start.0, f.bases()[0]);
    assert!(matches!(
        log.read(Offset(0), 100, log.log_end_offset()),
        Err(Error::OffsetOutOfRange { .. })
    ));
    assert_eq!(first_offset(&log, start.0), start.0);
    // Later everything expires, but the active segment stays.
    f.clock.advance(10 * 3_600_000);
    log.enforce_retention().unwrap();
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.log_start_offset().0, f.bases()[0]);
    assert!(log.high_watermark() >= log.log_start_offset());
    // The new log start survives a restart.
    let start = log.log_start_offset();
    log.close().unwrap();
    let log = f.open();
    assert_eq!(log.log_start_offset(), start);
    assert_eq!(log.log_end_offset(), Offset(200));
}

#[test]
fn retention_by_size() {
    let f = Fixture::new(LogConfig {
        retention_bytes: Some(4096),
        ..small_config()
    });
    let log = f.open();
    fill(&log, 300, 2);
    log.set_high_watermark(log.log_end_offset());
    let before = log.size_bytes();
    let deleted = log.enforce_retention().unwrap();
    assert!(deleted > 0);
    assert!(
        log.size_bytes() <= 4096,
        "{} bytes left of {before}",
        log.size_bytes()
    );
    // Deleting one more segment would not have been needed: the previous total exceeded the bound.
    let start = log.log_start_offset();
    assert_eq!(read_all(&log, log.log_end_offset()), expected(start.0..300));
    assert_eq!(log.enforce_retention().unwrap(), 0);
}

#[test]
fn delete_segments_before_drops_whole_sealed_segments_below_the_high_watermark() {
    let f = Fixture::new(small_config());
    let log = f.open();
    fill(&log, 300, 2);
    let bases = f.bases();
    assert!(bases.len() > 5, "{bases:?}");
    // Nothing below the high watermark (0) may go.
    assert_eq!(log.delete_segments_before(Offset(250)).unwrap(), 0);
    log.set_high_watermark(Offset(120));
    // Only segments whose every offset is below min(offset, high watermark) go; the log start
    // moves to the first remaining segment's base, never into a segment.
    let target = Offset(250);
    let deleted = log.delete_segments_before(target).unwrap();
    let kept_from = bases.iter().rev().find(|b| **b <= 120).copied().unwrap();
    assert_eq!(deleted, bases.iter().filter(|b| **b < kept_from).count());
    assert_eq!(log.log_start_offset(), Offset(kept_from));
    assert_eq!(f.bases()[0], kept_from);
    assert_eq!(
        read_all(&log, log.log_end_offset()),
        expected(kept_from..300)
    );
    assert!(matches!(
        log.read(Offset(kept_from - 1), 100, log.log_end_offset()),
        Err(Error::OffsetOutOfRange { .. })
    ));
    // Idempotent.
    assert_eq!(log.delete_segments_before(target).unwrap(), 0);

    // Roll so that the next append starts a segment, then delete everything before it.
    log.set_high_watermark(log.log_end_offset());
    assert!(log.roll().unwrap());
    assert!(
        !log.roll().unwrap(),
        "an empty active segment is not rolled again"
    );
    let snapshot_start = log.log_end_offset();
    assert_eq!(f.bases().last().copied(), Some(snapshot_start.0));
    log.append(&mut set(300, 3)).unwrap();
    log.set_high_watermark(log.log_end_offset());
    assert!(log.delete_segments_before(snapshot_start).unwrap() > 0);
    assert_eq!(f.bases(), vec![snapshot_start.0]);
    assert_eq!(log.log_start_offset(), snapshot_start);
    assert_eq!(read_all(&log, log.log_end_offset()), expected(300..303));
    // The active segment is never deleted, whatever the offset.
    assert_eq!(log.delete_segments_before(Offset(u64::MAX)).unwrap(), 0);

    // The new log start is checkpointed: it survives a crash (no clean close) and a restart.
    drop(log);
    let log = f.open();
    assert_eq!(log.log_start_offset(), snapshot_start);
    assert_eq!(read_all(&log, log.log_end_offset()), expected(300..303));
    log.close().unwrap();
    let log = f.open();
    assert_eq!(log.log_start_offset(), snapshot_start);
    assert!(log.delete_segments_before(Offset(0)).unwrap() == 0);
}

#[test]
fn restart_after_clean_close_keeps_everything() {
    let f = Fixture::new(small_config());
    let log = f.open();
    fill(&log, 150, 4);
    log.set_high_watermark(Offset(120));
    let before = read_all(&log, log.log_end_offset());
    let segments = log.segment_count();
    log.close().unwrap();
    assert!(matches!(
        log.append(&mut set(150, 1)),
        Err(Error::ShuttingDown)
    ));
    assert!(f.dir.join("clean-shutdown").exists());
    drop(log);

    let log = f.open();
    assert!(
        !f.dir.join("clean-shutdown").exists(),
        "open removes the marker"
    );
    assert_eq!(log.segment_count(), segments);
    assert_eq!(log.log_end_offset(), Offset(150));
    assert_eq!(log.high_watermark(), Offset(120));
    assert_eq!(log.recovery_point(), Offset(150));
    assert_eq!(read_all(&log, log.log_end_offset()), before);
    let info = log.append(&mut set(150, 5)).unwrap();
    assert_eq!(info.base_offset, Offset(150));
    for o in [0, 37, 149, 150, 154] {
        assert_eq!(first_offset(&log, o), o);
        assert_eq!(
            log.offset_for_timestamp(TimestampMs(ts(o))).unwrap(),
            Some(Offset(o))
        );
    }
    log.close().unwrap();
    let log = f.open();
    assert_eq!(read_all(&log, log.log_end_offset()), expected(0..155));
}

#[test]
fn restart_without_clean_shutdown_recovers() {
    let f = Fixture::new(small_config());
    let log = f.open();
    fill(&log, 100, 3);
    log.flush().unwrap();
    fill_from(&log, 100, 50);
    drop(log); // no close: as if the process died (the page cache still has the data)
    let log = f.open();
    assert_eq!(log.log_end_offset(), Offset(150));
    assert_eq!(read_all(&log, log.log_end_offset()), expected(0..150));
    log.append(&mut set(150, 1)).unwrap();
    assert_eq!(log.log_end_offset(), Offset(151));
}

fn fill_from(log: &PartitionLog, first: u64, n: u64) {
    for i in first..first + n {
        assert_eq!(log.append(&mut set(i, 1)).unwrap().base_offset, Offset(i));
    }
}

/// A log of 60 messages over several segments, left as after a crash (no close).
fn crashed_log() -> Fixture {
    let f = Fixture::new(small_config());
    let log = f.open();
    fill(&log, 60, 1);
    drop(log);
    f
}

/// A copy of `f` with its segment file named like `file` cut to `cut` bytes, and that file.
fn cut_copy(f: &Fixture, file: &Path, cut: usize) -> (Fixture, PathBuf) {
    let g = f.copy();
    let path = g.dir.join(file.file_name().unwrap());
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(cut as u64)
        .unwrap();
    (g, path)
}

#[test]
fn cut_at_every_byte_of_the_last_entry_truncates_to_the_entry_before() {
    let f = crashed_log();
    let last = f.files("log").pop().unwrap();
    let (pos, offset, len) = *entries_of(&last).last().unwrap();
    assert_eq!(offset, 59);
    for cut in pos..pos + len {
        let (g, path) = cut_copy(&f, &last, cut);
        let log = g.open();
        assert_eq!(log.log_end_offset(), Offset(59), "cut at {cut}");
        assert_eq!(fs::metadata(&path).unwrap().len(), pos as u64);
        assert_eq!(read_all(&log, log.log_end_offset()), expected(0..59));
        assert_eq!(log.append(&mut set(59, 2)).unwrap().base_offset, Offset(59));
        assert_eq!(read_all(&log, log.log_end_offset()), expected(0..61));
    }
}

#[test]
fn cut_after_a_clean_close_is_caught_by_the_tail_check() {
    let f = Fixture::new(small_config());
    let log = f.open();
    fill(&log, 60, 1);
    log.close().unwrap();
    drop(log);
    let last = f.files("log").pop().unwrap();
    let (pos, _, len) = *entries_of(&last).last().unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len((pos + len / 2) as u64)
        .unwrap();
    let log = f.open();
    assert_eq!(log.log_end_offset(), Offset(59));
    assert_eq!(read_all(&log, log.log_end_offset()), expected(0..59));
}

fn flip(path: &Path, at: usize, mask: u8) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at] ^= mask;
    fs::write(path, bytes).unwrap();
}

#[test]
fn flipped_bit_in_the_tail_entry_is_truncated() {
    let f = crashed_log();
    let last = f.files("log").pop().unwrap();
    let (pos, _, len) = *entries_of(&last).last().unwrap();
    for at in pos..pos + len {
        for mask in [0x01, 0x80] {
            let g = f.copy();
            let path = g.dir.join(last.file_name().unwrap());
            flip(&path, at, mask);
            let log = g
                .try_open()
                .unwrap_or_else(|e| panic!("flip {mask:#x} at {at}: {e}"));
            assert_eq!(log.log_end_offset(), Offset(59), "flip {mask:#x} at {at}");
            assert_eq!(read_all(&log, log.log_end_offset()), expected(0..59));
        }
    }
}

#[test]
fn flipped_bit_mid_segment_is_an_error_naming_segment_and_position() {
    let f = crashed_log();
    let logs = f.files("log");
    // Damage the last segment's middle entry, and separately a middle entry of an earlier
    // segment, in several fields: offset, size, CRC, timestamp, value.
    for file in [logs.len() - 1, 0] {
        let entries = entries_of(&logs[file]);
        assert!(entries.len() >= 3);
        let (pos, _, len) = entries[entries.len() / 2];
        for field in [7, 11, 13, 20, len - 1] {
            let g = f.copy();
            fs::remove_file(g.dir.join("checkpoint")).unwrap(); // recover everything
            let path = g.dir.join(logs[file].file_name().unwrap());
            flip(&path, pos + field, 0x04);
            match g.try_open() {
                Err(Error::CorruptSegment {
                    path: p,
                    position,
                    reason,
                }) => {
                    assert_eq!(p, path, "{reason}");
                    assert_eq!(position.0 as usize, pos, "{reason}");
                }
                Ok(log) => panic!(
                    "opened with log end {} after a flip at {} of {}",
                    log.log_end_offset(),
                    pos + field,
                    path.display()
                ),
                Err(e) => panic!("{e}"),
            }
        }
    }
}

#[test]
fn damaged_last_entry_of_a_sealed_segment_is_an_error_when_later_segments_hold_data() {
    let f = crashed_log();
    let logs = f.files("log");
    let g = f.copy();
    fs::remove_file(g.dir.join("checkpoint")).unwrap();
    let path = g.dir.join(logs[0].file_name().unwrap());
    let (pos, _, len) = *entries_of(&path).last().unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len((pos + len - 1) as u64)
        .unwrap();
    match g.try_open() {
        Err(Error::CorruptSegment {
            path: p, position, ..
        }) => assert_eq!((p, position.0 as usize), (path, pos)),
        other => panic!("{:?}", other.map(|l| l.log_end_offset())),
    }
}

#[test]
fn a_segment_that_does_not_follow_its_predecessor_is_an_error() {
    let f = crashed_log();
    let logs = f.files("log");
    let g = f.copy();
    fs::remove_file(g.dir.join("checkpoint")).unwrap();
    // Drop the whole second segment: the third no longer follows the first.
    for suffix in ["log", "index", "timeindex"] {
        fs::remove_file(
            g.dir
                .join(logs[1].file_name().unwrap())
                .with_extension(suffix),
        )
        .unwrap();
    }
    match g.try_open() {
        Err(Error::CorruptSegment { path, position, .. }) => {
            assert_eq!((path.file_name(), position.0), (logs[2].file_name(), 0));
        }
        other => panic!("{:?}", other.map(|l| l.log_end_offset())),
    }
}

/// Replaces the checkpoint with one whose recovery point is `rp`.
fn checkpoint_with_recovery_point(dir: &Path, rp: u64) {
    let body = format!(
        "sluiceway-checkpoint 1\nlog_start_offset 0\nhigh_watermark 0\nrecovery_point {rp}\n"
    );
    let crc = crc32fast::hash(body.as_bytes());
    fs::write(dir.join("checkpoint"), format!("{body}crc32 {crc:08x}\n")).unwrap();
}

fn base_of(segment: &Path) -> u64 {
    segment
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_sealed_segment_cut_short_above_the_recovery_point_ends_the_log_there() {
    // A roll seals a segment without waiting for its fsync (`PartitionLog::roll_locked`); the
    // checkpoint's recovery point covers it once that fsync is done. Before then a power loss
    // can cut it short while the next segment exists: nothing after the cut was acknowledged
    // as durable, so the log ends at the cut and later segments go, as after a torn tail. Once
    // the recovery point covers the segment, the same cut is damage, and opening fails.
    let f = crashed_log();
    let logs = f.files("log");
    assert!(logs.len() >= 3, "{} segments", logs.len());
    let sealed = &logs[logs.len() - 2];
    let next_base = base_of(&logs[logs.len() - 1]);
    let (pos, offset, _) = *entries_of(sealed).last().unwrap();
    // At an entry boundary (the segment ends cleanly, early) and inside the last entry (valid
    // entries then follow only in the next segment).
    for cut in [pos, pos + 13] {
        let what = format!("cut at {cut}");
        let (g, _) = cut_copy(&f, sealed, cut);
        checkpoint_with_recovery_point(&g.dir, base_of(sealed));
        let log = g.open();
        assert_eq!(log.log_end_offset(), Offset(offset), "{what}");
        assert_eq!(
            read_all(&log, log.log_end_offset()),
            expected(0..offset),
            "{what}"
        );
        assert_eq!(g.files("log").len(), logs.len() - 1, "{what}");
        log.append(&mut set(offset, 1)).unwrap();
        drop(log);

        let (h, _) = cut_copy(&f, sealed, cut);
        checkpoint_with_recovery_point(&h.dir, next_base);
        match h.try_open() {
            Err(Error::CorruptSegment { .. }) => {}
            other => panic!("{what}: {:?}", other.map(|l| l.log_end_offset())),
        }
    }
}

#[test]
fn torn_segment_with_only_garbage_after_is_truncated_and_later_segments_removed() {
    let f = crashed_log();
    let logs = f.files("log");
    assert!(logs.len() >= 3);
    let g = f.copy();
    fs::remove_file(g.dir.join("checkpoint")).unwrap();
    // Segment 1 gets a torn tail; segments 2.. hold only zeros (no valid entry anywhere after).
    let seg1 = g.dir.join(logs[1].file_name().unwrap());
    let (pos, offset, len) = *entries_of(&seg1).last().unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&seg1)
        .unwrap()
        .set_len((pos + len - 3) as u64)
        .unwrap();
    for later in &logs[2..] {
        let p = g.dir.join(later.file_name().unwrap());
        let n = fs::metadata(&p).unwrap().len();
        fs::write(&p, vec![0u8; n as usize]).unwrap();
    }
    let log = g.open();
    assert_eq!(log.log_end_offset(), Offset(offset));
    assert_eq!(log.segment_count(), 2);
    assert_eq!(g.files("log").len(), 2);
    assert_eq!(read_all(&log, log.log_end_offset()), expected(0..offset));
    assert_eq!(
        log.append(&mut set(offset, 1)).unwrap().base_offset,
        Offset(offset)
    );
}

#[test]
fn lost_or_garbage_indexes_are_rebuilt() {
    let f = Fixture::new(small_config());
    let log = f.open();
    fill(&log, 200, 2);
    log.close().unwrap();
    drop(log);
    let indexes = f.files("index");
    let time_indexes = f.files("timeindex");
    type Damage<'a> = Box<dyn Fn(&Fixture) + 'a>;
    let cases: Vec<Damage<'_>> = vec![
        Box::new(|g| fs::remove_file(g.dir.join(indexes[1].file_name().unwrap())).unwrap()),
        Box::new(|g| fs::remove_file(g.dir.join(time_indexes[2].file_name().unwrap())).unwrap()),
        Box::new(|g| {
            fs::remove_file(g.dir.join(indexes.last().unwrap().file_name().unwrap())).unwrap()
        }),
        Box::new(|g| {
            for p in g.files("index").into_iter().chain(g.files("timeindex")) {
                fs::remove_file(p).unwrap();
            }
        }),
        Box::new(|g| {
            // Garbage of the same length (deterministic pseudo-random bytes).
            for p in g.files("index").into_iter().chain(g.files("timeindex")) {
                let n = fs::metadata(&p).unwrap().len() as usize;
                let junk: Vec<u8> = (0..n)
                    .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0])
                    .collect();
                fs::write(p, junk).unwrap();
            }
        }),
        Box::new(|g| {
            fs::write(
                g.dir.join(indexes[0].file_name().unwrap()),
                b"garbage!garbage",
            )
            .unwrap()
        }),
    ];
    for (n, damage) in cases.iter().enumerate() {
        let g = f.copy();
        damage(&g);
        let log = g.open();
        assert_eq!(g.files("index").len(), g.files("log").len(), "case {n}");
        assert_eq!(g.files("timeindex").len(), g.files("log").len(), "case {n}");
        assert_eq!(log.log_end_offset(), Offset(200), "case {n}");
        for o in 0..200 {
            assert_eq!(first_offset(&log, o), o, "case {n}");
            assert_eq!(
                log.offset_for_timestamp(TimestampMs(ts(o))).unwrap(),
                Some(Offset(o)),
                "case {n}"
            );
        }
        // Rebuilt indexes equal the originals.
        log.close().unwrap();
        for p in indexes.iter().chain(&time_indexes) {
            assert_eq!(
                fs::read(p).unwrap(),
                fs::read(g.dir.join(p.file_name().unwrap())).unwrap(),
                "case {n}: {}",
                p.display()
            );
        }
    }
}

#[test]
fn stray_files_are_tidied() {
    let f = Fixture::new(small_config());
    let log = f.open();
    fill(&log, 50, 1);
    log.close().unwrap();
    drop(log);
    fs::write(f.dir.join("checkpoint.tmp"), b"half a checkpoint").unwrap();
    fs::write(f.dir.join(format!("{:020}.index", 999_999)), [0u8; 16]).unwrap();
    fs::write(f.dir.join(format!("{:020}.timeindex", 999_999)), [0u8; 24]).unwrap();
    fs::write(f.dir.join("notes.txt"), b"operator notes").unwrap();
    let log = f.open();
    assert!(!f.dir.join("checkpoint.tmp").exists());
    assert!(!f.dir.join(format!("{:020}.index", 999_999)).exists());
    assert!(
        f.dir.join("notes.txt").exists(),
        "unknown files are left alone"
    );
    assert_eq!(read_all(&log, log.log_end_offset()), expected(0..50));
    drop(log);
    // An empty last segment (a roll that crashed before its first append) is the active one.
    fs::write(f.dir.join(format!("{:020}.log", 50)), b"").unwrap();
    let log = f.open();
    assert_eq!(log.log_end_offset(), Offset(50));
    assert_eq!(log.append(&mut set(50, 1)).unwrap().base_offset, Offset(50));
    assert_eq!(f.bases().last(), Some(&50));
    // A damaged checkpoint is ignored: the whole log is recovered.
    drop(log);
    fs::write(
        f.dir.join("checkpoint"),
        b"sluiceway-checkpoint 1\nlog_start_offset 7\n",
    )
    .unwrap();
    let log = f.open();
    assert_eq!(log.log_start_offset(), Offset(0));
    assert_eq!(read_all(&log, log.log_end_offset()), expected(0..51));
}

#[test]
fn bad_input_is_refused_and_leaves_the_log_unchanged() {
    let f = Fixture::new(LogConfig {
        max_message_bytes: 200,
        ..small_config()
    });
    let log = f.open();
    fill(&log, 5, 1);
    let (end, size) = (log.log_end_offset(), log.size_bytes());
    let good = set(0, 3);
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut truncated = good.clone();
    truncated.truncate(good.len() - 3);
    cases.push(("truncated set", truncated));
    let mut past_end = good.clone();
    let last = good.len() - Entries::new(&good).last().unwrap().unwrap().len();
    past_end[last + 8..last + 12].copy_from_slice(&10_000u32.to_be_bytes());
    cases.push(("length past end", past_end));
    let mut bad_crc = good.clone();
    let n = bad_crc.len();
    bad_crc[n - 1] ^= 1;
    cases.push(("wrong crc", bad_crc));
    let mut magic = good.clone();
    magic[16] = 7;
    cases.push(("unknown magic", magic));
    cases.push(("empty", Vec::new()));
    let mut attrs = good.clone();
    attrs[17] = 0x07; // codec 7
    cases.push(("unknown codec", attrs));
    for (name, mut bytes) in cases {
        let err = log.append(&mut bytes).unwrap_err();
        let ok = match name {
            "empty" => matches!(err, Error::InvalidRequest(_)),
            "unknown codec" => matches!(
                err,
                Error::CorruptMessage { .. } | Error::UnsupportedCompression { .. }
            ),
            _ => matches!(err, Error::CorruptMessage { .. }),
        };
        assert!(ok, "{name}: {err:?}");
        assert_eq!(
            (log.log_end_offset(), log.size_bytes()),
            (end, size),
            "{name}"
        );
    }
    // Oversize message and oversize set.
    let mut b = MessageSetBuilder::new(MAGIC_V1, Compression::None);
    b.push(TimestampMs(T0), None, Some(&[1u8; 300]));
    assert!(matches!(
        log.append(&mut b.finish().unwrap()),
        Err(Error::MessageTooLarge { max: 200, .. })
    ));
    let mut huge = vec![0u8; sluiceway_core::limits::MESSAGE_SET_BYTES_MAX as usize + 1];
    assert!(matches!(
        log.append(&mut huge),
        Err(Error::RecordListTooLarge { .. })
    ));
    assert_eq!((log.log_end_offset(), log.size_bytes()), (end, size));
    // Log-append-time bits from a producer are refused (the broker sets them).
    let mut lat = good.clone();
    for e in Entries::new(&good).map(|e| e.unwrap()).collect::<Vec<_>>() {
        lat[e.position + 17] |= 0x08;
        let crc = crc32fast::hash(&lat[e.position + 16..e.position + e.len()]);
        lat[e.position + 12..e.position + 16].copy_from_slice(&crc.to_be_bytes());
    }
    assert!(log.append(&mut lat).is_err());
    // The log still works and continues at the right offset.
    assert_eq!(log.append(&mut set(5, 2)).unwrap().base_offset, Offset(5));
    assert_eq!(read_all(&log, log.log_end_offset()), expected(0..7));
}

#[test]
fn log_append_time_rewrites_timestamps() {
    let f = Fixture::new(LogConfig {
        timestamp_type: TimestampType::LogAppendTime,
        ..small_config()
    });
    let log = f.open();
    f.clock.set(TimestampMs(5_000));
    let info = log.append(&mut set(0, 3)).unwrap();
    assert_eq!(
        (info.log_append_time, info.max_timestamp),
        (TimestampMs(5_000), TimestampMs(5_000))
    );
    f.clock.set(TimestampMs(6_000));
    log.append(&mut compressed(3, 3, Compression::Lz4)).unwrap();
    let recs = read_all(&log, log.log_end_offset());
    assert_eq!(
        recs.iter().map(|r| r.1).collect::<Vec<_>>(),
        vec![5_000, 5_000, 5_000, 6_000, 6_000, 6_000]
    );
    assert_eq!(
        log.offset_for_timestamp(TimestampMs(5_500)).unwrap(),
        Some(Offset(3))
    );
}

#[test]
fn config_validation_names_kafka_keys() {
    let bad = [
        (
            LogConfig {
                segment_bytes: 10,
                ..LogConfig::default()
            },
            "segment.bytes",
        ),
        (
            LogConfig {
                segment_ms: 0,
                ..LogConfig::default()
            },
            "segment.ms",
        ),
        (
            LogConfig {
                index_bytes_max: 8,
                ..LogConfig::default()
            },
            "segment.index.bytes",
        ),
        (
            LogConfig {
                max_message_bytes: 1 << 30,
                ..LogConfig::default()
            },
            "max.message.bytes",
        ),
        (
            LogConfig {
                retention_ms: Some(u64::MAX),
                ..LogConfig::default()
            },
            "retention.ms",
        ),
        (
            LogConfig {
                flush: FlushPolicy::Interval { ms: 0 },
                ..LogConfig::default()
            },
            "flush.ms",
        ),
    ];
    for (config, key) in bad {
        match config.validate() {
            Err(Error::InvalidConfig { key: k, .. }) => assert_eq!(k, key),
            other => panic!("{key}: {other:?}"),
        }
        let tmp = tempfile::tempdir().unwrap();
        assert!(
            PartitionLog::open(
                tmp.path().join("t-0"),
                config,
                Arc::new(ManualClock::default())
            )
            .is_err()
        );
    }
    LogConfig::default().validate().unwrap();
    assert_eq!(LogConfig::default().flush, FlushPolicy::Always);
}

#[test]
fn flush_policies_move_the_recovery_point() {
    // Always: durable before append returns.
    let f = Fixture::new(LogConfig {
        flush: FlushPolicy::Always,
        ..small_config()
    });
    let log = f.open();
    log.append(&mut set(0, 3)).unwrap();
    assert_eq!(log.recovery_point(), Offset(3));

    // Interval: only once the interval has passed, on append or tick.
    let f = Fixture::new(LogConfig {
        flush: FlushPolicy::Interval { ms: 1000 },
        ..small_config()
    });
    let log = f.open();
    log.append(&mut set(0, 3)).unwrap();
    assert_eq!(log.recovery_point(), Offset(0));
    f.clock.advance(999);
    log.tick().unwrap();
    assert_eq!(log.recovery_point(), Offset(0));
    f.clock.advance(1);
    log.tick().unwrap();
    assert_eq!(log.recovery_point(), Offset(3));
    log.append(&mut set(3, 1)).unwrap();
    assert_eq!(log.recovery_point(), Offset(3));
    f.clock.advance(1000);
    log.append(&mut set(4, 1)).unwrap();
    assert_eq!(log.recovery_point(), Offset(5));

    // Os: only flush, roll and close.
    let f = Fixture::new(small_config());
    let log = f.open();
    log.append(&mut set(0, 3)).unwrap();
    assert_eq!(log.recovery_point(), Offset(0));
    fill_from(&log, 3, 60);
    assert!(
        log.recovery_point() > Offset(0),
        "a roll fsyncs the sealed segment"
    );
    log.flush().unwrap();
    assert_eq!(log.recovery_point(), log.log_end_offset());
}

#[test]
fn concurrent_appends_with_group_commit() {
    let f = Fixture::new(LogConfig {
        flush: FlushPolicy::Always,
        segment_bytes: 16 << 10,
        ..small_config()
    });
    let log = Arc::new(f.open());
    const THREADS: u64 = 4;
    const SETS: u64 = 40;
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let log = Arc::clone(&log);
            let reader = Arc::clone(&log);
            // A reader runs alongside: it must only ever see whole, valid entries.
            let r = std::thread::spawn(move || {
                for _ in 0..50 {
                    let end = reader.log_end_offset();
                    if end.0 > 0 {
                        let bytes = reader.read(Offset(0), 1 << 20, end).unwrap().bytes;
                        assert!(!records(&bytes).is_empty());
                    }
                }
            });
            let w = std::thread::spawn(move || {
                let mut infos = Vec::new();
                for s in 0..SETS {
                    let mut b = MessageSetBuilder::new(MAGIC_V1, Compression::None);
                    for m in 0..3 {
                        b.push(
                            TimestampMs(T0),
                            None,
                            Some(format!("t{t}-s{s}-m{m}").as_bytes()),
                        );
                    }
                    let info = log.append(&mut b.finish().unwrap()).unwrap();
                    // Durable before it returned.
                    assert!(log.recovery_point() > info.last_offset);
                    infos.push((info, t, s));
                }
                infos
            });
            (w, r)
        })
        .collect();
    let mut infos = Vec::new();
    for (w, r) in handles {
        infos.extend(w.join().unwrap());
        r.join().unwrap();
    }
    infos.sort_by_key(|(i, _, _)| i.base_offset);
    let mut next = 0;
    for (info, _, _) in &infos {
        assert_eq!(info.base_offset, Offset(next));
        assert_eq!(info.last_offset, Offset(next + 2));
        next += 3;
    }
    assert_eq!(log.log_end_offset(), Offset(THREADS * SETS * 3));
    let all = read_all(&log, log.log_end_offset());
    assert_eq!(all.len() as u64, THREADS * SETS * 3);
    for (info, t, s) in &infos {
        for m in 0..3 {
            let rec = &all[(info.base_offset.0 + m) as usize];
            assert_eq!(rec.2, format!("t{t}-s{s}-m{m}").into_bytes());
        }
    }
}

#[test]
fn delete_removes_the_directory() {
    let f = Fixture::new(small_config());
    let log = f.open();
    fill(&log, 10, 1);
    log.delete().unwrap();
    assert!(!f.dir.exists());
}

#[derive(Clone, Debug)]
enum Op {
    Append {
        n: u64,
        size: usize,
        codec: Option<u8>,
        /// A magic 2 batch (with a header on each record) instead of a magic 1 set.
        v2: bool,
    },
    Reopen {
        clean: bool,
    },
    Advance {
        ms: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u64..6, 0usize..120, prop::option::of(1u8..5), any::<bool>()).prop_map(|(n, size, codec, v2)| Op::Append { n, size, codec, v2 }),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
        1 => (0u64..100_000).prop_map(|ms| Op::Advance { ms }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random appends (magic 1 and magic 2, plain and compressed), restarts (clean or not) and
    /// clock moves against a `Vec` model: the log always holds exactly the model, at the model's
    /// offsets.
    #[test]
    fn log_matches_a_vec_model(ops in prop::collection::vec(op(), 1..40)) {
        let f = Fixture::new(LogConfig { segment_ms: 60_000, index_interval_bytes: 64, ..small_config() });
        let mut log = f.open();
        let mut model: Vec<(i64, Vec<u8>)> = Vec::new();
        for op in ops {
            match op {
                Op::Append { n, size, codec, v2 } => {
                    let codec = codec.map_or(Compression::None, |c| Compression::from_code(c).unwrap());
                    let mut b = format::SetBuilder::with_capacity(if v2 { 2 } else { MAGIC_V1 }, codec, 0);
                    let mut added = Vec::new();
                    for _ in 0..n {
                        let i = model.len() + added.len();
                        let v = vec![(i % 251) as u8; size];
                        let t = f.clock.now_ms().0 + (i % 3) as i64;
                        let h = [format::Header { key: "i", value: Some(&v[..v.len().min(3)]) }];
                        b.push(TimestampMs(t), None, Some(&v), if v2 { &h[..] } else { &[] }.iter().copied());
                        added.push((t, v));
                    }
                    let info = log.append(&mut b.finish().unwrap()).unwrap();
                    prop_assert_eq!(info.base_offset, Offset(model.len() as u64));
                    model.extend(added);
                }
                Op::Reopen { clean } => {
                    if clean {
                        log.close().unwrap();
                    }
                    drop(log);
                    log = f.open();
                }
                Op::Advance { ms } => {
                    f.clock.advance(ms);
                    log.tick().unwrap();
                }
            }
            prop_assert_eq!(log.log_end_offset(), Offset(model.len() as u64));
        }
        let got = read_all(&log, log.log_end_offset());
        let want: Vec<_> = model.iter().enumerate().map(|(i, (t, v))| (i as u64, *t, v.clone())).collect();
        prop_assert_eq!(got, want);
        for (i, (t, _)) in model.iter().enumerate() {
            let first = model.iter().position(|(u, _)| u >= t).unwrap() as u64;
            prop_assert_eq!(log.offset_for_timestamp(TimestampMs(*t)).unwrap(), Some(Offset(first)), "message {}", i);
            prop_assert!(first_offset(&log, i as u64) == i as u64);
        }
    }
}

/// Brings `log` up to `leader`'s log end by fetching at its own log end, as a follower does.
fn replicate(leader: &PartitionLog, log: &PartitionLog) {
    while log.log_end_offset() < leader.log_end_offset() {
        let fetched = leader
            .read(log.log_end_offset(), 300, leader.log_end_offset())
            .unwrap();
        let info = log.append_as_follower(&fetched.bytes).unwrap();
        assert_eq!(info.last_offset.next(), log.log_end_offset());
    }
}

#[test]
fn follower_append_keeps_the_leaders_offsets() {
    let leader = Fixture::new(small_config());
    let leader_log = leader.open();
    let mut next = 0;
    for k in 0..30u64 {
        let n = 1 + k % 4;
        let mut bytes = if k % 3 == 0 {
            compressed(next, n, Compression::Snappy)
        } else {
            set(next, n)
        };
        leader_log.append(&mut bytes).unwrap();
        next += n;
    }
    let follower = Fixture::new(small_config());
    let log = follower.open();
    replicate(&leader_log, &log);
    assert_eq!(read_all(&log, log.log_end_offset()), expected(0..next));
    assert!(log.segment_count() > 1);

    // A set that does not continue the log, or is damaged, is refused and changes nothing.
    let (end, size) = (log.log_end_offset(), log.size_bytes());
    let again = leader_log.read(Offset(0), 1, Offset(next)).unwrap().bytes;
    assert!(matches!(
        log.append_as_follower(&again),
        Err(Error::CorruptMessage { .. })
    ));
    let mut gap = set(0, 2);
    gap[..8].copy_from_slice(&(next + 1).to_be_bytes());
    assert!(log.append_as_follower(&gap).is_err());
    let mut damaged = set(0, 1);
    damaged[..8].copy_from_slice(&next.to_be_bytes());
    let n = damaged.len();
    damaged[n - 1] ^= 0x20;
    assert!(matches!(
        log.append_as_follower(&damaged),
        Err(Error::CorruptMessage { .. })
    ));
    assert_eq!((log.log_end_offset(), log.size_bytes()), (end, size));
    let mut ok = set(next, 1);
    ok[..8].copy_from_slice(&next.to_be_bytes());
    assert_eq!(
        log.append_as_follower(&ok).unwrap().base_offset,
        Offset(next)
    );
}

#[test]
fn truncate_to_cuts_whole_entries_and_the_log_continues() {
    let f = Fixture::new(small_config());
    let log = f.open();
    // Plain sets, then a compressed wrapper of 5 at 100..105, then more plain ones.
    fill(&log, 100, 1);
    log.append(&mut compressed(100, 5, Compression::Gzip))
        .unwrap();
    fill_from(&log, 105, 45);
    log.set_high_watermark(Offset(140));
    let bases = f.bases();

    // Past the end: nothing happens.
    log.truncate_to(Offset(500)).unwrap();
    assert_eq!(log.log_end_offset(), Offset(150));

    // Inside the last segment.
    log.truncate_to(Offset(147)).unwrap();
    assert_eq!(log.log_end_offset(), Offset(147));
    assert_eq!(read_all(&log, log.log_end_offset()), expected(0..147));

    // Into the middle of the wrapper: it goes whole, and later segments are deleted.
    log.truncate_to(Offset(102)).unwrap();
    assert_eq!(log.log_end_offset(), Offset(100));
    assert_eq!(log.high_watermark(), Offset(100));
    assert!(log.recovery_point() <= Offset(100));
    assert!(f.bases().iter().all(|b| *b <= 100));
    assert_eq!(read_all(&log, log.log_end_offset()), expected(0..100));
    match log.read(Offset(101), 100, Offset(200)) {
        Err(Error::OffsetOutOfRange {
            log_end_offset: Offset(100),
            ..
        }) => {}
        other => panic!("{other:?}"),
    }

    // Exactly at a segment base: that segment goes (unless it is the first).
    let b = bases[2];
    log.truncate_to(Offset(b)).unwrap();
    assert_eq!(log.log_end_offset(), Offset(b));
    assert_eq!(*f.bases().last().unwrap(), bases[1]);
    for o in [0, b / 2, b - 1] {
        assert_eq!(first_offset(&log, o), o);
        assert_eq!(
            log.offset_for_timestamp(TimestampMs(ts(o))).unwrap(),
            Some(Offset(o))
        );
    }
    assert_eq!(log.offset_for_timestamp(TimestampMs(ts(b))).unwrap(), None);

    // Appends continue at the new end, and a restart (crash or clean) sees the same log.
    fill_from(&log, b, 30);
    assert_eq!(read_all(&log, log.log_end_offset()), expected(0..b + 30));
    drop(log);
    let log = f.open();
    assert_eq!(read_all(&log, log.log_end_offset()), expected(0..b + 30));
    log.close().unwrap();
    let log = f.open();
    assert_eq!(log.log_end_offset(), Offset(b + 30));

    // To the very start, and then fully to a new offset.
    log.truncate_to(Offset(0)).unwrap();
    assert_eq!(
        (
            log.log_start_offset(),
            log.log_end_offset(),
            log.segment_count()
        ),
        (Offset(0), Offset(0), 1)
    );
    fill(&log, 10, 2);
    log.truncate_fully_and_start_at(Offset(1000)).unwrap();
    assert_eq!(
        (
            log.log_start_offset(),
            log.high_watermark(),
            log.log_end_offset(),
            log.recovery_point()
        ),
        (Offset(1000), Offset(1000), Offset(1000), Offset(1000))
    );
    assert_eq!(f.bases(), vec![1000]);
    assert_eq!(
        log.append(&mut set(0, 3)).unwrap().base_offset,
        Offset(1000)
    );
    drop(log);
    let log = f.open();
    assert_eq!(
        (log.log_start_offset(), log.log_end_offset()),
        (Offset(1000), Offset(1003))
    );
}

#[test]
fn truncation_races_with_readers_and_appenders_safely() {
    let f = Fixture::new(LogConfig {
        flush: FlushPolicy::Always,
        ..small_config()
    });
    let log = Arc::new(f.open());
    fill(&log, 200, 2);
    let reader = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            for _ in 0..300 {
                let end = log.log_end_offset();
                // Reads may fail transiently while a truncation cuts under them; they must never
                // return damaged entries.
                if let Ok(r) = log.read(Offset(end.0.saturating_sub(20)), 4096, end) {
                    let mut scratch = Vec::new();
                    format::for_each_record(&r.bytes, &mut scratch, |_| {}).unwrap();
                }
                log.set_high_watermark(end);
            }
        })
    };
    for round in 0..20u64 {
        let end = log.log_end_offset().0;
        log.truncate_to(Offset(end - 7)).unwrap();
        fill_from(&log, end - 7, 5 + round % 3);
    }
    reader.join().unwrap();
    let end = log.log_end_offset();
    assert_eq!(read_all(&log, end), expected(0..end.0));
}

// ---------------------------------------------------------------------------------------------
// Mixed magics: a log holding magic 1 entries and magic 2 batches (Kafka RecordBatch v2).

/// Messages `first..first+n` as one magic 2 batch, every other record with a header.
fn batch_v2(first: u64, n: u64, codec: Compression) -> Vec<u8> {
    let mut b = format::RecordBatchBuilder::new(codec);
    for i in first..first + n {
        let idx = i.to_string();
        let h = [format::Header {
            key: "idx",
            value: Some(idx.as_bytes()),
        }];
        let headers: &[format::Header] = if i % 2 == 0 { &h } else { &[] };
        b.push(
            TimestampMs(ts(i)),
            Some(b"k"),
            Some(&value(i)),
            headers.iter().copied(),
        );
    }
    b.finish().unwrap()
}

/// Appends messages 0..n in sets that cycle through the four shapes: v1 plain, v1 gzip
/// wrapper, v2 plain batch, v2 zstd batch; 1..=3 messages each. Returns the magic of each set.
fn fill_mixed(log: &PartitionLog, n: u64) -> Vec<u8> {
    let (mut i, mut k, mut magics) = (0, 0u64, Vec::new());
    while i < n {
        let per = (1 + k % 3).min(n - i);
        let mut bytes = match k % 4 {
            0 => set(i, per),
            1 => compressed(i, per, Compression::Gzip),
            2 => batch_v2(i, per, Compression::None),
            _ => batch_v2(i, per, Compression::Zstd),
        };
        magics.push(bytes[16]);
        let info = log.append_in_epoch(&mut bytes, 3).unwrap();
        assert_eq!(
            (info.base_offset, info.last_offset, info.message_count),
            (Offset(i), Offset(i + per - 1), per)
        );
        i += per;
        k += 1;
    }
    magics
}

/// A record's headers, owned.
type OwnedHeaders = Vec<(String, Option<Vec<u8>>)>;

/// Every message's headers, as (offset, headers) for the records that have any.
fn headers_of(bytes: &[u8]) -> Vec<(u64, OwnedHeaders)> {
    let mut out = Vec::new();
    format::for_each_record(bytes, &mut Vec::new(), |r| {
        if !r.headers.is_empty() {
            out.push((
                r.offset.0,
                r.headers
                    .iter()
                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                    .collect(),
            ));
        }
    })
    .unwrap();
    out
}

fn check_mixed(log: &PartitionLog, range: std::ops::Range<u64>, what: &str) {
    assert_eq!(
        read_all(log, log.log_end_offset()),
        expected(range.clone()),
        "{what}"
    );
    for o in range.clone() {
        assert_eq!(first_offset(log, o), o, "{what}: seek to {o}");
        // One byte asked: the entry holding `o` whole (KIP-74), a v2 header read cut short
        // first and then again whole.
        let one = log.read(Offset(o), 1, log.log_end_offset()).unwrap();
        assert_last_offset(&one);
        assert!(
            one.last_offset >= Some(Offset(o)),
            "{what}: one-byte read at {o}"
        );
        assert_eq!(
            log.offset_for_timestamp(TimestampMs(ts(o))).unwrap(),
            Some(Offset(o)),
            "{what}: seek by time to {o}"
        );
    }
}

#[test]
fn mixed_magic_log_appends_indexes_seeks_recovers_and_retains() {
    let f = Fixture::new(small_config());
    let log = f.open();
    let magics = fill_mixed(&log, 240);
    assert!(magics.contains(&1) && magics.contains(&2));
    assert!(log.segment_count() > 5, "{} segments", log.segment_count());
    check_mixed(&log, 0..240, "fresh");
    // Headers come back with their records; magic 1 records have none.
    let all = log.read(Offset(0), 1 << 20, log.log_end_offset()).unwrap();
    let hs = headers_of(&all.bytes);
    assert!(!hs.is_empty());
    for (o, h) in &hs {
        assert_eq!(h, &[("idx".to_owned(), Some(o.to_string().into_bytes()))]);
    }
    // Every v2 batch on disk carries the leader epoch it was appended in.
    let mut v2_batches = 0;
    for path in f.files("log") {
        let bytes = fs::read(&path).unwrap();
        for e in Entries::new(&bytes) {
            let e = e.unwrap();
            if e.magic() == 2 {
                v2_batches += 1;
                assert_eq!(&e.bytes[12..16], &3i32.to_be_bytes());
                e.check_crc().unwrap();
            }
        }
    }
    assert!(v2_batches > 20);
    // Segments start at their base offsets whichever magic opens them (a v2 batch's offset
    // field is its first offset; a v1 wrapper's its last, so compare the first record).
    for (path, base) in f.files("log").iter().zip(f.bases()) {
        let bytes = fs::read(path).unwrap();
        assert_eq!(records(&bytes)[0].0, base, "{}", path.display());
    }

    // Restart after a crash (no close), and after a clean close.
    drop(log);
    let log = f.open();
    check_mixed(&log, 0..240, "after a crash");
    log.close().unwrap();
    drop(log);
    let log = f.open();
    check_mixed(&log, 0..240, "after a clean close");
    log.close().unwrap();
    drop(log);

    // Lost indexes are rebuilt equal to the originals.
    let indexes: Vec<PathBuf> = f
        .files("index")
        .into_iter()
        .chain(f.files("timeindex"))
        .collect();
    let g = f.copy();
    for p in g.files("index").into_iter().chain(g.files("timeindex")) {
        fs::remove_file(p).unwrap();
    }
    let log = g.open();
    check_mixed(&log, 0..240, "indexes rebuilt");
    log.close().unwrap();
    for p in &indexes {
        assert_eq!(
            fs::read(p).unwrap(),
            fs::read(g.dir.join(p.file_name().unwrap())).unwrap(),
            "{}",
            p.display()
        );
    }
    drop(log);

    // Retention by size deletes whole old segments; what is left still reads and seeks.
    let g = Fixture::new(LogConfig {
        retention_bytes: Some(4096),
        ..small_config()
    });
    let log = g.open();
    fill_mixed(&log, 240);
    log.set_high_watermark(log.log_end_offset());
    assert!(log.enforce_retention().unwrap() > 0);
    let start = log.log_start_offset();
    assert!(start.0 > 0);
    check_mixed(&log, start.0..240, "after retention");
}

#[test]
fn torn_v2_tail_is_truncated_at_every_cut_and_flipped_byte() {
    let f = Fixture::new(small_config());
    let log = f.open();
    fill_mixed(&log, 60);
    // End on a v2 batch of three messages.
    log.append(&mut batch_v2(60, 3, Compression::None)).unwrap();
    drop(log);
    let last = f.files("log").pop().unwrap();
    let (pos, offset, len) = *entries_of(&last).last().unwrap();
    assert_eq!(offset, 60, "a v2 batch's offset field is its base offset");
    for cut in pos..pos + len {
        let (g, path) = cut_copy(&f, &last, cut);
        let log = g.open();
        assert_eq!(log.log_end_offset(), Offset(60), "cut at {cut}");
        assert_eq!(fs::metadata(&path).unwrap().len(), pos as u64);
        assert_eq!(read_all(&log, log.log_end_offset()), expected(0..60));
        log.append(&mut batch_v2(60, 2, Compression::Lz4)).unwrap();
        assert_eq!(read_all(&log, log.log_end_offset()), expected(0..62));
    }
    // A flipped byte anywhere in the batch but its offset and leader epoch (outside the CRC,
    // and the size, which frames it) fails its CRC-32C: the tail is truncated.
    for at in (pos + 16..pos + len).step_by(7) {
        let g = f.copy();
        let path = g.dir.join(last.file_name().unwrap());
        flip(&path, at, 0x04);
        let log = g.open();
        assert_eq!(log.log_end_offset(), Offset(60), "flip at {at}");
    }
}

#[test]
fn follower_replicates_a_mixed_log_byte_for_byte() {
    let leader = Fixture::new(small_config());
    let leader_log = leader.open();
    fill_mixed(&leader_log, 150);
    let follower = Fixture::new(small_config());
    let log = follower.open();
    replicate(&leader_log, &log);
    check_mixed(&log, 0..150, "follower");
    // The follower's files hold the leader's bytes (leader epochs included).
    let all = |f: &Fixture| -> Vec<u8> {
        f.files("log")
            .iter()
            .flat_map(|p| fs::read(p).unwrap())
            .collect()
    };
    assert_eq!(all(&leader), all(&follower));
    // A v2 batch that does not continue the log is refused.
    let again = leader_log.read(Offset(3), 1, Offset(150)).unwrap().bytes;
    assert_eq!(again[16], 2, "offset 3 is in a v2 batch");
    assert!(log.append_as_follower(&again).is_err());
}

#[test]
fn retention_by_time_reads_a_v2_batch_by_its_max_timestamp() {
    let f = Fixture::new(LogConfig {
        retention_ms: Some(3_600_000),
        ..small_config()
    });
    let log = f.open();
    // Batches whose first record is old but whose newest is not must be kept: a segment's age
    // is its largest timestamp (maxTimestamp for a v2 batch), as Kafka's is.
    let batch = |first: u64, stamps: &[i64]| {
        let mut b = format::RecordBatchBuilder::new(Compression::None);
        for (k, t) in stamps.iter().enumerate() {
            b.push(TimestampMs(*t), None, Some(&value(first + k as u64)), []);
        }
        b.finish().unwrap()
    };
    let old = T0;
    let new = T0 + 90 * 60_000;
    for i in 0..40 {
        log.append(&mut batch(2 * i, &[old, old + 1])).unwrap();
    }
    for i in 40..80 {
        log.append(&mut batch(2 * i, &[old, new])).unwrap();
    }
    f.clock.advance(90 * 60_000);
    log.set_high_watermark(log.log_end_offset());
    assert!(log.enforce_retention().unwrap() > 0);
    let start = log.log_start_offset().0;
    assert!(
        start <= 80,
        "a segment holding a recent maxTimestamp was deleted (start {start})"
    );
    assert!(start > 0);
    assert_eq!(
        read_all(&log, log.log_end_offset())
            .into_iter()
            .map(|r| r.0)
            .collect::<Vec<_>>(),
        (start..160).collect::<Vec<_>>()
    );
}

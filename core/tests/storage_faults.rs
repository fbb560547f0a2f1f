//! The partition log over a fault-injecting file system (`file_io::faulty`): a failed fsync
//! takes the log offline for good and loses nothing acknowledged; a failed (short) write is
//! cut off and the log carries on; and a crash at every file operation of a short workload —
//! a process crash, with writes cut at several bytes, or a power loss — reopens with every
//! acknowledged message and nothing else than what was appended.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sluiceway_core::file_io::FileSystem;
use sluiceway_core::file_io::faulty::FaultyFileSystem;
use sluiceway_core::format::{self, Compression, MAGIC_V1, MessageSetBuilder};
use sluiceway_core::group::TopicPartition;
use sluiceway_core::storage::{Clock, FlushPolicy, LogConfig, ManualClock, PartitionLog};
use sluiceway_core::{Error, ErrorCode, Offset, TimestampMs, wire};

const T0: i64 = 1_700_000_000_000;
/// Sets appended by the workload.
const APPENDS: u64 = 20;

/// Small segments (the workload rolls twice or three times), a dense index, small index files
/// (the test file system copies a file on every fsync).
fn config(flush: FlushPolicy) -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 100,
        index_bytes_max: 4096,
        flush,
        retention_ms: None,
        ..LogConfig::default()
    }
}

fn value(i: u64) -> Vec<u8> {
    format!("value-{i:04}-{}", "x".repeat((i % 5) as usize)).into_bytes()
}

fn ts(i: u64) -> i64 {
    T0 + 10 * i as i64
}

/// Set `k` of the workload: messages `first(k)..first(k + 1)`, every fourth set gzip-compressed.
fn first(k: u64) -> u64 {
    (0..k).map(|j| j % 3 + 1).sum()
}

fn set(k: u64) -> Vec<u8> {
    let codec = if k % 4 == 3 {
        Compression::Gzip
    } else {
        Compression::None
    };
    let mut b = MessageSetBuilder::new(MAGIC_V1, codec);
    for i in first(k)..first(k + 1) {
        b.push(TimestampMs(ts(i)), Some(b"k"), Some(&value(i)));
    }
    b.finish().unwrap()
}

fn open(dir: &Path, flush: &FlushPolicy, fs: Arc<dyn FileSystem>) -> Result<PartitionLog, Error> {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(TimestampMs(T0)));
    PartitionLog::open_with_file_system(dir, config(flush.clone()), clock, fs)
}

/// What a workload run was told.
#[derive(Debug, Default)]
struct Run {
    /// Every offset below this was acknowledged as durable (an append under `always`, or a
    /// `flush` returning Ok).
    acked: u64,
    /// Messages `0..appended` were handed to the log (the last may have failed).
    appended: u64,
    /// The first error, if any.
    error: Option<Error>,
}

/// Appends [`APPENDS`] sets — under `os`, flushing after every second one — and closes the
/// log; stops at the first error.
fn append_all(log: &PartitionLog, flush: &FlushPolicy, run: &mut Run) -> Result<(), Error> {
    for k in 0..APPENDS {
        run.appended = first(k + 1);
        let info = log.append(&mut set(k))?;
        assert_eq!(info.last_offset, Offset(first(k + 1) - 1));
        if *flush == FlushPolicy::Always {
            run.acked = first(k + 1);
        } else if k % 2 == 1 {
            log.flush()?;
            run.acked = first(k + 1);
        }
    }
    log.close()
}

/// Opens the log and runs [`append_all`].
fn workload(dir: &Path, flush: &FlushPolicy, fs: Arc<dyn FileSystem>) -> Run {
    let mut run = Run::default();
    run.error = open(dir, flush, fs)
        .and_then(|log| append_all(&log, flush, &mut run))
        .err();
    run
}

/// (offset, timestamp, value) of every message the reopened log serves, read one entry at a
/// time from its start (decoding checks every CRC, inner ones included).
fn served(log: &PartitionLog) -> Vec<(u64, i64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut scratch = Vec::new();
    let mut next = log.log_start_offset();
    let end = log.log_end_offset();
    while next < end {
        let r = log.read(next, 1, end).unwrap();
        let before = out.len();
        format::for_each_record(&r.bytes, &mut scratch, |rec| {
            out.push((
                rec.offset.0,
                rec.timestamp.0,
                rec.value.unwrap_or_default().to_vec(),
            ));
        })
        .unwrap();
        assert!(out.len() > before, "no progress reading at {next}");
        next = Offset(out.last().unwrap().0 + 1);
    }
    out
}

/// Reopens the log (with a fresh test file system, no faults) and checks it holds exactly the
/// messages `0..n` for some `acked <= n <= appended`, every one as appended, and that it takes
/// the next append at `n`.
fn check_recovers(dir: &Path, run: &Run, what: &str) {
    let log = open(dir, &FlushPolicy::Os, FaultyFileSystem::new())
        .unwrap_or_else(|e| panic!("{what}: the log does not reopen: {e} ({run:?})"));
    let end = log.log_end_offset().0;
    assert!(
        run.acked <= end && end <= run.appended,
        "{what}: log end {end} outside [acked {}, appended {}]",
        run.acked,
        run.appended
    );
    let expected: Vec<_> = (0..end).map(|i| (i, ts(i), value(i))).collect();
    assert_eq!(served(&log), expected, "{what}");
    let mut next = MessageSetBuilder::new(MAGIC_V1, Compression::None);
    next.push(TimestampMs(T0), None, Some(b"after"));
    let info = log.append(&mut next.finish().unwrap()).unwrap();
    assert_eq!(info.base_offset, Offset(end), "{what}");
    log.close().unwrap();
}

fn partition_dir(tmp: &tempfile::TempDir) -> PathBuf {
    tmp.path().join(PartitionLog::dir_name("events", 0))
}

/// A dry run: the file system's operation, write and fsync counts for the whole workload.
fn dry_run(flush: &FlushPolicy) -> (u64, Vec<u64>, u64) {
    let tmp = tempfile::tempdir().unwrap();
    let fs = FaultyFileSystem::new();
    let run = workload(&partition_dir(&tmp), flush, fs.clone());
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(run.acked, first(APPENDS));
    check_recovers(&partition_dir(&tmp), &run, "no fault");
    (fs.ops(), fs.write_ops(), fs.syncs())
}

#[test]
fn a_failed_fsync_takes_the_log_offline_for_good_and_loses_nothing_acknowledged() {
    for flush in &[FlushPolicy::Os, FlushPolicy::Always] {
        let (_, _, syncs) = dry_run(flush);
        assert!(syncs > 20, "{syncs} fsyncs");
        for n in 0..syncs {
            let what = format!("{flush:?}, fsync {n} fails");
            let tmp = tempfile::tempdir().unwrap();
            let dir = partition_dir(&tmp);
            let fs = FaultyFileSystem::new();
            fs.fail_sync(n);
            let mut run = Run::default();
            match open(&dir, flush, fs.clone()) {
                // Opening fsyncs too; a log that is not open has nothing to take offline.
                Err(e) => assert_eq!(e.code(), ErrorCode::KafkaStorageError, "{what}: {e}"),
                Ok(log) => {
                    let e = append_all(&log, flush, &mut run)
                        .expect_err(&format!("{what}: the workload succeeded"));
                    let text = e.to_string();
                    assert!(matches!(e, Error::LogOffline { .. }), "{what}: {text}");
                    assert_eq!(e.code(), ErrorCode::KafkaStorageError, "{what}");
                    assert!(
                        text.contains("offline") && text.contains("injected fsync failure"),
                        "{what}: the producer's error does not say why: {text}"
                    );
                    // What the producer gets: the code and these words, through the per-partition
                    // error conversion of the wire contract.
                    let tp = TopicPartition::new("events", 0);
                    let received = wire::partition_error(wire::code_to_proto(e.code()), &text, &tp);
                    assert_eq!(received.code(), ErrorCode::KafkaStorageError, "{what}");
                    assert!(
                        received.to_string().contains("offline"),
                        "{what}: {received}"
                    );
                    // Final: every later write (and read) is refused with the same error,
                    // although the file system would fsync fine now.
                    for (i, attempt) in [
                        log.append(&mut set(0)).map(|_| ()),
                        log.flush(),
                        log.roll().map(|_| ()),
                        log.tick(),
                        log.read(Offset(0), 100, Offset(1)).map(|_| ()),
                        log.close(),
                    ]
                    .into_iter()
                    .enumerate()
                    {
                        let e = attempt.expect_err(&format!("{what}: an offline log refuses #{i}"));
                        assert!(matches!(e, Error::LogOffline { .. }), "{what}: {e}");
                        assert!(e.to_string().contains("injected fsync failure"), "{what}");
                    }
                }
            }
            // Nothing acknowledged is lost, even if the power goes now.
            fs.power_loss().unwrap();
            check_recovers(&dir, &run, &what);
        }
    }
}

#[test]
fn a_short_write_is_cut_off_and_the_log_carries_on() {
    let (_, writes, _) = dry_run(&FlushPolicy::Os);
    for n in 0..writes.len() as u64 {
        // Nothing landed, a few bytes, or the whole set (the error came after).
        for keep in [0usize, 20, usize::MAX] {
            let what = format!("write {n} fails after {keep} bytes");
            let tmp = tempfile::tempdir().unwrap();
            let dir = partition_dir(&tmp);
            let fs = FaultyFileSystem::new();
            fs.fail_write(n, keep);
            let log = match open(&dir, &FlushPolicy::Os, fs.clone()) {
                Ok(log) => log,
                // The write was the first checkpoint's, while opening.
                Err(e) => {
                    assert_eq!(e.code(), ErrorCode::KafkaStorageError, "{what}: {e}");
                    continue;
                }
            };
            // (offset given, message index) of every message appended.
            let mut want = Vec::new();
            let mut failed = 0;
            for k in 0..APPENDS {
                let step = log.append(&mut set(k)).map(|info| {
                    for (j, i) in (first(k)..first(k + 1)).enumerate() {
                        want.push((info.base_offset.0 + j as u64, ts(i), value(i)));
                    }
                });
                let step = step.and_then(|()| if k % 2 == 1 { log.flush() } else { Ok(()) });
                match step {
                    Ok(()) => {}
                    // The checkpoint's write is part of a durability step: offline.
                    Err(Error::LogOffline { .. }) => break,
                    // A segment's write is not: the set is refused and cut off, the log
                    // carries on.
                    Err(e) => {
                        assert!(matches!(e, Error::Io { .. }), "{what}: {e}");
                        assert_eq!(e.code(), ErrorCode::KafkaStorageError);
                        failed += 1;
                    }
                }
            }
            assert!(failed <= 1, "{what}");
            drop(log);
            // No crash: the reopened log serves exactly what was appended, at the offsets given
            // (a whole stale entry left behind a later, shorter set would make it refuse to
            // open, or serve the failed set).
            let log = open(&dir, &FlushPolicy::Os, FaultyFileSystem::new())
                .unwrap_or_else(|e| panic!("{what}: the log does not reopen: {e}"));
            assert_eq!(served(&log), want, "{what}");
        }
    }
}

#[test]
fn a_crash_at_every_file_operation_recovers_every_acknowledged_message() {
    for flush in &[FlushPolicy::Os, FlushPolicy::Always] {
        let (ops, writes, _) = dry_run(flush);
        assert!(ops > 50, "{ops} operations");
        for at in 0..ops {
            // A write may also land its first bytes (13: one past the entry header), or all of
            // them, before the crash. A power loss drops an unsynced write whatever landed, so
            // it needs no cuts.
            let cuts: &[usize] = if writes.contains(&at) {
                &[0, 13, usize::MAX]
            } else {
                &[0]
            };
            let runs = cuts.iter().map(|&keep| (keep, false)).chain([(0, true)]);
            for (keep, power_loss) in runs {
                let what = format!(
                    "{flush:?}, crash at operation {at}/{ops} keeping {keep} bytes, power loss {power_loss}"
                );
                let tmp = tempfile::tempdir().unwrap();
                let dir = partition_dir(&tmp);
                let fs = FaultyFileSystem::new();
                fs.crash_at(at, keep);
                let run = workload(&dir, flush, fs.clone());
                assert!(fs.has_crashed(), "{what}: no crash");
                assert!(run.error.is_some(), "{what}: the workload did not notice");
                if power_loss {
                    fs.power_loss().unwrap();
                }
                check_recovers(&dir, &run, &what);
            }
        }
    }
}

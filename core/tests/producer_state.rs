//! The idempotent producer's state in a real partition log: a retried batch is answered with the
//! offsets it got the first time and written once, out-of-order and fenced batches are refused,
//! and the state survives a clean close, a crash, a truncation and a change of leader (a
//! follower's log rebuilds the same state from the bytes it copies).

use std::sync::Arc;

use sluiceway_core::format::{Compression, RecordBatchBuilder};
use sluiceway_core::storage::{
    AppendInfo, Clock, FlushPolicy, LogConfig, ManualClock, PartitionLog,
};
use sluiceway_core::{Error, ErrorCode, Offset, TimestampMs};

const T0: i64 = 1_700_000_000_000;

fn config() -> LogConfig {
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
    dir: std::path::PathBuf,
    clock: Arc<ManualClock>,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("events-0");
        Fixture {
            _tmp: tmp,
            dir,
            clock: Arc::new(ManualClock::new(TimestampMs(T0))),
        }
    }

    fn open(&self) -> PartitionLog {
        let clock: Arc<dyn Clock> = self.clock.clone();
        PartitionLog::open(&self.dir, config(), clock).unwrap()
    }

    fn snapshots(&self) -> usize {
        std::fs::read_dir(&self.dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "snapshot")
            })
            .count()
    }
}

/// A batch of `count` records from producer `pid` at `epoch`, starting at sequence `seq`.
fn batch(pid: i64, epoch: i16, seq: i32, count: usize) -> Vec<u8> {
    let mut b = RecordBatchBuilder::new(Compression::None);
    b.producer_state(pid, epoch, seq);
    for i in 0..count {
        let value = format!("p{pid}-e{epoch}-s{}", seq as usize + i);
        b.push(TimestampMs(T0), None, Some(value.as_bytes()), []);
    }
    b.finish().unwrap()
}

fn append(log: &PartitionLog, set: &[u8]) -> Result<(u64, u64, bool), Error> {
    let mut set = set.to_vec();
    let info = log.append_in_epoch(&mut set, 3)?;
    Ok((info.base_offset.0, info.last_offset.0, info.duplicate))
}

/// Each batch's first offset as the append answered them.
fn bases(info: &AppendInfo) -> Vec<u64> {
    info.batch_base_offsets.iter().map(|o| o.0).collect()
}

fn code(r: Result<(u64, u64, bool), Error>) -> ErrorCode {
    r.unwrap_err().code()
}

#[test]
fn a_retried_batch_is_answered_with_its_first_offsets_and_written_once() {
    let f = Fixture::new();
    let log = f.open();
    let b0 = batch(7, 0, 0, 10);
    let b1 = batch(7, 0, 10, 5);
    assert_eq!(append(&log, &b0).unwrap(), (0, 9, false));
    // Another producer's records between the two.
    assert_eq!(append(&log, &batch(8, 0, 0, 3)).unwrap(), (10, 12, false));
    assert_eq!(append(&log, &b1).unwrap(), (13, 17, false));
    // Both retried (their answers were lost): the offsets of the first time, nothing written.
    assert_eq!(append(&log, &b0).unwrap(), (0, 9, true));
    assert_eq!(append(&log, &b1).unwrap(), (13, 17, true));
    assert_eq!(log.log_end_offset(), Offset(18));
    // A damaged retry is refused as damaged, never answered as a duplicate.
    let mut bad = b1.clone();
    let n = bad.len();
    bad[n - 1] ^= 1;
    assert_eq!(code(append(&log, &bad)), ErrorCode::CorruptMessage);

    // A gap in the sequence, a repeat running past what the log holds, an older epoch.
    assert_eq!(
        code(append(&log, &batch(7, 0, 16, 1))),
        ErrorCode::OutOfOrderSequenceNumber
    );
    assert_eq!(
        code(append(&log, &batch(7, 0, 13, 3))),
        ErrorCode::OutOfOrderSequenceNumber
    );
    // A new epoch starts at 0 and fences the old one.
    assert_eq!(append(&log, &batch(7, 1, 0, 2)).unwrap(), (18, 19, false));
    let e = append(&log, &batch(7, 0, 15, 1)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidProducerEpoch);
    assert!(e.to_string().contains("fenced"), "{e}");
    assert_eq!(
        log.log_end_offset(),
        Offset(20),
        "refused batches wrote nothing"
    );
}

#[test]
fn a_retry_of_several_batches_is_answered_per_batch_and_writes_only_the_new_ones() {
    let f = Fixture::new();
    let log = f.open();
    let (b0, b1, b2) = (batch(4, 0, 0, 2), batch(4, 0, 2, 3), batch(4, 0, 5, 2));
    let set = |bs: &[&Vec<u8>]| {
        bs.iter()
            .flat_map(|b| b.iter().copied())
            .collect::<Vec<u8>>()
    };
    let info = log.append_in_epoch(&mut set(&[&b0, &b1]), 1).unwrap();
    assert_eq!((info.base_offset.0, info.last_offset.0), (0, 4));
    assert!(
        info.batch_base_offsets.is_empty(),
        "consecutive: no per-batch offsets"
    );
    // Another producer writes between the first attempt and the retry.
    append(&log, &batch(5, 0, 0, 3)).unwrap();
    // The retry repeats both batches and brings a new one: only that one is written.
    let info = log.append_in_epoch(&mut set(&[&b0, &b1, &b2]), 1).unwrap();
    assert_eq!(bases(&info), [0, 2, 8]);
    assert_eq!(
        (info.base_offset.0, info.last_offset.0, info.duplicate),
        (0, 9, false)
    );
    assert_eq!((info.message_count, info.duplicate_batches), (2, 2));
    assert_eq!(log.log_end_offset(), Offset(10));
    // All three again: all duplicates, each at its offsets, nothing written.
    let info = log.append_in_epoch(&mut set(&[&b0, &b1, &b2]), 1).unwrap();
    assert!(info.duplicate);
    assert_eq!(bases(&info), [0, 2, 8]);
    assert_eq!(log.log_end_offset(), Offset(10));
    // A gap inside a set, and a set mixing producers or plain entries, are refused whole.
    let e = log
        .append_in_epoch(&mut set(&[&batch(4, 0, 7, 1), &batch(4, 0, 9, 1)]), 1)
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::OutOfOrderSequenceNumber);
    let e = log
        .append_in_epoch(&mut set(&[&batch(4, 0, 7, 1), &batch(6, 0, 0, 1)]), 1)
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidRequest);
    assert!(e.to_string().contains("only that producer"), "{e}");
    assert_eq!(log.log_end_offset(), Offset(10));
}

#[test]
fn the_state_survives_close_crash_and_lost_snapshots() {
    let f = Fixture::new();
    let log = f.open();
    // Enough batches to roll several 1 KiB segments: each roll snapshots the state.
    let mut seq = 0;
    let mut batches = Vec::new();
    for _ in 0..40 {
        let b = batch(5, 0, seq, 4);
        append(&log, &b).unwrap();
        batches.push(b);
        seq += 4;
    }
    assert!(log.segment_count() > 3);
    log.close().unwrap();
    drop(log);
    assert!(f.snapshots() >= 3, "a snapshot per roll and one at close");

    // Clean reopen: the last five batches are still recognised, the next sequence follows.
    let log = f.open();
    let last = batches.last().unwrap();
    assert_eq!(append(&log, last).unwrap(), (156, 159, true));
    // The producer wrote alone, back to back: one run, so an older batch is recognised too.
    assert_eq!(append(&log, &batches[30]).unwrap(), (120, 123, true));
    append(&log, &batch(5, 0, seq, 4)).unwrap();
    seq += 4;
    // A crash (no close): the state is rebuilt from the last roll's snapshot and the log.
    drop(log);
    let log = f.open();
    assert_eq!(
        append(&log, &batch(5, 0, seq - 4, 4)).unwrap(),
        (160, 163, true)
    );
    drop(log);
    // Every snapshot lost or damaged: rebuilt from the last two segments (Kafka's upgrade path).
    for e in std::fs::read_dir(&f.dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "snapshot") {
            std::fs::write(&p, b"SLPS garbage").unwrap();
        }
    }
    let log = f.open();
    assert_eq!(
        append(&log, &batch(5, 0, seq - 4, 4)).unwrap(),
        (160, 163, true)
    );
    assert_eq!(
        append(&log, &batch(5, 0, seq, 1)).unwrap(),
        (164, 164, false)
    );
}

#[test]
fn truncation_forgets_the_cut_batches_and_a_follower_keeps_the_leaders_state() {
    let f = Fixture::new();
    let leader = f.open();
    let g = Fixture::new();
    let follower = g.open();
    let b0 = batch(9, 2, 0, 3);
    let b1 = batch(9, 2, 3, 3);
    append(&leader, &b0).unwrap();
    append(&leader, &b1).unwrap();
    // The follower copies the leader's bytes, offsets and all.
    let read = leader.read(Offset(0), 1 << 20, Offset(6)).unwrap();
    follower.append_as_follower(&read.bytes).unwrap();
    // The follower becomes leader: a retry of either batch is a duplicate there too.
    assert_eq!(append(&follower, &b1).unwrap(), (3, 5, true));
    assert_eq!(append(&follower, &b0).unwrap(), (0, 2, true));

    // The old leader's second batch is cut (it was never committed): its retry is new again.
    leader.truncate_to(Offset(3)).unwrap();
    assert_eq!(append(&leader, &b0).unwrap(), (0, 2, true));
    assert_eq!(append(&leader, &b1).unwrap(), (3, 5, false));
    leader.truncate_fully_and_start_at(Offset(100)).unwrap();
    assert_eq!(
        append(&leader, &b1).unwrap(),
        (100, 102, false),
        "no state left"
    );
}

/// A request's batches are appended back to back, so the leader remembers them as one run: a
/// retry of 8 batches already appended is answered as duplicates, batch by batch, even after
/// four more appends of the producer (other producers' records between them).
#[test]
fn a_retry_of_more_batches_than_runs_retained_is_recognised() {
    let f = Fixture::new();
    let log = f.open();
    let set = |from: i32, n: i32| -> Vec<u8> {
        (from..from + n).flat_map(|i| batch(7, 0, i, 1)).collect()
    };
    let mut first = set(0, 8);
    let info = log.append_in_epoch(&mut first, 3).unwrap();
    assert_eq!((info.base_offset, info.last_offset), (Offset(0), Offset(7)));
    for i in 0..4 {
        append(&log, &batch(8, 0, i, 1)).unwrap();
        append(&log, &batch(7, 0, 8 + i, 1)).unwrap();
    }
    let mut retry = set(0, 8);
    let info = log.append_in_epoch(&mut retry, 3).unwrap();
    assert!(info.duplicate);
    assert_eq!(bases(&info), (0..8).collect::<Vec<_>>());
    assert_eq!(log.log_end_offset(), Offset(16), "nothing written again");
}

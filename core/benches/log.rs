//! Partition-log throughput: append and read of 100-byte and 1 KiB messages in sets of 1,000,
//! with the flush policies `os` and `always`. Run with `make bench` (or
//! `cargo bench -p sluiceway-core --bench log`); figures go in docs/benchmarks.md.
//!
//! The log lives under Cargo's target tmp dir, which is on the same disk as the checkout (not a
//! tmpfs), so `always` measures real fsyncs.

use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use sluiceway_core::format::{Compression, MAGIC_V1, MessageSetBuilder};
use sluiceway_core::storage::{FlushPolicy, LogConfig, PartitionLog, SystemClock};
use sluiceway_core::types::{Offset, TimestampMs};

const SET_MESSAGES: usize = 1000;
/// Keeps the benchmark's disk use bounded however long criterion runs.
const RETENTION_BYTES: u64 = 2 << 30;

fn message_set(value_bytes: usize) -> Vec<u8> {
    let value = vec![b'x'; value_bytes];
    let mut b = MessageSetBuilder::with_capacity(
        MAGIC_V1,
        Compression::None,
        SET_MESSAGES * (value_bytes + 40),
    );
    for i in 0..SET_MESSAGES {
        b.push(
            TimestampMs(1_700_000_000_000 + i as i64),
            None,
            Some(&value),
        );
    }
    b.finish().expect("uncompressed sets always build")
}

fn open(dir: &std::path::Path, flush: FlushPolicy) -> PartitionLog {
    let config = LogConfig {
        flush,
        retention_bytes: Some(RETENTION_BYTES),
        segment_bytes: 256 << 20,
        ..LogConfig::default()
    };
    PartitionLog::open(dir.join("bench-0"), config, Arc::new(SystemClock)).expect("open log")
}

fn bench_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    for (policy_name, policy) in [("os", FlushPolicy::Os), ("always", FlushPolicy::Always)] {
        for value_bytes in [100usize, 1024] {
            let set = message_set(value_bytes);
            let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
            let log = open(tmp.path(), policy.clone());
            group.throughput(Throughput::Bytes(set.len() as u64));
            let mut appended = 0u64;
            group.bench_function(format!("{policy_name}/{value_bytes}B"), |b| {
                b.iter_batched_ref(
                    || {
                        appended += 1;
                        if appended.is_multiple_of(256) {
                            // Retention deletes only segments below the high watermark.
                            log.set_high_watermark(log.log_end_offset());
                            log.enforce_retention().expect("retention");
                        }
                        set.clone()
                    },
                    |set| log.append(set).expect("append"),
                    BatchSize::LargeInput,
                )
            });
            log.close().expect("close");
        }
    }
    group.finish();
}

fn bench_read(c: &mut Criterion) {
    let mut group = c.benchmark_group("read");
    for value_bytes in [100usize, 1024] {
        let set = message_set(value_bytes);
        let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
        let log = open(tmp.path(), FlushPolicy::Os);
        // 64 sets: enough that reads cross segments' index entries, small enough to stay cached,
        // which is the common case for a consumer keeping up with producers.
        for _ in 0..64 {
            log.append(&mut set.clone()).expect("append");
        }
        let end = log.log_end_offset();
        log.set_high_watermark(end);
        group.throughput(Throughput::Bytes(set.len() as u64));
        let mut next = 0u64;
        group.bench_function(format!("{value_bytes}B"), |b| {
            b.iter(|| {
                let r = log.read(Offset(next), set.len() as u32, end).expect("read");
                next = (next + SET_MESSAGES as u64) % end.0;
                r.bytes.len()
            })
        });
        log.close().expect("close");
    }
    group.finish();
}

criterion_group!(benches, bench_append, bench_read);
criterion_main!(benches);

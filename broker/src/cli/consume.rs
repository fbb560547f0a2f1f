//! `sluiceway consume`: records of the client core's `Consumer`, printed.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use base64::Engine as _;
use clap::{Args, ValueEnum};
use sluiceway_core::client::{
    Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, TopicPartition,
};
use sluiceway_core::limits::CLI_CONSUME_POLL_MS;
use sluiceway_core::{Error, ErrorCode, Offset, Result};

use super::{Bootstrap, apply_properties, connect_admin, shutdown_signal};

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    Text,
    Json,
}

/// Where each partition starts: its committed offset (the `--offset-store` directory, or the
/// group's offsets on the broker with `--group`) when it has one; otherwise `--offset N`,
/// `--from-time UNIX_MS` or `--from-beginning`; otherwise the end of the log (only new
/// messages), as Kafka's console consumer does. With `--offset-store` or `--group` the
/// positions after the printed records are committed when the command stops (after
/// `--max-messages`, `--timeout-ms`, SIGINT or SIGTERM) and every `auto.commit.interval.ms`
/// while it runs, so the same command run again continues where the last one stopped.
#[derive(Args, Debug)]
#[command(
    after_help = "Start positions: each partition starts at its committed offset \
    (--offset-store directory, or the group's broker-side offsets with --group); without one at \
    --offset / --from-time / --from-beginning; otherwise at the end of the log (new messages \
    only), as Kafka's console consumer does. With --offset-store or --group, the positions after \
    the printed records are committed when the command stops (--max-messages, --timeout-ms, \
    SIGINT, SIGTERM) and every auto.commit.interval.ms while it runs: the same command run again \
    continues where the last one stopped. --group refuses --partition, --offset and \
    --from-time (the group assigns partitions)."
)]
pub(super) struct ConsumeArgs {
    topic: String,
    #[command(flatten)]
    bootstrap: Bootstrap,
    /// Read only this partition (default: all).
    #[arg(long)]
    partition: Option<u32>,
    /// Start partitions without a committed offset at the first offset still in the log.
    #[arg(long, conflicts_with_all = ["offset", "from_time"])]
    from_beginning: bool,
    /// Start partitions without a committed offset at this offset (in every partition read);
    /// an offset outside the log is an OFFSET_OUT_OF_RANGE error.
    #[arg(long, conflicts_with = "from_time")]
    offset: Option<u64>,
    /// Start partitions without a committed offset at the first message with a timestamp at
    /// or after this time (ms since the epoch); at the end where there is none.
    #[arg(long, value_name = "UNIX_MS")]
    from_time: Option<i64>,
    /// Stop after printing this many messages (exactly these are committed).
    #[arg(long)]
    max_messages: Option<u64>,
    /// Stop after this many milliseconds without a new message (with --group: while a member
    /// of a generation, not while joining or rebalancing).
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Output: text (the value, one per line) or json (one object per line: topic, partition,
    /// offset, timestamp, key, value, headers — a list of {key, value}, empty for records
    /// without headers).
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Print keys and values base64-encoded.
    #[arg(long)]
    base64: bool,
    /// Join this consumer group: the group's members split the topic's partitions, and
    /// progress is committed to the broker (and to --offset-store when given).
    #[arg(long, value_name = "G")]
    group: Option<String>,
    /// Resume from and commit to the local offset store in this directory
    /// (`offset.store.dir`; one file per group id, `standalone` without --group).
    #[arg(long, value_name = "DIR")]
    offset_store: Option<PathBuf>,
    /// A consumer setting with its Kafka name, KEY=VALUE (repeatable), e.g.
    /// session.timeout.ms=10000. The dedicated flags above win over it.
    #[arg(long = "consumer-property", value_name = "KEY=VALUE")]
    consumer_properties: Vec<String>,
}

/// One record as `consume` prints it.
pub(super) fn render(record: &ConsumerRecord, format: Format, base64: bool) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD;
    match format {
        Format::Json => {
            let enc = |b: Option<&[u8]>| match b {
                None => serde_json::Value::Null,
                Some(b) if base64 => serde_json::Value::String(b64.encode(b)),
                Some(b) => serde_json::Value::String(String::from_utf8_lossy(b).into_owned()),
            };
            // Header keys are UTF-8 already; values are bytes like the value.
            let headers: Vec<serde_json::Value> = record
                .headers
                .iter()
                .map(|h| serde_json::json!({"key": h.key, "value": enc(h.value.as_deref())}))
                .collect();
            // Written by hand to keep the documented field order.
            format!(
                "{{\"topic\":{},\"partition\":{},\"offset\":{},\"timestamp\":{},\"key\":{},\"value\":{},\"headers\":{}}}\n",
                serde_json::Value::String(record.topic.to_string()),
                record.partition,
                record.offset.0,
                record.timestamp,
                enc(record.key.as_deref()),
                enc(record.value.as_deref()),
                serde_json::Value::Array(headers)
            )
            .into_bytes()
        }
        Format::Text => {
            let v = record.value.as_deref().unwrap_or_default();
            let mut l = if base64 {
                b64.encode(v).into_bytes()
            } else {
                v.to_vec()
            };
            l.push(b'\n');
            l
        }
    }
}

/// `sluiceway consume`: the client core's [`Consumer`], standalone (`assign`: one or every
/// partition) or a group member (`subscribe`). Records are printed as `poll` returns them;
/// on exit the consumer is closed, which commits (local store and/or group) the positions
/// after the last *printed* record of each partition.
pub(super) async fn consume(args: ConsumeArgs) -> Result<ExitCode> {
    if args.group.is_some()
        && (args.partition.is_some() || args.offset.is_some() || args.from_time.is_some())
    {
        return Err(Error::InvalidArgument(
            "--group cannot be combined with --partition, --offset or --from-time: the group \
             assigns partitions, and each starts at its committed offset (else at the \
             beginning with --from-beginning, else at the end)"
                .into(),
        ));
    }
    if args.max_messages == Some(0) {
        return Ok(ExitCode::SUCCESS);
    }
    // The topic must exist (and the partition too): an error now, rather than a consumer
    // waiting for metadata that never comes.
    let admin = connect_admin(&args.bootstrap).await?;
    let count = admin
        .describe_topic(&args.topic)
        .await?
        .topic
        .partitions
        .len() as u32;
    drop(admin);
    let partitions: Vec<TopicPartition> = match args.partition {
        Some(p) if p >= count => {
            return Err(Error::Remote {
                code: ErrorCode::UnknownTopicOrPartition,
                message: format!(
                    "topic {} has {count} partitions; there is no partition {p}",
                    args.topic
                ),
            });
        }
        Some(p) => vec![TopicPartition::new(args.topic.as_str(), p)],
        None => (0..count)
            .map(|p| TopicPartition::new(args.topic.as_str(), p))
            .collect(),
    };

    let mut config = ConsumerConfig::new(&args.bootstrap.bootstrap);
    config = config.client_id("sluiceway-cli");
    for (k, v) in args.bootstrap.settings()? {
        config.set(&k, &v)?;
    }
    apply_properties(&args.consumer_properties, |k, v| {
        config.set(k, v).map(|_| ())
    })?;
    if let Some(dir) = &args.offset_store {
        config = config.offset_store_dir(dir.clone());
    }
    if let Some(g) = &args.group {
        config = config.group_id(g.clone());
    }
    // Partitions without a committed offset start at the beginning with --from-beginning,
    // else at the end (Kafka's console consumer). An explicit --offset turns resets off, so an
    // offset outside the log is an error rather than a silent jump.
    config = config.auto_offset_reset(if args.offset.is_some() {
        OffsetReset::Error
    } else if args.from_beginning {
        OffsetReset::Earliest
    } else {
        OffsetReset::Latest
    });
    // Commits happen at every poll (every auto.commit.interval.ms, covering what the previous
    // polls returned, all printed by then), on a group rebalance and when the consumer closes.
    config = config.enable_auto_commit(true);
    let consumer = Consumer::new(config).await?;

    if args.group.is_some() {
        consumer.subscribe([args.topic.clone()]).await?;
    } else {
        consumer.assign(partitions.clone())?;
        // A committed offset in the local store wins: the same command run again continues.
        let fresh: Vec<TopicPartition> = partitions
            .into_iter()
            .filter(|tp| consumer.committed(tp).is_none())
            .collect();
        if !fresh.is_empty() {
            if let Some(o) = args.offset {
                for tp in &fresh {
                    consumer.seek(tp, Offset(o))?;
                }
            } else if let Some(t) = args.from_time {
                consumer.seek_to_timestamp(Some(&fresh), t).await?;
            }
        }
    }

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut printed = 0u64;
    // `--timeout-ms` counts only time spent waiting for records: the polls that returned
    // nothing since the last record. Time blocked writing to a slow reader (a full pipe) is
    // not time without messages, so it never counts; nor is the time a group member spends
    // joining or rebalancing (the broker gathers members for 3 s before a new group's first
    // assignment), when it cannot receive anything.
    let mut idle = Duration::ZERO;
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let result: Result<()> = async {
        loop {
            let wait = match args.timeout_ms.map(Duration::from_millis) {
                Some(t) if idle >= t => return Ok(()),
                Some(t) => t - idle,
                None => Duration::from_millis(CLI_CONSUME_POLL_MS),
            };
            let polled = Instant::now();
            let batch = tokio::select! {
                r = consumer.poll(wait) => r?,
                _ = &mut stop => return Ok(()),
            };

            let joining = args.group.is_some() && consumer.group_membership().is_none();
            if batch.is_empty() {
                if !joining {
                    idle += polled.elapsed();
                }
            } else {
                idle = Duration::ZERO;
            }
            let mut unprinted = &batch[..];
            for (i, record) in batch.iter().enumerate() {
                if args.max_messages.is_some_and(|m| printed >= m) {
                    unprinted = &batch[i..];
                    break;
                }
                out.write_all(&render(record, args.format, args.base64))
                    .map_err(|e| Error::io("write", "standard output", e))?;
                printed += 1;
                unprinted = &batch[i + 1..];
            }
            // Before the next poll may commit these positions, they are really written.
            out.flush()
                .map_err(|e| Error::io("write", "standard output", e))?;
            if args.max_messages.is_some_and(|m| printed >= m) {
                // Records polled but not printed go back: each partition's position returns to
                // its first unprinted record, so the commit at close covers exactly what was
                // printed (no loss, no repeat on the next run).
                let mut first: BTreeMap<TopicPartition, u64> = BTreeMap::new();
                for r in unprinted {
                    first
                        .entry(TopicPartition::new(&*r.topic, r.partition))
                        .or_insert(r.offset.0);
                }
                for (tp, o) in first {
                    // A partition revoked meanwhile was committed by the rebalance.
                    let _ = consumer.seek(&tp, Offset(o));
                }
                return Ok(());
            }
        }
    }
    .await;
    match result {
        // `sluiceway consume … | head`: the reader is gone. What it read is unknown, so
        // nothing is committed (the next run repeats rather than loses).
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            Ok(ExitCode::SUCCESS)
        }
        // Not closed, so nothing is committed: a failed run must not move the stored positions.
        Err(e) => Err(e),
        Ok(()) => {
            consumer.close(None).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

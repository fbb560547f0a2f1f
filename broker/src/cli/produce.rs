//! `sluiceway produce`: standard input lines as records of the client core's `Producer`.

use std::collections::VecDeque;
use std::io::BufRead;
use std::process::ExitCode;

use bytes::Bytes;
use clap::Args;
use sluiceway_core::client::{
    DeliveryFuture, Producer, ProducerConfig, ProducerRecord, RecordHeader,
};
use sluiceway_core::limits::{
    CLI_BATCH_BYTES_MAX, CLI_BATCH_MESSAGES_MAX, CLI_UNACKED_MESSAGES_MAX,
};
use sluiceway_core::{Error, Result};

use super::{Bootstrap, apply_properties};

#[derive(Args, Debug)]
pub(super) struct ProduceArgs {
    topic: String,
    #[command(flatten)]
    bootstrap: Bootstrap,
    /// Acknowledgement: all (every in-sync replica), 1 (the leader), 0 (none) [default: all].
    #[arg(long, value_parser = ["all", "-1", "1", "0"])]
    acks: Option<String>,
    /// Send every message to this partition (default: hash of the key, else sticky batches
    /// spread round-robin).
    #[arg(long)]
    partition: Option<u32>,
    /// Split each line at the first S into key and value.
    #[arg(long, value_name = "S")]
    key_separator: Option<String>,
    /// Compress batches: none, gzip, snappy, lz4 or zstd (`compression.type`).
    #[arg(long, value_name = "CODEC")]
    compression: Option<String>,
    /// Wait up to this long to fill a batch (`linger.ms`, default 5).
    #[arg(long, value_name = "MS")]
    linger_ms: Option<u64>,
    /// A record header added to every message, KEY=VALUE (repeatable, kept in order; KEY=
    /// gives an empty value). Messages with headers are written as magic 2 batches.
    #[arg(long = "header", value_name = "KEY=VALUE")]
    headers: Vec<String>,
    /// A producer setting with its Kafka name, KEY=VALUE (repeatable), e.g. batch.size=65536.
    /// The dedicated flags above win over it.
    #[arg(long = "producer-property", value_name = "KEY=VALUE")]
    producer_properties: Vec<String>,
}

/// Reads standard input on its own thread, one message per line (`\n` or `\r\n` removed),
/// into a bounded channel.
pub(super) fn spawn_stdin_reader() -> tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(CLI_BATCH_MESSAGES_MAX);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        loop {
            let mut line = Vec::new();
            match input.read_until(b'\n', &mut line) {
                Ok(0) => return,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                    }
                    if tx.blocking_send(Ok(line)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    rx
}

/// `sluiceway produce`: every line becomes a record of the client core's [`Producer`]
/// (partitioning, batching, retries, leader routing all live there); the command exits 0
/// only when every record's delivery future resolved successfully.
pub(super) async fn produce(args: ProduceArgs) -> Result<ExitCode> {
    let mut config = ProducerConfig::new(&args.bootstrap.bootstrap);
    config = config.client_id("sluiceway-cli");
    for (k, v) in args.bootstrap.settings()? {
        config.set(&k, &v)?;
    }
    apply_properties(&args.producer_properties, |k, v| {
        config.set(k, v).map(|_| ())
    })?;
    // The dedicated flags win over --producer-property.
    if let Some(acks) = &args.acks {
        config.set("acks", acks)?;
    }
    if let Some(c) = &args.compression {
        config.set("compression.type", c)?;
    }
    if let Some(l) = args.linger_ms {
        config.set("linger.ms", &l.to_string())?;
    }
    let headers = args
        .headers
        .iter()
        .map(|h| match h.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok(RecordHeader {
                key: k.to_owned(),
                value: Some(Bytes::copy_from_slice(v.as_bytes())),
            }),
            _ => Err(Error::InvalidArgument(format!(
                "--header {h:?}: expected KEY=VALUE with a non-empty KEY"
            ))),
        })
        .collect::<Result<Vec<_>>>()?;
    let producer = Producer::new(config).await?;
    let mut rx = spawn_stdin_reader();
    let sep = args.key_separator.as_deref().map(str::as_bytes);
    let mut line_no = 0u64;
    let mut pending: VecDeque<DeliveryFuture> = VecDeque::new();
    let mut refused = None;
    let mut first_chunk = true;
    let topic: std::sync::Arc<str> = args.topic.as_str().into();
    'input: while let Some(first) = rx.recv().await {
        // Whatever lines are already waiting go in one call: piped input is sent in large
        // chunks, an interactive line at once (after `linger.ms`).
        let mut lines = vec![first.map_err(|e| Error::io("read", "standard input", e))?];
        let mut bytes = lines[0].len();
        while lines.len() < CLI_BATCH_MESSAGES_MAX && bytes < CLI_BATCH_BYTES_MAX {
            match rx.try_recv() {
                Ok(l) => {
                    let l = l.map_err(|e| Error::io("read", "standard input", e))?;
                    bytes += l.len();
                    lines.push(l);
                }
                Err(_) => break,
            }
        }
        let mut records = Vec::with_capacity(lines.len());
        for mut line in lines {
            line_no += 1;
            let mut record = ProducerRecord {
                topic: topic.clone(),
                partition: args.partition,
                headers: headers.clone(),
                ..ProducerRecord::default()
            };
            if let Some(sep) = sep {
                let Some(i) = line.windows(sep.len()).position(|w| w == sep) else {
                    // Deliver (and check) what came before the bad line, then refuse it.
                    refused = Some(Error::InvalidArgument(format!(
                        "line {line_no} has no key separator {:?}",
                        String::from_utf8_lossy(sep)
                    )));
                    pending.extend(producer.send_batch(records).await?.into_futures());
                    break 'input;
                };

                let value = line.split_off(i + sep.len());
                line.truncate(i);
                record = record.key(line);
                record.value = Some(value.into());
            } else {
                record.value = Some(line.into());
            }
            records.push(record);
        }
        if first_chunk {
            first_chunk = false;
            // The first record alone: an unknown topic or partition fails here once, not once
            // per line of the chunk.
            let rest = records.split_off(1);
            let first = records.pop().expect("a chunk has a line");
            pending.push_back(producer.send(first).await?);
            records = rest;
        }
        pending.extend(producer.send_batch(records).await?.into_futures());
        while pending.len() > CLI_UNACKED_MESSAGES_MAX {
            pending.pop_front().expect("not empty").await?;
        }
    }
    for f in pending {
        f.await?;
    }
    producer.close(None).await?;
    match refused {
        Some(e) => Err(e),
        None => Ok(ExitCode::SUCCESS),
    }
}

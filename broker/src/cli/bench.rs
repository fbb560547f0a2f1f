//! `sluiceway bench produce|consume|e2e`: the command-line face of the client core's
//! measurement loops (`sluiceway_core::client::bench`). This module only parses flags into
//! client configurations and prints: a live progress line on stderr (once a second, rewritten
//! in place; only when stderr is a terminal, and never with `--quiet` or `--json`) and one
//! summary on stdout, a line of text or one JSON object (`--json`, schema in
//! `docs/benchmarks.md`).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};
use sluiceway_core::client::bench::{
    BenchKind, BenchOptions, BenchProgress, BenchReport, bench_consume, bench_e2e, bench_produce,
};
use sluiceway_core::client::{ConsumerConfig, ProducerConfig};
use sluiceway_core::{Error, Result};

/// Which side to measure.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchMode {
    /// Send messages, measuring send → delivery latency.
    Produce,
    /// Read the topic from the beginning, measuring now − record timestamp.
    Consume,
    /// Producers and consumers together, measuring send → receive latency.
    E2e,
}

impl BenchMode {
    fn kind(self) -> BenchKind {
        match self {
            BenchMode::Produce => BenchKind::Produce,
            BenchMode::Consume => BenchKind::Consume,
            BenchMode::E2e => BenchKind::EndToEnd,
        }
    }
}

/// How the summary is printed.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BenchFormat {
    #[default]
    Text,
    Json,
}

/// A topic's `flush.policy` when the benchmark creates it.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushPolicy {
    /// fsync before acknowledging (the broker's default).
    Always,
    /// Leave flushing to the operating system (Kafka's default durability).
    Os,
}

/// `sluiceway bench produce|consume|e2e [flags]`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// produce, consume or e2e.
    #[arg(value_enum)]
    pub mode: BenchMode,
    /// Brokers to talk to, HOST:PORT[,HOST:PORT...].
    #[arg(
        long,
        env = "SLUICEWAY_BOOTSTRAP",
        default_value = "127.0.0.1:9292",
        value_name = "HOST:PORT"
    )]
    pub bootstrap: String,
    /// Client settings file (security.protocol, ssl.*, sasl.*), one KEY=VALUE per line, as
    /// the other commands take it.
    #[arg(long, env = "SLUICEWAY_COMMAND_CONFIG", value_name = "FILE")]
    pub command_config: Option<std::path::PathBuf>,
    /// The topic (created with --partitions when absent).
    #[arg(long, default_value = "bench")]
    pub topic: String,
    /// Partitions of the topic when the benchmark creates it.
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,
    /// Replication factor of the topic when the benchmark creates it (default: the broker's).
    #[arg(long = "replication-factor")]
    pub replication_factor: Option<u32>,
    /// flush.policy of the topic when the benchmark creates it (default: the broker's).
    #[arg(long = "flush-policy", value_enum)]
    pub flush_policy: Option<FlushPolicy>,
    /// Messages in total, sent or read (default 100000 unless --duration-s is given).
    #[arg(long)]
    pub messages: Option<u64>,
    /// Stop after this many seconds (with --messages: whichever comes first).
    #[arg(long = "duration-s")]
    pub duration_s: Option<u64>,
    /// Value size in bytes (produce, e2e; e2e needs at least 8).
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Send at this fixed rate, messages/s over all producers (produce, e2e); latency is then
    /// measured from each message's intended send time. Default: as fast as possible.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Producers in this process, each its own client (produce, e2e; default 1).
    #[arg(long)]
    pub producers: Option<usize>,
    /// Consumers in this process, each its own client with a share of the partitions
    /// (consume, e2e; default 1).
    #[arg(long)]
    pub consumers: Option<usize>,
    /// acks: all, 1 or 0 (produce, e2e).
    #[arg(long, default_value = "1")]
    pub acks: String,
    /// linger.ms (produce, e2e).
    #[arg(long = "linger-ms", default_value_t = 5)]
    pub linger_ms: u64,
    /// batch.size in bytes (produce, e2e).
    #[arg(long = "batch-size", default_value_t = 65536)]
    pub batch_size: u32,
    /// compression.type: none, gzip, snappy, lz4, zstd (produce, e2e).
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// message.format.version: 1 (the notes' magic 1) or 2 (Kafka's RecordBatch v2) (produce,
    /// e2e).
    #[arg(long = "message-format-version", default_value = "1")]
    pub message_format_version: String,
    /// enable.idempotence: producer ids and sequences (needs --acks all; writes magic 2)
    /// (produce, e2e).
    #[arg(long = "enable-idempotence")]
    pub enable_idempotence: bool,
    /// Sends outstanding at once, per producer (produce, e2e).
    #[arg(long = "in-flight", default_value_t = 10_000)]
    pub in_flight: usize,
    /// check.crcs=false: the consumers do not check fetched sets' CRCs (consume, e2e).
    #[arg(long = "no-check-crcs")]
    pub no_check_crcs: bool,
    /// Summary format.
    #[arg(long, value_enum, default_value_t = BenchFormat::Text)]
    pub format: BenchFormat,
    /// The summary as one JSON object (same as --format json); no progress line.
    #[arg(long)]
    pub json: bool,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Parser, Debug)]
#[command(name = "sluiceway bench")]
struct Standalone {
    #[command(flatten)]
    args: BenchArgs,
}

fn invalid(m: impl Into<String>) -> Error {
    Error::InvalidArgument(m.into())
}

impl BenchArgs {
    /// Parses `argv` (without the program name and `bench`), e.g. for tests.
    pub fn parse_from<I: IntoIterator<Item = S>, S: Into<String>>(argv: I) -> Result<BenchArgs> {
        let argv =
            std::iter::once("sluiceway-bench".to_owned()).chain(argv.into_iter().map(Into::into));
        Standalone::try_parse_from(argv)
            .map(|s| s.args)
            .map_err(|e| invalid(e.to_string()))
    }

    fn format(&self) -> BenchFormat {
        if self.json {
            BenchFormat::Json
        } else {
            self.format
        }
    }

    /// The flags that only some modes take.
    fn check_mode_flags(&self) -> Result<()> {
        let (produces, consumes) = match self.mode {
            BenchMode::Produce => (true, false),
            BenchMode::Consume => (false, true),
            BenchMode::E2e => (true, true),
        };
        if !produces && self.producers.is_some() {
            return Err(invalid("--producers applies to produce and e2e"));
        }
        if !produces && self.rate.is_some() {
            return Err(invalid("--rate applies to produce and e2e"));
        }
        if !consumes && self.consumers.is_some() {
            return Err(invalid("--consumers applies to consume and e2e"));
        }
        if !consumes && self.no_check_crcs {
            return Err(invalid("--no-check-crcs applies to consume and e2e"));
        }
        Ok(())
    }

    fn options(&self) -> Result<BenchOptions> {
        self.check_mode_flags()?;
        let mut topic_configs = BTreeMap::new();
        if let Some(p) = self.flush_policy {
            let v = match p {
                FlushPolicy::Always => "always",
                FlushPolicy::Os => "os",
            };
            topic_configs.insert("flush.policy".to_owned(), v.to_owned());
        }
        if self.replication_factor == Some(0) {
            return Err(invalid("--replication-factor must be at least 1"));
        }
        let options = BenchOptions {
            topic: self.topic.clone(),
            partitions: self.partitions,
            replication_factor: self.replication_factor.unwrap_or(0),
            topic_configs,
            messages: match (self.messages, self.duration_s) {
                (None, None) => Some(100_000),
                (m, _) => m,
            },
            duration: self.duration_s.map(Duration::from_secs),
            size: self.size,
            in_flight: self.in_flight,
            rate: self.rate,
            producers: self.producers.unwrap_or(1),
            consumers: self.consumers.unwrap_or(1),
        };
        options.validate(self.mode.kind())?;
        Ok(options)
    }

    fn client_settings(&self) -> Result<Vec<(String, String)>> {
        match &self.command_config {
            None => Ok(Vec::new()),
            Some(path) => crate::cli::read_command_config(path),
        }
    }

    fn producer_config(&self) -> Result<ProducerConfig> {
        let mut c = ProducerConfig::new(&self.bootstrap);
        for (k, v) in self.client_settings()? {
            c.set(&k, &v)?;
        }
        c.set("acks", &self.acks)?;
        c.set("linger.ms", &self.linger_ms.to_string())?;
        c.set("batch.size", &self.batch_size.to_string())?;
        c.set("compression.type", &self.compression)?;
        c.set("message.format.version", &self.message_format_version)?;
        c.set("enable.idempotence", &self.enable_idempotence.to_string())?;
        c.set("client.id", "sluiceway-bench")?;
        c.validate()?;
        Ok(c)
    }

    fn consumer_config(&self) -> Result<ConsumerConfig> {
        let mut c = ConsumerConfig::new(&self.bootstrap);
        for (k, v) in self.client_settings()? {
            c.set(&k, &v)?;
        }
        c.set("client.id", "sluiceway-bench")?;
        c.set("enable.auto.commit", "false")?;
        c.set("fetch.max.wait.ms", "100")?;
        c.set("check.crcs", &(!self.no_check_crcs).to_string())?;
        c.validate()?;
        Ok(c)
    }
}

/// Runs the benchmark and returns its figures, calling `progress` about once a second.
pub async fn measure(args: &BenchArgs, progress: impl FnMut(BenchProgress)) -> Result<BenchReport> {
    let options = args.options()?;
    match args.mode {
        BenchMode::Produce => bench_produce(args.producer_config()?, &options, progress).await,
        BenchMode::Consume => bench_consume(args.consumer_config()?, &options, progress).await,
        BenchMode::E2e => {
            bench_e2e(
                args.producer_config()?,
                args.consumer_config()?,
                &options,
                progress,
            )
            .await
        }
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// The value size: as asked for produce and e2e runs, the average read for a consume run.
fn value_size(args: &BenchArgs, r: &BenchReport) -> u64 {
    match args.mode {
        BenchMode::Produce | BenchMode::E2e => args.size as u64,
        BenchMode::Consume => r.bytes.checked_div(r.messages).unwrap_or(0),
    }
}

/// What the latency figures measure.
fn latency_kind(args: &BenchArgs) -> &'static str {
    match (args.mode, args.rate.is_some()) {
        (BenchMode::Produce, false) => "send to delivery",
        (BenchMode::Produce, true) => "intended send to delivery",
        (BenchMode::Consume, _) => "record timestamp to receive",
        (BenchMode::E2e, false) => "send to receive",
        (BenchMode::E2e, true) => "intended send to receive",
    }
}

/// The summary: one line of text, or one JSON object (schema in `docs/benchmarks.md`).
pub fn summary(args: &BenchArgs, r: &BenchReport) -> String {
    match args.format() {
        BenchFormat::Text => {
            let mut clients = String::new();
            if r.producers > 1 || r.consumers > 1 {
                clients = format!(", {} producer(s), {} consumer(s)", r.producers, r.consumers);
            }
            if let Some(rate) = args.rate {
                clients.push_str(&format!(", at {rate} msg/s"));
            }
            format!(
                "{}: {} msgs ({} B values{}{clients}) in {:.2} s: {:.0} msg/s, {:.2} MB/s; latency ({}) ms p50 {:.3} p99 {:.3} p99.9 {:.3} max {:.3}; errors {}",
                r.mode,
                r.messages,
                value_size(args, r),
                if args.mode == BenchMode::Consume {
                    " on average"
                } else {
                    ""
                },
                r.elapsed.as_secs_f64(),
                r.messages_per_sec,
                r.mb_per_sec,
                latency_kind(args),
                ms(r.p50_us),
                ms(r.p99_us),
                ms(r.p999_us),
                ms(r.max_us),
                r.errors,
            )
        }
        BenchFormat::Json => {
            let produces = args.mode != BenchMode::Consume;
            let consumes = args.mode != BenchMode::Produce;
            serde_json::json!({
                "client": "rust",
                "target": "sluiceway",
                "mode": r.mode,
                "topic": args.topic,
                "size": value_size(args, r),
                "messages": r.messages,
                "bytes": r.bytes,
                "errors": r.errors,
                "seconds": r.elapsed.as_secs_f64(),
                "msgs_per_sec": r.messages_per_sec,
                "mb_per_sec": r.mb_per_sec,
                "latency": latency_kind(args),
                "latency_samples": r.latency_samples,
                "p50_ms": ms(r.p50_us),
                "p99_ms": ms(r.p99_us),
                "p999_ms": ms(r.p999_us),
                "max_ms": ms(r.max_us),
                "rate": args.rate,
                "producers": r.producers,
                "consumers": r.consumers,
                "acks": produces.then(|| args.acks.clone()),
                "linger_ms": produces.then_some(args.linger_ms),
                "batch_size": produces.then_some(args.batch_size),
                "compression": produces.then(|| args.compression.clone()),
                "message_format_version": produces.then(|| args.message_format_version.clone()),
                "enable_idempotence": produces.then_some(args.enable_idempotence),
                "in_flight": produces.then_some(args.in_flight),
                "check_crcs": consumes.then_some(!args.no_check_crcs),
                "flush_policy": r.flush_policy,
                "replication_factor": r.replication_factor,
            })
            .to_string()
        }
    }
}

/// `sluiceway bench`: progress on stderr, the summary on stdout. Exit code 1 when any
/// delivery failed.
pub async fn run(args: BenchArgs) -> Result<ExitCode> {
    let live = !args.quiet && args.format() == BenchFormat::Text && std::io::stderr().is_terminal();
    let mut shown = false;
    let report = measure(&args, |p| {
        if live {
            // One line, rewritten in place (\x1b[K clears what a longer line left).
            eprint!(
                "\r[{:>5.1} s] {} msgs, {:.0} msg/s, {:.2} MB total\x1b[K",
                p.elapsed.as_secs_f64(),
                p.messages,
                p.recent_rate,
                p.bytes as f64 / 1_000_000.0
            );
            let _ = std::io::stderr().flush();
            shown = true;
        }
    })
    .await;
    if shown {
        eprintln!();
    }
    let report = report?;
    println!("{}", summary(&args, &report));
    Ok(if report.errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

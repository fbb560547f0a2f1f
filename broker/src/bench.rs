//! `sluiceway bench produce|consume`: the command-line face of the client core's
//! measurement loops (`sluiceway_core::client::bench`). This module only parses flags into
//! client configurations and prints: a progress line about once a second to stderr, one
//! summary line (text or JSON) to stdout.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};
use sluiceway_core::client::bench::{
    BenchOptions, BenchProgress, BenchReport, bench_consume, bench_produce,
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
}

/// How the summary is printed.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BenchFormat {
    #[default]
    Text,
    Json,
}

/// `sluiceway bench produce|consume [flags]`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// produce or consume.
    #[arg(value_enum)]
    pub mode: BenchMode,
    /// A broker to talk to, HOST:PORT.
    #[arg(
        long,
        env = "SLUICEWAY_BOOTSTRAP",
        default_value = "127.0.0.1:9292",
        value_name = "HOST:PORT"
    )]
    pub bootstrap: String,
    /// The topic (created with --partitions when absent).
    #[arg(long, default_value = "bench")]
    pub topic: String,
    /// Partitions of the topic when the benchmark creates it.
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,
    /// Messages to send or read (default 100000 unless --duration-s is given).
    #[arg(long)]
    pub messages: Option<u64>,
    /// Stop after this many seconds (with --messages: whichever comes first).
    #[arg(long = "duration-s")]
    pub duration_s: Option<u64>,
    /// Value size in bytes (produce).
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// acks: all, 1 or 0 (produce).
    #[arg(long, default_value = "1")]
    pub acks: String,
    /// linger.ms (produce).
    #[arg(long = "linger-ms", default_value_t = 5)]
    pub linger_ms: u64,
    /// batch.size in bytes (produce).
    #[arg(long = "batch-size", default_value_t = 65536)]
    pub batch_size: u32,
    /// compression.type: none, gzip, snappy, lz4, zstd (produce).
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// Sends outstanding at once (produce).
    #[arg(long = "in-flight", default_value_t = 10_000)]
    pub in_flight: usize,
    /// Summary format.
    #[arg(long, value_enum, default_value_t = BenchFormat::Text)]
    pub format: BenchFormat,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Parser, Debug)]
#[command(name = "sluiceway bench")]
struct Standalone {
    #[command(flatten)]
    args: BenchArgs,
}

impl BenchArgs {
    /// Parses `argv` (without the program name and `bench`), e.g. for tests.
    pub fn parse_from<I: IntoIterator<Item = S>, S: Into<String>>(argv: I) -> Result<BenchArgs> {
        let argv =
            std::iter::once("sluiceway-bench".to_owned()).chain(argv.into_iter().map(Into::into));
        Standalone::try_parse_from(argv)
            .map(|s| s.args)
            .map_err(|e| Error::InvalidArgument(e.to_string()))
    }

    fn options(&self) -> BenchOptions {
        BenchOptions {
            topic: self.topic.clone(),
            partitions: self.partitions,
            messages: match (self.messages, self.duration_s) {
                (None, None) => Some(100_000),
                (m, _) => m,
            },
            duration: self.duration_s.map(Duration::from_secs),
            size: self.size,
            in_flight: self.in_flight,
        }
    }

    fn producer_config(&self) -> Result<ProducerConfig> {
        let mut c = ProducerConfig::new(&self.bootstrap);
        c.set("acks", &self.acks)?;
        c.set("linger.ms", &self.linger_ms.to_string())?;
        c.set("batch.size", &self.batch_size.to_string())?;
        c.set("compression.type", &self.compression)?;
        c.set("client.id", "sluiceway-bench")?;
        c.validate()?;
        Ok(c)
    }

    fn consumer_config(&self) -> Result<ConsumerConfig> {
        let mut c = ConsumerConfig::new(&self.bootstrap);
        c.set("client.id", "sluiceway-bench")?;
        c.set("enable.auto.commit", "false")?;
        c.set("fetch.max.wait.ms", "100")?;
        c.validate()?;
        Ok(c)
    }
}

/// Runs the benchmark and returns its figures, calling `progress` about once a second.
pub async fn measure(args: &BenchArgs, progress: impl FnMut(BenchProgress)) -> Result<BenchReport> {
    let options = args.options();
    match args.mode {
        BenchMode::Produce => bench_produce(args.producer_config()?, &options, progress).await,
        BenchMode::Consume => bench_consume(args.consumer_config()?, &options, progress).await,
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// The value size: as asked for a produce run, the average read for a consume run.
fn value_size(args: &BenchArgs, r: &BenchReport) -> u64 {
    match args.mode {
        BenchMode::Produce => args.size as u64,
        BenchMode::Consume => r.bytes.checked_div(r.messages).unwrap_or(0),
    }
}

/// The one-line summary, as text or JSON.
pub fn summary(args: &BenchArgs, r: &BenchReport) -> String {
    match args.format {
        BenchFormat::Text => format!(
            "{}: {} msgs ({} B values{}) in {:.2} s: {:.0} msg/s, {:.2} MB/s; latency ms p50 {:.3} p99 {:.3} p99.9 {:.3} max {:.3}; errors {}",
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
            ms(r.p50_us),
            ms(r.p99_us),
            ms(r.p999_us),
            ms(r.max_us),
            r.errors,
        ),
        BenchFormat::Json => serde_json::json!({
            "mode": r.mode,
            "topic": args.topic,
            "messages": r.messages,
            "bytes": r.bytes,
            "size": value_size(args, r),
            "acks": args.acks,
            "compression": args.compression,
            "linger_ms": args.linger_ms,
            "batch_size": args.batch_size,
            "errors": r.errors,
            "elapsed_s": r.elapsed.as_secs_f64(),
            "messages_per_sec": r.messages_per_sec,
            "mb_per_sec": r.mb_per_sec,
            "latency_ms": {
                "p50": ms(r.p50_us),
                "p99": ms(r.p99_us),
                "p99_9": ms(r.p999_us),
                "max": ms(r.max_us),
            },
        })
        .to_string(),
    }
}

/// `sluiceway bench`: progress on stderr, the summary on stdout. Exit code 1 when any
/// delivery failed.
pub async fn run(args: BenchArgs) -> Result<ExitCode> {
    let quiet = args.quiet;
    let report = measure(&args, |p| {
        if !quiet {
            eprintln!(
                "[{:>5.1} s] {} msgs, {:.0} msg/s, {:.2} MB total",
                p.elapsed.as_secs_f64(),
                p.messages,
                p.recent_rate,
                p.bytes as f64 / 1_000_000.0
            );
        }
    })
    .await?;
    println!("{}", summary(&args, &report));
    Ok(if report.errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

//! The `sluiceway` command line: `broker`, `topic create|list|describe|delete`, `produce`,
//! `consume`, `group list|describe`, `user add|delete|list`, `acl add|remove|list`
//! (client security settings from `--command-config FILE`), `bench produce|consume` ([`bench`]). Errors print one line to stderr, `error: CODE: message`,
//! and exit non-zero.
//!
//! One file per subcommand: `broker.rs`, `topic.rs`, `group.rs`, `user.rs`, `acl.rs`,
//! `produce.rs`, `consume.rs`, `bench.rs`; this one holds the parser, the shared flags
//! (`Bootstrap`, `--command-config`) and the dispatch.
//!
//! **API boundary:** `produce` and `consume` are thin shells over the client core
//! (`sluiceway_core::client::{Producer, Consumer}`): these files parse flags, read standard
//! input, print records and map errors; partitioning, batching, retries, leader routing,
//! positions, offset stores and group membership all live in `core/src/client/`. `topic` and
//! `group` are the same over [`Admin`]: they print what it returns. The command line
//! has no gRPC client of its own.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use sluiceway_core::client::{Admin, AdminConfig};
use sluiceway_core::topic::parse_key_value;
use sluiceway_core::{Error, ErrorCode, Result};

mod acl;
pub mod bench;
mod broker;
mod consume;
mod group;
mod produce;
mod topic;
mod user;

use acl::{AclCommand, acl};
use broker::run_broker;
use consume::{ConsumeArgs, consume};
use group::{GroupCommand, group};
use produce::{ProduceArgs, produce};
use topic::{TopicCommand, topic};
use user::{UserCommand, user};

use crate::config::BrokerArgs;

#[derive(Parser, Debug)]
#[command(
    name = "sluiceway",
    version,
    about = "Sluiceway: a persistent, partitioned, replicated message log"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a broker (the embedded registry by default; `--registry etcd://…` joins a cluster).
    Broker(Box<BrokerArgs>),
    /// Create, list, describe and delete topics.
    Topic {
        #[command(subcommand)]
        command: TopicCommand,
    },
    /// Produce one message per line of standard input.
    Produce(ProduceArgs),
    /// Print messages from a topic.
    Consume(ConsumeArgs),
    /// List and describe consumer groups.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
    },
    /// Manage users' SCRAM-SHA-256 credentials (stored hashed in the registry).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage ACLs (Kafka's model; enforced by brokers started with --authorizer).
    Acl {
        #[command(subcommand)]
        command: AclCommand,
    },
    /// Measure produce or consume throughput and latency (messages/s, MB/s, p50/p99/p99.9).
    Bench(bench::BenchArgs),
}

#[derive(Args, Debug, Clone)]
struct Bootstrap {
    /// Brokers to bootstrap from, HOST:PORT[,HOST:PORT…] (the first that answers is used).
    #[arg(
        long,
        env = "SLUICEWAY_BOOTSTRAP",
        default_value = "127.0.0.1:9292",
        value_name = "HOST:PORT"
    )]
    bootstrap: String,
    /// A file of client settings, one KEY=VALUE per line with Kafka's names (`#` comments),
    /// e.g. security.protocol=SASL_SSL, ssl.ca.location=…, sasl.username=…, sasl.password=…
    /// (Kafka tools' --command-config).
    #[arg(long, env = "SLUICEWAY_COMMAND_CONFIG", value_name = "FILE")]
    command_config: Option<PathBuf>,
}

impl Bootstrap {
    /// The settings of `--command-config`, in file order.
    fn settings(&self) -> Result<Vec<(String, String)>> {
        match &self.command_config {
            None => Ok(Vec::new()),
            Some(path) => read_command_config(path),
        }
    }
}

/// A `--command-config` file: one KEY=VALUE per line with Kafka's client names, `#` comments.
pub(crate) fn read_command_config(path: &std::path::Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::InvalidConfig {
        key: "--command-config".into(),
        reason: format!("cannot read {}: {e}", path.display()),
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line.split_once('=').ok_or_else(|| Error::InvalidConfig {
            key: "--command-config".into(),
            reason: format!("{}:{}: not KEY=VALUE", path.display(), i + 1),
        })?;
        out.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    Ok(out)
}

/// `error: CODE: message`.
/// A local I/O failure (binding a port, reading stdin) has no wire code worth printing: its
/// code would say KAFKA_STORAGE_ERROR, which misleads.
fn describe(e: &Error) -> String {
    match e {
        Error::Remote { code, message } => format!("{code}: {message}"),
        Error::Io { .. } => e.to_string(),
        other => format!("{}: {other}", other.code()),
    }
}

/// The binary's entry point.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Broker(args) => run_broker(&args),
        other => match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(run_client(other)),
            Err(e) => Err(Error::io("start the async runtime", "", e)),
        },
    };
    match result {
        Ok(code) => code,
        // `sluiceway consume … | head`: the reader is gone, which is not an error.
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

async fn run_client(command: Command) -> Result<ExitCode> {
    match command {
        Command::Broker(_) => unreachable!("handled by main"),
        Command::Topic { command } => topic(command).await,
        Command::Produce(args) => produce(args).await,
        Command::Consume(args) => consume(args).await,
        Command::Group { command } => group(command).await,
        Command::Bench(args) => bench::run(args).await,
        Command::User { command } => user(command).await,
        Command::Acl { command } => acl(command).await,
    }
}

/// Prints rows as left-aligned columns separated by two spaces.
fn print_table(rows: &[Vec<String>]) -> Result<()> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(String::len)
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = std::io::stdout().lock();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        writeln!(out, "{}", line.trim_end()).map_err(|e| Error::io("write", "stdout", e))?;
    }
    Ok(())
}

/// The admin client for `--bootstrap`. When no bootstrap broker answers, the error says
/// BROKER_NOT_AVAILABLE and names the addresses (the client's own error is a bare network one).
async fn connect_admin(bootstrap: &Bootstrap) -> Result<Admin> {
    let addresses = &bootstrap.bootstrap;
    let mut config = AdminConfig::new(addresses);
    for (k, v) in bootstrap.settings()? {
        config.set(&k, &v)?;
    }
    Admin::new(config).await.map_err(|e| match e {
        Error::Network(m) | Error::TimedOut(m) => Error::Remote {
            code: ErrorCode::BrokerNotAvailable,
            message: format!("cannot connect to {addresses}: {m}"),
        },
        other => other,
    })
}

fn join(ids: &[i32]) -> String {
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

/// Sets each `KEY=VALUE` of a `--producer-property` / `--consumer-property` list through `set`.
fn apply_properties(
    properties: &[String],
    mut set: impl FnMut(&str, &str) -> Result<()>,
) -> Result<()> {
    for kv in properties {
        let (k, v) = parse_key_value(kv)?;
        set(&k, &v)?;
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM: `consume` then stops like after `--timeout-ms`, committing
/// what it printed.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

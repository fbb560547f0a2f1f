//! The `sluiceway` command line: `broker`, `topic create|list|describe|delete`, `produce`,
//! `consume`, `group list|describe`, `user add|delete|list`, `acl add|remove|list`
//! (client security settings from `--command-config FILE`), `bench produce|consume` ([`bench`]). Errors print one line to stderr, `error: CODE: message`,
//! and exit non-zero.
//!
//! **API boundary:** `produce` and `consume` are thin shells over the client core
//! (`sluiceway_core::client::{Producer, Consumer}`): this file parses flags, reads standard
//! input, prints records and maps errors; partitioning, batching, retries, leader routing,
//! positions, offset stores and group membership all live in `core/src/client/`. `topic` and
//! `group` are the same over [`Admin`]: this file prints what it returns. The command line
//! has no gRPC client of its own.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use clap::{Args, Parser, Subcommand, ValueEnum};
use sluiceway_core::acl::{
    AclBinding, AclEntry, AclOperation, AclPermission, CLUSTER_RESOURCE_NAME, PatternType,
    ResourcePattern, ResourceType,
};
use sluiceway_core::client::{
    Admin, AdminConfig, Consumer, ConsumerConfig, ConsumerRecord, DeliveryFuture, GroupState,
    NewTopic, OffsetReset, Producer, ProducerConfig, ProducerRecord, RecordHeader, TopicPartition,
};
use sluiceway_core::limits::{
    CLI_BATCH_BYTES_MAX, CLI_BATCH_MESSAGES_MAX, CLI_CONSUME_POLL_MS, CLI_UNACKED_MESSAGES_MAX,
};
use sluiceway_core::topic::parse_key_value;
use sluiceway_core::{Error, ErrorCode, Offset, Result};

pub mod bench;

use crate::config::{BrokerArgs, BrokerConfig};

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

#[derive(Subcommand, Debug)]
enum GroupCommand {
    /// List the consumer groups (with members or committed offsets).
    List {
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
    /// Describe a group: its members, and per partition the committed offset, the log end
    /// (high watermark), the lag and the owning member.
    Describe {
        group: String,
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Create a user or replace its password (read from --password or the first line of stdin).
    Add {
        name: String,
        /// The password; without it, the first line of standard input.
        #[arg(long)]
        password: Option<String>,
        /// PBKDF2 iterations (4096..=16384).
        #[arg(long, default_value_t = 4096)]
        iterations: u32,
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
    /// Delete a user's credential.
    Delete {
        name: String,
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
    /// List users (never their secrets).
    List {
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
}

#[derive(Subcommand, Debug)]
enum AclCommand {
    /// Add ACL bindings: one per --operation.
    Add(AclArgs),
    /// Remove exactly the bindings these flags describe.
    Remove(AclArgs),
    /// List every binding.
    List {
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
}

#[derive(Args, Debug)]
struct AclArgs {
    /// Principal allowed, User:NAME or User:* (Kafka's --allow-principal).
    #[arg(
        long,
        conflicts_with = "deny_principal",
        required_unless_present = "deny_principal"
    )]
    allow_principal: Option<String>,
    /// Principal denied (a deny wins over any allow).
    #[arg(long)]
    deny_principal: Option<String>,
    /// Operation: Read, Write, Create, Delete, Describe, Alter, All (repeatable).
    #[arg(long = "operation", required = true)]
    operations: Vec<String>,
    /// A topic name (or prefix with --resource-pattern-type prefixed; * for all topics).
    #[arg(long, group = "resource")]
    topic: Option<String>,
    /// A consumer group id (or prefix).
    #[arg(long, group = "resource")]
    group: Option<String>,
    /// The cluster (creating topics, managing users and ACLs).
    #[arg(long, group = "resource")]
    cluster: bool,
    /// literal or prefixed.
    #[arg(long, default_value = "literal")]
    resource_pattern_type: String,
    #[command(flatten)]
    bootstrap: Bootstrap,
}

impl AclArgs {
    fn bindings(&self) -> Result<Vec<AclBinding>> {
        let (resource_type, name) = match (&self.topic, &self.group, self.cluster) {
            (Some(t), None, false) => (ResourceType::Topic, t.clone()),
            (None, Some(g), false) => (ResourceType::Group, g.clone()),
            (None, None, true) => (ResourceType::Cluster, CLUSTER_RESOURCE_NAME.to_owned()),
            _ => {
                return Err(Error::InvalidArgument(
                    "name exactly one resource: --topic, --group or --cluster".into(),
                ));
            }
        };
        let (principal, permission) = match (&self.allow_principal, &self.deny_principal) {
            (Some(p), None) => (p.clone(), AclPermission::Allow),
            (None, Some(p)) => (p.clone(), AclPermission::Deny),
            _ => {
                return Err(Error::InvalidArgument(
                    "give one of --allow-principal or --deny-principal".into(),
                ));
            }
        };
        let pattern = ResourcePattern {
            resource_type,
            name,
            pattern_type: PatternType::parse("pattern type", &self.resource_pattern_type)?,
        };
        self.operations
            .iter()
            .map(|op| {
                let b = AclBinding {
                    pattern: pattern.clone(),
                    entry: AclEntry {
                        principal: principal.clone(),
                        host: "*".into(),
                        operation: AclOperation::parse("operation", op)?,
                        permission,
                    },
                };
                b.validate()?;
                Ok(b)
            })
            .collect()
    }
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

#[derive(Subcommand, Debug)]
enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        /// Number of partitions.
        #[arg(long)]
        partitions: u32,
        /// Copies of each partition (on distinct brokers).
        #[arg(long, default_value_t = 1)]
        replication_factor: u32,
        /// Topic configuration, KEY=VALUE with Kafka's names (repeatable), e.g. retention.ms=86400000.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
    /// List topics.
    List {
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
    /// Describe a topic: one line per partition.
    Describe {
        name: String,
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
    /// Delete a topic and its data.
    Delete {
        name: String,
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
}

#[derive(Args, Debug)]
struct ProduceArgs {
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

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
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
struct ConsumeArgs {
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

fn run_broker(args: &BrokerArgs) -> Result<ExitCode> {
    let config = BrokerConfig::load(args)?;
    let filter =
        tracing_subscriber::EnvFilter::try_new(&config.log).map_err(|e| Error::InvalidConfig {
            key: "log".into(),
            reason: e.to_string(),
        })?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sluiceway-broker")
        .build()
        .map_err(|e| Error::io("start the async runtime", "", e))?;
    rt.block_on(crate::server::run(config))?;
    Ok(ExitCode::SUCCESS)
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

/// `sluiceway user add|delete|list` over the admin client.
async fn user(command: UserCommand) -> Result<ExitCode> {
    match command {
        UserCommand::Add {
            name,
            password,
            iterations,
            bootstrap,
        } => {
            let password = match password {
                Some(p) => p,
                None => {
                    let mut line = String::new();
                    std::io::stdin()
                        .lock()
                        .read_line(&mut line)
                        .map_err(|e| Error::io("read the password from", "stdin", e))?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            connect_admin(&bootstrap)
                .await?
                .upsert_user(&name, &password, iterations)
                .await?;
            println!("user {name} stored (SCRAM-SHA-256, {iterations} iterations)");
        }
        UserCommand::Delete { name, bootstrap } => {
            if !connect_admin(&bootstrap).await?.delete_user(&name).await? {
                return Err(Error::InvalidArgument(format!(
                    "user {name} does not exist"
                )));
            }
            println!("user {name} deleted");
        }
        UserCommand::List { bootstrap } => {
            let mut rows = vec![vec!["USER".into(), "MECHANISM".into(), "ITERATIONS".into()]];
            for u in connect_admin(&bootstrap).await?.list_users().await? {
                rows.push(vec![u.name, u.mechanism, u.iterations.to_string()]);
            }
            print_table(&rows)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `sluiceway acl add|remove|list` over the admin client.
async fn acl(command: AclCommand) -> Result<ExitCode> {
    match command {
        AclCommand::Add(args) => {
            let acls = args.bindings()?;
            connect_admin(&args.bootstrap)
                .await?
                .create_acls(&acls)
                .await?;
            for a in acls {
                println!("added: {a}");
            }
        }
        AclCommand::Remove(args) => {
            let acls = args.bindings()?;
            let n = connect_admin(&args.bootstrap)
                .await?
                .delete_acls(&acls)
                .await?;
            println!("removed {n} of {} bindings", acls.len());
        }
        AclCommand::List { bootstrap } => {
            let mut rows = vec![vec![
                "PRINCIPAL".into(),
                "PERMISSION".into(),
                "OPERATION".into(),
                "RESOURCE".into(),
                "PATTERN".into(),
                "NAME".into(),
            ]];
            for a in connect_admin(&bootstrap).await?.list_acls().await? {
                rows.push(vec![
                    a.entry.principal,
                    a.entry.permission.to_string(),
                    a.entry.operation.to_string(),
                    a.pattern.resource_type.to_string(),
                    a.pattern.pattern_type.to_string(),
                    a.pattern.name,
                ]);
            }
            print_table(&rows)?;
        }
    }
    Ok(ExitCode::SUCCESS)
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

async fn group(command: GroupCommand) -> Result<ExitCode> {
    match command {
        GroupCommand::List { bootstrap } => {
            let admin = connect_admin(&bootstrap).await?;
            let groups = admin.list_groups().await?;
            let mut rows = vec![
                ["GROUP", "STATE", "MEMBERS", "GENERATION"]
                    .map(str::to_owned)
                    .to_vec(),
            ];
            for g in groups {
                rows.push(vec![
                    g.group_id,
                    g.state.to_string(),
                    g.members.to_string(),
                    g.generation.to_string(),
                ]);
            }
            print_table(&rows)?;
        }
        GroupCommand::Describe { group, bootstrap } => {
            let admin = connect_admin(&bootstrap).await?;
            let d = admin.describe_group(&group).await?;
            if d.state == GroupState::Dead {
                return Err(Error::Remote {
                    code: ErrorCode::InvalidArgument,
                    message: format!(
                        "group {group} does not exist (no members, no committed offsets)"
                    ),
                });
            }
            println!(
                "Group: {}  State: {}  Generation: {}  Assignor: {}  Members: {}",
                d.group_id,
                d.state,
                d.generation,
                d.assignor.as_deref().unwrap_or("-"),
                d.members.len()
            );
            let mut rows = vec![
                [
                    "TOPIC",
                    "PARTITION",
                    "CURRENT-OFFSET",
                    "LOG-END-OFFSET",
                    "LAG",
                    "MEMBER-ID",
                    "CLIENT-ID",
                ]
                .map(str::to_owned)
                .to_vec(),
            ];
            let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
            for p in admin.group_lag(&d).await {
                rows.push(vec![
                    p.partition.topic,
                    p.partition.partition.to_string(),
                    or_dash(p.committed.map(|o| o.to_string())),
                    or_dash(p.log_end_offset.map(|o| o.to_string())),
                    or_dash(p.lag.map(|l| l.to_string())),
                    or_dash(p.member_id),
                    or_dash(p.client_id),
                ]);
            }
            print_table(&rows)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn join(ids: &[i32]) -> String {
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

async fn topic(command: TopicCommand) -> Result<ExitCode> {
    match command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
            bootstrap,
        } => {
            let mut topic =
                NewTopic::new(name.as_str(), partitions).replication_factor(replication_factor);
            for kv in &configs {
                let (k, v) = parse_key_value(kv)?;
                topic = topic.config(k, v);
            }
            connect_admin(&bootstrap).await?.create_topic(topic).await?;
            println!("Created topic {name}.");
        }
        TopicCommand::List { bootstrap } => {
            for t in connect_admin(&bootstrap).await?.list_topics().await? {
                println!("{}", t.name);
            }
        }
        TopicCommand::Describe { name, bootstrap } => {
            let d = connect_admin(&bootstrap)
                .await?
                .describe_topic(&name)
                .await?;
            let configs = d
                .configs
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            let t = d.topic;
            let rf = t.partitions.first().map_or(0, |p| p.replicas.len());
            println!(
                "Topic: {}  PartitionCount: {}  ReplicationFactor: {rf}  Configs: {configs}",
                t.name,
                t.partitions.len()
            );
            for p in &t.partitions {
                println!(
                    "Partition: {}  Leader: {}  Replicas: {}  Isr: {}  LeaderEpoch: {}",
                    p.partition,
                    p.leader_id
                        .map_or_else(|| "none".to_owned(), |l| l.to_string()),
                    join(&p.replicas),
                    join(&p.isr),
                    p.leader_epoch
                );
            }
        }
        TopicCommand::Delete { name, bootstrap } => {
            connect_admin(&bootstrap).await?.delete_topic(&name).await?;
            println!("Deleted topic {name}.");
        }
    }
    Ok(ExitCode::SUCCESS)
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

/// Reads standard input on its own thread, one message per line (`\n` or `\r\n` removed),
/// into a bounded channel.
fn spawn_stdin_reader() -> tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>> {
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
async fn produce(args: ProduceArgs) -> Result<ExitCode> {
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
                topic: args.topic.clone(),
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

/// One record as `consume` prints it.
fn render(record: &ConsumerRecord, format: Format, base64: bool) -> Vec<u8> {
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
async fn consume(args: ConsumeArgs) -> Result<ExitCode> {
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

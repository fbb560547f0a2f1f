//! The `sluiceway` command line: `broker`, `topic create|list|describe|delete`, `produce`,
//! `consume`, `group list|describe`. Errors print one line to stderr, `error: CODE: message`, and exit non-zero.
//!
//! Until the client core lands (`core/src/client/`), the command-line client talks gRPC
//! directly to the bootstrap broker, which on a single broker is every partition's leader.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use sluiceway_core::format::{Compression, MAGIC_V1, MessageSetBuilder, for_each_record};
use sluiceway_core::limits::{
    CLI_BATCH_BYTES_MAX, CLI_BATCH_MESSAGES_MAX, FETCH_WAIT_MS_MAX, RESPONSE_BYTES_MAX,
};
use sluiceway_core::partitioner::Partitioner;
use sluiceway_core::topic::parse_key_value;
use sluiceway_core::{Error, ErrorCode, Result, TimestampMs};
use sluiceway_proto::v1;
use tonic::transport::Channel;

use crate::config::{BrokerArgs, BrokerConfig};
use crate::errors::{error_from_status, from_proto};

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
    /// Run a broker (with the embedded registry).
    Broker(BrokerArgs),
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

#[derive(Args, Debug, Clone)]
struct Bootstrap {
    /// A broker to talk to, HOST:PORT.
    #[arg(
        long,
        env = "SLUICEWAY_BOOTSTRAP",
        default_value = "127.0.0.1:9292",
        value_name = "HOST:PORT"
    )]
    bootstrap: String,
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
    /// Acknowledgement: all (every in-sync replica), 1 (the leader), 0 (none).
    #[arg(long, default_value = "all", value_parser = ["all", "-1", "1", "0"])]
    acks: String,
    /// Send every message to this partition (default: hash of the key, else round-robin).
    #[arg(long)]
    partition: Option<u32>,
    /// Split each line at the first S into key and value.
    #[arg(long, value_name = "S")]
    key_separator: Option<String>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Text,
    Json,
}

#[derive(Args, Debug)]
struct ConsumeArgs {
    topic: String,
    #[command(flatten)]
    bootstrap: Bootstrap,
    /// Read only this partition (default: all).
    #[arg(long)]
    partition: Option<u32>,
    /// Start at the first offset still in the log.
    #[arg(long, conflicts_with_all = ["offset", "from_time"])]
    from_beginning: bool,
    /// Start at this offset (in every partition read).
    #[arg(long, conflicts_with = "from_time")]
    offset: Option<i64>,
    /// Start at the first message with a timestamp at or after this time (ms since the epoch).
    #[arg(long, value_name = "UNIX_MS")]
    from_time: Option<i64>,
    /// Stop after this many messages.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Stop after this many milliseconds without a new message.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Output: text (the value, one per line) or json (one object per line).
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Print keys and values base64-encoded.
    #[arg(long)]
    base64: bool,
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

/// gRPC clients on one channel to the bootstrap broker.
#[derive(Debug, Clone)]
pub struct Client {
    pub log: v1::log_client::LogClient<Channel>,
    pub admin: v1::admin_client::AdminClient<Channel>,
    pub registry: v1::registry_client::RegistryClient<Channel>,
    pub group: v1::group_client::GroupClient<Channel>,
}

impl Client {
    pub async fn connect(address: &str) -> Result<Client> {
        let unavailable = |m: String| Error::Remote {
            code: ErrorCode::BrokerNotAvailable,
            message: m,
        };
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| Error::InvalidArgument(format!("bad address {address:?}: {e}")))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| unavailable(format!("cannot connect to {address}: {e}")))?;
        // No encoding limit on this side: the broker's decoding limit (`REQUEST_BYTES_MAX`) decides,
        // and its refusal arrives as a clean status (a client-side limit would reset the stream).
        let resp = RESPONSE_BYTES_MAX as usize;
        Ok(Client {
            log: v1::log_client::LogClient::new(channel.clone()).max_decoding_message_size(resp),
            admin: v1::admin_client::AdminClient::new(channel.clone())
                .max_decoding_message_size(resp),
            registry: v1::registry_client::RegistryClient::new(channel.clone())
                .max_decoding_message_size(resp),
            group: v1::group_client::GroupClient::new(channel).max_decoding_message_size(resp),
        })
    }

    /// The topic's metadata, or its error.
    pub async fn topic_metadata(&mut self, topic: &str) -> Result<v1::TopicMetadata> {
        let resp = self
            .registry
            .get_metadata(v1::GetMetadataRequest {
                topics: vec![topic.to_owned()],
            })
            .await
            .map_err(|s| error_from_status(&s))?
            .into_inner();
        let t = resp
            .topics
            .into_iter()
            .next()
            .ok_or_else(|| Error::Remote {
                code: ErrorCode::UnknownServerError,
                message: format!("the broker returned no metadata for {topic}"),
            })?;
        if t.error_code != 0 {
            return Err(Error::Remote {
                code: from_proto(t.error_code),
                message: t.error_message,
            });
        }
        Ok(t)
    }
}

async fn run_client(command: Command) -> Result<ExitCode> {
    match command {
        Command::Broker(_) => unreachable!("handled by main"),
        Command::Topic { command } => topic(command).await,
        Command::Produce(args) => produce(args).await,
        Command::Consume(args) => consume(args).await,
        Command::Group { command } => group(command).await,
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

async fn group(command: GroupCommand) -> Result<ExitCode> {
    let st = |s: tonic::Status| error_from_status(&s);
    match command {
        GroupCommand::List { bootstrap } => {
            let mut c = Client::connect(&bootstrap.bootstrap).await?;
            let resp = c
                .group
                .list_groups(v1::ListGroupsRequest {})
                .await
                .map_err(st)?
                .into_inner();
            let mut rows = vec![vec![
                "GROUP".to_owned(),
                "STATE".to_owned(),
                "MEMBERS".to_owned(),
                "GENERATION".to_owned(),
            ]];
            for g in resp.groups {
                rows.push(vec![
                    g.group_id,
                    g.state,
                    g.members.to_string(),
                    g.generation.to_string(),
                ]);
            }
            print_table(&rows)?;
        }
        GroupCommand::Describe { group, bootstrap } => {
            let mut c = Client::connect(&bootstrap.bootstrap).await?;
            let d = c
                .group
                .describe_group(v1::DescribeGroupRequest {
                    group_id: group.clone(),
                })
                .await
                .map_err(st)?
                .into_inner();
            if d.state == "Dead" {
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
                if d.assignor.is_empty() {
                    "-"
                } else {
                    &d.assignor
                },
                d.members.len()
            );
            // Every partition that is assigned or committed: its owner and committed offset.
            let mut rows_by_tp: BTreeMap<(String, u32), (String, String, i64)> = BTreeMap::new();
            for m in &d.members {
                for tps in &m.assignment {
                    for p in &tps.partitions {
                        rows_by_tp.insert(
                            (tps.topic.clone(), *p),
                            (m.member_id.clone(), m.client_id.clone(), -1),
                        );
                    }
                }
            }
            for o in &d.offsets {
                rows_by_tp
                    .entry((o.topic.clone(), o.partition))
                    .or_insert_with(|| ("-".to_owned(), "-".to_owned(), -1))
                    .2 = o.offset;
            }
            let latest = if rows_by_tp.is_empty() {
                Vec::new()
            } else {
                c.log
                    .list_offsets(v1::ListOffsetsRequest {
                        partitions: rows_by_tp
                            .keys()
                            .map(|(t, p)| v1::ListOffsetsPartition {
                                topic: t.clone(),
                                partition: *p,
                                spec: v1::OffsetSpec::Latest as i32,
                                timestamp_ms: 0,
                            })
                            .collect(),
                    })
                    .await
                    .map_err(st)?
                    .into_inner()
                    .results
            };
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
            for (((topic, partition), (member, client, committed)), l) in
                rows_by_tp.into_iter().zip(
                    latest
                        .into_iter()
                        .map(Some)
                        .chain(std::iter::repeat_with(|| None)),
                )
            {
                let end = l.filter(|l| l.error_code == 0).map(|l| l.offset);
                let dash = || "-".to_owned();
                rows.push(vec![
                    topic,
                    partition.to_string(),
                    if committed >= 0 {
                        committed.to_string()
                    } else {
                        dash()
                    },
                    end.map_or_else(dash, |e| e.to_string()),
                    match end {
                        Some(e) if committed >= 0 => (e - committed).max(0).to_string(),
                        _ => dash(),
                    },
                    member,
                    client,
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
    let st = |s: tonic::Status| error_from_status(&s);
    match command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
            bootstrap,
        } => {
            let mut map = BTreeMap::new();
            for kv in &configs {
                let (k, v) = parse_key_value(kv)?;
                map.insert(k, v);
            }
            let mut c = Client::connect(&bootstrap.bootstrap).await?;
            c.admin
                .create_topic(v1::CreateTopicRequest {
                    name: name.clone(),
                    partitions,
                    replication_factor,
                    configs: map.into_iter().collect(),
                })
                .await
                .map_err(st)?;
            println!("Created topic {name}.");
        }
        TopicCommand::List { bootstrap } => {
            let mut c = Client::connect(&bootstrap.bootstrap).await?;
            let resp = c
                .admin
                .list_topics(v1::ListTopicsRequest {})
                .await
                .map_err(st)?
                .into_inner();
            for t in resp.topics {
                println!("{}", t.name);
            }
        }
        TopicCommand::Describe { name, bootstrap } => {
            let mut c = Client::connect(&bootstrap.bootstrap).await?;
            let resp = c
                .admin
                .describe_topic(v1::DescribeTopicRequest { name: name.clone() })
                .await
                .map_err(st)?
                .into_inner();
            let t = resp.topic.unwrap_or_default();
            let configs: BTreeMap<_, _> = resp.configs.into_iter().collect();
            let configs = configs
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
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
                    if p.leader_id < 0 {
                        "none".to_owned()
                    } else {
                        p.leader_id.to_string()
                    },
                    join(&p.replicas),
                    join(&p.isr),
                    p.leader_epoch
                );
            }
        }
        TopicCommand::Delete { name, bootstrap } => {
            let mut c = Client::connect(&bootstrap.bootstrap).await?;
            c.admin
                .delete_topic(v1::DeleteTopicRequest { name: name.clone() })
                .await
                .map_err(st)?;
            println!("Deleted topic {name}.");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn now_ms() -> TimestampMs {
    TimestampMs(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
    )
}

async fn produce(args: ProduceArgs) -> Result<ExitCode> {
    let acks = match args.acks.as_str() {
        "all" | "-1" => -1,
        "1" => 1,
        _ => 0,
    };
    let mut client = Client::connect(&args.bootstrap.bootstrap).await?;
    let meta = client.topic_metadata(&args.topic).await?;
    let partitions = meta.partitions.len() as u32;
    if let Some(p) = args.partition
        && p >= partitions
    {
        return Err(Error::Remote {
            code: ErrorCode::UnknownTopicOrPartition,
            message: format!(
                "topic {} has {partitions} partitions; there is no partition {p}",
                args.topic
            ),
        });
    }
    // Standard input is read on its own thread; the sender batches whatever lines are already
    // waiting (no linger), so interactive use sends each line at once and piped input goes in
    // large batches.
    let (tx, mut rx) =
        tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(CLI_BATCH_MESSAGES_MAX);
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
    let partitioner = Partitioner::new();
    let sep = args.key_separator.as_deref().map(str::as_bytes);
    let mut line_no = 0u64;
    while let Some(first) = rx.recv().await {
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
        let ts = now_ms();
        let mut builders: BTreeMap<u32, MessageSetBuilder> = BTreeMap::new();
        for line in &lines {
            line_no += 1;
            let (key, value) = match sep {
                None => (None, line.as_slice()),
                Some(sep) => match line.windows(sep.len()).position(|w| w == sep) {
                    Some(i) => (Some(&line[..i]), &line[i + sep.len()..]),
                    None => {
                        return Err(Error::InvalidArgument(format!(
                            "line {line_no} has no key separator {:?}",
                            String::from_utf8_lossy(sep)
                        )));
                    }
                },
            };
            let p = args
                .partition
                .unwrap_or_else(|| partitioner.partition(key, partitions));
            builders
                .entry(p)
                .or_insert_with(|| MessageSetBuilder::new(MAGIC_V1, Compression::None))
                .push(ts, key, Some(value));
        }
        let mut request = v1::ProduceRequest {
            acks,
            timeout_ms: 0,
            partitions: Vec::with_capacity(builders.len()),
        };
        for (p, b) in builders {
            request.partitions.push(v1::ProducePartition {
                topic: args.topic.clone(),
                partition: p,
                message_set: b.finish()?,
                leader_epoch: None,
            });
        }
        let resp = client
            .log
            .produce(request)
            .await
            .map_err(|s| error_from_status(&s))?
            .into_inner();
        for r in resp.results {
            if r.error_code != 0 {
                return Err(Error::Remote {
                    code: from_proto(r.error_code),
                    message: format!(
                        "{} (partition {}-{})",
                        r.error_message, r.topic, r.partition
                    ),
                });
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn list_offset(
    client: &mut Client,
    topic: &str,
    partition: u32,
    spec: v1::OffsetSpec,
    ts: i64,
) -> Result<i64> {
    let resp = client
        .log
        .list_offsets(v1::ListOffsetsRequest {
            partitions: vec![v1::ListOffsetsPartition {
                topic: topic.to_owned(),
                partition,
                spec: spec as i32,
                timestamp_ms: ts,
            }],
        })
        .await
        .map_err(|s| error_from_status(&s))?
        .into_inner();
    let r = resp
        .results
        .into_iter()
        .next()
        .ok_or_else(|| Error::Remote {
            code: ErrorCode::UnknownServerError,
            message: "empty list-offsets answer".into(),
        })?;
    if r.error_code != 0 {
        return Err(Error::Remote {
            code: from_proto(r.error_code),
            message: r.error_message,
        });
    }
    Ok(r.offset)
}

async fn consume(args: ConsumeArgs) -> Result<ExitCode> {
    let mut client = Client::connect(&args.bootstrap.bootstrap).await?;
    let meta = client.topic_metadata(&args.topic).await?;
    let count = meta.partitions.len() as u32;
    let partitions: Vec<u32> = match args.partition {
        Some(p) if p >= count => {
            return Err(Error::Remote {
                code: ErrorCode::UnknownTopicOrPartition,
                message: format!(
                    "topic {} has {count} partitions; there is no partition {p}",
                    args.topic
                ),
            });
        }
        Some(p) => vec![p],
        None => (0..count).collect(),
    };
    let mut positions = Vec::with_capacity(partitions.len());
    for &p in &partitions {
        let offset = if let Some(o) = args.offset {
            o
        } else if args.from_beginning {
            list_offset(&mut client, &args.topic, p, v1::OffsetSpec::Earliest, 0).await?
        } else if let Some(ts) = args.from_time {
            match list_offset(&mut client, &args.topic, p, v1::OffsetSpec::Timestamp, ts).await? {
                -1 => list_offset(&mut client, &args.topic, p, v1::OffsetSpec::Latest, 0).await?,
                o => o,
            }
        } else {
            list_offset(&mut client, &args.topic, p, v1::OffsetSpec::Latest, 0).await?
        };
        positions.push((p, offset));
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut printed = 0u64;
    let mut last_message = Instant::now();
    let mut scratch = Vec::new();
    let b64 = base64::engine::general_purpose::STANDARD;
    if args.max_messages == Some(0) {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        let wait_ms = match args.timeout_ms {
            Some(t) => {
                let waited = last_message.elapsed().as_millis() as u64;
                if waited >= t {
                    break;
                }
                (t - waited).min(u64::from(FETCH_WAIT_MS_MAX))
            }
            None => 5_000,
        };
        let request = v1::FetchRequest {
            max_wait_ms: wait_ms as u32,
            min_bytes: 1,
            max_bytes: 0,
            partitions: positions
                .iter()
                .map(|&(p, o)| v1::FetchPartition {
                    topic: args.topic.clone(),
                    partition: p,
                    fetch_offset: o,
                    max_bytes: 0,
                    leader_epoch: None,
                })
                .collect(),
        };
        let resp = client
            .log
            .fetch(request)
            .await
            .map_err(|s| error_from_status(&s))?
            .into_inner();
        for (i, r) in resp.results.into_iter().enumerate() {
            if r.error_code != 0 {
                out.flush()
                    .map_err(|e| Error::io("write", "standard output", e))?;
                return Err(Error::Remote {
                    code: from_proto(r.error_code),
                    message: format!(
                        "{} (partition {}-{})",
                        r.error_message, r.topic, r.partition
                    ),
                });
            }
            let (partition, ref mut position) = positions[i];
            let mut write_err = None;
            let mut done = false;
            for_each_record(&r.message_set, &mut scratch, |rec| {
                if done || (rec.offset.0 as i64) < *position {
                    return;
                }
                *position = rec.offset.0 as i64 + 1;
                let line = match args.format {
                    Format::Json => {
                        let enc = |b: Option<&[u8]>| match b {
                            None => serde_json::Value::Null,
                            Some(b) if args.base64 => serde_json::Value::String(b64.encode(b)),
                            Some(b) => {
                                serde_json::Value::String(String::from_utf8_lossy(b).into_owned())
                            }
                        };
                        // Written by hand to keep the documented field order.
                        let s = format!(
                            "{{\"topic\":{},\"partition\":{partition},\"offset\":{},\"timestamp\":{},\"key\":{},\"value\":{}}}\n",
                            serde_json::Value::String(args.topic.clone()),
                            rec.offset.0,
                            rec.timestamp.0,
                            enc(rec.key),
                            enc(rec.value)
                        );
                        s.into_bytes()
                    }
                    Format::Text => {
                        let v = rec.value.unwrap_or_default();
                        let mut l = if args.base64 {
                            b64.encode(v).into_bytes()
                        } else {
                            v.to_vec()
                        };
                        l.push(b'\n');
                        l
                    }
                };
                if let Err(e) = out.write_all(&line) {
                    write_err = Some(e);
                    done = true;
                    return;
                }
                printed += 1;
                last_message = Instant::now();
                if args.max_messages.is_some_and(|m| printed >= m) {
                    done = true;
                }
            })?;
            if let Some(e) = write_err {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(ExitCode::SUCCESS);
                }
                return Err(Error::io("write", "standard output", e));
            }
            if done {
                out.flush()
                    .map_err(|e| Error::io("write", "standard output", e))?;
                return Ok(ExitCode::SUCCESS);
            }
        }
        out.flush()
            .map_err(|e| Error::io("write", "standard output", e))?;
        // Only the first partition of a fetch may return an entry above the byte budget:
        // rotate the order so that no partition waits behind the others for long.
        positions.rotate_left(1);
    }
    out.flush()
        .map_err(|e| Error::io("write", "standard output", e))?;
    Ok(ExitCode::SUCCESS)
}

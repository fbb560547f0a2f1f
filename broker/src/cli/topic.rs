//! `sluiceway topic create|list|describe|delete` over the admin client.

use std::process::ExitCode;

use clap::Subcommand;
use sluiceway_core::Result;
use sluiceway_core::client::NewTopic;
use sluiceway_core::topic::parse_key_value;

use super::{Bootstrap, connect_admin, join};

#[derive(Subcommand, Debug)]
pub(super) enum TopicCommand {
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

pub(super) async fn topic(command: TopicCommand) -> Result<ExitCode> {
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

//! `sluiceway group list|describe`: consumer groups and their lag over the admin client.

use std::process::ExitCode;

use clap::Subcommand;
use sluiceway_core::client::GroupState;
use sluiceway_core::{Error, ErrorCode, Result};

use super::{Bootstrap, connect_admin, print_table};

#[derive(Subcommand, Debug)]
pub(super) enum GroupCommand {
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

pub(super) async fn group(command: GroupCommand) -> Result<ExitCode> {
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

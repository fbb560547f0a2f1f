//! `sluiceway acl add|remove|list`: ACL bindings over the admin client.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use sluiceway_core::acl::{
    AclBinding, AclEntry, AclOperation, AclPermission, CLUSTER_RESOURCE_NAME, PatternType,
    ResourcePattern, ResourceType,
};
use sluiceway_core::{Error, Result};

use super::{Bootstrap, connect_admin, print_table};

#[derive(Subcommand, Debug)]
pub(super) enum AclCommand {
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
pub(super) struct AclArgs {
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

/// `sluiceway acl add|remove|list` over the admin client.
pub(super) async fn acl(command: AclCommand) -> Result<ExitCode> {
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

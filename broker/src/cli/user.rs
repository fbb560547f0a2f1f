//! `sluiceway user add|delete|list`: SCRAM credentials over the admin client.

use std::io::BufRead;
use std::process::ExitCode;

use clap::Subcommand;
use sluiceway_core::{Error, Result};

use super::{Bootstrap, connect_admin, print_table};

#[derive(Subcommand, Debug)]
pub(super) enum UserCommand {
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

/// `sluiceway user add|delete|list` over the admin client.
pub(super) async fn user(command: UserCommand) -> Result<ExitCode> {
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

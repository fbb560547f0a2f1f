//! `sluiceway broker`: runs a broker until SIGTERM / SIGINT (`crate::server`).

use std::process::ExitCode;

use sluiceway_core::{Error, Result};

use crate::config::{BrokerArgs, BrokerConfig};

pub(super) fn run_broker(args: &BrokerArgs) -> Result<ExitCode> {
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

//! FindCoordinator: which broker coordinates a group (see [`crate::groups::coordination`]), and
//! the creation of `__consumer_offsets` in a cluster on first use.

use std::collections::BTreeMap;

use sluiceway_core::group::offsets::{OFFSETS_TOPIC, partition_for_group};
use sluiceway_core::limits::OFFSETS_TOPIC_PARTITIONS_DEFAULT;
use sluiceway_core::registry::{BrokerId, NewTopic};
use sluiceway_core::topic::{RETENTION_BYTES, RETENTION_MS};
use sluiceway_core::{Error, ErrorCode, Result};
use tracing::info;

use super::Broker;
use crate::errors::blocking;

impl Broker {
    /// Where `group`'s coordinator is: (broker id, address). See [`crate::groups::coordination`].
    pub async fn find_coordinator(&self, group: &str) -> Result<(BrokerId, String)> {
        let me = self.config.broker_id;
        let address_of = |id: BrokerId| -> Result<String> {
            self.registry
                .brokers()?
                .into_iter()
                .find(|b| b.id == id && b.alive)
                .map(|b| b.address)
                .ok_or_else(|| {
                    Error::CoordinatorNotAvailable(format!(
                        "the coordinator of group {group:?}, broker {id}, is not alive"
                    ))
                })
        };
        if !self.registry.is_cluster() {
            return Ok((me, address_of(me)?));
        }
        let info = match self.registry.topic(OFFSETS_TOPIC)? {
            Some(info) => info,
            None => self.create_offsets_topic().await?,
        };
        let p = partition_for_group(group, info.partitions.len() as u32);
        let leader = info.partitions[p as usize].leader.ok_or_else(|| {
            Error::CoordinatorNotAvailable(format!(
                "{OFFSETS_TOPIC}-{p}, which holds group {group:?}, has no leader now"
            ))
        })?;
        Ok((leader, address_of(leader)?))
    }

    /// Creates `__consumer_offsets` in the registry (another broker may win the race: then its
    /// topic is the one). COORDINATOR_NOT_AVAILABLE while fewer brokers than its replication
    /// factor are alive.
    async fn create_offsets_topic(&self) -> Result<sluiceway_core::registry::TopicInfo> {
        let rf = self.config.offsets_topic_replication_factor;
        let live = self.registry.brokers()?.iter().filter(|b| b.alive).count();
        if live < rf as usize {
            return Err(Error::CoordinatorNotAvailable(format!(
                "{OFFSETS_TOPIC} needs {rf} live brokers (offsets_topic_replication_factor) and {live} are alive"
            )));
        }
        let new = NewTopic {
            name: OFFSETS_TOPIC.to_owned(),
            partitions: OFFSETS_TOPIC_PARTITIONS_DEFAULT,
            replication_factor: rf,
            // Retention would drop live commits: compaction by snapshot bounds the log instead.
            configs: BTreeMap::from([
                (RETENTION_MS.to_owned(), "-1".to_owned()),
                (RETENTION_BYTES.to_owned(), "-1".to_owned()),
            ]),
        };
        let registry = self.registry.clone();
        match blocking(move || registry.create_topic(&new)).await {
            Ok(info) => {
                info!(
                    partitions = info.partitions.len(),
                    replication_factor = rf,
                    "created {OFFSETS_TOPIC}"
                );
                Ok(info)
            }
            Err(e) if e.code() == ErrorCode::TopicAlreadyExists => {
                self.registry.topic(OFFSETS_TOPIC)?.ok_or_else(|| {
                    Error::CoordinatorNotAvailable(format!("{OFFSETS_TOPIC} is being created"))
                })
            }
            Err(e) => Err(Error::CoordinatorNotAvailable(format!(
                "cannot create {OFFSETS_TOPIC}: {e}"
            ))),
        }
    }
}

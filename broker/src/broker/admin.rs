//! Topic administration (CreateTopic, DeleteTopic) and metadata (ListBrokers, GetMetadata,
//! ListTopics, DescribeTopic) as plain functions the gRPC service wraps: authorization is the
//! service's; a filter says which topics the caller may see.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluiceway_core::limits::{ADMIN_APPLY_WAIT_MS, PARTITIONS_PER_TOPIC_MAX};
use sluiceway_core::registry::{NewTopic, TopicInfo};
use sluiceway_core::storage::PartitionLog;
use sluiceway_core::topic::{TopicConfig, validate_topic_name};
use sluiceway_core::{Error, ErrorCode, Result};
use sluiceway_proto::v1;
use tracing::{info, warn};

use super::Broker;
use crate::errors::{blocking, status, status_from_error, to_proto};
use crate::replication::{Partition, Topic, open_partition, remove_topic_data};
use crate::topics::{internal_topic_error, is_internal_topic};

impl Broker {
    pub async fn create_topic(&self, req: v1::CreateTopicRequest) -> Result<TopicInfo> {
        validate_topic_name(&req.name)?;
        if is_internal_topic(&req.name) {
            return Err(internal_topic_error(&req.name));
        }
        let configs: BTreeMap<String, String> = req.configs.into_iter().collect();
        let config = TopicConfig::parse(self.topic_defaults(), &configs)?;
        let new = NewTopic {
            name: req.name,
            partitions: req.partitions,
            replication_factor: if req.replication_factor == 0 {
                self.config.default_replication_factor
            } else {
                req.replication_factor
            },
            configs,
        };
        if self.registry.is_cluster() {
            // The registry is the one place topics are created; the role loop opens the logs
            // (here and on the other replicas). Waiting for it here means the creator's next
            // request to this broker finds the topic.
            let registry = self.registry.clone();
            let info = blocking(move || registry.create_topic(&new)).await?;
            info!(topic = %info.name, partitions = info.partitions.len(), "created topic");
            let me = self.config.broker_id;
            let mine = info
                .partitions
                .iter()
                .filter(|p| p.replicas.contains(&me))
                .count();
            let name = info.name.clone();
            self.wait_applied(|b| {
                b.has_partition(&name, 0)
                    && b.replicas.topic(&name).map_or(0, |t| t.partitions.len()) >= mine
            })
            .await;
            return Ok(info);
        }
        let _admin = self.admin_lock.lock().await;
        let registry = self.registry.clone();
        let broker_config = self.config.clone();
        let clock = self.replicas.clock.clone();
        let (info, topic) = blocking(move || {
            // A directory left by a deletion that crashed half-way must not become this new
            // topic's data: the registry says the topic does not exist, so it is an orphan.
            for p in 0..new.partitions.min(PARTITIONS_PER_TOPIC_MAX) {
                let dir = broker_config
                    .data_dir
                    .join(PartitionLog::dir_name(&new.name, p));
                if dir.exists() && registry.topic(&new.name)?.is_none() {
                    warn!(dir = %dir.display(), "removing an orphaned partition directory");
                    std::fs::remove_dir_all(&dir)
                        .map_err(|e| Error::io("remove orphaned partition directory", &dir, e))?;
                }
            }
            let info = registry.create_topic(&new)?;
            let opened = info
                .partitions
                .iter()
                .map(|p| {
                    open_partition(
                        &broker_config.data_dir,
                        &clock,
                        &info.name,
                        p.partition,
                        &config,
                    )
                    .map(|part| (p.partition, part))
                })
                .collect::<Result<BTreeMap<u32, Arc<Partition>>>>();
            match opened {
                Ok(partitions) => Ok((
                    info.clone(),
                    Topic {
                        config,
                        partition_count: info.partitions.len() as u32,
                        partitions,
                    },
                )),
                Err(e) => {
                    // Undo the registration so the topic can be created again once fixed.
                    let _ = registry.delete_topic(&info.name);
                    Err(e)
                }
            }
        })
        .await?;
        for p in &info.partitions {
            if let Some(part) = topic.partitions.get(&p.partition) {
                self.replicas.apply_role(part, p);
            }
        }
        info!(topic = %info.name, partitions = info.partitions.len(), "created topic");
        self.replicas.insert_topic(&info.name, topic);
        self.groups
            .topics_changed(self.replicas.topic_partition_counts());
        Ok(info)
    }

    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        if is_internal_topic(name) {
            return Err(internal_topic_error(name));
        }
        if self.registry.is_cluster() {
            let registry = self.registry.clone();
            let n = name.to_owned();
            blocking(move || registry.delete_topic(&n)).await?;
            info!(topic = %name, "deleted topic");
            // The role loop deletes the data (here and on the other replicas).
            // Each coordinator tombstones the topic's commits when its role pass sees the
            // deletion (roles.rs).
            self.wait_applied(|b| !b.has_partition(name, 0) && b.replicas.topic(name).is_none())
                .await;
            return Ok(());
        }
        let _admin = self.admin_lock.lock().await;
        let registry = self.registry.clone();
        let n = name.to_owned();
        blocking(move || registry.delete_topic(&n)).await?;
        let removed = self.replicas.remove_topic(name);
        if let Some(topic) = removed {
            blocking(move || remove_topic_data(&topic)).await?;
            self.groups
                .topics_changed(self.replicas.topic_partition_counts());
            self.groups.forget_topic(name).await;
        }
        info!(topic = %name, "deleted topic");
        Ok(())
    }

    /// Waits (at most `ADMIN_APPLY_WAIT_MS`) until the role loop's state satisfies `done`.
    async fn wait_applied(&self, done: impl Fn(&Broker) -> bool) {
        let mut applied = self.applied.subscribe();
        let deadline = Instant::now() + Duration::from_millis(ADMIN_APPLY_WAIT_MS);
        while !done(self) {
            tokio::select! {
                r = applied.changed() => if r.is_err() { return },
                () = tokio::time::sleep_until(deadline.into()) => {
                    warn!("the registry change was not applied on this broker within {ADMIN_APPLY_WAIT_MS} ms");
                    return;
                }
            }
        }
    }

    /// The registry's view of a topic, as the proto's metadata.
    pub fn topic_metadata(&self, info: &TopicInfo) -> v1::TopicMetadata {
        v1::TopicMetadata {
            name: info.name.clone(),
            error_code: 0,
            error_message: String::new(),
            partitions: info
                .partitions
                .iter()
                .map(|p| v1::PartitionMetadata {
                    partition: p.partition,
                    error_code: if p.leader.is_some() {
                        0
                    } else {
                        to_proto(ErrorCode::LeaderNotAvailable)
                    },
                    leader_id: p.leader.map_or(-1, |b| b.0 as i32),
                    replicas: p.replicas.iter().map(|b| b.0 as i32).collect(),
                    isr: p.isr.iter().map(|b| b.0 as i32).collect(),
                    leader_epoch: p.leader_epoch as i32,
                })
                .collect(),
        }
    }

    /// Every registered broker.
    pub fn brokers(&self) -> Result<Vec<v1::BrokerInfo>> {
        Ok(self
            .registry
            .brokers()?
            .into_iter()
            .map(|i| v1::BrokerInfo {
                broker_id: i.id.0 as i32,
                address: i.address,
                alive: i.alive,
            })
            .collect())
    }

    /// The controller's broker id, -1 when there is none (or no controller, on one broker).
    pub fn controller_id(&self) -> i32 {
        self.registry.controller().map_or(-1, |c| c.0 as i32)
    }

    /// The client topics in the registry that `visible` lets through, as listings.
    pub fn list_topics(&self, visible: impl Fn(&str) -> bool) -> Result<Vec<v1::TopicListing>> {
        Ok(self
            .registry
            .topics()?
            .into_iter()
            .filter(|t| !is_internal_topic(&t.name) && visible(&t.name))
            .map(|t| v1::TopicListing {
                partitions: t.partitions.len() as u32,
                replication_factor: t.replication_factor,
                name: t.name,
            })
            .collect())
    }

    /// GetMetadata: every client topic `visible` lets through when `topics` is empty, else the
    /// named ones, each answered on its own: an invalid or unknown name gets an error entry
    /// naming why, a name `visible` refuses TOPIC_AUTHORIZATION_FAILED with its message.
    pub fn metadata(
        &self,
        topics: &[String],
        visible: impl Fn(&str) -> std::result::Result<(), String>,
    ) -> Result<v1::GetMetadataResponse> {
        let topics = if topics.is_empty() {
            self.registry
                .topics()?
                .iter()
                .filter(|t| !is_internal_topic(&t.name) && visible(&t.name).is_ok())
                .map(|t| self.topic_metadata(t))
                .collect()
        } else {
            let mut out = Vec::with_capacity(topics.len());
            for name in topics {
                let meta = match validate_topic_name(name) {
                    Err(e) => error_topic(name, e.code(), e.to_string()),
                    Ok(()) => match visible(name) {
                        Err(message) => {
                            error_topic(name, ErrorCode::TopicAuthorizationFailed, message)
                        }
                        Ok(()) => match self.registry.topic(name)? {
                            Some(info) => self.topic_metadata(&info),
                            None => error_topic(
                                name,
                                ErrorCode::UnknownTopicOrPartition,
                                format!("topic {name} does not exist"),
                            ),
                        },
                    },
                };
                out.push(meta);
            }
            out
        };
        Ok(v1::GetMetadataResponse {
            brokers: self.brokers()?,
            topics,
            controller_id: self.controller_id(),
        })
    }

    /// DescribeTopic: the topic's metadata, its configs as given and as in effect (the name
    /// was validated by the caller, before its authorization check).
    pub fn describe_topic(
        &self,
        name: &str,
    ) -> std::result::Result<v1::DescribeTopicResponse, tonic::Status> {
        let info: TopicInfo = self
            .registry
            .topic(name)
            .map_err(|e| status_from_error(&e))?
            .ok_or_else(|| {
                status(
                    ErrorCode::UnknownTopicOrPartition,
                    format!("topic {name} does not exist"),
                )
            })?;
        let effective = TopicConfig::parse(self.topic_defaults(), &info.configs)
            .map_err(|e| status_from_error(&e))?;
        Ok(v1::DescribeTopicResponse {
            topic: Some(self.topic_metadata(&info)),
            configs: info.configs.clone().into_iter().collect(),
            effective_configs: effective.to_map().into_iter().collect(),
        })
    }
}

fn error_topic(name: &str, code: ErrorCode, message: String) -> v1::TopicMetadata {
    v1::TopicMetadata {
        name: name.to_owned(),
        error_code: to_proto(code),
        error_message: message,
        partitions: Vec::new(),
    }
}

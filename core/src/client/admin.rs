//! The admin client: topic administration (`Admin` service), offset lookups (`Log.ListOffsets`
//! at each partition's leader), the broker list (`Registry.ListBrokers`) and consumer groups
//! (`Group.ListGroups` on every broker, `Group.DescribeGroup` at the group's coordinator).
//!
//! Topic requests go to any broker, round-robin with fail-over on connection errors (every
//! broker serves the `Admin` service and forwards to the registry). Errors keep the broker's
//! code and message (`Error::Remote`), e.g. TOPIC_ALREADY_EXISTS, INVALID_CONFIG naming the key.

use std::collections::BTreeMap;
use std::time::Duration;

use sluiceway_proto::v1;
use sluiceway_proto::v1::admin_client::AdminClient as GrpcAdmin;

use super::cluster::{BrokerInfo, Cluster, ListedOffset, OffsetSpec, coordinator_moved};
use super::config::AdminConfig;
use super::runtime::Home;
use crate::error::{Error, Result};
use crate::group::TopicPartition;
use crate::wire::{TopicMetadata, error_from_status as status_to_error};

/// A topic to create.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    pub partitions: u32,
    /// 0 means the broker's default.
    pub replication_factor: u32,
    /// Topic configuration overrides (Kafka names: `retention.ms`, `segment.bytes`, …).
    pub configs: BTreeMap<String, String>,
}

impl NewTopic {
    pub fn new(name: impl Into<String>, partitions: u32) -> NewTopic {
        NewTopic {
            name: name.into(),
            partitions,
            ..NewTopic::default()
        }
    }
    /// Sets the replication factor.
    pub fn replication_factor(mut self, n: u32) -> NewTopic {
        self.replication_factor = n;
        self
    }
    /// Adds one configuration override.
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> NewTopic {
        self.configs.insert(key.into(), value.into());
        self
    }
}

/// A topic in a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicListing {
    pub name: String,
    pub partitions: u32,
    pub replication_factor: u32,
}

/// A topic's placement and configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicDescription {
    pub topic: TopicMetadata,
    /// Overrides given at creation.
    pub configs: BTreeMap<String, String>,
    /// Every key with its effective value.
    pub effective_configs: BTreeMap<String, String>,
}

/// The admin client. Every method takes `&self`.
#[derive(Debug)]
pub struct Admin {
    cluster: Cluster,
}

impl Admin {
    /// Validates `config` and checks that some bootstrap broker answers.
    pub async fn new(config: AdminConfig) -> Result<Admin> {
        config.validate()?;
        let cluster = Cluster::new(config.common, Home::new("admin")?);
        cluster.refresh(&[]).await?;
        Ok(Admin { cluster })
    }

    async fn call<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn(GrpcAdmin<tonic::transport::Channel>, Duration) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, tonic::Status>>,
    {
        let timeout = self.cluster.config.request_timeout;
        self.cluster
            .any_broker(|ch, _| {
                let fut = f(GrpcAdmin::new(ch), timeout);
                async move { fut.await.map_err(|s| status_to_error(&s)) }
            })
            .await
    }

    /// Creates a topic; returns its placement.
    pub async fn create_topic(&self, topic: NewTopic) -> Result<TopicMetadata> {
        let req = v1::CreateTopicRequest {
            name: topic.name,
            partitions: topic.partitions,
            replication_factor: topic.replication_factor,
            configs: topic.configs.into_iter().collect(),
        };
        let resp = self
            .call(|mut c, t| {
                let mut r = tonic::Request::new(req.clone());
                r.set_timeout(t);
                async move { c.create_topic(r).await.map(|r| r.into_inner()) }
            })
            .await?;
        // The new topic must be visible to this client's next metadata lookups.
        self.cluster.request_refresh();
        resp.topic
            .map(TopicMetadata::from_proto)
            .ok_or_else(|| Error::InvalidRequest("CreateTopic answered without the topic".into()))
    }

    /// Deletes a topic and its data.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let req = v1::DeleteTopicRequest {
            name: name.to_owned(),
        };
        self.call(|mut c, t| {
            let mut r = tonic::Request::new(req.clone());
            r.set_timeout(t);
            async move { c.delete_topic(r).await.map(|_| ()) }
        })
        .await?;
        self.cluster.request_refresh();
        Ok(())
    }

    /// Every topic, sorted by name.
    pub async fn list_topics(&self) -> Result<Vec<TopicListing>> {
        let resp = self
            .call(|mut c, t| {
                let mut r = tonic::Request::new(v1::ListTopicsRequest {});
                r.set_timeout(t);
                async move { c.list_topics(r).await.map(|r| r.into_inner()) }
            })
            .await?;
        Ok(resp
            .topics
            .into_iter()
            .map(|t| TopicListing {
                name: t.name,
                partitions: t.partitions,
                replication_factor: t.replication_factor,
            })
            .collect())
    }

    /// One topic's partitions, leaders, replicas and configuration.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        let req = v1::DescribeTopicRequest {
            name: name.to_owned(),
        };
        let resp = self
            .call(|mut c, t| {
                let mut r = tonic::Request::new(req.clone());
                r.set_timeout(t);
                async move { c.describe_topic(r).await.map(|r| r.into_inner()) }
            })
            .await?;
        let topic = resp.topic.map(TopicMetadata::from_proto).ok_or_else(|| {
            Error::InvalidRequest("DescribeTopic answered without the topic".into())
        })?;
        Ok(TopicDescription {
            topic,
            configs: resp.configs.into_iter().collect(),
            effective_configs: resp.effective_configs.into_iter().collect(),
        })
    }

    /// Looks offsets up at each partition's leader: one result per request entry, in order.
    pub async fn list_offsets(
        &self,
        specs: &[(TopicPartition, OffsetSpec)],
    ) -> Vec<Result<ListedOffset>> {
        self.cluster.list_offsets(specs).await
    }

    /// Every broker the registry knows, and the controller's id (−1 when none).
    pub async fn list_brokers(&self) -> Result<(Vec<BrokerInfo>, i32)> {
        self.cluster.list_brokers().await
    }

    /// Every group of the cluster, sorted by id. A broker lists the groups it coordinates, so
    /// this asks every live broker and merges the answers (as Kafka's admin client does); a
    /// broker that cannot be reached fails the call, so the listing is never silently partial.
    pub async fn list_groups(&self) -> Result<Vec<v1::GroupListing>> {
        let (brokers, _) = self.cluster.list_brokers().await?;
        let mut out = BTreeMap::new();
        for b in brokers.iter().filter(|b| b.alive) {
            let mut c = self.cluster.group_client(&b.address)?;
            let r = c
                .list_groups(
                    self.cluster
                        .request(v1::ListGroupsRequest {}, Duration::ZERO),
                )
                .await
                .map_err(|s| status_to_error(&s))?
                .into_inner();
            for g in r.groups {
                out.insert(g.group_id.clone(), g);
            }
        }
        Ok(out.into_values().collect())
    }

    /// One group's state, members and committed offsets, from its coordinator (found again
    /// once if it moved).
    pub async fn describe_group(&self, group: &str) -> Result<v1::DescribeGroupResponse> {
        let req = v1::DescribeGroupRequest {
            group_id: group.to_owned(),
        };
        let mut attempt = 0;
        loop {
            let r = async {
                let mut c = self.cluster.coordinator_client(group).await?;
                c.describe_group(self.cluster.request(req.clone(), Duration::ZERO))
                    .await
                    .map(|r| r.into_inner())
                    .map_err(|s| status_to_error(&s))
            }
            .await;
            match r {
                Err(e) if coordinator_moved(&e) && attempt == 0 => {
                    attempt += 1;
                    self.cluster.coordinator_failed(group);
                }
                other => return other,
            }
        }
    }
}

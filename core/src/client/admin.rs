//! The admin client: topic administration (`Admin` service), offset lookups (`Log.ListOffsets`
//! at each partition's leader), the broker list (`Registry.ListBrokers`) and consumer groups
//! (`Group.ListGroups` on every broker, `Group.DescribeGroup` at the group's coordinator).
//!
//! Topic requests go to any broker, round-robin with fail-over on connection errors (every
//! broker serves the `Admin` service and forwards to the registry). Errors keep the broker's
//! code and message (`Error::Remote`), e.g. TOPIC_ALREADY_EXISTS, INVALID_CONFIG naming the key.
//!
//! **API boundary:** every public signature here uses plain Rust types (named fields,
//! [`Offset`] for offsets with `None` where the wire says −1, [`ErrorCode`] for codes), never
//! prost or tonic types: language bindings expose `Admin` as it is.

use std::collections::BTreeMap;
use std::time::Duration;

use sluiceway_proto::v1;
use sluiceway_proto::v1::admin_client::AdminClient as GrpcAdmin;

use super::cluster::{
    BrokerInfo, Cluster, ListedOffset, OffsetSpec, clone_error, coordinator_moved,
};
use super::config::AdminConfig;
use super::runtime::Home;
use crate::acl::AclBinding;
use crate::error::{Error, ErrorCode, Result};
use crate::group::{MemberDescription, TopicPartition};
use crate::types::{Offset, TimestampMs};
use crate::wire::{
    TopicMetadata, acl_from_proto, acl_to_proto, code_from_proto, error_from_status,
};

/// A user with a stored credential (never its secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserListing {
    pub name: String,
    pub mechanism: String,
    pub iterations: u32,
}

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

/// The brokers of the cluster and its controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterDescription {
    /// Every broker the registry knows, alive or not.
    pub brokers: Vec<BrokerInfo>,
    /// The broker acting as controller; `None` while there is none.
    pub controller_id: Option<i32>,
}

/// A consumer group's state as its coordinator reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupState {
    /// No members: only committed offsets, or every member left.
    Empty,
    /// Waiting for the members to (re)join before the next generation.
    PreparingRebalance,
    /// Every member has its assignment for the current generation.
    Stable,
    /// The coordinator knows nothing of the group (no members, no committed offsets).
    Dead,
    /// A state this client does not know (a newer broker).
    Unknown,
}

impl GroupState {
    /// The wire name ("Empty", "PreparingRebalance", "Stable", "Dead"), "Unknown" otherwise.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
            GroupState::Unknown => "Unknown",
        }
    }

    fn from_wire(name: &str) -> GroupState {
        match name {
            "Empty" => GroupState::Empty,
            "PreparingRebalance" => GroupState::PreparingRebalance,
            "Stable" => GroupState::Stable,
            "Dead" => GroupState::Dead,
            _ => GroupState::Unknown,
        }
    }
}

impl std::fmt::Display for GroupState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A group in a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub state: GroupState,
    /// How many members it has.
    pub members: u32,
    /// Its current generation (0 for a group that only has committed offsets).
    pub generation: i32,
}

/// A group's committed offset for one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedOffset {
    pub partition: TopicPartition,
    /// The offset of the next message the group will read; `None` when it committed none.
    pub offset: Option<Offset>,
    /// The metadata committed with it.
    pub metadata: String,
    /// When it was committed (the coordinator's clock); `None` when it committed none.
    pub commit_timestamp: Option<TimestampMs>,
    /// `ErrorCode::None`, or why this partition has no offset.
    pub error: ErrorCode,
}

/// One group: state, members with their partitions, committed offsets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: GroupState,
    /// The current generation.
    pub generation: i32,
    /// The group's partition assignor ("range", "roundrobin"); `None` while it has no members.
    pub assignor: Option<String>,
    /// The members, sorted by id, each with its topics and its partitions in the current
    /// generation (empty while a rebalance has not assigned it yet).
    pub members: Vec<MemberDescription>,
    /// Every committed offset of the group, sorted by partition.
    pub offsets: Vec<CommittedOffset>,
}

/// One partition of a group with its consumer lag (what `kafka-consumer-groups --describe`
/// shows): every partition that is assigned to a member or has a committed offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupPartitionLag {
    pub partition: TopicPartition,
    /// The member that owns it in the current generation; `None` when no member does.
    pub member_id: Option<String>,
    /// That member's `client.id`.
    pub client_id: Option<String>,
    /// The group's committed offset; `None` when it committed none.
    pub committed: Option<Offset>,
    /// The partition's log end (high watermark) at its leader; `None` when the lookup failed.
    pub log_end_offset: Option<Offset>,
    /// `log_end_offset − committed` (0 when the commit is ahead); `None` when either is unknown.
    pub lag: Option<u64>,
}

/// A wire offset where −1 (or any negative number) means "none".
fn wire_offset(o: i64) -> Option<Offset> {
    u64::try_from(o).ok().map(Offset)
}

/// The partitions of a wire `TopicPartitions` list, in its order.
fn partitions_from_wire(list: Vec<v1::TopicPartitions>) -> Vec<TopicPartition> {
    list.into_iter()
        .flat_map(|tps| {
            let topic = tps.topic;
            tps.partitions
                .into_iter()
                .map(move |p| TopicPartition::new(topic.clone(), p))
        })
        .collect()
}

impl GroupDescription {
    fn from_wire(d: v1::DescribeGroupResponse) -> GroupDescription {
        GroupDescription {
            group_id: d.group_id,
            state: GroupState::from_wire(&d.state),
            generation: d.generation,
            assignor: Some(d.assignor).filter(|a| !a.is_empty()),
            members: d
                .members
                .into_iter()
                .map(|m| MemberDescription {
                    member_id: m.member_id,
                    client_id: m.client_id,
                    topics: m.topics,
                    assignment: partitions_from_wire(m.assignment),
                })
                .collect(),
            offsets: d
                .offsets
                .into_iter()
                .map(|o| CommittedOffset {
                    partition: TopicPartition::new(o.topic, o.partition),
                    offset: wire_offset(o.offset),
                    metadata: o.metadata,
                    commit_timestamp: Some(TimestampMs(o.commit_timestamp_ms)).filter(|t| t.0 >= 0),
                    error: code_from_proto(o.error_code),
                })
                .collect(),
        }
    }
}

/// The admin client. Every method takes `&self`.
#[derive(Debug)]
pub struct Admin {
    cluster: Cluster,
}

impl Admin {
    /// Validates `config` and checks that some bootstrap broker answers.
    pub async fn new(config: AdminConfig) -> Result<Admin> {
        let home = Home::new("admin")?;
        home.clone()
            .run(async move {
                config.validate()?;
                let cluster = Cluster::new(config.common, home);
                cluster.refresh(&[]).await?;
                Ok(Admin { cluster })
            })
            .await
    }

    async fn call<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn(GrpcAdmin<crate::client::security::AuthChannel>, Duration) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, tonic::Status>>,
    {
        let timeout = self.cluster.config.request_timeout;
        self.cluster
            .any_broker(|ch, _| {
                let fut = f(GrpcAdmin::new(ch), timeout);
                async move { fut.await.map_err(|s| error_from_status(&s)) }
            })
            .await
    }

    /// Creates a topic; returns its placement.
    pub async fn create_topic(&self, topic: NewTopic) -> Result<TopicMetadata> {
        self.run(self.create_topic_here(topic)).await
    }

    async fn create_topic_here(&self, topic: NewTopic) -> Result<TopicMetadata> {
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
        self.run(self.delete_topic_here(name)).await
    }

    async fn delete_topic_here(&self, name: &str) -> Result<()> {
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

    /// Creates or replaces `name`'s SCRAM-SHA-256 credential (the broker salts and hashes the
    /// password; `iterations` 0 is the default 4096). Needs Alter on the cluster.
    pub async fn upsert_user(&self, name: &str, password: &str, iterations: u32) -> Result<()> {
        let req = v1::UpsertUserRequest {
            name: name.to_owned(),
            password: password.to_owned(),
            iterations,
        };
        self.run(self.call(move |mut c, t| {
            let mut r = tonic::Request::new(req.clone());
            r.set_timeout(t);
            async move { c.upsert_user(r).await.map(|_| ()) }
        }))
        .await
    }

    /// Deletes `name`'s credential; `false` when there was none.
    pub async fn delete_user(&self, name: &str) -> Result<bool> {
        let req = v1::DeleteUserRequest {
            name: name.to_owned(),
        };
        self.run(self.call(move |mut c, t| {
            let mut r = tonic::Request::new(req.clone());
            r.set_timeout(t);
            async move { c.delete_user(r).await.map(|r| r.into_inner().existed) }
        }))
        .await
    }

    /// Users with credentials: (name, mechanism, iterations), sorted by name.
    pub async fn list_users(&self) -> Result<Vec<UserListing>> {
        let resp = self
            .run(self.call(|mut c, t| {
                let mut r = tonic::Request::new(v1::ListUsersRequest {});
                r.set_timeout(t);
                async move { c.list_users(r).await.map(|r| r.into_inner()) }
            }))
            .await?;
        Ok(resp
            .users
            .into_iter()
            .map(|u| UserListing {
                name: u.name,
                mechanism: u.mechanism,
                iterations: u.iterations,
            })
            .collect())
    }

    /// Adds ACL bindings (each validated here first). Needs Alter on the cluster.
    pub async fn create_acls(&self, acls: &[AclBinding]) -> Result<()> {
        for a in acls {
            a.validate()?;
        }
        let req = v1::CreateAclsRequest {
            acls: acls.iter().map(acl_to_proto).collect(),
        };
        self.run(self.call(move |mut c, t| {
            let mut r = tonic::Request::new(req.clone());
            r.set_timeout(t);
            async move { c.create_acls(r).await.map(|_| ()) }
        }))
        .await
    }

    /// Removes exactly these bindings; returns how many existed.
    pub async fn delete_acls(&self, acls: &[AclBinding]) -> Result<u32> {
        let req = v1::DeleteAclsRequest {
            acls: acls.iter().map(acl_to_proto).collect(),
        };
        self.run(self.call(move |mut c, t| {
            let mut r = tonic::Request::new(req.clone());
            r.set_timeout(t);
            async move { c.delete_acls(r).await.map(|r| r.into_inner().removed) }
        }))
        .await
    }

    /// Every ACL binding. Needs Describe on the cluster.
    pub async fn list_acls(&self) -> Result<Vec<AclBinding>> {
        let resp = self
            .run(self.call(|mut c, t| {
                let mut r = tonic::Request::new(v1::ListAclsRequest {});
                r.set_timeout(t);
                async move { c.list_acls(r).await.map(|r| r.into_inner()) }
            }))
            .await?;
        resp.acls.iter().map(acl_from_proto).collect()
    }

    /// Every topic, sorted by name.
    pub async fn list_topics(&self) -> Result<Vec<TopicListing>> {
        self.run(self.list_topics_here()).await
    }

    async fn list_topics_here(&self) -> Result<Vec<TopicListing>> {
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
        self.run(self.describe_topic_here(name)).await
    }

    async fn describe_topic_here(&self, name: &str) -> Result<TopicDescription> {
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
        match self
            .run(async { Ok(self.cluster.list_offsets(specs).await) })
            .await
        {
            Ok(results) => results,
            // The call itself failed (a forked process): every entry says so.
            Err(e) => specs.iter().map(|_| Err(clone_error(&e))).collect(),
        }
    }

    /// Polls `fut` with the client runtime's context entered (`Home::run`), so every async
    /// method works from any executor, as the producer's and consumer's do.
    async fn run<T>(&self, fut: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        self.cluster.home().run(fut).await
    }

    /// Every broker the registry knows, and the controller.
    pub async fn describe_cluster(&self) -> Result<ClusterDescription> {
        self.run(self.describe_cluster_here()).await
    }

    async fn describe_cluster_here(&self) -> Result<ClusterDescription> {
        let (brokers, controller_id) = self.cluster.list_brokers().await?;
        Ok(ClusterDescription {
            brokers,
            controller_id: Some(controller_id).filter(|id| *id >= 0),
        })
    }

    /// Every group of the cluster, sorted by id. A broker lists the groups it coordinates, so
    /// this asks every live broker and merges the answers (as Kafka's admin client does); a
    /// broker that cannot be reached fails the call, so the listing is never silently partial.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        self.run(self.list_groups_here()).await
    }

    async fn list_groups_here(&self) -> Result<Vec<GroupListing>> {
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
                .map_err(|s| error_from_status(&s))?
                .into_inner();
            for g in r.groups {
                out.insert(
                    g.group_id.clone(),
                    GroupListing {
                        group_id: g.group_id,
                        state: GroupState::from_wire(&g.state),
                        members: g.members,
                        generation: g.generation,
                    },
                );
            }
        }
        Ok(out.into_values().collect())
    }

    /// One group's state, members and committed offsets, from its coordinator (found again
    /// once if it moved). A group the coordinator knows nothing of is described with
    /// [`GroupState::Dead`], not an error.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        self.run(self.describe_group_here(group)).await
    }

    async fn describe_group_here(&self, group: &str) -> Result<GroupDescription> {
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
                    .map_err(|s| error_from_status(&s))
            }
            .await;
            match r {
                Err(e) if coordinator_moved(&e) && attempt == 0 => {
                    attempt += 1;
                    self.cluster.coordinator_failed(group);
                }
                other => return other.map(GroupDescription::from_wire),
            }
        }
    }

    /// The lag of a described group: every partition that is assigned to a member or has a
    /// committed offset, sorted, with its owner, committed offset, log end (looked up at each
    /// partition's leader) and lag. A log end that cannot be looked up is `None`, not an error.
    pub async fn group_lag(&self, group: &GroupDescription) -> Vec<GroupPartitionLag> {
        let mut rows: BTreeMap<TopicPartition, GroupPartitionLag> = BTreeMap::new();
        let row = |tp: &TopicPartition| GroupPartitionLag {
            partition: tp.clone(),
            member_id: None,
            client_id: None,
            committed: None,
            log_end_offset: None,
            lag: None,
        };
        for m in &group.members {
            for tp in &m.assignment {
                let r = rows.entry(tp.clone()).or_insert_with(|| row(tp));
                r.member_id = Some(m.member_id.clone());
                r.client_id = Some(m.client_id.clone());
            }
        }
        for o in &group.offsets {
            rows.entry(o.partition.clone())
                .or_insert_with(|| row(&o.partition))
                .committed = o.offset;
        }
        let specs: Vec<(TopicPartition, OffsetSpec)> = rows
            .keys()
            .map(|tp| (tp.clone(), OffsetSpec::Latest))
            .collect();
        let ends = self.list_offsets(&specs).await;
        rows.into_values()
            .zip(ends)
            .map(|(mut r, end)| {
                r.log_end_offset = end.ok().and_then(|l| l.offset);
                r.lag = match (r.log_end_offset, r.committed) {
                    (Some(end), Some(committed)) => Some(end.0.saturating_sub(committed.0)),
                    _ => None,
                };
                r
            })
            .collect()
    }
}

/// The blocking twins of [`Admin`]'s methods, for synchronous callers (bindings release their
/// interpreter lock around them): each polls the async method on the calling thread
/// (`Home::block_on`), so the same rules apply (not on a client runtime thread; fork-checked;
/// interruptible by a binding's interrupt check).
impl Admin {
    /// [`Admin::new`] for synchronous callers.
    pub fn new_blocking(config: AdminConfig) -> Result<Admin> {
        Home::new("admin")?.block_on(Admin::new(config))
    }

    fn block_on<T>(&self, fut: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        self.cluster.home().block_on(fut)
    }

    /// [`Admin::create_topic`] for synchronous callers.
    pub fn create_topic_blocking(&self, topic: NewTopic) -> Result<TopicMetadata> {
        self.block_on(self.create_topic(topic))
    }

    /// [`Admin::delete_topic`] for synchronous callers.
    pub fn delete_topic_blocking(&self, name: &str) -> Result<()> {
        self.block_on(self.delete_topic(name))
    }

    /// [`Admin::list_topics`] for synchronous callers.
    pub fn list_topics_blocking(&self) -> Result<Vec<TopicListing>> {
        self.block_on(self.list_topics())
    }

    /// [`Admin::describe_topic`] for synchronous callers.
    pub fn describe_topic_blocking(&self, name: &str) -> Result<TopicDescription> {
        self.block_on(self.describe_topic(name))
    }

    /// [`Admin::list_offsets`] for synchronous callers; the outer error is the call's own
    /// (a forked process, an interrupt).
    pub fn list_offsets_blocking(
        &self,
        specs: &[(TopicPartition, OffsetSpec)],
    ) -> Result<Vec<Result<ListedOffset>>> {
        self.block_on(async { Ok(self.list_offsets(specs).await) })
    }

    /// [`Admin::describe_cluster`] for synchronous callers.
    pub fn describe_cluster_blocking(&self) -> Result<ClusterDescription> {
        self.block_on(self.describe_cluster())
    }

    /// [`Admin::list_groups`] for synchronous callers.
    pub fn list_groups_blocking(&self) -> Result<Vec<GroupListing>> {
        self.block_on(self.list_groups())
    }

    /// [`Admin::describe_group`] for synchronous callers.
    pub fn describe_group_blocking(&self, group: &str) -> Result<GroupDescription> {
        self.block_on(self.describe_group(group))
    }

    /// [`Admin::group_lag`] for synchronous callers.
    pub fn group_lag_blocking(&self, group: &GroupDescription) -> Result<Vec<GroupPartitionLag>> {
        self.block_on(async { Ok(self.group_lag(group).await) })
    }
}

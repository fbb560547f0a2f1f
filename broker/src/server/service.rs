//! The gRPC services: thin wrappers that check ACLs, time each request, call [`Broker`] (or
//! its [`Groups`](crate::groups::Groups)) and map errors. **Architecture Invariant**: no
//! request logic here — a new RPC is a method on `Broker` (or `Groups`) plus a wrapper of this
//! shape.

use std::sync::Arc;
use std::time::Instant;

use sluiceway_core::acl::{AclBinding, AclOperation, CLUSTER_RESOURCE_NAME, ResourceType};
use sluiceway_core::scram::{ScramCredential, validate_username};
use sluiceway_core::topic::validate_topic_name;
use sluiceway_core::wire::{acl_from_proto, acl_to_proto};
use sluiceway_proto::v1;
use tonic::{Request, Response, Status};

use crate::broker::Broker;
use crate::errors::{blocking, status_from_error};
use crate::groups::check_group_id;
use crate::metrics::RequestMetrics;
use crate::security::{Authorizer, Principal, principal_of};

/// Implements the Log, Admin, Registry and Group services over one broker.
#[derive(Debug, Clone)]
pub struct Service {
    pub broker: Arc<Broker>,
    /// ACL checks (`crate::security`); everything is allowed when the authorizer is off.
    pub authz: Arc<Authorizer>,
}

fn timed<T>(
    m: &RequestMetrics,
    started: Instant,
    r: Result<T, Status>,
) -> Result<Response<T>, Status> {
    m.record(started, r.is_ok());
    r.map(Response::new)
}

impl Service {
    fn check_group(&self, who: &Principal, op: AclOperation, group: &str) -> Result<(), Status> {
        self.authz.check(who, op, ResourceType::Group, group)
    }

    fn check_cluster(&self, who: &Principal, op: AclOperation) -> Result<(), Status> {
        self.authz
            .check(who, op, ResourceType::Cluster, CLUSTER_RESOURCE_NAME)
    }

    /// Runs a registry write on the blocking pool (the etcd backend blocks).
    async fn registry_call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn sluiceway_core::registry::Registry) -> sluiceway_core::Result<T>
        + Send
        + 'static,
    ) -> Result<T, Status> {
        let registry = self.broker.registry.clone();
        blocking(move || f(registry.as_ref()))
            .await
            .map_err(|e| status_from_error(&e))
    }
}

/// Wire ACL bindings, parsed and validated (INVALID_ARGUMENT naming the bad field).
fn acls_from_proto(acls: &[v1::AclBinding]) -> Result<Vec<AclBinding>, Status> {
    acls.iter()
        .map(acl_from_proto)
        .collect::<sluiceway_core::Result<Vec<_>>>()
        .map_err(|e| status_from_error(&e))
}

#[tonic::async_trait]
impl v1::log_server::Log for Service {
    async fn produce(
        &self,
        request: Request<v1::ProduceRequest>,
    ) -> Result<Response<v1::ProduceResponse>, Status> {
        let started = Instant::now();
        let who = principal_of(&request);
        let req = request.into_inner();
        let r = match self.authz.check_topics(
            &who,
            AclOperation::Write,
            req.partitions.iter().map(|p| p.topic.as_str()),
        ) {
            Ok(()) => self.broker.produce(req).await,
            Err(denied) => Err(denied),
        };
        timed(&self.broker.metrics.produce, started, r)
    }

    async fn fetch(
        &self,
        request: Request<v1::FetchRequest>,
    ) -> Result<Response<v1::FetchResponse>, Status> {
        let started = Instant::now();
        let who = principal_of(&request);
        let req = request.into_inner();
        // A replica fetch moves the high watermark and the ISR: only brokers may send one
        // (Kafka: ClusterAction on the cluster), whatever they may read.
        let replica = match req.replica_id {
            Some(_) => self.check_cluster(&who, AclOperation::ClusterAction),
            None => Ok(()),
        };
        let r = match replica.and_then(|()| {
            self.authz.check_topics(
                &who,
                AclOperation::Read,
                req.partitions.iter().map(|p| p.topic.as_str()),
            )
        }) {
            Ok(()) => self.broker.fetch(req).await,
            Err(denied) => Err(denied),
        };
        timed(&self.broker.metrics.fetch, started, r)
    }

    async fn list_offsets(
        &self,
        request: Request<v1::ListOffsetsRequest>,
    ) -> Result<Response<v1::ListOffsetsResponse>, Status> {
        let started = Instant::now();
        let who = principal_of(&request);
        let req = request.into_inner();
        let r = match self.authz.check_topics(
            &who,
            AclOperation::Describe,
            req.partitions.iter().map(|p| p.topic.as_str()),
        ) {
            Ok(()) => self.broker.list_offsets(req).await,
            Err(denied) => Err(denied),
        };
        timed(&self.broker.metrics.list_offsets, started, r)
    }

    async fn init_producer_id(
        &self,
        _request: Request<v1::InitProducerIdRequest>,
    ) -> Result<Response<v1::InitProducerIdResponse>, Status> {
        let started = Instant::now();
        // Any principal the listener admitted may have an id: it grants nothing by itself (every
        // produce still needs Write on its topic), as Kafka decided in KIP-679.
        let r = self.broker.init_producer_id().await;
        timed(&self.broker.metrics.init_producer_id, started, r)
    }

    async fn offset_for_leader_epoch(
        &self,
        request: Request<v1::OffsetForLeaderEpochRequest>,
    ) -> Result<Response<v1::OffsetForLeaderEpochResponse>, Status> {
        let started = Instant::now();
        let who = principal_of(&request);
        let req = request.into_inner();
        // Followers ask it to truncate: replication, like a replica fetch.
        let r = match self.check_cluster(&who, AclOperation::ClusterAction) {
            Ok(()) => self.broker.offset_for_leader_epoch(req).await,
            Err(denied) => Err(denied),
        };
        timed(&self.broker.metrics.fetch, started, r)
    }
}

#[tonic::async_trait]
impl v1::admin_server::Admin for Service {
    async fn create_topic(
        &self,
        request: Request<v1::CreateTopicRequest>,
    ) -> Result<Response<v1::CreateTopicResponse>, Status> {
        let started = Instant::now();
        let who = principal_of(&request);
        let req = request.into_inner();
        // Kafka: Create on the cluster, or on the topic.
        if !self.authz.allowed(
            &who,
            AclOperation::Create,
            ResourceType::Cluster,
            CLUSTER_RESOURCE_NAME,
        ) && let Err(denied) =
            self.authz
                .check(&who, AclOperation::Create, ResourceType::Topic, &req.name)
        {
            return timed(&self.broker.metrics.admin, started, Err(denied));
        }
        let r = match self.broker.create_topic(req).await {
            Ok(info) => Ok(v1::CreateTopicResponse {
                topic: Some(self.broker.topic_metadata(&info)),
            }),
            Err(e) => Err(status_from_error(&e)),
        };
        timed(&self.broker.metrics.admin, started, r)
    }

    async fn delete_topic(
        &self,
        request: Request<v1::DeleteTopicRequest>,
    ) -> Result<Response<v1::DeleteTopicResponse>, Status> {
        let started = Instant::now();
        let who = principal_of(&request);
        let name = request.into_inner().name;
        if let Err(denied) =
            self.authz
                .check(&who, AclOperation::Delete, ResourceType::Topic, &name)
        {
            return timed(&self.broker.metrics.admin, started, Err(denied));
        }
        let r = self
            .broker
            .delete_topic(&name)
            .await
            .map(|()| v1::DeleteTopicResponse {});
        timed(
            &self.broker.metrics.admin,
            started,
            r.map_err(|e| status_from_error(&e)),
        )
    }

    async fn list_topics(
        &self,
        request: Request<v1::ListTopicsRequest>,
    ) -> Result<Response<v1::ListTopicsResponse>, Status> {
        let started = Instant::now();
        let who = principal_of(&request);
        let r = self
            .broker
            .list_topics(|name| {
                self.authz
                    .allowed(&who, AclOperation::Describe, ResourceType::Topic, name)
            })
            .map(|topics| v1::ListTopicsResponse { topics })
            .map_err(|e| status_from_error(&e));
        timed(&self.broker.metrics.admin, started, r)
    }

    async fn describe_topic(
        &self,
        request: Request<v1::DescribeTopicRequest>,
    ) -> Result<Response<v1::DescribeTopicResponse>, Status> {
        let started = Instant::now();
        let who = principal_of(&request);
        let name = request.into_inner().name;
        let r = validate_topic_name(&name)
            .map_err(|e| status_from_error(&e))
            .and_then(|()| {
                self.authz
                    .check(&who, AclOperation::Describe, ResourceType::Topic, &name)
            })
            .and_then(|()| self.broker.describe_topic(&name));
        timed(&self.broker.metrics.admin, started, r)
    }

    async fn upsert_user(
        &self,
        request: Request<v1::UpsertUserRequest>,
    ) -> Result<Response<v1::UpsertUserResponse>, Status> {
        let started = Instant::now();
        let who = principal_of(&request);
        let r = self.upsert_user_inner(who, request.into_inner()).await;
        timed(&self.broker.metrics.admin, started, r)
    }

    async fn delete_user(
        &self,
        request: Request<v1::DeleteUserRequest>,
    ) -> Result<Response<v1::DeleteUserResponse>, Status> {
        let started = Instant::now();
        let who = principal_of(&request);
        let name = request.into_inner().name;
        let r = async {
            self.check_cluster(&who, AclOperation::Alter)?;
            let existed = self
                .registry_call(move |r| r.delete_credential(&name))
                .await?;
            Ok(v1::DeleteUserResponse { existed })
        }
        .await;
        timed(&self.broker.metrics.admin, started, r)
    }

    async fn list_users(
        &self,
        request: Request<v1::ListUsersRequest>,
    ) -> Result<Response<v1::ListUsersResponse>, Status> {
        let started = Instant::now();
        let who = principal_of(&request);
        let r = (|| {
            self.check_cluster(&who, AclOperation::Describe)?;
            let users = self
                .broker
                .registry
                .users()
                .map_err(|e| status_from_error(&e))?;
            Ok(v1::ListUsersResponse {
                users: users
                    .into_iter()
                    .map(|(name, c)| v1::UserListing {
                        name,
                        mechanism: c.mechanism,
                        iterations: c.iterations,
                    })
                    .collect(),
            })
        })();
        timed(&self.broker.metrics.admin, started, r)
    }

    async fn create_acls(
        &self,
        request: Request<v1::CreateAclsRequest>,
    ) -> Result<Response<v1::CreateAclsResponse>, Status> {
        let started = Instant::now();
        let who = principal_of(&request);
        let req = request.into_inner();
        let r = async {
            self.check_cluster(&who, AclOperation::Alter)?;
            let acls = acls_from_proto(&req.acls)?;
            self.registry_call(move |r| r.add_acls(&acls)).await?;
            Ok(v1::CreateAclsResponse {})
        }
        .await;
        timed(&self.broker.metrics.admin, started, r)
    }

    async fn delete_acls(
        &self,
        request: Request<v1::DeleteAclsRequest>,
    ) -> Result<Response<v1::DeleteAclsResponse>, Status> {
        let started = Instant::now();
        let who = principal_of(&request);
        let req = request.into_inner();
        let r = async {
            self.check_cluster(&who, AclOperation::Alter)?;
            let acls = acls_from_proto(&req.acls)?;
            let removed = self.registry_call(move |r| r.remove_acls(&acls)).await?;
            Ok(v1::DeleteAclsResponse {
                removed: removed as u32,
            })
        }
        .await;
        timed(&self.broker.metrics.admin, started, r)
    }

    async fn list_acls(
        &self,
        request: Request<v1::ListAclsRequest>,
    ) -> Result<Response<v1::ListAclsResponse>, Status> {
        let started = Instant::now();
        let who = principal_of(&request);
        let r = self
            .check_cluster(&who, AclOperation::Describe)
            .map(|()| v1::ListAclsResponse {
                acls: self
                    .broker
                    .registry
                    .acls()
                    .iter()
                    .map(acl_to_proto)
                    .collect(),
            });
        timed(&self.broker.metrics.admin, started, r)
    }
}

/// The user and ACL administration RPCs of the Admin service.
impl Service {
    async fn upsert_user_inner(
        &self,
        who: Principal,
        req: v1::UpsertUserRequest,
    ) -> Result<v1::UpsertUserResponse, Status> {
        self.check_cluster(&who, AclOperation::Alter)?;
        validate_username(&req.name).map_err(|e| status_from_error(&e))?;
        // PBKDF2 with a fresh salt, off the runtime's workers.
        let credential = blocking(move || {
            ScramCredential::new(&req.password, req.iterations).map(|c| (req.name, c))
        })
        .await
        .map_err(|e| status_from_error(&e))?;
        let (name, credential) = credential;
        self.registry_call(move |r| r.put_credential(&name, &credential))
            .await?;
        Ok(v1::UpsertUserResponse {})
    }
}

#[tonic::async_trait]
impl v1::registry_server::Registry for Service {
    async fn list_brokers(
        &self,
        _request: Request<v1::ListBrokersRequest>,
    ) -> Result<Response<v1::ListBrokersResponse>, Status> {
        let started = Instant::now();
        let r = self
            .broker
            .brokers()
            .map(|brokers| v1::ListBrokersResponse {
                brokers,
                controller_id: self.broker.controller_id(),
            })
            .map_err(|e| status_from_error(&e));
        timed(&self.broker.metrics.metadata, started, r)
    }

    async fn get_metadata(
        &self,
        request: Request<v1::GetMetadataRequest>,
    ) -> Result<Response<v1::GetMetadataResponse>, Status> {
        let started = Instant::now();
        let who = principal_of(&request);
        let req = request.into_inner();
        let r = self
            .broker
            .metadata(&req.topics, |name| {
                if self
                    .authz
                    .allowed(&who, AclOperation::Describe, ResourceType::Topic, name)
                {
                    Ok(())
                } else {
                    Err(format!(
                        "principal {who} is not authorized to Describe Topic {name:?}"
                    ))
                }
            })
            .map_err(|e| status_from_error(&e));
        timed(&self.broker.metrics.metadata, started, r)
    }
}

#[tonic::async_trait]
impl v1::group_server::Group for Service {
    async fn join_group(
        &self,
        request: Request<v1::JoinGroupRequest>,
    ) -> Result<Response<v1::JoinGroupResponse>, Status> {
        let started = Instant::now();
        let b = &self.broker;
        let who = principal_of(&request);
        let req = request.into_inner();
        let r = match self
            .check_group(&who, AclOperation::Read, &req.group_id)
            .and_then(|()| {
                self.authz.check_topics(
                    &who,
                    AclOperation::Read,
                    req.topics.iter().map(String::as_str),
                )
            }) {
            Ok(()) => b.groups.join(req, b.shutdown_receiver()).await,
            Err(denied) => Err(denied),
        };
        timed(&b.metrics.join_group, started, r)
    }

    async fn heartbeat(
        &self,
        request: Request<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        let started = Instant::now();
        let who = principal_of(&request);
        let req = request.into_inner();
        let r = self
            .check_group(&who, AclOperation::Read, &req.group_id)
            .and_then(|()| self.broker.groups.heartbeat(&req))
            .map(|()| v1::HeartbeatResponse {});
        timed(&self.broker.metrics.group, started, r)
    }

    async fn leave_group(
        &self,
        request: Request<v1::LeaveGroupRequest>,
    ) -> Result<Response<v1::LeaveGroupResponse>, Status> {
        let started = Instant::now();
        let who = principal_of(&request);
        let req = request.into_inner();
        let r = self
            .check_group(&who, AclOperation::Read, &req.group_id)
            .and_then(|()| self.broker.groups.leave(&req))
            .map(|()| v1::LeaveGroupResponse {});
        timed(&self.broker.metrics.group, started, r)
    }

    async fn commit_offsets(
        &self,
        request: Request<v1::CommitOffsetsRequest>,
    ) -> Result<Response<v1::CommitOffsetsResponse>, Status> {
        let started = Instant::now();
        let b = &self.broker;
        let who = principal_of(&request);
        let req = request.into_inner();
        let r = async {
            self.check_group(&who, AclOperation::Read, &req.group_id)?;
            self.authz.check_topics(
                &who,
                AclOperation::Read,
                req.partitions.iter().map(|p| p.topic.as_str()),
            )?;
            // Counted with the other writes, so a graceful shutdown waits for the append.
            let _permit = b.permit(b.requests()).await?;
            b.groups
                .commit(req, |t, p| b.has_partition(t, p), b.now())
                .await
        }
        .await;
        timed(&b.metrics.group, started, r)
    }

    async fn fetch_offsets(
        &self,
        request: Request<v1::FetchOffsetsRequest>,
    ) -> Result<Response<v1::FetchOffsetsResponse>, Status> {
        let started = Instant::now();
        let b = &self.broker;
        let who = principal_of(&request);
        let req = request.into_inner();
        let r = match self.check_group(&who, AclOperation::Describe, &req.group_id) {
            Ok(()) => {
                b.groups
                    .fetch_offsets(req, |t, p| b.has_partition(t, p))
                    .await
            }
            Err(denied) => Err(denied),
        };
        timed(&b.metrics.group, started, r)
    }

    async fn list_groups(
        &self,
        request: Request<v1::ListGroupsRequest>,
    ) -> Result<Response<v1::ListGroupsResponse>, Status> {
        let started = Instant::now();
        let who = principal_of(&request);
        // Kafka: the groups the principal may Describe.
        let r = self.broker.groups.list().await.map(|mut l| {
            l.groups.retain(|g| {
                self.authz.allowed(
                    &who,
                    AclOperation::Describe,
                    ResourceType::Group,
                    &g.group_id,
                )
            });
            l
        });
        timed(&self.broker.metrics.group, started, r)
    }

    async fn describe_group(
        &self,
        request: Request<v1::DescribeGroupRequest>,
    ) -> Result<Response<v1::DescribeGroupResponse>, Status> {
        let started = Instant::now();
        let who = principal_of(&request);
        let group = request.into_inner().group_id;
        let r = match self.check_group(&who, AclOperation::Describe, &group) {
            Ok(()) => self.broker.groups.describe(&group).await,
            Err(denied) => Err(denied),
        };
        timed(&self.broker.metrics.group, started, r)
    }

    async fn find_coordinator(
        &self,
        request: Request<v1::FindCoordinatorRequest>,
    ) -> Result<Response<v1::FindCoordinatorResponse>, Status> {
        let started = Instant::now();
        let who = principal_of(&request);
        let group = request.into_inner().group_id;
        let r = async {
            check_group_id(&group)?;
            self.check_group(&who, AclOperation::Describe, &group)?;
            self.broker
                .find_coordinator(&group)
                .await
                .map(|(id, address)| v1::FindCoordinatorResponse {
                    broker_id: id.0,
                    address,
                })
                .map_err(|e| status_from_error(&e))
        }
        .await;
        timed(&self.broker.metrics.metadata, started, r)
    }
}

//! The gRPC services: thin wrappers that time each request, call [`Broker`] (or its
//! [`Groups`](crate::groups::Groups)) and map errors.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use sluiceway_core::ErrorCode;
use sluiceway_core::registry::TopicInfo;
use sluiceway_core::topic::{TopicConfig, validate_topic_name};
use sluiceway_proto::v1;
use tonic::{Request, Response, Status};

use crate::broker::Broker;
use crate::errors::{status, status_from_error, to_proto};
use crate::groups::{check_group_id, is_internal_topic};
use crate::metrics::RequestMetrics;

/// Implements the Log, Admin, Registry and Group services over one broker.
#[derive(Debug, Clone)]
pub struct Service {
    pub broker: Arc<Broker>,
}

fn timed<T>(
    m: &RequestMetrics,
    started: Instant,
    r: Result<T, Status>,
) -> Result<Response<T>, Status> {
    m.record(started, r.is_ok());
    r.map(Response::new)
}

fn brokers(b: &Broker) -> Result<Vec<v1::BrokerInfo>, Status> {
    Ok(b.registry
        .brokers()
        .map_err(|e| status_from_error(&e))?
        .into_iter()
        .map(|i| v1::BrokerInfo {
            broker_id: i.id.0 as i32,
            address: i.address,
            alive: i.alive,
        })
        .collect())
}

fn controller_id(b: &Broker) -> i32 {
    b.registry.controller().map_or(-1, |c| c.0 as i32)
}

#[tonic::async_trait]
impl v1::log_server::Log for Service {
    async fn produce(
        &self,
        request: Request<v1::ProduceRequest>,
    ) -> Result<Response<v1::ProduceResponse>, Status> {
        let started = Instant::now();
        let r = self.broker.produce(request.into_inner()).await;
        timed(&self.broker.metrics.produce, started, r)
    }

    async fn fetch(
        &self,
        request: Request<v1::FetchRequest>,
    ) -> Result<Response<v1::FetchResponse>, Status> {
        let started = Instant::now();
        let r = self.broker.fetch(request.into_inner()).await;
        timed(&self.broker.metrics.fetch, started, r)
    }

    async fn list_offsets(
        &self,
        request: Request<v1::ListOffsetsRequest>,
    ) -> Result<Response<v1::ListOffsetsResponse>, Status> {
        let started = Instant::now();
        let r = self.broker.list_offsets(request.into_inner()).await;
        timed(&self.broker.metrics.list_offsets, started, r)
    }

    async fn offset_for_leader_epoch(
        &self,
        request: Request<v1::OffsetForLeaderEpochRequest>,
    ) -> Result<Response<v1::OffsetForLeaderEpochResponse>, Status> {
        let started = Instant::now();
        let r = self
            .broker
            .offset_for_leader_epoch(request.into_inner())
            .await;
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
        let r = match self.broker.create_topic(request.into_inner()).await {
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
        let r = self
            .broker
            .delete_topic(&request.into_inner().name)
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
        _request: Request<v1::ListTopicsRequest>,
    ) -> Result<Response<v1::ListTopicsResponse>, Status> {
        let started = Instant::now();
        let r = self
            .broker
            .registry
            .topics()
            .map_err(|e| status_from_error(&e))
            .map(|topics| v1::ListTopicsResponse {
                topics: topics
                    .into_iter()
                    .filter(|t| !is_internal_topic(&t.name))
                    .map(|t| v1::TopicListing {
                        partitions: t.partitions.len() as u32,
                        replication_factor: t.replication_factor,
                        name: t.name,
                    })
                    .collect(),
            });
        timed(&self.broker.metrics.admin, started, r)
    }

    async fn describe_topic(
        &self,
        request: Request<v1::DescribeTopicRequest>,
    ) -> Result<Response<v1::DescribeTopicResponse>, Status> {
        let started = Instant::now();
        let name = request.into_inner().name;
        let r = (|| {
            validate_topic_name(&name).map_err(|e| status_from_error(&e))?;
            let info: TopicInfo = self
                .broker
                .registry
                .topic(&name)
                .map_err(|e| status_from_error(&e))?
                .ok_or_else(|| {
                    status(
                        ErrorCode::UnknownTopicOrPartition,
                        format!("topic {name} does not exist"),
                    )
                })?;
            let effective = TopicConfig::parse(self.broker.topic_defaults(), &info.configs)
                .map_err(|e| status_from_error(&e))?;
            Ok(v1::DescribeTopicResponse {
                topic: Some(self.broker.topic_metadata(&info)),
                configs: info.configs.clone().into_iter().collect::<HashMap<_, _>>(),
                effective_configs: effective.to_map().into_iter().collect(),
            })
        })();
        timed(&self.broker.metrics.admin, started, r)
    }
}

#[tonic::async_trait]
impl v1::registry_server::Registry for Service {
    async fn list_brokers(
        &self,
        _request: Request<v1::ListBrokersRequest>,
    ) -> Result<Response<v1::ListBrokersResponse>, Status> {
        let started = Instant::now();
        let r = brokers(&self.broker).map(|brokers| v1::ListBrokersResponse {
            brokers,
            controller_id: controller_id(&self.broker),
        });
        timed(&self.broker.metrics.metadata, started, r)
    }

    async fn get_metadata(
        &self,
        request: Request<v1::GetMetadataRequest>,
    ) -> Result<Response<v1::GetMetadataResponse>, Status> {
        let started = Instant::now();
        let req = request.into_inner();
        let r = (|| {
            let b = &self.broker;
            let topics = if req.topics.is_empty() {
                b.registry
                    .topics()
                    .map_err(|e| status_from_error(&e))?
                    .iter()
                    .filter(|t| !is_internal_topic(&t.name))
                    .map(|t| b.topic_metadata(t))
                    .collect()
            } else {
                let mut out = Vec::with_capacity(req.topics.len());
                for name in &req.topics {
                    let meta = match validate_topic_name(name) {
                        Err(e) => error_topic(name, e.code(), e.to_string()),
                        Ok(()) => {
                            match b.registry.topic(name).map_err(|e| status_from_error(&e))? {
                                Some(info) => b.topic_metadata(&info),
                                None => error_topic(
                                    name,
                                    ErrorCode::UnknownTopicOrPartition,
                                    format!("topic {name} does not exist"),
                                ),
                            }
                        }
                    };
                    out.push(meta);
                }
                out
            };
            Ok(v1::GetMetadataResponse {
                brokers: brokers(b)?,
                topics,
                controller_id: controller_id(b),
            })
        })();
        timed(&self.broker.metrics.metadata, started, r)
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

#[tonic::async_trait]
impl v1::group_server::Group for Service {
    async fn join_group(
        &self,
        request: Request<v1::JoinGroupRequest>,
    ) -> Result<Response<v1::JoinGroupResponse>, Status> {
        let started = Instant::now();
        let b = &self.broker;
        let r = b
            .groups
            .join(request.into_inner(), b.shutdown_receiver())
            .await;
        timed(&b.metrics.join_group, started, r)
    }

    async fn heartbeat(
        &self,
        request: Request<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        let started = Instant::now();
        let r = self
            .broker
            .groups
            .heartbeat(&request.into_inner())
            .map(|()| v1::HeartbeatResponse {});
        timed(&self.broker.metrics.group, started, r)
    }

    async fn leave_group(
        &self,
        request: Request<v1::LeaveGroupRequest>,
    ) -> Result<Response<v1::LeaveGroupResponse>, Status> {
        let started = Instant::now();
        let r = self
            .broker
            .groups
            .leave(&request.into_inner())
            .map(|()| v1::LeaveGroupResponse {});
        timed(&self.broker.metrics.group, started, r)
    }

    async fn commit_offsets(
        &self,
        request: Request<v1::CommitOffsetsRequest>,
    ) -> Result<Response<v1::CommitOffsetsResponse>, Status> {
        let started = Instant::now();
        let b = &self.broker;
        let r = async {
            // Counted with the other writes, so a graceful shutdown waits for the append.
            let _permit = b.permit(b.requests()).await?;
            b.groups
                .commit(request.into_inner(), |t, p| b.has_partition(t, p), b.now())
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
        let r = b
            .groups
            .fetch_offsets(request.into_inner(), |t, p| b.has_partition(t, p))
            .await;
        timed(&b.metrics.group, started, r)
    }

    async fn list_groups(
        &self,
        _request: Request<v1::ListGroupsRequest>,
    ) -> Result<Response<v1::ListGroupsResponse>, Status> {
        let started = Instant::now();
        let r = self.broker.groups.list().await;
        timed(&self.broker.metrics.group, started, r)
    }

    async fn describe_group(
        &self,
        request: Request<v1::DescribeGroupRequest>,
    ) -> Result<Response<v1::DescribeGroupResponse>, Status> {
        let started = Instant::now();
        let r = self
            .broker
            .groups
            .describe(&request.into_inner().group_id)
            .await;
        timed(&self.broker.metrics.group, started, r)
    }

    async fn find_coordinator(
        &self,
        request: Request<v1::FindCoordinatorRequest>,
    ) -> Result<Response<v1::FindCoordinatorResponse>, Status> {
        let started = Instant::now();
        let group = request.into_inner().group_id;
        let r = async {
            check_group_id(&group)?;
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

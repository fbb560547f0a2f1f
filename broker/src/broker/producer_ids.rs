//! Idempotent producer ids for `InitProducerId`: served from a block of
//! [`PRODUCER_ID_BLOCK_SIZE`] ids the broker allocates through the registry (Kafka's KIP-730),
//! so ids are unique across the cluster and across restarts (an unused rest of a block is
//! skipped, never handed out again) and the registry sees one write per block.

use std::sync::Arc;

use sluiceway_core::limits::PRODUCER_ID_BLOCK_SIZE;
use sluiceway_core::registry::Registry;
use sluiceway_proto::v1;
use tonic::Status;

use super::Broker;
use crate::errors::{blocking, status_from_error};

#[derive(Debug)]
pub(crate) struct ProducerIds {
    registry: Arc<dyn Registry>,
    /// The next id to hand out and the end of the current block (equal: none left).
    block: tokio::sync::Mutex<(i64, i64)>,
}

impl ProducerIds {
    pub(crate) fn new(registry: Arc<dyn Registry>) -> ProducerIds {
        ProducerIds {
            registry,
            block: tokio::sync::Mutex::new((0, 0)),
        }
    }

    /// A producer id never handed out before; allocates a new block when this one is used up
    /// (a registry error — etcd unreachable — is the retriable status the client retries).
    pub(crate) async fn next(&self) -> Result<i64, Status> {
        let mut block = self.block.lock().await;
        if block.0 == block.1 {
            let registry = self.registry.clone();
            let first = blocking(move || registry.allocate_producer_ids(PRODUCER_ID_BLOCK_SIZE))
                .await
                .map_err(|e| status_from_error(&e))?;
            *block = (first, first + i64::from(PRODUCER_ID_BLOCK_SIZE));
        }
        let id = block.0;
        block.0 += 1;
        Ok(id)
    }
}

impl Broker {
    /// InitProducerId: a producer id never handed out before, at epoch 0.
    pub async fn init_producer_id(&self) -> Result<v1::InitProducerIdResponse, Status> {
        self.producer_ids
            .next()
            .await
            .map(|producer_id| v1::InitProducerIdResponse {
                producer_id,
                producer_epoch: 0,
            })
    }
}

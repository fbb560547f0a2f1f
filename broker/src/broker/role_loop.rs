//! The role pass and its loop: the replication layer applies the registry
//! ([`ReplicaManager::apply_registry`](crate::replication::ReplicaManager::apply_registry)),
//! then the group coordinators follow (partition counts, which offsets partitions this broker
//! coordinates, commits of deleted topics), then admin requests waiting on the pass wake.

use std::sync::Arc;
use std::time::Duration;

use sluiceway_core::Result;
use sluiceway_core::limits::ROLE_RECHECK_INTERVAL_MS;
use tracing::warn;

use super::Broker;
use crate::errors::blocking;

impl Broker {
    /// One role pass (blocking: file I/O); the caller holds the admin lock. `first` marks the
    /// pass at start.
    pub fn apply_registry(self: &Arc<Self>, first: bool) -> Result<()> {
        let applied = self.replicas.apply_registry(first)?;
        if applied.topics_changed {
            self.groups
                .topics_changed(self.replicas.topic_partition_counts());
        }
        if self.registry.is_cluster() {
            self.groups.sync_coordination(&self.replicas);
            // Every coordinator tombstones the commits of a deleted topic in the offsets
            // partitions it leads (in the background: the appends wait for replicas).
            if !first
                && !applied.deleted.is_empty()
                && let Ok(rt) = tokio::runtime::Handle::try_current()
            {
                let groups = self.groups.clone();
                rt.spawn(async move {
                    for topic in applied.deleted {
                        groups.forget_topic(&topic).await;
                    }
                });
            }
        }
        self.applied.send_modify(|v| *v += 1);
        Ok(())
    }
}

/// Applies the registry on every change (and every `ROLE_RECHECK_INTERVAL_MS`) until shutdown.
pub async fn run_role_loop(broker: Arc<Broker>) {
    let mut changes = broker.registry.subscribe();
    let mut shutdown = broker.shutdown_receiver();
    loop {
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            () = tokio::time::sleep(Duration::from_millis(ROLE_RECHECK_INTERVAL_MS)) => {}
            _ = shutdown.changed() => return,
        }
        changes.borrow_and_update();
        let admin = broker.admin_lock.lock().await;
        let b = broker.clone();
        if let Err(e) = blocking(move || b.apply_registry(false)).await {
            warn!(error = %e, "applying the registry failed; retrying on the next change");
        }
        drop(admin);
    }
}

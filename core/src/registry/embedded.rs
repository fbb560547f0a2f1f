//! The embedded registry: one broker is its own registry and controller.
//!
//! State: `<data dir>/registry.json` (format version 1, below), read on open and replaced
//! atomically ([`crate::atomic_file::write_atomically`]) on every change, *before* the change is
//! visible to readers, so a reader never sees metadata that a crash could take back.
//! Partition directories are always `<topic>-<digits>`, so the file cannot collide with one.
//!
//! ```json
//! {"version":1,"brokers":[{"id":1,"address":"127.0.0.1:9292"}],
//!  "topics":[{"name":"orders","replication_factor":1,"configs":{"retention.ms":"1000"},
//!             "partitions":[{"partition":0,"leader":1,"replicas":[1],"isr":[1],"leader_epoch":0}]}]}
//! ```
//! A data directory belongs to one broker id: opening it with another id is refused, because
//! its partitions name the first id as their leader.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::{AclBinding, ScramCredential};
use super::{BrokerId, BrokerInfo, NewTopic, PartitionInfo, Registry, TopicInfo, place_replicas};
use crate::atomic_file::write_atomically;
use crate::error::{Error, Result};
use crate::limits::{
    ACLS_MAX, PARTITIONS_PER_TOPIC_MAX, REGISTRY_STATE_BYTES_MAX, REPLICATION_FACTOR_MAX,
    TOPICS_MAX, USERS_MAX,
};
use crate::topic::validate_topic_name;

/// The state file's name inside the data directory.
pub const STATE_FILE: &str = "registry.json";
const STATE_VERSION: u32 = 1;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct State {
    version: u32,
    brokers: Vec<BrokerRecord>,
    topics: Vec<TopicRecord>,
    /// SCRAM-SHA-256 credentials by username (absent in files written before security).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    users: BTreeMap<String, ScramCredential>,
    /// ACL bindings, sorted, distinct.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    acls: Vec<AclBinding>,
    /// The first idempotent producer id not handed out yet (absent in older files: 0).
    #[serde(default)]
    next_producer_id: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct BrokerRecord {
    id: u32,
    address: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct TopicRecord {
    name: String,
    replication_factor: u32,
    #[serde(default)]
    configs: BTreeMap<String, String>,
    partitions: Vec<PartitionRecord>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct PartitionRecord {
    partition: u32,
    leader: Option<u32>,
    replicas: Vec<u32>,
    isr: Vec<u32>,
    leader_epoch: u32,
}

impl TopicRecord {
    fn to_info(&self) -> TopicInfo {
        TopicInfo {
            name: self.name.clone(),
            replication_factor: self.replication_factor,
            configs: self.configs.clone(),
            partitions: self
                .partitions
                .iter()
                .map(|p| PartitionInfo {
                    partition: p.partition,
                    leader: p.leader.map(BrokerId),
                    replicas: p.replicas.iter().copied().map(BrokerId).collect(),
                    isr: p.isr.iter().copied().map(BrokerId).collect(),
                    leader_epoch: p.leader_epoch,
                })
                .collect(),
        }
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct EmbeddedRegistry {
    path: PathBuf,
    broker_id: BrokerId,
    state: Mutex<State>,
    /// Bumped after every committed change ([`Registry::subscribe`]).
    version: tokio::sync::watch::Sender<u64>,
    /// `state.acls`, shared with the authorizer; replaced on every commit that changes them.
    acls: Mutex<Arc<Vec<AclBinding>>>,
}

impl EmbeddedRegistry {
    /// Opens (or starts) the registry state in `data_dir` for broker `broker_id`.
    pub fn open(data_dir: &Path, broker_id: BrokerId) -> Result<EmbeddedRegistry> {
        let path = data_dir.join(STATE_FILE);
        let state = match fs::File::open(&path) {
            Ok(f) => {
                let mut bytes = Vec::new();
                f.take(REGISTRY_STATE_BYTES_MAX + 1)
                    .read_to_end(&mut bytes)
                    .map_err(|e| Error::io("read", &path, e))?;
                if bytes.len() as u64 > REGISTRY_STATE_BYTES_MAX {
                    return Err(corrupt_state(
                        &path,
                        format!("larger than {REGISTRY_STATE_BYTES_MAX} bytes"),
                    ));
                }
                let state: State = serde_json::from_slice(&bytes)
                    .map_err(|e| corrupt_state(&path, e.to_string()))?;
                if state.version != STATE_VERSION {
                    return Err(corrupt_state(
                        &path,
                        format!("unsupported state version {}", state.version),
                    ));
                }
                check_state(&state).map_err(|reason| corrupt_state(&path, reason))?;
                state
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => State {
                version: STATE_VERSION,
                ..State::default()
            },
            Err(e) => return Err(Error::io("open", &path, e)),
        };
        if let Some(other) = state.brokers.iter().find(|b| b.id != broker_id.0) {
            return Err(Error::InvalidConfig {
                key: "broker_id".into(),
                reason: format!(
                    "the data directory {} belongs to broker {} (see {}), not broker {broker_id}",
                    data_dir.display(),
                    other.id,
                    path.display()
                ),
            });
        }
        Ok(EmbeddedRegistry {
            path,
            broker_id,
            acls: Mutex::new(Arc::new(state.acls.clone())),
            state: Mutex::new(state),
            version: tokio::sync::watch::channel(0).0,
        })
    }

    /// Persists `next` and only then makes it the current state.
    fn commit(&self, current: &mut State, next: State) -> Result<()> {
        self.persist(current, next)?;
        self.version.send_modify(|v| *v += 1);
        Ok(())
    }

    /// [`commit`](Self::commit) without telling subscribers (nothing they watch changed).
    fn persist(&self, current: &mut State, next: State) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(&next).map_err(|e| Error::Remote {
            code: crate::ErrorCode::UnknownServerError,
            message: format!("cannot encode the registry state: {e}"),
        })?;
        write_atomically(&self.path, &bytes)?;
        if current.acls != next.acls {
            *self.acls.lock() = Arc::new(next.acls.clone());
        }
        *current = next;
        Ok(())
    }
}

fn corrupt_state(path: &Path, reason: String) -> Error {
    Error::InvalidConfig {
        key: STATE_FILE.into(),
        reason: format!("{} is unreadable: {reason}", path.display()),
    }
}

/// The invariants of the module docs, checked on load.
fn check_state(state: &State) -> std::result::Result<(), String> {
    for (user, c) in &state.users {
        c.check().map_err(|e| format!("user {user:?}: {e}"))?;
    }
    for a in &state.acls {
        a.validate().map_err(|e| format!("ACL {a}: {e}"))?;
    }
    for t in &state.topics {
        validate_topic_name(&t.name).map_err(|e| e.to_string())?;
        for (i, p) in t.partitions.iter().enumerate() {
            if p.partition as usize != i {
                return Err(format!(
                    "topic {} lists partition {} at position {i}",
                    t.name, p.partition
                ));
            }
            if let Some(l) = p.leader
                && !p.isr.contains(&l)
            {
                return Err(format!(
                    "{}-{}: leader {l} is not in the in-sync replicas",
                    t.name, p.partition
                ));
            }
            if p.isr.iter().any(|b| !p.replicas.contains(b)) {
                return Err(format!(
                    "{}-{}: in-sync replicas are not all replicas",
                    t.name, p.partition
                ));
            }
        }
    }
    Ok(())
}

impl Registry for EmbeddedRegistry {
    fn register_broker(&self, id: BrokerId, address: &str) -> Result<()> {
        let mut state = self.state.lock();
        if id != self.broker_id {
            return Err(Error::InvalidArgument(format!(
                "the embedded registry serves broker {} only, not broker {id}",
                self.broker_id
            )));
        }
        if state.brokers.len() == 1 && state.brokers[0].address == address {
            return Ok(());
        }
        let mut next = state.clone();
        next.brokers = vec![BrokerRecord {
            id: id.0,
            address: address.to_owned(),
        }];
        self.commit(&mut state, next)
    }

    fn brokers(&self) -> Result<Vec<BrokerInfo>> {
        let state = self.state.lock();
        Ok(state
            .brokers
            .iter()
            .map(|b| BrokerInfo {
                id: BrokerId(b.id),
                address: b.address.clone(),
                alive: true,
            })
            .collect())
    }

    fn controller(&self) -> Option<BrokerId> {
        Some(self.broker_id)
    }

    fn topics(&self) -> Result<Vec<TopicInfo>> {
        let state = self.state.lock();
        let mut topics: Vec<TopicInfo> = state.topics.iter().map(TopicRecord::to_info).collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    fn topic(&self, name: &str) -> Result<Option<TopicInfo>> {
        Ok(self
            .state
            .lock()
            .topics
            .iter()
            .find(|t| t.name == name)
            .map(TopicRecord::to_info))
    }

    fn create_topic(&self, topic: &NewTopic) -> Result<TopicInfo> {
        validate_topic_name(&topic.name)?;
        if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&topic.partitions) {
            return Err(Error::InvalidPartitions(format!(
                "{} partitions is outside [1, {PARTITIONS_PER_TOPIC_MAX}]",
                topic.partitions
            )));
        }
        if !(1..=REPLICATION_FACTOR_MAX).contains(&topic.replication_factor) {
            return Err(Error::InvalidReplicationFactor(format!(
                "{} is outside [1, {REPLICATION_FACTOR_MAX}]",
                topic.replication_factor
            )));
        }
        // The embedded registry has exactly one broker: itself. Copies must be on distinct
        // brokers, so a replication factor above 1 cannot be placed.
        if topic.replication_factor > 1 {
            return Err(Error::InvalidReplicationFactor(format!(
                "replication factor {} is larger than the number of brokers (1, the embedded registry); \
                 run a cluster with the etcd registry for replication",
                topic.replication_factor
            )));
        }
        let mut state = self.state.lock();
        if state.topics.iter().any(|t| t.name == topic.name) {
            return Err(Error::TopicAlreadyExists(topic.name.clone()));
        }
        if state.topics.len() >= TOPICS_MAX {
            return Err(Error::InvalidRequest(format!(
                "the registry already holds the maximum of {TOPICS_MAX} topics"
            )));
        }
        // The same placement rule as a cluster's, over the one broker there is.
        let placement = place_replicas(&[self.broker_id], topic.partitions, 1, 0)?;
        let record = TopicRecord {
            name: topic.name.clone(),
            replication_factor: topic.replication_factor,
            configs: topic.configs.clone(),
            partitions: (0..topic.partitions)
                .zip(placement)
                .map(|(p, replicas)| {
                    let replicas: Vec<u32> = replicas.iter().map(|b| b.0).collect();
                    PartitionRecord {
                        partition: p,
                        leader: replicas.first().copied(),
                        isr: replicas.clone(),
                        replicas,
                        leader_epoch: 0,
                    }
                })
                .collect(),
        };
        let info = record.to_info();
        let mut next = state.clone();
        next.topics.push(record);
        self.commit(&mut state, next)?;
        Ok(info)
    }

    fn delete_topic(&self, name: &str) -> Result<TopicInfo> {
        let mut state = self.state.lock();
        let Some(i) = state.topics.iter().position(|t| t.name == name) else {
            return Err(Error::UnknownTopicOrPartition(format!(
                "topic {name} does not exist"
            )));
        };
        let info = state.topics[i].to_info();
        let mut next = state.clone();
        next.topics.remove(i);
        self.commit(&mut state, next)?;
        Ok(info)
    }

    fn credential(&self, user: &str) -> Option<ScramCredential> {
        self.state.lock().users.get(user).cloned()
    }

    fn users(&self) -> Result<Vec<(String, ScramCredential)>> {
        Ok(self
            .state
            .lock()
            .users
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn put_credential(&self, user: &str, credential: &ScramCredential) -> Result<()> {
        let mut state = self.state.lock();
        if state.users.len() >= USERS_MAX && !state.users.contains_key(user) {
            return Err(Error::InvalidRequest(format!(
                "the registry already has {USERS_MAX} users"
            )));
        }
        let mut next = state.clone();
        next.users.insert(user.to_owned(), credential.clone());
        self.commit(&mut state, next)
    }

    fn delete_credential(&self, user: &str) -> Result<bool> {
        let mut state = self.state.lock();
        if !state.users.contains_key(user) {
            return Ok(false);
        }
        let mut next = state.clone();
        next.users.remove(user);
        self.commit(&mut state, next)?;
        Ok(true)
    }

    fn acls(&self) -> Arc<Vec<AclBinding>> {
        self.acls.lock().clone()
    }

    fn add_acls(&self, acls: &[AclBinding]) -> Result<()> {
        let mut state = self.state.lock();
        let mut next = state.clone();
        for a in acls {
            if !next.acls.contains(a) {
                next.acls.push(a.clone());
            }
        }
        if next.acls.len() > ACLS_MAX {
            return Err(Error::InvalidRequest(format!(
                "the registry holds at most {ACLS_MAX} ACL bindings"
            )));
        }
        next.acls.sort();
        self.commit(&mut state, next)
    }

    fn remove_acls(&self, acls: &[AclBinding]) -> Result<usize> {
        let mut state = self.state.lock();
        let mut next = state.clone();
        next.acls.retain(|a| !acls.contains(a));
        let removed = state.acls.len() - next.acls.len();
        if removed > 0 {
            self.commit(&mut state, next)?;
        }
        Ok(removed)
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn allocate_producer_ids(&self, count: u32) -> Result<i64> {
        let mut state = self.state.lock();
        let first = state.next_producer_id;
        let mut next = state.clone();
        next.next_producer_id = super::producer_id_block_end(first, count)?;
        self.persist(&mut state, next)?;
        Ok(first)
    }

    fn alter_isr(
        &self,
        topic: &str,
        partition: u32,
        leader: BrokerId,
        leader_epoch: u32,
        isr: &[BrokerId],
    ) -> Result<PartitionInfo> {
        let mut state = self.state.lock();
        let Some(t) = state.topics.iter().position(|t| t.name == topic) else {
            return Err(Error::UnknownTopicOrPartition(format!(
                "topic {topic} does not exist"
            )));
        };
        let Some(p) = state.topics[t].partitions.get(partition as usize) else {
            return Err(Error::UnknownTopicOrPartition(format!(
                "{topic}-{partition} does not exist"
            )));
        };
        if p.leader != Some(leader.0) || p.leader_epoch != leader_epoch {
            return Err(Error::Remote {
                code: crate::ErrorCode::FencedLeaderEpoch,
                message: format!(
                    "{topic}-{partition}: broker {leader} at epoch {leader_epoch} no longer leads it"
                ),
            });
        }
        if !isr.contains(&leader) || isr.iter().any(|b| !p.replicas.contains(&b.0)) {
            return Err(Error::InvalidRequest(format!(
                "{topic}-{partition}: in-sync replicas {isr:?} must include the leader and be replicas"
            )));
        }
        let mut next = state.clone();
        next.topics[t].partitions[partition as usize].isr = isr.iter().map(|b| b.0).collect();
        self.commit(&mut state, next)?;
        Ok(state.topics[t].to_info().partitions[partition as usize].clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_topic(name: &str, partitions: u32) -> NewTopic {
        NewTopic {
            name: name.into(),
            partitions,
            replication_factor: 1,
            configs: BTreeMap::new(),
        }
    }

    #[test]
    fn state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let r = EmbeddedRegistry::open(dir.path(), BrokerId(1)).unwrap();
        r.register_broker(BrokerId(1), "127.0.0.1:1").unwrap();
        let t = r.create_topic(&new_topic("orders", 3)).unwrap();
        assert_eq!(t.partitions.len(), 3);
        assert_eq!(t.partitions[2].leader, Some(BrokerId(1)));
        r.create_topic(&new_topic("b", 1)).unwrap();
        assert!(matches!(
            r.create_topic(&new_topic("b", 1)),
            Err(Error::TopicAlreadyExists(_))
        ));
        r.delete_topic("b").unwrap();
        drop(r);
        let r = EmbeddedRegistry::open(dir.path(), BrokerId(1)).unwrap();
        let names: Vec<String> = r.topics().unwrap().into_iter().map(|t| t.name).collect();
        assert_eq!(names, ["orders"]);
        assert_eq!(r.brokers().unwrap()[0].address, "127.0.0.1:1");
        assert!(matches!(
            EmbeddedRegistry::open(dir.path(), BrokerId(2)),
            Err(Error::InvalidConfig { .. })
        ));
    }

    #[test]
    fn credentials_and_acls_survive_reopen() {
        use crate::acl::{AclOperation, AclPermission, PatternType, ResourceType};
        let dir = tempfile::tempdir().unwrap();
        let r = EmbeddedRegistry::open(dir.path(), BrokerId(1)).unwrap();
        let c = ScramCredential::new("pw", 4096).unwrap();
        r.put_credential("alice", &c).unwrap();
        let a = AclBinding::new(
            ResourceType::Topic,
            "orders-",
            PatternType::Prefixed,
            "User:alice",
            AclOperation::Write,
            AclPermission::Allow,
        );
        r.add_acls(&[a.clone(), a.clone()]).unwrap();
        assert_eq!(r.acls().len(), 1, "a binding is stored once");
        drop(r);
        let r = EmbeddedRegistry::open(dir.path(), BrokerId(1)).unwrap();
        assert!(r.credential("alice").unwrap().verify("pw"));
        assert_eq!(r.acls().as_slice(), std::slice::from_ref(&a));
        assert_eq!(r.remove_acls(&[a]).unwrap(), 1);
        assert!(r.acls().is_empty());
        assert!(r.delete_credential("alice").unwrap());
        assert!(!r.delete_credential("alice").unwrap());
        assert!(r.credential("alice").is_none());
    }

    #[test]
    fn producer_id_blocks_never_repeat_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let r = EmbeddedRegistry::open(dir.path(), BrokerId(1)).unwrap();
        assert_eq!(r.allocate_producer_ids(1000).unwrap(), 0);
        assert_eq!(r.allocate_producer_ids(1000).unwrap(), 1000);
        drop(r);
        let r = EmbeddedRegistry::open(dir.path(), BrokerId(1)).unwrap();
        assert_eq!(r.allocate_producer_ids(10).unwrap(), 2000);
        assert!(r.allocate_producer_ids(0).is_err());
    }

    #[test]
    fn rejects_bad_topics() {
        let dir = tempfile::tempdir().unwrap();
        let r = EmbeddedRegistry::open(dir.path(), BrokerId(0)).unwrap();
        assert!(matches!(
            r.create_topic(&new_topic("a b", 1)),
            Err(Error::InvalidTopic { .. })
        ));
        assert!(matches!(
            r.create_topic(&new_topic("a", 0)),
            Err(Error::InvalidPartitions(_))
        ));
        let mut t = new_topic("a", 1);
        t.replication_factor = 3;
        assert!(matches!(
            r.create_topic(&t),
            Err(Error::InvalidReplicationFactor(_))
        ));
        assert!(matches!(
            r.delete_topic("nope"),
            Err(Error::UnknownTopicOrPartition(_))
        ));
    }
}

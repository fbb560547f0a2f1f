//! The cluster metadata as it is stored in etcd (keys and JSON values, `docs/FORMAT.md` "Cluster
//! metadata in etcd") and the in-memory [`Snapshot`] every broker keeps of it.
//!
//! Pure: no I/O. The snapshot is built from a consistent `get` of the whole prefix at one revision
//! and then moved forward by applying the watch's events in revision order ([`Snapshot::apply`]),
//! so it is always the state of etcd at `snapshot.revision`.
//!
//! A value that does not parse, or is larger than [`REGISTRY_VALUE_BYTES_MAX`], is refused with a
//! warning and treated as absent: a bad key written by hand must not stop every broker.
//!
//! A partition key that is absent while its topic exists reads as the partition's initial state
//! (leader = first replica, isr = replicas, epoch 0) with `mod_revision` 0; `create_topic` writes
//! the keys in chunks (etcd bounds a transaction's operations), so this is the state between two
//! chunks, and a guarded write comparing `mod_revision == 0` replaces it exactly like a real key.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::acl::{AclBinding, AclEntry, PatternType, ResourcePattern, ResourceType};
use crate::limits::{ACLS_MAX, USERS_MAX};
use crate::limits::{
    PARTITIONS_PER_TOPIC_MAX, REGISTRY_BROKERS_MAX, REGISTRY_VALUE_BYTES_MAX,
    REPLICATION_FACTOR_MAX, TOPICS_MAX,
};
use crate::registry::{BrokerId, PartitionInfo, TopicInfo};
use crate::scram::{ScramCredential, validate_username};
use crate::topic::validate_topic_name;

/// The key layout under one root (the spec's chroot, default `/sluiceway`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Keys {
    /// `<root>/`: every key of the cluster starts with it.
    prefix: String,
}

/// A key of the layout, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Key {
    Broker(BrokerId),
    Controller,
    Topic(String),
    Partition(String, u32),
    /// `users/<name>`: a SCRAM credential.
    User(String),
    /// `acls/<ResourceType>/<PatternType>/<name>`: the entries of one resource pattern.
    Acl(ResourcePattern),
}

impl Keys {
    /// `root` has no trailing `/`.
    pub(crate) fn new(root: &str) -> Keys {
        Keys {
            prefix: format!("{root}/"),
        }
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn broker(&self, id: BrokerId) -> String {
        format!("{}brokers/{id}", self.prefix)
    }

    pub(crate) fn controller(&self) -> String {
        format!("{}controller", self.prefix)
    }

    pub(crate) fn topic(&self, name: &str) -> String {
        format!("{}topics/{name}", self.prefix)
    }

    pub(crate) fn partitions_prefix(&self, topic: &str) -> String {
        format!("{}partitions/{topic}/", self.prefix)
    }

    pub(crate) fn partition(&self, topic: &str, partition: u32) -> String {
        format!("{}partitions/{topic}/{partition}", self.prefix)
    }

    /// `producer_ids`: the first idempotent producer id not handed out yet (a decimal; absent:
    /// 0). Outside the snapshot: only `allocate_producer_ids` reads it, from etcd.
    pub(crate) fn producer_ids(&self) -> String {
        format!("{}producer_ids", self.prefix)
    }

    pub(crate) fn user(&self, name: &str) -> String {
        format!("{}users/{name}", self.prefix)
    }

    pub(crate) fn acl(&self, pattern: &ResourcePattern) -> String {
        format!(
            "{}acls/{}/{}/{}",
            self.prefix, pattern.resource_type, pattern.pattern_type, pattern.name
        )
    }

    /// `None` for keys outside the layout (they are ignored).
    pub(crate) fn parse(&self, key: &[u8]) -> Option<Key> {
        let rest = std::str::from_utf8(key).ok()?.strip_prefix(&self.prefix)?;
        if let Some(name) = rest.strip_prefix("users/") {
            return validate_username(name)
                .ok()
                .map(|()| Key::User(name.to_owned()));
        }
        if let Some(acl) = rest.strip_prefix("acls/") {
            let (rtype, acl) = acl.split_once('/')?;
            let (ptype, name) = acl.split_once('/')?;
            return Some(Key::Acl(ResourcePattern {
                resource_type: ResourceType::parse("resource type", rtype).ok()?,
                pattern_type: PatternType::parse("pattern type", ptype).ok()?,
                name: name.to_owned(),
            }));
        }
        if rest == "controller" {
            return Some(Key::Controller);
        }
        if let Some(id) = rest.strip_prefix("brokers/") {
            return parse_decimal(id).map(|id| Key::Broker(BrokerId(id)));
        }
        if let Some(name) = rest.strip_prefix("topics/") {
            return validate_topic_name(name)
                .ok()
                .map(|()| Key::Topic(name.to_owned()));
        }
        let (name, p) = rest.strip_prefix("partitions/")?.split_once('/')?;
        validate_topic_name(name).ok()?;
        let p = parse_decimal(p)?;
        (p < PARTITIONS_PER_TOPIC_MAX).then(|| Key::Partition(name.to_owned(), p))
    }
}

/// Canonical decimal only (`"01"` is not `1`), at most `i32::MAX` (a wire id).
fn parse_decimal(s: &str) -> Option<u32> {
    if s.is_empty() || (s.len() > 1 && s.starts_with('0')) || !s.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    s.parse::<u32>().ok().filter(|v| *v <= BrokerId::MAX.0)
}

/// The first key after every key that starts with `prefix` (etcd's range end for a prefix).
pub(crate) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// `<root>/brokers/<id>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BrokerValue {
    pub address: String,
}

/// `<root>/controller`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ControllerValue {
    pub broker_id: u32,
}

/// `<root>/topics/<name>`: the placement, fixed at creation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TopicValue {
    pub replication_factor: u32,
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
    /// `replicas[p]` are partition p's replicas, the preferred leader first.
    pub replicas: Vec<Vec<u32>>,
}

/// `<root>/partitions/<name>/<p>`: the part that changes (leader election, ISR changes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PartitionValue {
    pub leader: Option<u32>,
    pub leader_epoch: u32,
    pub isr: Vec<u32>,
}

impl TopicValue {
    /// The invariants of the registry module docs that one topic value can break.
    pub(crate) fn check(&self) -> Result<(), String> {
        let n = self.replicas.len();
        if n == 0 || n > PARTITIONS_PER_TOPIC_MAX as usize {
            return Err(format!("{n} partitions"));
        }
        if !(1..=REPLICATION_FACTOR_MAX).contains(&self.replication_factor) {
            return Err(format!("replication factor {}", self.replication_factor));
        }
        for (p, replicas) in self.replicas.iter().enumerate() {
            let distinct: BTreeSet<u32> = replicas.iter().copied().collect();
            if replicas.len() != self.replication_factor as usize
                || distinct.len() != replicas.len()
            {
                return Err(format!(
                    "partition {p} has replicas {replicas:?}, not {} distinct brokers",
                    self.replication_factor
                ));
            }
        }
        Ok(())
    }

    /// Partition p's state before any change: the first replica leads, every replica is in sync.
    pub(crate) fn initial_partition(&self, p: u32) -> PartitionValue {
        let replicas = &self.replicas[p as usize];
        PartitionValue {
            leader: replicas.first().copied(),
            leader_epoch: 0,
            isr: replicas.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BrokerEntry {
    pub address: String,
    /// The registration's create revision: a new incarnation has a new one.
    pub create_revision: i64,
    pub lease: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ControllerEntry {
    pub broker: BrokerId,
    /// The controller epoch: the key's create revision (every controller write compares it).
    pub epoch: i64,
    pub lease: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TopicEntry {
    pub value: TopicValue,
    pub create_revision: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PartitionEntry {
    pub value: PartitionValue,
    pub mod_revision: i64,
}

/// One partition as the controller sees it: the state and the revision a guarded write compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PartitionView {
    pub info: PartitionInfo,
    /// 0 when the key is absent (the initial state, see the module docs).
    pub mod_revision: i64,
}

/// The metadata at one etcd revision. See the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// The etcd revision this state reflects (the last applied event's).
    pub revision: i64,
    pub brokers: BTreeMap<BrokerId, BrokerEntry>,
    pub controller: Option<ControllerEntry>,
    pub topics: BTreeMap<String, TopicEntry>,
    /// By topic name; kept apart from `topics` so the order of events inside one revision does
    /// not matter.
    pub partitions: BTreeMap<String, BTreeMap<u32, PartitionEntry>>,
    pub users: BTreeMap<String, ScramCredential>,
    /// ACL entries by resource pattern, with the key's mod revision (guarded updates).
    pub acls: BTreeMap<ResourcePattern, (Vec<AclEntry>, i64)>,
    /// `acls` flattened, shared with the authorizer; rebuilt when an ACL key changes.
    pub acl_view: Arc<Vec<AclBinding>>,
}

/// One key-value event, as etcd reports it (a get's key-value is a `Put`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Event<'a> {
    pub key: &'a [u8],
    /// `None` for a delete.
    pub value: Option<&'a [u8]>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub lease: i64,
}

/// What applying an event changed that the controller must hear about as an edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Applied {
    Nothing,
    /// A broker's registration disappeared (lease expired or revoked): that incarnation failed.
    BrokerGone(BrokerId),
}

impl Snapshot {
    /// Applies one event. Values that do not parse or break the bounds are refused with a warning
    /// (the key then reads as absent).
    pub(crate) fn apply(&mut self, keys: &Keys, event: Event<'_>) -> Applied {
        self.revision = self.revision.max(event.mod_revision);
        let Some(key) = keys.parse(event.key) else {
            tracing::debug!(key = %String::from_utf8_lossy(event.key), "registry: ignoring a key outside the layout");
            return Applied::Nothing;
        };
        let value = match event.value {
            Some(v) if v.len() > REGISTRY_VALUE_BYTES_MAX => {
                tracing::warn!(
                    key = %String::from_utf8_lossy(event.key),
                    bytes = v.len(),
                    "registry: refusing a value larger than {REGISTRY_VALUE_BYTES_MAX} bytes"
                );
                None
            }
            v => v,
        };
        match key {
            Key::Broker(id) => {
                let parsed = value.and_then(|v| parse_value::<BrokerValue>(event.key, v));
                match parsed {
                    Some(b) => {
                        if self.brokers.len() >= REGISTRY_BROKERS_MAX
                            && !self.brokers.contains_key(&id)
                        {
                            tracing::warn!(broker = %id, "registry: more than {REGISTRY_BROKERS_MAX} brokers; ignoring this one");
                            return Applied::Nothing;
                        }
                        self.brokers.insert(
                            id,
                            BrokerEntry {
                                address: b.address,
                                create_revision: event.create_revision,
                                lease: event.lease,
                            },
                        );
                        Applied::Nothing
                    }
                    None => match self.brokers.remove(&id) {
                        Some(_) => Applied::BrokerGone(id),
                        None => Applied::Nothing,
                    },
                }
            }
            Key::Controller => {
                self.controller = value
                    .and_then(|v| parse_value::<ControllerValue>(event.key, v))
                    .filter(|c| c.broker_id <= BrokerId::MAX.0)
                    .map(|c| ControllerEntry {
                        broker: BrokerId(c.broker_id),
                        epoch: event.create_revision,
                        lease: event.lease,
                    });
                Applied::Nothing
            }
            Key::Topic(name) => {
                let parsed = value
                    .and_then(|v| parse_value::<TopicValue>(event.key, v))
                    .filter(|t| match t.check() {
                        Ok(()) => true,
                        Err(reason) => {
                            tracing::warn!(topic = %name, "registry: refusing an invalid topic value: {reason}");
                            false
                        }
                    });
                match parsed {
                    Some(value) => {
                        if self.topics.len() >= TOPICS_MAX && !self.topics.contains_key(&name) {
                            tracing::warn!(topic = %name, "registry: more than {TOPICS_MAX} topics; ignoring this one");
                            return Applied::Nothing;
                        }
                        self.topics.insert(
                            name,
                            TopicEntry {
                                value,
                                create_revision: event.create_revision,
                            },
                        );
                    }
                    None => {
                        self.topics.remove(&name);
                    }
                }
                Applied::Nothing
            }
            Key::Partition(name, p) => {
                match value.and_then(|v| parse_value::<PartitionValue>(event.key, v)) {
                    Some(value) => {
                        if self.partitions.len() >= TOPICS_MAX
                            && !self.partitions.contains_key(&name)
                        {
                            tracing::warn!(topic = %name, "registry: partition keys of more than {TOPICS_MAX} topics; ignoring");
                            return Applied::Nothing;
                        }
                        self.partitions.entry(name).or_default().insert(
                            p,
                            PartitionEntry {
                                value,
                                mod_revision: event.mod_revision,
                            },
                        );
                    }
                    None => {
                        if let Some(parts) = self.partitions.get_mut(&name) {
                            parts.remove(&p);
                            if parts.is_empty() {
                                self.partitions.remove(&name);
                            }
                        }
                    }
                }
                Applied::Nothing
            }
            Key::User(name) => {
                let parsed = value
                    .and_then(|v| parse_value::<ScramCredential>(event.key, v))
                    .filter(|c| match c.check() {
                        Ok(()) => true,
                        Err(reason) => {
                            tracing::warn!(user = %name, "registry: refusing an invalid credential: {reason}");
                            false
                        }
                    });
                match parsed {
                    Some(c) if self.users.len() < USERS_MAX || self.users.contains_key(&name) => {
                        self.users.insert(name, c);
                    }
                    Some(_) => {
                        tracing::warn!(user = %name, "registry: more than {USERS_MAX} users; ignoring this one")
                    }
                    None => {
                        self.users.remove(&name);
                    }
                }
                Applied::Nothing
            }
            Key::Acl(pattern) => {
                let parsed = value
                    .and_then(|v| parse_value::<Vec<AclEntry>>(event.key, v))
                    .filter(|entries| {
                        entries.iter().all(|e| {
                            let b = AclBinding {
                                pattern: pattern.clone(),
                                entry: e.clone(),
                            };
                            match b.validate() {
                                Ok(()) => true,
                                Err(reason) => {
                                    tracing::warn!(acl = %b, "registry: refusing an invalid ACL: {reason}");
                                    false
                                }
                            }
                        })
                    });
                match parsed {
                    Some(entries) if !entries.is_empty() => {
                        self.acls.insert(pattern, (entries, event.mod_revision));
                    }
                    _ => {
                        self.acls.remove(&pattern);
                    }
                }
                let mut view: Vec<AclBinding> = self
                    .acls
                    .iter()
                    .flat_map(|(p, (entries, _))| {
                        entries.iter().map(|e| AclBinding {
                            pattern: p.clone(),
                            entry: e.clone(),
                        })
                    })
                    .take(ACLS_MAX)
                    .collect();
                view.sort();
                self.acl_view = Arc::new(view);
                Applied::Nothing
            }
        }
    }

    /// One topic with every partition's current state.
    pub(crate) fn topic_info(&self, name: &str) -> Option<TopicInfo> {
        let entry = self.topics.get(name)?;
        Some(TopicInfo {
            name: name.to_owned(),
            replication_factor: entry.value.replication_factor,
            configs: entry.value.configs.clone(),
            partitions: self
                .partition_views(name, entry)
                .into_iter()
                .map(|v| v.info)
                .collect(),
        })
    }

    /// Every topic, sorted by name.
    pub(crate) fn topic_infos(&self) -> Vec<TopicInfo> {
        self.topics
            .keys()
            .filter_map(|name| self.topic_info(name))
            .collect()
    }

    /// A topic's partitions, in order, with the revisions a guarded write compares.
    pub(crate) fn partition_views(&self, name: &str, entry: &TopicEntry) -> Vec<PartitionView> {
        let stored = self.partitions.get(name);
        (0..entry.value.replicas.len() as u32)
            .map(|p| {
                let (value, mod_revision) = match stored.and_then(|s| s.get(&p)) {
                    Some(e) => (e.value.clone(), e.mod_revision),
                    None => (entry.value.initial_partition(p), 0),
                };
                PartitionView {
                    info: partition_info(p, &entry.value.replicas[p as usize], &value),
                    mod_revision,
                }
            })
            .collect()
    }
}

pub(crate) fn partition_info(p: u32, replicas: &[u32], value: &PartitionValue) -> PartitionInfo {
    PartitionInfo {
        partition: p,
        leader: value.leader.map(BrokerId),
        replicas: replicas.iter().copied().map(BrokerId).collect(),
        isr: value.isr.iter().copied().map(BrokerId).collect(),
        leader_epoch: value.leader_epoch,
    }
}

fn parse_value<T: serde::de::DeserializeOwned>(key: &[u8], value: &[u8]) -> Option<T> {
    match serde_json::from_slice(value) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(key = %String::from_utf8_lossy(key), "registry: refusing a value that does not parse: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put<'a>(key: &'a str, value: &'a str, rev: i64) -> Event<'a> {
        Event {
            key: key.as_bytes(),
            value: Some(value.as_bytes()),
            create_revision: rev,
            mod_revision: rev,
            lease: 7,
        }
    }

    fn delete(key: &str, rev: i64) -> Event<'_> {
        Event {
            key: key.as_bytes(),
            value: None,
            create_revision: 0,
            mod_revision: rev,
            lease: 0,
        }
    }

    #[test]
    fn users_and_acls_follow_their_keys() {
        use crate::acl::{AclOperation, AclPermission};
        let keys = Keys::new("/s");
        assert_eq!(
            keys.parse(b"/s/acls/Topic/Prefixed/orders-"),
            Some(Key::Acl(ResourcePattern {
                resource_type: ResourceType::Topic,
                name: "orders-".into(),
                pattern_type: PatternType::Prefixed,
            }))
        );
        assert_eq!(keys.parse(b"/s/acls/Topic/Sideways/x"), None);
        assert_eq!(
            keys.parse(b"/s/users/alice"),
            Some(Key::User("alice".into()))
        );
        let mut snap = Snapshot::default();
        let cred = serde_json::to_string(&ScramCredential::new("pw", 4096).unwrap()).unwrap();
        snap.apply(&keys, put("/s/users/alice", &cred, 2));
        assert!(snap.users["alice"].verify("pw"));
        snap.apply(&keys, put("/s/users/bob", "{\"mechanism\":\"MD5\"}", 3));
        assert!(
            !snap.users.contains_key("bob"),
            "an invalid credential is ignored"
        );
        let entries =
            r#"[{"principal":"User:alice","host":"*","operation":"Read","permission":"Allow"}]"#;
        snap.apply(&keys, put("/s/acls/Group/Literal/billing", entries, 4));
        assert_eq!(snap.acl_view.len(), 1);
        assert_eq!(snap.acl_view[0].entry.operation, AclOperation::Read);
        assert_eq!(snap.acl_view[0].entry.permission, AclPermission::Allow);
        snap.apply(&keys, delete("/s/acls/Group/Literal/billing", 5));
        assert!(snap.acl_view.is_empty());
        snap.apply(&keys, delete("/s/users/alice", 6));
        assert!(snap.users.is_empty());
    }

    #[test]
    fn keys_parse_only_the_layout() {
        let k = Keys::new("/sluiceway");
        assert_eq!(
            k.parse(k.broker(BrokerId(3)).as_bytes()),
            Some(Key::Broker(BrokerId(3)))
        );
        assert_eq!(k.parse(b"/sluiceway/controller"), Some(Key::Controller));
        assert_eq!(
            k.parse(b"/sluiceway/topics/a.b"),
            Some(Key::Topic("a.b".into()))
        );
        assert_eq!(
            k.parse(b"/sluiceway/partitions/a/12"),
            Some(Key::Partition("a".into(), 12))
        );
        for bad in [
            &b"/sluiceway/brokers/01"[..],
            b"/sluiceway/brokers/-1",
            b"/sluiceway/brokers/4294967295",
            b"/sluiceway/topics/a b",
            b"/sluiceway/partitions/a/4096",
            b"/sluiceway/partitions/a",
            b"/sluicewayx/controller",
            b"/other/controller",
        ] {
            assert_eq!(k.parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(prefix_end("/s/"), b"/s0");
    }

    #[test]
    fn snapshot_follows_events_and_reports_gone_brokers() {
        let k = Keys::new("/r");
        let mut s = Snapshot::default();
        assert_eq!(
            s.apply(&k, put("/r/brokers/1", r#"{"address":"h:1"}"#, 2)),
            Applied::Nothing
        );
        s.apply(&k, put("/r/controller", r#"{"broker_id":1}"#, 3));
        s.apply(
            &k,
            put(
                "/r/topics/t",
                r#"{"replication_factor":1,"configs":{},"replicas":[[1],[1]]}"#,
                4,
            ),
        );
        s.apply(
            &k,
            put(
                "/r/partitions/t/1",
                r#"{"leader":null,"leader_epoch":3,"isr":[1]}"#,
                5,
            ),
        );
        let t = s.topic_info("t").unwrap();
        // Partition 0 has no key: its initial state.
        assert_eq!(t.partitions[0].leader, Some(BrokerId(1)));
        assert_eq!(t.partitions[1].leader, None);
        assert_eq!(t.partitions[1].leader_epoch, 3);
        assert_eq!(s.controller.unwrap().epoch, 3);
        assert_eq!(s.revision, 5);
        // A bad value is refused: the topic reads as absent, nothing panics.
        s.apply(
            &k,
            put(
                "/r/topics/u",
                r#"{"replication_factor":2,"replicas":[[1,1]]}"#,
                6,
            ),
        );
        s.apply(&k, put("/r/topics/v", "not json", 7));
        assert_eq!(s.topic_infos().len(), 1);
        assert_eq!(
            s.apply(&k, delete("/r/brokers/1", 8)),
            Applied::BrokerGone(BrokerId(1))
        );
        assert_eq!(s.apply(&k, delete("/r/brokers/1", 9)), Applied::Nothing);
        s.apply(&k, delete("/r/topics/t", 10));
        s.apply(&k, delete("/r/partitions/t/1", 10));
        assert!(s.topics.is_empty() && s.partitions.is_empty());
    }
}

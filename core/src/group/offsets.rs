//! Group offsets: the internal `__consumer_offsets` topic, as Kafka ≥ 0.9 keeps it.
//!
//! Group progress must survive a partition moving to a member on another machine, so a group's
//! commits go to the broker as well as to the consumer's local store. Each commit request is
//! **one message set** appended to partition `partition_for_group(group)` of
//! `__consumer_offsets` — all of its offsets become durable together or not at all — and the
//! in-memory map is updated only after the append returned (so it never shows an offset the log
//! could lose). On start the store replays every partition from its log start.
//!
//! Records use Kafka's own offset-commit schemas, byte for byte (big-endian; a string is an
//! `i16` length then UTF-8 bytes):
//!
//! ```text
//! key   (version 1) = version i16 = 1 · group string · topic string · partition i32
//! value (version 1) = version i16 = 1 · offset i64 · metadata string · commit_timestamp i64
//!                     · expire_timestamp i64 (-1: none)
//! ```
//! A null value (tombstone) deletes the key (used when a topic is deleted).
//!
//! The logs of this topic must not be subject to time or size retention (it would drop live
//! commits); `GroupOffsetStore::open` forces both off. Instead they are compacted by snapshot
//! (see [`GroupOffsetStore`]): the log of a partition stays within about
//! `limits::OFFSETS_TOPIC_COMPACT_BYTES` plus one snapshot of its live state.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use super::{Assignor, GroupSnapshot, SnapshotMember, TopicPartition};
use crate::error::{Error, Result};
use crate::format::{self, Compression, MAGIC_V1, MessageSetBuilder};
use crate::limits::{
    GROUP_COMMIT_OFFSETS_MAX, GROUP_METADATA_BYTES_MAX, LOG_OVERHEAD_BYTES, MESSAGE_SET_BYTES_MAX,
    OFFSETS_SNAPSHOT_SET_BYTES_MAX, OFFSETS_TOPIC_COMPACT_BYTES,
};
use crate::partitioner::murmur2;
use crate::storage::{AppendInfo, Clock, LogConfig, PartitionLog};
use crate::types::{Offset, TimestampMs};

/// The internal topic's name (Kafka's).
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

const KEY_VERSION: i16 = 1;
const VALUE_VERSION: i16 = 1;
const GROUP_KEY_VERSION: i16 = 2;
const GROUP_VALUE_VERSION: i16 = 3;

/// One committed position: the offset of the next message the group will read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetCommit {
    pub offset: Offset,
    /// Free-form text the committer attaches (Kafka's `metadata`).
    pub metadata: String,
    pub commit_timestamp: TimestampMs,
}

/// The partition of `__consumer_offsets` that holds `group`'s commits (and, in a cluster, whose
/// leader coordinates the group).
pub fn partition_for_group(group: &str, partitions: u32) -> u32 {
    assert!(
        partitions > 0,
        "the offsets topic has at least one partition"
    );
    ((murmur2(group.as_bytes()) & 0x7fff_ffff) as u32) % partitions
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as i16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Kafka's offset-commit key, version 1.
pub fn encode_key(group: &str, tp: &TopicPartition) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + 2 + group.len() + 2 + tp.topic.len() + 4);
    out.extend_from_slice(&KEY_VERSION.to_be_bytes());
    put_str(&mut out, group);
    put_str(&mut out, &tp.topic);
    out.extend_from_slice(&(tp.partition as i32).to_be_bytes());
    out
}

/// Kafka's offset-commit value, version 1 (no expiry).
pub fn encode_value(commit: &OffsetCommit) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + 8 + 2 + commit.metadata.len() + 16);
    out.extend_from_slice(&VALUE_VERSION.to_be_bytes());
    out.extend_from_slice(&(commit.offset.0 as i64).to_be_bytes());
    put_str(&mut out, &commit.metadata);
    out.extend_from_slice(&commit.commit_timestamp.0.to_be_bytes());
    out.extend_from_slice(&(-1i64).to_be_bytes());
    out
}

/// A bounds-checked reader over a record's bytes.
struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(Error::corrupt(0, format!("{} record cut short", self.what)));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn i16(&mut self) -> Result<i16> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i64(&mut self) -> Result<i64> {
        let mut a = [0; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(i64::from_be_bytes(a))
    }

    fn string(&mut self) -> Result<String> {
        self.nullable_string()?.ok_or_else(|| {
            Error::corrupt(
                0,
                format!("{} record has a negative string length", self.what),
            )
        })
    }

    /// A string whose length -1 means null.
    fn nullable_string(&mut self) -> Result<Option<String>> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        let bytes = self.take(len as usize)?;
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|_| Error::corrupt(0, format!("{} record has a non-UTF-8 string", self.what)))
    }

    /// An `i32` length then that many bytes (-1: null, read as empty).
    fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(&[]);
        }
        self.take(len as usize)
    }

    /// An array's `i32` element count, checked against the bytes left (every element takes at
    /// least `min_element` bytes), so a corrupt count never drives a huge allocation.
    fn count(&mut self, min_element: usize) -> Result<usize> {
        let n = self.i32()?;
        if n < 0 || (n as usize).saturating_mul(min_element) > self.buf.len() {
            return Err(Error::corrupt(
                0,
                format!(
                    "{} record has an array count {n} beyond its bytes",
                    self.what
                ),
            ));
        }
        Ok(n as usize)
    }
}

/// A record key of the offsets topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordKey {
    /// Key versions 0 and 1: a committed offset of (group, partition).
    Offset(String, TopicPartition),
    /// Key version 2: a group's membership (Kafka's group-metadata record).
    Group(String),
}

/// Kafka's group-metadata key, version 2: `version i16 = 2 · group string`.
pub fn encode_group_key(group: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + group.len());
    out.extend_from_slice(&GROUP_KEY_VERSION.to_be_bytes());
    put_str(&mut out, group);
    out
}

/// Decodes any key of the offsets topic; `Ok(None)` for versions this store does not know.
pub fn decode_record_key(key: &[u8]) -> Result<Option<RecordKey>> {
    let mut r = Reader {
        buf: key,
        what: "offsets-topic key",
    };
    match r.i16()? {
        0 | 1 => {}
        GROUP_KEY_VERSION => return Ok(Some(RecordKey::Group(r.string()?))),
        _ => return Ok(None),
    }
    let group = r.string()?;
    let topic = r.string()?;
    let partition = r.i32()?;
    if partition < 0 {
        return Err(Error::corrupt(
            0,
            "offset-commit key has a negative partition",
        ));
    }
    Ok(Some(RecordKey::Offset(
        group,
        TopicPartition::new(topic, partition as u32),
    )))
}

fn put_i32(out: &mut Vec<u8>, v: i32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_i32(out, b.len() as i32);
    out.extend_from_slice(b);
}

/// Kafka's group-metadata value, version 3, for a consumer group, byte for byte:
///
/// ```text
/// version i16 = 3 · protocol_type string = "consumer" · generation i32
/// · protocol nullable string (the assignor) · leader nullable string (the first member)
/// · current_state_timestamp i64 = -1
/// · members i32 count, each: member_id string · group_instance_id nullable string = null
///   · client_id string · client_host string = "" · rebalance_timeout i32 · session_timeout i32
///   · subscription bytes · assignment bytes
/// ```
/// `subscription` is Kafka's ConsumerProtocolSubscription v0 (`version i16 = 0 · topics i32
/// count of strings · user_data bytes = null`), `assignment` its ConsumerProtocolAssignment v0
/// (`version i16 = 0 · i32 count of (topic string · i32 count of partition i32) · user_data
/// bytes = null`).
pub fn encode_group_value(s: &GroupSnapshot) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + s.members.len() * 128);
    out.extend_from_slice(&GROUP_VALUE_VERSION.to_be_bytes());
    put_str(&mut out, "consumer");
    put_i32(&mut out, s.generation as i32);
    put_str(&mut out, s.assignor.name());
    match s.members.first() {
        Some(m) => put_str(&mut out, &m.member_id),
        None => out.extend_from_slice(&(-1i16).to_be_bytes()),
    }
    out.extend_from_slice(&(-1i64).to_be_bytes());
    put_i32(&mut out, s.members.len() as i32);
    for m in &s.members {
        put_str(&mut out, &m.member_id);
        out.extend_from_slice(&(-1i16).to_be_bytes());
        put_str(&mut out, &m.client_id);
        put_str(&mut out, "");
        put_i32(&mut out, m.rebalance_timeout_ms.min(i32::MAX as u64) as i32);
        put_i32(&mut out, m.session_timeout_ms.min(i32::MAX as u64) as i32);
        let mut sub = Vec::new();
        sub.extend_from_slice(&0i16.to_be_bytes());
        put_i32(&mut sub, m.topics.len() as i32);
        for t in &m.topics {
            put_str(&mut sub, t);
        }
        put_i32(&mut sub, -1);
        put_bytes(&mut out, &sub);
        let mut by_topic: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for tp in &m.assignment {
            by_topic.entry(&tp.topic).or_default().push(tp.partition);
        }
        let mut asg = Vec::new();
        asg.extend_from_slice(&0i16.to_be_bytes());
        put_i32(&mut asg, by_topic.len() as i32);
        for (topic, partitions) in by_topic {
            put_str(&mut asg, topic);
            put_i32(&mut asg, partitions.len() as i32);
            for p in partitions {
                put_i32(&mut asg, p as i32);
            }
        }
        put_i32(&mut asg, -1);
        put_bytes(&mut out, &asg);
    }
    out
}

/// Decodes a group-metadata value (Kafka's versions 0–3; see [`encode_group_value`]).
pub fn decode_group_value(value: &[u8]) -> Result<GroupSnapshot> {
    let mut r = Reader {
        buf: value,
        what: "group-metadata value",
    };
    let version = r.i16()?;
    if !(0..=3).contains(&version) {
        return Err(Error::corrupt(
            0,
            format!("group-metadata value version {version} is not supported"),
        ));
    }
    let protocol_type = r.string()?;
    if protocol_type != "consumer" {
        return Err(Error::corrupt(
            0,
            format!("group-metadata protocol type {protocol_type:?} is not \"consumer\""),
        ));
    }
    let generation = r.i32()?;
    let protocol = r.nullable_string()?;
    let _leader = r.nullable_string()?;
    if version >= 2 {
        r.i64()?; // current_state_timestamp
    }
    let assignor = match protocol.as_deref() {
        None => Assignor::default(),
        Some(name) => Assignor::from_name(name).ok_or_else(|| {
            Error::corrupt(0, format!("group-metadata assignor {name:?} is unknown"))
        })?,
    };
    let n = r.count(2 + 2 + 2 + 4 + 4 + 4)?;
    let mut members = Vec::with_capacity(n);
    for _ in 0..n {
        let member_id = r.string()?;
        if version >= 3 {
            r.nullable_string()?; // group_instance_id
        }
        let client_id = r.string()?;
        let _client_host = r.string()?;
        let rebalance_timeout = if version >= 1 { Some(r.i32()?) } else { None };
        let session_timeout = r.i32()?;
        if session_timeout < 0 || rebalance_timeout.is_some_and(|t| t < 0) {
            return Err(Error::corrupt(
                0,
                "group-metadata member has a negative timeout",
            ));
        }
        let mut sub = Reader {
            buf: r.bytes()?,
            what: "consumer subscription",
        };
        sub.i16()?;
        let topic_count = sub.count(2)?;
        let mut topics = BTreeSet::new();
        for _ in 0..topic_count {
            topics.insert(sub.string()?);
        }
        let mut asg = Reader {
            buf: r.bytes()?,
            what: "consumer assignment",
        };
        asg.i16()?;
        let mut assignment = Vec::new();
        for _ in 0..asg.count(2 + 4)? {
            let topic = asg.string()?;
            for _ in 0..asg.count(4)? {
                let p = asg.i32()?;
                if p < 0 {
                    return Err(Error::corrupt(
                        0,
                        "consumer assignment has a negative partition",
                    ));
                }
                assignment.push(TopicPartition::new(topic.clone(), p as u32));
            }
        }
        members.push(SnapshotMember {
            member_id,
            client_id,
            topics,
            session_timeout_ms: session_timeout as u64,
            rebalance_timeout_ms: rebalance_timeout.unwrap_or(session_timeout) as u64,
            assignment,
        });
    }
    if generation < 0 {
        return Err(Error::corrupt(0, "group-metadata generation is negative"));
    }
    members.sort_by(|a, b| a.member_id.cmp(&b.member_id));
    Ok(GroupSnapshot {
        generation: generation as u32,
        assignor,
        members,
    })
}

/// Decodes an offset-commit key; `Ok(None)` for the other key kinds (group metadata, version
/// 2) and versions this store does not know.
pub fn decode_key(key: &[u8]) -> Result<Option<(String, TopicPartition)>> {
    Ok(match decode_record_key(key)? {
        Some(RecordKey::Offset(group, tp)) => Some((group, tp)),
        _ => None,
    })
}

/// Decodes a value (versions 0 and 1 of Kafka's schema).
pub fn decode_value(value: &[u8]) -> Result<OffsetCommit> {
    let mut r = Reader {
        buf: value,
        what: "offset-commit value",
    };
    let version = r.i16()?;
    if !(0..=1).contains(&version) {
        return Err(Error::corrupt(
            0,
            format!("offset-commit value version {version} is not supported"),
        ));
    }
    let offset = r.i64()?;
    if offset < 0 {
        return Err(Error::corrupt(
            0,
            "offset-commit value has a negative offset",
        ));
    }
    let metadata = r.string()?;
    let commit_timestamp = TimestampMs(r.i64()?);
    if version == 1 {
        r.i64()?; // expire_timestamp: Sluiceway does not expire commits.
    }
    Ok(OffsetCommit {
        offset: Offset(offset as u64),
        metadata,
        commit_timestamp,
    })
}

type GroupMap = BTreeMap<String, BTreeMap<TopicPartition, OffsetCommit>>;
/// The last persisted membership of each group.
type MetaMap = BTreeMap<String, GroupSnapshot>;

/// Where one partition of the offsets topic lives, as the store sees it: a log to replay, roll
/// and trim, and a way to append to it that returns only once the append is *committed*.
///
/// On one broker ([`LocalOffsetsLog`]) committed means durable under the log's flush policy. In
/// a cluster the broker implements it over the partition it leads: the append goes through the
/// leader's fenced append path and returns once the high watermark passed it (every in-sync
/// replica has it), so a commit acknowledged to a consumer survives the loss of the coordinator.
pub trait OffsetsLog: Send + Sync + std::fmt::Debug {
    /// The partition's log (replay, roll, segment deletion, size).
    fn log(&self) -> &PartitionLog;
    /// Appends `set` and returns once it is committed. A leader that lost the partition fails
    /// with [`Error::NotCoordinator`]; one whose replicas do not confirm in time with
    /// [`Error::CoordinatorNotAvailable`] (both retriable: the client finds the coordinator
    /// again).
    fn append_committed(&self, set: &mut [u8]) -> Result<AppendInfo>;
    /// Flush and close (a log the store owns); the broker closes the logs it hosts itself.
    fn close(&self) -> Result<()> {
        Ok(())
    }
    /// Periodic work (flush and roll timers) of a log the store owns.
    fn tick(&self) -> Result<()> {
        Ok(())
    }
}

/// A partition log this store owns on a single broker: committed = appended (and durable as
/// the flush policy says), so the high watermark follows the log end.
#[derive(Debug)]
pub struct LocalOffsetsLog(pub PartitionLog);

impl OffsetsLog for LocalOffsetsLog {
    fn log(&self) -> &PartitionLog {
        &self.0
    }

    fn append_committed(&self, set: &mut [u8]) -> Result<AppendInfo> {
        let info = self.0.append(set)?;
        self.0.set_high_watermark(info.last_offset.next());
        Ok(info)
    }

    fn close(&self) -> Result<()> {
        self.0.close()
    }

    fn tick(&self) -> Result<()> {
        self.0.tick()
    }
}

/// One loaded partition of the offsets topic: its log and the map replayed from it.
#[derive(Debug)]
struct Slot {
    log: Arc<dyn OffsetsLog>,
    /// Which load this is (the broker passes its leadership term): a partition led again after
    /// a gap is replayed again, since another leader may have appended in between.
    term: u64,
    /// Held across every append to `log` (commit, tombstones, snapshot) and the map update that
    /// follows, so the map applies changes in log order and a snapshot sees no concurrent
    /// commit. Separate from `map` so reads do not wait for a replicated append.
    append: Mutex<()>,
    map: Mutex<GroupMap>,
    meta: Mutex<MetaMap>,
    /// Bytes of the last snapshot written to this partition (0 before any).
    snapshot_bytes: AtomicU64,
}

/// The committed offsets of every group, backed by the `__consumer_offsets` partition logs.
///
/// **Which partitions are here.** On one broker ([`GroupOffsetStore::open`]) the store owns every
/// partition's log and all are loaded. In a cluster ([`GroupOffsetStore::unloaded`]) the
/// offsets topic is a replicated topic like any other, and this broker coordinates exactly the
/// groups whose partition ([`partition_for_group`]) it leads: the broker [`load`]s a partition
/// when it becomes its leader (replaying the log) and [`unload`]s it when it stops. Requests for
/// a group whose partition is not loaded fail with [`Error::NotCoordinator`] — Kafka's rule, so
/// exactly one broker coordinates a group at a time.
///
/// **Compaction by snapshot**: the log would otherwise grow by one record per committed
/// partition forever. When a partition's log exceeds `compact_bytes` (or twice its last
/// snapshot, whichever is larger) after an append, the store rolls the log, appends the
/// partition's complete current state (one record per live key, in sets of at most
/// `OFFSETS_SNAPSHOT_SET_BYTES_MAX`) and then deletes every segment wholly before the snapshot's
/// first offset (`PartitionLog::delete_segments_before`). Replaying from the new log start gives
/// the same map; a crash at any point is safe, because until the old segments are deleted the
/// snapshot only repeats values the older records already hold.
///
/// [`load`]: GroupOffsetStore::load
/// [`unload`]: GroupOffsetStore::unload
#[derive(Debug)]
pub struct GroupOffsetStore {
    /// `slots[p]` is partition p when loaded. The length is the topic's partition count.
    slots: RwLock<Vec<Option<Arc<Slot>>>>,
    compact_bytes: u64,
}

impl GroupOffsetStore {
    /// Opens (creating) `partitions` logs `__consumer_offsets-N` under `data_dir` and replays
    /// them (one broker: this store owns them). Retention is forced off, whatever `config`
    /// says; compaction starts above [`OFFSETS_TOPIC_COMPACT_BYTES`].
    pub fn open(
        data_dir: &Path,
        partitions: u32,
        config: LogConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<GroupOffsetStore> {
        GroupOffsetStore::open_with_compaction(
            data_dir,
            partitions,
            config,
            clock,
            OFFSETS_TOPIC_COMPACT_BYTES,
        )
    }

    /// As [`open`](Self::open), compacting a partition log once it is larger than `compact_bytes`
    /// (tests use a small bound).
    pub fn open_with_compaction(
        data_dir: &Path,
        partitions: u32,
        config: LogConfig,
        clock: Arc<dyn Clock>,
        compact_bytes: u64,
    ) -> Result<GroupOffsetStore> {
        if partitions == 0 {
            return Err(Error::InvalidConfig {
                key: "offsets.topic.num.partitions".into(),
                reason: "must be at least 1".into(),
            });
        }
        let config = offsets_log_config(config);
        let store = GroupOffsetStore::unloaded(compact_bytes);
        store.set_partition_count(partitions);
        for p in 0..partitions {
            let log = PartitionLog::open(
                data_dir.join(PartitionLog::dir_name(OFFSETS_TOPIC, p)),
                config.clone(),
                clock.clone(),
            )?;
            // Everything in this log was written by a completed commit of this broker.
            log.set_high_watermark(log.log_end_offset());
            store.load(p, Arc::new(LocalOffsetsLog(log)), 0)?;
        }
        Ok(store)
    }

    /// A store with no partition loaded and no partition count yet (a broker in a cluster: see
    /// the type's docs).
    pub fn unloaded(compact_bytes: u64) -> GroupOffsetStore {
        GroupOffsetStore {
            slots: RwLock::new(Vec::new()),
            compact_bytes,
        }
    }

    /// Sets the offsets topic's partition count (from the registry, the one source every
    /// broker agrees on). A change unloads everything: the group → partition map moved.
    pub fn set_partition_count(&self, partitions: u32) {
        let mut slots = self.slots.write();
        if slots.len() != partitions as usize {
            *slots = vec![None; partitions as usize];
        }
    }

    pub fn partition_count(&self) -> u32 {
        self.slots.read().len() as u32
    }

    /// Replays partition `p` from `log` and serves its groups from now on. `term` tells loads
    /// apart ([`loaded_term`](Self::loaded_term)).
    pub fn load(&self, p: u32, log: Arc<dyn OffsetsLog>, term: u64) -> Result<()> {
        let (map, meta) = replay(log.log())?;
        let slot = Arc::new(Slot {
            log,
            term,
            append: Mutex::new(()),
            map: Mutex::new(map),
            meta: Mutex::new(meta),
            snapshot_bytes: AtomicU64::new(0),
        });
        let mut slots = self.slots.write();
        let Some(s) = slots.get_mut(p as usize) else {
            return Err(Error::InvalidRequest(format!(
                "{OFFSETS_TOPIC}-{p} does not exist: the topic has {} partitions",
                slots.len()
            )));
        };
        *s = Some(slot);
        Ok(())
    }

    /// Stops serving partition `p`'s groups (this broker no longer leads it). Returns whether
    /// it was loaded.
    pub fn unload(&self, p: u32) -> bool {
        self.slots
            .write()
            .get_mut(p as usize)
            .and_then(Option::take)
            .is_some()
    }

    /// The `term` partition `p` was loaded with, `None` when not loaded.
    pub fn loaded_term(&self, p: u32) -> Option<u64> {
        self.slots
            .read()
            .get(p as usize)
            .and_then(|s| s.as_ref().map(|s| s.term))
    }

    /// The offsets partition of `group` (`None` before the partition count is known).
    pub fn partition_of(&self, group: &str) -> Option<u32> {
        let n = self.partition_count();
        (n > 0).then(|| partition_for_group(group, n))
    }

    /// Whether this store coordinates `group` now; [`Error::NotCoordinator`] if not.
    pub fn check_coordinator(&self, group: &str) -> Result<()> {
        self.slot(group).map(|_| ())
    }

    fn slot(&self, group: &str) -> Result<Arc<Slot>> {
        let slots = self.slots.read();
        if slots.is_empty() {
            return Err(Error::CoordinatorNotAvailable(format!(
                "the {OFFSETS_TOPIC} topic does not exist yet"
            )));
        }
        let p = partition_for_group(group, slots.len() as u32);
        slots[p as usize].clone().ok_or_else(|| {
            Error::NotCoordinator(format!(
                "this broker does not coordinate group {group:?}: it does not lead {OFFSETS_TOPIC}-{p}"
            ))
        })
    }

    fn loaded(&self) -> Vec<Arc<Slot>> {
        self.slots.read().iter().flatten().cloned().collect()
    }

    /// Durably records `offsets` for `group` as one message set; all or nothing.
    pub fn commit(&self, group: &str, offsets: &[(TopicPartition, OffsetCommit)]) -> Result<()> {
        if group.is_empty() {
            return Err(Error::InvalidRequest("a group id must not be empty".into()));
        }
        if offsets.is_empty() {
            return Ok(());
        }
        if offsets.len() > GROUP_COMMIT_OFFSETS_MAX {
            return Err(Error::InvalidRequest(format!(
                "{} offsets in one commit exceeds the limit of {GROUP_COMMIT_OFFSETS_MAX}",
                offsets.len()
            )));
        }
        let mut builder = MessageSetBuilder::new(MAGIC_V1, Compression::None);
        for (tp, commit) in offsets {
            if commit.metadata.len() > GROUP_METADATA_BYTES_MAX {
                return Err(Error::InvalidRequest(format!(
                    "commit metadata for {}-{} is {} bytes, over the limit of {GROUP_METADATA_BYTES_MAX}",
                    tp.topic,
                    tp.partition,
                    commit.metadata.len()
                )));
            }
            builder.push(
                commit.commit_timestamp,
                Some(&encode_key(group, tp)),
                Some(&encode_value(commit)),
            );
        }
        if builder.size_bytes() > MESSAGE_SET_BYTES_MAX as usize {
            return Err(Error::RecordListTooLarge {
                size: builder.size_bytes() as u64,
                max: u64::from(MESSAGE_SET_BYTES_MAX),
            });
        }
        let mut set = builder.finish()?;
        let slot = self.slot(group)?;
        // The append lock is held across the append and the map update, so two commits of one
        // group apply to the map in the order they reached the log.
        let _append = slot.append.lock();
        slot.log.append_committed(&mut set)?;
        {
            let mut map = slot.map.lock();
            let entry = map.entry(group.to_owned()).or_default();
            for (tp, commit) in offsets {
                entry.insert(tp.clone(), commit.clone());
            }
        }
        self.maybe_compact(&slot);
        Ok(())
    }

    /// Persists `group`'s membership (`Some`: a stable generation; `None`: the group has no
    /// members any more) as Kafka's group-metadata record, so the next coordinator of its
    /// partition restores it ([`group_snapshots`](Self::group_snapshots)). A snapshot older than
    /// the one stored (a slower writer of an earlier generation) is skipped, as is a membership
    /// too large for one record.
    pub fn store_group(&self, group: &str, snapshot: Option<&GroupSnapshot>) -> Result<()> {
        let slot = self.slot(group)?;
        let _append = slot.append.lock();
        {
            let meta = slot.meta.lock();
            let stored = meta.get(group);
            match snapshot {
                None if stored.is_none() => return Ok(()),
                Some(s) if stored.is_some_and(|old| old.generation > s.generation || old == s) => {
                    return Ok(());
                }
                _ => {}
            }
        }
        let value = snapshot.map(encode_group_value);
        if value
            .as_ref()
            .is_some_and(|v| v.len() > OFFSETS_SNAPSHOT_SET_BYTES_MAX as usize / 2)
        {
            tracing::warn!(
                group,
                "the group's membership is too large to persist; a new coordinator will rebalance it"
            );
            return Ok(());
        }
        let mut builder = MessageSetBuilder::new(MAGIC_V1, Compression::None);
        builder.push(
            TimestampMs::NONE,
            Some(&encode_group_key(group)),
            value.as_deref(),
        );
        let mut set = builder.finish()?;
        slot.log.append_committed(&mut set)?;
        {
            let mut meta = slot.meta.lock();
            match snapshot {
                Some(s) => meta.insert(group.to_owned(), s.clone()),
                None => meta.remove(group),
            };
        }
        self.maybe_compact(&slot);
        Ok(())
    }

    /// The persisted memberships of the groups of partition `p` (empty when not loaded).
    pub fn group_snapshots(&self, p: u32) -> Vec<(String, GroupSnapshot)> {
        let slot = self.slots.read().get(p as usize).cloned().flatten();
        slot.map(|s| {
            s.meta
                .lock()
                .iter()
                .map(|(g, m)| (g.clone(), m.clone()))
                .collect()
        })
        .unwrap_or_default()
    }

    /// The committed offsets of `group`, for `only` the given partitions if set.
    pub fn fetch(
        &self,
        group: &str,
        only: Option<&[TopicPartition]>,
    ) -> Result<BTreeMap<TopicPartition, OffsetCommit>> {
        let slot = self.slot(group)?;
        let map = slot.map.lock();
        let Some(all) = map.get(group) else {
            return Ok(BTreeMap::new());
        };
        Ok(match only {
            None => all.clone(),
            Some(tps) => tps
                .iter()
                .filter_map(|tp| all.get(tp).map(|c| (tp.clone(), c.clone())))
                .collect(),
        })
    }

    /// Every group with at least one committed offset in a loaded partition (in a cluster: the
    /// groups this broker coordinates).
    pub fn groups(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .loaded()
            .iter()
            .flat_map(|s| s.map.lock().keys().cloned().collect::<Vec<_>>())
            .collect();
        out.sort();
        out
    }

    /// Writes tombstones for every commit on `topic` (the topic was deleted), in the loaded
    /// partitions (in a cluster each partition's leader does it for its own).
    pub fn forget_topic(&self, topic: &str) -> Result<()> {
        for slot in self.loaded() {
            let _append = slot.append.lock();
            let mut builder = MessageSetBuilder::new(MAGIC_V1, Compression::None);
            for (group, commits) in slot.map.lock().iter() {
                for tp in commits.keys().filter(|tp| tp.topic == topic) {
                    builder.push(TimestampMs::NONE, Some(&encode_key(group, tp)), None);
                }
            }
            if builder.is_empty() {
                continue;
            }
            let mut set = builder.finish()?;
            slot.log.append_committed(&mut set)?;
            {
                let mut map = slot.map.lock();
                for commits in map.values_mut() {
                    commits.retain(|tp, _| tp.topic != topic);
                }
                map.retain(|_, commits| !commits.is_empty());
            }
            self.maybe_compact(&slot);
        }
        Ok(())
    }

    /// Bytes of every loaded partition log of the offsets topic.
    pub fn size_bytes(&self) -> u64 {
        self.loaded().iter().map(|s| s.log.log().size_bytes()).sum()
    }

    /// Compacts every loaded partition now, whatever its size (operators and tests).
    pub fn compact(&self) -> Result<()> {
        for slot in self.loaded() {
            let _append = slot.append.lock();
            compact_locked(&slot)?;
        }
        Ok(())
    }

    /// With the slot's append lock held, after an append: compacts when the log is over its
    /// bound. A failed compaction does not fail the append that preceded it (that is committed
    /// already); it is logged, and the next append tries again.
    fn maybe_compact(&self, slot: &Slot) {
        let bound = self.compact_bytes.max(
            slot.snapshot_bytes
                .load(Ordering::Relaxed)
                .saturating_mul(2),
        );
        if slot.log.log().size_bytes() <= bound {
            return;
        }
        if let Err(e) = compact_locked(slot) {
            tracing::warn!(dir = %slot.log.log().dir().display(), error = %e, "compacting the offsets log failed");
        }
    }

    /// Flush and close every loaded log the store owns (clean shutdown).
    pub fn close(&self) -> Result<()> {
        for slot in self.loaded() {
            slot.log.close()?;
        }
        Ok(())
    }

    /// Periodic work: the owned logs' flush and roll timers.
    pub fn tick(&self) -> Result<()> {
        for slot in self.loaded() {
            slot.log.tick()?;
        }
        Ok(())
    }
}

/// The log configuration of an offsets partition: the broker's, without time or size retention
/// (it would drop live commits; compaction by snapshot bounds the log instead).
pub fn offsets_log_config(mut config: LogConfig) -> LogConfig {
    config.retention_ms = None;
    config.retention_bytes = None;
    config
}

/// With the slot's append lock held: roll, append the map whole as a snapshot, delete every
/// segment before it. See [`GroupOffsetStore`].
fn compact_locked(slot: &Slot) -> Result<()> {
    let log = slot.log.log();
    // A copy of the state: the snapshot's appends may wait for replicas, and reads must not.
    let map = slot.map.lock().clone();
    let meta = slot.meta.lock().clone();
    let before = log.size_bytes();
    log.roll()?;
    let first = log.log_end_offset();
    let mut written = 0u64;
    let mut builder = MessageSetBuilder::new(MAGIC_V1, Compression::None);
    let mut flush = |builder: MessageSetBuilder| -> Result<()> {
        let mut set = builder.finish()?;
        written += set.len() as u64;
        slot.log.append_committed(&mut set)?;
        Ok(())
    };
    let records = map
        .iter()
        .flat_map(|(group, commits)| {
            commits.iter().map(move |(tp, commit)| {
                (
                    commit.commit_timestamp,
                    encode_key(group, tp),
                    encode_value(commit),
                )
            })
        })
        .chain(meta.iter().map(|(group, snapshot)| {
            (
                TimestampMs::NONE,
                encode_group_key(group),
                encode_group_value(snapshot),
            )
        }));
    for (timestamp, key, value) in records {
        let entry =
            LOG_OVERHEAD_BYTES as usize + format::message_size(MAGIC_V1, Some(&key), Some(&value));
        if !builder.is_empty()
            && builder.size_bytes() + entry > OFFSETS_SNAPSHOT_SET_BYTES_MAX as usize
        {
            flush(std::mem::replace(
                &mut builder,
                MessageSetBuilder::new(MAGIC_V1, Compression::None),
            ))?;
        }
        builder.push(timestamp, Some(&key), Some(&value));
    }
    if !builder.is_empty() {
        flush(builder)?;
    }
    // Never past the high watermark: the log start stays at or below it (a new leader may
    // still hold an uncommitted tail of its predecessor's).
    let deleted = log.delete_segments_before(first.min(log.high_watermark()))?;
    slot.snapshot_bytes.store(written, Ordering::Relaxed);
    tracing::info!(
        dir = %log.dir().display(),
        before_bytes = before,
        after_bytes = log.size_bytes(),
        snapshot_bytes = written,
        deleted_segments = deleted,
        "compacted the offsets log"
    );
    Ok(())
}

/// Rebuilds the map from a log, oldest first, so the last commit of each key wins.
fn replay(log: &PartitionLog) -> Result<(GroupMap, MetaMap)> {
    let mut map = GroupMap::new();
    let mut meta = MetaMap::new();
    let mut next = log.log_start_offset();
    let end = log.log_end_offset();
    let mut scratch = Vec::new();
    while next < end {
        let read = log.read(next, MESSAGE_SET_BYTES_MAX, end)?;
        if read.bytes.is_empty() {
            break;
        }
        let mut failure = None;
        format::for_each_record(&read.bytes, &mut scratch, |record| {
            next = record.offset.next();
            if failure.is_some() {
                return;
            }
            let Some(key) = record.key else { return };
            match decode_record_key(key) {
                Ok(Some(RecordKey::Group(group))) => match record.value {
                    None => {
                        meta.remove(&group);
                    }
                    // A membership record only spares a rebalance: one this broker cannot read
                    // (another client's protocol, say) is skipped, not a reason to leave the
                    // partition's groups without a coordinator.
                    Some(value) => match decode_group_value(value) {
                        Ok(snapshot) => {
                            meta.insert(group, snapshot);
                        }
                        Err(e) => {
                            tracing::warn!(%group, error = %e, "skipping an unreadable group-metadata record; the group will rebalance");
                            meta.remove(&group);
                        }
                    },
                },
                Ok(Some(RecordKey::Offset(group, tp))) => match record.value {
                    None => {
                        if let Some(commits) = map.get_mut(&group) {
                            commits.remove(&tp);
                            if commits.is_empty() {
                                map.remove(&group);
                            }
                        }
                    }
                    Some(value) => match decode_value(value) {
                        Ok(commit) => {
                            map.entry(group).or_default().insert(tp, commit);
                        }
                        Err(e) => failure = Some(e),
                    },
                },
                Ok(None) => {}
                Err(e) => failure = Some(e),
            }
        })?;
        if let Some(e) = failure {
            return Err(Error::InvalidRequest(format!(
                "{OFFSETS_TOPIC} in {} holds an unreadable record: {e}",
                log.dir().display()
            )));
        }
    }
    Ok((map, meta))
}

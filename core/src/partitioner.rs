//! Choosing a partition for a record, as Kafka's producer does, so that a key lands on the same
//! partition number as with a Kafka client:
//!
//! 1. the record's explicit partition, if it has one;
//! 2. else, for a keyed record, Kafka's default partitioner: `(murmur2(key) & 0x7fffffff) % n`;
//! 3. else *sticky* (Kafka's KIP-480): keyless records of a topic stick to one partition until
//!    `batch.size` bytes or one `linger.ms` window went to it, then move to the next partition
//!    round-robin — full batches, spread evenly.
//!
//! [`Partitioner`] holds the sticky state of every topic; the producer keeps one behind a lock
//! and takes a [`TopicPartitioner`] once per run of records of one topic. Pure: the caller
//! passes the clock reading, so tests drive it exactly. `group::offsets` uses [`murmur2`] too
//! (a group's `__consumer_offsets` partition).

use rustc_hash::FxHashMap;
use std::time::{Duration, Instant};

/// Kafka's `Utils.murmur2` (MurmurHash2, 32-bit, seed `0x9747b28c`), bit for bit.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks for `key` among `partitions` (> 0).
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    assert!(partitions > 0, "a topic has at least one partition");
    ((murmur2(key) & 0x7fff_ffff) as u32) % partitions
}

/// The partition rules 1 and 2 decide (module docs), with no state: `None` for a keyless record
/// without an explicit partition, which the sticky state decides.
pub fn stateless_partition(
    explicit: Option<u32>,
    key: Option<&[u8]>,
    partitions: u32,
) -> Option<u32> {
    match (explicit, key) {
        (Some(p), _) => Some(p),
        (None, Some(k)) => Some(partition_for_key(k, partitions)),
        (None, None) => None,
    }
}

/// Where keyless records of one topic currently go.
#[derive(Debug, Clone, Copy)]
struct Sticky {
    partition: u32,
    bytes: usize,
    since: Instant,
}

/// The producer's partitioner: the rules of the module docs, with the sticky state of every
/// topic it has sent keyless records to.
#[derive(Debug)]
pub struct Partitioner {
    /// `batch.size`: bytes a sticky partition takes before the next one.
    batch_bytes: usize,
    /// `linger.ms`: how long a sticky partition is kept at most.
    linger: Duration,
    topics: FxHashMap<String, Option<Sticky>>,
}

/// One topic's view of a [`Partitioner`] (see [`Partitioner::topic`]).
#[derive(Debug)]
pub struct TopicPartitioner<'a> {
    batch_bytes: usize,
    linger: Duration,
    sticky: &'a mut Option<Sticky>,
}

impl Partitioner {
    pub fn new(batch_bytes: usize, linger: Duration) -> Partitioner {
        Partitioner {
            batch_bytes,
            linger,
            topics: FxHashMap::default(),
        }
    }

    /// The partitioner of `topic`: one map lookup for a whole run of the topic's records.
    pub fn topic(&mut self, topic: &str) -> TopicPartitioner<'_> {
        // `entry` would allocate the key on every call; a topic is inserted once.
        #[allow(clippy::map_entry)]
        if !self.topics.contains_key(topic) {
            self.topics.insert(topic.to_owned(), None);
        }
        let sticky = self
            .topics
            .get_mut(topic)
            .expect("the topic's state was inserted above");
        TopicPartitioner {
            batch_bytes: self.batch_bytes,
            linger: self.linger,
            sticky,
        }
    }
}

impl TopicPartitioner<'_> {
    /// The partition for one record of `size` bytes among `partitions` (> 0) at `now`.
    pub fn partition(
        &mut self,
        explicit: Option<u32>,
        key: Option<&[u8]>,
        partitions: u32,
        size: usize,
        now: Instant,
    ) -> u32 {
        if let Some(p) = stateless_partition(explicit, key, partitions) {
            return p;
        }
        assert!(partitions > 0, "a topic has at least one partition");
        let s = match self.sticky {
            Some(s)
                if s.partition < partitions
                    && s.bytes + size <= self.batch_bytes.max(1)
                    && now < s.since + self.linger.max(Duration::from_millis(1)) =>
            {
                s
            }
            Some(s) => {
                *s = Sticky {
                    partition: (s.partition + 1) % partitions,
                    bytes: 0,
                    since: now,
                };
                s
            }
            None => self.sticky.insert(Sticky {
                partition: 0,
                bytes: 0,
                since: now,
            }),
        };
        s.bytes += size;
        s.partition
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's `UtilsTest.testMurmur2` vectors.
    #[test]
    fn kafka_murmur2_vectors() {
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (input, want) in cases {
            assert_eq!(murmur2(input), *want, "{}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn explicit_partition_wins_then_key_hash() {
        let now = Instant::now();
        let mut p = Partitioner::new(100, Duration::ZERO);
        let mut t = p.topic("t");
        assert_eq!(t.partition(Some(2), Some(b"a"), 6, 10, now), 2);
        assert_eq!(
            t.partition(None, Some(b"hello"), 6, 10, now),
            partition_for_key(b"hello", 6)
        );
        assert!(
            t.sticky.is_none(),
            "keyed records leave the sticky state alone"
        );
    }

    #[test]
    fn keyless_records_stick_for_a_batch_then_rotate_evenly() {
        let now = Instant::now();
        let linger = Duration::from_secs(10);
        // Batches of 3 records of 10 bytes over 3 partitions.
        let mut p = Partitioner::new(30, linger);
        let got: Vec<u32> = (0..18)
            .map(|_| p.topic("t").partition(None, None, 3, 10, now))
            .collect();
        assert_eq!(got, [0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 0, 0, 1, 1, 1, 2, 2, 2]);
        // A new linger window moves on even when the batch is not full.
        let later = now + linger;
        let mut t = p.topic("t");
        assert_eq!(t.partition(None, None, 3, 10, later), 0);
        assert_eq!(t.partition(None, None, 3, 10, later), 0);
        // Each topic has its own sticky partition.
        assert_eq!(p.topic("u").partition(None, None, 3, 10, later), 0);
    }

    /// Conformance C2's vectors: Kafka's default partitioner over 6 partitions, computed by an
    /// independent (Python) transcription of Kafka's `Utils.murmur2` that reproduces Kafka's own
    /// `UtilsTest` vectors: `(murmur2(key) & 0x7fffffff) % 6`.
    #[test]
    fn kafka_partition_vectors_for_c2() {
        let want: &[(&str, u32)] = &[
            ("a", 4),
            ("b", 2),
            ("hello", 3),
            ("sluiceway", 4),
            ("0", 2),
            ("1", 3),
            ("2", 2),
            ("3", 5),
            ("4", 1),
            ("5", 0),
            ("6", 4),
            ("7", 3),
            ("8", 3),
            ("9", 5),
        ];
        for (k, p) in want {
            assert_eq!(
                stateless_partition(None, Some(k.as_bytes()), 6),
                Some(*p),
                "key {k}"
            );
        }
    }
}

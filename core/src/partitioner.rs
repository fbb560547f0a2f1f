//! Choosing a partition for a message, as Kafka's default partitioner does, so that a key lands
//! on the same partition number as with a Kafka client: `(murmur2(key) & 0x7fffffff) % n`.
//! Keyless messages go round-robin. The command-line producer and the client core share this.

use std::sync::atomic::{AtomicU32, Ordering};

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

/// Key hash for keyed messages, round-robin for the rest.
#[derive(Debug, Default)]
pub struct Partitioner {
    next: AtomicU32,
}

impl Partitioner {
    pub fn new() -> Partitioner {
        Partitioner::default()
    }

    /// The partition for one message among `partitions` (> 0).
    pub fn partition(&self, key: Option<&[u8]>, partitions: u32) -> u32 {
        match key {
            Some(key) => partition_for_key(key, partitions),
            None => {
                assert!(partitions > 0, "a topic has at least one partition");
                self.next.fetch_add(1, Ordering::Relaxed) % partitions
            }
        }
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
    fn round_robin_cycles() {
        let p = Partitioner::new();
        let got: Vec<u32> = (0..6).map(|_| p.partition(None, 3)).collect();
        assert_eq!(got, [0, 1, 2, 0, 1, 2]);
        assert_eq!(
            p.partition(Some(b"foobar"), 7),
            partition_for_key(b"foobar", 7)
        );
    }
}

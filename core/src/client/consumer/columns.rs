//! Fetched sets decoded into columns, and the two shapes `poll` hands them out in.
//!
//! The `poll` that reaches a fetched set decodes it once into a [`DecodedSet`]: per record an
//! offset, a timestamp and two spans (key, value) into the fetched bytes — no object, no
//! reference count and no allocation per record. Records of a compressed wrapper are copied
//! out of the decompression buffer into one buffer per set. Polls then drain ranges of it into
//! a [`RecordSink`]: a `Vec<ConsumerRecord>` (the Rust API: zero-copy `Bytes` slices of the
//! fetched set) or [`RecordColumns`] (bindings: a few vectors per poll, whatever the number of
//! records, so a binding crosses its language boundary with a handful of values).

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use super::{ConsumerRecord, RecordHeader};
use crate::error::{Error, Result};
use crate::format::{Crcs, TimestampType, for_each_record_with};
use crate::types::Offset;

/// The records of one poll in columns: record `i` is at index `i` of every per-record vector.
/// Keys and header values are end to end in one buffer each, with their lengths (-1 for null)
/// beside them, so a binding hands them out as views of one buffer. Values are not copied at
/// all: they are views of the fetched bytes, which `value_buffers` holds (a binding hands each
/// buffer to its language once, as kafkajs's values are views of its fetch response).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordColumns {
    /// The poll's topics: record `i`'s is `topics[topic_index[i]]`.
    pub topics: Vec<Arc<str>>,
    pub topic_index: Vec<u32>,
    pub partitions: Vec<u32>,
    pub offsets: Vec<u64>,
    /// Ms since the epoch (−1 for magic-0 messages).
    pub timestamps: Vec<i64>,
    pub timestamp_types: Vec<TimestampType>,
    /// Record `i`'s key is the next `key_lengths[i]` bytes of `keys` (none for -1).
    pub keys: Vec<u8>,
    pub key_lengths: Vec<i32>,
    /// Record `i`'s value is `value_buffers[value_buffer[i]][value_starts[i]..]`, its first
    /// `value_lengths[i]` bytes (none for -1, empty for 0: then the buffer and start are 0).
    /// Buffers never overlap, within a poll or across polls: each covers the values of a run
    /// of records, and a record is drained once.
    pub value_buffers: Vec<Bytes>,
    pub value_buffer: Vec<u32>,
    pub value_starts: Vec<u32>,
    pub value_lengths: Vec<i32>,
    /// Record `i` has the next `header_counts[i]` headers; empty when no record of the poll
    /// has any (magic 0/1 records never do).
    pub header_counts: Vec<u32>,
    pub header_keys: Vec<String>,
    /// Header values end to end, with their lengths (-1 for null), as keys and values.
    pub header_values: Vec<u8>,
    pub header_value_lengths: Vec<i32>,
}

impl RecordColumns {
    /// Appends the values of `records` of `set` as views: one buffer for those in the fetched
    /// bytes and one for those inflated out of compressed wrappers, each the smallest slice
    /// covering them, so the buffers of successive polls of one set are disjoint (each starts
    /// at a different address: a language runtime may register a buffer's memory only once).
    /// Empty values need no buffer.
    fn push_values(&mut self, set: &DecodedSet, records: Range<usize>) {
        let n = set.set.len() as u32;
        let spans = &set.values[records];
        // Per source (the fetched bytes, the inflated ones): the index of the buffer covering
        // this run's values there, and its first byte.
        let mut buffers: [Option<(u32, u32)>; 2] = [None, None];
        for (k, buffer) in buffers.iter_mut().enumerate() {
            let inflated = k == 1;
            let mine = |s: &&Span| s.len != NULL && s.len > 0 && (s.start >= n) == inflated;
            let lo = spans.iter().filter(mine).map(|s| s.start).min();
            let hi = spans.iter().filter(mine).map(|s| s.start + s.len).max();
            let (Some(lo), Some(hi)) = (lo, hi) else {
                continue;
            };
            let (source, base) = match inflated {
                false => (&set.set, 0),
                true => (&set.inflated, n),
            };
            *buffer = Some((self.value_buffers.len() as u32, lo));
            self.value_buffers
                .push(source.slice((lo - base) as usize..(hi - base) as usize));
        }
        self.value_buffer.reserve(spans.len());
        self.value_starts.reserve(spans.len());
        self.value_lengths.reserve(spans.len());
        for s in spans {
            let (buffer, start, len) = match s.len {
                NULL => (0, 0, -1),
                0 => (0, 0, 0),
                len => {
                    let (index, lo) = buffers[usize::from(s.start >= n)]
                        .expect("a buffer covers every non-empty value");
                    // Spans are below 4 GiB and a record below MESSAGE_SET_BYTES_MAX < 2^31.
                    (index, s.start - lo, len as i32)
                }
            };
            self.value_buffer.push(buffer);
            self.value_starts.push(start);
            self.value_lengths.push(len);
        }
    }

    /// The number of records.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }
}

/// Where a key, value or header value is: `start..start + len` of the set's bytes followed by
/// its inflated bytes (see [`DecodedSet::bytes`]); `len == NULL` for null.
#[derive(Clone, Copy, Debug)]
struct Span {
    start: u32,
    len: u32,
}

const NULL: u32 = u32::MAX;

/// A fetched set decoded into columns, drained front to back by polls.
#[derive(Debug, Default)]
pub(super) struct DecodedSet {
    set: Bytes,
    /// Keys and values of records from compressed wrappers, copied out of the decompression
    /// buffer (spans past `set.len()` point here).
    inflated: Bytes,
    offsets: Vec<u64>,
    timestamps: Vec<i64>,
    timestamp_types: Vec<TimestampType>,
    keys: Vec<Span>,
    values: Vec<Span>,
    /// Per record, empty when no record of the set has headers.
    header_counts: Vec<u32>,
    headers: Vec<(String, Span)>,
    /// The first record not drained yet, and its first header.
    next: usize,
    next_header: usize,
}

impl DecodedSet {
    /// Decodes `set` (CRCs checked as `crcs` says) keeping records at or after `from`.
    pub(super) fn decode(set: Bytes, from: u64, crcs: Crcs) -> Result<DecodedSet> {
        let mut d = DecodedSet::default();
        let mut inflated = Vec::new();
        let mut scratch = Vec::new();
        let base = set.as_ptr() as usize;
        let set_len = set.len();
        let mut too_large = false;
        let mut has_headers = false;
        // A span of `b`: in place when `b` lies in the fetched set, else copied to `inflated`.
        let mut span = |inflated: &mut Vec<u8>, b: Option<&[u8]>| -> Span {
            let Some(b) = b else {
                return Span {
                    start: 0,
                    len: NULL,
                };
            };
            let p = (b.as_ptr() as usize).wrapping_sub(base);
            let start = if p < set_len && p + b.len() <= set_len {
                p
            } else {
                inflated.extend_from_slice(b);
                set_len + inflated.len() - b.len()
            };
            match (u32::try_from(start), u32::try_from(b.len())) {
                (Ok(start), Ok(len)) if len != NULL && start.checked_add(len).is_some() => {
                    Span { start, len }
                }
                _ => {
                    too_large = true;
                    Span { start: 0, len: 0 }
                }
            }
        };
        for_each_record_with(&set, crcs, &mut scratch, |r| {
            if r.offset.0 < from {
                return;
            }
            d.offsets.push(r.offset.0);
            d.timestamps.push(r.timestamp.0);
            d.timestamp_types.push(r.timestamp_type);
            d.keys.push(span(&mut inflated, r.key));
            d.values.push(span(&mut inflated, r.value));
            // Header counts exist from the first record with headers on (zeros before it).
            if !r.headers.is_empty() && !has_headers {
                has_headers = true;
                d.header_counts.resize(d.offsets.len() - 1, 0);
            }
            if has_headers {
                d.header_counts.push(r.headers.len() as u32);
                for h in r.headers {
                    let value = span(&mut inflated, h.value);
                    d.headers.push((h.key.to_owned(), value));
                }
            }
        })?;
        if too_large {
            return Err(Error::corrupt(
                0,
                "a fetched set decodes to more than 4 GiB of keys and values",
            ));
        }
        d.set = set;
        d.inflated = Bytes::from(inflated);
        Ok(d)
    }

    /// Records not drained yet.
    pub(super) fn remaining(&self) -> usize {
        self.offsets.len() - self.next
    }

    /// The offset of the next record to drain, if any.
    pub(super) fn next_offset(&self) -> Option<u64> {
        self.offsets.get(self.next).copied()
    }

    /// The offset of the last record drained, if any.
    pub(super) fn last_drained(&self) -> Option<u64> {
        self.next.checked_sub(1).map(|i| self.offsets[i])
    }

    /// Marks the next `n` records drained.
    pub(super) fn advance(&mut self, n: usize) {
        let end = self.next + n;
        if !self.header_counts.is_empty() {
            self.next_header += self.header_counts[self.next..end]
                .iter()
                .map(|&c| c as usize)
                .sum::<usize>();
        }
        self.next = end;
    }

    fn bytes(&self, s: Span) -> Option<&[u8]> {
        if s.len == NULL {
            return None;
        }
        let (start, len) = (s.start as usize, s.len as usize);
        let n = self.set.len();
        Some(if start < n {
            &self.set[start..start + len]
        } else {
            &self.inflated[start - n..start - n + len]
        })
    }

    /// A span as `Bytes` sharing the set's (or the inflated) buffer.
    fn shared(&self, s: Span) -> Option<Bytes> {
        if s.len == NULL {
            return None;
        }
        let (start, len) = (s.start as usize, s.len as usize);
        let n = self.set.len();
        Some(if start < n {
            self.set.slice(start..start + len)
        } else {
            self.inflated.slice(start - n..start - n + len)
        })
    }

    /// The records `next..next + n` and their headers.
    fn pending(&self, n: usize) -> (Range<usize>, usize) {
        (self.next..self.next + n, self.next_header)
    }
}

/// Where a poll puts the records it drains.
pub(super) trait RecordSink: Default {
    fn len(&self) -> usize;

    /// Appends the next `n` records of `set` (not yet marked drained).
    fn extend(&mut self, topic: &Arc<str>, partition: u32, set: &DecodedSet, n: usize);
}

impl RecordSink for Vec<ConsumerRecord> {
    fn len(&self) -> usize {
        Vec::len(self)
    }

    fn extend(&mut self, topic: &Arc<str>, partition: u32, set: &DecodedSet, n: usize) {
        let (records, mut h) = set.pending(n);
        self.reserve(n);
        for i in records {
            let count = set.header_counts.get(i).map_or(0, |&c| c as usize);
            let headers = set.headers[h..h + count]
                .iter()
                .map(|(key, value)| RecordHeader {
                    key: key.clone(),
                    value: set.shared(*value),
                })
                .collect();
            h += count;
            self.push(ConsumerRecord {
                topic: topic.clone(),
                partition,
                offset: Offset(set.offsets[i]),
                timestamp: set.timestamps[i],
                timestamp_type: set.timestamp_types[i],
                key: set.shared(set.keys[i]),
                value: set.shared(set.values[i]),
                headers,
            });
        }
    }
}

/// Appends `b` to `data` and its length (-1 for null) to `lengths`.
fn push_bytes(data: &mut Vec<u8>, lengths: &mut Vec<i32>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            data.extend_from_slice(b);
            // Spans are below 4 GiB and a record below MESSAGE_SET_BYTES_MAX, far below 2^31.
            lengths.push(b.len() as i32);
        }
        None => lengths.push(-1),
    }
}

impl RecordSink for RecordColumns {
    fn len(&self) -> usize {
        RecordColumns::len(self)
    }

    fn extend(&mut self, topic: &Arc<str>, partition: u32, set: &DecodedSet, n: usize) {
        let (records, first_header) = set.pending(n);
        let before = self.len();
        // A poll holds a handful of topics, usually in runs: a pointer check, then a scan.
        let t = match self
            .topics
            .iter()
            .rposition(|t| Arc::ptr_eq(t, topic) || t == topic)
        {
            Some(t) => t,
            None => {
                self.topics.push(topic.clone());
                self.topics.len() - 1
            }
        } as u32;
        self.topic_index.resize(before + n, t);
        self.partitions.resize(before + n, partition);
        self.offsets
            .extend_from_slice(&set.offsets[records.clone()]);
        self.timestamps
            .extend_from_slice(&set.timestamps[records.clone()]);
        self.timestamp_types
            .extend_from_slice(&set.timestamp_types[records.clone()]);
        self.key_lengths.reserve(n);
        for i in records.clone() {
            push_bytes(
                &mut self.keys,
                &mut self.key_lengths,
                set.bytes(set.keys[i]),
            );
        }
        self.push_values(set, records.clone());
        let counts = match set.header_counts.is_empty() {
            true => &[][..],
            false => &set.header_counts[records],
        };
        let total: usize = counts.iter().map(|&c| c as usize).sum();
        // Counts exist from the first record of the poll with headers on (zeros before it).
        if total == 0 {
            if !self.header_counts.is_empty() {
                self.header_counts.resize(before + n, 0);
            }
            return;
        }
        self.header_counts.resize(before, 0);
        self.header_counts.extend_from_slice(counts);
        for (key, value) in &set.headers[first_header..first_header + total] {
            self.header_keys.push(key.clone());
            push_bytes(
                &mut self.header_values,
                &mut self.header_value_lengths,
                set.bytes(*value),
            );
        }
    }
}

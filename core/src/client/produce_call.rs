//! The producer's Produce call without tonic's request encoding, so message sets are not copied
//! again on their way out.
//!
//! Why: tonic encodes a request by copying the whole protobuf message into its encode buffer,
//! a second copy of every produced byte after the one into the batch (docs/benchmarks.md,
//! "Produce path"). Here the request is written around the sets: the gRPC length prefix and
//! the other protobuf fields go into small chunks, and each message set (already a `Bytes`)
//! is a body chunk of its own, which h2 sends as a DATA frame with a vectored write instead of
//! through its buffer (sets below [`OWN_CHUNK_BYTES_MIN`] are copied into the neighbouring
//! chunk: below it a frame and an iovec cost more than the copy). The answer is decoded as
//! [`fetch_call`](super::fetch_call) decodes every answer.
//!
//! The batches drained together for one partition are not concatenated into one set first:
//! they are consecutive chunks of its `message_set` field ([`ProduceCall`]), which saves the
//! producer a copy of every byte when more than one batch goes out (a busy partition sends up
//! to `max.request.size` per round trip).
//!
//! **API Boundary**: the bytes on the wire are exactly what prost would encode for the same
//! `ProduceRequest` with each set concatenated (fields in field-number order, defaults left
//! out, a test compares the two), and the destructuring below stops compiling when a field is
//! added to the proto. Same path,
//! headers, timeout, credentials, size limit and errors as the generated `LogClient::produce`.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use sluiceway_proto::prost::encoding::{
    WireType, encode_key, encode_varint, encoded_len_varint, int32, key_len, uint32, uint64,
};
use sluiceway_proto::v1;

use super::cluster::Cluster;
use super::fetch_call::{Chunks, call, check_request_len};
use crate::error::Result;

/// The Produce method's path, as the generated client sends it.
const PRODUCE_PATH: &str = "/sluiceway.v1.Log/Produce";
/// Message sets shorter than this travel inside the neighbouring chunk rather than as their own.
const OWN_CHUNK_BYTES_MIN: usize = 4 << 10;

/// A Produce request as the producer has it: each partition's message set in the pieces it
/// was built in (the batches drained together), which go out as consecutive chunks of the one
/// `message_set` field rather than being concatenated first.
#[derive(Debug)]
pub(crate) struct ProduceCall<'a> {
    pub(crate) acks: i32,
    pub(crate) timeout_ms: u32,
    pub(crate) partitions: Vec<PartitionSets<'a>>,
    /// The producer's session (`ProduceRequest.session`), which orders its requests per
    /// partition; 0 for none.
    pub(crate) session: u64,
}

/// One partition of a [`ProduceCall`] (`leader_epoch` is never sent by the producer).
#[derive(Debug)]
pub(crate) struct PartitionSets<'a> {
    pub(crate) topic: &'a str,
    pub(crate) partition: u32,
    /// The message set, in order.
    pub(crate) sets: &'a [Bytes],
    /// `ProducePartition.order_sequence` and `order_since` (see the proto).
    pub(crate) order_sequence: u64,
    pub(crate) order_since: u64,
}

impl PartitionSets<'_> {
    fn set_len(&self) -> usize {
        self.sets.iter().map(Bytes::len).sum()
    }

    /// The encoded length of the `ProducePartition` message.
    fn encoded_len(&self) -> usize {
        let mut n = 0;
        if !self.topic.is_empty() {
            n += key_len(1) + encoded_len_varint(self.topic.len() as u64) + self.topic.len();
        }
        if self.partition != 0 {
            n += uint32::encoded_len(2, &self.partition);
        }
        let set = self.set_len();
        if set != 0 {
            n += key_len(3) + encoded_len_varint(set as u64) + set;
        }
        if self.order_sequence != 0 {
            n += uint64::encoded_len(5, &self.order_sequence);
        }
        if self.order_since != 0 {
            n += uint64::encoded_len(6, &self.order_since);
        }
        n
    }
}

impl ProduceCall<'_> {
    /// The encoded length of the `ProduceRequest` message.
    fn encoded_len(&self) -> usize {
        let mut n = 0;
        if self.acks != 0 {
            n += int32::encoded_len(1, &self.acks);
        }
        if self.timeout_ms != 0 {
            n += uint32::encoded_len(2, &self.timeout_ms);
        }
        for p in &self.partitions {
            let len = p.encoded_len();
            n += key_len(3) + encoded_len_varint(len as u64) + len;
        }
        if self.session != 0 {
            n += uint64::encoded_len(4, &self.session);
        }
        n
    }
}

/// Stops compiling when a field is added to the request's proto: [`body`] must write it too
/// (`leader_epoch` is for replicas; the producer leaves it out, as prost does `None`).
#[allow(dead_code)]
fn every_field_is_written(r: v1::ProduceRequest) {
    let v1::ProduceRequest {
        acks: _,
        timeout_ms: _,
        partitions,
        session: _,
    } = r;
    for p in partitions {
        let v1::ProducePartition {
            topic: _,
            partition: _,
            message_set: _,
            leader_epoch: _,
            order_sequence: _,
            order_since: _,
        } = p;
    }
}

/// Sends `request` to the broker at `address` and decodes its answer.
pub(crate) async fn produce(
    cluster: &Cluster,
    address: &str,
    request: &ProduceCall<'_>,
) -> Result<v1::ProduceResponse> {
    let len = request.encoded_len();
    check_request_len(len)?;
    call(
        cluster,
        address,
        PRODUCE_PATH,
        body(request, len),
        Duration::ZERO,
    )
    .await
}

/// The framed request (`len`: its encoded length) in chunks, every large piece of a set a
/// chunk of its own.
fn body(request: &ProduceCall<'_>, len: usize) -> Chunks {
    let ProduceCall {
        acks,
        timeout_ms,
        partitions,
        session,
    } = request;
    let pieces: usize = partitions.iter().map(|p| p.sets.len()).sum();
    let mut chunks = Vec::with_capacity(2 * pieces + 1);
    let mut head = BytesMut::with_capacity(64 + 32 * partitions.len());
    head.put_u8(0); // not compressed
    head.put_u32(len as u32);
    if *acks != 0 {
        int32::encode(1, acks, &mut head);
    }
    if *timeout_ms != 0 {
        uint32::encode(2, timeout_ms, &mut head);
    }
    for p in partitions {
        encode_key(3, WireType::LengthDelimited, &mut head);
        encode_varint(p.encoded_len() as u64, &mut head);
        if !p.topic.is_empty() {
            encode_key(1, WireType::LengthDelimited, &mut head);
            encode_varint(p.topic.len() as u64, &mut head);
            head.put_slice(p.topic.as_bytes());
        }
        if p.partition != 0 {
            uint32::encode(2, &p.partition, &mut head);
        }
        let set_len = p.set_len();
        if set_len != 0 {
            encode_key(3, WireType::LengthDelimited, &mut head);
            encode_varint(set_len as u64, &mut head);
            for set in p.sets {
                if set.len() >= OWN_CHUNK_BYTES_MIN {
                    if !head.is_empty() {
                        chunks.push(head.split().freeze());
                    }
                    chunks.push(set.clone());
                } else {
                    head.put_slice(set);
                }
            }
        }
        if p.order_sequence != 0 {
            uint64::encode(5, &p.order_sequence, &mut head);
        }
        if p.order_since != 0 {
            uint64::encode(6, &p.order_since, &mut head);
        }
    }
    if *session != 0 {
        uint64::encode(4, session, &mut head);
    }
    if !head.is_empty() {
        chunks.push(head.freeze());
    }
    Chunks::from(chunks)
}

#[cfg(test)]
mod tests {
    use http_body::Body as _;
    use sluiceway_proto::prost::Message;

    use super::*;

    /// The body's chunks, polled as h2 would.
    fn chunks(mut body: Chunks) -> Vec<Bytes> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut out = Vec::new();
        while let std::task::Poll::Ready(Some(frame)) =
            std::pin::Pin::new(&mut body).poll_frame(&mut cx)
        {
            out.push(frame.unwrap().into_data().unwrap());
        }
        assert!(body.is_end_stream());
        out
    }

    #[test]
    fn the_chunks_are_prosts_encoding_with_large_pieces_sent_as_they_are() {
        let large = Bytes::from(vec![7u8; 70_000]);
        let other = Bytes::from(vec![9u8; 5_000]);
        let small = Bytes::from_static(b"small set");
        let pieces: [&[Bytes]; 5] = [
            std::slice::from_ref(&large),
            std::slice::from_ref(&small),
            &[],
            &[large.clone(), small.clone(), other.clone(), small.clone()],
            &[small.clone(), other.clone()],
        ];
        let calls = [
            ProduceCall {
                acks: 0,
                timeout_ms: 0,
                partitions: Vec::new(),
                session: 0,
            },
            ProduceCall {
                acks: -1,
                timeout_ms: 30_000,
                partitions: [("a", 0), ("b", 3), ("", 0), ("c", 1), ("d", 2)]
                    .into_iter()
                    .zip(pieces)
                    .enumerate()
                    .map(|(i, ((topic, partition), sets))| PartitionSets {
                        topic,
                        partition,
                        sets,
                        order_sequence: [0, 7, 300, 1 << 40, 0][i],
                        order_since: [0, 5, 300, 0, 9][i],
                    })
                    .collect(),
                session: 0x9e37_79b9_7f4a_7c15,
            },
        ];
        for call in calls {
            // What prost writes for the same request with each set concatenated.
            let request = v1::ProduceRequest {
                acks: call.acks,
                timeout_ms: call.timeout_ms,
                session: call.session,
                partitions: call
                    .partitions
                    .iter()
                    .map(|p| v1::ProducePartition {
                        topic: p.topic.into(),
                        partition: p.partition,
                        message_set: Bytes::from(p.sets.concat()),
                        leader_epoch: None,
                        order_sequence: p.order_sequence,
                        order_since: p.order_since,
                    })
                    .collect(),
            };
            let len = call.encoded_len();
            assert_eq!(len, request.encoded_len());
            let got = chunks(body(&call, len));
            let mut want = vec![0u8];
            want.extend_from_slice(&(len as u32).to_be_bytes());
            want.extend_from_slice(&request.encode_to_vec());
            assert_eq!(got.concat(), want, "{call:?}");
            for set in call.partitions.iter().flat_map(|p| p.sets) {
                let sent_as_is = got.iter().any(|c| c.as_ptr() == set.as_ptr());
                assert_eq!(sent_as_is, set.len() >= OWN_CHUNK_BYTES_MIN);
            }
        }
    }
}

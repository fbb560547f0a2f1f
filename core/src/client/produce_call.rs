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
//! **API Boundary**: the bytes on the wire are exactly what prost would encode for the same
//! `ProduceRequest` (fields in field-number order, defaults left out, a test compares the two),
//! and the destructuring below stops compiling when a field is added to the proto. Same path,
//! headers, timeout, credentials, size limit and errors as the generated `LogClient::produce`.

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use sluiceway_proto::prost::Message;
use sluiceway_proto::prost::encoding::{
    WireType, encode_key, encode_varint, int32, string, uint32,
};
use sluiceway_proto::v1;

use super::cluster::Cluster;
use super::fetch_call::{Chunks, call, check_request_len};
use crate::error::Result;

/// The Produce method's path, as the generated client sends it.
const PRODUCE_PATH: &str = "/sluiceway.v1.Log/Produce";
/// Message sets shorter than this travel inside the neighbouring chunk rather than as their own.
const OWN_CHUNK_BYTES_MIN: usize = 4 << 10;

/// Sends `request` to the broker at `address` and decodes its answer.
pub(crate) async fn produce(
    cluster: &Cluster,
    address: &str,
    request: &v1::ProduceRequest,
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

/// The framed request (`len`: its encoded length) in chunks, every large set a chunk of its own.
fn body(request: &v1::ProduceRequest, len: usize) -> Chunks {
    let v1::ProduceRequest {
        acks,
        timeout_ms,
        partitions,
    } = request;
    let mut chunks = Vec::with_capacity(2 * partitions.len() + 1);
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
        let v1::ProducePartition {
            topic,
            partition,
            message_set,
            leader_epoch,
        } = p;
        encode_key(3, WireType::LengthDelimited, &mut head);
        encode_varint(p.encoded_len() as u64, &mut head);
        if !topic.is_empty() {
            string::encode(1, topic, &mut head);
        }
        if *partition != 0 {
            uint32::encode(2, partition, &mut head);
        }
        if !message_set.is_empty() {
            encode_key(3, WireType::LengthDelimited, &mut head);
            encode_varint(message_set.len() as u64, &mut head);
            if message_set.len() >= OWN_CHUNK_BYTES_MIN {
                chunks.push(head.split().freeze());
                chunks.push(message_set.clone());
            } else {
                head.put_slice(message_set);
            }
        }
        if let Some(epoch) = leader_epoch {
            int32::encode(4, epoch, &mut head);
        }
    }
    if !head.is_empty() {
        chunks.push(head.freeze());
    }
    Chunks::from(chunks)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body::Body as _;

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
    fn the_chunks_are_prosts_encoding_with_large_sets_sent_as_they_are() {
        let large = Bytes::from(vec![7u8; 70_000]);
        let partition = |topic: &str, partition, set: &Bytes, leader_epoch| v1::ProducePartition {
            topic: topic.into(),
            partition,
            message_set: set.clone(),
            leader_epoch,
        };
        let requests = [
            v1::ProduceRequest::default(),
            v1::ProduceRequest {
                acks: -1,
                timeout_ms: 30_000,
                partitions: vec![
                    partition("a", 0, &large, None),
                    partition("b", 3, &Bytes::from_static(b"small set"), Some(-1)),
                    partition("", 0, &Bytes::new(), Some(0)),
                    partition("c", 1, &large, Some(7)),
                ],
            },
        ];
        for request in requests {
            let len = request.encoded_len();
            let got = chunks(body(&request, len));
            let mut want = vec![0u8];
            want.extend_from_slice(&(len as u32).to_be_bytes());
            want.extend_from_slice(&request.encode_to_vec());
            assert_eq!(got.concat(), want, "{request:?}");
            for set in request.partitions.iter().map(|p| &p.message_set) {
                let sent_as_is = got.iter().any(|c| c.as_ptr() == set.as_ptr());
                assert_eq!(sent_as_is, set.len() >= OWN_CHUNK_BYTES_MIN);
            }
        }
    }
}

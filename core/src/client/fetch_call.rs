//! The consumer's Fetch call without tonic's response decoding, so fetched message sets are not
//! copied on the client.
//!
//! Why: tonic's client gathers a response's HTTP/2 DATA frames into one buffer before decoding
//! it, a copy of every fetched byte (11 % of a consumer's CPU reading a 1 KiB backlog,
//! docs/benchmarks.md "Consume path"). h2 hands each DATA frame over as a `Bytes` slice of the
//! buffer it read the socket into, and the broker sends each message set as a DATA frame of its
//! own (broker `server/fetch_wire.rs`), so here the response is decoded from the list of frames
//! with [`Frames`], whose `copy_to_bytes` slices instead of copying when the bytes asked for lie
//! in one frame, which a message set within one frame does. A set split across frames (a
//! smaller frame size or flow-control window, or another server) is copied once, as before.
//!
//! The broker also writes `FetchResponse.next_offsets` first, in the answer's first frame;
//! [`fetch`] hands them to its caller as soon as they are in ([`peek_next_offsets`]), before
//! the sets have arrived, so the consumer can send its next fetch of a partition while this
//! answer is still on the wire (a pipelined fetch, `consumer.rs`).
//!
//! **API Boundary**: the same gRPC call as the generated `LogClient::fetch` — the same path,
//! headers, timeout, interceptor (credentials) and channel — and the same errors: a transport
//! failure or a non-OK `grpc-status` becomes the `tonic::Status` tonic would give, mapped by
//! `error_from_status`.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use sluiceway_proto::prost::{self, Message};
use sluiceway_proto::v1;
use tonic::Status;
use tonic::codegen::{Service as _, http};

use super::cluster::Cluster;
use crate::error::Result;
use crate::limits::{REQUEST_BYTES_MAX, RESPONSE_BYTES_MAX};
use crate::wire::{Frames, error_from_status};

/// The Fetch method's path, as the generated client sends it.
const FETCH_PATH: &str = "/sluiceway.v1.Log/Fetch";
/// gRPC's length prefix: a compressed flag (1 byte) and the message length (4, big-endian).
const GRPC_HEADER_BYTES: usize = 5;

/// Sends `request` to the broker at `address` and decodes its answer; `extra` is added to the
/// client's request timeout (the long poll's wait). `on_next_offsets` gets the answer's
/// `next_offsets` as soon as its first bytes hold them (not called when it has none); the
/// answer returned holds them too.
pub(crate) async fn fetch(
    cluster: &Cluster,
    address: &str,
    request: v1::FetchRequest,
    extra: Duration,
    on_next_offsets: impl FnOnce(&[i64]),
) -> Result<v1::FetchResponse> {
    let len = request.encoded_len();
    check_request_len(len)?;
    let mut body = BytesMut::with_capacity(GRPC_HEADER_BYTES + len);
    body.put_u8(0);
    body.put_u32(len as u32);
    request.encode_raw(&mut body);
    let mut on_next_offsets = Some(on_next_offsets);
    let on_frame = |frames: &Frames| {
        if on_next_offsets.is_some() {
            match peek_next_offsets(frames) {
                Peek::More => {}
                Peek::Absent => on_next_offsets = None,
                Peek::Found(offsets) => {
                    if let Some(f) = on_next_offsets.take() {
                        f(&offsets);
                    }
                }
            }
        }
    };
    call_with(
        cluster,
        address,
        FETCH_PATH,
        Chunks::from(vec![body.freeze()]),
        extra,
        on_frame,
    )
    .await
}

/// What the first bytes of a Fetch answer say about `next_offsets`.
#[derive(Debug, PartialEq)]
enum Peek {
    /// Not enough bytes yet.
    More,
    /// The answer does not start with them (a broker that does not send them).
    Absent,
    Found(Vec<i64>),
}

/// Reads `next_offsets` (field 2, packed) if the message starts with it, without consuming.
fn peek_next_offsets(frames: &Frames) -> Peek {
    // The gRPC prefix, the field's key and its length (a varint of at most 10 bytes).
    let mut head = [0u8; GRPC_HEADER_BYTES + 11];
    let n = frames.peek(&mut head);
    if n <= GRPC_HEADER_BYTES {
        return Peek::More;
    }
    // Field 2, length-delimited.
    if head[GRPC_HEADER_BYTES] != 0x12 {
        return Peek::Absent;
    }
    let mut len_bytes = &head[GRPC_HEADER_BYTES + 1..n];
    let before = len_bytes.len();
    let Ok(len) = prost::encoding::decode_varint(&mut len_bytes) else {
        return if n < head.len() {
            Peek::More
        } else {
            Peek::Absent
        };
    };
    let start = GRPC_HEADER_BYTES + 1 + (before - len_bytes.len());
    let Some(end) = usize::try_from(len).ok().and_then(|l| start.checked_add(l)) else {
        return Peek::Absent;
    };
    if end > GRPC_HEADER_BYTES + RESPONSE_BYTES_MAX as usize {
        return Peek::Absent;
    }
    if frames.remaining() < end {
        return Peek::More;
    }
    let mut field = vec![0u8; end];
    frames.peek(&mut field);
    let mut packed = &field[start..];
    let mut offsets = Vec::new();
    while !packed.is_empty() {
        match prost::encoding::decode_varint(&mut packed) {
            Ok(v) => offsets.push(v as i64),
            Err(_) => return Peek::Absent,
        }
    }
    Peek::Found(offsets)
}

/// Tonic's own error for a request above the encoding limit (`error_from_status` knows it).
pub(super) fn check_request_len(len: usize) -> Result<()> {
    if len > REQUEST_BYTES_MAX as usize {
        return Err(error_from_status(&Status::out_of_range(format!(
            "Error, encoded message length too large: found {len} bytes, the limit is: \
             {REQUEST_BYTES_MAX} bytes"
        ))));
    }
    Ok(())
}

/// One unary call of the Log service at `path` with a body already framed (gRPC's length
/// prefix, then the protobuf message, in as many chunks as the caller chose), decoding the
/// answer from h2's frames.
pub(super) async fn call<M: Message + Default>(
    cluster: &Cluster,
    address: &str,
    path: &'static str,
    body: Chunks,
    extra: Duration,
) -> Result<M> {
    call_with(cluster, address, path, body, extra, |_| {}).await
}

/// [`call`], showing `on_frame` the answer's frames received so far after each one arrives.
async fn call_with<M: Message + Default>(
    cluster: &Cluster,
    address: &str,
    path: &'static str,
    body: Chunks,
    extra: Duration,
    on_frame: impl FnMut(&Frames),
) -> Result<M> {
    let mut channel = cluster.channel(address)?;
    // The timeout travels as tonic writes it (`grpc-timeout`), with the interceptor's
    // credentials added by the channel like on every other call.
    let (metadata, extensions, ()) = cluster.request((), extra).into_parts();
    let mut req = http::Request::new(tonic::body::Body::new(body));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = http::Uri::from_static(path);
    *req.extensions_mut() = extensions;
    let headers = req.headers_mut();
    *headers = metadata.into_headers();
    headers.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    let call = async {
        std::future::poll_fn(|cx| channel.poll_ready(cx)).await?;
        channel.call(req).await
    };
    let response = call
        .await
        .map_err(|e| error_from_status(&Status::from_error(e.into())))?;
    decode_response(response, on_frame)
        .await
        .map_err(|s| error_from_status(&s))
}

/// Reads the response's frames and trailers and decodes the message from the frames.
async fn decode_response<M: Message + Default, B>(
    response: http::Response<B>,
    mut on_frame: impl FnMut(&Frames),
) -> Result<M, Status>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = response.into_parts();
    // A trailers-only answer (an error before any message) has the status in its headers.
    if let Some(status) = Status::from_header_map(&parts.headers)
        && status.code() != tonic::Code::Ok
    {
        return Err(status);
    }
    if parts.status != http::StatusCode::OK {
        return Err(Status::unknown(format!(
            "the broker answered HTTP status {}",
            parts.status
        )));
    }
    let mut body = std::pin::pin!(body);
    let mut frames = Frames::default();
    let mut trailers = None;
    while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        let frame = frame.map_err(|e| Status::from_error(e.into()))?;
        match frame.into_data() {
            Ok(data) => {
                if frames.remaining() + data.len() > GRPC_HEADER_BYTES + RESPONSE_BYTES_MAX as usize
                {
                    return Err(too_large(frames.remaining() + data.len()));
                }
                frames.push(data);
                on_frame(&frames);
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers = Some(t);
                }
            }
        }
    }
    match trailers.as_ref().and_then(Status::from_header_map) {
        Some(status) if status.code() == tonic::Code::Ok => {}
        Some(status) => return Err(status),
        None => {
            return Err(Status::internal(
                "the broker's answer ended without a grpc-status",
            ));
        }
    }
    if frames.remaining() < GRPC_HEADER_BYTES {
        return Err(Status::internal("Missing response message."));
    }
    let compressed = frames.get_u8();
    let len = frames.get_u32() as usize;
    if compressed != 0 {
        return Err(Status::internal(
            "the broker's answer is compressed, which this client did not ask for",
        ));
    }
    if len > RESPONSE_BYTES_MAX as usize {
        return Err(too_large(len));
    }
    if len != frames.remaining() {
        return Err(Status::internal(format!(
            "the broker's answer's prefix gives {len} bytes but {} follow (one message expected)",
            frames.remaining()
        )));
    }
    M::decode(&mut frames)
        .map_err(|e| Status::internal(format!("the broker's answer does not decode: {e}")))
}

/// Tonic's own error for a message above the decoding limit (`error_from_status` knows it).
fn too_large(found: usize) -> Status {
    Status::out_of_range(format!(
        "Error, decoded message length too large: found {found} bytes, the limit is: \
         {RESPONSE_BYTES_MAX} bytes"
    ))
}

/// A request body: its chunks in order, each sent as it is (h2 writes large ones without
/// copying them into its buffer).
#[derive(Debug, Default)]
pub(super) struct Chunks {
    chunks: VecDeque<Bytes>,
    remaining: u64,
}

impl From<Vec<Bytes>> for Chunks {
    fn from(chunks: Vec<Bytes>) -> Chunks {
        Chunks {
            remaining: chunks.iter().map(|c| c.len() as u64).sum(),
            chunks: chunks.into(),
        }
    }
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::result::Result<http_body::Frame<Bytes>, Self::Error>>> {
        let next = self.chunks.pop_front();
        if let Some(c) = &next {
            self.remaining -= c.len() as u64;
        }
        std::task::Poll::Ready(next.map(|c| Ok(http_body::Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_split_anywhere_decodes_to_the_same_message_with_its_set_uncopied() {
        let resp = v1::FetchResponse {
            results: vec![v1::FetchPartitionResult {
                topic: "t".into(),
                partition: 3,
                high_watermark: 10,
                log_end_offset: 10,
                message_set: Bytes::from(vec![7u8; 100_000]),
                leader_epochs: vec![v1::LeaderEpochEntry {
                    epoch: 1,
                    start_offset: 4,
                }],
                ..Default::default()
            }],
            next_offsets: Vec::new(),
        };
        let encoded = resp.encode_to_vec();
        for cut in [1, 10, 50_000, encoded.len() - 1] {
            let mut f: Frames = [&encoded[..cut], &encoded[cut..]]
                .into_iter()
                .map(Bytes::copy_from_slice)
                .collect();
            assert_eq!(v1::FetchResponse::decode(&mut f).expect("decodes"), resp);
        }
        // The set in a frame of its own, as the broker sends it: the decoded set points into it.
        let set_at = encoded.len() - 100_000 - 6; // the leader-epoch entry (6 bytes) follows it
        let mut f = Frames::default();
        let whole = Bytes::from(encoded.clone());
        f.push(whole.slice(..set_at));
        f.push(whole.slice(set_at..set_at + 100_000));
        f.push(whole.slice(set_at + 100_000..));
        let got = v1::FetchResponse::decode(&mut f).expect("decodes");
        assert_eq!(got, resp);
        assert_eq!(
            got.results[0].message_set.as_ptr(),
            whole[set_at..].as_ptr(),
            "not copied"
        );
    }

    /// gRPC framing of `resp` with `next_offsets` first, as the broker writes it.
    fn broker_framing(resp: &v1::FetchResponse) -> Vec<u8> {
        let mut msg = Vec::new();
        prost::encoding::int64::encode_packed(2, &resp.next_offsets, &mut msg);
        v1::FetchResponse {
            next_offsets: Vec::new(),
            ..resp.clone()
        }
        .encode(&mut msg)
        .expect("encodes");
        let mut out = vec![0u8];
        out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        out.extend_from_slice(&msg);
        out
    }

    #[test]
    fn next_offsets_are_read_from_the_first_bytes_however_the_frames_split() {
        let resp = v1::FetchResponse {
            results: (0..3)
                .map(|i| v1::FetchPartitionResult {
                    topic: "t".into(),
                    partition: i,
                    message_set: Bytes::from(vec![1u8; 5000]),
                    ..Default::default()
                })
                .collect(),
            next_offsets: vec![1 << 40, -1, 300],
        };
        let framed = broker_framing(&resp);
        // The field: key, length, 6 + 10 + 2 bytes of varints.
        let field_end = GRPC_HEADER_BYTES + 2 + 18;
        for cut in 1..field_end + 3 {
            let mut f = Frames::default();
            f.push(Bytes::copy_from_slice(&framed[..cut]));
            let want = if cut < field_end {
                Peek::More
            } else {
                Peek::Found(resp.next_offsets.clone())
            };
            assert_eq!(peek_next_offsets(&f), want, "cut at {cut}");
            f.push(Bytes::copy_from_slice(&framed[cut..]));
            assert_eq!(
                peek_next_offsets(&f),
                Peek::Found(resp.next_offsets.clone())
            );
            f.advance(GRPC_HEADER_BYTES);
            assert_eq!(v1::FetchResponse::decode(&mut f).expect("decodes"), resp);
        }
        // An answer without them (prost's order puts `results` first; none at all here).
        let mut f = Frames::default();
        f.push(Bytes::from(broker_framing(&v1::FetchResponse {
            next_offsets: Vec::new(),
            ..resp.clone()
        })));
        assert_eq!(peek_next_offsets(&f), Peek::Absent);
        let mut f = Frames::default();
        f.push(Bytes::from_static(&[0, 0, 0, 0, 0]));
        assert_eq!(peek_next_offsets(&f), Peek::More);
    }
}

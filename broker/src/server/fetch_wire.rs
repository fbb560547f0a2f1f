//! The Fetch RPC's answer written without copying its message sets, and the Produce RPC's
//! request read without copying them: a route in front of the generated `LogServer` that serves
//! `/sluiceway.v1.Log/Fetch` and `/sluiceway.v1.Log/Produce` itself and hands every other method
//! to it. (Requests of both are decoded from h2's frames with `sluiceway_core::wire::Frames`,
//! so a produced message set that arrived within one DATA frame — the client sends each set of
//! 4 KiB or more as a frame of its own — is a slice of that frame, not a copy of tonic's
//! reassembly buffer.)
//!
//! Why: tonic encodes a response by copying the whole protobuf message into its encode buffer,
//! so every fetched byte was copied once more after the segment read (13 % of a broker's CPU
//! when a consumer reads a 1 KiB backlog, docs/benchmarks.md "Consume path"). Here the message
//! sets already read from the segment (`Bytes`) become HTTP/2 DATA frames of their own, between
//! small frames holding the gRPC length prefix and the other protobuf fields; h2 sends payloads
//! this large with vectored writes, not through its own buffer, so the only copy left in user
//! space is the segment read itself.
//!
//! **API Boundary**: the bytes on the wire are what prost would encode for the same
//! `FetchResponse` (defaults left out), with one difference of order: `next_offsets` (field 2)
//! comes first, before `results`, so a consumer knows where its next fetch of each partition
//! starts from the answer's first frame (`core/src/client/fetch_call.rs` pipelines on it).
//! Protobuf decoders accept fields in any order; a test checks that prost decodes the frames
//! to the same message, and the destructuring below stops compiling when a field is added to
//! the proto, so the encoder cannot silently drop it. The request side behaves as tonic's does for this service:
//! no request compression, `REQUEST_BYTES_MAX`, and the same `Log::fetch` (ACLs, metrics,
//! `Broker::fetch`) behind the same interceptor, which runs before this route.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body::{Body as _, Frame};
use prost::Message;
use sluiceway_core::limits::{REQUEST_BYTES_MAX, RESPONSE_BYTES_MAX};
use sluiceway_core::wire::Frames;
use sluiceway_proto::v1;
use sluiceway_proto::v1::log_server::{Log, LogServer};
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::codegen::{BoxFuture, Service as TowerService};
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;

use super::service::Service;

/// The path of the Fetch method, as the generated client sends it.
const FETCH_PATH: &str = "/sluiceway.v1.Log/Fetch";
/// The path of the Produce method.
const PRODUCE_PATH: &str = "/sluiceway.v1.Log/Produce";
/// gRPC's length prefix: a compressed flag (1 byte) and the message length (4 bytes, big-endian).
const GRPC_HEADER_BYTES: usize = 5;
/// Message sets shorter than this are copied into the neighbouring frame instead of becoming a
/// frame of their own: below it a frame header and a vectored write cost more than the copy.
const OWN_FRAME_BYTES_MIN: usize = 4 << 10;

/// The Log service with the Fetch route served by [`fetch`]; everything else goes to `inner`.
#[derive(Clone)]
pub struct LogRoutes {
    inner: LogServer<Service>,
    service: Service,
}

impl LogRoutes {
    pub fn new(inner: LogServer<Service>, service: Service) -> LogRoutes {
        LogRoutes { inner, service }
    }
}

impl NamedService for LogRoutes {
    const NAME: &'static str = <LogServer<Service> as NamedService>::NAME;
}

impl TowerService<http::Request<Body>> for LogRoutes {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        <LogServer<Service> as TowerService<http::Request<Body>>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        match req.uri().path() {
            FETCH_PATH => {
                let service = self.service.clone();
                Box::pin(async move { Ok(fetch(service, req).await) })
            }
            PRODUCE_PATH => {
                let service = self.service.clone();
                Box::pin(async move { Ok(produce(service, req).await) })
            }
            _ => self.inner.call(req),
        }
    }
}

/// Decodes the request as tonic would, runs `Log::fetch`, and answers with [`FetchBody`].
async fn fetch(service: Service, req: http::Request<Body>) -> http::Response<Body> {
    let request = match tonic_request(req).await {
        Ok(r) => r,
        Err(status) => return status.into_http(),
    };
    match Log::fetch(&service, request).await {
        Ok(response) => match encode_response(response.into_inner()) {
            Ok(chunks) => answer(chunks),
            Err(status) => status.into_http(),
        },
        Err(status) => status.into_http(),
    }
}

/// Decodes the request from h2's frames, so its message sets are slices of the frames they
/// came in rather than copies (tonic's decoder gathers the frames into one buffer first), runs
/// `Log::produce`, and answers as tonic would.
async fn produce(service: Service, req: http::Request<Body>) -> http::Response<Body> {
    let request = match tonic_request(req).await {
        Ok(r) => r,
        Err(status) => return status.into_http(),
    };
    match Log::produce(&service, request).await {
        Ok(response) => {
            let response: v1::ProduceResponse = response.into_inner();
            let mut buf = BytesMut::with_capacity(GRPC_HEADER_BYTES + response.encoded_len());
            buf.put_u8(0);
            buf.put_u32(response.encoded_len() as u32);
            response.encode_raw(&mut buf);
            answer(VecDeque::from([buf.freeze()]))
        }
        Err(status) => status.into_http(),
    }
}

/// The request as the generated service would hand it over: metadata, extensions (the
/// interceptor's), and the message read by [`read_request`].
async fn tonic_request<M: Message + Default>(
    req: http::Request<Body>,
) -> Result<tonic::Request<M>, Status> {
    let (parts, body) = req.into_parts();
    let message = read_request(body).await?;
    Ok(tonic::Request::from_parts(
        MetadataMap::from_headers(parts.headers),
        parts.extensions,
        message,
    ))
}

/// A successful answer of `chunks` (the framed message), then `grpc-status: 0`.
fn answer(chunks: VecDeque<Bytes>) -> http::Response<Body> {
    let mut res = http::Response::new(Body::new(FetchBody::new(chunks)));
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    res
}

/// Reads one uncompressed, length-prefixed request message from the request body, decoded from
/// its frames ([`Frames`]: `bytes` fields within one frame are not copied).
async fn read_request<M: Message + Default>(body: Body) -> Result<M, Status> {
    let mut body = std::pin::pin!(body);
    let mut frames = Frames::default();
    while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        if frames.remaining() + data.len() > GRPC_HEADER_BYTES + REQUEST_BYTES_MAX as usize {
            // Tonic's own answer (clients map it to RECORD_LIST_TOO_LARGE).
            return Err(Status::out_of_range(format!(
                "Error, decoded message length too large: found at least {} bytes, the limit \
                 is: {REQUEST_BYTES_MAX} bytes",
                frames.remaining() + data.len() - GRPC_HEADER_BYTES
            )));
        }
        frames.push(data);
    }
    if frames.remaining() < GRPC_HEADER_BYTES {
        return Err(Status::internal(format!(
            "the request has {} bytes, fewer than gRPC's {GRPC_HEADER_BYTES}-byte prefix",
            frames.remaining()
        )));
    }
    let compressed = frames.get_u8();
    let len = frames.get_u32() as usize;
    if compressed != 0 {
        // Tonic's own answer when a service has no request compression enabled.
        return Err(Status::unimplemented(
            "Message compressed, compression support not enabled.",
        ));
    }
    if len != frames.remaining() {
        return Err(Status::internal(format!(
            "the request's prefix gives {len} bytes but {} follow (one message expected)",
            frames.remaining()
        )));
    }
    M::decode(&mut frames)
        .map_err(|e| Status::internal(format!("the request does not decode: {e}")))
}

/// `response` as gRPC frame chunks: the 5-byte prefix and every field as prost encodes them,
/// with each message set of at least [`OWN_FRAME_BYTES_MIN`] its own chunk, not copied.
fn encode_response(response: v1::FetchResponse) -> Result<VecDeque<Bytes>, Status> {
    // Exhaustive: a field added to `FetchResponse` must be encoded here too.
    let v1::FetchResponse {
        results,
        next_offsets,
    } = response;
    let mut encoded = Vec::with_capacity(results.len());
    let mut total = prost::encoding::int64::encoded_len_packed(2, &next_offsets);
    for mut head in results {
        // Exhaustive: a field added to `FetchPartitionResult` must be placed below too.
        let v1::FetchPartitionResult {
            topic: _,
            partition: _,
            error_code: _,
            error_message: _,
            high_watermark: _,
            log_start_offset: _,
            log_end_offset: _,
            message_set: _,
            leader_epochs: _,
        } = &head;
        // `head` keeps fields 1-7 and `tail` field 9 alone, each as prost writes them (fields
        // in number order); the set (field 8) goes between them.
        let message_set = std::mem::take(&mut head.message_set);
        let tail = v1::FetchPartitionResult {
            leader_epochs: std::mem::take(&mut head.leader_epochs),
            ..Default::default()
        };
        let set_field = if message_set.is_empty() {
            0
        } else {
            prost::encoding::bytes::encoded_len(8, &message_set)
        };
        let inner = head.encoded_len() + set_field + tail.encoded_len();
        total += prost::encoding::key_len(1) + prost::encoding::encoded_len_varint(inner as u64);
        total += inner;
        encoded.push((head, message_set, tail, inner));
    }
    if total > RESPONSE_BYTES_MAX as usize {
        // Tonic's check on an encoded message (`max_encoding_message_size`).
        return Err(Status::out_of_range(format!(
            "Error, encoded message length too large: found {total} bytes, the limit is: \
             {RESPONSE_BYTES_MAX} bytes"
        )));
    }
    let mut chunks = VecDeque::new();
    let mut buf = BytesMut::with_capacity(256);
    buf.put_u8(0);
    buf.put_u32(total as u32);
    // First, so that it is in the answer's first frame (see the module docs).
    prost::encoding::int64::encode_packed(2, &next_offsets, &mut buf);
    for (head, set, tail, inner) in encoded {
        prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut buf);
        prost::encoding::encode_varint(inner as u64, &mut buf);
        head.encode_raw(&mut buf);
        if !set.is_empty() {
            prost::encoding::encode_key(8, prost::encoding::WireType::LengthDelimited, &mut buf);
            prost::encoding::encode_varint(set.len() as u64, &mut buf);
            if set.len() < OWN_FRAME_BYTES_MIN {
                buf.put_slice(&set);
            } else {
                chunks.push_back(buf.split().freeze());
                chunks.push_back(set);
            }
        }
        tail.encode_raw(&mut buf);
    }
    if !buf.is_empty() {
        chunks.push_back(buf.freeze());
    }
    Ok(chunks)
}

/// A unary gRPC response body: the chunks in order, then the `grpc-status: 0` trailers.
struct FetchBody {
    chunks: VecDeque<Bytes>,
    trailers_sent: bool,
}

impl FetchBody {
    fn new(chunks: VecDeque<Bytes>) -> FetchBody {
        FetchBody {
            chunks,
            trailers_sent: false,
        }
    }
}

impl http_body::Body for FetchBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(chunk) = self.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if self.trailers_sent {
            return Poll::Ready(None);
        }
        self.trailers_sent = true;
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty() && self.trailers_sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(sets: &[usize]) -> v1::FetchResponse {
        v1::FetchResponse {
            results: sets
                .iter()
                .enumerate()
                .map(|(i, &n)| v1::FetchPartitionResult {
                    topic: format!("topic-{i}"),
                    partition: i as u32,
                    error_code: if n == 0 { 3 } else { 0 },
                    error_message: if n == 0 { "gone".into() } else { String::new() },
                    high_watermark: 1 << 40,
                    log_start_offset: if i == 0 { 0 } else { -1 },
                    log_end_offset: 12345,
                    message_set: Bytes::from((0..n).map(|b| b as u8).collect::<Vec<u8>>()),
                    leader_epochs: (0..i as i32)
                        .map(|e| v1::LeaderEpochEntry {
                            epoch: e,
                            start_offset: i64::from(e) * 1000,
                        })
                        .collect(),
                })
                .collect(),
            next_offsets: sets
                .iter()
                .enumerate()
                .map(|(i, &n)| if n == 0 { -1 } else { 1000 * i as i64 + 7 })
                .collect(),
        }
    }

    /// The frames, concatenated, are the gRPC framing of prost's own encoding with
    /// `next_offsets` moved to the front: the same bytes, and prost decodes them to `resp`.
    fn assert_same_as_prost(resp: v1::FetchResponse) {
        let mut want = Vec::new();
        prost::encoding::int64::encode_packed(2, &resp.next_offsets, &mut want);
        v1::FetchResponse {
            next_offsets: Vec::new(),
            ..resp.clone()
        }
        .encode(&mut want)
        .expect("encodes");
        assert_eq!(want.len(), resp.encoded_len());
        let chunks = encode_response(resp.clone()).expect("encodes");
        let got: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        assert_eq!(got[0], 0, "not compressed");
        assert_eq!(
            u32::from_be_bytes([got[1], got[2], got[3], got[4]]) as usize,
            want.len()
        );
        assert_eq!(&got[GRPC_HEADER_BYTES..], &want[..]);
        assert_eq!(
            v1::FetchResponse::decode(&got[GRPC_HEADER_BYTES..]).expect("decodes"),
            resp
        );
        if !resp.next_offsets.is_empty() {
            assert_eq!(got[GRPC_HEADER_BYTES], 0x12, "field 2 first");
            assert!(
                chunks[0].len() > GRPC_HEADER_BYTES + 2,
                "in the first frame"
            );
        }
    }

    #[test]
    fn fetch_responses_encode_byte_for_byte_as_prost_does() {
        assert_same_as_prost(v1::FetchResponse::default());
        // An answer without `next_offsets` (the field is optional to readers).
        assert_same_as_prost(v1::FetchResponse {
            next_offsets: Vec::new(),
            ..response(&[100, 5000])
        });
        assert_same_as_prost(response(&[0]));
        assert_same_as_prost(response(&[100]));
        assert_same_as_prost(response(&[1 << 20]));
        assert_same_as_prost(response(&[1 << 20, 0, 5, 300_000, OWN_FRAME_BYTES_MIN]));
    }

    #[test]
    fn large_message_sets_are_frames_of_their_own_and_small_ones_are_copied() {
        let resp = response(&[1 << 20, 10, 300_000]);
        let big: Vec<Bytes> = resp.results.iter().map(|r| r.message_set.clone()).collect();
        let chunks = encode_response(resp).expect("encodes");
        // prefix+next offsets+head 0, set 0, tail 0 + result 1 (with its small set) + head 2, set 2, tail 2.
        assert_eq!(chunks.len(), 5);
        assert_eq!(chunks[1].as_ptr(), big[0].as_ptr(), "not copied");
        assert_eq!(chunks[3].as_ptr(), big[2].as_ptr(), "not copied");
    }
}

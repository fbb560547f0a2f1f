//! Compression codecs for wrapper messages (attributes bits 0–2).
//!
//! | code | codec | bytes of the wrapper's value |
//! |---|---|---|
//! | 1 | gzip | an RFC 1952 gzip stream (several members are accepted on read) |
//! | 2 | snappy | xerial framing, as Kafka's Java client writes it: the 16-byte header `82 'SNAPPY' 00`, version 1, compatible 1, then blocks of (u32 BE length, raw snappy block). A plain raw snappy block is accepted on read. |
//! | 3 | lz4 | an LZ4 frame (the standard frame format, with a correct header checksum); several concatenated frames are accepted on read |
//! | 4 | zstd | a zstd frame (several concatenated frames are accepted on read) |
//!
//! Decompression is always bounded by [`DECOMPRESSED_BYTES_MAX`]: a payload that would expand
//! past it is refused, never allocated. The output buffer never grows beyond that limit (it is
//! grown by hand, not by `read_to_end`'s doubling), snappy blocks are sized from their header
//! before anything is allocated, and zstd's window is capped at [`ZSTD_WINDOW_LOG_MAX`].
//!
//! Compressed payloads carry no end marker for snappy (xerial) and lz4 frames cut at a block
//! boundary are not detected by the codec; the wrapper's CRC covers the payload, so such a cut can
//! only come from a faulty producer, and the inner entries' own framing still catches any cut
//! that is not also an entry boundary.

use std::io::{Read, Write};

use crate::error::{Error, Result};
use crate::limits::DECOMPRESSED_BYTES_MAX;

/// Largest zstd window (log2 bytes) a frame may ask the decoder to allocate. zstd's own default
/// limit (27), made explicit here so the bound does not depend on the library version.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 27;
/// Bytes read from a streaming decoder at a time.
const READ_CHUNK_BYTES: usize = 64 << 10;

/// The compression codec of a message set, from attributes bits 0–2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    #[default]
    None = 0,
    Gzip = 1,
    Snappy = 2,
    Lz4 = 3,
    Zstd = 4,
}

impl Compression {
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    pub fn from_code(code: u8) -> Result<Compression> {
        match code {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Gzip),
            2 => Ok(Compression::Snappy),
            3 => Ok(Compression::Lz4),
            4 => Ok(Compression::Zstd),
            codec => Err(Error::UnsupportedCompression { codec }),
        }
    }

    pub fn code(self) -> u8 {
        self as u8
    }

    /// Kafka's `compression.type` names.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    pub fn from_name(name: &str) -> Option<Compression> {
        Compression::ALL.into_iter().find(|c| c.name() == name)
    }
}

const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
const XERIAL_HEADER_BYTES: usize = 16;
/// Block size the xerial stream writer uses (snappy-java's default, 32 KiB).
const XERIAL_BLOCK_BYTES: usize = 32 << 10;

fn codec_error(codec: Compression, e: impl std::fmt::Display) -> Error {
    Error::corrupt(
        0,
        format!("{} payload does not decompress: {e}", codec.name()),
    )
}

/// Compresses `input` with `codec`, appending to `out`.
pub fn compress(codec: Compression, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
    match codec {
        Compression::None => out.extend_from_slice(input),
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
            enc.write_all(input)
                .and_then(|_| enc.finish().map(|_| ()))
                .map_err(|e| codec_error(codec, e))?;
        }
        Compression::Snappy => {
            out.extend_from_slice(&XERIAL_MAGIC);
            out.extend_from_slice(&1u32.to_be_bytes()); // version
            out.extend_from_slice(&1u32.to_be_bytes()); // minimum compatible version
            let mut enc = snap::raw::Encoder::new();
            for block in input.chunks(XERIAL_BLOCK_BYTES) {
                let len_at = out.len();
                out.extend_from_slice(&[0; 4]);
                let max = snap::raw::max_compress_len(block.len());
                let start = out.len();
                out.resize(start + max, 0);
                let n = enc
                    .compress(block, &mut out[start..])
                    .map_err(|e| codec_error(codec, e))?;
                out.truncate(start + n);
                let n = u32::try_from(n).map_err(|e| codec_error(codec, e))?;
                out[len_at..len_at + 4].copy_from_slice(&n.to_be_bytes());
            }
        }
        Compression::Lz4 => {
            let mut enc = lz4_flex::frame::FrameEncoder::new(out);
            enc.write_all(input).map_err(|e| codec_error(codec, e))?;
            enc.finish().map_err(|e| codec_error(codec, e))?;
        }
        Compression::Zstd => {
            let mut enc =
                zstd::stream::write::Encoder::new(out, 1).map_err(|e| codec_error(codec, e))?;
            enc.write_all(input).map_err(|e| codec_error(codec, e))?;
            enc.finish().map_err(|e| codec_error(codec, e))?;
        }
    }
    Ok(())
}

/// Decompresses `input` into `out` (cleared first), refusing output larger than
/// [`DECOMPRESSED_BYTES_MAX`].
pub fn decompress(codec: Compression, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
    out.clear();
    match codec {
        Compression::None => {
            check_len(codec, input.len())?;
            out.extend_from_slice(input);
        }
        Compression::Gzip => read_bounded(codec, flate2::read::MultiGzDecoder::new(input), out)?,
        Compression::Snappy => {
            if input.len() >= XERIAL_HEADER_BYTES && input[..8] == XERIAL_MAGIC {
                let mut rest = &input[XERIAL_HEADER_BYTES..];
                while !rest.is_empty() {
                    if rest.len() < 4 {
                        return Err(codec_error(codec, "xerial block length cut short"));
                    }
                    let n = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                    rest = &rest[4..];
                    if n > rest.len() {
                        return Err(codec_error(codec, "xerial block longer than the payload"));
                    }
                    snappy_block(&rest[..n], out)?;
                    rest = &rest[n..];
                }
            } else {
                snappy_block(input, out)?;
            }
        }
        Compression::Lz4 => {
            // lz4_flex's decoder reports end-of-stream at the end of each frame, so frames are
            // decoded one after another until the input is used up: concatenated frames are
            // read whole and bytes after the last frame are an error, never silently dropped.
            let mut rest = input;
            loop {
                let mut dec = lz4_flex::frame::FrameDecoder::new(&mut rest);
                read_bounded(codec, &mut dec, out)?;
                if rest.is_empty() {
                    break;
                }
            }
        }
        Compression::Zstd => {
            let mut dec = zstd::stream::read::Decoder::with_buffer(input)
                .map_err(|e| codec_error(codec, e))?;
            dec.window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(|e| codec_error(codec, e))?;
            read_bounded(codec, dec, out)?
        }
    }
    Ok(())
}

fn check_len(codec: Compression, len: usize) -> Result<()> {
    if len > DECOMPRESSED_BYTES_MAX as usize {
        return Err(Error::corrupt(
            0,
            format!(
                "{} payload expands beyond the limit of {DECOMPRESSED_BYTES_MAX} bytes",
                codec.name()
            ),
        ));
    }
    Ok(())
}

fn snappy_block(block: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let codec = Compression::Snappy;
    let n = snap::raw::decompress_len(block).map_err(|e| codec_error(codec, e))?;
    check_len(codec, out.len() + n)?;
    let start = out.len();
    out.resize(start + n, 0);
    let written = snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|e| codec_error(codec, e))?;
    out.truncate(start + written);
    Ok(())
}

/// Reads `reader` to its end into `out`, refusing more than [`DECOMPRESSED_BYTES_MAX`] bytes.
/// `out`'s capacity is grown by hand so that it never exceeds the limit either.
fn read_bounded(codec: Compression, mut reader: impl Read, out: &mut Vec<u8>) -> Result<()> {
    let limit = DECOMPRESSED_BYTES_MAX as usize;
    loop {
        if out.len() == out.capacity() {
            if out.len() == limit {
                // Full: one more byte means the payload is too large.
                let mut probe = [0u8; 1];
                return match reader.read(&mut probe) {
                    Ok(0) => Ok(()),
                    Ok(_) => check_len(codec, limit + 1),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => Err(codec_error(codec, e)),
                };
            }
            let want = out
                .capacity()
                .saturating_mul(2)
                .clamp(READ_CHUNK_BYTES, limit);
            out.reserve_exact(want - out.len());
        }
        let start = out.len();
        let room = (out.capacity() - start).min(limit - start);
        out.resize(start + room, 0);
        match reader.read(&mut out[start..]) {
            Ok(0) => {
                out.truncate(start);
                return Ok(());
            }
            Ok(n) => out.truncate(start + n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => out.truncate(start),
            Err(e) => {
                out.truncate(start);
                return Err(codec_error(codec, e));
            }
        }
    }
}

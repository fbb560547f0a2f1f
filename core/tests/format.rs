//! The message format: golden vectors (`testdata/golden/`, refreshed with `UPDATE_GOLDEN=1`),
//! property-based round trips, and bad input, each refused with the right error at the right
//! byte. `docs/FORMAT.md` is the specification these tests hold the codec to.

use std::collections::BTreeSet;
use std::path::PathBuf;

use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use sluiceway_core::format::compression::{self, Compression};
use sluiceway_core::format::{
    AppendOptions, Attributes, BatchHeader, CRC_POS, Crcs, Entries, Header, MAGIC_POS, MAGIC_V0,
    MAGIC_V1, MessageSetBuilder, OFFSET_POS, Record, RecordBatchBuilder, SIZE_POS, SetSummary,
    TIMESTAMP_POS, TimestampType, for_each_record, for_each_record_with, prepare_append,
    write_entry,
};
use sluiceway_core::limits::{DECOMPRESSED_BYTES_MAX, MESSAGE_BYTES_DEFAULT, MESSAGE_BYTES_MAX};
use sluiceway_core::{Error, Offset, TimestampMs};

// ---------------------------------------------------------------------------------------------
// Helpers

/// A logical record, owned, as tests compare them.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rec {
    offset: u64,
    timestamp: i64,
    timestamp_type: TimestampType,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
}

impl Rec {
    fn from(r: Record<'_>) -> Rec {
        Rec {
            offset: r.offset.0,
            timestamp: r.timestamp.0,
            timestamp_type: r.timestamp_type,
            key: r.key.map(<[u8]>::to_vec),
            value: r.value.map(<[u8]>::to_vec),
        }
    }
}

fn records(set: &[u8]) -> Result<Vec<Rec>, Error> {
    let mut out = Vec::new();
    for_each_record(set, &mut Vec::new(), |r| out.push(Rec::from(r)))?;
    Ok(out)
}

fn opts() -> AppendOptions {
    AppendOptions {
        max_message_bytes: MESSAGE_BYTES_DEFAULT,
        timestamp_type: TimestampType::CreateTime,
        now: TimestampMs(1_700_000_999_999),
        leader_epoch: 0,
    }
}

fn append(set: &mut [u8], base: u64) -> Result<SetSummary, Error> {
    prepare_append(set, Offset(base), &opts(), &mut Vec::new())
}

/// One message to put in a set: (timestamp, key, value).
type Msg = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

fn build(magic: u8, codec: Compression, msgs: &[Msg]) -> Vec<u8> {
    let mut b = MessageSetBuilder::new(magic, codec);
    for (ts, k, v) in msgs {
        b.push(TimestampMs(*ts), k.as_deref(), v.as_deref());
    }
    b.finish().unwrap()
}

fn msg(ts: i64, key: Option<&str>, value: Option<&str>) -> Msg {
    (
        ts,
        key.map(|k| k.as_bytes().to_vec()),
        value.map(|v| v.as_bytes().to_vec()),
    )
}

/// Recomputes the CRC of the entry at `pos` (after a test has changed a byte the CRC covers).
fn fix_crc(set: &mut [u8], pos: usize) {
    let size =
        u32::from_be_bytes(set[pos + SIZE_POS..pos + SIZE_POS + 4].try_into().unwrap()) as usize;
    let crc = crc32fast::hash(&set[pos + MAGIC_POS..pos + 12 + size]);
    set[pos + CRC_POS..pos + MAGIC_POS].copy_from_slice(&crc.to_be_bytes());
}

/// Recomputes the CRC of every entry whose framing holds, in place.
fn fix_all_crcs(set: &mut [u8]) {
    let positions: Vec<usize> = Entries::new(set)
        .filter_map(|e| e.ok())
        .map(|e| e.position)
        .collect();
    for p in positions {
        fix_crc(set, p);
    }
}

/// The position and reason of a `CorruptMessage`, or a panic naming what came instead.
#[track_caller]
fn corrupt<T: std::fmt::Debug>(r: Result<T, Error>) -> (usize, String) {
    match r {
        Err(Error::CorruptMessage { position, reason }) => (position, reason),
        other => panic!("expected CorruptMessage, got {other:?}"),
    }
}

/// The error of the first failing shallow entry.
fn entries_error(set: &[u8]) -> Option<Error> {
    Entries::new(set).find_map(Result::err)
}

/// Asserts that all three decoders refuse `set` as corrupt at `position` with `needle` in the
/// reason. (`for_each_record` and `prepare_append` check more than framing; `Entries` is only
/// asked when the fault is in the framing.)
#[track_caller]
fn assert_refused(set: &[u8], position: usize, needle: &str, framing: bool) {
    let (p, reason) = corrupt(records(set));
    assert_eq!(
        (p, reason.contains(needle)),
        (position, true),
        "for_each_record: {reason}"
    );
    let (p, reason) = corrupt(append(&mut set.to_vec(), 10));
    assert_eq!(
        (p, reason.contains(needle)),
        (position, true),
        "prepare_append: {reason}"
    );
    if framing {
        let (p, reason) = corrupt(entries_error(set).map_or(Ok(()), Err));
        assert_eq!(
            (p, reason.contains(needle)),
            (position, true),
            "Entries: {reason}"
        );
    }
}

fn three_v1() -> Vec<u8> {
    build(
        MAGIC_V1,
        Compression::None,
        &[
            msg(1, Some("a"), Some("one")),
            msg(2, None, Some("two")),
            msg(3, Some("c"), None),
        ],
    )
}

/// Wraps `inner` (raw inner entries) in a gzip wrapper, as a faulty producer might.
fn wrap(magic: u8, codec: Compression, offset: u64, inner: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    compression::compress(codec, inner, &mut payload).unwrap();
    let attrs = Attributes {
        compression: codec,
        timestamp_type: TimestampType::CreateTime,
    }
    .to_byte();
    let mut out = Vec::new();
    write_entry(
        &mut out,
        offset,
        magic,
        attrs,
        TimestampMs(9),
        None,
        Some(&payload),
    );
    out
}

// ---------------------------------------------------------------------------------------------
// Minimal base64 (RFC 4648, standard alphabet, padded) for the golden JSON, so the test needs
// no extra dependency.

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn b64_encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

fn b64_decode(s: &str) -> Vec<u8> {
    let s = s.as_bytes();
    assert!(
        s.len().is_multiple_of(4),
        "base64 length {} is not a multiple of 4",
        s.len()
    );
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for quad in s.chunks(4) {
        let mut n = 0u32;
        let mut pad = 0;
        for &c in quad {
            let v = match c {
                b'=' => {
                    pad += 1;
                    0
                }
                _ => B64
                    .iter()
                    .position(|&b| b == c)
                    .unwrap_or_else(|| panic!("bad base64 byte {c}")) as u32,
            };
            n = n << 6 | v;
        }
        out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
    }
    out
}

#[test]
fn base64_matches_rfc4648_examples() {
    for (raw, enc) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(b64_encode(raw.as_bytes()), enc);
        assert_eq!(b64_decode(enc), raw.as_bytes());
    }
}

// ---------------------------------------------------------------------------------------------
// Golden vectors. The JSON schema is documented in docs/FORMAT.md ("Golden vectors").

#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
struct Vector {
    description: String,
    magic: u8,
    /// Codec of the vector's wrapper entries, "none" when it has none.
    compression: String,
    /// Length of the `.bin` file.
    size_bytes: u64,
    records: Vec<RecordJson>,
    entries: Vec<EntryJson>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
struct RecordJson {
    offset: u64,
    /// Null for magic 0 (no timestamp field).
    timestamp: Option<i64>,
    /// "CreateTime" | "LogAppendTime"; null for magic 0.
    timestamp_type: Option<String>,
    key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_utf8: Option<String>,
    value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value_utf8: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
struct EntryJson {
    position: u64,
    offset: u64,
    size: u32,
    crc: String,
    magic: u8,
    attributes: u8,
    compression: String,
    timestamp_type: String,
    timestamp: Option<i64>,
    /// Wrappers only: bytes of the compressed value, of its decompression, and the inner entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payload_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    decompressed_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    inner: Option<Vec<InnerJson>>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
struct InnerJson {
    /// Relative offset, 0..n-1.
    offset: u64,
    size: u32,
    crc: String,
    attributes: u8,
    timestamp: Option<i64>,
}

fn printable(b: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(b).ok()?;
    (!s.chars().any(char::is_control)).then(|| s.to_owned())
}

/// Describes a stored set as the golden JSON does. Uses only the shallow decoder and
/// `for_each_record`; the check then compares this against the JSON and re-encodes.
fn describe(description: &str, set: &[u8]) -> Vector {
    let mut entries = Vec::new();
    let mut codecs = BTreeSet::new();
    let mut magic = None;
    for e in Entries::new(set) {
        let e = e.unwrap();
        let m = e.message().unwrap();
        magic = Some(m.magic);
        let ts = (m.magic == MAGIC_V1).then_some(m.timestamp.0);
        let mut ej = EntryJson {
            position: e.position as u64,
            offset: m.offset.0,
            size: (e.len() - 12) as u32,
            crc: format!("{:08x}", e.stored_crc()),
            magic: m.magic,
            attributes: e.attributes_byte(),
            compression: m.attributes.compression.name().into(),
            timestamp_type: m.attributes.timestamp_type.name().into(),
            timestamp: ts,
            payload_size: None,
            decompressed_size: None,
            inner: None,
        };
        if m.attributes.compression != Compression::None {
            codecs.insert(m.attributes.compression.name());
            let payload = m.value.unwrap();
            let mut inner_bytes = Vec::new();
            compression::decompress(m.attributes.compression, payload, &mut inner_bytes).unwrap();
            ej.payload_size = Some(payload.len() as u32);
            ej.decompressed_size = Some(inner_bytes.len() as u32);
            ej.inner = Some(
                Entries::new(&inner_bytes)
                    .map(|i| {
                        let i = i.unwrap();
                        let im = i.message().unwrap();
                        InnerJson {
                            offset: im.offset.0,
                            size: (i.len() - 12) as u32,
                            crc: format!("{:08x}", i.stored_crc()),
                            attributes: i.attributes_byte(),
                            timestamp: (im.magic == MAGIC_V1).then_some(im.timestamp.0),
                        }
                    })
                    .collect(),
            );
        }
        entries.push(ej);
    }
    let magic = magic.unwrap();
    let recs = records(set)
        .unwrap()
        .into_iter()
        .map(|r| RecordJson {
            offset: r.offset,
            timestamp: (magic == MAGIC_V1).then_some(r.timestamp),
            timestamp_type: (magic == MAGIC_V1).then(|| r.timestamp_type.name().to_owned()),
            key_utf8: r.key.as_deref().and_then(printable),
            key: r.key.as_deref().map(b64_encode),
            value_utf8: r.value.as_deref().and_then(printable),
            value: r.value.as_deref().map(b64_encode),
        })
        .collect();
    assert!(codecs.len() <= 1, "a vector uses one codec");
    Vector {
        description: description.into(),
        magic,
        compression: codecs.into_iter().next().unwrap_or("none").into(),
        size_bytes: set.len() as u64,
        records: recs,
        entries,
    }
}

/// One golden vector: parts (each one builder's output) appended at `base`.
struct Spec {
    name: &'static str,
    description: &'static str,
    magic: u8,
    parts: Vec<(Compression, Vec<Msg>)>,
    base: u64,
    timestamp_type: TimestampType,
}

const T0: i64 = 1_700_000_000_000;

fn specs() -> Vec<Spec> {
    let one = |name, description, magic, codec, base, msgs| Spec {
        name,
        description,
        magic,
        parts: vec![(codec, msgs)],
        base,
        timestamp_type: TimestampType::CreateTime,
    };
    let four = || {
        vec![
            msg(T0, Some("k0"), Some("first value")),
            msg(T0 + 5, None, Some("no key")),
            (
                T0 + 3,
                Some(b"bin\x00\xff".to_vec()),
                Some((0u8..=255).collect()),
            ),
            msg(T0 + 9, Some("k3"), Some("")),
        ]
    };
    let max_value_len = MESSAGE_BYTES_DEFAULT as usize - 22 - 3;
    let max_value: Vec<u8> = (0..max_value_len).map(|i| (i % 251) as u8).collect();
    let mut v = vec![
        one(
            "v0_uncompressed",
            "magic 0, no compression, three messages at base offset 0",
            MAGIC_V0,
            Compression::None,
            0,
            vec![
                msg(-1, Some("k0"), Some("hello")),
                msg(-1, Some("k1"), Some("world")),
                msg(-1, None, Some("no key")),
            ],
        ),
        one(
            "v1_uncompressed",
            "magic 1, no compression, five messages (timestamps not monotonic) at base offset 0",
            MAGIC_V1,
            Compression::None,
            0,
            vec![
                msg(T0, Some("alpha"), Some("one")),
                msg(T0 + 1, Some("beta"), Some("two")),
                msg(T0 - 1000, Some("gamma"), Some("three (older timestamp)")),
                msg(T0 + 2, Some("delta"), Some("four")),
                msg(T0 + 3, Some("epsilon"), Some("five")),
            ],
        ),
        one(
            "v1_null_key",
            "magic 1, a message with a null key (key length -1)",
            MAGIC_V1,
            Compression::None,
            0,
            vec![msg(T0, None, Some("value without a key"))],
        ),
        one(
            "v1_empty_value",
            "magic 1, a zero-length value and a zero-length key (length 0, not null)",
            MAGIC_V1,
            Compression::None,
            0,
            vec![
                msg(T0, Some("empty-value"), Some("")),
                msg(T0 + 1, Some(""), Some("empty key")),
            ],
        ),
        one(
            "v1_null_value",
            "magic 1, a null value (a tombstone), then a message with both null",
            MAGIC_V1,
            Compression::None,
            0,
            vec![msg(T0, Some("deleted-key"), None), msg(T0 + 1, None, None)],
        ),
        one(
            "v0_gzip",
            "magic 0 gzip wrapper holding three messages, at base offset 7",
            MAGIC_V0,
            Compression::Gzip,
            7,
            vec![
                msg(-1, Some("k0"), Some("hello")),
                msg(-1, None, Some("world")),
                msg(-1, Some("k2"), Some("")),
            ],
        ),
        one(
            "v1_base_offset",
            "magic 1, offsets assigned by the broker at base offset 4294968296 (beyond u32)",
            MAGIC_V1,
            Compression::None,
            4_294_968_296,
            vec![
                msg(T0, Some("a"), Some("x")),
                msg(T0 + 1, Some("b"), Some("y")),
                msg(T0 + 2, Some("c"), Some("z")),
            ],
        ),
        one(
            "v1_max_size",
            "magic 1, one message of exactly limits::MESSAGE_BYTES_DEFAULT bytes (1114112), at base offset 5",
            MAGIC_V1,
            Compression::None,
            5,
            vec![(T0, Some(b"max".to_vec()), Some(max_value))],
        ),
        Spec {
            name: "v1_log_append_time",
            description: "magic 1 gzip wrapper appended to a LogAppendTime topic: wrapper timestamp and bit 3 rewritten, inner messages untouched",
            magic: MAGIC_V1,
            parts: vec![(Compression::Gzip, four())],
            base: 100,
            timestamp_type: TimestampType::LogAppendTime,
        },
        Spec {
            name: "v1_log_append_time_uncompressed",
            description: "magic 1 uncompressed messages appended to a LogAppendTime topic: each timestamp and bit 3 rewritten",
            magic: MAGIC_V1,
            parts: vec![(
                Compression::None,
                vec![
                    msg(T0, Some("a"), Some("x")),
                    msg(T0 + 1, Some("b"), Some("y")),
                ],
            )],
            base: 200,
            timestamp_type: TimestampType::LogAppendTime,
        },
        Spec {
            name: "v1_mixed",
            description: "magic 1: two plain messages, a snappy wrapper of three, one plain message, at base offset 300",
            magic: MAGIC_V1,
            parts: vec![
                (
                    Compression::None,
                    vec![
                        msg(T0, Some("p0"), Some("plain 0")),
                        msg(T0 + 1, Some("p1"), Some("plain 1")),
                    ],
                ),
                (
                    Compression::Snappy,
                    vec![
                        msg(T0 + 2, Some("s0"), Some("snappy 0")),
                        msg(T0 + 3, None, Some("snappy 1")),
                        msg(T0 + 4, Some("s2"), None),
                    ],
                ),
                (
                    Compression::None,
                    vec![msg(T0 + 5, Some("p2"), Some("plain 2"))],
                ),
            ],
            base: 300,
            timestamp_type: TimestampType::CreateTime,
        },
    ];
    for (name, codec) in [
        ("v1_gzip", Compression::Gzip),
        ("v1_snappy", Compression::Snappy),
        ("v1_lz4", Compression::Lz4),
        ("v1_zstd", Compression::Zstd),
    ] {
        v.push(Spec {
            name,
            description: match codec {
                Compression::Gzip => "magic 1 gzip wrapper holding four messages, at base offset 42",
                Compression::Snappy => "magic 1 snappy (xerial framing) wrapper holding four messages, at base offset 42",
                Compression::Lz4 => "magic 1 lz4 (frame format) wrapper holding four messages, at base offset 42",
                _ => "magic 1 zstd wrapper holding four messages, at base offset 42",
            },
            magic: MAGIC_V1,
            parts: vec![(codec, four())],
            base: 42,
            timestamp_type: TimestampType::CreateTime,
        });
    }
    v
}

fn generate(spec: &Spec) -> Vec<u8> {
    let mut set = Vec::new();
    for (codec, msgs) in &spec.parts {
        set.extend(build(spec.magic, *codec, msgs));
    }
    let opts = AppendOptions {
        timestamp_type: spec.timestamp_type,
        ..opts()
    };
    let summary = prepare_append(&mut set, Offset(spec.base), &opts, &mut Vec::new()).unwrap();
    let n: usize = spec.parts.iter().map(|p| p.1.len()).sum();
    assert_eq!(summary.message_count, n as u64);
    set
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/golden")
}

fn hex_u32(s: &str) -> u32 {
    assert_eq!(s.len(), 8, "crc {s:?} is 8 lowercase hex digits");
    u32::from_str_radix(s, 16).unwrap()
}

fn b64_opt(s: &Option<String>) -> Option<Vec<u8>> {
    s.as_deref().map(b64_decode)
}

/// Checks one stored vector against its JSON: decode, compare, re-encode byte for byte.
fn check_vector(name: &str, bin: &[u8], v: &Vector) {
    assert_eq!(v.size_bytes, bin.len() as u64, "{name}: size_bytes");
    // Decoding gives exactly what the JSON says (the JSON was written by `describe`, so compare
    // whole structures, then check the fields that `describe` derives against raw bytes).
    assert_eq!(
        &describe(&v.description, bin),
        v,
        "{name}: decoded set differs from the JSON"
    );
    for r in &v.records {
        assert_eq!(
            r.key_utf8
                .as_ref()
                .map(|s| s.as_bytes().to_vec())
                .filter(|_| r.key.is_some()),
            r.key_utf8.as_ref().and(b64_opt(&r.key))
        );
        assert_eq!(
            r.value_utf8
                .as_ref()
                .map(|s| s.as_bytes().to_vec())
                .filter(|_| r.value.is_some()),
            r.value_utf8.as_ref().and(b64_opt(&r.value))
        );
    }
    // Re-encode every entry from the JSON fields alone.
    let mut recs = v.records.iter();
    let mut rebuilt = Vec::new();
    for e in &v.entries {
        assert_eq!(
            e.position,
            rebuilt.len() as u64,
            "{name}: entry positions are contiguous"
        );
        let at = e.position as usize;
        let stored = &bin[at..at + 12 + e.size as usize];
        assert_eq!(
            hex_u32(&e.crc),
            u32::from_be_bytes(stored[CRC_POS..MAGIC_POS].try_into().unwrap())
        );
        assert_eq!(stored[MAGIC_POS], e.magic, "{name}: magic is byte 16");
        assert_eq!(e.magic, v.magic);
        let ts = TimestampMs(e.timestamp.unwrap_or(-1));
        match &e.inner {
            None => {
                let r = recs.next().unwrap();
                write_entry(
                    &mut rebuilt,
                    e.offset,
                    e.magic,
                    e.attributes,
                    ts,
                    b64_opt(&r.key).as_deref(),
                    b64_opt(&r.value).as_deref(),
                );
            }
            Some(inner) => {
                // Inner entries rebuilt from the JSON equal the stored payload, decompressed.
                let mut expected_inner = Vec::new();
                let first = e.offset - (inner.len() as u64 - 1);
                for (i, ie) in inner.iter().enumerate() {
                    let r = recs.next().unwrap();
                    assert_eq!(
                        (ie.offset, r.offset),
                        (i as u64, first + i as u64),
                        "{name}: inner offsets"
                    );
                    let before = expected_inner.len();
                    write_entry(
                        &mut expected_inner,
                        ie.offset,
                        e.magic,
                        ie.attributes,
                        TimestampMs(ie.timestamp.unwrap_or(-1)),
                        b64_opt(&r.key).as_deref(),
                        b64_opt(&r.value).as_deref(),
                    );
                    assert_eq!(expected_inner.len() - before, 12 + ie.size as usize);
                    assert_eq!(
                        hex_u32(&ie.crc),
                        u32::from_be_bytes(
                            expected_inner[before + CRC_POS..before + MAGIC_POS]
                                .try_into()
                                .unwrap()
                        )
                    );
                }
                let payload = &stored[stored.len() - e.payload_size.unwrap() as usize..];
                let codec = Compression::from_name(&e.compression).unwrap();
                let mut decompressed = Vec::new();
                compression::decompress(codec, payload, &mut decompressed).unwrap();
                assert_eq!(
                    decompressed, expected_inner,
                    "{name}: inner entries re-encoded from the JSON"
                );
                assert_eq!(Some(decompressed.len() as u32), e.decompressed_size);
                // Re-wrapping the stored payload gives the stored wrapper, byte for byte.
                write_entry(
                    &mut rebuilt,
                    e.offset,
                    e.magic,
                    e.attributes,
                    ts,
                    None,
                    Some(payload),
                );
            }
        }
        assert_eq!(
            &rebuilt[at..],
            stored,
            "{name}: entry at byte {at} re-encoded from the JSON"
        );
    }
    assert!(
        recs.next().is_none(),
        "{name}: every record belongs to an entry"
    );
    assert_eq!(rebuilt, bin, "{name}: whole set re-encoded");
}

#[test]
fn golden_vectors() {
    let dir = golden_dir();
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let specs = specs();
    if update {
        std::fs::create_dir_all(&dir).unwrap();
        for spec in &specs {
            let set = generate(spec);
            let json =
                serde_json::to_string_pretty(&describe(spec.description, &set)).unwrap() + "\n";
            std::fs::write(dir.join(format!("{}.bin", spec.name)), &set).unwrap();
            std::fs::write(dir.join(format!("{}.json", spec.name)), json).unwrap();
        }
    }
    // Exactly the expected files are there: none missing, none stray.
    // Magic 2 vectors come from an independent encoder: `golden_v2_vectors` checks them.
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run with UPDATE_GOLDEN=1 to create)",
                dir.display()
            )
        })
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".bin") || n.ends_with(".json"))
        .filter(|n| !n.starts_with("v2_"))
        .collect();
    let expected: BTreeSet<String> = specs
        .iter()
        .flat_map(|s| [format!("{}.bin", s.name), format!("{}.json", s.name)])
        .collect();
    assert_eq!(on_disk, expected, "golden files in {}", dir.display());
    let mut total = 0;
    for spec in &specs {
        let bin = std::fs::read(dir.join(format!("{}.bin", spec.name))).unwrap();
        let json = std::fs::read_to_string(dir.join(format!("{}.json", spec.name))).unwrap();
        total += bin.len() + json.len();
        let v: Vector = serde_json::from_str(&json).unwrap();
        check_vector(spec.name, &bin, &v);
        // The codec still produces uncompressed vectors byte for byte (compressor output may
        // legitimately change with a library version, so compressed ones are not regenerated).
        if spec.parts.iter().all(|p| p.0 == Compression::None) {
            assert_eq!(
                generate(spec),
                bin,
                "{}: the codec no longer writes this vector",
                spec.name
            );
        }
        // Appending the stored vector again at its own base changes nothing.
        let mut again = bin.clone();
        let first = v.records[0].offset;
        let o = AppendOptions {
            timestamp_type: spec.timestamp_type,
            ..opts()
        };
        if spec.timestamp_type == TimestampType::CreateTime {
            prepare_append(&mut again, Offset(first), &o, &mut Vec::new()).unwrap();
            assert_eq!(again, bin, "{}: re-append at the same base", spec.name);
        }
    }
    assert!(total < 3 << 20, "golden vectors total {total} bytes");
}

#[test]
fn golden_max_size_is_exactly_the_default_limit() {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        return; // `golden_vectors` is rewriting the file right now (tests run in parallel).
    }
    let bin = std::fs::read(golden_dir().join("v1_max_size.bin")).unwrap();
    assert_eq!(bin.len(), 12 + MESSAGE_BYTES_DEFAULT as usize);
    append(&mut bin.clone(), 0).unwrap();
    let small = AppendOptions {
        max_message_bytes: MESSAGE_BYTES_DEFAULT - 1,
        ..opts()
    };
    let err = prepare_append(&mut bin.clone(), Offset(0), &small, &mut Vec::new()).unwrap_err();
    assert!(
        matches!(err, Error::MessageTooLarge { size, max } if size == u64::from(MESSAGE_BYTES_DEFAULT) && max == size - 1),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Round trips

fn arb_msgs(max: usize) -> impl Strategy<Value = Vec<Msg>> {
    prop::collection::vec(
        (
            -1i64..2_000_000_000_000,
            prop::option::of(prop::collection::vec(any::<u8>(), 0..24)),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
        ),
        1..max,
    )
}

fn arb_codec() -> impl Strategy<Value = Compression> {
    prop::sample::select(Compression::ALL.to_vec())
}

proptest! {
    // proptest's default of 256 cases per property; `PROPTEST_CASES=20000` for a longer soak.
    #![proptest_config(ProptestConfig::default())]

    /// Sets built from arbitrary records, magics and codecs (several parts, mixed), appended at
    /// an arbitrary base, give back the same records at dense offsets from the base.
    #[test]
    fn round_trip(magic in 0u8..=1, parts in prop::collection::vec((arb_codec(), arb_msgs(8)), 1..4), base in 0u64..(1 << 53)) {
        let mut set = Vec::new();
        let mut expected = Vec::new();
        for (codec, msgs) in &parts {
            set.extend(build(magic, *codec, msgs));
            for (ts, k, v) in msgs {
                expected.push(Rec {
                    offset: base + expected.len() as u64,
                    timestamp: if magic == MAGIC_V0 { -1 } else { *ts },
                    timestamp_type: TimestampType::CreateTime,
                    key: k.clone(),
                    value: v.clone(),
                });
            }
        }
        let summary = append(&mut set, base).unwrap();
        prop_assert_eq!(summary.message_count, expected.len() as u64);
        prop_assert_eq!(summary.entry_count as usize, Entries::new(&set).count());
        prop_assert_eq!(summary.base_offset, Offset(base));
        prop_assert_eq!(summary.last_offset, Offset(base + expected.len() as u64 - 1));
        prop_assert_eq!(summary.max_timestamp.0, expected.iter().map(|r| r.timestamp).max().unwrap());
        prop_assert_eq!(summary.magic, magic);
        prop_assert_eq!(records(&set).unwrap(), expected);
        for e in Entries::new(&set) {
            let e = e.unwrap();
            prop_assert_eq!(e.magic(), magic);
            e.check_crc().unwrap();
        }
    }

    /// Under LogAppendTime every magic-1 shallow entry gets `now` and bit 3, with a valid CRC,
    /// and every record reads back with `now`.
    #[test]
    fn log_append_time_round_trip(codec in arb_codec(), msgs in arb_msgs(8), base in 0u64..1_000_000, now in 0i64..2_000_000_000_000) {
        let mut set = build(MAGIC_V1, codec, &msgs);
        let o = AppendOptions { timestamp_type: TimestampType::LogAppendTime, now: TimestampMs(now), ..opts() };
        let summary = prepare_append(&mut set, Offset(base), &o, &mut Vec::new()).unwrap();
        prop_assert_eq!(summary.max_timestamp, TimestampMs(now));
        for e in Entries::new(&set) {
            let e = e.unwrap();
            e.check_crc().unwrap();
            prop_assert_eq!(e.attributes_byte() & 0x08, 0x08);
        }
        let recs = records(&set).unwrap();
        prop_assert_eq!(recs.len(), msgs.len());
        for (i, r) in recs.iter().enumerate() {
            prop_assert_eq!((r.offset, r.timestamp, r.timestamp_type), (base + i as u64, now, TimestampType::LogAppendTime));
            prop_assert_eq!((&r.key, &r.value), (&msgs[i].1, &msgs[i].2));
        }
    }

    /// Arbitrary bytes never panic any decoder.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        exercise(&bytes);
    }

    /// Valid sets with bytes changed (CRCs then recomputed or not) and cut short never panic
    /// any decoder. Recomputing the CRCs lets the corruption reach the deeper checks.
    #[test]
    fn damaged_sets_never_panic(
        magic in 0u8..=1,
        codec in arb_codec(),
        msgs in arb_msgs(6),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        fix in any::<bool>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut set = build(magic, codec, &msgs);
        for (at, b) in &edits {
            let i = at.index(set.len());
            set[i] = *b;
        }
        if fix {
            fix_all_crcs(&mut set);
        }
        exercise(&set);
        let n = cut.index(set.len() + 1);
        exercise(&set[..n]);
    }
}

/// Runs every decoder over `bytes`; only panics count as failures.
fn exercise(bytes: &[u8]) {
    for e in Entries::new(bytes).flatten() {
        let _ = e.check_crc();
        let _ = e.message();
    }
    let _ = for_each_record(bytes, &mut Vec::new(), |_| {});
    let _ = prepare_append(&mut bytes.to_vec(), Offset(7), &opts(), &mut Vec::new());
    let lat = AppendOptions {
        timestamp_type: TimestampType::LogAppendTime,
        ..opts()
    };
    let _ = prepare_append(&mut bytes.to_vec(), Offset::MAX, &lat, &mut Vec::new());
}

// ---------------------------------------------------------------------------------------------
// Bad input

#[test]
fn truncated_sets_fail_at_the_cut_entry_at_every_cut_point() {
    let mut set = three_v1();
    set.extend(build(
        MAGIC_V1,
        Compression::Gzip,
        &[msg(4, Some("g"), Some("gz")), msg(5, None, Some("gz2"))],
    ));
    set.extend(build(
        MAGIC_V0,
        Compression::None,
        &[msg(-1, Some("zero"), Some("v0"))],
    ));
    let starts: Vec<usize> = Entries::new(&set).map(|e| e.unwrap().position).collect();
    for cut in 0..set.len() {
        let part = &set[..cut];
        match starts.iter().rposition(|&s| s <= cut) {
            Some(i) if starts[i] == cut => {
                // On an entry boundary: a valid, shorter set (mixed magic only in prepare_append).
                assert!(Entries::new(part).all(|e| e.is_ok()), "cut {cut}");
                assert_eq!(Entries::new(part).count(), i, "cut {cut}");
                assert!(records(part).is_ok(), "cut {cut}");
            }
            Some(i) => {
                let (p, reason) = corrupt(entries_error(part).map_or(Ok(()), Err));
                assert_eq!(p, starts[i], "cut {cut}: {reason}");
                let mut it = Entries::new(part);
                it.by_ref().for_each(drop);
                assert_eq!(
                    it.position(),
                    starts[i],
                    "cut {cut}: position() stops at the last good entry"
                );
                assert_eq!(corrupt(records(part)).0, starts[i], "cut {cut}");
                if i < 4 {
                    // The v0 entry would make the set mixed; before it, the cut is what fails.
                    assert_eq!(
                        corrupt(append(&mut part.to_vec(), 0)).0,
                        starts[i],
                        "cut {cut}"
                    );
                }
            }
            None => unreachable!(),
        }
    }
    assert!(matches!(append(&mut [], 0), Err(Error::InvalidRequest(_))));
}

#[test]
fn size_pointing_past_the_end_is_refused() {
    let mut set = three_v1();
    let second = Entries::new(&set).nth(1).unwrap().unwrap().position;
    let size = u32::from_be_bytes(set[second + SIZE_POS..second + 12].try_into().unwrap());
    set[second + SIZE_POS..second + 12].copy_from_slice(&(size + 1000).to_be_bytes());
    assert_refused(&set, second, "runs past the end", true);
}

#[test]
fn negative_and_tiny_sizes_are_refused() {
    for bad in [-1i32, -5, i32::MIN, 0, 13] {
        let mut set = three_v1();
        let second = Entries::new(&set).nth(1).unwrap().unwrap().position;
        set[second + SIZE_POS..second + 12].copy_from_slice(&bad.to_be_bytes());
        assert_refused(&set, second, "smaller than the smallest message", true);
    }
}

#[test]
fn negative_key_and_value_lengths_are_refused() {
    // Key length at TIMESTAMP_POS + 8 for magic 1; -1 is null, anything below is corrupt.
    let key_len_at = TIMESTAMP_POS + 8;
    for bad in [-2i32, i32::MIN] {
        let mut set = three_v1();
        set[key_len_at..key_len_at + 4].copy_from_slice(&bad.to_be_bytes());
        fix_crc(&mut set, 0);
        assert_refused(&set, 0, "key length", false);
    }
    // First entry: key "a" (1 byte), so the value length follows it.
    let value_len_at = key_len_at + 4 + 1;
    let mut set = three_v1();
    set[value_len_at..value_len_at + 4].copy_from_slice(&(-7i32).to_be_bytes());
    fix_crc(&mut set, 0);
    assert_refused(&set, 0, "value length -7 is negative", false);
}

#[test]
fn key_and_value_lengths_past_the_message_are_refused() {
    let key_len_at = TIMESTAMP_POS + 8;
    let second = Entries::new(&three_v1()).nth(1).unwrap().unwrap().position;
    for (at, needle) in [
        (key_len_at, "key length 100"),
        (key_len_at + 5, "value length 100"),
    ] {
        let mut set = three_v1();
        set[at..at + 4].copy_from_slice(&100i32.to_be_bytes());
        fix_crc(&mut set, 0);
        assert_refused(&set, 0, needle, false);
    }
    // A value shorter than the size says: trailing bytes.
    let mut set = three_v1();
    let v = second + key_len_at + 4; // second entry: null key, value "two"
    set[v..v + 4].copy_from_slice(&2i32.to_be_bytes());
    fix_crc(&mut set, second);
    assert_refused(&set, second, "1 trailing bytes", false);
}

#[test]
fn wrong_crc_is_refused_at_its_entry() {
    let mut set = three_v1();
    let second = Entries::new(&set).nth(1).unwrap().unwrap().position;
    let last = set.len() - 1;
    let third = Entries::new(&set).nth(2).unwrap().unwrap().position;
    set[third - 1] ^= 0x01; // last byte of the second entry's value
    assert_refused(&set, second, "CRC mismatch", false);
    // The offset is not covered: changing it keeps the CRC valid.
    let mut set = three_v1();
    set[OFFSET_POS + 7] = 99;
    assert!(records(&set).is_ok());
    let _ = last;
}

#[test]
fn with_crcs_skipped_a_changed_value_byte_passes_and_bad_framing_still_fails() {
    let skipping = |set: &[u8]| -> Result<Vec<Rec>, Error> {
        let mut out = Vec::new();
        for_each_record_with(set, Crcs::Skip, &mut Vec::new(), |r| out.push(Rec::from(r)))?;
        Ok(out)
    };
    // Magic 1: the last byte of the second entry's value ("two" → "twn").
    let mut set = three_v1();
    append(&mut set, 0).unwrap();
    let third = Entries::new(&set).nth(2).unwrap().unwrap().position;
    set[third - 1] ^= 0x01;
    assert!(records(&set).is_err(), "checked: a CRC mismatch");
    let got = skipping(&set).unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got[1].value.as_deref(), Some(&b"twn"[..]));
    // Magic 2: a changed byte in the records section, which the batch's CRC covers.
    let mut b = RecordBatchBuilder::new(Compression::None);
    b.push(TimestampMs(1), None, Some(b"alpha"), []);
    b.push(TimestampMs(2), None, Some(b"beta"), []);
    let mut set = b.finish().unwrap();
    append(&mut set, 10).unwrap();
    let at = set.len() - 2; // the last value's last byte ("beta" → "bet`"); then headerCount
    set[at] ^= 0x01;
    assert!(records(&set).is_err(), "checked: a CRC mismatch");
    let got = skipping(&set).unwrap();
    assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), [10, 11]);
    assert_eq!(got[1].value.as_deref(), Some(&b"bet`"[..]));
    // Framing is still checked: a set cut inside its last entry fails either way.
    let mut cut = three_v1();
    cut.truncate(cut.len() - 2);
    assert!(skipping(&cut).is_err());
    assert!(records(&cut).is_err());
}

#[test]
fn unknown_magic_is_refused_before_the_crc() {
    for magic in [3u8, 0x7f, 0xff] {
        let mut set = three_v1();
        let second = Entries::new(&set).nth(1).unwrap().unwrap().position;
        set[second + MAGIC_POS] = magic;
        // Not fixing the CRC: the magic is reported, not a CRC mismatch.
        assert_refused(&set, second, &format!("unknown magic {magic}"), false);
    }
    // Byte 16 of a Kafka RecordBatch v2 header is its magic: a v1 message relabelled 2 is read
    // as a batch, too short for a batch's header.
    let mut set = three_v1();
    let second = Entries::new(&set).nth(1).unwrap().unwrap().position;
    set[second + MAGIC_POS] = 2;
    assert_refused(&set, second, "smaller than its header", false);
    // A magic 2 entry inside a wrapper.
    let mut inner = three_v1();
    inner[MAGIC_POS] = 2;
    let w = wrap(MAGIC_V1, Compression::Gzip, 2, &inner);
    assert_refused(&w, 0, "magic 2", false);
}

#[test]
fn reserved_attribute_bits_and_unknown_codecs_are_refused() {
    for bit in [0x10u8, 0x20, 0x40, 0x80] {
        let mut set = three_v1();
        let second = Entries::new(&set).nth(1).unwrap().unwrap().position;
        set[second + MAGIC_POS + 1] |= bit;
        fix_crc(&mut set, second);
        assert_refused(&set, second, "reserved attribute bits", false);
    }
    for codec in 5u8..=7 {
        let mut set = three_v1();
        set[MAGIC_POS + 1] = codec;
        fix_crc(&mut set, 0);
        assert!(
            matches!(records(&set), Err(Error::UnsupportedCompression { codec: c }) if c == codec)
        );
        assert!(
            matches!(append(&mut set, 0), Err(Error::UnsupportedCompression { codec: c }) if c == codec)
        );
    }
}

#[test]
fn oversize_messages_are_refused() {
    // Over the topic's max.message.bytes: MessageTooLarge, whether plain or a wrapper.
    let big = vec![7u8; 2000];
    for codec in [Compression::None, Compression::Gzip] {
        let mut set = build(
            MAGIC_V1,
            codec,
            &[(1, None, Some(big.clone())), (2, None, Some(vec![1; 1000]))],
        );
        let first = Entries::new(&set).next().unwrap().unwrap();
        let size = (first.len() - 12) as u32;
        let o = AppendOptions {
            max_message_bytes: size - 1,
            ..opts()
        };
        let err = prepare_append(&mut set.clone(), Offset(0), &o, &mut Vec::new()).unwrap_err();
        assert!(
            matches!(err, Error::MessageTooLarge { size: s, max } if s == u64::from(size) && max == u64::from(size) - 1),
            "{err:?}"
        );
        let o = AppendOptions {
            max_message_bytes: size,
            ..opts()
        };
        if codec == Compression::None {
            // Exactly at the limit is accepted; the second (smaller) entry too.
            prepare_append(&mut set, Offset(0), &o, &mut Vec::new()).unwrap();
        }
    }
    // A size field above MESSAGE_BYTES_MAX is refused from the header alone, whatever follows.
    let mut set = three_v1();
    set[SIZE_POS..12].copy_from_slice(&(MESSAGE_BYTES_MAX + 1).to_be_bytes());
    assert_refused(&set, 0, "exceeds the limit", true);
    set[SIZE_POS..12].copy_from_slice(&u32::MAX.to_be_bytes()); // also -1 as i32
    assert_refused(&set, 0, "smaller than the smallest message", true);
    set[SIZE_POS..12].copy_from_slice(&(i32::MAX as u32).to_be_bytes());
    assert_refused(&set, 0, "exceeds the limit", true);
}

#[test]
fn magic_1_message_shorter_than_its_header_is_refused() {
    // A magic-1 entry with a size that fits magic 0's header but not magic 1's.
    let mut set = Vec::new();
    write_entry(&mut set, 0, MAGIC_V0, 0, TimestampMs::NONE, None, None);
    set[MAGIC_POS] = MAGIC_V1;
    fix_crc(&mut set, 0);
    assert_refused(&set, 0, "shorter than the 22-byte header", false);
}

#[test]
fn wrappers_with_garbage_payloads_are_refused() {
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        for garbage in [
            &b"definitely not compressed"[..],
            b"",
            b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01\xff\xff\xff\xff",
        ] {
            let attrs = Attributes {
                compression: codec,
                timestamp_type: TimestampType::CreateTime,
            }
            .to_byte();
            let mut set = three_v1();
            let at = set.len();
            write_entry(
                &mut set,
                3,
                MAGIC_V1,
                attrs,
                TimestampMs(1),
                None,
                Some(garbage),
            );
            let (p, reason) = corrupt(records(&set));
            assert_eq!(p, at, "{codec:?} {garbage:?}: {reason}");
            let (p, reason) = corrupt(append(&mut set, 0));
            assert_eq!(p, at, "{codec:?} {garbage:?}: {reason}");
        }
    }
    // Compressed payloads that decompress to something other than entries.
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let w = wrap(MAGIC_V1, codec, 0, b"these bytes are not entries at all");
        assert_refused(&w, 0, "in compressed payload at inner byte 0", false);
        let w = wrap(MAGIC_V1, codec, 0, b"");
        assert_refused(&w, 0, "holds no messages", false);
    }
    // A wrapper with a null value, or (from a producer) a key.
    let attrs = Attributes {
        compression: Compression::Gzip,
        timestamp_type: TimestampType::CreateTime,
    }
    .to_byte();
    let mut set = Vec::new();
    write_entry(&mut set, 0, MAGIC_V1, attrs, TimestampMs(1), None, None);
    assert_refused(&set, 0, "null value", false);
    let good = build(MAGIC_V1, Compression::Gzip, &[msg(1, None, Some("x"))]);
    let payload = Entries::new(&good)
        .next()
        .unwrap()
        .unwrap()
        .message()
        .unwrap()
        .value
        .unwrap()
        .to_vec();
    let mut set = Vec::new();
    write_entry(
        &mut set,
        0,
        MAGIC_V1,
        attrs,
        TimestampMs(1),
        Some(b"key"),
        Some(&payload),
    );
    assert!(corrupt(append(&mut set, 0)).1.contains("null key"));
}

/// A payload of `repeats` copies of one small compressed unit (gzip members, zstd and lz4
/// frames, xerial blocks concatenate), each expanding to `unit` zero bytes.
fn bomb(codec: Compression, unit: usize, repeats: usize) -> Vec<u8> {
    let zeros = vec![0u8; unit];
    let mut one = Vec::new();
    if codec == Compression::Gzip {
        // The codec writes gzip at the fast level; a bomb is made at the best one (~1000:1).
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(&mut one, flate2::Compression::best());
        enc.write_all(&zeros).unwrap();
        enc.finish().unwrap();
    } else {
        compression::compress(codec, &zeros, &mut one).unwrap();
    }
    let mut out = Vec::new();
    if codec == Compression::Snappy {
        out.extend_from_slice(&one[..16]); // the xerial header once, then its blocks again and again
        for _ in 0..repeats {
            out.extend_from_slice(&one[16..]);
        }
    } else {
        for _ in 0..repeats {
            out.extend_from_slice(&one);
        }
    }
    out
}

#[test]
fn zip_bombs_are_refused() {
    let limit = DECOMPRESSED_BYTES_MAX as usize;
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let unit = if codec == Compression::Snappy {
            32 << 10
        } else {
            1 << 20
        };
        let payload = bomb(codec, unit, limit / unit + 1);
        let mut out = Vec::new();
        let (p, reason) = corrupt(compression::decompress(codec, &payload, &mut out));
        assert_eq!(p, 0);
        assert!(
            reason.contains("expands beyond the limit"),
            "{codec:?}: {reason}"
        );
        assert!(
            out.capacity() <= limit,
            "{codec:?}: grew the buffer to {}",
            out.capacity()
        );
        if codec == Compression::Gzip {
            assert!(
                payload.len() < 128 << 10,
                "a small payload: {} bytes",
                payload.len()
            );
            let attrs = Attributes {
                compression: codec,
                timestamp_type: TimestampType::CreateTime,
            }
            .to_byte();
            let mut set = three_v1();
            let at = set.len();
            write_entry(
                &mut set,
                9,
                MAGIC_V1,
                attrs,
                TimestampMs(1),
                None,
                Some(&payload),
            );
            let (p, reason) = corrupt(records(&set));
            assert_eq!(p, at);
            assert!(reason.contains("expands beyond the limit"), "{reason}");
            assert_eq!(corrupt(append(&mut set, 0)).0, at);
        }
    }
    // Exactly at the limit is fine (and allocates no more than the limit).
    let payload = bomb(Compression::Gzip, 1 << 20, limit >> 20);
    let mut out = Vec::new();
    compression::decompress(Compression::Gzip, &payload, &mut out).unwrap();
    assert_eq!(out.len(), limit);
    assert!(out.capacity() <= limit);
    // A raw snappy block whose header claims 4 GiB is refused before anything is allocated.
    let mut out = Vec::new();
    let claim = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
    corrupt(compression::decompress(
        Compression::Snappy,
        &claim,
        &mut out,
    ));
    assert_eq!(out.capacity(), 0);
}

#[test]
fn bytes_after_a_compressed_stream_are_refused() {
    let inner = three_v1();
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let mut payload = Vec::new();
        compression::compress(codec, &inner, &mut payload).unwrap();
        let mut out = Vec::new();
        compression::decompress(codec, &payload, &mut out).unwrap();
        assert_eq!(out, inner);
        // Two streams back to back decode to both (snappy: blocks after the one header).
        let mut twice = payload.clone();
        twice.extend_from_slice(if codec == Compression::Snappy {
            &payload[16..]
        } else {
            &payload
        });
        compression::decompress(codec, &twice, &mut out).unwrap();
        assert_eq!(out, [inner.clone(), inner.clone()].concat(), "{codec:?}");
        for junk in [&b"\x00"[..], b"junk after the stream", &[0xff; 7]] {
            let mut bad = payload.clone();
            bad.extend_from_slice(junk);
            let r = compression::decompress(codec, &bad, &mut out);
            assert!(
                matches!(r, Err(Error::CorruptMessage { .. })),
                "{codec:?} + {junk:?}: {r:?} ({} bytes out)",
                out.len()
            );
        }
    }
}

#[test]
fn nested_compression_is_refused() {
    let inner_wrapper = build(MAGIC_V1, Compression::Gzip, &[msg(1, None, Some("x"))]);
    // Make the inner wrapper's offset 0 (a relative offset), so only the nesting is wrong.
    let mut inner = inner_wrapper;
    inner[..8].copy_from_slice(&0u64.to_be_bytes());
    for codec in [Compression::Gzip, Compression::Zstd] {
        let w = wrap(MAGIC_V1, codec, 0, &inner);
        assert_refused(&w, 0, "nested compression", false);
    }
}

#[test]
fn wrong_inner_offsets_are_refused() {
    let mut inner = three_v1();
    let second = Entries::new(&inner).nth(1).unwrap().unwrap().position;
    inner[second..second + 8].copy_from_slice(&5u64.to_be_bytes());
    let w = wrap(MAGIC_V1, Compression::Gzip, 2, &inner);
    assert_refused(
        &w,
        0,
        &format!("at inner byte {second}: inner relative offset 5 where 1 was expected"),
        false,
    );
    // Starting at 1 instead of 0.
    let mut inner = build(MAGIC_V1, Compression::None, &[msg(1, None, Some("a"))]);
    inner[7] = 1;
    let w = wrap(MAGIC_V1, Compression::Snappy, 1, &inner);
    assert_refused(&w, 0, "inner relative offset 1 where 0 was expected", false);
    // A wrapper whose offset is smaller than its count - 1 cannot be read back.
    let w = wrap(MAGIC_V1, Compression::Lz4, 1, &three_v1());
    assert!(
        corrupt(records(&w))
            .1
            .contains("smaller than its message count")
    );
    // Inner magic differing from the wrapper's; an inner entry with a bad CRC.
    let w = wrap(MAGIC_V0, Compression::Gzip, 2, &three_v1());
    assert_refused(&w, 0, "magic 1 inside a magic 0 wrapper", false);
    let mut inner = three_v1();
    inner[second - 1] ^= 1;
    let w = wrap(MAGIC_V1, Compression::Gzip, 2, &inner);
    assert_refused(&w, 0, "CRC mismatch", false);
}

#[test]
fn mixed_magic_in_one_produced_set_is_refused() {
    let mut set = three_v1();
    let at = set.len();
    set.extend(build(
        MAGIC_V0,
        Compression::None,
        &[msg(-1, None, Some("v0"))],
    ));
    let (p, reason) = corrupt(append(&mut set, 0));
    assert_eq!(p, at);
    assert!(reason.contains("mixed magic"), "{reason}");
}

#[test]
fn producers_may_not_set_log_append_time() {
    let mut set = three_v1();
    let second = Entries::new(&set).nth(1).unwrap().unwrap().position;
    set[second + MAGIC_POS + 1] |= 0x08;
    fix_crc(&mut set, second);
    let err = append(&mut set.clone(), 0).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidTimestamp(m) if m.contains(&format!("byte {second}"))),
        "{err:?}"
    );
    // Readers accept it: it is how stored LogAppendTime entries look.
    assert_eq!(
        records(&set).unwrap()[1].timestamp_type,
        TimestampType::LogAppendTime
    );
    // Inside a wrapper too.
    let w = wrap(MAGIC_V1, Compression::Gzip, 2, &set);
    assert!(matches!(
        append(&mut w.clone(), 0),
        Err(Error::InvalidTimestamp(_))
    ));
}

#[test]
fn log_append_time_rewrites_timestamps_and_keeps_crcs_valid() {
    let mut set = three_v1();
    set.extend(build(
        MAGIC_V1,
        Compression::Zstd,
        &[msg(10, Some("z"), Some("zz")), msg(11, None, None)],
    ));
    let now = TimestampMs(1_800_000_000_000);
    let o = AppendOptions {
        timestamp_type: TimestampType::LogAppendTime,
        now,
        ..opts()
    };
    let summary = prepare_append(&mut set, Offset(1000), &o, &mut Vec::new()).unwrap();
    assert_eq!(
        (summary.max_timestamp, summary.offset_of_max_timestamp),
        (now, Offset(1000))
    );
    assert_eq!(summary.last_offset, Offset(1004));
    for e in Entries::new(&set) {
        let e = e.unwrap();
        e.check_crc().unwrap();
        let m = e.message().unwrap();
        assert_eq!(
            (m.timestamp, m.attributes.timestamp_type),
            (now, TimestampType::LogAppendTime)
        );
    }
    let recs = records(&set).unwrap();
    assert_eq!(
        recs.iter()
            .map(|r| (r.offset, r.timestamp))
            .collect::<Vec<_>>(),
        (1000..1005).map(|o| (o, now.0)).collect::<Vec<_>>()
    );
    // Magic 0 has no timestamp: LogAppendTime leaves it alone.
    let mut v0 = build(MAGIC_V0, Compression::None, &[msg(-1, None, Some("a"))]);
    let before = v0.clone();
    let summary = prepare_append(&mut v0, Offset(0), &o, &mut Vec::new()).unwrap();
    assert_eq!((summary.max_timestamp, v0), (TimestampMs::NONE, before));
}

#[test]
fn offsets_are_assigned_without_touching_crcs() {
    let mut set = three_v1();
    set.extend(build(
        MAGIC_V1,
        Compression::Gzip,
        &[msg(4, None, Some("a")), msg(5, None, Some("b"))],
    ));
    let before = set.clone();
    let summary = append(&mut set, 1 << 40).unwrap();
    assert_eq!((summary.message_count, summary.entry_count), (5, 4));
    assert_eq!(
        (summary.max_timestamp, summary.offset_of_max_timestamp),
        (TimestampMs(5), Offset((1 << 40) + 4))
    );
    let offsets: Vec<u64> = Entries::new(&set).map(|e| e.unwrap().offset().0).collect();
    // The wrapper carries the offset of its last inner message.
    assert_eq!(
        offsets,
        vec![1 << 40, (1 << 40) + 1, (1 << 40) + 2, (1 << 40) + 4]
    );
    for (a, b) in Entries::new(&set).zip(Entries::new(&before)) {
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.bytes[8..], b.bytes[8..], "only the offset field changes");
    }
    // Offsets past Offset::MAX are refused.
    assert!(matches!(
        append(&mut set, Offset::MAX.0 - 2),
        Err(Error::InvalidRequest(_))
    ));
}

#[test]
fn wrapper_timestamp_is_corrected_to_the_largest_inner_timestamp() {
    // A producer wrote the wrapper with timestamp 9 while its messages go up to 30.
    let inner = build(
        MAGIC_V1,
        Compression::None,
        &[
            msg(20, None, Some("a")),
            msg(30, None, Some("b")),
            msg(10, None, Some("c")),
        ],
    );
    let mut set = wrap(MAGIC_V1, Compression::Gzip, 2, &inner);
    let summary = append(&mut set, 50).unwrap();
    assert_eq!(
        (summary.max_timestamp, summary.offset_of_max_timestamp),
        (TimestampMs(30), Offset(52))
    );
    let e = Entries::new(&set).next().unwrap().unwrap();
    e.check_crc().unwrap();
    assert_eq!(e.message().unwrap().timestamp, TimestampMs(30));
    assert_eq!(
        records(&set)
            .unwrap()
            .iter()
            .map(|r| r.timestamp)
            .collect::<Vec<_>>(),
        vec![20, 30, 10]
    );
}

// ---------------------------------------------------------------------------------------------
// Magic 2 (Kafka RecordBatch v2) golden vectors, written by an independent encoder
// (`scripts/golden_v2.py`, kafka-python). Schema in docs/FORMAT.md ("Magic 2 golden vectors").

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct V2Vector {
    description: String,
    magic: u8,
    compression: String,
    size_bytes: u64,
    records: Vec<V2RecordJson>,
    batches: Vec<V2BatchJson>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct V2RecordJson {
    offset: u64,
    timestamp: i64,
    timestamp_type: String,
    key: Option<String>,
    #[serde(default)]
    key_utf8: Option<String>,
    value: Option<String>,
    #[serde(default)]
    value_utf8: Option<String>,
    headers: Vec<V2HeaderJson>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct V2HeaderJson {
    key: String,
    value: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct V2BatchJson {
    position: u64,
    base_offset: u64,
    batch_length: u32,
    partition_leader_epoch: i32,
    magic: u8,
    crc: String,
    attributes: u16,
    compression: String,
    timestamp_type: String,
    last_offset_delta: u32,
    base_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    record_count: u32,
}

/// A decoded record with its headers, owned.
type V2Rec = (
    u64,
    i64,
    String,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(String, Option<Vec<u8>>)>,
);

fn v2_records(set: &[u8]) -> Result<Vec<V2Rec>, Error> {
    let mut out = Vec::new();
    for_each_record(set, &mut Vec::new(), |r| {
        out.push((
            r.offset.0,
            r.timestamp.0,
            r.timestamp_type.name().to_owned(),
            r.key.map(<[u8]>::to_vec),
            r.value.map(<[u8]>::to_vec),
            r.headers
                .iter()
                .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                .collect(),
        ))
    })?;
    Ok(out)
}

fn v2_vectors() -> Vec<(String, Vec<u8>, V2Vector)> {
    let dir = golden_dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("v2_") && n.ends_with(".json"))
        .map(|n| n.trim_end_matches(".json").to_owned())
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let bin = std::fs::read(dir.join(format!("{n}.bin"))).unwrap();
            let json = std::fs::read_to_string(dir.join(format!("{n}.json"))).unwrap();
            let v: V2Vector = serde_json::from_str(&json).unwrap();
            (n, bin, v)
        })
        .collect()
}

#[test]
fn golden_v2_vectors() {
    let vectors = v2_vectors();
    let names: Vec<&str> = vectors.iter().map(|v| v.0.as_str()).collect();
    for want in [
        "v2_uncompressed",
        "v2_headers",
        "v2_producer_state",
        "v2_null_value",
        "v2_two_batches",
        "v2_gzip",
        "v2_snappy",
        "v2_lz4",
        "v2_zstd",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    for (name, bin, v) in &vectors {
        let name = name.as_str();
        assert_eq!(v.size_bytes, bin.len() as u64, "{name}: size_bytes");
        assert_eq!(v.magic, 2, "{name}");
        assert!(!v.description.is_empty());
        // Deep decode: every record, header and timestamp as the independent reader saw them.
        let got = v2_records(bin).unwrap_or_else(|e| panic!("{name}: {e}"));
        let want: Vec<V2Rec> = v
            .records
            .iter()
            .map(|r| {
                (
                    r.offset,
                    r.timestamp,
                    r.timestamp_type.clone(),
                    b64_opt(&r.key),
                    b64_opt(&r.value),
                    r.headers
                        .iter()
                        .map(|h| (h.key.clone(), b64_opt(&h.value)))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(got, want, "{name}: records");
        for r in &v.records {
            if let Some(s) = &r.key_utf8 {
                assert_eq!(Some(s.as_bytes().to_vec()), b64_opt(&r.key), "{name}");
            }
            if let Some(s) = &r.value_utf8 {
                assert_eq!(Some(s.as_bytes().to_vec()), b64_opt(&r.value), "{name}");
            }
        }
        // Shallow: framing, header fields and the CRC-32C of every batch.
        let entries: Vec<_> = Entries::new(bin).map(Result::unwrap).collect();
        assert_eq!(entries.len(), v.batches.len(), "{name}: batches");
        let mut codecs = BTreeSet::new();
        let mut recs = v.records.iter();
        for (e, b) in entries.iter().zip(&v.batches) {
            assert_eq!(e.position as u64, b.position, "{name}");
            e.check_crc().unwrap();
            assert_eq!(e.stored_crc(), hex_u32(&b.crc), "{name}: crc");
            let h = BatchHeader::parse(e.bytes).unwrap();
            let attrs = h.attributes;
            assert_eq!(
                (
                    h.base_offset.0,
                    h.batch_length,
                    h.partition_leader_epoch,
                    e.magic(),
                    attrs.to_bits(),
                    attrs.compression.name(),
                    attrs.timestamp_type.name(),
                ),
                (
                    b.base_offset,
                    b.batch_length,
                    b.partition_leader_epoch,
                    b.magic,
                    b.attributes,
                    b.compression.as_str(),
                    b.timestamp_type.as_str(),
                ),
                "{name}: header"
            );
            assert_eq!(
                (
                    h.last_offset_delta,
                    h.base_timestamp.0,
                    h.max_timestamp.0,
                    h.producer_id,
                    h.producer_epoch,
                    h.base_sequence,
                    h.record_count,
                ),
                (
                    b.last_offset_delta,
                    b.base_timestamp,
                    b.max_timestamp,
                    b.producer_id,
                    b.producer_epoch,
                    b.base_sequence,
                    b.record_count,
                ),
                "{name}: header"
            );
            assert_eq!(e.len(), 12 + h.batch_length as usize);
            assert_eq!(e.last_offset(), h.last_offset());
            let info = e.info().unwrap();
            assert_eq!(
                (info.first_offset, info.last_offset, info.timestamp),
                (Some(h.base_offset), h.last_offset(), h.max_timestamp)
            );
            if attrs.compression != Compression::None {
                codecs.insert(attrs.compression.name());
            }
            // Re-encode the batch from the JSON with our builder (uncompressed): the records
            // section equals the stored one (decompressed), and for an uncompressed batch the
            // whole batch is byte for byte the independent encoder's.
            let mut builder = RecordBatchBuilder::new(Compression::None);
            if h.producer_id != -1 {
                builder.producer_state(h.producer_id, h.producer_epoch, h.base_sequence);
            }
            for _ in 0..h.record_count {
                let r = recs.next().unwrap();
                let headers: Vec<(String, Option<Vec<u8>>)> = r
                    .headers
                    .iter()
                    .map(|x| (x.key.clone(), b64_opt(&x.value)))
                    .collect();
                builder.push(
                    TimestampMs(r.timestamp),
                    b64_opt(&r.key).as_deref(),
                    b64_opt(&r.value).as_deref(),
                    headers.iter().map(|(k, v)| Header {
                        key: k,
                        value: v.as_deref(),
                    }),
                );
            }
            let mut rebuilt = builder.finish().unwrap();
            rebuilt[..8].copy_from_slice(&h.base_offset.0.to_be_bytes());
            rebuilt[12..16].copy_from_slice(&h.partition_leader_epoch.to_be_bytes());
            let mut section = Vec::new();
            compression::decompress(attrs.compression, &e.bytes[61..], &mut section).unwrap();
            assert_eq!(
                &rebuilt[61..],
                &section[..],
                "{name}: records section re-encoded"
            );
            if attrs.compression == Compression::None {
                assert_eq!(
                    &rebuilt[..],
                    e.bytes,
                    "{name}: batch re-encoded byte for byte"
                );
            }
            // Appending the stored batch again at its own base offset, in its own leader
            // epoch, changes nothing (no CRC to recompute, timestamps already right).
            let mut again = e.bytes.to_vec();
            let o = AppendOptions {
                leader_epoch: h.partition_leader_epoch,
                ..opts()
            };
            let s = prepare_append(&mut again, h.base_offset, &o, &mut Vec::new()).unwrap();
            assert_eq!(again, e.bytes, "{name}: re-append at the same base");
            assert_eq!(
                (s.magic, s.message_count, s.last_offset, s.max_timestamp),
                (
                    2,
                    u64::from(h.record_count),
                    h.last_offset(),
                    h.max_timestamp
                )
            );
        }
        assert!(
            recs.next().is_none(),
            "{name}: every record belongs to a batch"
        );
        let joined = codecs.into_iter().collect::<Vec<_>>().join("/");
        assert_eq!(
            if joined.is_empty() { "none" } else { &joined },
            v.compression,
            "{name}: compression"
        );
    }
}

#[test]
fn v2_append_assigns_offsets_and_the_leader_epoch_outside_the_crc() {
    let (_, bin, v) = v2_vectors()
        .into_iter()
        .find(|v| v.0 == "v2_headers")
        .unwrap();
    let mut set = bin.clone();
    let o = AppendOptions {
        leader_epoch: 9,
        ..opts()
    };
    let s = prepare_append(&mut set, Offset(1000), &o, &mut Vec::new()).unwrap();
    assert_eq!(
        (s.base_offset.0, s.last_offset.0, s.message_count),
        (1000, 1003, 4)
    );
    assert_eq!(&set[12..16], &9i32.to_be_bytes());
    // Only the offset and epoch changed: the CRC-covered bytes are the producer's.
    assert_eq!(&set[16..], &bin[16..]);
    let offsets: Vec<u64> = v2_records(&set).unwrap().iter().map(|r| r.0).collect();
    assert_eq!(offsets, [1000, 1001, 1002, 1003]);
    assert_eq!(v.records.len(), 4);
    // Log-append time: the bit is set, maxTimestamp becomes now, every record reports it.
    let mut set = bin.clone();
    let now = TimestampMs(1_800_000_000_000);
    let o = AppendOptions {
        timestamp_type: TimestampType::LogAppendTime,
        now,
        ..opts()
    };
    prepare_append(&mut set, Offset(0), &o, &mut Vec::new()).unwrap();
    let recs = v2_records(&set).unwrap();
    assert!(recs.iter().all(|r| r.1 == now.0 && r.2 == "LogAppendTime"));
    // A producer may not set the bit itself.
    assert!(matches!(
        prepare_append(&mut set, Offset(0), &opts(), &mut Vec::new()),
        Err(Error::InvalidTimestamp(_))
    ));
}

#[test]
fn v2_builder_round_trips_with_every_codec() {
    for codec in Compression::ALL {
        let mut b = RecordBatchBuilder::new(codec);
        b.producer_state(7, 1, 42);
        for i in 0..50i64 {
            let value = format!("value {i} ").repeat(10);
            let h = [
                Header {
                    key: "i",
                    value: Some(value.as_bytes()),
                },
                Header {
                    key: "null",
                    value: None,
                },
            ];
            let headers: &[Header] = if i % 2 == 0 { &h } else { &[] };
            b.push(
                TimestampMs(T0 - i),
                (i % 3 != 0).then_some(b"k".as_slice()),
                Some(value.as_bytes()),
                headers.iter().copied(),
            );
        }
        let mut set = b.finish().unwrap();
        let s = append(&mut set, 10).unwrap();
        assert_eq!((s.message_count, s.max_timestamp.0), (50, T0), "{codec:?}");
        let recs = v2_records(&set).unwrap();
        assert_eq!(recs.len(), 50);
        for (i, r) in recs.iter().enumerate() {
            let i = i as i64;
            assert_eq!((r.0, r.1), (10 + i as u64, T0 - i), "{codec:?}");
            assert_eq!(r.3.is_some(), i % 3 != 0);
            assert_eq!(r.5.len(), if i % 2 == 0 { 2 } else { 0 });
        }
        let h = BatchHeader::parse(&set).unwrap();
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (7, 1, 42)
        );
        assert_eq!(h.attributes.compression, codec);
    }
}

#[test]
fn v2_bad_batches_are_refused_with_typed_errors() {
    let (_, bin, _) = v2_vectors()
        .into_iter()
        .find(|v| v.0 == "v2_uncompressed")
        .unwrap();
    let refused = |set: &mut Vec<u8>| prepare_append(set, Offset(0), &opts(), &mut Vec::new());
    // A flipped byte in the records: CRC-32C mismatch, from both the producer path and a reader.
    let mut set = bin.clone();
    let n = set.len();
    set[n - 1] ^= 1;
    assert!(format!("{}", refused(&mut set).unwrap_err()).contains("CRC"));
    assert!(matches!(
        v2_records(&set),
        Err(Error::CorruptMessage { .. })
    ));
    // Records section lies about its lengths (CRC fixed so the layout check is what fires).
    let fix = |set: &mut Vec<u8>| {
        let crc = crc32c::crc32c(&set[21..]);
        set[17..21].copy_from_slice(&crc.to_be_bytes());
    };
    let mut set = bin.clone();
    set[61] = 0x7e; // first record's length varint: 63 bytes, more than the record has
    fix(&mut set);
    assert!(matches!(
        refused(&mut set),
        Err(Error::CorruptMessage { .. })
    ));
    // recordCount larger than the records present.
    let mut set = bin.clone();
    set[57..61].copy_from_slice(&5i32.to_be_bytes());
    fix(&mut set);
    assert!(matches!(
        refused(&mut set),
        Err(Error::CorruptMessage { .. })
    ));
    // Transactional and control bits, reserved bits.
    for (bits, transactions) in [
        (0x10u16, true),
        (0x20, true),
        (0x40, false),
        (0x8000, false),
    ] {
        let mut set = bin.clone();
        set[21..23].copy_from_slice(&bits.to_be_bytes());
        fix(&mut set);
        let err = refused(&mut set).unwrap_err();
        if transactions {
            assert!(
                matches!(err, Error::InvalidRequest(_)),
                "{bits:#x}: {err:?}"
            );
        } else {
            assert!(
                matches!(err, Error::CorruptMessage { .. }),
                "{bits:#x}: {err:?}"
            );
        }
    }
    // A batch cut short, and one whose header is cut short.
    assert!(matches!(
        refused(&mut bin[..bin.len() - 1].to_vec()),
        Err(Error::CorruptMessage { .. })
    ));
    let mut short = bin[..40].to_vec();
    short[8..12].copy_from_slice(&28u32.to_be_bytes());
    assert!(matches!(
        refused(&mut short),
        Err(Error::CorruptMessage { .. })
    ));
    // Mixed magics in one producer set.
    let mut mixed = build(MAGIC_V1, Compression::None, &[msg(T0, None, Some("v"))]);
    mixed.extend_from_slice(&bin);
    assert!(format!("{}", refused(&mut mixed).unwrap_err()).contains("mixed magic"));
    // A zip bomb in the records section is refused, not expanded.
    let mut b = RecordBatchBuilder::new(Compression::Zstd);
    let big = vec![0u8; 1 << 20];
    for _ in 0..(DECOMPRESSED_BYTES_MAX >> 20) + 1 {
        b.push(TimestampMs(T0), None, Some(&big), []);
    }
    let mut set = b.finish().unwrap();
    assert!(format!("{}", refused(&mut set).unwrap_err()).contains("limit"));
}

proptest! {
    #[test]
    fn v2_any_input_decodes_or_errors_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        // A real header with random records, and random bytes overall.
        let mut set = vec![0u8; 61];
        set[16] = 2;
        set.extend_from_slice(&bytes);
        let len = (set.len() - 12) as u32;
        set[8..12].copy_from_slice(&len.to_be_bytes());
        set[57..61].copy_from_slice(&3i32.to_be_bytes());
        set[23..27].copy_from_slice(&2i32.to_be_bytes());
        let crc = crc32c::crc32c(&set[21..]);
        set[17..21].copy_from_slice(&crc.to_be_bytes());
        let _ = v2_records(&set);
        let _ = prepare_append(&mut set.clone(), Offset(0), &opts(), &mut Vec::new());
        let _ = v2_records(&bytes);
    }
}

#[test]
fn set_builder_upgrades_to_magic_2_at_the_first_header() {
    use sluiceway_core::format::{MAGIC_V2, SetBuilder};
    for codec in Compression::ALL {
        // Plain records stay magic 1, byte for byte what MessageSetBuilder writes.
        let mut plain = SetBuilder::with_capacity(MAGIC_V1, codec, 0);
        let msgs = [msg(T0, Some("a"), Some("x")), msg(T0 + 1, None, Some("y"))];
        for (ts, k, v) in &msgs {
            plain.push(TimestampMs(*ts), k.as_deref(), v.as_deref(), []);
        }
        assert_eq!(plain.magic(), MAGIC_V1);
        let set = plain.finish().unwrap();
        if codec == Compression::None {
            assert_eq!(set, build(MAGIC_V1, codec, &msgs));
        }
        // A record with headers turns the batch into magic 2, keeping the earlier records.
        let mut mixed = SetBuilder::with_capacity(MAGIC_V1, codec, 0);
        for (ts, k, v) in &msgs {
            mixed.push(TimestampMs(*ts), k.as_deref(), v.as_deref(), []);
        }
        let h = [Header {
            key: "h",
            value: Some(b"1"),
        }];
        mixed.push(TimestampMs(T0 + 2), None, Some(b"z"), h);
        mixed.push(TimestampMs(T0 + 3), None, Some(b"w"), []);
        assert_eq!((mixed.magic(), mixed.len()), (2, 4));
        let mut set = mixed.finish().unwrap();
        append(&mut set, 7).unwrap();
        let recs = v2_records(&set).unwrap();
        let got: Vec<_> = recs
            .iter()
            .map(|r| (r.0, r.1, r.4.clone(), r.5.len()))
            .collect();
        assert_eq!(
            got,
            [
                (7, T0, Some(b"x".to_vec()), 0),
                (8, T0 + 1, Some(b"y".to_vec()), 0),
                (9, T0 + 2, Some(b"z".to_vec()), 1),
                (10, T0 + 3, Some(b"w".to_vec()), 0)
            ],
            "{codec:?}"
        );
        // Asked for magic 2, it writes magic 2 from the first record.
        let mut v2 = SetBuilder::with_capacity(MAGIC_V2, codec, 0);
        v2.push(TimestampMs(T0), None, Some(b"x"), []);
        assert_eq!(v2.finish().unwrap()[MAGIC_POS], MAGIC_V2);
    }
}

/// Bytes on disk per message, magic 1 against magic 2, for docs/benchmarks.md ("Bytes on disk
/// per message"): sets of 1,000 uncompressed messages (the storage benchmark's shape: null key,
/// timestamps 1 ms apart) and of one producer batch (`batch.size` 16 KiB), 100 B and 1 KiB
/// values. Exact, so a format change that grows records shows up here.
#[test]
fn bytes_per_message_magic_1_against_magic_2() {
    use sluiceway_core::format::{MAGIC_V2, SetBuilder};
    let per_message = |magic: u8, value_bytes: usize, n: usize| {
        let mut b = SetBuilder::with_capacity(magic, Compression::None, 0);
        let value = vec![b'x'; value_bytes];
        for i in 0..n {
            b.push(TimestampMs(T0 + i as i64), None, Some(&value), []);
        }
        b.finish().unwrap().len() as f64 / n as f64
    };
    let batch = |value_bytes: usize| (16 << 10) / (value_bytes + 34);
    let rows: Vec<(usize, usize, f64, f64)> = [
        (100, 1000),
        (1024, 1000),
        (100, batch(100)),
        (1024, batch(1024)),
    ]
    .into_iter()
    .map(|(size, n)| {
        (
            size,
            n,
            per_message(MAGIC_V1, size, n),
            per_message(MAGIC_V2, size, n),
        )
    })
    .collect();
    for (size, n, v1, v2) in &rows {
        eprintln!("{size} B x {n}: magic 1 {v1:.2} B/msg, magic 2 {v2:.2} B/msg");
    }
    // Magic 1: 12 + 22 + value per message, always.
    assert_eq!((rows[0].2, rows[1].2), (134.0, 1058.0));
    // Magic 2: about 25 bytes less per message, the 61-byte header shared by the batch.
    for (size, _, v1, v2) in &rows {
        assert!(v1 - v2 > 20.0 && v1 - v2 < 28.0, "{size}: {v1} vs {v2}");
    }
}

/// Our encoder against an independent reader: with `SLUICEWAY_V2_DUMP=DIR`, writes one magic 2
/// batch per codec (headers with a null value, null keys and values, negative timestamp deltas,
/// producer fields), appended at offset 1234, for `scripts/golden_v2.py --check DIR` to read
/// with kafka-python (which checks every field). Without the variable it does nothing: CI has
/// no kafka-python.
#[test]
fn v2_batches_for_an_independent_reader() {
    let Some(dir) = std::env::var_os("SLUICEWAY_V2_DUMP") else {
        return;
    };
    for codec in Compression::ALL {
        let mut b = RecordBatchBuilder::new(codec);
        b.producer_state(99, 4, 7);
        for i in 0..40i64 {
            let v = format!("value {i} ").repeat((i % 5) as usize * 10);
            let h = [
                Header {
                    key: "k\u{e9}",
                    value: Some(b"v"),
                },
                Header {
                    key: "n",
                    value: None,
                },
            ];
            let hs: &[Header] = if i % 3 == 0 { &h } else { &[] };
            b.push(
                TimestampMs(T0 + 7 * i - 100),
                (i % 2 == 0).then_some(b"key".as_slice()),
                (i % 7 != 0).then_some(v.as_bytes()),
                hs.iter().copied(),
            );
        }
        let mut set = b.finish().unwrap();
        append(&mut set, 1234).unwrap();
        let path = std::path::Path::new(&dir).join(format!("{}.bin", codec.name()));
        std::fs::write(path, set).unwrap();
    }
}

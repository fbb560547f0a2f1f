#!/usr/bin/env python3
"""Writes the magic 2 (Kafka RecordBatch v2) golden vectors, testdata/golden/v2_*.{bin,json}.

The bytes come from an implementation independent of Sluiceway's codec: kafka-python's
`DefaultRecordBatchBuilder` (its own CRC-32C, varints and codecs), so the Rust, Python, Node and
Kotlin tests that decode these files hold our codec to Kafka's layout rather than to itself.
The JSON beside each file is written from kafka-python's reader (`DefaultRecordBatch`), not
from the builder's inputs, and lists what a decoder must find.

Run once, by hand, in a throw-away venv; the outputs are checked in and the tests only read them:

    python3 -m venv /tmp/kvenv
    /tmp/kvenv/bin/pip install kafka-python==3.0.12 lz4 zstandard python-snappy
    /tmp/kvenv/bin/python scripts/golden_v2.py

The other direction, our encoder read by kafka-python (every codec):

    mkdir -p /tmp/v2 && SLUICEWAY_V2_DUMP=/tmp/v2 cargo test -p sluiceway-core --test tests \
        format::v2_batches_for_an_independent_reader
    /tmp/kvenv/bin/python scripts/golden_v2.py --check /tmp/v2

Compressed output depends on the codec libraries' versions, and gzip stamps the time into its
header, so rerunning changes the compressed vectors' bytes (never their records): commit only
the vectors you mean to add or change.

Two fields the producer leaves at 0 are filled in after building, where a broker fills them:
`baseOffset` (bytes 0..8) and `partitionLeaderEpoch` (bytes 12..16). Neither is covered by the
CRC (which runs from attributes to the end), so the builder's CRC stays valid; the vectors thus
look as they do in a partition's log.
"""

import base64
import json
import struct
import sys
from pathlib import Path

from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

OUT = Path(__file__).resolve().parent.parent / "testdata" / "golden"
T0 = 1_700_000_000_000
CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
CODEC_NAMES = {v: k for k, v in CODECS.items()}


def batch(records, codec="none", base_offset=0, leader_epoch=0, producer=(-1, -1, -1)):
    """One batch of `records` = [(timestamp, key, value, headers)], offset deltas 0..n-1."""
    pid, epoch, seq = producer
    b = DefaultRecordBatchBuilder(
        magic=2, compression_type=CODECS[codec], is_transactional=False,
        producer_id=pid, producer_epoch=epoch, base_sequence=seq, batch_size=1 << 30,
    )
    for i, (ts, key, value, headers) in enumerate(records):
        assert b.append(i, timestamp=ts, key=key, value=value, headers=headers) is not None
    out = bytearray(b.build())
    if codec != "none":
        assert out[22] & 0x07 == CODECS[codec], f"{codec}: builder chose not to compress"
    struct.pack_into(">q", out, 0, base_offset)
    struct.pack_into(">i", out, 12, leader_epoch)
    return bytes(out)


def b64(b):
    return None if b is None else base64.b64encode(bytes(b)).decode()


def printable(b):
    if b is None:
        return None
    try:
        s = bytes(b).decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in s) else s


def describe(description, data):
    """The JSON for a file of concatenated batches, read back with kafka-python's reader."""
    batches, records, codecs = [], [], set()
    pos = 0
    while pos < len(data):
        length = struct.unpack_from(">i", data, pos + 8)[0]
        raw = data[pos:pos + 12 + length]
        rb = DefaultRecordBatch(raw)
        assert rb.validate_crc(), "kafka-python rejects its own CRC"
        codec = CODEC_NAMES[rb.compression_type]
        if codec != "none":
            codecs.add(codec)
        ts_type = "LogAppendTime" if rb.timestamp_type == 1 else "CreateTime"
        batches.append({
            "position": pos,
            "base_offset": rb.base_offset,
            "batch_length": length,
            "partition_leader_epoch": rb.leader_epoch,
            "magic": rb.magic,
            "crc": f"{rb.crc:08x}",
            "attributes": rb.attributes,
            "compression": codec,
            "timestamp_type": ts_type,
            "last_offset_delta": rb.last_offset_delta,
            "base_timestamp": rb.first_timestamp,
            "max_timestamp": rb.max_timestamp,
            "producer_id": rb.producer_id,
            "producer_epoch": rb.producer_epoch,
            "base_sequence": rb.base_sequence,
            "record_count": rb.records_count,
        })
        for r in rb:
            rec = {
                "offset": r.offset,
                "timestamp": r.timestamp,
                "timestamp_type": ts_type,
                "key": b64(r.key),
                "value": b64(r.value),
                "headers": [{"key": k, "value": b64(v)} for k, v in r.headers],
            }
            for field in ("key", "value"):
                s = printable(getattr(r, field))
                if s is not None:
                    rec[field + "_utf8"] = s
            records.append(rec)
        pos += 12 + length
    return {
        "description": description,
        "magic": 2,
        "compression": "/".join(sorted(codecs)) or "none",
        "size_bytes": len(data),
        "records": records,
        "batches": batches,
    }


def four(headers=True):
    """Four records with the awkward cases: a null key, binary bytes, an empty value, headers
    with a null value, a repeated header key and an empty key."""
    hs = [
        [("trace-id", b"4bf92f3577b34da6"), ("content-type", b"text/plain")],
        [],
        [("null-value", None), ("dup", b"1"), ("dup", b"2"), ("", b"")],
        [("\u00e9t\u00e9", bytes(range(8)))],
    ]
    if not headers:
        hs = [[] for _ in hs]
    return [
        (T0, b"k0", b"first value", hs[0]),
        (T0 + 5, None, b"no key", hs[1]),
        (T0 + 3, b"bin\x00\xff", bytes(range(256)), hs[2]),
        (T0 + 9, b"k3", b"", hs[3]),
    ]


def compressible():
    """Enough repetition that every codec shrinks it (kafka-python sends a batch uncompressed
    when compression does not help)."""
    return [
        (T0 + i, f"key-{i % 3}".encode(), (f"value {i} " + "sluiceway " * 20).encode(),
         [("seq", str(i).encode()), ("null", None)] if i % 2 == 0 else [])
        for i in range(12)
    ]


def check(dir_):
    """Reads the batches `format::v2_batches_for_an_independent_reader` wrote, with kafka-python,
    and checks every field against what that test put in."""
    files = sorted(Path(dir_).glob("*.bin"))
    assert len(files) == 5, files
    for f in files:
        data = f.read_bytes()
        b = DefaultRecordBatch(data)
        assert b.validate_crc(), f
        got = (b.base_offset, b.producer_id, b.producer_epoch, b.base_sequence,
               b.records_count, b.last_offset_delta, b.max_timestamp)
        assert got == (1234, 99, 4, 7, 40, 39, T0 + 7 * 39 - 100), (f, got)
        assert CODEC_NAMES[b.compression_type] == f.stem, f
        records = list(b)
        assert len(records) == 40, f
        for i, r in enumerate(records):
            value = (f"value {i} " * ((i % 5) * 10)).encode()
            assert r.offset == 1234 + i
            assert r.timestamp == T0 + 7 * i - 100, (f, i, r.timestamp)
            assert r.key == (b"key" if i % 2 == 0 else None), (f, i)
            assert r.value == (value if i % 7 != 0 else None), (f, i)
            want = [("k\u00e9", b"v"), ("n", None)] if i % 3 == 0 else []
            assert [(k, v) for k, v in r.headers] == want, (f, i, r.headers)
        print(f"{f.name}: 40 records read back by kafka-python", file=sys.stderr)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        check(sys.argv[2])
        return
    vectors = [
        ("v2_uncompressed", "magic 2, no compression, four records without headers, at base offset 0",
         batch(four(headers=False))),
        ("v2_headers", "magic 2, four records with headers: a null header value, a repeated key, "
         "an empty key and value, a non-ASCII key; base offset 42, leader epoch 7",
         batch(four(), base_offset=42, leader_epoch=7)),
        ("v2_producer_state", "magic 2 with idempotent-producer fields: producer id 123456789, "
         "epoch 3, base sequence 1000",
         batch(four(), base_offset=5, producer=(123456789, 3, 1000))),
        ("v2_null_value", "magic 2, a tombstone (null value) and a record with null key and value",
         batch([(T0, b"deleted-key", None, []), (T0 + 1, None, None, [("h", None)])])),
        ("v2_two_batches", "two magic 2 batches back to back: offsets 10..13 then 14..15",
         batch(four(), base_offset=10, leader_epoch=1)
         + batch([(T0 + 20, b"a", b"x", []), (T0 + 19, None, b"y", [("k", b"v")])],
                 base_offset=14, leader_epoch=2)),
    ]
    for codec in ("gzip", "snappy", "lz4", "zstd"):
        vectors.append((
            f"v2_{codec}",
            f"magic 2, records section compressed with {codec}: twelve records, half with headers, "
            "at base offset 100",
            batch(compressible(), codec=codec, base_offset=100),
        ))
    OUT.mkdir(parents=True, exist_ok=True)
    for name, description, data in vectors:
        (OUT / f"{name}.bin").write_bytes(data)
        text = json.dumps(describe(description, data), indent=2, ensure_ascii=False) + "\n"
        (OUT / f"{name}.json").write_text(text)
        print(f"{name}: {len(data)} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()

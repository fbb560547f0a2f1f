"""The Python binding against a real broker: conformance scenarios C1–C16
(docs/CONFORMANCE.md) and the binding surface (errors, arguments, asyncio, Ctrl-C, fork)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest

import sluiceway
from sluiceway import _native, errors
from sluiceway.aio import AsyncConsumer, AsyncProducer

from .conftest import REPO, new_topic


def consume(consumer: sluiceway.Consumer, n: int, timeout: float = 20) -> list[sluiceway.Record]:
    got: list[sluiceway.Record] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got.extend(consumer.poll(0.5))
    return got


def murmur2(data: bytes) -> int:
    """Kafka's Utils.murmur2, for the expected partitions of C2."""
    m, r, mask = 0x5BD1E995, 24, 0xFFFFFFFF
    h = (0x9747B28C ^ len(data)) & mask
    n4 = len(data) // 4
    for i in range(n4):
        k = int.from_bytes(data[i * 4 : i * 4 + 4], "little")
        k = (k * m) & mask
        k ^= k >> r
        k = (k * m) & mask
        h = (h * m) & mask
        h ^= k
    rest = len(data) % 4
    tail = data[n4 * 4 :]
    if rest == 3:
        h ^= tail[2] << 16
    if rest >= 2:
        h ^= tail[1] << 8
    if rest >= 1:
        h ^= tail[0]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h


def test_c1_round_trip(bootstrap: str, topic: str) -> None:
    with sluiceway.Producer(bootstrap_servers=bootstrap, linger_ms=5) as p:
        handles = [p.send(topic, f"v{i}", key=f"k{i % 7}") for i in range(1000)]
        p.flush(30)
        assert all(h.done() for h in handles)
    with sluiceway.Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest") as c:
        c.assign([(topic, 0), (topic, 1), (topic, 2)])
        got = consume(c, 1000)
    assert sorted(r.value or b"" for r in got) == sorted(f"v{i}".encode() for i in range(1000))
    by_partition: dict[int, list[int]] = defaultdict(list)
    for r in got:
        by_partition[r.partition].append(int(r.value[1:]))  # type: ignore[index]
    for values in by_partition.values():
        assert values == sorted(values)


def test_c2_key_to_partition(bootstrap: str, admin: sluiceway.Admin) -> None:
    t = new_topic(admin, 6)
    keys = ["a", "b", "hello", "sluiceway"] + [str(i) for i in range(10)]
    with sluiceway.Producer(bootstrap_servers=bootstrap) as p:
        got = {k: p.send(t, b"x", key=k).result(30).partition for k in keys}
    assert got == {k: (murmur2(k.encode()) & 0x7FFFFFFF) % 6 for k in keys}


def test_c3_explicit_partition(bootstrap: str, topic: str) -> None:
    with sluiceway.Producer(bootstrap_servers=bootstrap) as p:
        meta = p.send(topic, b"to-2", partition=2).result(30)
    assert meta.partition == 2 and meta.topic == topic
    with sluiceway.Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest") as c:
        c.assign([(topic, 2)])
        [record] = consume(c, 1)
    assert (record.partition, record.offset, record.value) == (2, meta.offset, b"to-2")
    assert repr(record).endswith("key=None, value=b'to-2')"), repr(record)


def test_headers_round_trip(bootstrap: str, topic: str) -> None:
    """Record headers as confluent-kafka takes and gives them: pairs in order (keys may repeat,
    values bytes, str or None) or a dict; records without headers beside them."""
    with sluiceway.Producer(bootstrap_servers=bootstrap) as p:
        p.send(topic, b"h1", partition=0, headers=[("trace", b"t1"), ("null", None), ("trace", "again")])
        p.send(topic, b"plain", partition=0)
        p.send(topic, b"h2", partition=0, headers={"content-type": "text/plain"})
        p.flush(30)
        with pytest.raises(TypeError, match="headers"):
            p.send(topic, b"x", headers=[("k",)])  # type: ignore[list-item]
        with pytest.raises(TypeError, match="key must be a str"):
            p.send(topic, b"x", headers=[(b"k", b"v")])  # type: ignore[list-item]
    with sluiceway.Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest") as c:
        c.assign([(topic, 0)])
        got = consume(c, 3)
    assert [(r.value, r.headers) for r in got] == [
        (b"h1", [("trace", b"t1"), ("null", None), ("trace", b"again")]),
        (b"plain", []),
        (b"h2", [("content-type", b"text/plain")]),
    ]


def test_idempotent_producer(bootstrap: str, topic: str) -> None:
    """``enable_idempotence=True`` (aiokafka's and confluent-kafka's name): offsets dense and in
    order, and Kafka's rules for it enforced by the core with the key they are about."""
    with sluiceway.Producer(bootstrap_servers=bootstrap, enable_idempotence=True) as p:
        futures = [p.send(topic, f"v{i}".encode(), partition=1) for i in range(1000)]
        assert [f.result(30).offset for f in futures] == list(range(1000))
    with pytest.raises(errors.InvalidConfigError, match="acks"):
        sluiceway.Producer(bootstrap_servers=bootstrap, enable_idempotence=True, acks=1)
    with sluiceway.Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest") as c:
        c.assign([(topic, 1)])
        assert [r.value for r in consume(c, 1000)] == [f"v{i}".encode() for i in range(1000)]


GOLDEN = REPO / "testdata" / "golden"


def test_c4_golden_vectors() -> None:
    """Every golden vector decodes, through the core's codec, to the records its .json lists."""
    vectors = sorted(GOLDEN.glob("*.json"))
    assert len(vectors) >= 10
    for spec_path in vectors:
        spec = json.loads(spec_path.read_text())
        data = spec_path.with_suffix(".bin").read_bytes()
        got = _native.decode_message_set(data)
        assert len(got) == len(spec["records"]), spec_path.name
        for (offset, ts, ts_type, key, value, headers), want in zip(got, spec["records"]):
            assert offset == want["offset"], spec_path.name
            assert ts == (-1 if want["timestamp"] is None else want["timestamp"]), spec_path.name
            if want["timestamp_type"] is not None:
                assert ts_type == want["timestamp_type"], spec_path.name
            assert (key, value) == (b64(want["key"]), b64(want["value"])), spec_path.name
            # Magic 2 vectors list headers (in order); magic 0/1 records have none.
            want_headers = [(h["key"], b64(h["value"])) for h in want.get("headers", [])]
            assert headers == want_headers, spec_path.name


def b64(v: str | None) -> bytes | None:
    return None if v is None else base64.b64decode(v)


def test_c5_c6_local_offsets_then_replay(bootstrap: str, admin: sluiceway.Admin, tmp_path: Path) -> None:
    t = new_topic(admin, 1)
    with sluiceway.Producer(bootstrap_servers=bootstrap) as p:
        p.send_batch(t, [f"v{i}" for i in range(1000)]).results(30)
    config = dict(bootstrap_servers=bootstrap, auto_offset_reset="earliest", offset_store=str(tmp_path), max_poll_records=100)
    with sluiceway.Consumer(**config) as c:  # type: ignore[arg-type]
        c.assign([(t, 0)])
        got = consume(c, 300)[:300]
        c.seek(t, 0, 300)
        c.commit()
        assert c.committed(t, 0) == 300
    with sluiceway.Consumer(**config) as c:  # type: ignore[arg-type]
        c.assign([(t, 0)])
        assert c.position(t, 0) == 300
        [first, *_] = consume(c, 1)
        assert first.offset == 300 and got[-1].offset == 299
        c.seek_to_beginning()
        assert consume(c, 1)[0].offset == 0


def test_c7_seek_by_time(bootstrap: str, admin: sluiceway.Admin) -> None:
    t = new_topic(admin, 1)
    base = int(time.time() * 1000) - 100_000
    with sluiceway.Producer(bootstrap_servers=bootstrap) as p:
        for i in range(1000):
            p.send(t, f"v{i}", timestamp=base + i * 10)
        p.flush(30)
    with sluiceway.Consumer(bootstrap_servers=bootstrap) as c:
        c.assign([(t, 0)])
        c.seek_to_timestamp(base + 500 * 10)
        assert consume(c, 1)[0].value == b"v500"


def test_c8_c9_group_split_then_broadcast(bootstrap: str, admin: sluiceway.Admin) -> None:
    t = new_topic(admin, 4)
    with sluiceway.Producer(bootstrap_servers=bootstrap) as p:
        p.send_batch(t, [f"v{i}" for i in range(400)], keys=[f"k{i}" for i in range(400)]).results(30)
    g = f"g-{uuid.uuid4().hex[:8]}"
    cfg = dict(bootstrap_servers=bootstrap, group_id=g, auto_offset_reset="earliest")
    c1, c2 = sluiceway.Consumer(**cfg), sluiceway.Consumer(**cfg)  # type: ignore[arg-type]
    c1.subscribe([t])
    c2.subscribe([t])
    got: list[sluiceway.Record] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (len(got) < 400 or not (c1.assignment() and c2.assignment())):
        got.extend(c1.poll(0.2))
        got.extend(c2.poll(0.2))
    a1, a2 = set(c1.assignment()), set(c2.assignment())
    assert a1 and a2 and not (a1 & a2) and len(a1 | a2) == 4
    assert len(got) == 400 and len({(r.partition, r.offset) for r in got}) == 400
    c1.close()
    c2.close()
    with sluiceway.Consumer(bootstrap_servers=bootstrap, group_id=f"h-{g}", auto_offset_reset="earliest") as h:
        h.subscribe([t])
        assert len(consume(h, 400, 30)) == 400


def test_c10_typed_errors(bootstrap: str, topic: str) -> None:
    with sluiceway.Producer(bootstrap_servers=bootstrap) as p:
        with pytest.raises(errors.UnknownTopicOrPartitionError) as e:
            p.send("no-such-topic-c10", b"x").result(30)
        assert e.value.code == "UNKNOWN_TOPIC_OR_PARTITION" and e.value.retriable
        assert "no-such-topic-c10" in str(e.value)
    with sluiceway.Consumer(bootstrap_servers=bootstrap) as c:
        c.assign([(topic, 0)])
        with pytest.raises(errors.InvalidArgumentError):
            c.seek(topic, 99, 0)
    with pytest.raises(errors.InvalidConfigError, match="linger.ms"):
        sluiceway.Producer(bootstrap_servers=bootstrap, linger_ms="soon")
    with pytest.raises(errors.InvalidConfigError, match="no.such.key"):
        sluiceway.Producer({"bootstrap.servers": bootstrap, "no.such.key": "1"})
    with pytest.raises(TypeError, match="value"):
        sluiceway.Producer(bootstrap_servers=bootstrap).send(topic, 42)  # type: ignore[arg-type]


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_c11_compression(bootstrap: str, topic: str, codec: str) -> None:
    values = [f"{codec}-{i}-".encode() * 20 for i in range(50)]
    with sluiceway.Producer(bootstrap_servers=bootstrap, compression_type=codec) as p:
        for v in values:
            p.send(topic, v, partition=1)
        p.flush(30)
    with sluiceway.Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest") as c:
        c.assign([(topic, 1)])
        assert [r.value for r in consume(c, 50)] == values


def test_check_crcs_false_reads_every_codec_and_a_bad_value_is_refused(bootstrap: str, topic: str) -> None:
    values = []
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"]:
        with sluiceway.Producer(bootstrap_servers=bootstrap, compression_type=codec) as p:
            batch = [f"{codec}-{i}".encode() for i in range(10)]
            for v in batch:
                p.send(topic, v, partition=0)
            p.flush(30)
        values += batch
    with sluiceway.Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", check_crcs=False) as c:
        c.assign([(topic, 0)])
        assert [r.value for r in consume(c, 50)] == values
    with pytest.raises(errors.InvalidConfigError, match="check.crcs"):
        sluiceway.Consumer(bootstrap_servers=bootstrap, check_crcs="sometimes")


def test_c12_large_value(bootstrap: str, topic: str) -> None:
    value = os.urandom(1 << 20)
    with sluiceway.Producer(bootstrap_servers=bootstrap) as p:
        p.send(topic, value, partition=0).result(30)
    with sluiceway.Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest") as c:
        c.assign([(topic, 0)])
        assert consume(c, 1)[0].value == value


def test_c13_close_resolves_every_pending_send(bootstrap: str, topic: str) -> None:
    p = sluiceway.Producer(bootstrap_servers=bootstrap, linger_ms=60_000)
    handles = [p.send(topic, f"v{i}") for i in range(100)]
    try:
        p.close(0)
    except sluiceway.SluicewayError:
        pass  # close reports what it could not deliver
    for h in handles:
        assert h.done()
        try:
            h.result(0)
        except sluiceway.SluicewayError as e:
            assert isinstance(e, errors.ClosedError), e


def test_c14_rebalance_events_with_on_revoke_commit(bootstrap: str, admin: sluiceway.Admin) -> None:
    t = new_topic(admin, 4)
    with sluiceway.Producer(bootstrap_servers=bootstrap) as p:
        p.send_batch(t, [f"v{i}" for i in range(200)], keys=[f"k{i}" for i in range(200)]).results(30)
    g = f"r-{uuid.uuid4().hex[:8]}"
    cfg = dict(bootstrap_servers=bootstrap, group_id=g, auto_offset_reset="earliest", enable_auto_commit=False)
    revoked: list[list[sluiceway.TopicPartitionOffset]] = []
    assigned2: list[list[sluiceway.TopicPartitionOffset]] = []
    m1 = sluiceway.Consumer(**cfg)  # type: ignore[arg-type]

    def on_revoke(positions: list[sluiceway.TopicPartitionOffset]) -> None:
        revoked.append(positions)
        m1.commit()

    m1.subscribe([t], on_revoke=on_revoke)
    got1 = consume(m1, 200, 30)
    assert len(got1) == 200 and len(m1.assignment()) == 4
    m2 = sluiceway.Consumer(**cfg)  # type: ignore[arg-type]
    m2.subscribe([t], on_assign=assigned2.append)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (assigned2 and m1.assignment() and m2.assignment()):
        m1.poll(0.2)
        m2.poll(0.2)
    assert revoked and {(p.topic, p.partition) for p in revoked[0]} == {(t, i) for i in range(4)}
    ends = {(p.topic, p.partition): p.offset for p in revoked[0]}
    assert assigned2
    for start in assigned2[-1]:
        assert start.offset == ends[(start.topic, start.partition)]
    assert m1.assignment() and m2.assignment()
    m1.close()
    m2.close()


def test_c15_missing_topic_batch_fails_every_record(bootstrap: str) -> None:
    started = time.monotonic()
    with sluiceway.Producer(bootstrap_servers=bootstrap) as p:
        results = p.send_batch("no-such-topic-c15", [b"x"] * 1000).results(60)
    assert len(results) == 1000
    assert all(isinstance(r, errors.UnknownTopicOrPartitionError) for r in results)
    assert time.monotonic() - started < 60


def test_batch_wait_returns_when_all_delivered_and_raises_the_first_failure(bootstrap: str, topic: str) -> None:
    with sluiceway.Producer(bootstrap_servers=bootstrap) as p:
        p.send_batch(topic, [f"w{i}" for i in range(500)]).wait(30)  # returns: all delivered
        with pytest.raises(errors.UnknownTopicOrPartitionError, match="no-such-topic-wait"):
            p.send_batch("no-such-topic-wait", [b"x"] * 10).wait(30)
        with pytest.raises(ValueError, match="timeout"):
            p.send_batch(topic, [b"x"]).wait(-1)


def test_c16_close_then_poll(bootstrap: str, topic: str) -> None:
    c = sluiceway.Consumer(bootstrap_servers=bootstrap)
    c.assign([(topic, 0)])
    c.close()
    with pytest.raises(errors.ClosedError, match="closed"):
        c.poll(5)
    assert list(c) == []


def test_every_error_code_has_its_class() -> None:
    for name, _number, retriable in _native.error_codes():
        if name == "NONE":
            continue
        cls = errors.ERRORS_BY_CODE[name]
        assert issubclass(cls, sluiceway.SluicewayError), name
    assert issubclass(errors.RequestTimedOutError, TimeoutError)
    assert {n for n, _, _ in _native.error_codes()} - {"NONE"} == set(errors.ERRORS_BY_CODE)


def test_timeout_is_a_builtin_timeout_error(bootstrap: str, topic: str) -> None:
    with sluiceway.Producer(bootstrap_servers=bootstrap, linger_ms=60_000) as p:
        handle = p.send(topic, b"x")
        with pytest.raises(TimeoutError) as e:
            handle.result(0.1)
        assert isinstance(e.value, errors.RequestTimedOutError) and e.value.code == "REQUEST_TIMED_OUT"


def test_reachable_errors_by_class(bootstrap: str, admin: sluiceway.Admin, topic: str) -> None:
    with pytest.raises(errors.TopicAlreadyExistsError):
        admin.create_topic(topic, 1)
    with pytest.raises(errors.InvalidTopicError):
        admin.create_topic("bad/name", 1)
    with pytest.raises(errors.InvalidPartitionsError):
        admin.create_topic(f"zero-{uuid.uuid4().hex[:6]}", 0)
    with pytest.raises(errors.InvalidReplicationFactorError):
        admin.create_topic(f"rf-{uuid.uuid4().hex[:6]}", 1, replication_factor=3)
    with pytest.raises(errors.NetworkError) as e:
        sluiceway.Admin(bootstrap_servers="127.0.0.1:1", request_timeout_ms=500)
    assert e.value.retriable
    with sluiceway.Producer(bootstrap_servers=bootstrap) as p:
        with pytest.raises(errors.MessageTooLargeError):
            p.send(topic, b"x" * (64 << 20)).result(30)
    with sluiceway.Consumer(bootstrap_servers=bootstrap, group_id="g-no-topics") as c:
        with pytest.raises(errors.InvalidArgumentError):
            c.subscribe([])
    with sluiceway.Consumer(bootstrap_servers=bootstrap, auto_offset_reset="none") as c:
        c.assign([(topic, 0)])
        c.seek(topic, 0, 10_000)
        with pytest.raises(errors.OffsetOutOfRangeError):
            for _ in range(20):
                c.poll(0.5)


def test_bad_arguments_name_the_argument(bootstrap: str, topic: str) -> None:
    with sluiceway.Producer(bootstrap_servers=bootstrap) as p:
        with pytest.raises(ValueError, match="partition"):
            p.send(topic, b"x", partition=-1)
        with pytest.raises(TypeError, match="key"):
            p.send(topic, b"x", key=3.5)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="timeout"):
            p.flush(-1)
        with pytest.raises(ValueError, match="keys"):
            p.send_batch(topic, [b"a", b"b"], keys=[b"a"])
        with pytest.raises(TypeError, match="topic"):
            p.send(7, b"x")  # type: ignore[arg-type]
    with sluiceway.Consumer(bootstrap_servers=bootstrap) as c:
        with pytest.raises(ValueError, match="offset"):
            c.assign([(topic, 0)])
            c.seek(topic, 0, -5)
        with pytest.raises(TypeError, match="partitions"):
            c.assign(topic)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="config"):
        sluiceway.Producer(["bootstrap.servers"])  # type: ignore[arg-type]


def test_admin_lists_and_describes(bootstrap: str, admin: sluiceway.Admin, topic: str) -> None:
    assert any(t.name == topic and t.partitions == 3 for t in admin.list_topics())
    d = admin.describe_topic(topic)
    assert [p.partition for p in d.partitions] == [0, 1, 2]
    with sluiceway.Producer(bootstrap_servers=bootstrap) as p:
        p.send(topic, b"x", partition=0).result(30)
    [earliest, latest, missing] = admin.list_offsets([(topic, 0, "earliest"), (topic, 0, "latest"), ("nope-x", 0, "latest")])
    assert isinstance(earliest, sluiceway.admin.ListedOffset) and earliest.offset == 0
    assert isinstance(latest, sluiceway.admin.ListedOffset) and latest.offset == 1
    assert isinstance(missing, errors.UnknownTopicOrPartitionError)
    g = f"ag-{uuid.uuid4().hex[:6]}"
    with sluiceway.Consumer(bootstrap_servers=bootstrap, group_id=g, auto_offset_reset="earliest") as c:
        c.subscribe([topic])
        consume(c, 1)
        assert any(x.group_id == g for x in admin.list_groups())
        desc = admin.describe_group(g)
        assert desc.state == "Stable" and len(desc.members) == 1
    admin.delete_topic(topic)
    assert all(t.name != topic for t in admin.list_topics())


def test_asyncio_producer_and_consumer(bootstrap: str, topic: str) -> None:
    async def main() -> None:
        async with AsyncProducer(bootstrap_servers=bootstrap) as p:
            meta = await p.send(topic, b"async-0", partition=0)
            assert meta.offset == 0
            results = await p.send_batch(topic, [f"async-{i}" for i in range(1, 100)])
            assert all(isinstance(r, sluiceway.RecordMetadata) for r in results)
            # Other coroutines run while a send is in flight.
            ticks = 0

            async def tick() -> None:
                nonlocal ticks
                ticks += 1

            await asyncio.gather(p.send(topic, b"x", partition=1), tick())
            assert ticks == 1
        async with AsyncConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest") as c:
            c.assign([(topic, 0), (topic, 1), (topic, 2)])
            got = []
            async for record in c:
                got.append(record)
                if len(got) == 101:
                    break
            assert {r.value for r in got} >= {f"async-{i}".encode() for i in range(100)}
            # A cancelled poll takes no records.
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(c.poll(10), 0.2)

    asyncio.run(main())


def test_asyncio_clients_connect_in_start_not_in_the_constructor(bootstrap: str, topic: str) -> None:
    # Nothing listens on `dead`: a constructor that connected would fail (the sync ones do).
    dead = "127.0.0.1:1"
    with pytest.raises(errors.SluicewayError):
        sluiceway.Producer(bootstrap_servers=dead, request_timeout_ms=500, retries=0)
    # Bad config still raises at construction, naming the key (no I/O needed to check it).
    with pytest.raises(errors.InvalidConfigError, match="no.such.key"):
        AsyncProducer({"no.such.key": 1}, bootstrap_servers=dead)
    with pytest.raises(errors.InvalidConfigError, match="no.such.key"):
        AsyncConsumer({"no.such.key": 1}, bootstrap_servers=dead)

    async def main() -> None:
        p = AsyncProducer(bootstrap_servers=dead, request_timeout_ms=500, retries=0)
        c = AsyncConsumer(bootstrap_servers=dead, request_timeout_ms=500)
        with pytest.raises(RuntimeError, match="start"):
            c.assign([(topic, 0)])
        with pytest.raises(errors.SluicewayError):
            await p.start()
        with pytest.raises(errors.SluicewayError):
            await c.start()
        await p.close()  # never started: nothing to close
        await c.close()

        # The event loop runs while the core connects; racing starts share one connect.
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            ticks += 1

        p = AsyncProducer(bootstrap_servers=bootstrap)
        await asyncio.gather(p.start(), p.start(), tick())
        assert ticks == 1
        native = p._native
        await p.start()
        assert p._native is native
        # An awaited call on a client not started starts it.
        c = AsyncConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
        assert (await c.poll(0.1)) == []
        c.assign([(topic, 1)])
        meta = await p.send(topic, b"lazy", partition=1)
        got = [r for r in await c.poll(10) if r.value == b"lazy"]
        assert [r.offset for r in got] == [meta.offset]
        await p.close()
        await c.close()

    asyncio.run(main())


CTRL_C_CHILD = """
import sys, time, sluiceway
c = sluiceway.Consumer(bootstrap_servers=sys.argv[1])
c.assign([(sys.argv[2], 0)])
c.seek_to_end()
print("polling", flush=True)
started = time.monotonic()
try:
    c.poll(60)
except KeyboardInterrupt:
    print(f"interrupted after {time.monotonic() - started:.1f}", flush=True)
    sys.exit(0)
sys.exit(3)
"""


def test_ctrl_c_interrupts_poll(bootstrap: str, topic: str) -> None:
    child = subprocess.Popen([sys.executable, "-c", CTRL_C_CHILD, bootstrap, topic], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "polling"
    time.sleep(0.5)
    child.send_signal(signal.SIGINT)
    out, _ = child.communicate(timeout=10)
    assert child.returncode == 0, out
    assert out.startswith("interrupted after")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")
def test_a_client_used_after_fork_raises_closed(bootstrap: str, topic: str) -> None:
    p = sluiceway.Producer(bootstrap_servers=bootstrap)
    p.send(topic, b"before fork").result(30)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            p.send(topic, b"in child").result(5)
        except errors.ClosedError as e:
            code = 0 if "fork" in str(e) else 2
        except BaseException:
            code = 3
        try:
            # A new client in the child works.
            q = sluiceway.Producer(bootstrap_servers=bootstrap)
            q.send(topic, b"child").result(30)
            q.close()
        except BaseException:
            code = 4
        os.write(w, bytes([code]))
        os._exit(0)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    assert os.read(r, 1) == b"\x00"
    p.close()


def test_quickstart_example_runs(bootstrap: str, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "examples" / "quickstart.py"), bootstrap],
        capture_output=True, text=True, timeout=120, env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert out.returncode == 0, out.stderr
    assert "replayed from offset 0" in out.stdout

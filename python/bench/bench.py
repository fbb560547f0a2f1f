"""Producer and consumer throughput from Python: the sluiceway package against a Sluiceway
broker, beside the Rust client (``sluiceway bench``) and confluent-kafka against Apache Kafka.

``make bench-python`` runs everything side by side (release builds, both brokers, 100 B and
1 KiB; see python/bench/compare.sh). By hand, with the package built in release mode
(``cd python && maturin develop --release``) and a running broker (``make run``)::

    python python/bench/bench.py --bootstrap 127.0.0.1:9292 --size 100 --messages 1000000
    python python/bench/bench.py --size 1024 --messages 500000 --sluiceway target/release/sluiceway
    # confluent-kafka (pip install confluent-kafka==2.16.1) against a Kafka broker:
    python python/bench/bench.py --target kafka --bootstrap 127.0.0.1:9092 --size 100

Each run uses a fresh topic (``--partitions``, default 1). Settings on every client: acks=1,
linger.ms=5, batch.size=65536, no compression (those of docs/benchmarks.md).

- sluiceway producer: ``send_batch`` of ``--batch`` records per call (one boundary crossing
  each), at most ``--window`` batches unacknowledged, every record's result checked; consumer:
  a standalone consumer assigned every partition from the earliest offset, ``poll`` lists.
- confluent-kafka producer: ``produce()`` + ``poll(0)`` per record (``poll(0.1)`` when the
  local queue is full), then ``flush()``; consumer: a fresh group, ``assign`` from the
  beginning, ``consume(num_messages=5000)`` batches with every message's error checked.
- ``--sluiceway BIN`` (sluiceway target): also ``BIN bench produce|consume`` (the Rust client,
  one ``send`` per record, 10,000 in flight) on the same workload, in the same run.

Output: a text line per client and mode, or with ``--json`` one JSON object per line:
``{"client": "python" | "rust" | "confluent-kafka", "target": "sluiceway" | "kafka",
"mode": "produce" | "consume", "size", "messages", "seconds", "msgs_per_sec", "mb_per_sec"}``
(MB = 10^6 bytes of values). Times include creating the client and, for produce, the final
flush.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import time
import uuid
from collections import deque
from typing import Any

import sluiceway

SETTINGS = {"acks": "1", "linger.ms": "5", "batch.size": "65536"}
CONSUME_BATCH = 5000


def produce(bootstrap: str, topic: str, n: int, size: int, batch: int, window: int) -> float:
    value = b"x" * size
    values = [value] * batch
    pending: deque[sluiceway.BatchHandle] = deque()
    started = time.perf_counter()
    with sluiceway.Producer({"bootstrap.servers": bootstrap, **SETTINGS}) as p:
        sent = 0
        while sent < n:
            k = min(batch, n - sent)
            pending.append(p.send_batch(topic, values[:k] if k < batch else values))
            sent += k
            if len(pending) > window:
                check(pending.popleft())
        p.flush()
        while pending:
            check(pending.popleft())
    return time.perf_counter() - started


def check(h: sluiceway.BatchHandle) -> None:
    """Raises the batch's first failure (``wait``: no per-record result object is built)."""
    h.wait(60)


def consume(bootstrap: str, topic: str, partitions: int, n: int) -> float:
    started = time.perf_counter()
    got = 0
    with sluiceway.Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", max_poll_records=CONSUME_BATCH) as c:
        c.assign([(topic, p) for p in range(partitions)])
        while got < n:
            records = c.poll(5.0)
            if not records:
                raise SystemExit(f"consume: stalled at {got} of {n}")
            got += len(records)
    return time.perf_counter() - started


def kafka_module() -> Any:
    """confluent_kafka, imported by name so the type check of this file does not need it."""
    try:
        return importlib.import_module("confluent_kafka")
    except ImportError:
        raise SystemExit("--target kafka needs confluent-kafka: pip install confluent-kafka==2.16.1") from None


def kafka_create_topic(ck: Any, bootstrap: str, topic: str, partitions: int) -> None:
    admin = importlib.import_module("confluent_kafka.admin")
    client = admin.AdminClient({"bootstrap.servers": bootstrap})  # must outlive the futures
    futures = client.create_topics([admin.NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    for f in futures.values():
        f.result(30)


def kafka_produce(ck: Any, bootstrap: str, topic: str, n: int, size: int) -> float:
    value = b"x" * size
    started = time.perf_counter()
    p = ck.Producer({"bootstrap.servers": bootstrap, **SETTINGS})
    for _ in range(n):
        while True:
            try:
                p.produce(topic, value)
                break
            except BufferError:  # the local queue is full: serve delivery reports
                p.poll(0.1)
        p.poll(0)
    left = p.flush(60)
    if left:
        raise SystemExit(f"kafka produce: {left} messages not delivered")
    return time.perf_counter() - started


def kafka_consume(ck: Any, bootstrap: str, topic: str, partitions: int, n: int) -> float:
    started = time.perf_counter()
    c = ck.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"pybench-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in range(partitions)])
    got = 0
    try:
        while got < n:
            msgs = c.consume(num_messages=CONSUME_BATCH, timeout=5.0)
            if not msgs:
                raise SystemExit(f"kafka consume: stalled at {got} of {n}")
            for m in msgs:
                if m.error() is not None:
                    raise SystemExit(f"kafka consume: {m.error()}")
            got += len(msgs)
    finally:
        c.close()
    return time.perf_counter() - started


def rust(binary: str, bootstrap: str, args: list[str]) -> dict[str, Any]:
    out = subprocess.run(
        [binary, "bench", *args, "--bootstrap", bootstrap, "--format", "json", "--quiet"],
        check=True,
        capture_output=True,
        text=True,
    )
    r: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    if r["errors"]:
        raise SystemExit(f"sluiceway bench {args[0]}: {r['errors']} errors")
    return r


def report(a: argparse.Namespace, client: str, mode: str, messages: int, seconds: float) -> None:
    row = {
        "client": client,
        "target": a.target,
        "mode": mode,
        "size": a.size,
        "messages": messages,
        "seconds": round(seconds, 4),
        "msgs_per_sec": round(messages / seconds, 1),
        "mb_per_sec": round(messages * a.size / 1e6 / seconds, 3),
    }
    if a.json:
        print(json.dumps(row), flush=True)
    else:
        print(
            f"{client:16} {a.target:9} {mode:7} {messages} x {a.size} B: "
            f"{row['msgs_per_sec']:12,.0f} msg/s {row['mb_per_sec']:8.1f} MB/s",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", choices=["sluiceway", "kafka"], default="sluiceway")
    ap.add_argument("--bootstrap", default="127.0.0.1:9292")
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--partitions", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1000, help="records per send_batch call (sluiceway)")
    ap.add_argument("--window", type=int, default=32, help="unacknowledged batches at most (sluiceway)")
    ap.add_argument("--sluiceway", help="the sluiceway binary, to run the Rust client on the same workload")
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    ap.add_argument(
        "--topic-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config of the sluiceway topics (python and rust), e.g. flush.policy=os; repeatable",
    )
    a = ap.parse_args()
    if a.messages < 1 or a.size < 0 or a.partitions < 1 or a.batch < 1 or a.window < 0:
        ap.error("--messages, --partitions and --batch must be ≥ 1; --size and --window ≥ 0")
    topic = f"pybench-{a.size}-{uuid.uuid4().hex[:8]}"
    if not all("=" in c for c in a.topic_config):
        ap.error("--topic-config takes KEY=VALUE")
    configs = dict(c.split("=", 1) for c in a.topic_config)
    if configs and a.target == "kafka":
        ap.error("--topic-config applies to sluiceway topics only")
    if a.target == "kafka":
        ck = kafka_module()
        kafka_create_topic(ck, a.bootstrap, topic, a.partitions)
        report(a, "confluent-kafka", "produce", a.messages, kafka_produce(ck, a.bootstrap, topic, a.messages, a.size))
        report(a, "confluent-kafka", "consume", a.messages, kafka_consume(ck, a.bootstrap, topic, a.partitions, a.messages))
        return
    admin = sluiceway.Admin(bootstrap_servers=a.bootstrap)
    admin.create_topic(topic, partitions=a.partitions, configs=configs)
    report(a, "python", "produce", a.messages, produce(a.bootstrap, topic, a.messages, a.size, a.batch, a.window))
    report(a, "python", "consume", a.messages, consume(a.bootstrap, topic, a.partitions, a.messages))
    if a.sluiceway:
        rtopic = topic + "-rust"
        admin.create_topic(rtopic, partitions=a.partitions, configs=configs)  # bench uses it as is
        common = ["--topic", rtopic, "--messages", str(a.messages), "--partitions", str(a.partitions)]
        settings = ["--acks", "1", "--linger-ms", "5", "--batch-size", "65536", "--size", str(a.size)]
        for mode, extra in (("produce", settings), ("consume", [])):
            r = rust(a.sluiceway, a.bootstrap, [mode, *common, *extra])
            report(a, "rust", mode, r["messages"], r["seconds"])
    sys.stdout.flush()


if __name__ == "__main__":
    main()

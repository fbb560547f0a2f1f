"""Producer and consumer throughput from Python, beside the Rust client on the same workload.

Against a running broker (``make run``) with the package built in release mode
(``cd python && maturin develop --release``)::

    python python/bench/bench.py --bootstrap 127.0.0.1:9292 --size 100 --messages 1000000
    python python/bench/bench.py --size 1024 --messages 500000 --sluiceway target/release/sluiceway

Each run uses a fresh topic. The producer sends ``--batch`` records per ``send_batch`` call
(one boundary crossing each) and keeps at most ``--window`` batches unacknowledged; the
consumer reads the topic back from the beginning. With ``--sluiceway`` the same workload also
runs through ``sluiceway bench produce|consume`` (the Rust client), so the ratio is measured in
one run. Settings: acks=1, linger.ms=5, batch.size=65536 (those of docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import uuid
from collections import deque

import sluiceway

PRODUCER = dict(acks="1", linger_ms=5, batch_size=65536)


def produce(bootstrap: str, topic: str, n: int, size: int, batch: int, window: int) -> float:
    value = b"x" * size
    values = [value] * batch
    pending: deque[sluiceway.BatchHandle] = deque()
    started = time.perf_counter()
    with sluiceway.Producer(bootstrap_servers=bootstrap, **PRODUCER) as p:  # type: ignore[arg-type]
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
    for r in h.results(60):
        if isinstance(r, sluiceway.SluicewayError):
            raise r


def consume(bootstrap: str, topic: str, partitions: int, n: int) -> float:
    started = time.perf_counter()
    got = 0
    with sluiceway.Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", max_poll_records=5000) as c:
        c.assign([(topic, p) for p in range(partitions)])
        while got < n:
            records = c.poll(5.0)
            if not records:
                raise SystemExit(f"consume: stalled at {got} of {n}")
            got += len(records)
    return time.perf_counter() - started


def rust(binary: str, bootstrap: str, args: list[str]) -> str:
    out = subprocess.run([binary, "bench", *args, "--bootstrap", bootstrap], check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", default="127.0.0.1:9292")
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--partitions", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1000, help="records per send_batch call")
    ap.add_argument("--window", type=int, default=32, help="unacknowledged batches at most")
    ap.add_argument("--sluiceway", help="the sluiceway binary, to run the Rust client on the same workload")
    a = ap.parse_args()
    topic = f"pybench-{a.size}-{uuid.uuid4().hex[:8]}"
    sluiceway.Admin(bootstrap_servers=a.bootstrap).create_topic(topic, partitions=a.partitions)
    mb = a.messages * a.size / 1e6
    t = produce(a.bootstrap, topic, a.messages, a.size, a.batch, a.window)
    print(f"python produce  {a.messages} x {a.size} B: {a.messages / t:12,.0f} msg/s {mb / t:8.1f} MB/s")
    t = consume(a.bootstrap, topic, a.partitions, a.messages)
    print(f"python consume  {a.messages} x {a.size} B: {a.messages / t:12,.0f} msg/s {mb / t:8.1f} MB/s")
    if a.sluiceway:
        rtopic = topic + "-rust"
        common = ["--topic", rtopic, "--messages", str(a.messages), "--size", str(a.size)]
        settings = ["--acks", "1", "--linger-ms", "5", "--batch-size", "65536", "--partitions", str(a.partitions)]
        print("rust   produce ", rust(a.sluiceway, a.bootstrap, ["produce", *common, *settings, "--quiet"]))
        print("rust   consume ", rust(a.sluiceway, a.bootstrap, ["consume", "--topic", rtopic, "--messages", str(a.messages), "--quiet"]))
    sys.stdout.flush()


if __name__ == "__main__":
    main()

"""Sluiceway quickstart (Python), the same steps in every language: create a topic, produce ten
records, consume and commit them with a local offset store, replay from the beginning.
Start a broker (`make run`), then `python examples/quickstart.py [HOST:PORT]`."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from sluiceway import Admin, Consumer, Producer, TopicAlreadyExistsError


def run(bootstrap: str, store: str) -> None:
    """The quickstart's steps (the tests run this too)."""
    try:
        Admin(bootstrap_servers=bootstrap).create_topic("quickstart", 3)
    except TopicAlreadyExistsError:
        pass

    with Producer(bootstrap_servers=bootstrap) as producer:
        handles = [producer.send("quickstart", f"hello {i}", partition=0) for i in range(10)]
        for handle in handles:
            print(f"delivered at offset {handle.result(timeout=30).offset}")

    with Consumer(
        bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False, offset_store=store
    ) as consumer:
        consumer.assign([("quickstart", 0)])
        seen = 0
        while seen < 10:
            records = consumer.poll(timeout=5)
            if not records:
                raise RuntimeError("no records within 5 s")
            for record in records:
                print(f"consumed offset {record.offset}: {record.value!r}")
            seen += len(records)
        consumer.commit()
        consumer.seek_to_beginning()
        replay = consumer.poll(timeout=5)
        if not replay:
            raise RuntimeError("nothing replayed")
        print(f"replayed from offset {replay[0].offset}")


if __name__ == "__main__":
    run(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9292", str(Path(tempfile.gettempdir()) / "sluiceway-quickstart"))

"""Fixtures: a real `sluiceway broker` process on a free loopback port (as broker/tests/support.rs
starts one), and unique topic names per test."""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import sluiceway

REPO = Path(__file__).resolve().parents[2]


def broker_binary() -> Path:
    path = Path(os.environ.get("SLUICEWAY_BIN", REPO / "target" / "debug" / "sluiceway"))
    if not path.exists():
        pytest.fail(f"{path} not found: build it with `cargo build -p sluiceway-broker` (make test-python does)")
    return path


class Broker:
    """A broker process over a temp data dir; `address` is HOST:PORT."""

    def __init__(self, root: Path, extra: list[str]) -> None:
        self.root = root
        self.log = root / "broker.log"
        self.process = subprocess.Popen(
            [str(broker_binary()), "broker", "--data-dir", str(root / "data"), "--listen", "127.0.0.1:0", *extra],
            stdout=subprocess.PIPE,
            stderr=open(self.log, "wb"),
            text=True,
        )
        found: list[str] = []
        stdout = self.process.stdout
        assert stdout is not None

        def read() -> None:
            for line in stdout:
                if line.startswith("listening on ") and not found:
                    found.append(line.removeprefix("listening on ").strip())

        threading.Thread(target=read, daemon=True).start()
        for _ in range(300):
            if found or self.process.poll() is not None:
                break
            threading.Event().wait(0.05)
        if not found:
            self.stop()
            raise RuntimeError(f"broker did not start; log:\n{self.log.read_text()}")
        self.address = found[0]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One broker for the session, without the initial rebalance delay (as the Rust tests)."""
    b = Broker(tmp_path_factory.mktemp("broker"), ["--group-initial-rebalance-delay-ms", "0"])
    yield b
    b.stop()


@pytest.fixture
def bootstrap(broker: Broker) -> str:
    return broker.address


@pytest.fixture
def admin(bootstrap: str) -> sluiceway.Admin:
    return sluiceway.Admin(bootstrap_servers=bootstrap)


@pytest.fixture
def topic(admin: sluiceway.Admin) -> str:
    """A fresh 3-partition topic."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    admin.create_topic(name, 3)
    return name


def new_topic(admin: sluiceway.Admin, partitions: int) -> str:
    name = f"t-{uuid.uuid4().hex[:12]}"
    admin.create_topic(name, partitions)
    return name

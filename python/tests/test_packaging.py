"""Packaging for real: `maturin build --release` makes an abi3 wheel, and `pip install ./python`
in a fresh virtualenv (maturin fetched by pip as the PEP 517 backend) installs a package that
talks to a real broker.

Both builds use the workspace's `target/` (pip builds in-tree, maturin reads the workspace's
target directory), so the release compile happens once: the wheel build pays for it, pip's
build only relinks. pip needs PyPI for maturin (its isolated build environment).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
import venv
from pathlib import Path

import pytest

from .conftest import REPO

ROUND_TRIP = """
import sys, sluiceway
bootstrap, topic = sys.argv[1], sys.argv[2]
sluiceway.Admin(bootstrap_servers=bootstrap).create_topic(topic, 1)
with sluiceway.Producer(bootstrap_servers=bootstrap) as p:
    meta = p.send(topic, b"packaged", key="k").result(30)
with sluiceway.Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest") as c:
    c.assign([(topic, 0)])
    records = []
    while not records:
        records = c.poll(10)
print(sluiceway.__file__)
print(meta.offset, records[0].key, records[0].value)
"""


def maturin() -> Path:
    """maturin from the test virtualenv (make test-python installs it there)."""
    path = Path(sys.executable).parent / "maturin"
    if not path.exists():
        pytest.fail(f"{path} not found: install maturin in the test virtualenv (make test-python does)")
    return path


@pytest.mark.timeout(3600)
def test_release_wheel_is_abi3_and_pip_install_works(bootstrap: str, tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [str(maturin()), "build", "--release", "--quiet", "--out", str(wheels)], cwd=REPO / "python", check=True
    )
    built = sorted(p.name for p in wheels.glob("*.whl"))
    assert len(built) == 1, built
    # sluiceway-VERSION-cp39-abi3-PLATFORM.whl: one wheel for every CPython ≥ 3.9.
    name, _version, python_tag, abi_tag, _platform = built[0].removesuffix(".whl").split("-")
    assert (name, python_tag, abi_tag) == ("sluiceway", "cp39", "abi3")

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    # No pip config or virtualenv of the caller leaks in; PyPI is reachable for maturin.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV", "PYTHON"))}
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(REPO / "python")],
        cwd=REPO,
        env=env,
        check=True,
    )
    # From a directory without the source tree, so the import is the installed package.
    out = subprocess.run(
        [str(python), "-c", ROUND_TRIP, bootstrap, f"packaged-{uuid.uuid4().hex[:12]}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    where, result = out.stdout.strip().splitlines()
    assert Path(where).is_relative_to(env_dir), where
    assert result == "0 b'k' b'packaged'"

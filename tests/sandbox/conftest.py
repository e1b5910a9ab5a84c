"""Fixtures of the sandbox conformance suite: one ``backend`` parameter (local, docker), a small
task workspace, sandboxes that are always closed, and a TCP listener on the host.

The Docker half needs a running engine and the task image (``.ci/docker-up.sh`` provides both).
Without them it is skipped with the reason; with ``STSC_REQUIRE_DOCKER=1`` (set in CI) a missing
engine fails the run instead, so CI cannot skip it silently.
"""

from __future__ import annotations

import array
import fcntl
import functools
import os
import shutil
import socket
import struct
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from stsc.config import SandboxConfig

SECRET_VALUE = "sk-do-not-leak-0123456789"


@functools.cache
def docker_unavailable_reason() -> str | None:
    """None when a Docker engine answers and the task image exists, else why not."""
    try:
        from stsc.errors import SandboxError
        from stsc.sandbox.docker import connect

        client = connect(SandboxConfig(backend="docker"))
    except SandboxError as e:
        return str(e)
    try:
        client.images.get(SandboxConfig().image)
    except Exception:
        return f"image {SandboxConfig().image} is not built: run `python -m stsc.sandbox.image` or .ci/docker-up.sh"
    return None


def require_docker() -> None:
    reason = docker_unavailable_reason()
    if reason is None:
        return
    if os.environ.get("STSC_REQUIRE_DOCKER") == "1":
        pytest.fail(f"STSC_REQUIRE_DOCKER=1 but the Docker backend is unavailable: {reason}")
    pytest.skip(f"Docker backend unavailable: {reason}")


def base_config(backend: str, workdir: Path) -> SandboxConfig:
    """Small limits so containment tests finish fast."""
    return SandboxConfig(
        backend=backend,
        memory_mb=512,
        cpus=1.0,
        pids_limit=64,
        max_file_mb=8,
        output_limit_bytes=100_000,
        isolation="bwrap" if shutil.which("bwrap") else "none",
        env_allowlist=["PATH", "LANG", "TZ", "STSC_TEST_*", "MY_SERVICE_TOKEN"],
        workdir=str(workdir),
    )


@pytest.fixture(params=["local", pytest.param("docker", marks=pytest.mark.docker)])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "docker":
        require_docker()
    return request.param


@pytest.fixture
def sandbox_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sandboxes")


@pytest.fixture
def cfg(backend: str, sandbox_workdir: Path, monkeypatch: pytest.MonkeyPatch) -> SandboxConfig:
    # Host variables the secret test looks for; set before any sandbox captures its environment.
    monkeypatch.setenv("STSC_TEST_API_KEY", SECRET_VALUE)
    monkeypatch.setenv("MY_SERVICE_TOKEN", SECRET_VALUE)
    monkeypatch.setenv("STSC_TEST_VISIBLE", "visible-value")
    monkeypatch.setenv("STSC_UNLISTED", "unlisted-value")
    return base_config(backend, sandbox_workdir)


@pytest.fixture
def task_workspace(tmp_path: Path) -> Path:
    """A workspace like a task's: scripts, a data folder, a nested file."""
    ws = tmp_path / "task" / "workspace"
    (ws / "data").mkdir(parents=True)
    (ws / "data" / "train.csv").write_text("x,y\n1,0\n2,1\n")
    (ws / "baseline.py").write_text("import pandas as pd\nprint(len(pd.read_csv('data/train.csv')))\n")
    (ws / "notes" / "deep").mkdir(parents=True)
    (ws / "notes" / "deep" / "résumé.txt").write_text("ünïcode\n")
    return ws


@pytest.fixture
def private_dir(tmp_path: Path) -> Path:
    private = tmp_path / "task" / "private"
    private.mkdir(parents=True)
    (private / "answers.csv").write_text("id,label\n1,cat\n")
    private.chmod(0o700)
    return private


@pytest.fixture
def start(cfg: SandboxConfig, task_workspace: Path) -> Iterator:
    """``start(**overrides)`` -> a started sandbox, closed after the test."""
    from stsc.sandbox import make_factory

    opened = []

    def _start(**overrides: object):
        factory = make_factory(replace(cfg, **overrides) if overrides else cfg)
        sb = factory.start(task_workspace, f"test-{uuid.uuid4().hex[:8]}")
        opened.append(sb)
        return sb

    yield _start
    for sb in opened:
        sb.close()


@pytest.fixture
def sandbox(start):
    return start()


class Listener:
    """A TCP server on every host address that counts the connections it accepts."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


def host_ipv4_addresses() -> list[str]:
    """Every IPv4 address of this host's interfaces (loopback, LAN, docker0, ...)."""
    addresses = []
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _index, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            try:
                reply = fcntl.ioctl(probe.fileno(), 0x8915, request)  # SIOCGIFADDR
            except OSError:
                continue
            addresses.append(socket.inet_ntoa(array.array("B", reply[20:24]).tobytes()))
    finally:
        probe.close()
    return sorted(set(addresses) | {"127.0.0.1"})

"""``docker exec`` with a deadline and capped output, without threads: the attach stream is read
from its socket with ``poll`` and demultiplexed here (8-byte frame headers: stream, size)."""

from __future__ import annotations

import logging
import math
import select
import time
from collections.abc import Callable
from typing import Any

from stsc.errors import SandboxError
from stsc.sandbox.base import ExecResult
from stsc.sandbox.common import CappedBuffer

log = logging.getLogger(__name__)

KILL_GRACE_S = 3.0  # after each timeout action: time for the output stream to close
# How long the engine may take to record the exit code of a command whose output stream closed
# (seconds): it records the exit apart from closing the stream, late when it is busy.
EXIT_CODE_WAIT_S = 10.0
TIMED_OUT_EXIT_CODE_WAIT_S = 0.5  # a timed-out command may still be dying; it reports 137 then


def read_frames(
    sock: Any, out: CappedBuffer, err: CappedBuffer, deadline: float, on_timeout: Callable[[int], None]
) -> bool:
    """Demultiplex a docker attach stream into ``out``/``err`` until it closes. At ``deadline``,
    ``on_timeout(0)`` is called; if the stream is still open ``KILL_GRACE_S`` later,
    ``on_timeout(1)``; after another grace period reading stops. Returns timed_out."""
    raw = getattr(sock, "_sock", sock)
    buf = bytearray()
    attempts = 0
    try:
        # poll, not select: select cannot watch descriptors above 1023, which a process running
        # hundreds of sandboxes reaches.
        poller = select.poll()
        poller.register(raw, select.POLLIN)
        while True:
            wait = deadline - time.monotonic()
            if wait <= 0:
                if attempts == 2:
                    log.warning("a timed-out command's output stayed open after its kill; stopped reading")
                    break
                on_timeout(attempts)
                attempts += 1
                deadline = time.monotonic() + KILL_GRACE_S
                continue
            if not poller.poll(math.ceil(wait * 1000)):
                continue
            chunk = raw.recv(65536)
            if not chunk:
                break
            buf += chunk
            while len(buf) >= 8:
                size = int.from_bytes(buf[4:8], "big")
                if len(buf) < 8 + size:
                    break
                (err if buf[0] == 2 else out).feed(bytes(buf[8 : 8 + size]))
                del buf[: 8 + size]
    finally:
        sock.close()
    return attempts > 0


def exec_capped(
    api: Any, container_id: str, argv: list[str], *, user: str, env: dict[str, str], timeout: float, limit: int,
    on_timeout: Callable[[int], None],
) -> ExecResult:  # fmt: skip
    """``docker exec`` with capped output and a deadline. Raises ``SandboxError`` if the engine
    refuses (container gone, engine down) or records no exit code for a command that finished."""
    import docker

    start = time.monotonic()
    out, err = CappedBuffer(limit), CappedBuffer(limit)
    try:
        created = api.exec_create(container_id, argv, stdout=True, stderr=True, user=user, environment=env)
        exec_id = created["Id"]
        sock = api.exec_start(exec_id, socket=True)
        timed_out = read_frames(sock, out, err, start + timeout, on_timeout)
        code = exit_code(api, exec_id, TIMED_OUT_EXIT_CODE_WAIT_S if timed_out else EXIT_CODE_WAIT_S)
    except docker.errors.APIError as e:
        raise SandboxError(f"the Docker engine failed to run a command in {container_id[:12]}: {e}") from e
    if code is None and not timed_out:
        raise SandboxError(
            f"the Docker engine recorded no exit code for a finished command in {container_id[:12]} "
            f"within {EXIT_CODE_WAIT_S:.0f} s; the engine is overloaded or failing: see its log"
        )
    return ExecResult(
        exit_code=137 if code is None else code,
        stdout=out.text(),
        stderr=err.text(),
        timed_out=timed_out,
        duration_s=time.monotonic() - start,
        truncated=out.truncated or err.truncated,
    )


def exit_code(api: Any, exec_id: str, wait_s: float) -> int | None:
    """The exit code the engine recorded for an exec whose output stream closed, asking again with
    growing pauses for up to ``wait_s`` seconds: the stream can close well before the engine
    records the exit (it reports the exec running, or stopped without a code, meanwhile). None if
    no code appeared in time."""
    deadline = time.monotonic() + wait_s
    pause = 0.005
    while True:
        info = api.exec_inspect(exec_id)
        if not info.get("Running") and info.get("ExitCode") is not None:
            return info["ExitCode"]
        if time.monotonic() >= deadline:
            return None
        time.sleep(pause)
        pause = min(2 * pause, 0.1)

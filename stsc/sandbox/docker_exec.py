"""``docker exec`` with a deadline and capped output, without threads: the attach stream is read
from its socket with ``poll`` and demultiplexed here (8-byte frame headers: stream, size). And
killing what finished commands left running in a container."""

from __future__ import annotations

import logging
import math
import select
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stsc.errors import SandboxError
from stsc.sandbox.base import ExecResult
from stsc.sandbox.common import CappedBuffer, read_small_file

log = logging.getLogger(__name__)

KILL_GRACE_S = 3.0  # after each timeout action: time for the output stream to close
# How long the engine may take to record the exit code of a command whose output stream closed
# (seconds): it records the exit apart from closing the stream, late when it is busy.
EXIT_CODE_WAIT_S = 10.0
TIMED_OUT_EXIT_CODE_WAIT_S = 0.5  # a timed-out command may still be dying; it reports 137 then
STRAY_CHECK_PAUSES_S = (0.0, 0.002, 0.005, 0.01)  # before each look for processes a command left
# Kills what finished commands left in a container: every process but those of a session led by a
# process whose parent is outside the container (ppid 0): the init's session (init and the keeper)
# and the sessions of running commands (`docker exec` starts each in a new session). A process
# cannot join a session it was not born in, so no leftover can hide in a live one. Builtins only,
# to run at the process limit; exits 1 when processes survive ten rounds.
STRAY_KILLER = r"""for round in 1 2 3 4 5 6 7 8 9 10; do
  live=" " found=
  for d in /proc/[0-9]*; do
    { read -r s < "$d/stat"; } 2>/dev/null || continue
    s=${s##*") "}; set -- $s
    [ "$2" = 0 ] && live="$live$4 "
  done
  for d in /proc/[0-9]*; do
    { read -r s < "$d/stat"; } 2>/dev/null || continue
    s=${s##*") "}; set -- $s
    case "$1:$live" in Z:* | *" $4 "*) continue ;; esac
    kill -STOP "${d#/proc/}" 2>/dev/null; found="$found ${d#/proc/}"
  done
  [ -z "$found" ] && exit 0
  kill -9 $found 2>/dev/null
done
exit 1"""


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


def kill_strays(api: Any, container_id: str, user: str) -> bool:
    """Run ``STRAY_KILLER`` in the container as ``user``; returns whether it killed them all. The
    engine's ``APIError`` passes (409 when the container is not running)."""
    exec_id = api.exec_create(container_id, ["bash", "-c", STRAY_KILLER], user=user)["Id"]
    api.exec_start(exec_id)
    return exit_code(api, exec_id, EXIT_CODE_WAIT_S) == 0


def init_pid_on_host(api: Any, container_id: str) -> int | None:
    """The process id of the container's init in this machine's /proc; None when the engine's
    processes are not there (a remote engine, or stsc in a container of its own) or it is gone."""
    import docker

    try:
        pid = api.inspect_container(container_id)["State"]["Pid"]
    except docker.errors.APIError:
        return None
    return pid if pid and _in_container(pid, container_id) else None


def nothing_left(container_id: str, init_pid: int | None) -> bool:
    """Whether this machine's /proc shows that no command left a process in the container: its
    init has one child (the keeper; none once a command killed it, which stops the container) and
    that child none. False when it cannot tell. Processes a command's wrapper killed may take
    milliseconds to die and leave the init: it looks again."""
    if init_pid is None:
        return False
    for pause in STRAY_CHECK_PAUSES_S:
        time.sleep(pause)
        if not _in_container(init_pid, container_id):  # restarted by someone else, or gone
            return False
        children = _children(init_pid)
        if children is not None and len(children) <= 1 and all(_children(c) == [] for c in children):
            return True
    return False


def _in_container(pid: int, container_id: str) -> bool:
    return container_id in (read_small_file(Path(f"/proc/{pid}/cgroup")) or "")


def _children(pid: int) -> list[int] | None:
    listing = read_small_file(Path(f"/proc/{pid}/task/{pid}/children"))
    return None if listing is None else [int(p) for p in listing.split()]

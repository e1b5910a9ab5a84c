"""Local backend: commands run as processes of this machine.

Every command starts in a new session; a timeout kills the whole session (with bwrap, the whole
PID namespace), and so does closing the sandbox while the command runs. Each process gets rlimits:
address space (``memory_mb``), processes (``pids_limit`` above what the command's user runs when it
starts; without root, bwrap gives each command a user namespace, whose processes Linux 5.14+ counts
apart: there the limit is ``pids_limit`` itself), open files (``nofile``) and, optionally, CPU time. The environment is rebuilt
from an allowlist. ``python`` resolves to ``cfg.python`` (default: the interpreter running stsc, so
tasks see the same numpy/pandas/scikit-learn).

With bubblewrap (``isolation: auto|bwrap``) each command also gets its own network namespace
(loopback only, unless ``network: true``), PID and IPC namespaces, and a filesystem made of the
host's system folders and Python read-only plus the sandbox's home (with the workspace) and /tmp
writable; the rest of the host (home folders, the store, other tasks' private files) is absent.
When stsc runs as root, commands run as ``cfg.user`` with no capabilities. With ``gpus`` set, the
NVIDIA device nodes and /sys are passed in (``CUDA_VISIBLE_DEVICES`` narrows them) and the
address-space limit is dropped. Without bubblewrap the commands are *not* isolated: a warning says
so each time a factory is created.
"""

from __future__ import annotations

import functools
import glob
import logging
import os
import platform
import re
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from stsc.config import SandboxConfig
from stsc.errors import ConfigError
from stsc.sandbox.base import ExecResult
from stsc.sandbox.common import (
    CappedBuffer,
    base_env,
    copy_workspace,
    exit_code_of,
    hand_over,
    new_layout,
    parse_user,
    sweep_folders,
    wrapper_script,
)
from stsc.sandbox.core import HostBoundSandbox

log = logging.getLogger(__name__)

SYSTEM_DIRS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
SHIM_DIR = "/opt/stsc/bin"
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
_DRAIN_GRACE_S = 1.0  # after the command exits: time for leftover writers to die before we stop reading
UNISOLATED_WARNING = (
    "sandbox isolation is OFF: commands run as ordinary processes of this machine with its network "
    "and files (only rlimits and a scrubbed environment apply). Install bubblewrap (`apt-get install "
    "bubblewrap`) for the local backend or use sandbox=docker."
)


# --------------------------------------------------------------------------------------------------
# Process runner


def kill_session(sid: int) -> None:
    """SIGKILL every process of session ``sid`` (its process group and any subgroups)."""
    try:
        os.killpg(sid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[4]) == sid:
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            continue


class Sessions:
    """The sessions of the commands running in one sandbox; ``kill_all`` (on close) kills them and
    every session registered after it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: set[int] = set()
        self._killed = False

    def add(self, sid: int) -> None:
        with self._lock:
            if not self._killed:
                self._ids.add(sid)
                return
        kill_session(sid)

    def discard(self, sid: int) -> None:
        with self._lock:
            self._ids.discard(sid)

    def kill_all(self) -> None:
        with self._lock:
            self._killed = True
            for sid in self._ids:
                kill_session(sid)


def run_process(
    argv: list[str],
    *,
    env: dict[str, str],
    cwd: str,
    timeout: float,
    limit: int,
    sessions: Sessions | None = None,
    **popen: object,
) -> ExecResult:
    """Run ``argv`` in a new session with stdout/stderr each capped at ``limit`` bytes. At the
    timeout, or if this call is interrupted (Ctrl-C), the session is killed. After the command
    exits its session is killed too, so background processes do not outlive it. ``sessions``
    holds the session while it runs, so that closing its sandbox kills it."""
    start = time.monotonic()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=cwd,
        start_new_session=True,
        **popen,  # type: ignore[arg-type]
    )
    out, err = CappedBuffer(limit), CappedBuffer(limit)
    timed_out = False
    try:
        if sessions is not None:
            sessions.add(proc.pid)
        timed_out = _pump(proc, out, err, start + timeout)
    finally:
        if proc.poll() is None:
            kill_session(proc.pid)
        if sessions is not None:  # before the wait: once reaped, the id may name another process
            sessions.discard(proc.pid)
        proc.wait()
    return ExecResult(
        exit_code=exit_code_of(proc.returncode),
        stdout=out.text(),
        stderr=err.text(),
        timed_out=timed_out,
        duration_s=time.monotonic() - start,
        truncated=out.truncated or err.truncated,
    )


def _pump(proc: subprocess.Popen, out: CappedBuffer, err: CappedBuffer, deadline: float) -> bool:
    """Read both pipes until they close; kill the session at ``deadline``. Returns timed_out."""
    assert proc.stdout is not None and proc.stderr is not None
    pidfd = os.pidfd_open(proc.pid)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, out)
    sel.register(proc.stderr, selectors.EVENT_READ, err)
    sel.register(pidfd, selectors.EVENT_READ, None)
    open_pipes, timed_out, exited_at, strays_killed = 2, False, None, False
    try:
        while open_pipes or exited_at is None:
            now = time.monotonic()
            if exited_at is None:
                if now >= deadline and not timed_out:
                    timed_out = True
                    kill_session(proc.pid)
                wait = 0.1 if timed_out else deadline - now
            else:
                # Writers that left the process group still hold the pipes: kill the session, then give up.
                if now - exited_at > _DRAIN_GRACE_S and not strays_killed:
                    strays_killed = True
                    kill_session(proc.pid)
                if now - exited_at > 2 * _DRAIN_GRACE_S:
                    log.warning(
                        "processes that escaped the command's session hold its output; stopped reading"
                    )
                    break
                wait = 0.1
            for key, _ in sel.select(timeout=max(0.0, wait)):
                if key.data is None:
                    sel.unregister(pidfd)
                    exited_at = time.monotonic()
                    # The leader is a zombie until reaped, so its group id cannot be reused yet.
                    _killpg_quiet(proc.pid)
                    continue
                chunk = os.read(key.fd, 65536)
                if chunk:
                    key.data.feed(chunk)
                else:
                    sel.unregister(key.fileobj)
                    open_pipes -= 1
    finally:
        sel.close()
        os.close(pidfd)
        proc.stdout.close()
        proc.stderr.close()
    return timed_out


def _killpg_quiet(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# --------------------------------------------------------------------------------------------------
# What a command runs under


@dataclass(frozen=True)
class LocalPlan:
    """Decided once per factory: isolation, identity, interpreter and the folders to expose."""

    bwrap: str | None  # bwrap executable, or None when unisolated
    privileged: bool  # stsc runs as root: bwrap drops to uid:gid itself
    uid: int
    gid: int
    python: str  # the interpreter `python` runs
    shim: bool  # its folder has no `python` of its own: link one from the sandbox's bin/
    ro_dirs: list[str] = field(default_factory=list)  # extra host folders mounted read-only
    devices: list[str] = field(default_factory=list)  # host GPU device nodes passed through
    # whose processes the process limit must count (see ``rlimit_prologue``); None: nobody's
    counted_uid: int | None = None


def make_plan(cfg: SandboxConfig) -> LocalPlan:
    """Resolve ``isolation`` and the interpreter; raises ``ConfigError`` for a missing bwrap or python."""
    bwrap = shutil.which("bwrap")
    if cfg.isolation == "bwrap" and bwrap is None:
        raise ConfigError("sandbox.isolation=bwrap but bwrap is not installed (apt-get install bubblewrap)")
    if cfg.isolation == "none" or bwrap is None:
        log.warning(UNISOLATED_WARNING)
        bwrap = None
    python = cfg.python or sys.executable
    if not os.access(python, os.X_OK):
        raise ConfigError(f"sandbox.python={python!r} is not an executable interpreter")
    venv_root = Path(python).parent.parent
    real_prefix = Path(os.path.realpath(python)).parent.parent
    privileged = bwrap is not None and os.geteuid() == 0
    uid, gid = parse_user(cfg.user) if privileged else (os.getuid(), os.getgid())
    ro_dirs = [str(real_prefix)]
    if (venv_root / "pyvenv.cfg").exists():
        ro_dirs.append(str(venv_root))
    own = shutil.which("python", path=str(Path(python).parent))
    shim = own is None or os.path.realpath(own) != os.path.realpath(python)
    devices = sorted(glob.glob("/dev/nvidia*")) if cfg.gpus else []
    if cfg.gpus and not devices:
        log.warning("sandbox.gpus=%r but this machine has no NVIDIA device nodes (/dev/nvidia*)", cfg.gpus)
    # A command's processes count against RLIMIT_NPROC with every process of its user. Root is
    # exempt from it; in a user namespace of its own (bwrap without root) a command's processes
    # count apart from the host's on Linux 5.14 and later.
    own_namespace = bwrap is not None and not privileged and per_namespace_nproc()
    counted = None if uid == 0 or own_namespace else uid
    return LocalPlan(bwrap, privileged, uid, gid, python, shim, ro_dirs, devices, counted)


def per_namespace_nproc(release: str | None = None) -> bool:
    """Whether this kernel counts RLIMIT_NPROC per user namespace (Linux 5.14 and later)."""
    match = re.match(r"(\d+)\.(\d+)", release or platform.release())
    return match is not None and (int(match[1]), int(match[2])) >= (5, 14)


def count_tasks(uid: int) -> int:
    """Threads currently owned by ``uid`` (what RLIMIT_NPROC counts).

    The owner of ``/proc/<pid>`` is the process's effective uid: one ``stat`` per process, and the
    thread count (``/proc/<pid>/stat`` field 20) is read only for processes of ``uid``."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            with open(f"{entry.path}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            total += int(fields[17])
        except (OSError, ValueError, IndexError):
            continue
    return total


def last_pid() -> int | None:
    """The process id most recently handed out in this PID namespace (None where unreadable)."""
    try:
        with open("/proc/sys/kernel/ns_last_pid", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


class TaskCounter:
    """An upper bound on ``count_tasks(uid)`` now, cheap enough to take for every command.

    A count reads every entry of ``/proc``: a few hundred system calls, each letting another thread
    take the interpreter; with dozens of episodes starting commands, one count per command was
    most of the local backend's cost per step. So a count is reused, plus the number of process
    ids handed out since it began: every process started since then, of any user, took one, so
    the sum never falls short of what the user runs now (it may exceed it by the other users'
    new processes and those that ended). A new count is taken when the last one is older than
    ``max_age_s`` or more than ``max_slack`` ids were handed out since. (A process that changed
    to ``uid`` since without starting a new one is missed: a command's own shell, in the moment
    between its sandbox starting and the user switch.)"""

    def __init__(self, uid: int, *, max_age_s: float = 0.1, max_slack: int = 64):
        self.uid, self.max_age_s, self.max_slack = uid, max_age_s, max_slack
        self._lock = threading.Lock()
        self._count: tuple[int, int, float] | None = None  # (tasks, last pid before, monotonic time)

    def __call__(self) -> int:
        with self._lock:
            pid = last_pid()
            if pid is None:
                return count_tasks(self.uid)
            if self._count is not None:
                tasks, before, taken = self._count
                slack = pid - before  # negative once the ids wrapped around
                if 0 <= slack <= self.max_slack and time.monotonic() - taken < self.max_age_s:
                    return tasks + slack
            self._count = (count_tasks(self.uid), pid, time.monotonic())
            return self._count[0]


@functools.cache
def task_counter(uid: int) -> TaskCounter:
    """The process-wide counter for ``uid`` (every sandbox of that user shares it)."""
    return TaskCounter(uid)


def rlimit_prologue(cfg: SandboxConfig, counted_uid: int | None) -> str:
    """``ulimit`` lines for one command, each clamped to this process's hard limit. The process
    limit is ``pids_limit`` above what ``counted_uid`` runs now (see ``LocalPlan.counted_uid``)."""
    others = 0 if counted_uid is None else task_counter(counted_uid)()
    wanted = {
        "-n": (resource.RLIMIT_NOFILE, cfg.nofile, 1),
        "-u": (resource.RLIMIT_NPROC, cfg.pids_limit + others, 1),
    }
    if not cfg.gpus:  # the CUDA driver reserves far more address space than any limit worth setting
        wanted["-v"] = (resource.RLIMIT_AS, cfg.memory_mb * 1024, 1024)
    if cfg.cpu_time_s:
        wanted["-t"] = (resource.RLIMIT_CPU, cfg.cpu_time_s, 1)
    if cfg.max_file_mb is not None:
        wanted["-f"] = (resource.RLIMIT_FSIZE, cfg.max_file_mb * 1024, 1024)  # bash counts 1 KiB blocks
    parts = []
    for flag, (kind, value, unit) in wanted.items():
        hard = resource.getrlimit(kind)[1]
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard // unit)
        parts.append(f"ulimit {flag} {value}")
    return " && ".join(parts) + " || exit 125"


def _ancestors(path: str) -> list[str]:
    parts = Path(path).parts[1:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def bwrap_argv(
    plan: LocalPlan, network: bool, shm_bytes: int, binds: list[tuple[str, str, str]]
) -> list[str]:
    """The bwrap command line before ``--``. ``binds``: (option, host path, sandbox path)."""
    assert plan.bwrap is not None
    argv = [plan.bwrap, "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    argv += ["--unshare-cgroup-try", "--hostname", "sandbox"]
    if not network:
        argv.append("--unshare-net")
    if plan.privileged:
        argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        argv.append("--unshare-user")
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    argv += ["--perms", "1777", "--size", str(shm_bytes), "--tmpfs", "/dev/shm"]
    for device in plan.devices:
        argv += ["--dev-bind", device, device]
    if plan.devices:
        argv += ["--ro-bind", "/sys", "/sys"]  # the CUDA driver reads PCI topology there
    made = {"/", *SYSTEM_DIRS}
    # The interpreter's folders go last: a venv under /tmp (a CI checkout) must stay visible above
    # the sandbox's own /tmp.
    for option, host, inside in [*binds, *(("--ro-bind", d, d) for d in plan.ro_dirs)]:
        if any(inside == d or inside.startswith(d + "/") for d in ("/usr", "/etc")):
            continue
        for parent in _ancestors(inside):
            if parent not in made:
                argv += ["--perms", "0755", "--dir", parent]
                made.add(parent)
        argv += [option, host, inside]
        made.add(inside)
    return argv


# --------------------------------------------------------------------------------------------------
# Sandbox and factory


class LocalSandbox(HostBoundSandbox):
    """A sandbox made of a host folder; each command is a fresh (optionally bwrap-isolated) process."""

    def __init__(self, cfg: SandboxConfig, plan: LocalPlan, workspace: Path, label: str):
        layout = new_layout(cfg.workdir, isolated=plan.bwrap is not None)
        self._sessions = Sessions()
        super().__init__(cfg, layout, label, self._sessions.kill_all)
        self.uid, self.gid = plan.uid, plan.gid
        self.plan = plan
        try:
            copy_workspace(workspace, layout)
            if plan.privileged:
                hand_over([layout.home, layout.tmp], plan.uid, plan.gid)
        except BaseException:
            self.close()
            raise
        head = str(Path(plan.python).parent)
        if plan.shim:
            (layout.root / "bin").mkdir()
            for name in ("python", "python3"):
                (layout.root / "bin" / name).symlink_to(plan.python)
            head = SHIM_DIR if plan.bwrap else str(layout.root / "bin")
        path = f"{head}:{SYSTEM_PATH}"
        self._env = base_env(
            cfg.env_allowlist, cfg.cpus, path=path, home=layout.inside_home, tmpdir=layout.inside_tmp
        )
        if cfg.gpus and cfg.gpus != "all":
            self._env["CUDA_VISIBLE_DEVICES"] = cfg.gpus.replace(" ", "")
        self._prefixes = {False: self._prefix(False), True: self._prefix(True)}

    def _run(
        self, mode: str, args: list[str], timeout: float, cwd: str, env: dict[str, str], *, evaluation: bool
    ) -> ExecResult:
        full_env = {**self._env, **env}
        # Counted per command: other sandboxes of the same user start and end processes meanwhile.
        script = wrapper_script(mode, rlimit_prologue(self.cfg, self.plan.counted_uid), env_names=full_env)
        argv = [*self._prefixes[evaluation], "bash", "-c", script, "stsc", cwd, *args]
        popen_cwd = "/" if self.plan.bwrap else str(self.layout.root)
        limit = self.cfg.output_limit_bytes
        return run_process(
            argv, env=full_env, cwd=popen_cwd, timeout=timeout, limit=limit, sessions=self._sessions
        )

    def _prefix(self, evaluation: bool) -> list[str]:
        """What a command runs under: bwrap (and setpriv when root) or nothing."""
        layout, plan = self.layout, self.plan
        if plan.bwrap is None:
            return []
        binds = [
            ("--bind", str(layout.home), layout.inside_home),
            ("--bind", str(layout.tmp), layout.inside_tmp),
        ]
        if plan.shim:
            binds.append(("--ro-bind", str(layout.root / "bin"), SHIM_DIR))
        if evaluation:
            binds.append(("--ro-bind", str(layout.workspace), layout.inside_workspace))
            binds.append(("--ro-bind", str(layout.private), layout.inside_private))
        shm_bytes = self.cfg.memory_mb * 1024 * 1024
        argv = bwrap_argv(plan, self.cfg.network, shm_bytes, binds) + ["--chdir", "/", "--"]
        if plan.privileged:
            ids = [f"--reuid={plan.uid}", f"--regid={plan.gid}", "--clear-groups", "--inh-caps=-all"]
            argv += ["setpriv", *ids, "--"]
        return argv


class LocalSandboxFactory:
    """Starts ``LocalSandbox``es. Creating one sweeps folders of sandboxes whose process died."""

    def __init__(self, cfg: SandboxConfig):
        self.cfg = cfg
        self.plan = make_plan(cfg)
        sweep_folders(cfg.workdir)

    def start(self, workspace: Path, label: str) -> LocalSandbox:
        return LocalSandbox(self.cfg, self.plan, Path(workspace), label)

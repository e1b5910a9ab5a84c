"""The behaviour both backends share: argument checks, file copies through the host folder, the
evaluation step, the persistent shell and closing. A backend supplies ``_run`` (one wrapped command
inside the sandbox) and a teardown callable (what to remove besides the host folder).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import uuid
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from stsc.config import SandboxConfig
from stsc.errors import SandboxError, SandboxPathError
from stsc.sandbox.base import ExecResult, Sandbox, ShellSession
from stsc.sandbox.common import (
    STATE_DIR,
    Layout,
    hand_over,
    parse_user,
    read_small_file,
    remove_tree,
    stage_private,
)

log = logging.getLogger(__name__)

PRIVATE_ENV = "STSC_PRIVATE_DIR"
_COPY_TIMEOUT_S = 600.0  # copies done by the sandbox itself (paths outside its home and /tmp)


class HostBoundSandbox(ABC):
    """A sandbox whose home and /tmp are host folders mounted in (see ``stsc.sandbox.common``).

    ``exec`` runs argv lists directly and strings with bash. ``put``/``get`` copy on the host side
    within the sandbox's home and /tmp (put files belong to the sandbox user; symlinks inside folders
    are copied as links); any other path, or one a symlink leads elsewhere, is copied by the sandbox
    user inside the sandbox, so the host only ever reads or writes what the sandbox could. Paths the
    sandbox cannot use raise ``SandboxPathError``; every method raises ``SandboxError`` once the
    sandbox is closed.
    """

    def __init__(self, cfg: SandboxConfig, layout: Layout, label: str, teardown: Callable[[], None]):
        self.cfg = cfg
        self.layout = layout
        self.label = label
        self.uid, self.gid = parse_user(cfg.user)
        self._closed = False
        self._close_lock = threading.Lock()  # a second close() waits for the first to finish
        self._shells = 0
        # Runs on close(), on garbage collection and at interpreter exit, whichever comes first.
        self._finalizer = weakref.finalize(self, _teardown_then_remove, teardown, layout.root)

    # -- protocol ---------------------------------------------------------------------------------

    @property
    def workspace(self) -> str:
        return self.layout.inside_workspace

    @property
    def private_path(self) -> str:
        return self.layout.inside_private

    def exec(
        self,
        command: str | list[str],
        timeout: float,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
    ) -> ExecResult:
        self._check_open()
        mode, args = ("eval", [command]) if isinstance(command, str) else ("argv", list(command))
        if not args or (mode == "argv" and not args[0]):
            raise ValueError("exec needs a non-empty command")
        return self._run(mode, args, timeout, self._inside_dir(cwd), dict(env or {}), evaluation=False)

    def shell(self) -> ShellSession:
        self._check_open()
        self._shells += 1
        return ReplayShell(self, self._shells)

    def put(self, src: Path, dest: str) -> None:
        self._check_open()
        src = Path(src)
        if not src.exists():
            raise SandboxPathError(f"put: {src} does not exist on the host")
        target = self.layout.to_host(dest)
        if target is None:
            self._put_via_sandbox(src, dest)
            return
        target = target.resolve()  # within the sandbox's folders (checked by to_host)
        created = _missing_ancestor(target)
        _copy(src, target)
        hand_over([created], self.uid, self.gid)

    def get(self, src: str, dest: Path) -> None:
        self._check_open()
        source = self.layout.to_host(src)
        if source is None:
            self._get_via_sandbox(src, Path(dest))
            return
        if not source.exists():
            raise SandboxPathError(f"get: {src} does not exist in the sandbox")
        _copy(source.resolve(), Path(dest))

    def _get_via_sandbox(self, src: str, dest: Path) -> None:
        """Copy a path outside the host-bound folders by letting the sandbox user copy it to /tmp:
        the host only ever sees what the sandbox can read."""
        with self._transfer() as (inside, host):
            done = self.exec(["cp", "-RH", "--", self.layout.inside(src), inside], timeout=_COPY_TIMEOUT_S)
            if not done.ok:
                raise SandboxPathError(f"get: cannot read {src} in the sandbox: {done.stderr.strip()}")
            _copy(host, dest)

    def _put_via_sandbox(self, src: Path, dest: str) -> None:
        with self._transfer() as (inside, host):
            _copy(src, host)
            hand_over([host], self.uid, self.gid)
            done = self.exec(["cp", "-RT", "--", inside, self.layout.inside(dest)], timeout=_COPY_TIMEOUT_S)
            if not done.ok:
                raise SandboxPathError(f"put: cannot write {dest} in the sandbox: {done.stderr.strip()}")

    @contextlib.contextmanager
    def _transfer(self) -> Iterator[tuple[str, Path]]:
        """A fresh transfer path under the sandbox's /tmp: (sandbox path, host path)."""
        name = f"{STATE_DIR}/xfer-{uuid.uuid4().hex[:12]}"
        folder = self.layout.tmp / STATE_DIR
        if folder.is_symlink() or not folder.resolve().is_relative_to(self.layout.tmp.resolve()):
            raise SandboxPathError(
                f"the sandbox replaced {self.layout.inside_tmp}/{STATE_DIR}; cannot copy files"
            )
        folder.mkdir(exist_ok=True)
        hand_over([folder], self.uid, self.gid)
        host = self.layout.tmp / name
        try:
            yield f"{self.layout.inside_tmp}/{name}", host
        finally:
            if host.is_dir() and not host.is_symlink():
                remove_tree(host)
            else:
                host.unlink(missing_ok=True)

    def evaluate(
        self,
        command: str | list[str],
        private_dir: Path | None,
        timeout: float,
        env: Mapping[str, str] | None = None,
    ) -> ExecResult:
        self._check_open()
        mode, args = ("eval", [command]) if isinstance(command, str) else ("argv", list(command))
        stage_private(Path(private_dir) if private_dir else None, self.layout)
        # Python must not run code the agent left in its home (user site-packages, usercustomize).
        env = {**dict(env or {}), "PYTHONNOUSERSITE": "1"}
        if private_dir:
            env[PRIVATE_ENV] = self.private_path
        try:
            return self._run(mode, args, timeout, self.workspace, env, evaluation=True)
        finally:
            remove_tree(self.layout.private)

    def close(self) -> None:
        self._closed = True
        with self._close_lock:
            self._finalizer()

    def __enter__(self) -> Sandbox:
        return self  # type: ignore[return-value]

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- backend hooks ----------------------------------------------------------------------------

    @abstractmethod
    def _run(
        self, mode: str, args: list[str], timeout: float, cwd: str, env: dict[str, str], *, evaluation: bool
    ) -> ExecResult:
        """Run ``wrapper_script(mode)`` with ``cwd`` and ``args`` (see ``common.wrapper_script``).
        ``env`` overrides the base environment. ``evaluation`` mounts ``layout.private`` at
        ``private_path`` and the workspace read-only, for this command only."""

    # -- helpers ----------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise SandboxError("the sandbox is closed")

    def _inside_dir(self, cwd: str | None) -> str:
        if cwd is None:
            return self.workspace
        return cwd if cwd.startswith("/") else f"{self.workspace}/{cwd}"


def _teardown_then_remove(teardown: Callable[[], None], root: Path) -> None:
    try:
        teardown()
    finally:
        remove_tree(root)


def _copy(src: Path, dest: Path) -> None:
    """Copy a file or a folder (symlinks inside copied as links), merging into an existing folder."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir() and not src.is_symlink():
        shutil.copytree(src, dest, symlinks=True, dirs_exist_ok=True)
    else:
        shutil.copy2(src, dest, follow_symlinks=False)


def _missing_ancestor(path: Path) -> Path:
    """The highest of ``path`` and its ancestors that does not exist yet (``path`` if it exists)."""
    top = path
    while not top.parent.exists():
        top = top.parent
    return top


class ReplayShell:
    """The agent's long-lived shell. Each ``run`` is a fresh bash that restores the exported
    variables, functions, aliases and directory the previous command left, runs the command in that
    shell and saves them again. A timed-out command is killed with all its processes and the shell
    continues from the state before it, so the session survives every timeout. Plain (unexported)
    variables, shell options and EXIT traps last for one command only (an EXIT trap runs when its
    command ends, after the state is saved).
    """

    def __init__(self, sandbox: HostBoundSandbox, index: int):
        self._sandbox = sandbox
        name = f"{STATE_DIR}/shell-{index}"
        self._state_inside = f"{sandbox.layout.inside_tmp}/{name}"
        self._state_host = sandbox.layout.tmp / name

    def run(self, command: str, timeout: float) -> ExecResult:
        self._sandbox._check_open()
        sb = self._sandbox
        return sb._run("session", [self._state_inside, command], timeout, sb.workspace, {}, evaluation=False)

    @property
    def cwd(self) -> str:
        return read_small_file(self._state_host.with_suffix(".cwd"), 4096) or self._sandbox.workspace

    def close(self) -> None:
        for suffix in (".env", ".cwd"):
            self._state_host.with_suffix(suffix).unlink(missing_ok=True)

"""The sandbox contract. Every backend (local process, Docker) implements it and passes the shared
conformance suite in ``tests/sandbox/``.

Contract:
- ``exec`` runs a command to completion or to its timeout. A failing command is a result with a
  non-zero ``exit_code``; a timed-out one has ``timed_out=True`` and its whole process tree killed.
  Only infrastructure failure raises (``SandboxError``).
- stdout/stderr are each capped at the backend's ``output_limit_bytes``; a cut stream ends with
  ``TRUNCATION_MARKER`` and ``truncated=True``.
- A command's processes do not outlive it: background processes it leaves are killed when it
  exits, and a timeout kills its whole process tree.
- Commands see the workspace (writable) and nothing private. ``evaluate`` runs one command with the
  task's private folder readable at ``private_path`` (and ``STSC_PRIVATE_DIR`` naming it) and the
  workspace read-only; agent commands never see that folder.
- The environment is rebuilt from an allowlist; names that look secret never pass.
- A ``ShellSession`` keeps environment variables and the current directory across ``run`` calls, as
  the agent's long-lived shell does.
- ``close`` is idempotent and always removes the sandbox; sandboxes are context managers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

TRUNCATION_MARKER = "\n[... output truncated by the sandbox ...]\n"
# Set by every scoring command: which test rows a score is for, "validate" (the public rows, whose
# score the agent sees) or "submit" (the final score, on the other rows). Evaluators without a
# public split ignore it.
SCORE_SPLIT_ENV = "STSC_SCORE_SPLIT"


@dataclass(frozen=True)
class ExecResult:
    """Outcome of one command. ``duration_s`` is wall time in seconds."""

    exit_code: int
    stdout: str
    stderr: str
    timed_out: bool = False
    duration_s: float = 0.0
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    @property
    def output(self) -> str:
        """stdout and stderr joined, as an agent would see them in a terminal."""
        if self.stdout and self.stderr:
            return self.stdout.rstrip("\n") + "\n" + self.stderr
        return self.stdout or self.stderr


@runtime_checkable
class ShellSession(Protocol):
    """A long-lived shell: ``cd`` and ``export`` persist across ``run`` calls."""

    def run(self, command: str, timeout: float) -> ExecResult: ...

    @property
    def cwd(self) -> str: ...

    def close(self) -> None: ...


@runtime_checkable
class Sandbox(Protocol):
    """One running sandbox around one task workspace."""

    @property
    def workspace(self) -> str:
        """Absolute path of the writable workspace *as seen by commands inside the sandbox*."""
        ...

    def exec(
        self,
        command: str | list[str],
        timeout: float,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
    ) -> ExecResult: ...

    def shell(self) -> ShellSession: ...

    def put(self, src: Path, dest: str) -> None:
        """Copy a host file or folder to ``dest`` (absolute, or relative to the workspace). Raises
        ``SandboxPathError`` when the sandbox user could not write ``dest``."""
        ...

    def get(self, src: str, dest: Path) -> None:
        """Copy a sandbox file or folder ``src`` (absolute, or relative to the workspace) to the host.
        Raises ``SandboxPathError`` when it is missing or the sandbox user could not read it."""
        ...

    def evaluate(
        self,
        command: str | list[str],
        private_dir: Path | None,
        timeout: float,
        env: Mapping[str, str] | None = None,
    ) -> ExecResult:
        """Run ``command`` in the workspace with ``private_dir`` readable at ``private_path`` for
        this command only; ``env`` adds variables to this command's environment (for example
        ``STSC_SCORE_SPLIT``)."""
        ...

    @property
    def private_path(self) -> str:
        """Where ``evaluate`` exposes the private folder inside the sandbox."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Sandbox: ...

    def __exit__(self, *exc: object) -> None: ...


class SandboxFactory(Protocol):
    """Starts sandboxes. ``label`` tags the sandbox with the run it belongs to (orphan clean-up)."""

    def start(self, workspace: Path, label: str) -> Sandbox:
        """Start a sandbox whose workspace is a copy of the host folder ``workspace``."""
        ...

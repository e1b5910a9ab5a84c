"""Sandboxes: where every model-written command and generated task script runs.

One protocol (``stsc.sandbox.base``), two backends chosen by ``sandbox.backend``:

- ``local`` (``stsc.sandbox.local``): processes of this machine, isolated with bubblewrap when it
  is installed; the embedded default and CI.
- ``docker`` (``stsc.sandbox.docker``): hardened containers of the task image built by
  ``python -m stsc.sandbox.image``; the backend for real runs and GPUs.

Usage::

    factory = make_factory(cfg.sandbox)
    with factory.start(task_dir / "workspace", label=run_id) as sb:
        sh = sb.shell()
        sh.run("cd data && export SPLIT=train", timeout=10)
        result = sb.evaluate(["python", "evaluate.py"], task_dir / "private", timeout=60)

Importing this package imports neither backend (the Docker SDK loads only for ``docker``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stsc.sandbox.base import TRUNCATION_MARKER, ExecResult, Sandbox, SandboxFactory, ShellSession

if TYPE_CHECKING:
    from stsc.config import SandboxConfig


def make_factory(cfg: SandboxConfig) -> SandboxFactory:
    """The factory of the configured backend. Creating it sweeps orphans of dead runs. Raises
    ``ConfigError`` for an unknown backend and ``SandboxError`` when the Docker engine or the task
    image is unavailable."""
    from stsc.errors import ConfigError

    if cfg.backend == "local":
        from stsc.sandbox.local import LocalSandboxFactory

        return LocalSandboxFactory(cfg)
    if cfg.backend == "docker":
        from stsc.sandbox.docker import DockerSandboxFactory

        return DockerSandboxFactory(cfg)
    raise ConfigError(f"sandbox.backend={cfg.backend!r} is not valid; choose one of ['local', 'docker']")


def sweep_orphans(cfg: SandboxConfig) -> int:
    """Remove sandboxes (folders, and containers for ``docker``) left by runs whose process is gone;
    returns how many were removed. Sandboxes of live runs and of other hosts are kept."""
    from stsc.sandbox.common import sweep_folders

    removed = 0
    if cfg.backend == "docker":  # first: it opens up the files the sandbox user left
        from stsc.sandbox.docker import connect, sweep_containers

        removed += sweep_containers(connect(cfg))
    return removed + sweep_folders(cfg.workdir)


__all__ = [
    "TRUNCATION_MARKER",
    "ExecResult",
    "Sandbox",
    "SandboxFactory",
    "ShellSession",
    "make_factory",
    "sweep_orphans",
]

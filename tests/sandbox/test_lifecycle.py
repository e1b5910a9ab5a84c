"""Sandboxes never leak: Ctrl-C removes them, and the sweep removes those of killed runs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import asdict
from pathlib import Path

from stsc.sandbox import sweep_orphans

REPO_ROOT = Path(__file__).resolve().parents[2]

RUNNER = """
import json, os, signal, sys
from pathlib import Path
from stsc.config import SandboxConfig
from stsc.sandbox import make_factory

cfg = SandboxConfig(**json.loads(sys.argv[1]))
with make_factory(cfg).start(Path(sys.argv[2]), sys.argv[3]) as sb:
    print(sb.layout.root, flush=True)
    if sys.argv[4] == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    sb.exec("echo started > started; sleep 60", timeout=120)
"""


def _spawn(cfg, workspace: Path, label: str, mode: str) -> tuple[subprocess.Popen, Path]:
    proc = subprocess.Popen(
        [sys.executable, "-c", RUNNER, json.dumps(asdict(cfg)), str(workspace), label, mode],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    root = Path(proc.stdout.readline().strip())
    assert root.is_dir()
    return proc, root


def _containers(label: str) -> list:
    from stsc.config import SandboxConfig
    from stsc.sandbox.docker import connect

    return connect(SandboxConfig(backend="docker")).containers.list(
        all=True, filters={"label": f"stsc.run={label}"}
    )


def test_ctrl_c_during_a_command_removes_the_sandbox(cfg, task_workspace, backend):
    label = f"ctrl-c-{uuid.uuid4().hex[:8]}"
    proc, root = _spawn(cfg, task_workspace, label, "wait")
    deadline = time.monotonic() + 60
    while not (root / "home" / "workspace" / "started").exists():
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) != 0
    assert not root.exists()
    if backend == "docker":
        assert _containers(label) == []


def test_the_sweep_removes_sandboxes_of_killed_runs_and_keeps_live_ones(cfg, task_workspace, backend, start):
    live = start()
    label = f"orphan-{uuid.uuid4().hex[:8]}"
    proc, root = _spawn(cfg, task_workspace, label, "die")
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert root.exists(), "a killed run leaves its sandbox behind"
    if backend == "docker":
        assert len(_containers(label)) == 1
    assert sweep_orphans(cfg) >= 1
    assert not root.exists()
    if backend == "docker":
        assert _containers(label) == []
    assert live.exec("echo live", timeout=30).stdout == "live\n"


def test_a_second_close_returns_only_once_the_sandbox_is_gone(cfg, task_workspace, monkeypatch):
    import threading

    from stsc.sandbox import core, make_factory

    removing = threading.Event()
    slow_remove = core.remove_tree

    def remove(path: Path) -> None:
        removing.set()
        time.sleep(0.5)  # a big workspace, a container being removed
        slow_remove(path)

    monkeypatch.setattr(core, "remove_tree", remove)
    sandbox = make_factory(cfg).start(task_workspace, "test-close")
    first = threading.Thread(target=sandbox.close)
    first.start()
    assert removing.wait(10)
    sandbox.close()  # e.g. the collector's close_all while the episode's own close runs
    assert not sandbox.layout.root.exists()
    first.join()


REMOVER = """
import os, sys
from pathlib import Path
from stsc.sandbox.common import remove_tree
if len(sys.argv) > 2:  # drop to that user (the test runs as root), all imports done
    os.setgid(int(sys.argv[2]))
    os.setuid(int(sys.argv[2]))
remove_tree(Path(sys.argv[1]))
"""


def test_a_sandbox_folder_with_folders_its_user_locked_is_removed(tmp_path):
    """A command may leave folders without any permission (chmod 000) or read-only: its user
    still removes the folder (root would not notice, so the removal runs as another user)."""
    import os
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="stsc-test-locked-"))  # a folder that user may enter
    uid = 4242 if os.geteuid() == 0 else None
    try:
        root = base / "sandbox"
        (root / "home" / "locked" / "deep").mkdir(parents=True)
        (root / "home" / "locked" / "deep" / "f.txt").write_text("x")
        (root / "home" / "read-only").mkdir()
        (root / "home" / "read-only" / "g.txt").write_text("y")
        if uid is not None:
            for path in [base, *base.rglob("*")]:
                os.chown(path, uid, uid)
        (root / "home" / "locked").chmod(0)
        (root / "home" / "read-only").chmod(0o500)
        extra = [str(uid)] if uid is not None else []
        done = subprocess.run([sys.executable, "-c", REMOVER, str(root), *extra], cwd=REPO_ROOT,
                              capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert not root.exists()
    finally:
        for path in base.rglob("*"):
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o700)
        shutil.rmtree(base)


def test_a_sandbox_folder_emptied_meanwhile_by_another_sweep_is_no_error(tmp_path, monkeypatch):
    import os

    from stsc.sandbox.common import remove_tree

    root = tmp_path / "sandbox"
    (root / "home" / "sub").mkdir(parents=True)
    for name in ("a", "b", "sub/c"):
        (root / "home" / name).write_text(name)
    unlink = os.unlink

    def removed_first_by_another(name, *, dir_fd=None):  # the other sweep wins every file
        unlink(name, dir_fd=dir_fd)
        raise FileNotFoundError(2, "No such file or directory", name)

    monkeypatch.setattr(os, "unlink", removed_first_by_another)
    remove_tree(root)
    assert not root.exists()
    remove_tree(root)  # gone already: nothing to do

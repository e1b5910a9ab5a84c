"""Local-backend specifics: the unisolated fallback warns and still honours the contract's
process rules; the environment scrubbing and the interpreter resolution."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from stsc.errors import ConfigError
from stsc.sandbox.common import scrub_env
from stsc.sandbox.local import UNISOLATED_WARNING, LocalSandboxFactory
from tests.sandbox.conftest import base_config


@pytest.fixture
def unisolated(tmp_path, task_workspace, caplog):
    cfg = base_config("local", tmp_path / "sandboxes")
    cfg.isolation = "none"
    with caplog.at_level(logging.WARNING, logger="stsc.sandbox.local"):
        factory = LocalSandboxFactory(cfg)
    assert UNISOLATED_WARNING in caplog.text
    sb = factory.start(task_workspace, "unisolated")
    yield sb
    sb.close()


def test_without_bwrap_the_backend_warns_and_keeps_the_process_rules(unisolated, private_dir):
    sb = unisolated
    assert sb.workspace.startswith(str(sb.layout.root))
    result = sb.exec("(while :; do date +%s%N > beat; sleep 0.1; done) & sleep 60", timeout=1)
    assert result.timed_out
    beat = sb.layout.to_host("beat").read_text()
    import time

    time.sleep(0.5)
    assert sb.layout.to_host("beat").read_text() == beat
    shell = sb.shell()
    shell.run("cd data; export A=1", timeout=30)
    assert shell.run('pwd; echo "$A"', timeout=30).stdout.splitlines() == [f"{sb.workspace}/data", "1"]
    scored = sb.evaluate('cat "$STSC_PRIVATE_DIR/answers.csv"', private_dir, timeout=60)
    assert scored.stdout == "id,label\n1,cat\n"
    assert not sb.layout.private.exists(), "the staged private files are removed after the step"


def test_isolation_bwrap_without_bwrap_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    cfg = base_config("local", tmp_path)
    cfg.isolation = "bwrap"
    with pytest.raises(ConfigError, match="bubblewrap"):
        LocalSandboxFactory(cfg)


def test_a_missing_interpreter_is_a_config_error(tmp_path):
    cfg = base_config("local", tmp_path)
    cfg.python = str(tmp_path / "no-python")
    with pytest.raises(ConfigError, match="sandbox.python"):
        LocalSandboxFactory(cfg)


def test_python_can_be_any_interpreter_even_outside_a_venv(tmp_path, task_workspace):
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    cfg = base_config("local", tmp_path / "sandboxes")
    cfg.python = str(base)
    with LocalSandboxFactory(cfg).start(task_workspace, "base-python") as sb:
        result = sb.exec(["python", "-c", "import sys; print(sys.prefix)"], timeout=60)
    assert result.stdout.strip() == sys.base_prefix


def test_the_environment_keeps_only_allowlisted_names_that_do_not_look_secret():
    host = {
        "LANG": "C.UTF-8",
        "LC_TIME": "C",
        "HF_TOKEN": "x",
        "OPENAI_API_KEY": "x",
        "DB_PASSWORD": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "PATH": "/host/bin",
        "HOME": "/root",
        "OTHER": "x",
    }
    allow = ["LANG", "LC_*", "HF_TOKEN", "*_KEY", "DB_PASSWORD", "PATH", "HOME"]
    assert scrub_env(host, allow) == {"LANG": "C.UTF-8", "LC_TIME": "C"}


def test_importing_the_sandbox_package_loads_no_backend():
    code = "import sys, stsc.sandbox; print(sorted(m for m in sys.modules if m.split('.')[0] == 'docker' or m.startswith('stsc.sandbox.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['stsc.sandbox.base']"


def _nvidia_smi(tmp_path, task_workspace, gpus: str | None):
    """``nvidia-smi -L`` in a local sandbox started with ``sandbox.gpus = gpus``."""
    import glob
    import shutil

    if not glob.glob("/dev/nvidia*") or shutil.which("nvidia-smi") is None:
        pytest.skip("no NVIDIA GPU (device nodes and nvidia-smi) on this machine")
    cfg = base_config("local", tmp_path / "sandboxes")
    cfg.gpus = gpus
    with LocalSandboxFactory(cfg).start(task_workspace, "gpu") as sb:
        return sb.exec("nvidia-smi -L", timeout=120)


@pytest.mark.gpu
def test_gpus_reach_commands_when_configured(tmp_path, task_workspace):
    result = _nvidia_smi(tmp_path, task_workspace, "all")
    assert result.ok and "GPU 0" in result.stdout, result


@pytest.mark.gpu
def test_gpus_stay_outside_isolated_commands_unless_configured(tmp_path, task_workspace):
    import shutil

    if shutil.which("bwrap") is None:
        pytest.skip("the local backend runs unisolated here: bubblewrap (bwrap) is not installed")
    result = _nvidia_smi(tmp_path, task_workspace, None)
    assert not result.ok, "without sandbox.gpus the GPU stays outside the sandbox"


def test_cpu_time_and_address_space_limits_apply_to_each_command(tmp_path, task_workspace):
    cfg = base_config("local", tmp_path / "sandboxes")
    cfg.cpu_time_s = 1
    with LocalSandboxFactory(cfg).start(task_workspace, "limits") as sb:
        assert sb.exec("ulimit -v; ulimit -t", timeout=30).stdout.split() == [str(cfg.memory_mb * 1024), "1"]
        spin = sb.exec("while :; do :; done", timeout=60)
    # SIGXCPU at the soft limit, SIGKILL at the hard one: either way the CPU limit stopped it.
    assert not spin.timed_out and spin.exit_code in (128 + 24, 128 + 9), spin
    assert spin.duration_s < 30


def test_an_unknown_backend_is_a_config_error():
    from stsc.config import SandboxConfig
    from stsc.sandbox import make_factory

    with pytest.raises(ConfigError, match="'local', 'docker'"):
        make_factory(SandboxConfig(backend="podman"))


def test_the_process_limit_leaves_room_beside_what_other_sandboxes_run_meanwhile(tmp_path, task_workspace):
    import threading
    import time
    from dataclasses import replace

    cfg = base_config("local", tmp_path / "sandboxes")
    quiet = LocalSandboxFactory(replace(cfg, pids_limit=8)).start(task_workspace, "quiet")
    busy = LocalSandboxFactory(cfg).start(task_workspace, "busy")  # the same sandbox user
    try:
        spawn = "for i in $(seq 30); do sleep 60 & done; echo up > up; wait"
        threading.Thread(target=busy.exec, args=(spawn, 90), daemon=True).start()
        deadline = time.monotonic() + 30
        while not (busy.layout.workspace / "up").exists():
            assert time.monotonic() < deadline, "the busy sandbox never started its processes"
            time.sleep(0.05)
        result = quiet.exec("for i in 1 2 3; do /bin/true; done; echo forked", timeout=10)
    finally:
        busy.close()
        quiet.close()
    assert result.ok and result.stdout == "forked\n", result


def test_the_process_count_is_reused_only_with_every_process_started_since_added(monkeypatch):
    """A reused count plus the process ids handed out since is never below the exact count."""
    import os

    from stsc.sandbox import local

    scans = []
    exact = local.count_tasks
    monkeypatch.setattr(local, "count_tasks", lambda uid: scans.append(uid) or exact(uid))
    uid = os.getuid()
    counter = local.TaskCounter(uid, max_age_s=60, max_slack=10_000)
    assert counter() >= 1 and len(scans) == 1
    sleepers = [subprocess.Popen(["sleep", "30"]) for _ in range(20)]
    try:
        bound = counter()
        assert len(scans) == 1, "a fresh count was taken although the last one could be reused"
        assert bound >= exact(uid), (bound, exact(uid))
        counter.max_slack = 5  # more than 5 ids since: count again
        counter()
        assert len(scans) == 2
    finally:
        for proc in sleepers:
            proc.kill()
            proc.wait()
    counter.max_age_s = 0.0  # too old: count again
    counter()
    assert len(scans) == 3


_UNPRIVILEGED_PROBE = r"""
import subprocess, sys, tempfile
from pathlib import Path
from stsc.config import SandboxConfig
from stsc.sandbox.local import LocalSandboxFactory

root = Path(tempfile.mkdtemp())
(root / "ws").mkdir()
forker = "import os, time\nn = 0\nwhile n < 40:\n    try:\n        pid = os.fork()\n    except OSError:\n        break\n    if pid == 0:\n        time.sleep(3)\n        os._exit(0)\n    n += 1\nprint(n)"
(root / "ws" / "forker.py").write_text(forker)
host = [subprocess.Popen(["sleep", "60"]) for _ in range(40)]  # the same user's processes outside
try:
    cfg = SandboxConfig(backend="local", isolation="bwrap", workdir=str(root / "sb"), pids_limit=16,
                        python=sys.argv[1])  # fmt: skip
    sb = LocalSandboxFactory(cfg).start(root / "ws", "probe")
    try:
        print(sb.exec("ulimit -u", timeout=30).stdout.strip())
        print(sb.exec("python forker.py", timeout=60).stdout.strip())
    finally:
        sb.close()
finally:
    for proc in host:
        proc.kill()
"""


def test_without_root_each_command_gets_pids_limit_processes_of_its_own(tmp_path):
    """bwrap without root puts each command in a user namespace, whose processes Linux counts
    apart: the limit is pids_limit itself, whatever else the user runs on the host."""
    import os
    import shutil

    from stsc.sandbox.local import per_namespace_nproc

    if shutil.which("bwrap") is None or not per_namespace_nproc():
        pytest.skip("needs bubblewrap and Linux 5.14+")
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
    # the commands need only the standard library: any interpreter that user may run will do
    candidates = (sys.executable, shutil.which("python3"), "/usr/bin/python3")
    python = next((p for p in candidates if p and os.path.exists(p) and _runs_as(prefix, p)), None)
    if python is None:
        pytest.skip("no Python interpreter an unprivileged user may run")
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for check in (
        ["bwrap", "--unshare-user", "--ro-bind", "/", "/", "true"],
        [sys.executable, "-c", "import stsc"],
    ):
        usable = subprocess.run([*prefix, *check], env=env, capture_output=True, text=True)
        if usable.returncode != 0:
            pytest.skip(f"an unprivileged user cannot run {check[0]} here: {usable.stderr.strip()[-200:]}")
    probe = subprocess.run([*prefix, sys.executable, "-c", _UNPRIVILEGED_PROBE, python], env=env,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    limit, forked = probe.stdout.split()
    assert limit == "16"  # not 16 above the user's 40+ host processes
    assert 5 <= int(forked) < 16  # room of its own, and a limit that holds


def _runs_as(prefix: list[str], python: str) -> bool:
    """Whether ``python`` passes the sandbox's own check (``os.access``) for the user ``prefix`` sets."""
    check = f"import os, sys; sys.exit(not os.access({python!r}, os.X_OK))"
    return subprocess.run([*prefix, python, "-c", check], capture_output=True).returncode == 0


def test_the_kernel_release_says_whether_process_limits_count_per_user_namespace():
    from stsc.sandbox.local import per_namespace_nproc

    assert (
        per_namespace_nproc("5.14.0-1-amd64") and per_namespace_nproc("6.1.0") and per_namespace_nproc("10.0")
    )
    assert (
        not per_namespace_nproc("5.13.19")
        and not per_namespace_nproc("4.19.0")
        and not per_namespace_nproc("x")
    )

"""Docker-only guarantees: the hardening flags the engine actually applied, labels, GPU requests, exit
codes, the orphan sweep, and processes that escape a command's session."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from stsc.sandbox.docker import LABEL_RUN, connect, gpu_requests
from stsc.sandbox.docker_exec import EXIT_CODE_WAIT_S, exit_code
from tests.sandbox.conftest import base_config, require_docker

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def docker_cfg(tmp_path):
    require_docker()
    return base_config("docker", tmp_path)


def _inspect(sb) -> dict:
    return connect(sb.cfg).api.inspect_container(sb.container_id)


@pytest.mark.docker
def test_containers_run_hardened_with_the_configured_limits(docker_cfg, task_workspace):
    from stsc.sandbox import make_factory

    with make_factory(docker_cfg).start(task_workspace, "hardening") as sb:
        info = _inspect(sb)
        host = info["HostConfig"]
        assert host["NetworkMode"] == "none"
        assert host["CapDrop"] == ["ALL"]
        assert "no-new-privileges:true" in host["SecurityOpt"]
        assert host["ReadonlyRootfs"] is True
        assert host["Init"] is True
        assert host["PidsLimit"] == docker_cfg.pids_limit
        assert host["Memory"] == docker_cfg.memory_mb * 1024 * 1024
        assert host["NanoCpus"] == int(docker_cfg.cpus * 1e9)
        assert not host.get("DeviceRequests")
        assert info["Config"]["User"] == docker_cfg.user
        assert info["Config"]["Labels"][LABEL_RUN] == "hardening"
        mounts = {m["Destination"]: m["RW"] for m in info["Mounts"]}
        assert mounts == {"/home/agent": True, "/tmp": True}
    assert connect(docker_cfg).containers.list(all=True, filters={"label": f"{LABEL_RUN}=hardening"}) == []


@pytest.mark.docker
def test_network_can_be_enabled_for_tasks_that_need_the_hub(docker_cfg, task_workspace):
    from dataclasses import replace

    from stsc.sandbox import make_factory

    with make_factory(replace(docker_cfg, network=True)).start(task_workspace, "net") as sb:
        assert _inspect(sb)["HostConfig"]["NetworkMode"] == "bridge"


def test_gpu_requests_follow_the_config():
    assert gpu_requests(None) is None
    (everything,) = gpu_requests("all")
    assert everything["Count"] == -1 and everything["Capabilities"] == [["gpu"]]
    (some,) = gpu_requests("0, 1")
    assert some["DeviceIDs"] == ["0", "1"] and some["Capabilities"] == [["gpu"]]


class EngineRecordingLate:
    """``exec_inspect`` of a busy engine: for ``late_s`` seconds after the output stream closed it
    reports ``pending`` (the exec still running, or stopped without an exit code), then exit code 3."""

    def __init__(self, pending: dict, late_s: float):
        self.pending = pending
        self.recorded_at = time.monotonic() + late_s

    def exec_inspect(self, exec_id: str) -> dict:
        if time.monotonic() < self.recorded_at:
            return self.pending
        return {"Running": False, "ExitCode": 3}


@pytest.mark.parametrize(
    "pending", [{"Running": True, "ExitCode": None}, {"Running": False, "ExitCode": None}]
)
def test_an_exit_code_the_engine_records_late_is_reported_not_replaced_by_137(pending):
    assert exit_code(EngineRecordingLate(pending, late_s=1.0), "exec-id", EXIT_CODE_WAIT_S) == 3
    assert exit_code(EngineRecordingLate(pending, late_s=60.0), "exec-id", 0.2) is None


@pytest.mark.docker
def test_a_command_that_stops_the_container_does_not_end_the_sandbox(docker_cfg, task_workspace):
    from stsc.sandbox import make_factory

    with make_factory(docker_cfg).start(task_workspace, "restart") as sb:
        shell = sb.shell()
        shell.run("cd data; export KEEP=1; echo kept > ../file.txt", timeout=30)
        sb.exec("kill -TERM 1", timeout=30)
        for _ in range(50):
            if not _inspect(sb)["State"]["Running"]:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the container never stopped, so the restart path was not exercised")
        result = shell.run('pwd; echo "$KEEP"; cat ../file.txt', timeout=30)
        assert result.stdout.splitlines() == [f"{sb.workspace}/data", "1", "kept"]


@pytest.mark.docker
def test_a_container_that_fails_to_start_is_removed_at_once(docker_cfg, task_workspace):
    from dataclasses import replace

    from stsc.errors import SandboxError
    from stsc.sandbox import make_factory

    # No host has this GPU: the engine creates the container, then refuses to start it.
    factory = make_factory(replace(docker_cfg, gpus="no-such-gpu"))
    with pytest.raises(SandboxError) as failure:
        factory.start(task_workspace, "start-fails")
    assert connect(docker_cfg).containers.list(all=True, filters={"label": f"{LABEL_RUN}=start-fails"}) == []
    assert "sandbox.gpus" in str(failure.value)


@pytest.mark.docker
def test_an_image_removed_after_the_factory_check_is_never_pulled_from_a_registry(docker_cfg, task_workspace):
    from dataclasses import replace

    from stsc.errors import SandboxError
    from stsc.sandbox import make_factory

    client = connect(docker_cfg)
    repo, tag = "stsc-test-removed", uuid.uuid4().hex[:8]
    client.images.get(docker_cfg.image).tag(repo, tag)
    try:
        factory = make_factory(replace(docker_cfg, image=f"{repo}:{tag}"))
    finally:
        client.images.remove(f"{repo}:{tag}")  # e.g. a colleague's `docker image prune` mid-run
    with pytest.raises(SandboxError, match="python -m stsc.sandbox.image"):
        factory.start(task_workspace, "image-gone")
    assert client.containers.list(all=True, filters={"label": f"{LABEL_RUN}=image-gone"}) == []


@pytest.mark.docker
def test_the_sweep_tolerates_a_container_removed_while_it_runs(docker_cfg, task_workspace, monkeypatch):
    from stsc.sandbox import make_factory
    from stsc.sandbox.docker import sweep_containers

    sb = make_factory(docker_cfg).start(task_workspace, "closed-meanwhile")
    client = connect(docker_cfg)
    listing = client.api.containers

    def list_then_close(*args, **kwargs):
        found = listing(*args, **kwargs)
        sb.close()  # another run closes its sandbox right after the sweep listed it
        return found

    monkeypatch.setattr(client.api, "containers", list_then_close)
    sweep_containers(client)  # a factory of a new run sweeps meanwhile
    assert client.containers.list(all=True, filters={"label": f"{LABEL_RUN}=closed-meanwhile"}) == []


@pytest.mark.docker
def test_commands_run_in_a_process_holding_more_than_1024_open_files(docker_cfg, task_workspace):
    import os
    import resource

    from stsc.sandbox import make_factory

    # Hundreds of sandboxes in one rollout process, each with its sockets and files open.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the open-files hard limit ({hard}) is below 1200")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held = []
    try:
        with make_factory(docker_cfg).start(task_workspace, "many-files") as sb:
            while not held or held[-1] < 1100:
                held.append(os.open(os.devnull, os.O_RDONLY))
            assert sb.exec("echo hi", timeout=30).stdout == "hi\n"
            assert sb.exec("sleep 30", timeout=1).timed_out
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# Runs as host user `uid` (null: as this user). "orphan": starts a sandbox, has the sandbox user
# write files in it, prints the sandbox's folder and dies. "sweep": prints how many orphans
# sweep_orphans removed (containers and folders).
AS_HOST_USER = """
import json, os, signal, sys
from pathlib import Path

# Imported before leaving root: the interpreter may live where only root can read.
import docker, docker.types
from stsc.config import SandboxConfig
import stsc.sandbox.common
from stsc.sandbox import make_factory, sweep_orphans
from stsc.sandbox.docker import connect

mode, cfg, uid, socket_gid, workspace, label = json.loads(sys.argv[1])
if uid is not None:
    os.setgroups([socket_gid])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
cfg = SandboxConfig(**cfg)
if mode == "sweep":
    print(sweep_orphans(cfg))
    sys.exit()
sb = make_factory(cfg).start(Path(workspace), label)
done = sb.exec("for d in $(seq 20); do mkdir -p made/$d; for f in $(seq 100); do : > made/$d/$f; done; done", 60)
assert done.ok, done
print(sb.layout.root, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _as_host_user(mode: str, cfg, uid=None, socket_gid=None, workspace=None, label=None) -> str:
    env = {**os.environ, "HOME": cfg.workdir}  # not a home the user cannot read
    args = json.dumps([mode, asdict(cfg), uid, socket_gid, str(workspace), label])
    done = subprocess.run(
        [sys.executable, "-c", AS_HOST_USER, args], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert done.stdout, done.stderr
    return done.stdout.strip()


def _orphan(cfg, workspace: Path, label: str, uid: int | None = None, socket_gid: int | None = None) -> Path:
    root = Path(_as_host_user("orphan", cfg, uid, socket_gid, workspace, label))
    assert root.is_dir() and len(_containers(cfg, label)) == 1
    return root


def _containers(cfg, label: str) -> list:
    return connect(cfg).containers.list(all=True, filters={"label": f"{LABEL_RUN}={label}"})


@pytest.mark.docker
def test_the_sweep_removes_files_of_the_sandbox_user_when_stsc_runs_as_another_user(
    docker_cfg, task_workspace
):
    if os.geteuid() != 0:
        pytest.skip("needs root to run stsc as a second host user")
    socket = Path("/var/run/docker.sock")
    if docker_cfg.docker_host or os.environ.get("DOCKER_HOST") or not socket.exists():
        pytest.skip("needs the engine on the local socket")
    uid = 4242  # neither root nor the sandbox user (1000)
    base = Path(tempfile.mkdtemp(prefix="stsc-test-host-user-"))
    try:
        shutil.copytree(task_workspace, base / "workspace")
        for path in [base, *base.rglob("*")]:
            os.chown(path, uid, uid)
        cfg = replace(docker_cfg, workdir=str(base))
        label = f"other-user-{uuid.uuid4().hex[:8]}"
        root = _orphan(cfg, base / "workspace", label, uid, socket.stat().st_gid)
        assert root.stat().st_uid == uid
        assert int(_as_host_user("sweep", cfg, uid, socket.stat().st_gid)) >= 1
        assert _containers(cfg, label) == []
        assert not root.exists()
    finally:
        shutil.rmtree(base)


@pytest.mark.docker
def test_two_sweeps_removing_one_orphan_at_once_both_succeed(docker_cfg, task_workspace):
    from stsc.sandbox.docker import sweep_containers

    label = f"two-sweeps-{uuid.uuid4().hex[:8]}"
    root = _orphan(docker_cfg, task_workspace, label)
    (orphan,) = _containers(docker_cfg, label)
    # Two runs starting together (e.g. the workers of a restarted job) list the orphan, remove its
    # container and then its folder at the same moments.
    both_listed, both_removed = threading.Barrier(2, timeout=30), threading.Barrier(2, timeout=30)
    failures = []

    def sweep() -> None:
        client = connect(docker_cfg)
        listing, remove = client.api.containers, client.api.remove_container

        def list_then_wait(*args, **kwargs):
            found = listing(*args, **kwargs)
            both_listed.wait()
            return found

        def remove_then_wait(container_id, **kwargs):
            try:
                return remove(container_id, **kwargs)
            finally:
                if container_id == orphan.id:  # not the orphans other test runs may have left
                    both_removed.wait()

        client.api.containers, client.api.remove_container = list_then_wait, remove_then_wait
        try:
            sweep_containers(client)
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            failures.append(e)

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert not root.exists() and _containers(docker_cfg, label) == []


# Commands leaving a process (`sleep 1001`) that the wrapper's own reaper, which kills the
# command's session when its shell exits, does not reach.
ESCAPES = {
    "new-session": "rm -f escaped; setsid sh -c ': > escaped; exec sleep 1001' > /dev/null 2>&1 & "
    "until [ -e escaped ]; do sleep 0.01; done",
    "wrapper-killed": "sleep 1001 > /dev/null 2>&1 & kill -9 $$",
    "exit-trap-removed": "trap - EXIT; sleep 1001 > /dev/null 2>&1 &",
    "wrapper-replaced": "sleep 1001 > /dev/null 2>&1 & exec true",
}


def _processes(sb) -> list[str]:
    return sb.exec(["ps", "-e", "--no-headers", "-o", "args"], timeout=30).stdout.splitlines()


@pytest.mark.docker
@pytest.mark.parametrize("command", ESCAPES.values(), ids=ESCAPES.keys())
def test_processes_that_escape_the_command_session_do_not_outlive_the_command(
    docker_cfg, task_workspace, command
):
    from stsc.sandbox import make_factory

    with make_factory(docker_cfg).start(task_workspace, "escape") as sb:
        sb.exec(command, timeout=30)
        assert "sleep 1001" not in _processes(sb)
        sb.shell().run(command, timeout=30)
        assert "sleep 1001" not in _processes(sb)
        assert sb.exec("echo usable", timeout=30).stdout == "usable\n"


@pytest.mark.docker
def test_killing_what_a_command_left_spares_a_command_still_running(docker_cfg, task_workspace):
    from stsc.sandbox import make_factory

    with make_factory(docker_cfg).start(task_workspace, "concurrent") as sb:
        results = []
        long = "sleep 1002 & echo > started; sleep 3; kill -0 $! && echo child-alive"
        running = threading.Thread(target=lambda: results.append(sb.exec(long, timeout=60)))
        running.start()
        deadline = time.monotonic() + 30
        while not (sb.layout.workspace / "started").exists():
            assert time.monotonic() < deadline, "the long command never started"
            time.sleep(0.05)
        sb.exec(ESCAPES["new-session"], timeout=30)  # leaves a process behind, to be killed now
        assert "sleep 1001" not in _processes(sb)
        running.join()
        assert results[0].stdout == "child-alive\n"

"""Docker-only guarantees: the hardening flags the engine actually applied, labels, GPU requests."""

from __future__ import annotations

import time
import uuid

import pytest

from stsc.sandbox.docker import LABEL_RUN, connect, gpu_requests
from stsc.sandbox.docker_exec import EXIT_CODE_WAIT_S, exit_code
from tests.sandbox.conftest import base_config, require_docker


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

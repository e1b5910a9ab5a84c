"""Docker backend: one hardened container per sandbox, from the task image built by
``python -m stsc.sandbox.image`` (no registry involved).

Every container runs with ``network_mode=none`` (``network: true`` gives the default bridge), the
memory (no swap), CPU, pids, open-file and file-size limits of the config, ``cfg.user`` (non-root), ``cap_drop=ALL``,
``no-new-privileges``, a read-only root file system, an init process that reaps orphans, and GPUs
only when ``gpus`` is set. The sandbox's home (holding the workspace) and /tmp are host folders
mounted read-write, so file copies never go through the engine (which must therefore run on
this machine: a local socket or ``sandbox.docker_host`` pointing at a local daemon). Commands are ``docker exec``
sessions: a timeout kills the command's whole session inside the container, and leftovers of a
finished command are killed when it exits: its session by its own wrapper, then (see
``docker_exec.STRAY_KILLER``) every other process but the container's init, its keeper and the sessions of
commands still running. When that cannot work (the pids limit is exhausted) or a command stopped
the container's init, the container is restarted: files and the shell state live in host folders
and survive, processes do not. ``evaluate`` runs in a second, short-lived container
that mounts the workspace read-only and the private folder at ``private_path``; the agent's
container never sees that folder.

Containers carry the labels ``stsc.sandbox``, ``stsc.run`` (the label given to ``start``) and
``stsc.owner`` (host, pid and start time of the process that made them). They are removed on
``close`` (also on errors, Ctrl-C and interpreter exit); ``sweep_containers`` removes those whose
owner process is gone (and their folders) and runs whenever a factory is created. Both first let
this host user delete what the sandbox user wrote, when it may not (neither root nor that user).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stsc.config import SandboxConfig
from stsc.errors import SandboxError
from stsc.sandbox.base import ExecResult
from stsc.sandbox.common import (
    INSIDE_HOME,
    INSIDE_PRIVATE,
    INSIDE_TMP,
    OWNER_FILE,
    REAPER,
    ROOT_PREFIX,
    base_env,
    copy_workspace,
    hand_over,
    new_layout,
    owner_alive,
    owner_record,
    parse_user,
    remove_tree,
    sweep_folders,
    wrapper_script,
)
from stsc.sandbox.core import HostBoundSandbox
from stsc.sandbox.docker_exec import exec_capped, init_pid_on_host, kill_strays, nothing_left

if TYPE_CHECKING:
    import docker

log = logging.getLogger(__name__)

LABEL = "stsc.sandbox"
LABEL_RUN = "stsc.run"
LABEL_OWNER = "stsc.owner"
LABEL_ROOT = "stsc.root"
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CLAIM = ".sweeping"  # made in an orphan's folder by the one sweep that removes it


def connect(cfg: SandboxConfig) -> docker.DockerClient:
    """A client of the configured engine; raises ``SandboxError`` when no engine answers."""
    try:
        import docker
    except ImportError as e:
        raise SandboxError("the docker package is not installed: pip install docker") from e

    try:
        if cfg.docker_host:
            client = docker.DockerClient(base_url=cfg.docker_host, version="auto", timeout=120)
        else:
            client = docker.from_env(version="auto", timeout=120)
        client.ping()
    except docker.errors.DockerException as e:
        raise SandboxError(
            f"no Docker engine answers ({e}); start one (e.g. .ci/docker-up.sh) or set sandbox.docker_host"
        ) from e
    return client


def sweep_containers(client: docker.DockerClient) -> int:
    """Remove stsc containers (and their host folders) whose owner process is gone; returns how many.
    Runs starting together may sweep the same orphans: each folder is removed by one of them."""
    import docker

    # The sandbox user is not in the listing: without root, assume it may be another user.
    open_up = os.geteuid() != 0
    folders = set()
    removed = 0
    # The plain listing, not `containers.list`: that inspects each container and raises when
    # another run removes one of them meanwhile.
    for container in client.api.containers(all=True, filters={"label": LABEL}):
        labels = container.get("Labels") or {}
        try:
            owner = json.loads(labels.get(LABEL_OWNER, "{}"))
        except ValueError:
            owner = {}
        if owner_alive(owner):
            continue
        if open_up and labels.get(LABEL) == "agent":  # the role whose home and /tmp are host folders
            try:
                _open_up(client, container["Id"], restart=True)
            except docker.errors.APIError as e:  # e.g. another sweep removed it; see the folder below
                log.debug("could not open up the files of sandbox container %s: %s", container["Id"][:12], e)
        _remove_quietly(client, container["Id"])
        folders.add(Path(labels.get(LABEL_ROOT, "")))
        removed += 1
    # After every container: an evaluation container's orphan shares the folder of an agent's.
    for root in folders:
        if root.name.startswith(ROOT_PREFIX):
            _remove_orphan_folder(root)
    if removed:
        log.info("removed %d orphaned sandbox container(s)", removed)
    return removed


def _remove_orphan_folder(root: Path) -> None:
    """Remove an orphan's host folder unless another sweep claimed it first. Only one process can
    make the claim folder; the claimer then puts its own owner record in place, so that folder
    sweeps of other runs leave the folder alone while it goes, and finish the job if this process
    dies. A folder of another host user is left to that user's sweeps."""
    try:
        (root / CLAIM).mkdir()
    except (FileExistsError, FileNotFoundError):
        return  # another sweep removes it, or did
    except PermissionError:
        log.info("left orphaned sandbox folder %s to its host user (no access)", root)
        return
    record = root / f"{OWNER_FILE}.{uuid.uuid4().hex[:8]}"
    record.write_text(json.dumps(owner_record()))
    os.replace(record, root / OWNER_FILE)
    for child in root.iterdir():
        if child.name == OWNER_FILE:
            continue
        if child.is_dir() and not child.is_symlink():
            remove_tree(child)
        else:
            child.unlink()
    remove_tree(root)


def _remove_quietly(client: docker.DockerClient, container_id: str) -> None:
    import docker

    try:
        client.api.remove_container(container_id, force=True, v=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as e:
        log.warning("could not remove sandbox container %s: %s", container_id[:12], e)


def _open_up(client: docker.DockerClient, container_id: str, restart: bool) -> None:
    """Let any host user delete what the sandbox user wrote under the sandbox's home and /tmp (files
    it made are its own, with its umask). ``restart`` first ends the container's processes (and
    starts a stopped container), so that none writes files after the change."""
    if restart:
        client.api.restart(container_id, timeout=0)
    chmod = ["chmod", "-R", "a+rwX", INSIDE_HOME, INSIDE_TMP]
    client.api.exec_start(client.api.exec_create(container_id, chmod)["Id"])


def _teardown(client: docker.DockerClient, ids: list[str], open_up: bool) -> None:
    """Remove the containers; first, if needed, let this host user delete what the sandbox user wrote."""
    for container_id in list(ids):
        if open_up:
            try:
                _open_up(client, container_id, restart=False)
            except Exception as e:  # the container may be gone already; removal below still runs
                log.debug("could not open up sandbox files: %s", e)
        _remove_quietly(client, container_id)
    ids.clear()


def gpu_requests(gpus: str | None) -> list[Any] | None:
    """Docker device requests for ``sandbox.gpus`` ("all" or "0,1")."""
    if not gpus:
        return None
    from docker.types import DeviceRequest

    if gpus == "all":
        return [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    return [DeviceRequest(device_ids=[g.strip() for g in gpus.split(",")], capabilities=[["gpu"]])]


def ulimits(cfg: SandboxConfig) -> list[Any]:
    """The container's rlimits: open files, and the largest file a command may write (bytes)."""
    from docker.types import Ulimit

    limits = [Ulimit(name="nofile", soft=cfg.nofile, hard=cfg.nofile)]
    if cfg.max_file_mb is not None:
        size = cfg.max_file_mb * 1024 * 1024
        limits.append(Ulimit(name="fsize", soft=size, hard=size))
    return limits


# --------------------------------------------------------------------------------------------------
# Sandbox and factory


class DockerSandbox(HostBoundSandbox):
    """One container around one task workspace (see the module docstring)."""

    def __init__(self, cfg: SandboxConfig, client: docker.DockerClient, workspace: Path, label: str):
        layout = new_layout(cfg.workdir, isolated=True)
        self._ids: list[str] = []
        uid, _gid = parse_user(cfg.user)
        open_up = os.geteuid() != 0 and uid != os.getuid()
        super().__init__(cfg, layout, label, functools.partial(_teardown, client, self._ids, open_up))
        self._client = client
        self._env = base_env(
            cfg.env_allowlist, cfg.cpus, path=IMAGE_PATH, home=INSIDE_HOME, tmpdir=INSIDE_TMP
        )
        try:
            copy_workspace(workspace, layout)
            hand_over([layout.home, layout.tmp], self.uid, self.gid)
            volumes = {
                str(layout.home): {"bind": INSIDE_HOME, "mode": "rw"},
                str(layout.tmp): {"bind": INSIDE_TMP, "mode": "rw"},
            }
            self._container = self._create(volumes, {}, role="agent")
            self._init_pid = init_pid_on_host(client.api, self._container.id)
        except BaseException:
            self.close()
            raise

    @property
    def container_id(self) -> str:
        return self._container.id

    def _create(self, volumes: dict[str, dict[str, str]], tmpfs: dict[str, str], role: str) -> Any:
        import docker

        cfg = self.cfg
        labels = {
            LABEL: role,
            LABEL_RUN: self.label,
            LABEL_OWNER: json.dumps(owner_record()),
            LABEL_ROOT: str(self.layout.root),
        }
        # create + start rather than `containers.run`, which pulls a missing image from a registry
        # and leaves the created container behind when it cannot start.
        try:
            container = self._client.containers.create(
                cfg.image,
                command=["sleep", "infinity"],
                init=True,
                user=cfg.user,
                working_dir=self.layout.inside_workspace,
                environment=self._env,
                labels=labels,
                hostname="sandbox",
                network_mode="bridge" if cfg.network else "none",
                mem_limit=f"{cfg.memory_mb}m",
                memswap_limit=f"{cfg.memory_mb}m",
                nano_cpus=int(cfg.cpus * 1e9),
                pids_limit=cfg.pids_limit,
                shm_size=f"{max(64, cfg.memory_mb // 4)}m",
                ulimits=ulimits(cfg),
                cap_drop=["ALL"],
                security_opt=["no-new-privileges:true"],
                read_only=True,
                volumes=volumes,
                tmpfs=tmpfs,
                device_requests=gpu_requests(cfg.gpus),
            )
        except docker.errors.ImageNotFound as e:
            raise SandboxError(
                f"image {cfg.image} not found; build it with `python -m stsc.sandbox.image`"
            ) from e
        except docker.errors.APIError as e:
            raise SandboxError(f"the Docker engine could not create a sandbox container: {e}") from e
        self._ids.append(container.id)
        try:
            container.start()
        except docker.errors.APIError as e:
            _remove_quietly(self._client, container.id)
            self._ids.remove(container.id)
            hint = (
                f"; sandbox.gpus={cfg.gpus!r} needs the NVIDIA Container Toolkit on the engine's host and "
                "existing GPU ids (or set sandbox.gpus=null)"
                if cfg.gpus
                else ""
            )
            raise SandboxError(f"the Docker engine could not start a sandbox container: {e}{hint}") from e
        return container

    def _run(
        self, mode: str, args: list[str], timeout: float, cwd: str, env: dict[str, str], *, evaluation: bool
    ) -> ExecResult:
        if evaluation:
            return self._evaluate_in_new_container(mode, args, timeout, cwd, env)
        # `docker exec` processes lead their own session: on exit the wrapper kills the rest of it.
        token = uuid.uuid4().hex[:12]
        full_env = {**self._env, **env}
        script = wrapper_script(mode, REAPER, "__stsc_reap $$", env_names=full_env)
        argv = ["bash", "-c", script, f"stsc-{token}", cwd, *args]
        kill = functools.partial(self._stop_command, token)
        run = functools.partial(
            exec_capped, self._client.api, self._container.id, argv, user=self.cfg.user, env=full_env,
            timeout=timeout, limit=self.cfg.output_limit_bytes, on_timeout=kill,
        )  # fmt: skip
        try:
            result = run()
        except SandboxError:
            if not self._restarted_after_stop():
                raise
            result = run()
        self._kill_strays()
        return result

    def _restarted_after_stop(self) -> bool:
        """If the container stopped (a command signalled its init), start it again: files and the
        shell state live in host folders and survive. Returns whether it was restarted."""
        import docker

        try:
            if self._client.api.inspect_container(self._container.id)["State"]["Running"]:
                return False
            log.warning("sandbox container %s had stopped; starting it again", self._container.id[:12])
            self._client.api.start(self._container.id)
            self._init_pid = init_pid_on_host(self._client.api, self._container.id)
        except docker.errors.APIError as e:
            raise SandboxError(f"sandbox container {self._container.id[:12]} is gone: {e}") from e
        return True

    def _restart(self) -> None:
        self._client.api.restart(self._container.id, timeout=0)
        self._init_pid = init_pid_on_host(self._client.api, self._container.id)

    def _kill_strays(self) -> None:
        """Kill what a finished command left running beyond its wrapper's reach: a process in a new
        session, or left when the wrapper was killed, replaced or lost its exit trap (see
        ``docker_exec.STRAY_KILLER``). If that cannot work (the pids limit is exhausted), restart
        the container."""
        import docker

        if nothing_left(self._container.id, self._init_pid):
            return
        try:
            if kill_strays(self._client.api, self._container.id, self.cfg.user):
                return
            failure = "processes survived"
        except docker.errors.APIError as e:
            if e.status_code == 409:
                return  # not running (a command stopped its init): the next command starts it again
            failure = str(e)
        try:
            if not self._client.api.inspect_container(self._container.id)["State"]["Running"]:
                return
            log.warning("could not kill what a command left running (%s); restarting its container", failure)
            self._restart()
        except docker.errors.NotFound:
            return  # closed meanwhile
        except docker.errors.APIError as e:
            raise SandboxError(f"sandbox container {self._container.id[:12]} cannot restart: {e}") from e

    def _stop_command(self, token: str, attempt: int) -> None:
        """First attempt: kill the command's session from a second exec. If that cannot run (the
        process limit is exhausted) or did not end the command, restart the container: files and
        the shell state survive, processes do not."""
        import docker

        if attempt == 0:
            # Builtins only: at the process limit nothing can fork. argv[3] of the wrapper is its name.
            find = (
                'for d in /proc/[0-9]*; do mapfile -d "" -t a < "$d/cmdline" 2>/dev/null || continue; '
                f'[ "${{a[3]}}" = "stsc-{token}" ] && {{ __stsc_reap "${{d#/proc/}}"; kill -9 "${{d#/proc/}}"; }}; done'
            )
            api = self._client.api
            try:
                exec_id = api.exec_create(
                    self._container.id, ["bash", "-c", f"{REAPER}\n{find}"], user=self.cfg.user
                )
                api.exec_start(exec_id["Id"])
                return
            except docker.errors.APIError as e:
                log.warning("could not kill a timed-out command (%s); restarting its container", e)
        else:
            log.warning("a timed-out command survived its kill; restarting its container")
        self._restart()

    def _evaluate_in_new_container(
        self, mode: str, args: list[str], timeout: float, cwd: str, env: dict[str, str]
    ) -> ExecResult:
        layout = self.layout
        volumes = {
            str(layout.workspace): {"bind": layout.inside_workspace, "mode": "ro"},
            str(layout.private): {"bind": INSIDE_PRIVATE, "mode": "ro"},
        }
        tmpfs = {INSIDE_TMP: f"size={max(64, self.cfg.memory_mb // 4)}m,mode=1777"}
        container = self._create(volumes, tmpfs, role="evaluate")
        try:
            argv = ["bash", "-c", wrapper_script(mode), "stsc", cwd, *args]
            return exec_capped(
                self._client.api,
                container.id,
                argv,
                user=self.cfg.user,
                env={**self._env, "HOME": INSIDE_TMP, **env},
                timeout=timeout,
                limit=self.cfg.output_limit_bytes,
                on_timeout=lambda _attempt: container.kill(),
            )
        finally:
            _remove_quietly(self._client, container.id)
            self._ids.remove(container.id)


class DockerSandboxFactory:
    """Starts ``DockerSandbox``es. Creating one checks the engine and the image and sweeps orphans."""

    def __init__(self, cfg: SandboxConfig):
        self.cfg = cfg
        self.client = connect(cfg)
        import docker

        try:
            self.client.images.get(cfg.image)
        except docker.errors.ImageNotFound as e:
            raise SandboxError(
                f"the task image {cfg.image} is not built; run `python -m stsc.sandbox.image --tag {cfg.image}`"
            ) from e
        sweep_containers(self.client)
        sweep_folders(cfg.workdir)

    def start(self, workspace: Path, label: str) -> DockerSandbox:
        return DockerSandbox(self.cfg, self.client, Path(workspace), label)

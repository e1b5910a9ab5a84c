"""Multi-process training: ``accelerate launch`` of the plain entry point ``stsc.train.entry``.

The stage process never runs under torchrun itself: it writes the resolved config and paths to
``train_job.json``, spawns ``accelerate launch --config_file <zero3|fsdp2|ddp yaml> --num_processes N
-m stsc.train.entry <train_job.json>`` as a child process group, and forwards the metrics rank 0
appends to ``metrics.jsonl`` to the stage's tracker while the child runs.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from stsc.config import SFTConfig
from stsc.errors import ConfigError, StageError
from stsc.train.trainer import MetricSink, TrainJob

logger = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent / "accelerate_configs"
BUNDLED_CONFIGS = {"none": "ddp.yaml", "zero3": "zero3.yaml", "fsdp2": "fsdp2.yaml"}
ENTRY_MODULE = "stsc.train.entry"


def accelerate_config_file(sft: SFTConfig) -> Path:
    """``sft.accelerate_config`` if set, else the bundled yaml for ``sft.distributed``."""
    if sft.accelerate_config:
        path = Path(sft.accelerate_config).expanduser()
        if not path.is_file():
            raise ConfigError(f"sft.accelerate_config={sft.accelerate_config!r} does not exist")
        return path.resolve()
    if sft.distributed not in BUNDLED_CONFIGS:
        raise ConfigError(f"sft.distributed={sft.distributed!r}; choose one of {list(BUNDLED_CONFIGS)}")
    return CONFIG_DIR / BUNDLED_CONFIGS[sft.distributed]


def accelerate_executable() -> str:
    """The ``accelerate`` script of this interpreter's environment (falls back to ``PATH``)."""
    beside = Path(sys.executable).parent / "accelerate"
    if beside.is_file():
        return str(beside)
    found = shutil.which("accelerate")
    if found is None:
        raise StageError("the `accelerate` command is not installed in this environment")
    return found


def accelerate_command(
    sft: SFTConfig, job_file: Path, *, cpu: bool = False, executable: str | None = None
) -> list[str]:
    """The argv that trains ``job_file`` on ``sft.num_processes`` processes.

    ``cpu`` adds ``--cpu`` (a machine without GPUs: smoke tests of the launch path, one process).
    Raises ``ConfigError`` for a bad ``sft.num_processes``.
    """
    if sft.num_processes < 1:
        raise ConfigError(f"sft.num_processes={sft.num_processes} must be at least 1")
    if cpu and sft.num_processes > 1:
        # accelerate launch --cpu starts one process whatever --num_processes says: the global batch
        # and the steps per epoch would silently differ from the configured ones
        raise ConfigError(
            f"sft.num_processes={sft.num_processes} needs GPUs, and this machine has none "
            "(`accelerate launch --cpu` starts a single process); set sft.num_processes=1"
        )
    cmd = [
        executable or accelerate_executable(),
        "launch",
        "--config_file",
        str(accelerate_config_file(sft)),
        "--num_processes",
        str(sft.num_processes),
        "--mixed_precision",
        "bf16" if sft.bf16 else "no",
    ]
    port = sft.main_process_port
    if port is None and sft.num_processes > 1:
        # accelerate's default (29500) is one port for every run: two sweep jobs training at once
        # on one machine would meet in one rendezvous
        port = free_port()
    if port is not None:
        cmd += ["--main_process_port", str(port)]
    if cpu:
        cmd.append("--cpu")
    return cmd + ["-m", ENTRY_MODULE, str(job_file)]


def free_port() -> int:
    """A TCP port no process listens on now (the OS picks it)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _child_env() -> dict[str, str]:
    """This environment, with the stsc package importable by the child wherever it was started."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    return env


def forward_metrics(path: Path, offset: int, sink: MetricSink) -> int:
    """Send the complete metric lines of ``path`` after byte ``offset`` to ``sink``; new offset."""
    if not path.exists():
        return offset
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1  # a torn last line waits for the next call
    for line in data[:end].splitlines():
        if line.strip():
            record = json.loads(line)
            sink(record["key"], float(record["value"]), int(record["step"]))
    return offset + end


def run_accelerate(cmd: list[str], job: TrainJob, sink: MetricSink, poll_s: float = 1.0) -> None:
    """Run ``cmd`` to completion, streaming ``job.metrics_path`` to ``sink``.

    The child gets its own process group, which is terminated if this process is interrupted.
    Raises ``StageError`` when the child exits non-zero.
    """
    offset = job.metrics_path.stat().st_size if job.metrics_path.exists() else 0
    logger.info("launching: %s", " ".join(cmd))
    proc = subprocess.Popen(cmd, env=_child_env(), start_new_session=True)
    try:
        while proc.poll() is None:
            offset = forward_metrics(job.metrics_path, offset, sink)
            time.sleep(poll_s)
    except BaseException:
        _terminate(proc)
        raise
    forward_metrics(job.metrics_path, offset, sink)
    if proc.returncode != 0:
        raise StageError(
            f"`accelerate launch` exited with code {proc.returncode}; its output is above. "
            f"Rerun the stage to resume from the last checkpoint in {job.checkpoints_dir}"
        )


def _terminate(proc: subprocess.Popen, grace_s: float = 30.0) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass

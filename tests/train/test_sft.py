"""The sft stage on the tiny student: train, save, reload, generate, resume, count."""

from __future__ import annotations

import json
import re
from dataclasses import asdict

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from stsc.errors import ConfigError, StageError
from stsc.train.sft import LINEAGE_FILE, run_sft
from stsc.train.templates import has_generation_markers
from stsc.train.trainer import TrainResult

from .conftest import fresh_context, remove, tiny_root_config

UPSTREAM = {"curate": "cur0123", "rollout": "roll4567", "validate": "lib89ab"}


def _generate(model_dir, messages):
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert has_generation_markers(tokenizer.chat_template)
    prompt = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**prompt, max_new_tokens=6, do_sample=False)
    return out.shape[1] - prompt["input_ids"].shape[1]


def test_full_fine_tuning_trains_saves_reloads_and_generates(make_ctx, short_rows):
    ctx = make_ctx(short_rows[:6], upstream=UPSTREAM)
    cfg = tiny_root_config(method="full", max_steps=4)
    run_sft(cfg, ctx)

    model_dir = ctx.out_dir / "model"
    lineage = json.loads((model_dir / LINEAGE_FILE).read_text())
    assert (lineage["sft_set_key"], lineage["trajectory_key"], lineage["task_library_key"]) == (
        "cur0123",
        "roll4567",
        "lib89ab",
    )
    assert lineage["base_model"]["name"] == "tiny" and lineage["config"]["sft"]["method"] == "full"
    assert lineage["training"]["global_step"] == 4
    assert _generate(model_dir, short_rows[0]["messages"][:2]) > 0

    base = AutoModelForCausalLM.from_pretrained(lineage["base_model"]["folder"])
    tuned = AutoModelForCausalLM.from_pretrained(model_dir)
    assert not torch.equal(base.model.layers[0].mlp.up_proj.weight, tuned.model.layers[0].mlp.up_proj.weight)

    assert [step for step, _ in ctx.tracker.series("train/loss")] == [1, 2, 3, 4]
    report = ctx.report
    assert (report.items_in, report.items_out, dict(report.drops)) == (6, 6, {})
    assert report.metrics["examples_truncated"] == 6  # every trajectory is longer than 1024 tokens
    assert report.metrics["global_step"] == 4 and report.metrics["train_tokens_per_s"] > 0
    assert model_dir / LINEAGE_FILE in ctx.artifacts

    again = fresh_context(ctx)  # a finished stage folder is not trained again
    run_sft(cfg, again)
    assert again.tracker.metrics == [] and again.report.items_out == 6


def test_lora_keeps_the_adapter_and_saves_weights_with_the_adapter_merged(make_ctx, short_rows):
    from peft import PeftModel

    ctx = make_ctx(short_rows[:4])
    cfg = tiny_root_config(method="lora", learning_rate=1e-2, max_steps=3)
    run_sft(cfg, ctx)

    adapter, model_dir = ctx.out_dir / "adapter", ctx.out_dir / "model"
    assert (adapter / "adapter_config.json").is_file() and not (model_dir / "adapter_config.json").exists()
    base_dir = json.loads((model_dir / LINEAGE_FILE).read_text())["base_model"]["folder"]
    ids = torch.tensor([list(range(5, 40))])
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(model_dir)(ids).logits
        base = AutoModelForCausalLM.from_pretrained(base_dir)
        base_logits = base(ids).logits
        with_adapter = PeftModel.from_pretrained(base, str(adapter))(ids).logits
    assert torch.allclose(merged, with_adapter, atol=1e-4)
    assert not torch.allclose(merged, base_logits, atol=1e-3)
    assert _generate(model_dir, short_rows[0]["messages"][:2]) > 0
    assert adapter in ctx.artifacts


# What a kill before the end of training leaves on disk: no final model, and the last checkpoint ...
KILLS = {
    "between checkpoints": ["checkpoints/checkpoint-6"],  # ... not written yet
    "while a checkpoint was written": ["checkpoints/checkpoint-6/trainer_state.json"],  # ... cut short
}


@pytest.mark.parametrize("kill", list(KILLS))
def test_a_killed_stage_resumes_from_its_last_checkpoint(make_ctx, short_rows, kill):
    ctx = make_ctx(short_rows[:6])
    cfg = tiny_root_config(max_steps=6, save_steps=2, per_device_train_batch_size=1, max_length=768)
    run_sft(cfg, ctx)
    first_losses = dict(ctx.tracker.series("train/loss"))
    checkpoints = sorted(p.name for p in (ctx.out_dir / "checkpoints").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-4", "checkpoint-6"]

    for name in [*KILLS[kill], "model", "train_result.json"]:
        remove(ctx.out_dir / name)
    resumed = fresh_context(ctx)
    run_sft(cfg, resumed)

    losses = resumed.tracker.series("train/loss")
    assert [step for step, _ in losses] == [5, 6]
    assert [value for _, value in losses] == pytest.approx([first_losses[5], first_losses[6]], rel=1e-5)
    assert resumed.report.notes["resumed_from"] == "checkpoint-4"
    assert json.loads((ctx.out_dir / "model" / LINEAGE_FILE).read_text())["training"]["global_step"] == 6


# How the end of training is set (3 steps an epoch), and the checkpoints kept at the end.
ENDS = {
    "two whole epochs (lora)": (
        dict(method="lora", max_steps=-1, num_train_epochs=2.0),
        ["checkpoint-4", "checkpoint-6"],
    ),
    "one and a half epochs": (dict(max_steps=-1, num_train_epochs=1.5), ["checkpoint-4", "checkpoint-5"]),
    "max_steps, one checkpoint kept": (dict(max_steps=5, save_total_limit=1), ["checkpoint-5"]),
}
AFTER_TRAINING = ["model", "adapter", "train_result.json"]  # what the stage writes after the last checkpoint


def _weights(model_dir):
    return {k: v for f in sorted(model_dir.glob("*.safetensors")) for k, v in load_file(f).items()}


def _without_runtime(result):
    return {k: v for k, v in asdict(result).items() if k not in ("train_runtime_s", "tokens_per_s")}


@pytest.mark.parametrize("end", list(ENDS))
def test_a_stage_killed_after_its_last_checkpoint_finishes_as_the_uninterrupted_run(
    make_ctx, short_rows, end
):
    ctx = make_ctx(short_rows[:6])
    settings, checkpoints = ENDS[end]
    # a constant rate: a step after the end would change the weights (a decayed rate is 0 there)
    cfg = tiny_root_config(
        per_device_train_batch_size=2, max_length=512, lr_scheduler_type="constant", **settings
    )
    run_sft(cfg, ctx)
    weights, result = _weights(ctx.out_dir / "model"), TrainResult.read(ctx.out_dir / "train_result.json")
    assert sorted(p.name for p in (ctx.out_dir / "checkpoints").glob("checkpoint-*")) == checkpoints
    assert checkpoints[-1] == f"checkpoint-{result.global_step}"

    for name in AFTER_TRAINING:
        if (ctx.out_dir / name).exists():
            remove(ctx.out_dir / name)
    resumed = fresh_context(ctx)
    run_sft(cfg, resumed)

    again = _weights(ctx.out_dir / "model")
    assert weights.keys() == again.keys() and all(torch.equal(weights[k], again[k]) for k in weights)
    assert resumed.tracker.series("train/loss") == []  # not a step trained again
    rerun = TrainResult.read(ctx.out_dir / "train_result.json")
    assert _without_runtime(rerun) == _without_runtime(result) and rerun.tokens_seen > 0
    assert rerun.train_runtime_s > 0 and rerun.tokens_per_s == rerun.tokens_seen / rerun.train_runtime_s
    for key in ("global_step", "train_loss"):
        assert resumed.report.metrics[key] == ctx.report.metrics[key]
    assert resumed.report.notes["resumed_from"] is None  # the run that trained these weights started afresh
    lineage = json.loads((ctx.out_dir / "model" / LINEAGE_FILE).read_text())
    assert lineage["training"] == json.loads((ctx.out_dir / "train_result.json").read_text())


def _drop_run_record(checkpoint):
    state_file = checkpoint / "trainer_state.json"
    state = json.loads(state_file.read_text())
    del state["stateful_callbacks"]["RunRecord"]
    state_file.write_text(json.dumps(state))


def test_checkpoints_without_a_run_record_are_resumed_and_reported_from_their_trainer_state(
    make_ctx, short_rows
):
    ctx = make_ctx(short_rows[:6])
    cfg = tiny_root_config(max_steps=6, save_steps=2, per_device_train_batch_size=1, max_length=768)
    run_sft(cfg, ctx)
    result = TrainResult.read(ctx.out_dir / "train_result.json")
    for name in ["checkpoint-4", "checkpoint-6"]:
        _drop_run_record(ctx.out_dir / "checkpoints" / name)

    for name in ["checkpoints/checkpoint-6", "model", "train_result.json"]:
        remove(ctx.out_dir / name)
    run_sft(cfg, fresh_context(ctx))  # from checkpoint-4, saving a checkpoint-6 with a record
    assert TrainResult.read(ctx.out_dir / "train_result.json").resumed_from == "checkpoint-4"

    _drop_run_record(ctx.out_dir / "checkpoints" / "checkpoint-6")
    weights = _weights(ctx.out_dir / "checkpoints" / "checkpoint-6")
    for name in ["model", "train_result.json"]:
        remove(ctx.out_dir / name)
    run_sft(cfg, fresh_context(ctx))
    again = _weights(ctx.out_dir / "model")
    assert all(torch.equal(weights[k], again[k]) for k in weights)
    rerun = TrainResult.read(ctx.out_dir / "train_result.json")
    assert (rerun.global_step, rerun.tokens_seen, rerun.train_runtime_s) == (6, result.tokens_seen, 0.0)
    assert rerun.train_loss == pytest.approx(result.train_loss, rel=1e-5)  # every step was logged


def test_overlong_examples_are_dropped_when_configured_and_counted_in_the_report(make_ctx, short_rows):
    ctx = make_ctx(short_rows[:6])
    cfg = tiny_root_config(overlong="drop", max_length=100_000, max_steps=1)
    cfg.student.context_length = 3000  # caps sft.max_length
    run_sft(cfg, ctx)
    stats = json.loads((ctx.out_dir / "data_stats.json").read_text())
    assert stats["max_length"] == 3000 and ctx.report.notes["max_length"] == 3000
    n_long = stats["dropped"].get("overlong", 0)
    assert 0 < n_long < 6
    assert dict(ctx.report.drops) == {"overlong": n_long}
    assert ctx.report.items_out == 6 - n_long and ctx.report.metrics["examples_truncated"] == 0


@pytest.mark.parametrize(
    ("rows", "reason"),
    [
        ([{"messages": [{"role": "user", "content": "hello"}]}], "no_assistant_turn"),
        ([{"messages": [{"role": "tool", "content": "x"}]}], "invalid_messages"),  # nothing valid at all
        ([], "{}"),  # curation kept nothing
    ],
)
def test_a_set_with_nothing_to_train_on_fails_naming_the_drops(make_ctx, rows, reason):
    ctx = make_ctx(rows)
    with pytest.raises(StageError, match=f"no SFT example left.*{re.escape(reason)}"):
        run_sft(tiny_root_config(), ctx)


def test_packing_without_a_varlen_attention_kernel_is_refused(make_ctx, short_rows):
    ctx = make_ctx(short_rows[:2])
    with pytest.raises(ConfigError, match="sft.packing=true needs a varlen attention kernel"):
        run_sft(tiny_root_config(packing=True), ctx)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"optim": "adamw"}, "sft.optim='adamw' is not one of transformers' names: .*'adamw_torch'"),
        ({"lr_scheduler_type": "cosine_decay"}, "sft.lr_scheduler_type='cosine_decay' is not one of"),
        ({"method": "lora", "lora_r": 0}, "sft.lora_r=0, .*the rank must be at least 1"),
    ],
)
def test_unknown_optimizer_schedule_or_lora_settings_are_refused_naming_the_key(
    make_ctx, short_rows, setting, message
):
    with pytest.raises(ConfigError, match=message):
        run_sft(tiny_root_config(**setting), make_ctx(short_rows[:2]))


def test_bf16_full_fine_tuning_of_a_bfloat16_student_keeps_float32_master_weights(make_ctx, short_rows):
    # 20 steps of 1e-5 move a weight by about 2e-4 in float32, past half a bf16 step (6e-5 near 0.02);
    # applied to bf16 weights one at a time, each 1e-5 step rounds away
    ctx = make_ctx(short_rows[:4])
    cfg = tiny_root_config(
        method="full",
        bf16=True,
        learning_rate=1e-5,
        lr_scheduler_type="constant",
        max_steps=20,
        per_device_train_batch_size=1,
        max_length=768,
        save_steps=0,
    )
    cfg.student.torch_dtype = "bfloat16"
    run_sft(cfg, ctx)

    tuned = _weights(ctx.out_dir / "model")
    base_dir = json.loads((ctx.out_dir / "model" / LINEAGE_FILE).read_text())["base_model"]["folder"]
    base = {k: v.to(torch.bfloat16) for k, v in load_file(f"{base_dir}/model.safetensors").items()}
    assert all(v.dtype == torch.bfloat16 for v in tuned.values())  # saved in the student's dtype
    changed = sum(int((tuned[k] != base[k]).sum()) for k in base)
    assert changed > 0.9 * sum(v.numel() for v in base.values())

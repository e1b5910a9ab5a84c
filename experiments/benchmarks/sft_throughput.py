"""Training throughput of the sft stage relative to a plain trl SFTTrainer script.

Both train the same student on the same SFT set with the same settings (taken from conf/sft/ and
conf/student/, then shortened to --steps optimizer steps), seeing the same examples in the same
order (checked: their first-step losses must agree). Runs alternate (stage, plain, plain, stage,
...) for --rounds rounds after one untimed warm-up run; each kind is judged by its best run, the
usual defence against other load on a shared machine, which only ever slows a run down.

Two figures are printed:

- input tokens/s: non-padding tokens through the model per second of the training loop;
- trained tokens/s: tokens that carry a loss per second. Both runs train the same tokens, so its
  ratio is the plain script's time per step over the stage's. The stage leaves out the untrained
  tail of truncated trajectories (attention is causal: no effect on the loss), so it does the same
  learning with fewer input tokens; this is the headline.

    python experiments/benchmarks/sft_throughput.py                       # SmolLM2-135M, LoRA, CPU
    python experiments/benchmarks/sft_throughput.py --device cuda --model-config qwen3_4b

With --device cuda and a student that has an `architecture` (qwen3_4b, qwen3_8b), the model is a
randomly initialised twin of that shape in bf16 (no download) and model FLOPs utilisation is
printed too: MFU = tokens/s x (6 N for full fine-tuning, 4 N for LoRA, N = matmul parameters incl.
the LM head, + 12 L d T for attention at mean length T) / peak bf16 FLOP/s of the GPU.

The last line is the headline: `sft_throughput: <stage trained tokens/s / plain trained tokens/s>`.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import yaml  # noqa: E402

from stsc.config import RootConfig, SFTConfig, StudentConfig  # noqa: E402
from stsc.store import StageContext, StageReport, read_json  # noqa: E402

PEAK_BF16_FLOPS = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12, "L40S": 362e12}


def read_group(group: str, name: str) -> dict[str, Any]:
    """conf/<group>/<name>.yaml with its own-group defaults list applied (one level is enough here)."""
    data = yaml.safe_load((REPO / "conf" / group / f"{name}.yaml").read_text()) or {}
    merged: dict[str, Any] = {}
    for parent in data.pop("defaults", []):
        if parent != "_self_":
            merged.update(read_group(group, parent))
    merged.update(data)
    return merged


def build_config(args: argparse.Namespace) -> RootConfig:
    cfg = RootConfig()
    cfg.student = StudentConfig(**read_group("student", args.model_config))
    sft = SFTConfig(**read_group("sft", args.sft_config))
    sft = replace(
        sft, max_steps=args.steps, save_steps=0, logging_steps=1, launcher="none", distributed="none"
    )
    if args.max_length:
        sft = replace(sft, max_length=args.max_length)
    if args.method:
        sft = replace(sft, method=args.method)
    if args.batch_size:
        sft = replace(sft, per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=1)
    cfg.sft = sft
    return cfg


def base_model_dir(cfg: RootConfig, args: argparse.Namespace, workdir: Path) -> Path:
    from stsc.train.students import materialize_random_twin, materialize_student

    if args.device == "cuda" and cfg.student.architecture:
        folder = materialize_random_twin(cfg.student, workdir / "students", device="cuda")
        cfg.student = replace(cfg.student, source="hub", model_id=str(folder))
        return folder
    return materialize_student(cfg.student, workdir / "students")


def stage_run(cfg: RootConfig, sft_set: Path, workdir: Path, i: int) -> dict[str, float]:
    from stsc.train.sft import run_sft

    curate = workdir / "curate" / "bench"
    curate.mkdir(parents=True, exist_ok=True)
    (curate / "sft.jsonl").write_bytes(sft_set.read_bytes())
    key = f"stage-{cfg.sft.method}-{i}-{time.time_ns()}"
    out = workdir / "sft" / key
    out.mkdir(parents=True)
    ctx = StageContext(
        name="sft",
        key=key,
        out_dir=out,
        inputs={"curate": curate},
        store=workdir,
        seed=0,
        report=StageReport(stage="sft"),
    )
    run_sft(cfg, ctx)
    stats = read_json(out / "data_stats.json")
    result = read_json(out / "train_result.json")
    return {
        "tokens_per_s": ctx.report.metrics["train_tokens_per_s"],
        "runtime_s": ctx.report.metrics["train_runtime_s"],
        "mean_length": stats["tokens_kept"] / stats["examples_kept"],
        "first_loss": result["loss_history"][0][1],
    }


def plain_run(
    cfg: RootConfig, model_dir: Path, sft_set: Path, workdir: Path, i: int, max_length: int
) -> dict[str, float]:
    """What a user would write with trl directly: messages in, SFTTrainer, assistant-only loss."""
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig as TrlSFTConfig
    from trl import SFTTrainer

    s, st = cfg.sft, cfg.student
    rows = [json.loads(line) for line in sft_set.read_text().splitlines() if line.strip()]
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=getattr(torch, st.torch_dtype), attn_implementation=st.attn_implementation
    )
    peft_config = None
    if s.method == "lora":
        peft_config = LoraConfig(
            r=s.lora_r,
            lora_alpha=s.lora_alpha,
            lora_dropout=s.lora_dropout,
            target_modules=list(st.lora_target_modules),
            task_type="CAUSAL_LM",
        )
    args = TrlSFTConfig(
        output_dir=str(workdir / "plain" / f"plain-{s.method}-{i}-{time.time_ns()}"),
        max_length=max_length,
        assistant_only_loss=True,
        learning_rate=s.learning_rate,
        max_steps=s.max_steps,
        per_device_train_batch_size=s.per_device_train_batch_size,
        gradient_accumulation_steps=s.gradient_accumulation_steps,
        gradient_checkpointing=s.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if s.gradient_checkpointing else None,
        bf16=s.bf16,
        use_cpu=not torch.cuda.is_available(),
        warmup_steps=s.warmup_ratio,
        lr_scheduler_type=s.lr_scheduler_type,
        weight_decay=s.weight_decay,
        max_grad_norm=s.max_grad_norm,
        optim=s.optim,
        logging_steps=1,
        save_strategy="no",
        seed=s.seed,
        data_seed=s.seed,
        report_to="none",
        include_num_input_tokens_seen="non_padding",
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
        peft_config=peft_config,
    )
    output = trainer.train()
    runtime = float(output.metrics["train_runtime"])
    first_loss = next(e["loss"] for e in trainer.state.log_history if "loss" in e)
    return {
        "tokens_per_s": trainer.state.num_input_tokens_seen / runtime,
        "runtime_s": runtime,
        "first_loss": first_loss,
    }


def release() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def model_flops_per_token(model_dir: Path, method: str, mean_length: float) -> float:
    """Training FLOPs per token: k N for the matmuls (k = 6 full, 4 LoRA) + 12 L d T attention."""
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(model_dir)
    d_attn = c.num_attention_heads * c.head_dim
    d_kv = c.num_key_value_heads * c.head_dim
    per_layer = (
        c.hidden_size * (d_attn + 2 * d_kv) + d_attn * c.hidden_size + 3 * c.hidden_size * c.intermediate_size
    )
    n_matmul = c.num_hidden_layers * per_layer + c.vocab_size * c.hidden_size
    k = 6 if method == "full" else 4
    return k * n_matmul + 12 * c.num_hidden_layers * d_attn * mean_length


def peak_flops(override_tflops: float | None) -> float:
    import torch

    if override_tflops:
        return override_tflops * 1e12
    name = torch.cuda.get_device_name()
    for key, value in PEAK_BF16_FLOPS.items():
        if key in name:
            return value
    raise SystemExit(f"unknown peak FLOP/s for {name!r}: pass --peak-tflops")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--model-config", default=None, help="conf/student/<name>.yaml (cpu: smollm2_135m)")
    p.add_argument("--sft-config", default=None, help="conf/sft/<name>.yaml (cpu: cpu_lora, cuda: default)")
    p.add_argument("--method", choices=["lora", "full"], default=None, help="override sft.method")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per run (cpu: 5, cuda: 12)")
    p.add_argument("--max-length", type=int, default=None, help="override sft.max_length")
    p.add_argument(
        "--batch-size", type=int, default=None, help="override the per-device batch (no accumulation)"
    )
    p.add_argument("--rounds", type=int, default=2, help="pairs of runs; the best of each kind is compared")
    p.add_argument("--sft-set", type=Path, default=REPO / "tests" / "data" / "train" / "agent_sft.jsonl")
    p.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    p.add_argument("--peak-tflops", type=float, default=None, help="GPU peak bf16 TFLOP/s for MFU")
    args = p.parse_args(argv)
    cpu = args.device == "cpu"
    args.model_config = args.model_config or ("smollm2_135m" if cpu else "qwen3_4b")
    args.sft_config = args.sft_config or ("cpu_lora" if cpu else "default")
    args.steps = args.steps or (5 if cpu else 12)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sft-throughput-"))
    cfg = build_config(args)
    model_dir = base_model_dir(cfg, args, workdir)
    max_length = min(cfg.sft.max_length, cfg.student.context_length)
    print(
        f"model={cfg.student.name} method={cfg.sft.method} device={args.device} steps={cfg.sft.max_steps} "
        f"max_length={max_length} batch={cfg.sft.per_device_train_batch_size}x{cfg.sft.gradient_accumulation_steps} "
        f"bf16={cfg.sft.bf16} workdir={workdir}",
        flush=True,
    )
    # One untimed run of the same examples first: CUDA context, per-shape kernel caches and lazy
    # imports would otherwise bill whichever run comes first.
    plain_run(cfg, model_dir, args.sft_set, workdir, -1, max_length)
    release()
    results: dict[str, list[dict[str, float]]] = {"stage": [], "plain": []}
    for r in range(args.rounds):
        for kind in ("stage", "plain") if r % 2 == 0 else ("plain", "stage"):
            start = time.perf_counter()
            if kind == "stage":
                res = stage_run(cfg, args.sft_set, workdir, r)
            else:
                res = plain_run(cfg, model_dir, args.sft_set, workdir, r, max_length)
            release()
            results[kind].append(res)
            print(
                f"round {r} {kind}: {res['tokens_per_s']:.1f} tokens/s, "
                f"{res['runtime_s'] / cfg.sft.max_steps:.2f} s/step (wall {time.perf_counter() - start:.0f} s)",
                flush=True,
            )
    report(args, cfg, model_dir, results)


def report(
    args: argparse.Namespace, cfg: RootConfig, model_dir: Path, results: dict[str, list[dict[str, float]]]
) -> None:
    def best(kind: str, key: str) -> float:
        values = [x[key] for x in results[kind]]
        return min(values) if key == "runtime_s" else max(values)

    stage_loss, plain_loss = results["stage"][0]["first_loss"], results["plain"][0]["first_loss"]
    same = abs(stage_loss - plain_loss) <= 1e-3 * abs(plain_loss)
    print(
        f"first-step loss: stage {stage_loss:.5f} plain {plain_loss:.5f} ({'same data' if same else 'DIFFERENT DATA'})"
    )
    stage_in, plain_in = best("stage", "tokens_per_s"), best("plain", "tokens_per_s")
    stage_step, plain_step = best("stage", "runtime_s"), best("plain", "runtime_s")
    print(f"input tokens/s: stage {stage_in:.1f} plain {plain_in:.1f} ratio {stage_in / plain_in:.3f}")
    print(f"s/step: stage {stage_step / cfg.sft.max_steps:.3f} plain {plain_step / cfg.sft.max_steps:.3f}")
    if args.device == "cuda":
        import torch

        mean_length = statistics.mean(x["mean_length"] for x in results["stage"])
        flops = model_flops_per_token(model_dir, cfg.sft.method, mean_length)
        peak = peak_flops(args.peak_tflops)
        print(
            f"gpu={torch.cuda.get_device_name()} peak={peak / 1e12:.0f} TFLOP/s "
            f"flops/token={flops / 1e9:.2f} GFLOP mean_length={mean_length:.0f}"
        )
        print(f"mfu stage: {stage_in * flops / peak:.3f}  mfu plain: {plain_in * flops / peak:.3f}")
    if not same:
        raise SystemExit("the two runs did not train on the same data; the comparison is void")
    print(f"sft_throughput: {plain_step / stage_step:.3f}")


if __name__ == "__main__":
    main()

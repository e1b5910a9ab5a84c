"""The ``sft`` stage: fine-tune the student on the curated SFT set (paper step 8).

Inputs: ``<curate>/sft.jsonl``. Outputs in the stage folder:

- ``model/``: the final checkpoint as a plain Hugging Face folder (weights, config, tokenizer with
  the training chat template) plus ``lineage.json``; for LoRA the adapter is merged into the weights;
- ``adapter/``: the LoRA adapter (``method: lora`` only);
- ``checkpoints/``: trainer checkpoints; a killed stage resumes from the last one;
- ``data_stats.json`` (examples in / kept / truncated / dropped by reason, tokens),
  ``train_result.json`` (steps, loss, throughput), ``metrics.jsonl`` (multi-process runs only).

Training runs in this process (``sft.launcher: none``) or as an ``accelerate launch`` child
(``launch.py``). Metrics stream to the stage's tracking run from rank 0.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from stsc.config import RootConfig
from stsc.errors import StageError
from stsc.store import StageContext, atomic_write_json, read_json, to_jsonable
from stsc.train.data import SFTDataStats, build_sft_dataset, read_sft_set
from stsc.train.trainer import TrainJob, TrainResult, check_sft_config, train, training_seed

logger = logging.getLogger(__name__)

SFT_SET_FILE = "sft.jsonl"
LINEAGE_FILE = "lineage.json"
LIBRARY_STAGES = ("library", "validate")  # the stage whose output is the task library


def effective_max_length(cfg: RootConfig) -> int:
    """``sft.max_length`` capped by the student's context length (a cap is logged, never silent)."""
    if cfg.sft.max_length > cfg.student.context_length:
        logger.warning(
            "sft.max_length=%d exceeds student.context_length=%d (%s); training at %d tokens",
            cfg.sft.max_length,
            cfg.student.context_length,
            cfg.student.name,
            cfg.student.context_length,
        )
        return cfg.student.context_length
    return cfg.sft.max_length


def run_sft(cfg: RootConfig, ctx: StageContext) -> None:
    """Train, save ``model/`` with ``lineage.json``, report counts and metrics.

    Raises ``StageError`` when no example is left to train on or the training child fails, and
    ``ConfigError`` for inconsistent settings.
    """
    from stsc.train.students import load_tokenizer, materialize_student, student_cache_dir

    out = Path(ctx.out_dir)
    if (out / "model" / LINEAGE_FILE).is_file():
        logger.info("sft output already complete in %s", out)
        _report(
            cfg,
            ctx,
            SFTDataStats(**read_json(out / "data_stats.json")),
            TrainResult.read(out / "train_result.json"),
        )
        return
    check_sft_config(cfg)
    base_dir = materialize_student(cfg.student, student_cache_dir(ctx.store))
    tokenizer = load_tokenizer(base_dir, cfg.student)
    max_length = effective_max_length(cfg)
    rows = read_sft_set(ctx.input("curate") / SFT_SET_FILE)
    s = cfg.sft
    dataset, stats = build_sft_dataset(
        rows, tokenizer, max_length, s.overlong, s.assistant_only_loss, num_proc=s.dataset_num_proc
    )
    atomic_write_json(out / "data_stats.json", stats)
    if stats.examples_kept == 0:
        raise StageError(
            f"no SFT example left to train on ({stats.examples_in} in, dropped {stats.dropped}); "
            f"check {ctx.input('curate') / SFT_SET_FILE} and sft.max_length / sft.overlong"
        )
    job = TrainJob(
        config=to_jsonable(cfg),
        base_model_dir=str(base_dir),
        out_dir=str(out),
        max_length=max_length,
        seed=training_seed(ctx.seed, s.seed),
    )
    result = (
        _train_here(cfg, job, dataset, ctx)
        if s.launcher == "none"
        else _train_launched(cfg, job, dataset, ctx)
    )
    _finalize(cfg, ctx, job, tokenizer, stats, result)
    _report(cfg, ctx, stats, result)


def _train_here(cfg: RootConfig, job: TrainJob, dataset: Any, ctx: StageContext) -> TrainResult:
    result = train(cfg, job, dataset, ctx.log_metric)
    assert result is not None, "a single process is rank 0"
    atomic_write_json(job.result_path, result)
    return result


def _train_launched(cfg: RootConfig, job: TrainJob, dataset: Any, ctx: StageContext) -> TrainResult:
    import torch

    from stsc.train.launch import accelerate_command, run_accelerate

    data_dir = Path(job.out_dir) / "tokenized"
    shutil.rmtree(data_dir, ignore_errors=True)
    dataset.save_to_disk(str(data_dir))
    job = TrainJob(**{**to_jsonable(job), "data_dir": str(data_dir)})
    job_file = Path(job.out_dir) / "train_job.json"
    job.write(job_file)
    job.result_path.unlink(missing_ok=True)
    cmd = accelerate_command(cfg.sft, job_file, cpu=not torch.cuda.is_available())
    run_accelerate(cmd, job, ctx.log_metric)
    shutil.rmtree(data_dir, ignore_errors=True)  # a copy of the SFT set, only needed by the child
    if not job.result_path.is_file():
        raise StageError(f"the training processes finished without writing {job.result_path}")
    return TrainResult.read(job.result_path)


def _finalize(
    cfg: RootConfig,
    ctx: StageContext,
    job: TrainJob,
    tokenizer: Any,
    stats: SFTDataStats,
    result: TrainResult,
) -> None:
    """Assemble ``model/`` (merged for LoRA) with tokenizer and lineage, then move it into place."""
    out = Path(job.out_dir)
    partial = out / ".model.partial"
    shutil.rmtree(partial, ignore_errors=True)
    if cfg.sft.method == "lora":
        merge_lora(Path(job.base_model_dir), job.trained_dir, partial, cfg)
        tokenizer.save_pretrained(partial)
        shutil.rmtree(out / "adapter", ignore_errors=True)
        os.rename(job.trained_dir, out / "adapter")
    else:
        os.rename(job.trained_dir, partial)
        tokenizer.save_pretrained(partial)
    atomic_write_json(partial / LINEAGE_FILE, lineage(cfg, ctx, job, stats, result))
    shutil.rmtree(out / "model", ignore_errors=True)
    os.rename(partial, out / "model")
    logger.info("sft checkpoint written to %s", out / "model")


def merge_lora(base_dir: Path, adapter_dir: Path, out_dir: Path, cfg: RootConfig) -> None:
    """Load the base student, merge the LoRA adapter into its weights, save a plain HF folder."""
    from peft import PeftModel

    from stsc.train.students import load_model

    base = load_model(base_dir, cfg.student)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(out_dir)


def _versions() -> dict[str, str]:
    out = {}
    for name in ("stsc", "torch", "transformers", "trl", "peft", "accelerate"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "unknown"
    return out


def lineage(
    cfg: RootConfig, ctx: StageContext, job: TrainJob, stats: SFTDataStats, result: TrainResult
) -> dict[str, Any]:
    """Where the checkpoint comes from: upstream keys (store folder names), base model, config."""
    upstream = {name: Path(path).name for name, path in sorted(ctx.inputs.items())}
    library = next((upstream[n] for n in LIBRARY_STAGES if n in upstream), None)
    st = cfg.student
    return {
        "schema_version": 1,
        "stage": ctx.name,
        "key": ctx.key,
        "sft_set_key": upstream.get("curate"),
        "trajectory_key": upstream.get("rollout"),
        "task_library_key": library,
        "upstream": upstream,
        "base_model": {
            "name": st.name,
            "source": st.source,
            "model_id": st.model_id or None,
            "revision": st.revision,
            "package": st.package,
            "gguf_file": st.gguf_file,
            "folder": job.base_model_dir,
        },
        "method": cfg.sft.method,
        "max_length": job.max_length,
        "seed": job.seed,
        "data": to_jsonable(stats),
        "training": to_jsonable(result),
        "config": {"student": to_jsonable(cfg.student), "sft": to_jsonable(cfg.sft), "seed": cfg.seed},
        "versions": _versions(),
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def _report(cfg: RootConfig, ctx: StageContext, stats: SFTDataStats, result: TrainResult) -> None:
    out = Path(ctx.out_dir)
    ctx.report.add_in(stats.examples_in)
    ctx.report.add_out(stats.examples_kept)
    for reason, n in sorted(stats.dropped.items()):
        ctx.report.drop(reason, n)
    ctx.report.metrics.update(
        {
            "examples_truncated": float(stats.truncated),
            "tokens_trained": float(stats.tokens_trained),
            "tokens_truncated": float(stats.tokens_truncated),
            "global_step": float(result.global_step),
            "train_loss": result.train_loss,
            "train_runtime_s": result.train_runtime_s,
            "train_tokens_per_s": result.tokens_per_s,
        }
    )
    ctx.report.notes.update(
        {"model_dir": str(out / "model"), "max_length": stats.max_length, "resumed_from": result.resumed_from}
    )
    ctx.artifacts.extend([out / "model" / LINEAGE_FILE, out / "data_stats.json", out / "train_result.json"])
    if cfg.sft.method == "lora":
        ctx.artifacts.append(out / "adapter")
    if cfg.sft.log_model:
        ctx.artifacts.append(out / "model")

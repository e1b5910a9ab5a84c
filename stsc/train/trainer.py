"""The training process: trl's ``SFTTrainer`` on tokenized examples, resumable, streaming metrics.

This module runs in whichever process trains: the stage's own process (``sft.launcher: none``) or
each rank started by ``accelerate launch`` (``stsc.train.entry``). It receives a ``TrainJob`` (paths
and the effective max length) and a dataset already tokenized with labels by ``stsc.train.data``;
it writes checkpoints under ``<out>/checkpoints`` (resuming from the last one), the trained weights
under ``<out>/trained`` (the LoRA adapter, or the full model) and returns a ``TrainResult`` on
rank 0 (``None`` elsewhere). Metrics go to a ``MetricSink`` from rank 0 only.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stsc.config import RootConfig
from stsc.errors import ConfigError
from stsc.store import atomic_write_json

logger = logging.getLogger(__name__)

MetricSink = Callable[[str, float, int], None]  # (key, value, step)
FLASH_ATTENTION = ("flash_attention_2", "flash_attention_3")


@dataclass(frozen=True)
class TrainJob:
    """What a training process needs besides the config (``train_job.json`` for the entry point)."""

    config: dict[str, Any]  # the resolved RootConfig as JSON
    base_model_dir: str  # materialized student folder
    out_dir: str  # the sft stage's folder
    max_length: int  # effective max length (sft.max_length capped by the student's context)
    seed: int = 0  # training seed (``training_seed``): weights init of LoRA, data order, dropout
    data_dir: str | None = None  # tokenized dataset (Dataset.save_to_disk), for separate processes
    schema_version: int = 1

    @property
    def checkpoints_dir(self) -> Path:
        return Path(self.out_dir) / "checkpoints"

    @property
    def trained_dir(self) -> Path:
        return Path(self.out_dir) / "trained"

    @property
    def metrics_path(self) -> Path:
        return Path(self.out_dir) / "metrics.jsonl"

    @property
    def result_path(self) -> Path:
        return Path(self.out_dir) / "train_result.json"

    def write(self, path: Path) -> None:
        atomic_write_json(path, asdict(self))

    @classmethod
    def read(cls, path: Path) -> TrainJob:
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))


@dataclass(frozen=True)
class TrainResult:
    """Outcome of one training run (``train_result.json``)."""

    global_step: int
    epoch: float
    train_loss: float  # mean training loss over the steps of this run
    train_runtime_s: float  # wall time of this run's training loop
    tokens_seen: int  # non-padding tokens processed by this run, all ranks
    tokens_per_s: float
    resumed_from: str | None = None  # checkpoint folder name this run resumed from
    loss_history: list[tuple[int, float]] = field(default_factory=list)  # (step, logged loss)
    schema_version: int = 1

    @classmethod
    def read(cls, path: Path) -> TrainResult:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
        d["loss_history"] = [tuple(x) for x in d.get("loss_history", [])]
        return cls(**d)


def training_seed(run_seed: int, sft_seed: int) -> int:
    """The trainer's seed: a run-seed sweep and an ``sft.seed`` sweep both give distinct runs."""
    return (run_seed * 1_000_003 + sft_seed) % 2**31


def check_sft_config(cfg: RootConfig) -> None:
    """Rules between sft and student settings; raises ``ConfigError`` naming the key."""
    s = cfg.sft
    if s.packing and cfg.student.attn_implementation not in FLASH_ATTENTION:
        raise ConfigError(
            f"sft.packing=true needs a varlen attention kernel, but student.attn_implementation="
            f"{cfg.student.attn_implementation!r}; set student.attn_implementation to one of "
            f"{list(FLASH_ATTENTION)} (pip install flash-attn) or sft.packing=false"
        )
    if not 0.0 <= s.warmup_ratio < 1.0:
        raise ConfigError(f"sft.warmup_ratio={s.warmup_ratio} must be in [0, 1)")
    if s.max_steps <= 0 and s.num_train_epochs <= 0:
        raise ConfigError("set sft.max_steps > 0 or sft.num_train_epochs > 0")
    if s.save_steps < 0:
        raise ConfigError(f"sft.save_steps={s.save_steps} must be 0 (no checkpoints) or more")
    for key in ("per_device_train_batch_size", "gradient_accumulation_steps", "logging_steps"):
        if getattr(s, key) < 1:
            raise ConfigError(f"sft.{key}={getattr(s, key)} must be at least 1")


def build_training_args(cfg: RootConfig, job: TrainJob) -> Any:
    """trl ``SFTConfig`` for ``cfg.sft``, every default that matters set explicitly."""
    import torch
    from trl import SFTConfig

    s = cfg.sft
    grouped = s.group_by_length and s.per_device_train_batch_size > 1 and not s.packing
    return SFTConfig(
        output_dir=str(job.checkpoints_dir),
        max_length=job.max_length,  # the data is already cut to it; never trl's 1024 default
        packing=s.packing,
        assistant_only_loss=False,  # labels come masked from stsc.train.data
        learning_rate=s.learning_rate,
        num_train_epochs=s.num_train_epochs,
        max_steps=s.max_steps,
        per_device_train_batch_size=s.per_device_train_batch_size,
        gradient_accumulation_steps=s.gradient_accumulation_steps,
        gradient_checkpointing=s.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if s.gradient_checkpointing else None,
        bf16=s.bf16,  # on a CPU with avx512_bf16/AMX, bf16 autocast is several times faster
        fp16=False,
        use_cpu=not torch.cuda.is_available(),
        warmup_steps=s.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio of the total steps
        lr_scheduler_type=s.lr_scheduler_type,
        weight_decay=s.weight_decay,
        max_grad_norm=s.max_grad_norm,
        optim=s.optim,
        logging_steps=s.logging_steps,
        save_strategy="steps" if s.save_steps > 0 else "no",
        save_steps=max(s.save_steps, 1),
        save_total_limit=s.save_total_limit,
        seed=job.seed,
        data_seed=job.seed,
        report_to="none",  # metrics reach MLflow through MetricStream, from rank 0 only
        include_num_input_tokens_seen="non_padding",
        train_sampling_strategy="group_by_length" if grouped else "random",
        length_column_name="length",
        remove_unused_columns=False,  # keeps the "length" column for the sampler; the collator ignores it
        dataloader_num_workers=0,
    )


def lora_config(cfg: RootConfig) -> Any:
    """peft ``LoraConfig`` for ``sft.method: lora``; ``None`` for full fine-tuning."""
    if cfg.sft.method == "full":
        return None
    if cfg.sft.method != "lora":
        raise ConfigError(f"sft.method={cfg.sft.method!r}; choose one of ['lora', 'full']")
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.sft.lora_r,
        lora_alpha=cfg.sft.lora_alpha,
        lora_dropout=cfg.sft.lora_dropout,
        target_modules=list(cfg.student.lora_target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def _metric_stream(sink: MetricSink) -> Any:
    from transformers import TrainerCallback

    class MetricStream(TrainerCallback):
        """Forwards every numeric value the trainer logs to ``sink`` as ``train/<name>``, rank 0 only."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            for key, value in logs.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    sink(f"train/{key}", float(value), int(state.global_step))

    return MetricStream()


def _token_counter() -> Any:
    from transformers import TrainerCallback

    class TokenCounter(TrainerCallback):
        """Tokens seen by this run (a resumed run starts from the checkpoint's count)."""

        start_tokens = 0
        start_time = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            self.start_tokens = int(state.num_input_tokens_seen or 0)
            self.start_time = time.perf_counter()

    return TokenCounter()


def with_length_column(dataset: Any) -> Any:
    """Add the ``length`` column the length-grouped sampler reads (instead of scanning every row)."""
    if "length" in dataset.column_names:
        return dataset
    return dataset.map(lambda ids: {"length": len(ids)}, input_columns="input_ids", desc="Measuring lengths")


def resume_point(checkpoints_dir: Path, max_steps: int) -> str | None:
    """The checkpoint to resume from: the newest complete one (its ``trainer_state.json``, written
    last, is there), or None. A checkpoint cut short by a kill is skipped. With ``max_steps`` > 0 a
    checkpoint already at the end is passed over for an earlier one, from which the last steps are
    trained again identically: resuming at the end makes transformers take one step too many."""
    if not checkpoints_dir.is_dir():
        return None
    complete: list[tuple[int, Path]] = []
    for folder in checkpoints_dir.glob("checkpoint-*"):
        try:
            state = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
            complete.append((int(state["global_step"]), folder))
        except (OSError, ValueError, KeyError, TypeError):
            logger.warning(
                "sft: %s is incomplete (killed while it was written); not resuming from it", folder
            )
    complete.sort()
    if max_steps > 0:
        before_end = [c for c in complete if c[0] < max_steps]
        if before_end:
            return str(before_end[-1][1])
    return str(complete[-1][1]) if complete else None


def train(cfg: RootConfig, job: TrainJob, dataset: Any, sink: MetricSink) -> TrainResult | None:
    """Fine-tune the student on ``dataset`` (columns ``input_ids``, ``labels``), resuming if possible.

    Saves the trained weights to ``job.trained_dir``. Returns the ``TrainResult`` on rank 0 and
    ``None`` on other ranks. Raises ``ConfigError`` for inconsistent settings.
    """
    from transformers import set_seed
    from trl import SFTTrainer

    from stsc.train.students import load_model, load_tokenizer

    check_sft_config(cfg)
    args = build_training_args(cfg, job)  # before the model: DeepSpeed ZeRO-3 partitions it at load
    set_seed(job.seed)
    base = Path(job.base_model_dir)
    model = load_model(base, cfg.student)
    counter = _token_counter()
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=with_length_column(dataset),
        processing_class=load_tokenizer(base, cfg.student),
        peft_config=lora_config(cfg),
        callbacks=[_metric_stream(sink), counter],
    )
    last = resume_point(job.checkpoints_dir, cfg.sft.max_steps)
    if last:
        logger.info("resuming sft from %s", last)
    output = trainer.train(resume_from_checkpoint=last)
    trainer.save_model(str(job.trained_dir))
    if not trainer.is_world_process_zero():
        return None
    runtime = float(output.metrics.get("train_runtime", time.perf_counter() - counter.start_time))
    tokens = int(trainer.state.num_input_tokens_seen or 0) - counter.start_tokens
    history = [(int(e["step"]), float(e["loss"])) for e in trainer.state.log_history if "loss" in e]
    return TrainResult(
        global_step=int(output.global_step),
        epoch=float(trainer.state.epoch or 0.0),
        train_loss=float(output.training_loss),
        train_runtime_s=runtime,
        tokens_seen=tokens,
        tokens_per_s=tokens / runtime if runtime > 0 else 0.0,
        resumed_from=Path(last).name if last else None,
        loss_history=history,
    )

"""The training process: trl's ``SFTTrainer`` on tokenized examples, resumable, streaming metrics.

This module runs in whichever process trains: the stage's own process (``sft.launcher: none``) or
each rank started by ``accelerate launch`` (``stsc.train.entry``). It receives a ``TrainJob`` (paths
and the effective max length) and a dataset already tokenized with labels by ``stsc.train.data``;
it writes checkpoints under ``<out>/checkpoints`` (resuming from the last one), the trained weights
under ``<out>/trained`` (the LoRA adapter, or the full model) and returns a ``TrainResult`` on
rank 0 (``None`` elsewhere). Metrics go to a ``MetricSink`` from rank 0 only.

Every checkpoint also records what its run would report if training ended there (``RunRecord`` in
``trainer_state.json``): a rerun that finds the last checkpoint already at the end of training
(killed while the final weights or results were written) trains nothing, saves that checkpoint's
weights and reports the run that wrote it.
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
    """Outcome of one training run (``train_result.json``).

    A rerun after training reached its end (the last checkpoint is final) reports the run that
    trained to that checkpoint, as that run would have reported itself.
    """

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
    if s.method == "lora" and (s.lora_r < 1 or s.lora_alpha <= 0 or not 0.0 <= s.lora_dropout < 1.0):
        raise ConfigError(
            f"sft.lora_r={s.lora_r}, sft.lora_alpha={s.lora_alpha}, sft.lora_dropout={s.lora_dropout}: "
            "the rank must be at least 1, alpha positive and dropout in [0, 1)"
        )
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    for key, names in (("optim", OptimizerNames), ("lr_scheduler_type", SchedulerType)):
        valid = [n.value for n in names]
        if getattr(s, key) not in valid:
            raise ConfigError(f"sft.{key}={getattr(s, key)!r} is not one of transformers' names: {valid}")


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


RUN_RECORD = "RunRecord"  # its entry in a checkpoint's trainer_state.json ("stateful_callbacks")


class _TrainingComplete(Exception):
    """The checkpoint resumed from is already at the end of training: nothing is left to train."""


def _run_record(resumed_from: str | None) -> Any:
    from transformers import TrainerCallback
    from transformers.trainer_callback import ExportableState

    class RunRecord(TrainerCallback, ExportableState):
        """This run's starting point, and with every checkpoint what the run would report if it ended
        there. Stops a run resumed at the end of training before its first step: transformers checks
        for the end only after a step, so it would train one more (or, in whole epochs, report an
        empty run). ``trainer`` must be set before training: the loss sums live on it."""

        def __init__(self) -> None:
            self.trainer: Any = None
            self.resumed_from = resumed_from
            self.started = False
            self.start_step = 0
            self.start_tokens = 0
            self.start_time = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                raise _TrainingComplete(f"step {state.global_step} of {state.max_steps}")
            self.start_step = int(state.global_step)
            self.start_tokens = int(state.num_input_tokens_seen or 0)
            self.start_time = time.perf_counter()
            self.started = True
            # transformers saves only entries already present; a checkpoint may predate this record
            state.stateful_callbacks.setdefault(RUN_RECORD, {})

        def state(self) -> dict[str, Any]:
            if not self.started:  # transformers also asks when it builds a trainer state
                return {"args": {}, "attributes": {}}
            # the final loss transformers 5.24 computes (Trainer._finalize_training): the sum drained at
            # each log plus the loss since the last log, over this run's steps
            loss_sum = self.trainer._total_loss_scalar + self.trainer._tr_loss.item()
            steps = self.trainer.state.global_step - self.start_step
            attributes = {
                "train_loss": loss_sum / max(steps, 0.001),
                "train_runtime_s": time.perf_counter() - self.start_time,
                "start_tokens": self.start_tokens,
                "resumed_from": self.resumed_from,
            }
            return {"args": {}, "attributes": attributes}

    return RunRecord()


def _train_result(
    state: Any, train_loss: float, train_runtime_s: float, start_tokens: int, resumed_from: str | None
) -> TrainResult:
    """The ``TrainResult`` of a run that started at ``start_tokens`` and reached trainer ``state``."""
    tokens = int(state.num_input_tokens_seen or 0) - start_tokens
    return TrainResult(
        global_step=int(state.global_step),
        epoch=float(state.epoch or 0.0),
        train_loss=float(train_loss),
        train_runtime_s=train_runtime_s,
        tokens_seen=tokens,
        tokens_per_s=tokens / train_runtime_s if train_runtime_s > 0 else 0.0,
        resumed_from=resumed_from,
        loss_history=_loss_history(state),
    )


def _loss_history(state: Any) -> list[tuple[int, float]]:
    return [(int(e["step"]), float(e["loss"])) for e in state.log_history if "loss" in e]


def _finished_run_result(state: Any, checkpoint: str) -> TrainResult:
    """What the run that wrote ``checkpoint`` (trainer ``state``, at the end of training) reported.

    A checkpoint without a run record gets its loss from the logged losses (those after the last
    log are missing), its tokens from the start of training and no runtime.
    """
    record = state.stateful_callbacks.get(RUN_RECORD, {}).get("attributes")
    if record:
        return _train_result(state, **record)
    logger.warning(
        "sft: %s holds no run record; reporting the losses logged up to it, tokens since the start "
        "of training and no runtime",
        checkpoint,
    )
    loss_sum, before = 0.0, 0
    for step, loss in _loss_history(state):  # each logged loss is the mean since the log before
        loss_sum, before = loss_sum + loss * (step - before), step
    return _train_result(state, loss_sum / max(before, 1), 0.0, 0, None)


def with_length_column(dataset: Any) -> Any:
    """Add the ``length`` column the length-grouped sampler reads (instead of scanning every row)."""
    if "length" in dataset.column_names:
        return dataset
    return dataset.map(lambda ids: {"length": len(ids)}, input_columns="input_ids", desc="Measuring lengths")


def resume_point(checkpoints_dir: Path) -> str | None:
    """The checkpoint to resume from: the newest complete one (its ``trainer_state.json``, written
    last, is there), or None. A checkpoint cut short by a kill is skipped. The newest may be at the
    end of training already: ``train`` then trains nothing."""
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
    return str(max(complete)[1]) if complete else None


def train(cfg: RootConfig, job: TrainJob, dataset: Any, sink: MetricSink) -> TrainResult | None:
    """Fine-tune the student on ``dataset`` (columns ``input_ids``, ``labels``), resuming if possible.

    Saves the trained weights to ``job.trained_dir``. Returns the ``TrainResult`` on rank 0 and
    ``None`` on other ranks. Raises ``ConfigError`` for inconsistent settings.
    """
    from transformers import set_seed
    from trl import SFTTrainer

    from stsc.train.students import load_model, load_tokenizer, torch_dtype

    check_sft_config(cfg)
    args = build_training_args(cfg, job)  # before the model: DeepSpeed ZeRO-3 partitions it at load
    set_seed(job.seed)
    base = Path(job.base_model_dir)
    # bf16 mixed precision keeps float32 master weights for full fine-tuning: AdamW steps applied to
    # bfloat16 weights round away every update below half a bf16 step (most updates at 1e-5).
    # DeepSpeed and FSDP2 keep float32 masters themselves; one process or DDP needs them loaded so.
    upcast = cfg.sft.method == "full" and cfg.sft.bf16 and cfg.student.torch_dtype != "float32"
    model = load_model(base, cfg.student, dtype="float32" if upcast else None)
    last = resume_point(job.checkpoints_dir)
    record = _run_record(Path(last).name if last else None)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=with_length_column(dataset),
        processing_class=load_tokenizer(base, cfg.student),
        peft_config=lora_config(cfg),
        callbacks=[_metric_stream(sink), record],
    )
    record.trainer = trainer
    if last:
        logger.info("resuming sft from %s", last)
    try:
        output = trainer.train(resume_from_checkpoint=last)
    except _TrainingComplete as done:  # the weights are loaded from ``last``
        logger.info("sft: %s is already at the end of training (%s); not training again", last, done)
        output = None
    if upcast and not (trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled):
        trainer.model.to(torch_dtype(cfg.student.torch_dtype))  # saved in the student's own dtype
    trainer.save_model(str(job.trained_dir))
    if not trainer.is_world_process_zero():
        return None
    if output is None:
        assert last is not None, "only a resumed run can start at the end of training"
        return _finished_run_result(trainer.state, last)
    runtime = float(output.metrics.get("train_runtime", time.perf_counter() - record.start_time))
    return _train_result(
        trainer.state, output.training_loss, runtime, record.start_tokens, record.resumed_from
    )

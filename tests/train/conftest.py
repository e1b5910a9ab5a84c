"""Fixtures of the students room: a tiny student shared by the session, an agent-style SFT set,
and stage contexts with a recording tracker."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stsc.config import RootConfig, SFTConfig, StudentConfig
from stsc.store import StageContext, StageReport

REPO_ROOT = Path(__file__).resolve().parents[2]
AGENT_SFT = REPO_ROOT / "tests" / "data" / "train" / "agent_sft.jsonl"


def composed(overrides: list[str]) -> RootConfig:
    """The validated root config composed by Hydra from ``conf/`` with ``overrides``."""
    from hydra import compose, initialize_config_dir

    from stsc.cli import CONF_DIR
    from stsc.config import register_configs, to_root_config

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return to_root_config(compose(config_name="config", overrides=overrides))


def student_config(name: str) -> StudentConfig:
    """``conf/student/<name>.yaml`` as composed and validated."""
    return composed([f"student={name}"]).student


def sft_config(name: str) -> SFTConfig:
    """``conf/sft/<name>.yaml`` as composed (defaults lists included) and validated."""
    return composed([f"sft={name}"]).sft


class RecordingTracker:
    """The tracker protocol of ``StageContext.tracker``: keeps what it is sent."""

    def __init__(self) -> None:
        self.metrics: list[tuple[str, float, int | None]] = []

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.metrics.extend((k, float(v), step) for k, v in metrics.items())

    def series(self, key: str) -> list[tuple[int | None, float]]:
        return [(step, value) for k, value, step in self.metrics if k == key]


@pytest.fixture(scope="session")
def agent_rows() -> list[dict[str, Any]]:
    return [json.loads(line) for line in AGENT_SFT.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="session")
def short_rows(agent_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The agent rows with the long system prompt cut to its first line: shorter sequences keep the
    stage tests fast on the tiny student, whose small vocabulary spends many tokens per word."""
    out = []
    for row in agent_rows:
        messages = [dict(m) for m in row["messages"]]
        messages[0]["content"] = messages[0]["content"].split("\n")[0]
        out.append({"messages": messages})
    return out


@pytest.fixture(scope="session")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store whose ``students/`` cache is shared by the session (the tiny student is built once)."""
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="session")
def tiny_tokenizer(shared_store: Path) -> Any:
    from stsc.train.students import load_tokenizer, materialize_student, student_cache_dir

    cfg = student_config("tiny")
    return load_tokenizer(materialize_student(cfg, student_cache_dir(shared_store)), cfg)


def tiny_root_config(**sft: Any) -> RootConfig:
    """A RootConfig training the tiny student for a few quick steps; ``sft`` overrides fields."""
    cfg = RootConfig()
    cfg.student = student_config("tiny")
    cfg.sft = SFTConfig(
        method="full",
        learning_rate=1e-3,
        max_steps=4,
        per_device_train_batch_size=2,
        max_length=1024,
        save_steps=2,
        logging_steps=1,
        warmup_ratio=0.0,
    )
    for key, value in sft.items():
        setattr(cfg.sft, key, value)
    return cfg


@pytest.fixture
def make_ctx(tmp_path: Path, shared_store: Path) -> Callable[..., StageContext]:
    """``make_ctx(rows, key="k")``: a curate folder holding ``rows`` and an sft StageContext."""

    def make(
        rows: list[dict[str, Any]], key: str = "sftkey", upstream: dict[str, str] | None = None
    ) -> StageContext:
        inputs = {}
        for stage, stage_key in (upstream or {"curate": "curatekey"}).items():
            folder = tmp_path / "store" / stage / stage_key
            folder.mkdir(parents=True, exist_ok=True)
            inputs[stage] = folder
        lines = "".join(json.dumps(r) + "\n" for r in rows)
        (inputs["curate"] / "sft.jsonl").write_text(lines, encoding="utf-8")
        out = tmp_path / "store" / "sft" / key
        out.mkdir(parents=True, exist_ok=True)
        return StageContext(
            name="sft",
            key=key,
            out_dir=out,
            inputs=inputs,
            store=shared_store,
            seed=0,
            report=StageReport(stage="sft"),
            tracker=RecordingTracker(),
        )

    return make


def fresh_context(ctx: StageContext) -> StageContext:
    """The same stage folder handed to a new run of the stage (as after a crash)."""
    return StageContext(
        name=ctx.name,
        key=ctx.key,
        out_dir=ctx.out_dir,
        inputs=ctx.inputs,
        store=ctx.store,
        seed=ctx.seed,
        report=StageReport(stage=ctx.name),
        tracker=RecordingTracker(),
    )


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()

"""The golden data of the curate tests (``tests/data/curate/``) and how the stage is run on it.

Shared by the tests and ``record_golden.py``: the stored library task and run folder, the curate
variants with an expected ``sft.jsonl`` each, and ``curate_variant`` that runs the real stage.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from stsc.config import CurateConfig, RootConfig
from stsc.store import StageContext, StageReport

DATA = Path(__file__).resolve().parents[1] / "data" / "curate"
RUNS = DATA / "runs"
EXPECTED = DATA / "expected"
TASK_ID = "colour-rule-classification"

VARIANTS: dict[str, dict] = {
    "processed": {},
    "full": {"history_view": "full"},
    "processed_strip_no_system": {"thinking": "strip", "include_system": False},
}


def stage_context(cfg: RootConfig, out_dir: Path, store: Path, rollout: Path, validate: Path) -> StageContext:
    """A fresh context of the curate stage, as the pipeline builds it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return StageContext(
        name="curate",
        key="test",
        out_dir=out_dir,
        inputs={"rollout": rollout, "validate": validate},
        store=store,
        seed=cfg.seed,
        report=StageReport("curate"),
    )


def root_config(**curate: object) -> RootConfig:
    """The default root config (tiny student) with ``curate`` overrides."""
    cfg = RootConfig()
    return replace(cfg, curate=replace(CurateConfig(), **curate))


def curate_variant(variant: str, out_dir: Path, store: Path | None = None) -> Path:
    """Run the curate stage on the golden data with ``VARIANTS[variant]``; returns ``out_dir``."""
    from stsc.curate import run_curate

    cfg = root_config(**VARIANTS[variant])
    run_curate(cfg, stage_context(cfg, out_dir, store or out_dir.parent / "store", DATA, DATA))
    return out_dir

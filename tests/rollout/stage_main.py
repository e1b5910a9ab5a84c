"""Run the rollout stage in its own process (the SIGKILL and SIGTERM tests stop it mid-run). Like
the ``stsc`` command, it turns SIGTERM into an interrupt.

Usage: ``python -m tests.rollout.stage_main <config.json> <library> <stage folder>`` where the JSON
holds a ``RootConfig`` as ``stsc.store.to_jsonable`` writes it.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from stsc.config import RootConfig
from stsc.interrupts import stop_on_sigterm
from stsc.rollout import run_rollout
from stsc.store import StageContext, StageReport, atomic_write_json


def load_config(path: Path) -> RootConfig:
    from omegaconf import OmegaConf

    merged = OmegaConf.merge(OmegaConf.structured(RootConfig), json.loads(path.read_text()))
    return OmegaConf.to_object(merged)


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO)
    stop_on_sigterm()
    config, library, out = Path(argv[0]), Path(argv[1]), Path(argv[2])
    cfg = load_config(config)
    ctx = StageContext(
        name="rollout", key=out.name, out_dir=out, inputs={"validate": library}, store=Path(cfg.store_path),
        seed=cfg.seed, report=StageReport(stage="rollout"),
    )  # fmt: skip
    run_rollout(cfg, ctx)
    atomic_write_json(out / "report.json", ctx.report.to_dict())
    atomic_write_json(out / "table_episodes.json", ctx.tables["episodes"])


if __name__ == "__main__":
    main(sys.argv[1:])

"""Helpers shared by the synthesis-stage tests: composed configs and stage contexts."""

from __future__ import annotations

from pathlib import Path

from stsc.config import RootConfig, register_configs, to_root_config
from stsc.store import StageContext, StageReport

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def compose_config(overrides: list[str] | None = None) -> RootConfig:
    """The validated ``RootConfig`` of ``conf/config.yaml`` with ``overrides``."""
    from hydra import compose, initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return to_root_config(compose(config_name="config", overrides=list(overrides or [])))


def make_ctx(root: Path, name: str, inputs: dict[str, Path] | None = None, seed: int = 0) -> StageContext:
    """A context for stage ``name`` writing to ``root/<name>``, with the shared store ``root/store``."""
    out = Path(root) / name
    out.mkdir(parents=True, exist_ok=True)
    return StageContext(
        name=name,
        key=f"{name}-test",
        out_dir=out,
        inputs=dict(inputs or {}),
        store=Path(root) / "store",
        seed=seed,
        report=StageReport(stage=name),
    )

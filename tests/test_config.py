"""Every config group option and every experiment composes and validates."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from stsc.cli import CONF_DIR
from stsc.config import RootConfig, register_configs, to_root_config
from stsc.errors import ConfigError

register_configs()

GROUPS = sorted(
    p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name not in {"hydra", "prompts", "experiment"}
)


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)], ids=lambda v: str(v))
def test_every_group_option_composes_and_validates(group: str, option: str) -> None:
    overrides = [f"{group}={option}"]
    if group == "eval" and option == "mlgym":
        overrides.append("eval.mlgym_root=/tmp/mlgym")
    cfg = to_root_config(_compose(overrides))
    assert isinstance(cfg, RootConfig)


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")))
def test_every_experiment_composes_and_validates(experiment: str) -> None:
    cfg = to_root_config(_compose([f"experiment={experiment}"]))
    assert isinstance(cfg, RootConfig)


def test_a_type_error_in_an_override_names_the_key() -> None:
    with pytest.raises(ConfigCompositionException) as err:
        _compose(["rollout.per_task=lots"])
    assert "rollout.per_task" in str(err.value.__cause__ or err.value)


def test_an_unknown_key_in_an_override_names_the_key() -> None:
    with pytest.raises(ConfigCompositionException) as err:
        _compose(["rollout.per_tsak=3"])
    assert "per_tsak" in str(err.value)


def test_an_invalid_choice_fails_listing_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"sandbox.backend='kubernetes'.*\['local', 'docker'\]"):
        to_root_config(_compose(["sandbox.backend=kubernetes"]))
    with pytest.raises(ConfigError, match=r"curate.examples='turn'.*\['trajectory', 'step'\]"):
        to_root_config(_compose(["curate.examples=turn"]))


def test_distributed_training_requires_the_accelerate_launcher() -> None:
    with pytest.raises(ConfigError, match="sft.launcher=accelerate"):
        to_root_config(_compose(["sft.distributed=zero3", "sft.launcher=none"]))


def test_store_defaults_under_the_root(tmp_path: Path) -> None:
    cfg = to_root_config(_compose([f"root={tmp_path}"]))
    assert cfg.store_path == tmp_path / "mlruns" / "store"

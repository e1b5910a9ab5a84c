"""Every config group option and every experiment composes and validates."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml
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


def _yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def _scalars(node: dict[str, Any], obj: Any, prefix: str) -> dict[str, Any]:
    """Dotted keys of the scalar values of a config file ``node`` applied at ``prefix``, walking
    into nested mappings only where the config object there is a dataclass. Lists, dict-typed
    fields (e.g. topics.areas), ``defaults``/``hydra`` and ``${...}`` interpolations are skipped:
    their values are not comparable one to one with the yaml text."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("defaults", "hydra"):
            continue
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and dataclasses.is_dataclass(getattr(obj, key)):
            out.update(_scalars(value, getattr(obj, key), path))
        elif value is None or isinstance(value, str | int | float | bool):
            if not (isinstance(value, str) and "${" in value):
                out[path] = value
    return out


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _default_experiment() -> str:
    """The experiment conf/config.yaml composes by default; its values win over group options."""
    (name,) = [
        d["experiment"]
        for d in _yaml(CONF_DIR / "config.yaml")["defaults"]
        if isinstance(d, dict) and "experiment" in d
    ]
    return name


def _assert_applied(cfg: RootConfig, expected: dict[str, Any], skip: set[str]) -> int:
    """Every expected dotted value not in ``skip`` is what ``cfg`` holds; returns how many were checked."""
    checked = {k: v for k, v in expected.items() if k not in skip}
    assert {k: _get(cfg, k) for k in checked} == checked
    return len(checked)


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)], ids=lambda v: str(v))
def test_every_group_option_composes_and_validates(group: str, option: str) -> None:
    overrides = [f"{group}={option}"]
    if group == "eval" and option == "mlgym":
        overrides.append("eval.mlgym_root=/tmp/mlgym")
    cfg = to_root_config(_compose(overrides))
    # the option's own values are applied, except where the default experiment (a _global_ package
    # composed after the groups) or a command-line override sets the same key
    experiment = CONF_DIR / "experiment" / f"{_default_experiment()}.yaml"
    skip = set(_scalars(_yaml(experiment), cfg, "")) | {o.split("=", 1)[0] for o in overrides}
    node = _yaml(CONF_DIR / group / f"{option}.yaml")
    if not _assert_applied(cfg, _scalars(node, getattr(cfg, group), group), skip):
        pytest.skip(f"{group}/{option}.yaml sets no scalar the default experiment leaves alone")


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")))
def test_every_experiment_composes_and_validates(experiment: str) -> None:
    cfg = to_root_config(_compose([f"experiment={experiment}"]))
    node = _yaml(CONF_DIR / "experiment" / f"{experiment}.yaml")
    assert _assert_applied(cfg, _scalars(node, cfg, ""), set()) > 0  # e.g. label, per-group settings


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


def test_step_turns_must_not_be_negative() -> None:
    with pytest.raises(ConfigError, match=r"rollout\.step_turns=-1"):
        to_root_config(_compose(["rollout.step_turns=-1"]))
    assert to_root_config(_compose(["rollout.step_turns=3"])).rollout.step_turns == 3


def test_store_defaults_under_the_root(tmp_path: Path) -> None:
    cfg = to_root_config(_compose([f"root={tmp_path}"]))
    assert cfg.store_path == tmp_path / "mlruns" / "store"


@pytest.mark.parametrize("test,valid", [("0.6", "0.5"), ("0.5", "0.5")])
def test_test_and_validation_fractions_must_leave_a_training_split(test: str, valid: str) -> None:
    overrides = [f"generator.test_fraction={test}", f"generator.valid_fraction={valid}"]
    with pytest.raises(ConfigError, match=r"generator\.test_fraction.*generator\.valid_fraction"):
        to_root_config(_compose(overrides))
    cfg = to_root_config(_compose(["generator.test_fraction=0.5", "generator.valid_fraction=0.4"]))
    assert cfg.generator.test_fraction + cfg.generator.valid_fraction == pytest.approx(0.9)


def test_holding_out_every_task_fails_when_a_training_stage_runs() -> None:
    with pytest.raises(ConfigError, match=r"split\.heldout_fraction=1\.0"):
        to_root_config(_compose(["split.heldout_fraction=1.0"]))
    with pytest.raises(ConfigError, match=r"split\.heldout_fraction=1\.0.*rollout"):
        to_root_config(_compose(["split.heldout_fraction=1.0", "stages=[validate,rollout]"]))
    # evaluating references on the whole library trains nothing
    cfg = to_root_config(_compose(["split.heldout_fraction=1.0", "stages=[evaluate,report]"]))
    assert cfg.split.heldout_fraction == 1.0


def test_holding_out_no_task_fails_only_when_the_library_is_evaluated() -> None:
    with pytest.raises(ConfigError, match=r"split\.heldout_fraction=0\.0.*eval\.suite=library"):
        to_root_config(_compose(["split.heldout_fraction=0.0"]))
    with pytest.raises(ConfigError, match=r"split\.heldout_fraction=0\.0"):
        to_root_config(_compose(["split.heldout_fraction=0.0", "stages=[rollout,evaluate]"]))
    # the paper recipes (MLGym suite) and rollout-only runs train on every task
    mlgym = to_root_config(_compose(["split.heldout_fraction=0.0", "eval=mlgym", "eval.mlgym_root=/tmp/m"]))
    assert mlgym.split.heldout_fraction == 0.0
    rollout_only = to_root_config(_compose(["split.heldout_fraction=0.0", "stages=[validate,rollout]"]))
    assert rollout_only.stages == ["validate", "rollout"]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("teacher=gpt5", "teacher"),
        ("topics=llm", "topics"),
        ("propose=llm", "propose"),
        ("generator=llm", "generator"),
    ],
)
def test_every_shipped_hosted_model_config_sends_parameters_its_model_accepts(
    override: str, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """litellm refuses parameters a model does not take (GPT-5: top_p, temperature other than 1)
    before sending anything; mock_response goes through the same validation."""
    from dataclasses import replace

    from stsc.llm import LLMClient

    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    llm = getattr(to_root_config(_compose([override])), key).llm
    client = LLMClient(replace(llm, extra={**llm.extra, "mock_response": "ok"}, cache=False, max_retries=0))
    assert client.complete([{"role": "user", "content": "hi"}]).text == "ok"

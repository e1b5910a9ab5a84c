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


def test_llm_extra_may_not_set_what_the_client_owns() -> None:
    # an api_base in extra would reach a server the loopback-key rule never saw; model or
    # num_retries would collide with the client's own arguments at the first call
    with pytest.raises(
        ConfigError, match=r"teacher\.llm\.extra\.api_base is not allowed: set teacher\.llm\.api_base"
    ):
        to_root_config(_compose(["teacher=gpt5", "+teacher.llm.extra.api_base=http://127.0.0.1:9"]))
    with pytest.raises(
        ConfigError, match=r"generator\.llm\.extra\.num_retries .*generator\.llm\.max_retries"
    ):
        to_root_config(_compose(["+generator.llm.extra.num_retries=2"]))
    cfg = to_root_config(
        _compose(["teacher=gpt5", "+teacher.llm.extra.api_key=sk-x", "+teacher.llm.extra.seed=1"])
    )
    assert cfg.teacher.llm.extra["seed"] == 1  # other litellm options pass through


def test_step_examples_need_assistant_only_loss() -> None:
    # a step example trains its last response only; training every token would train the history
    with pytest.raises(ConfigError, match=r"curate\.examples=step .* sft\.assistant_only_loss=false"):
        to_root_config(_compose(["curate.examples=step", "sft.assistant_only_loss=false"]))
    assert not to_root_config(_compose(["sft.assistant_only_loss=false"])).sft.assistant_only_loss
    assert to_root_config(
        _compose(["curate.examples=step", "stages=[curate]", "sft.assistant_only_loss=false"])
    )


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


# -- the paper recipes hold what the paper states -------------------------------------------------------


def _flat(overrides: list[str]) -> dict[str, Any]:
    """The composed, resolved config as dotted keys (lists compared whole)."""
    from omegaconf import OmegaConf

    cfg = _compose(overrides)
    cfg.eval.mlgym_root = "/tmp/mlgym"  # the paper recipes read it from MLGYM_ROOT

    def walk(node: Any, prefix: str) -> dict[str, Any]:
        if isinstance(node, dict):
            return {k: v for key, sub in node.items() for k, v in walk(sub, f"{prefix}{key}.").items()}
        return {prefix[:-1]: node}

    return walk(OmegaConf.to_container(cfg, resolve=True), "")


@pytest.mark.parametrize(
    "experiment,model_id", [("paper_qwen3_4b", "Qwen/Qwen3-4B"), ("paper_qwen3_8b", "Qwen/Qwen3-8B")]
)
def test_a_paper_recipe_holds_the_values_the_paper_states(experiment: str, model_id: str) -> None:
    """Each value cites reference/paper.md ((s): from its secondary summaries) or, for the
    evaluation protocol the paper's AUP numbers follow, MLGym's (reference/mlgym.md)."""
    from stsc.evaluation.mlgym_tasks import MLGYM_TASKS

    cfg = to_root_config(_compose([f"experiment={experiment}", "eval.mlgym_root=/tmp/mlgym"]))
    gpt5 = "openai/gpt-5"
    # 1. "About 1000 topics (s)", sampled by an LLM
    assert (cfg.topics.n, cfg.topics.expand_with_llm) == (1000, True)
    assert {"vision", "nlp", "graphs", "rl", "tabular", "time_series"} <= set(cfg.topics.areas)
    # 2.-4. "the LLM (GPT-5 (s)) proposes a task and a real dataset", verified on the Hub, then writes the task
    assert (cfg.propose.kind, cfg.propose.llm.model) == ("llm", gpt5)
    assert (cfg.hub.kind, cfg.dataset_filter.enabled) == ("huggingface", True)
    assert (cfg.generator.kind, cfg.generator.llm.model) == ("llm", gpt5)
    # 5. the self-debug loop sends errors back to the generator (rounds unpublished)
    assert cfg.validate.self_debug and cfg.validate.max_rounds >= 1
    # 6. "GPT-5 solves each task ... Target 256 trajectories per task (s)"
    assert (cfg.teacher.kind, cfg.teacher.llm.model, cfg.rollout.per_task) == ("llm", gpt5, 256)
    # the teacher's window leaves room for the 48K-token trajectories step 7 keeps
    assert cfg.agent.context_limit_tokens > 48 * 1024
    # 7. "at least one successful submission and at most 48K tokens"; "Truncate to 32K tokens (s)"
    assert cfg.curate.require_success and not cfg.curate.require_beats_baseline
    assert cfg.curate.max_total_tokens == 48 * 1024
    assert cfg.curate.truncate and cfg.curate.max_seq_len == 32 * 1024 == cfg.sft.max_length
    assert cfg.curate.task_fraction == 1.0
    # 8. "Qwen3-4B and Qwen3-8B, supervised fine-tuning" (full fine-tuning: no LoRA is mentioned)
    assert (cfg.student.model_id, cfg.sft.method) == (model_id, "full")
    assert cfg.student.context_length >= 32 * 1024
    # 9. "MLGym-Bench, 13 tasks, AUP": every task of the suite, base and SFT students compared
    assert (cfg.eval.suite, cfg.eval.tasks, len(MLGYM_TASKS)) == ("mlgym", [], 13)
    assert cfg.eval.include_base_student and cfg.eval.include_sft_student
    assert cfg.split.heldout_fraction == 0.0  # every synthetic task trains
    # MLGym's published protocol: 4 runs, 50 steps, temperature 0, top_p 0.95, 4 USD per run
    ev = cfg.eval
    assert (ev.runs_per_task, ev.max_steps, ev.temperature, ev.top_p, ev.cost_limit_usd) == (
        4,
        50,
        0.0,
        0.95,
        4.0,
    )
    # MLGym's default agent: last 5 observations verbatim, 50 steps, 4 USD, 25 s commands
    agent = cfg.agent
    assert (agent.history.kind, agent.history.n) == ("last_n_observations", 5)
    assert (agent.max_steps, agent.cost_limit_usd, agent.command_timeout_s) == (50, 4.0, 25.0)


def test_the_8b_recipe_differs_from_the_4b_recipe_only_in_the_student() -> None:
    small, large = _flat(["experiment=paper_qwen3_4b"]), _flat(["experiment=paper_qwen3_8b"])
    differing = {k for k in small.keys() | large.keys() if small.get(k) != large.get(k)}
    assert differing - {"label"} and all(k.startswith("student.") for k in differing - {"label"})
    assert (small["student.model_id"], large["student.model_id"]) == ("Qwen/Qwen3-4B", "Qwen/Qwen3-8B")


# -- ablations: each recipe's arms differ in the one factor it names ----------------------------------------

# recipe -> (the keys its arms may differ in, keys its plain run may add to the quickstart besides them)
ABLATIONS: dict[str, tuple[set[str], set[str]]] = {
    "ablate_no_hub": ({"dataset_filter.enabled"}, set()),
    "ablate_no_self_debug": ({"validate.self_debug"}, {"generator.*", "validate.timeout_s"}),
    "ablate_no_success_filter": ({"curate.require_success"}, set()),
    "ablate_no_truncation": ({"curate.truncate"}, {"sft.max_length", "student.context_length"}),
    "ablate_teacher": ({"teacher.*"}, set()),
    "ablate_task_scaling": ({"curate.task_fraction"}, set()),
}


def _matches(key: str, patterns: set[str]) -> bool:
    return any(key == p or (p.endswith(".*") and key.startswith(p[:-1])) for p in patterns)


def _sweep(experiment: str) -> tuple[str, list[str]]:
    params = _yaml(CONF_DIR / "experiment" / f"{experiment}.yaml")["hydra"]["sweeper"]["params"]
    ((key, values),) = params.items()
    return key, str(values).split(",")


def test_every_ablation_recipe_is_listed_here() -> None:
    assert set(ABLATIONS) == {p.stem for p in (CONF_DIR / "experiment").glob("ablate_*.yaml")}


@pytest.mark.parametrize("experiment", sorted(ABLATIONS))
def test_an_ablation_sweep_s_arms_differ_only_in_the_factor_it_names(experiment: str) -> None:
    factor, extra = ABLATIONS[experiment]
    key, values = _sweep(experiment)
    assert len(values) >= 2
    arms = [_flat([f"experiment={experiment}", f"{key}={v}"]) for v in values]
    for arm in arms[1:]:
        differing = {k for k in arm.keys() | arms[0].keys() if arm.get(k) != arms[0].get(k)}
        assert differing and all(_matches(k, factor) for k in differing), differing
    # the plain run is one of the arms, and adds to the quickstart only the factor and what both arms share
    plain, quickstart = _flat([f"experiment={experiment}"]), _flat(["experiment=quickstart"])
    assert plain in arms
    added = {k for k in plain.keys() | quickstart.keys() if plain.get(k) != quickstart.get(k)} - {"label"}
    assert all(_matches(k, factor | extra) for k in added), added

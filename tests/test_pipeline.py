"""Stage runner: keys, cache hits, downstream invalidation, force, resume after SIGKILL."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

import tests.plugin_stages  # noqa: F401  (registers probe_items, probe_sum)
from stsc.config import RootConfig
from stsc.errors import StageError
from stsc.pipeline import (
    StageSpec,
    compute_keys,
    is_complete,
    register,
    run_pipeline,
    select_stages,
    stage_dir,
    unregister,
)
from stsc.plan import make_plan
from stsc.store import REPORT_FILE, SUCCESS_FILE, iter_jsonl

REPO = Path(__file__).resolve().parents[1]
PROBES = ["probe_items", "probe_sum"]


def _cfg(tmp_path: Path, n: int = 5, per_task: int = 1, **kw) -> RootConfig:
    cfg = RootConfig(root=str(tmp_path), stages=list(PROBES), **kw)
    cfg.topics.n = n
    cfg.rollout.per_task = per_task
    cfg.tracking.enabled = False
    return cfg


def _hits(outcomes) -> dict[str, bool]:
    return {o.name: o.cache_hit for o in outcomes}


def test_an_unknown_stage_fails_listing_the_valid_stages() -> None:
    with pytest.raises(StageError, match=r"unknown stage\(s\) \['tpoics'\].*'topics'.*'report'"):
        select_stages(["tpoics"])


def test_selection_follows_graph_order_whatever_the_request_order() -> None:
    assert select_stages(["sft", "topics"]) == ["topics", "sft"]


def test_the_same_config_is_a_cache_hit(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = run_pipeline(_cfg(tmp_path))
    assert _hits(first) == {"probe_items": False, "probe_sum": False}
    with caplog.at_level(logging.INFO, logger="stsc.pipeline"):
        second = run_pipeline(_cfg(tmp_path))
    assert _hits(second) == {"probe_items": True, "probe_sum": True}
    assert "probe_items: cache hit" in caplog.text
    assert second[1].report.metrics["total"] == sum(i * i for i in range(5))


def test_a_downstream_config_change_reruns_only_downstream(tmp_path: Path) -> None:
    run_pipeline(_cfg(tmp_path))
    outcomes = run_pipeline(_cfg(tmp_path, per_task=3))
    assert _hits(outcomes) == {"probe_items": True, "probe_sum": False}
    assert outcomes[1].report.metrics["total"] == 3 * sum(i * i for i in range(5))


def test_an_upstream_config_change_reruns_it_and_its_descendants(tmp_path: Path) -> None:
    run_pipeline(_cfg(tmp_path))
    outcomes = run_pipeline(_cfg(tmp_path, n=6))
    assert _hits(outcomes) == {"probe_items": False, "probe_sum": False}
    keys_a, keys_b = compute_keys(_cfg(tmp_path)), compute_keys(_cfg(tmp_path, n=6))
    assert keys_a["probe_items"] != keys_b["probe_items"] and keys_a["probe_sum"] != keys_b["probe_sum"]
    assert keys_a["topics"] != keys_b["topics"]  # topics.n is part of the topics stage's key too
    keys_c = compute_keys(_cfg(tmp_path, per_task=7))
    assert keys_c["validate"] == keys_a["validate"]  # rollout.per_task changes nothing upstream
    assert keys_c["rollout"] != keys_a["rollout"] and keys_c["sft"] != keys_a["sft"]


def test_labels_and_concurrency_do_not_change_keys(tmp_path: Path) -> None:
    a = _cfg(tmp_path)
    b = _cfg(tmp_path, label="another label")
    b.rollout.concurrency = 99
    assert compute_keys(a) == compute_keys(b)


def test_how_training_is_parallelised_does_not_change_keys(tmp_path: Path) -> None:
    a, b = _cfg(tmp_path), _cfg(tmp_path)
    b.sft.dataset_num_proc = 8  # processes tokenizing the SFT set: the same rows
    b.sft.main_process_port = 29511  # accelerate's rendezvous port
    assert compute_keys(a)["sft"] == compute_keys(b)["sft"]


def test_sandbox_limits_change_the_keys_of_stages_that_run_untrusted_code(tmp_path: Path) -> None:
    a = _cfg(tmp_path)
    b = _cfg(tmp_path)
    b.sandbox.memory_mb *= 2  # a task rejected for running out of memory must be validated again
    keys_a, keys_b = compute_keys(a), compute_keys(b)
    assert keys_a["generate"] == keys_b["generate"]
    assert all(keys_a[s] != keys_b[s] for s in ("validate", "rollout", "evaluate"))
    b.sandbox.memory_mb, b.sandbox.workdir = a.sandbox.memory_mb, str(tmp_path / "elsewhere")
    assert compute_keys(b) == keys_a  # where sandbox folders live changes no result


def _prompts_copy(tmp_path: Path) -> Path:
    from stsc.prompts import default_prompts_dir

    folder = tmp_path / "prompts"
    shutil.copytree(default_prompts_dir(), folder)
    return folder


def test_editing_the_agent_prompts_reruns_the_stages_that_render_them(tmp_path: Path) -> None:
    a = _cfg(tmp_path)
    a.agent.prompts_dir = str(_prompts_copy(tmp_path))
    keys_a = compute_keys(a)
    assert keys_a == compute_keys(a)
    system = Path(a.agent.prompts_dir) / "agent_system.j2"
    system.write_text(system.read_text() + "Think before every command.\n")
    keys_b = compute_keys(a)
    assert all(keys_a[s] == keys_b[s] for s in ("topics", "propose", "verify", "generate", "validate"))
    assert all(keys_a[s] != keys_b[s] for s in ("rollout", "curate", "sft", "evaluate", "report"))
    # the default folder's own copy is what a config without prompts_dir uses: unchanged
    assert compute_keys(_cfg(tmp_path)) == compute_keys(_cfg(tmp_path))


def test_an_included_template_is_part_of_the_key_of_the_stages_using_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stsc import prompts

    folder = _prompts_copy(tmp_path)
    monkeypatch.setattr(prompts, "default_prompts_dir", lambda: folder)
    llm = _cfg(tmp_path)
    llm.generator.kind = "llm"
    template = _cfg(tmp_path)
    before_llm, before_template = compute_keys(llm), compute_keys(template)
    contract = folder / "task_contract.j2"  # included by generate_task.j2 and fix_task.j2
    contract.write_text(contract.read_text() + "Write a docstring in every file.\n")
    after_llm, after_template = compute_keys(llm), compute_keys(template)
    assert after_llm["verify"] == before_llm["verify"]
    assert after_llm["generate"] != before_llm["generate"] and after_llm["rollout"] != before_llm["rollout"]
    # the template generator renders no prompt: nothing to redo
    assert after_template == before_template


def test_a_missing_prompt_template_fails_before_any_stage_runs(tmp_path: Path) -> None:
    from stsc.errors import PromptError

    cfg = _cfg(tmp_path)
    cfg.agent.system_template = "agent_sytem"
    with pytest.raises(PromptError, match=r"no prompt template 'agent_sytem'.*agent_system"):
        compute_keys(cfg)
    with pytest.raises(PromptError, match="agent_sytem"):
        run_pipeline(cfg)
    probes = cfg.store_path / "probe_items"
    assert not probes.exists()
    cfg.agent.system_template = "agent_system"
    run_pipeline(cfg)
    assert is_complete(stage_dir(cfg.store_path, "probe_items", compute_keys(cfg)["probe_items"]))


def test_force_recomputes_the_stage_and_its_descendants(tmp_path: Path) -> None:
    run_pipeline(_cfg(tmp_path))
    outcomes = run_pipeline(replace(_cfg(tmp_path), force=["probe_items"]))
    assert _hits(outcomes) == {"probe_items": False, "probe_sum": False}
    outcomes = run_pipeline(replace(_cfg(tmp_path), force=["probe_sum"]))
    assert _hits(outcomes) == {"probe_items": True, "probe_sum": False}


def test_in_a_sweep_force_recomputes_each_stage_key_once(tmp_path: Path) -> None:
    run_pipeline(_cfg(tmp_path))
    run_pipeline(_cfg(tmp_path, per_task=3))  # a probe_sum made before the sweep, from the old items
    sweep = tmp_path / "sweep"

    def job(per_task: int) -> dict[str, bool]:
        return _hits(
            run_pipeline(replace(_cfg(tmp_path, per_task=per_task), force=["probe_items"]), sweep_dir=sweep)
        )

    assert job(1) == {"probe_items": False, "probe_sum": False}
    # the next jobs share probe_items' key: recomputed by the first job, reused
    assert job(1) == {"probe_items": True, "probe_sum": True}
    # a descendant key this sweep has not forced yet is still recomputed (it predates the new items)
    assert job(3) == {"probe_items": True, "probe_sum": False}
    assert job(3) == {"probe_items": True, "probe_sum": True}
    # outside the sweep force recomputes every time, as before
    outcomes = run_pipeline(replace(_cfg(tmp_path), force=["probe_items"]))
    assert _hits(outcomes) == {"probe_items": False, "probe_sum": False}


def test_forcing_a_stage_waits_for_a_concurrent_run_reading_it(tmp_path: Path, monkeypatch) -> None:
    import threading

    run_pipeline(replace(_cfg(tmp_path), stages=["probe_items"]))
    monkeypatch.setenv("STSC_TEST_SUM_DELAY", "1.5")
    reader: dict[str, object] = {}

    def read() -> None:
        try:
            reader["outcomes"] = run_pipeline(_cfg(tmp_path, per_task=2))  # not the forcing run's sum
        except Exception as e:  # reported below
            reader["error"] = e

    thread = threading.Thread(target=read)
    thread.start()
    reading = _cfg(tmp_path, per_task=2)
    sum_dir = stage_dir(reading.store_path, "probe_sum", compute_keys(reading)["probe_sum"])
    while not (sum_dir / "stage.json").exists():  # probe_sum has listed (or is listing) the items
        assert thread.is_alive(), reader
        time.sleep(0.01)
    forced = run_pipeline(replace(_cfg(tmp_path), stages=["probe_items"], force=["probe_items"]))
    assert not thread.is_alive()  # the force waited for the reader to finish
    thread.join()
    assert "error" not in reader, reader.get("error")
    assert _hits(reader["outcomes"]) == {"probe_items": True, "probe_sum": False}
    assert reader["outcomes"][1].report.metrics["total"] == 2 * sum(i * i for i in range(5))
    assert _hits(forced) == {"probe_items": False}


def test_force_invalidates_unselected_descendants_too(tmp_path: Path) -> None:
    run_pipeline(_cfg(tmp_path))
    cfg = _cfg(tmp_path)
    sum_folder = stage_dir(cfg.store_path, "probe_sum", compute_keys(cfg)["probe_sum"])
    run_pipeline(replace(cfg, stages=["probe_items"], force=["probe_items"]))
    assert not is_complete(sum_folder)  # its upstream was recomputed: the old sum is stale
    outcomes = run_pipeline(_cfg(tmp_path))
    assert _hits(outcomes) == {"probe_items": True, "probe_sum": False}


def test_the_dry_run_plan_counts_descendants_of_a_forced_stage_as_rerun(tmp_path: Path) -> None:
    run_pipeline(_cfg(tmp_path))
    plan = make_plan(replace(_cfg(tmp_path), force=["probe_items"]))
    assert {s.name: s.cached for s in plan.stages} == {"probe_items": False, "probe_sum": False}


def test_a_force_killed_mid_delete_never_leaves_a_cache_hit_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_pipeline(_cfg(tmp_path))
    cfg = _cfg(tmp_path)
    folder = stage_dir(cfg.store_path, "probe_items", compute_keys(cfg)["probe_items"])
    real_rmtree = shutil.rmtree

    def killed_rmtree(path, *args, **kwargs) -> None:  # dies before the marker and report go
        for p in Path(path).iterdir():
            if p.is_dir():
                real_rmtree(p)
            elif p.name not in (SUCCESS_FILE, REPORT_FILE):
                p.unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "rmtree", killed_rmtree)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(replace(cfg, force=["probe_items"]))
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)

    outcomes = run_pipeline(cfg)
    assert _hits(outcomes) == {"probe_items": False, "probe_sum": False}
    assert len(list((folder / "items").glob("*.json"))) == 5
    run_pipeline(replace(cfg, force=["probe_items"]))  # a later force sweeps away the half-deleted copy
    assert [p.name for p in folder.parent.iterdir() if "deleting" in p.name] == []


def test_a_folder_with_its_marker_but_no_report_is_rerun(tmp_path: Path) -> None:
    run_pipeline(_cfg(tmp_path))
    cfg = _cfg(tmp_path)
    folder = stage_dir(cfg.store_path, "probe_items", compute_keys(cfg)["probe_items"])
    (folder / REPORT_FILE).unlink()
    assert (folder / SUCCESS_FILE).exists()
    outcomes = run_pipeline(replace(cfg, stages=["probe_items"]))
    assert _hits(outcomes) == {"probe_items": False} and is_complete(folder)


def test_secret_config_values_stay_out_of_keys_and_stage_json(tmp_path: Path) -> None:
    register(StageSpec("probe_secret", lambda cfg, ctx: None, (), ("teacher", "tracking.uri")))
    try:
        old, new = (replace(_cfg(tmp_path), stages=["probe_secret"]) for _ in range(2))
        old.teacher.llm.extra = {"api_key": "sk-old-111111"}
        old.tracking.uri = "postgresql://mlflow:Pa55w0rd-old@db:5432/mlflow"
        new.teacher.llm.extra = {"api_key": "sk-new-222222"}
        new.tracking.uri = "postgresql://mlflow:Pa55w0rd-new@db:5432/mlflow"
        assert compute_keys(old) == compute_keys(new)  # rotating a credential reruns nothing
        (outcome,) = run_pipeline(old)
        assert _hits(run_pipeline(new)) == {"probe_secret": True}
        text = (outcome.folder / "stage.json").read_text()
        assert "sk-old" not in text and "Pa55w0rd" not in text and "api_key" in text
    finally:
        unregister("probe_secret")


def test_force_of_an_unknown_stage_fails(tmp_path: Path) -> None:
    with pytest.raises(StageError, match="force="):
        run_pipeline(replace(_cfg(tmp_path), force=["nope"]))


def test_a_slice_needs_its_upstream_in_the_store(tmp_path: Path) -> None:
    with pytest.raises(StageError, match="needs 'probe_items'"):
        run_pipeline(replace(_cfg(tmp_path), stages=["probe_sum"]))


_KILL_SCRIPT = """
import sys
import tests.plugin_stages
from stsc.config import RootConfig
from stsc.pipeline import run_pipeline
cfg = RootConfig(root=sys.argv[1], stages=["probe_items"])
cfg.topics.n = int(sys.argv[2])
cfg.tracking.enabled = False
run_pipeline(cfg)
"""


def test_a_stage_killed_halfway_resumes_without_losing_or_duplicating_items(tmp_path: Path) -> None:
    n = 40
    env = {**os.environ, "STSC_TEST_ITEM_DELAY": "0.05", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(tmp_path), str(n)], env=env, cwd=REPO)
    cfg = _cfg(tmp_path, n=n)
    folder = stage_dir(cfg.store_path, "probe_items", compute_keys(cfg)["probe_items"])
    deadline = time.time() + 60
    while time.time() < deadline and len(list((folder / "items").glob("*.json"))) < 10:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written_before = len(list((folder / "items").glob("*.json")))
    assert 10 <= written_before < n and not is_complete(folder)

    outcomes = run_pipeline(replace(cfg, stages=["probe_items"]))
    assert not outcomes[0].cache_hit and is_complete(folder)
    items = sorted(p.name for p in (folder / "items").glob("*.json"))
    assert items == [f"item-{i:04d}.json" for i in range(n)]
    journal = [r["item"] for r in iter_jsonl(folder / "journal.jsonl")]
    assert sorted(journal) == sorted(set(journal)) and len(journal) == n  # nothing written twice
    assert not list((folder / "items").glob(".*"))  # no temp files left behind

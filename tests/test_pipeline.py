"""Stage runner: keys, cache hits, downstream invalidation, force, resume after SIGKILL."""

from __future__ import annotations

import logging
import os
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
from stsc.pipeline import compute_keys, is_complete, run_pipeline, select_stages, stage_dir
from stsc.store import iter_jsonl

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


def test_force_recomputes_the_stage_and_its_descendants(tmp_path: Path) -> None:
    run_pipeline(_cfg(tmp_path))
    outcomes = run_pipeline(replace(_cfg(tmp_path), force=["probe_items"]))
    assert _hits(outcomes) == {"probe_items": False, "probe_sum": False}
    outcomes = run_pipeline(replace(_cfg(tmp_path), force=["probe_sum"]))
    assert _hits(outcomes) == {"probe_items": True, "probe_sum": False}


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
